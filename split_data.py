"""Step 4: split each persona's rows into train / valid (/ test) by paper and section: leak-free and reproducible.

Run simply as:
    $ python split_data.py                          # data/{persona}_2048.jsonl, every persona
    $ python split_data.py data/mine.jsonl --valid-fraction 0.2 --test-fraction 0.1 --seed 7
    $ python split_data.py --check data/eli5_2048 data/intuitive_2048   # report leaks, write nothing

Reads:  chat JSONL rows. "meta.paper_id" groups rows by paper; a row without meta is grouped by its section: the
        user message without the persona's prompt line (personas.toml, else the first line).
Writes: a folder named after each input, e.g. data/eli5_2048/train.jsonl and valid.jsonl (test.jsonl with
        --test-fraction), ready for `mlx_lm.lora --data data/eli5_2048`.

Groups whose sections are the same text are joined before splitting, across papers too: sections that open with
the same 200 characters (how truncation at different points leaves copies of one section), and sections whose
word 5-gram sets have a MinHash Jaccard similarity of at least --near-duplicate (an edited section, a paper
extracted twice). Groups, not rows, are assigned to splits, in an order fixed by --seed and pooled over all
inputs, so no section straddles train and valid and every persona validates on the same sections. A rerun gives
identical bytes. --check runs the same comparison over existing split folders and reports every leak.
"""

import argparse
import hashlib
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from paper_personas.cli import InputError, counted, die, settings_from, setup_logging
from paper_personas.files import iter_jsonl, other_budgets, trimmed_path, unwritable, write_jsonl
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import Persona, load_personas, section_text
from paper_personas.tokens import MAX_TOKENS, TRUNCATION_MARK

log = logging.getLogger("split_data")

SPLITS = ("train", "valid", "test")
OPENING_CHARS = 200  # two sections that open with the same 200 characters (whitespace folded) are one section
SHINGLE_WORDS = 5  # word 5-grams: long enough that unrelated sections of one field share few of them
NEAR_DUPLICATE_JACCARD = 0.8  # an edited or re-extracted section keeps well over 80% of its 5-grams
MINHASH_PERMUTATIONS = 128  # datasketch's default: Jaccard estimated within about +-0.09 (1 / sqrt(128))

# ----------------------------------------------------------------------------- sections and groups (pure)


def fold(text: str) -> str:
    """A section's text for comparison: no truncation mark, whitespace folded, case ignored."""
    return " ".join(text.replace(TRUNCATION_MARK, " ").split()).lower()


def row_section(row: dict, personas: tuple[Persona, ...]) -> str:
    """The folded section a row is about: its last user message without the persona's instruction."""
    user = next((m["content"] for m in reversed(row["messages"]) if m.get("role") == "user"), "")
    return fold(section_text(user, personas))


def base_group(row: dict, section: str) -> str:
    """The paper a row came from; a row from elsewhere is grouped by its section, whatever its persona."""
    paper_id = (row.get("meta") or {}).get("paper_id")
    if paper_id:
        return f"paper:{paper_id}"
    return "section:" + hashlib.sha256(section.encode()).hexdigest()[:16]


