"""Step 4's splitting, pure but for reading and writing the files: rows grouped by paper (or by section), groups
joined when their sections are the same text (a shared opening, or MinHash near-duplicates), groups assigned to
train / valid / test by a seeded hash, and the leak check --check runs on existing split folders."""

import hashlib
import json
import random
from pathlib import Path

from paper_personas.cli import InputError, counted
from paper_personas.files import iter_jsonl, write_jsonl
from paper_personas.personas import Persona, section_text
from paper_personas.quality import prose_share
from paper_personas.tokens import TRUNCATION_MARK

SPLITS = ("train", "valid", "test")
OPENING_CHARS = 200  # two sections that open with the same 200 characters (whitespace folded) are one section
SHINGLE_WORDS = 5  # word 5-grams: long enough that unrelated sections of one field share few of them
NEAR_DUPLICATE_JACCARD = 0.8  # an edited or re-extracted section keeps well over 80% of its 5-grams
MINHASH_PERMUTATIONS = 128  # datasketch's default: Jaccard estimated within about +-0.09 (1 / sqrt(128))


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


def drop_unreadable(splits: dict[str, list[dict]], min_prose: float, section_of: dict[int, str]) -> int:
    """Drop from train and valid the rows whose section (section_of[id(row)], as row_group folded it) is less
    than `min_prose` plain words (pseudo-code fragments, formulas, table cells), in place; how many. The teacher
    explained such a section from what it knew of the paper, not from the fragment, so the row teaches a student
    to answer without reading its input. The test split keeps every row: it measures the sections users will
    bring."""
    dropped = 0
    for name in ("train", "valid"):
        kept = [row for row in splits[name] if prose_share(section_of[id(row)]) >= min_prose]
        dropped += len(splits[name]) - len(kept)
        splits[name] = kept
    return dropped


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


def share_warnings(splits: dict[str, list], fractions: dict[str, float], groups: int, unit: str) -> list[str]:
    """A held-out split whose share of the rows is off its fraction by more than half of it, and why: groups,
    not rows, are assigned, so few or unequal groups give shares far from the fractions asked for."""
    total = sum(len(rows) for rows in splits.values())
    warnings = []
    for name, fraction in fractions.items():
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
