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

--min-prose 0.5 keeps out of train and valid the rows about pseudo-code fragments and formulas: their answers
explain what the teacher knew of the paper, not the fragment, and teach a student to ignore its input.
"""

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from paper_personas.cli import InputError, add_budget_flag, counted, run, start
from paper_personas.files import other_budgets, trimmed_path, unwritable
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import load_personas
from paper_personas.splits import (
    NEAR_DUPLICATE_JACCARD,
    SPLITS,
    assign_groups,
    dedupe,
    drop_unreadable,
    join_groups,
    joins_text,
    leaks,
    read_rows,
    row_group,
    share_warnings,
    split_rows,
    write_splits,
)
from paper_personas.tokens import MAX_TOKENS

log = logging.getLogger("split_data")


@dataclass(frozen=True)
class Settings:
    inputs: list[Path]  # empty: data/{persona}_{max_tokens}.jsonl for every persona of the personas file
    personas_file: Path
    max_seq_length: int
    valid_fraction: float
    test_fraction: float
    seed: int
    near_duplicate: float
    min_prose: float  # 0: keep every row
    check: bool
    verbose: bool


def default_inputs(settings: Settings) -> list[Path]:
    """Step 3's outputs for every persona (their split folders with --check), warning when a file for another
    token budget is newer."""
    paths = []
    for persona in load_personas(settings.personas_file):
        for newer in other_budgets(Path("data"), persona.name, settings.max_seq_length):
            log.warning("%s is newer than the file read: pass --max-seq-length to split that budget", newer)
        path = trimmed_path(Path("data"), persona.name, settings.max_seq_length)
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
        unreadable = 0
        if settings.min_prose:
            section_of = {id(row): section for row, _, section in keyed[path]}
            unreadable = drop_unreadable(splits, settings.min_prose, section_of)
        empty = [name for name in ("train", "valid") if not splits[name]]
        if empty:
            fix = "generate more data or change --seed"
            if unreadable:
                fix = f"lower --min-prose ({unreadable:,} rows were dropped as not prose), {fix}"
            raise InputError(
                f"{path}: no rows fall in the {' and '.join(empty)} {unit}, and mlx_lm needs "
                f"both files. This file covers too few {unit}; {fix}"
            )
        folder = write_splits(path, splits)
        fractions = {"valid": settings.valid_fraction, "test": settings.test_fraction}
        for warning in share_warnings(splits, fractions, len(groups), unit):
            log.warning("%s: %s", path, warning)
        group_of = {id(row): g for row, g in rows}
        counts = ", ".join(
            f"{name} {counted(len(splits[name]), 'row')} / "
            f"{counted(len({group_of[id(r)] for r in splits[name]}), unit.removesuffix('s'))}"
            for name in SPLITS
            if splits[name]
        )
        unread = f", {unreadable:,} not prose (train, valid)" if settings.min_prose else ""
        print(
            f"{path}: {counts}; {files[path][1]:,} duplicates removed{unread}, {joins_text(components.joins)} "
            f"-> {folder}/"
        )


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


def check_inputs(inputs: list[Path], check: bool) -> None:
    """Every input there and of the right kind, and its output folder writable, before any work."""
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        step = "split_data.py" if check else "trim_jsonl.py"
        raise InputError(f"input not found: {', '.join(missing)}. Run {step} first, or name the inputs")
    if not check and (folders := [str(p) for p in inputs if p.is_dir()]):
        raise InputError(
            f"{folders[0]} is a folder, not a file: name the trimmed JSONL files, such as data/eli5_2048.jsonl "
            "(split folders are read with --check)"
        )
    for path in [] if check else inputs:
        fix = "its splits go in a folder beside it: copy the input to a folder you can write to"
        if problem := unwritable(path.with_suffix(""), str(path), folder=True, fix=fix):
            raise InputError(problem)


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
    add_budget_flag(p, MAX_TOKENS, "the budget trim_jsonl.py trimmed to, which names the default inputs")
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
    p.add_argument(
        "--min-prose",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="train and valid keep only rows whose section is at least this share of plain words, dropping "
        "pseudo-code fragments and formulas (prose measures 0.75-0.95; the bench tried 0.5); test keeps "
        "every row (default: %(default)s, keep all)",
    )
    p.add_argument("--check", action="store_true", help="report leaks in existing split folders; write nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = start(parser, Settings, argv)
    if not (
        0 < settings.valid_fraction < 1
        and 0 <= settings.test_fraction < 1
        and settings.valid_fraction + settings.test_fraction < 1
    ):
        parser.error("--valid-fraction must be in (0, 1), --test-fraction in [0, 1), and their sum below 1")
    if not 0 < settings.near_duplicate <= 1:
        parser.error("--near-duplicate must be in (0, 1]")
    if not 0 <= settings.min_prose <= 1:
        parser.error("--min-prose must be in [0, 1]")
    personas = load_personas(settings.personas_file)
    inputs = settings.inputs or default_inputs(settings)
    check_inputs(inputs, settings.check)
    log.info(
        "settings: valid=%s test=%s seed=%d near_duplicate=%s min_prose=%s",
        settings.valid_fraction,
        settings.test_fraction,
        settings.seed,
        settings.near_duplicate,
        settings.min_prose,
    )
    if settings.check:
        return 1 if check_folders(inputs, personas, settings.near_duplicate) else 0
    split_files(inputs, personas, settings)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
