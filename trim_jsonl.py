"""Step 3: make every training conversation fit the trainer's token limit.

Run simply as:
    $ python trim_jsonl.py                                        # data/{persona}.jsonl, every persona
    $ python trim_jsonl.py --tokenizer mlx-community/Llama-3.2-3B-Instruct-4bit   # exact count
    $ python trim_jsonl.py data/mine.jsonl --overflow truncate

Reads:  chat JSONL, one {"messages": [...], "meta": {...}} per line ("meta" is optional).
Writes: <input stem>_<max>.jsonl beside each input, e.g. data/eli5_2048.jsonl, atomically.

Tokens are counted for the whole conversation as mlx_lm.lora sees it:
  --tokenizer cl100k_base (default)  a tiktoken encoding plus a measured margin for the Llama 3.2 chat template
  --tokenizer MODEL_OR_FOLDER        that model's tokenizer and chat template, applied exactly as mlx_lm does
A row over --max-seq-length is dropped (default) or, with --overflow truncate, has its user text cut at a
paragraph or sentence boundary; the assistant answer is never touched and the final length is re-checked. A cut
that keeps less than --min-kept of the user text drops the row (its answer describes the whole text). A row whose
text contains a special token string (<|begin_of_text|>, <|eot_id|>, ...) is invalid, like a malformed one.
"""

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from paper_personas.cli import add_budget_flag, die, run, start
from paper_personas.files import persona_rows_path, trimmed_path, unwritable
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import load_personas
from paper_personas.tokens import MAX_TOKENS, load_counter
from paper_personas.trimming import MIN_USER_TOKENS, trim_file

log = logging.getLogger("trim_jsonl")


def output_path(path: Path, budget: int, out_dir: Path | None = None) -> Path:
    """data/eli5.jsonl -> data/eli5_2048.jsonl, beside the input or in out_dir."""
    return trimmed_path(out_dir or path.parent, path.stem, budget)


@dataclass(frozen=True)
class Settings:
    inputs: list[Path]  # empty: data/{persona}.jsonl for every persona of the personas file
    out_dir: Path | None  # None: beside each input
    personas_file: Path
    max_seq_length: int
    tokenizer: str
    overflow: str
    min_kept: float
    skip_invalid: bool
    verbose: bool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        help="chat JSONL files (default: data/{persona}.jsonl for every persona of --personas-file)",
    )
    p.add_argument(
        "--out-dir", type=Path, help="where the trimmed files go (default: beside each input, as data/eli5_2048.jsonl)"
    )
    p.add_argument(
        "--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="persona definitions (default: personas.toml)"
    )
    add_budget_flag(p, MAX_TOKENS, "tokens each conversation must fit in")
    p.add_argument(
        "--tokenizer",
        default="cl100k_base",
        help="tiktoken encoding (estimate) or model id / local folder (exact chat-template count) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--overflow",
        choices=["drop", "truncate"],
        default="drop",
        help="what to do with a row over --max-seq-length (default: %(default)s)",
    )
    p.add_argument(
        "--min-kept",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="with --overflow truncate: drop a row that would keep less than this share of its user text, "
        "since its answer describes the whole text (default: %(default)s)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop malformed rows and rows with special tokens, counted by reason, instead of stopping",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = start(parser, Settings, argv)
    if args.max_seq_length < MIN_USER_TOKENS * 2:
        parser.error(f"--max-seq-length must be at least {MIN_USER_TOKENS * 2}")
    if not 0 <= args.min_kept <= 1:
        parser.error("--min-kept must be a share between 0 and 1")
    personas = load_personas(args.personas_file)
    inputs = args.inputs or [persona_rows_path(Path("data"), p.name) for p in personas]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        die(f"input not found: {', '.join(missing)}. Run sdg.py first, or name the files to trim")
    if folders := [str(p) for p in inputs if p.is_dir()]:
        die(f"{folders[0]} is a folder, not a file: name the JSONL files to trim, such as data/eli5.jsonl")
    for path in inputs:
        out = output_path(path, args.max_seq_length, args.out_dir)
        fix = "pass --out-dir a folder you can write to"
        fix = fix if args.out_dir else f"its output goes beside it: {fix}"
        if problem := unwritable(out, "--out-dir" if args.out_dir else str(path), fix=fix):
            die(problem)
    started = time.monotonic()
    counter = load_counter(args.tokenizer)
    log.info("settings: max_seq_length=%d tokenizer=%s overflow=%s", args.max_seq_length, counter.name, args.overflow)
    empty = []
    for path in inputs:
        out = output_path(path, args.max_seq_length, args.out_dir)
        budget, overflow = args.max_seq_length, args.overflow
        summary, kept = trim_file(path, out, counter, budget, overflow, args.min_kept, args.skip_invalid, personas)
        print(summary)
        empty += [] if kept else [str(path)]
    log.info("done in %.1f s", time.monotonic() - started)
    if empty:  # its output is written all the same, so no older trim of that input is left to be split
        die(f"no row kept from {', '.join(empty)}: nothing to train on (the reasons are above)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