def row_group(row: dict, personas) -> tuple[str, str]:
    """A row's (group, folded section), as splitting and --check both see it."""
    section = row_section(row, personas)
    return base_group(row, section), section


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    """Drop exact duplicate conversations (same messages), keeping the first; return rows and drops."""
    seen, kept = set(), []
    for row in rows:
        key = json.dumps(row["messages"], sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def near_duplicate_pairs(sections: list[str], threshold: float) -> list[tuple[int, int]]:
    """Index pairs of sections whose word 5-gram sets are at least `threshold` alike (MinHash LSH, then the
    MinHash estimate itself, so an LSH false candidate is not joined)."""
    from datasketch import MinHash, MinHashLSH

    shingle_sets = []
    for text in sections:
        words = text.split()
        grams = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
        shingle_sets.append([g.encode() for g in sorted(grams)])
    hashes = MinHash.bulk(shingle_sets, num_perm=MINHASH_PERMUTATIONS)
    index = MinHashLSH(threshold=threshold, num_perm=MINHASH_PERMUTATIONS)
    pairs = []
    for i, minhash in enumerate(hashes):
        pairs += [(j, i) for j in sorted(index.query(minhash)) if minhash.jaccard(hashes[j]) >= threshold]
        index.insert(i, minhash)
    return pairs


class Components:
    """Union-find over group names; a component is named by its smallest member, so a group's split does not
    depend on the order groups were joined in. `joins` counts the merges by reason."""

    def __init__(self):
        self.parent: dict[str, str] = {}
        self.joins: dict[str, int] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, a: str, b: str, reason: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
            self.joins[reason] = self.joins.get(reason, 0) + 1


def join_groups(members: list[tuple[str, str]], threshold: float) -> Components:
    """Components of (group, section) pairs: groups sharing a section's opening, or a near-duplicate section."""
    components = Components()
    by_opening: dict[str, str] = {}
    distinct: dict[str, str] = {}  # section -> the first group seen with it
    for group, section in members:
        components.find(group)
        components.join(by_opening.setdefault(section[:OPENING_CHARS], group), group, "same_opening")
        distinct.setdefault(section, group)
    sections = list(distinct)
    for i, j in near_duplicate_pairs(sections, threshold):
        components.join(distinct[sections[i]], distinct[sections[j]], "near_duplicate")
    return components


def assign_groups(
    groups: set[str], valid_fraction: float, test_fraction: float, seed: int, unit: str = "groups"
) -> dict[str, str]:
    """Map each group to a split. The order hashes (seed, group), so a group's place never depends on
    which other groups exist, and the counts round to the requested fractions with at least one each."""
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n_valid = max(1, round(len(order) * valid_fraction))
    n_test = max(1, round(len(order) * test_fraction)) if test_fraction > 0 else 0
    if n_valid + n_test >= len(order):
        raise InputError(
            f"only {counted(len(order), unit[:-1], unit)} to split: train, valid{' and test' if n_test else ''} each "
            f"need at least one, so at least {n_valid + n_test + 1} are needed. Extract more papers (step 1), "
            "or lower --valid-fraction / --test-fraction"
        )
    splits = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (len(order) - n_valid - n_test)
    return dict(zip(order, splits, strict=True))


def split_rows(rows: list[tuple[dict, str]], assignment: dict[str, str], seed: int) -> dict[str, list[dict]]:
    """(row, group) pairs per split; train is shuffled with the seed so batches mix papers, valid/test keep
    file order."""
    out = {name: [] for name in SPLITS}
    for row, group in rows:
        out[assignment[group]].append(row)
    random.Random(seed).shuffle(out["train"])
    return out


def leaks(folders: dict[str, dict[str, list[tuple[str, str]]]], threshold: float) -> tuple[dict, dict]:
    """For split folders given as {folder: {split: [(group, folded section), ...]}}, count the held-out rows
    (valid, test) whose group is also trained on: in the same folder's train, or only in another folder's.
    Groups and joins are the ones splitting makes (the paper, else the section; then near-identical sections),
    so `joins` means here what it means in a split's summary."""
    rows = [
        (folder, split, group, section)
        for folder, splits in folders.items()
        for split, members in splits.items()
        for group, section in members
    ]
    components = join_groups([(group, section) for _, _, group, section in rows], threshold)
    trained: dict[str, set[str]] = {}
    for folder, split, group, _ in rows:
        if split == "train":
            trained.setdefault(components.find(group), set()).add(folder)
    counts = {folder: {"held_out": 0, "own_train": 0, "other_train": 0} for folder in folders}
    for folder, split, group, _ in rows:
        if split != "train":
            in_train = trained.get(components.find(group), set())
            counts[folder]["held_out"] += 1
            counts[folder]["own_train"] += folder in in_train
            counts[folder]["other_train"] += bool(in_train) and folder not in in_train
    return counts, components.joins


# ----------------------------------------------------------------------------- I/O


def read_rows(path: Path) -> list[dict]:
    rows = []
    for lineno, row, problem in iter_jsonl(path):
        if problem is None and not isinstance(row.get("messages"), list):
            problem = "missing 'messages' list"
        if problem:
            raise InputError(f"{path}:{lineno}: {problem}. Run trim_jsonl.py on it first, which checks every row")
        rows.append(row)
    return rows


def write_splits(path: Path, splits: dict[str, list[dict]]) -> Path:
    folder = path.with_suffix("")
    for name in SPLITS:
        target = folder / f"{name}.jsonl"
        if splits[name]:
            write_jsonl(target, splits[name])
        else:
            target.unlink(missing_ok=True)  # a stale test.jsonl from an earlier run would be used by mlx_lm
    return folder


def share_warnings(splits: dict[str, list], settings: "Settings", groups: int, unit: str) -> list[str]:
    """A held-out split whose share of the rows is off its fraction by more than half of it, and why: groups,
    not rows, are assigned, so few or unequal groups give shares far from the fractions asked for."""
    total = sum(len(rows) for rows in splits.values())
    warnings = []
    for name, fraction in (("valid", settings.valid_fraction), ("test", settings.test_fraction)):
        share = len(splits[name]) / total if total else 0.0
        if fraction > 0 and abs(share - fraction) > fraction / 2:
            warnings.append(
                f"{name} holds {share:.0%} of the rows, not the {fraction:.0%} asked for: whole {unit} are assigned, "
                f"and {groups:,} {unit} of unequal sizes cannot give that share; extract more papers, or change "
                "--seed or the fractions"
            )
    return warnings


def joins_text(joins: dict[str, int]) -> str:
    total = sum(joins.values())
    return f"{total:,} joins" + (f" ({', '.join(f'{n:,} {r}' for r, n in sorted(joins.items()))})" if total else "")


@dataclass(frozen=True)
class Settings:
    inputs: list[Path]  # empty: data/{persona}_{max_tokens}.jsonl for every persona of the personas file
    personas_file: Path
    max_tokens: int
    valid_fraction: float
    test_fraction: float
    seed: int
    near_duplicate: float
    check: bool
    verbose: bool


def default_inputs(settings: Settings) -> list[Path]:
    """Step 3's outputs for every persona (their split folders with --check), warning when a file for another
    token budget is newer."""
    paths = []
    for persona in load_personas(settings.personas_file):
        for newer in other_budgets(Path("data"), persona.name, settings.max_tokens):
            log.warning("%s is newer than the file read: pass --max-tokens to split that budget", newer)
        path = trimmed_path(Path("data"), persona.name, settings.max_tokens)
        paths.append(path.with_suffix("") if settings.check else path)
    return paths


def split_files(inputs: list[Path], personas, settings: Settings) -> None:
    """Split every input by the same assignment of section groups, and print a line per file."""
    files = {path: dedupe(read_rows(path)) for path in inputs}
    keyed = {}  # path -> [(row, base group, folded section)]
    for path, (rows, _) in files.items():
        keyed[path] = [(row, *row_group(row, personas)) for row in rows]
    components = join_groups(
        [(g, section) for rows in keyed.values() for _, g, section in rows], settings.near_duplicate
    )
    grouped = {path: [(row, components.find(g)) for row, g, _ in rows] for path, rows in keyed.items()}
    groups = {g for rows in grouped.values() for _, g in rows}
    unit = "papers" if all(g.startswith("paper:") for rows in keyed.values() for _, g, _ in rows) else "groups"
    assignment = assign_groups(groups, settings.valid_fraction, settings.test_fraction, settings.seed, unit)
    log.info("%s %s after %s of near-identical sections", f"{len(groups):,}", unit, joins_text(components.joins))
    for path, rows in grouped.items():
        splits = split_rows(rows, assignment, settings.seed)
        empty = [name for name in ("train", "valid") if not splits[name]]
        if empty:
            raise InputError(
                f"{path}: no rows fall in the {' and '.join(empty)} {unit}, and mlx_lm needs "
                f"both files. This file covers too few {unit}; generate more data or change --seed"
            )
        folder = write_splits(path, splits)
        for warning in share_warnings(splits, settings, len(groups), unit):
            log.warning("%s: %s", path, warning)
        group_of = {id(row): g for row, g in rows}
        counts = ", ".join(
            f"{name} {counted(len(splits[name]), 'row')} / "
            f"{counted(len({group_of[id(r)] for r in splits[name]}), unit.removesuffix('s'))}"
            for name in SPLITS
            if splits[name]
        )
        print(f"{path}: {counts}; {files[path][1]:,} duplicates removed, {joins_text(components.joins)} -> {folder}/")


def check_folders(folders: list[Path], personas, threshold: float) -> int:
    """Report the held-out rows of existing split folders that are also trained on; the number of leaks."""
    sections = {}
    for folder in folders:
        if not (folder / "train.jsonl").exists():
            raise InputError(f"{folder}: no train.jsonl; --check takes split folders such as data/eli5_2048")
        sections[str(folder)] = {
            split: [row_group(row, personas) for row in read_rows(folder / f"{split}.jsonl")]
            for split in SPLITS
            if (folder / f"{split}.jsonl").exists()
        }
    counts, joins = leaks(sections, threshold)
    for folder, c in counts.items():
        print(
            f"{folder}: {c['held_out']:,} held-out rows; {c['own_train']:,} also in its own train, "
            f"{c['other_train']:,} only in another folder's train"
        )
    total = sum(c["own_train"] + c["other_train"] for c in counts.values())
    print(f"check: {total:,} leaking rows in {len(folders)} folders ({joins_text(joins)} of near-identical sections)")
    return total


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        help="trimmed chat JSONL files, or split folders with --check "
        "(default: data/{persona}_{max-tokens}.jsonl for every persona)",
    )
    p.add_argument(
        "--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="persona definitions (default: personas.toml)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help="the budget trim_jsonl.py trimmed to, which names the default inputs (default: %(default)s)",
    )
    p.add_argument("--valid-fraction", type=float, default=0.15, help="share of groups (default: %(default)s)")
    p.add_argument(
        "--test-fraction", type=float, default=0.0, help="share of groups; 0 = no test.jsonl (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="fixes the group order and shuffle (default: %(default)s)")
    p.add_argument(
        "--near-duplicate",
        type=float,
        default=NEAR_DUPLICATE_JACCARD,
        metavar="JACCARD",
        help="sections whose word 5-grams are at least this alike are one group (default: %(default)s)",
    )
    p.add_argument("--check", action="store_true", help="report leaks in existing split folders; write nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = settings_from(Settings, parser.parse_args(argv))
    setup_logging(settings.verbose)
    if not (
        0 < settings.valid_fraction < 1
        and 0 <= settings.test_fraction < 1
        and settings.valid_fraction + settings.test_fraction < 1
    ):
        parser.error("--valid-fraction must be in (0, 1), --test-fraction in [0, 1), and their sum below 1")
    if not 0 < settings.near_duplicate <= 1:
        parser.error("--near-duplicate must be in (0, 1]")
    try:
        personas = load_personas(settings.personas_file)
        inputs = settings.inputs or default_inputs(settings)
    except InputError as e:
        die(str(e))
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        step = "split_data.py" if settings.check else "trim_jsonl.py"
        die(f"input not found: {', '.join(missing)}. Run {step} first, or name the inputs")
    if not settings.check and (folders := [str(p) for p in inputs if p.is_dir()]):
        die(
            f"{folders[0]} is a folder, not a file: name the trimmed JSONL files, such as data/eli5_2048.jsonl "
            "(split folders are read with --check)"
        )
    for path in [] if settings.check else inputs:
        fix = "its splits go in a folder beside it: copy the input to a folder you can write to"
        if problem := unwritable(path.with_suffix(""), str(path), folder=True, fix=fix):
            die(problem)
    log.info(
        "settings: valid=%s test=%s seed=%d near_duplicate=%s",
        settings.valid_fraction,
        settings.test_fraction,
        settings.seed,
        settings.near_duplicate,
    )
    try:
        if settings.check:
            return 1 if check_folders(inputs, personas, settings.near_duplicate) else 0
        split_files(inputs, personas, settings)
    except InputError as e:
        die(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
