"""Step 4: split each persona's rows into train / valid (/ test) by paper: leak-free and reproducible.

Run simply as:
    $ python split_data.py                          # data/{persona}_2048.jsonl, every persona
    $ python split_data.py data/mine.jsonl --valid-fraction 0.2 --test-fraction 0.1 --seed 7

Reads:  chat JSONL rows; "meta.paper_id" groups them (rows without meta are grouped by their user message).
Writes: a folder named after each input, e.g. data/eli5_2048/train.jsonl and valid.jsonl (test.jsonl with
        --test-fraction), ready for `mlx_lm.lora --data data/eli5_2048`.

Papers, not rows, are assigned to splits, in an order fixed by --seed and pooled over all inputs, so no
paper straddles train and valid and every persona validates on the same papers. A rerun gives identical bytes.
"""

import argparse
import hashlib
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from common import (
    MAX_TOKENS,
    InputError,
    die,
    iter_jsonl,
    other_budgets,
    settings_from,
    setup_logging,
    trimmed_path,
    write_jsonl,
)
from personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from personas import load_personas

log = logging.getLogger("split_data")

SPLITS = ("train", "valid", "test")

# ----------------------------------------------------------------------------- pure functions


def group_key(row: dict) -> str:
    """The paper a row came from; a row from elsewhere is its own group, keyed by its user message."""
    paper_id = (row.get("meta") or {}).get("paper_id")
    if paper_id:
        return f"paper:{paper_id}"
    user = next((m["content"] for m in row["messages"] if m.get("role") == "user"), "")
    return "text:" + hashlib.sha256(user.encode()).hexdigest()[:16]


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    """Drop exact duplicate conversations (same messages), keeping the first; return rows and drops."""
    seen, kept = set(), []
    for row in rows:
        key = json.dumps(row["messages"], sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def assign_groups(groups: set[str], valid_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Map each group to a split. The order hashes (seed, group), so a group's place never depends on
    which other groups exist, and the counts round to the requested fractions with at least one each."""
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n_valid = max(1, round(len(order) * valid_fraction))
    n_test = max(1, round(len(order) * test_fraction)) if test_fraction > 0 else 0
    if n_valid + n_test >= len(order):
        raise InputError(
            f"only {len(order)} papers to split: train, valid{' and test' if n_test else ''} each need at "
            f"least one paper, so at least {n_valid + n_test + 1} are needed. Extract more papers (step 1), "
            "or lower --valid-fraction / --test-fraction"
        )
    splits = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (len(order) - n_valid - n_test)
    return dict(zip(order, splits, strict=True))


def split_rows(rows: list[dict], assignment: dict[str, str], seed: int) -> dict[str, list[dict]]:
    """Rows per split; train is shuffled with the seed so batches mix papers, valid/test keep file order."""
    out = {name: [] for name in SPLITS}
    for row in rows:
        out[assignment[group_key(row)]].append(row)
    random.Random(seed).shuffle(out["train"])
    return out


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


@dataclass(frozen=True)
class Settings:
    inputs: list[Path]  # empty: data/{persona}_{max_tokens}.jsonl for every persona of the personas file
    personas_file: Path
    max_tokens: int
    valid_fraction: float
    test_fraction: float
    seed: int
    verbose: bool


def default_inputs(settings: Settings) -> list[Path]:
    """Step 3's outputs for every persona, warning when a file for another token budget is newer."""
    paths = []
    for persona in load_personas(settings.personas_file):
        for newer in other_budgets(Path("data"), persona.name, settings.max_tokens):
            log.warning("%s is newer than the file read: pass --max-tokens to split that budget", newer)
        paths.append(trimmed_path(Path("data"), persona.name, settings.max_tokens))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        help="trimmed chat JSONL files (default: data/{persona}_{max-tokens}.jsonl for every persona)",
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
    p.add_argument("--valid-fraction", type=float, default=0.15, help="share of papers (default: %(default)s)")
    p.add_argument(
        "--test-fraction", type=float, default=0.0, help="share of papers; 0 = no test.jsonl (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="fixes the paper order and shuffle (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = settings_from(Settings, parser.parse_args(argv))
    setup_logging(args.verbose)
    if not (
        0 < args.valid_fraction < 1 and 0 <= args.test_fraction < 1 and args.valid_fraction + args.test_fraction < 1
    ):
        parser.error("--valid-fraction must be in (0, 1), --test-fraction in [0, 1), and their sum below 1")
    try:
        inputs = args.inputs or default_inputs(args)
    except InputError as e:
        die(str(e))
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        die(f"input not found: {', '.join(missing)}. Run trim_jsonl.py first, or name the files to split")
    log.info("settings: valid=%s test=%s seed=%d", args.valid_fraction, args.test_fraction, args.seed)
    try:
        files = {path: dedupe(read_rows(path)) for path in inputs}
        groups = {group_key(row) for rows, _ in files.values() for row in rows}
        assignment = assign_groups(groups, args.valid_fraction, args.test_fraction, args.seed)
        for path, (rows, duplicates) in files.items():
            splits = split_rows(rows, assignment, args.seed)
            empty = [name for name in ("train", "valid") if not splits[name]]
            if empty:
                raise InputError(
                    f"{path}: no rows fall in the {' and '.join(empty)} papers, and mlx_lm needs "
                    "both files. This file covers too few papers; generate more data or change --seed"
                )
            folder = write_splits(path, splits)
            counts = ", ".join(
                f"{name} {len(splits[name]):,} rows / {len({group_key(r) for r in splits[name]}):,} papers"
                for name in SPLITS
                if splits[name]
            )
            print(f"{path}: {counts}; {duplicates:,} duplicates removed -> {folder}/")
    except InputError as e:
        die(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
