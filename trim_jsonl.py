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
A row over --max-tokens is dropped (default) or, with --overflow truncate, has its user text cut at a
paragraph or sentence boundary; the assistant answer is never touched and the final length is re-checked. A cut
that keeps less than --min-kept of the user text drops the row (its answer describes the whole text). A row whose
text contains a special token string (<|begin_of_text|>, <|eot_id|>, ...) is invalid, like a malformed one.
"""

import argparse
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from paper_personas.cli import InputError, die, settings_from, setup_logging
from paper_personas.files import iter_jsonl, unwritable, write_jsonl
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import load_personas, section_text
from paper_personas.quality import contents_page
from paper_personas.tokens import MAX_TOKENS, TRUNCATION_MARK, count_tokens, load_tokenizer, template_tokens

log = logging.getLogger("trim_jsonl")

# ----------------------------------------------------------------------------- constants

ROLES = {"system", "user", "assistant"}
# The chat template's overhead is common.template_tokens(), measured for Llama 3.2.
# Llama 3's vocabulary extends cl100k_base, so cl100k never counts fewer tokens than Llama 3.2: on 203 real
# paper sections the ratio was 1.000 to 1.043 (bench/template_margin.py). The estimate errs on the safe side.
BATCH_ROWS = 1024
MIN_USER_TOKENS = 64  # a prompt cut shorter than this carries too little paper to be worth training on

# ----------------------------------------------------------------------------- validation


# Llama 3's control tokens: the estimate mode stands for Llama 3.2, whose tokenizer is not loaded then.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
)
LLAMA3_RESERVED = r"<\|reserved_special_token_\d+\|>"


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def special_token_finder(tokens: set[str], extra_pattern: str | None = None):
    """A function returning the first special token string in a text, or None.

    A text containing one is read by the tokenizer as a control token (a literal "<|begin_of_text|>" in a prompt
    starts a new conversation mid-row), so such a row is invalid. A substring test on the tokens' first two
    characters skips the regex for the rows that contain none, which is nearly all of them."""
    alternatives = [re.escape(t) for t in sorted(tokens, key=len, reverse=True)] + [extra_pattern or "(?!)"]
    pattern = re.compile("|".join(alternatives))
    openings = {t[:2] for t in tokens} | ({"<|"} if extra_pattern else set())

    def find(text: str) -> str | None:
        if not any(opening in text for opening in openings):
            return None
        match = pattern.search(text)
        return match[0] if match else None

    return find


def row_problem(row: dict, find_special=None) -> str | None:
    """Why a row cannot be trained on, or None. Mirrors what mlx_lm's ChatDataset needs."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "missing 'messages': expected a non-empty list of {role, content}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{i}] is not an object"
        if message.get("role") not in ROLES:
            return f"messages[{i}] has role {message.get('role')!r}; expected one of {sorted(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}].content is {type(message.get('content')).__name__}, not text"
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return "empty assistant answer: the last message must be a non-empty assistant reply"
    if not any(m["role"] == "user" for m in messages):
        return "no user message"
    for i, message in enumerate(messages):
        token = find_special(message["content"]) if find_special else None
        if token:
            return (
                f"special_token: messages[{i}] contains {token!r}, which the tokenizer reads as a control token, "
                "not text (the first version of this pipeline left <|begin_of_text|> in its prompts)"
            )
    return None


def read_rows(path: Path, skip_invalid: bool, dropped: dict, find_special=None) -> list[dict]:
    """All valid rows of a file; a bad row raises InputError (or is counted by reason, with --skip-invalid)."""
    rows = []
    for lineno, row, problem in iter_jsonl(path):
        problem = problem or row_problem(row, find_special)
        if problem is None:
            rows.append(row)
        elif skip_invalid:
            reason = "special_token" if problem.startswith("special_token") else "invalid"
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            raise InputError(f"{path}:{lineno}: {problem}. Fix the row, or pass --skip-invalid to drop it")
    return rows


# ----------------------------------------------------------------------------- token counting


class TiktokenCounter:
    """Fast estimate: message texts encoded in batches, plus the chat template's fixed overhead."""

    def __init__(self, encoding):
        self.encoding = encoding
        self.name = f"tiktoken:{encoding.name}"
        self.find_special = special_token_finder(
            set(encoding.special_tokens_set) | set(LLAMA3_SPECIAL_TOKENS), LLAMA3_RESERVED
        )

    def count_text(self, texts: list[str]) -> list[int]:
        return count_tokens(self.encoding, texts)

    def count(self, rows: list[dict]) -> list[int]:
        texts = [m["content"] for row in rows for m in row["messages"]]
        lengths = iter(self.count_text(texts))
        counts = []
        for row in rows:
            text_tokens = sum(next(lengths) for _ in row["messages"])
            counts.append(text_tokens + template_tokens(len(row["messages"])))
        return counts


class ChatTemplateCounter:
    """Exact count: the model's own tokenizer and chat template, as mlx_lm's ChatDataset applies them."""

    def __init__(self, tokenizer, name: str):
        self.tokenizer = tokenizer
        self.name = name
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        specials = {t.content for t in decoder.values() if getattr(t, "special", False)}
        self.find_special = special_token_finder(specials | set(getattr(tokenizer, "all_special_tokens", [])))

    def count_text(self, texts: list[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)

    def count(self, rows: list[dict]) -> list[int]:
        if any(row.get("tools") for row in rows):  # tools differ per row, and the batch call takes one set
            template = self.tokenizer.apply_chat_template
            return [len(template(row["messages"], tools=row.get("tools"), return_dict=False)) for row in rows]
        # Render the whole batch, then encode it in one call: the same ids apply_chat_template(tokenize=True)
        # gives row by row (it renders, then encodes without adding special tokens), 1.6x faster.
        texts = self.tokenizer.apply_chat_template([row["messages"] for row in rows], tokenize=False)
        # mlx_lm's TokenizerWrapper forwards attributes but is not callable itself.
        encode = getattr(self.tokenizer, "_tokenizer", self.tokenizer)
        return [len(ids) for ids in encode(texts, add_special_tokens=False)["input_ids"]]


def load_counter(spec: str):
    """A tiktoken encoding name gives the estimate; a local folder or Hugging Face id gives the exact count."""
    tokenizer = load_tokenizer(spec)
    if hasattr(tokenizer, "encode_ordinary_batch"):
        return TiktokenCounter(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"tokenizer {spec!r} has no chat template; mlx_lm needs one to train on chat rows")
    return ChatTemplateCounter(tokenizer, spec)


# ----------------------------------------------------------------------------- truncation


def cut_points(text: str) -> list[int]:
    """Offsets where text may be cut, paragraph or sentence ends, last first: the first that fits keeps the most."""
    paragraphs = {m.start() for m in re.finditer(r"\n\s*\n", text)}
    sentences = {m.end() for m in re.finditer(r"[.!?][\"')\]]?\s", text)}
    return sorted(paragraphs | sentences, reverse=True)


def truncate_row(row: dict, counter, max_tokens: int) -> tuple[dict, int, float] | None:
    """Cut the last user message so the row fits max_tokens: the cut row, its re-checked token count and the
    share of the user text's characters kept; None if no boundary leaves enough of it.

    Cuts happen on the text itself, never on decoded tokens, so no special token can leak into the prompt.
    """
    messages = row["messages"]
    user_index = max(i for i, m in enumerate(messages) if m["role"] == "user")
    text = messages[user_index]["content"]

    def with_user(content: str) -> dict:
        new = [dict(m) for m in messages]
        new[user_index]["content"] = content
        return {**row, "messages": new}

    # Estimate the cut from the token surplus, then walk back one boundary at a time until it fits.
    surplus = counter.count([row])[0] - max_tokens
    keep_chars = int(len(text) * (1 - surplus / max(1, counter.count_text([text])[0]))) - len(TRUNCATION_MARK)
    for point in (p for p in cut_points(text) if p <= keep_chars):
        head = text[:point].rstrip()
        if counter.count_text([head])[0] < MIN_USER_TOKENS:
            return None
        candidate = with_user(head + TRUNCATION_MARK)
        length = counter.count([candidate])[0]
        if length <= max_tokens:
            return candidate, length, len(head) / len(text)
    return None


def trim_rows(rows: list[dict], counter, settings: "Settings", dropped: dict, lengths: list[int], personas=()):
    """Yield the rows that fit (truncating when asked), counting drops by reason and recording kept lengths.

    A truncated row keeps its answer, which was written about the whole section: below --min-kept of the user
    text the answer no longer matches its prompt, and the row is dropped as truncated_too_much. A row about a
    table of contents is dropped as table_of_contents: its answer explains a paper the teacher never saw."""
    max_tokens = settings.max_tokens
    rows = [row for row in rows if not about_contents_page(row, personas, dropped)]
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        for row, length in zip(batch, counter.count(batch), strict=True):
            if length > max_tokens and settings.overflow == "truncate":
                truncated = truncate_row(row, counter, max_tokens)
                if truncated is not None and truncated[2] < settings.min_kept:
                    dropped["truncated_too_much"] = dropped.get("truncated_too_much", 0) + 1
                    continue
                if truncated is not None:
                    row, length, _ = truncated
                    dropped["truncated (kept)"] = dropped.get("truncated (kept)", 0) + 1
            if length > max_tokens:
                dropped["too_long"] = dropped.get("too_long", 0) + 1
                continue
            lengths.append(length)
            yield row


def about_contents_page(row: dict, personas, dropped: dict) -> bool:
    user = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "user"), "")
    if contents_page(section_text(user, personas)):
        dropped["table_of_contents"] = dropped.get("table_of_contents", 0) + 1
        return True
    return False


# ----------------------------------------------------------------------------- main


def output_path(path: Path, max_tokens: int, out_dir: Path | None = None) -> Path:
    """data/eli5.jsonl -> data/eli5_2048.jsonl, beside the input or in out_dir."""
    return (out_dir or path.parent) / f"{path.stem}_{max_tokens}.jsonl"


@dataclass(frozen=True)
class Settings:
    inputs: list[Path]  # empty: data/{persona}.jsonl for every persona of the personas file
    out_dir: Path | None  # None: beside each input
    personas_file: Path
    max_tokens: int
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
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="limit per conversation (default: %(default)s)")
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
        help="what to do with a row over --max-tokens (default: %(default)s)",
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


def trim_file(path: Path, counter, args: Settings, personas) -> tuple[str, int]:
    """Trim one file; its summary line and the number of rows kept."""
    dropped: dict[str, int] = {}
    lengths: list[int] = []
    rows = read_rows(path, args.skip_invalid, dropped, counter.find_special)
    out = output_path(path, args.max_tokens, args.out_dir)
    kept = write_jsonl(out, trim_rows(rows, counter, args, dropped, lengths, personas))
    lengths.sort()
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(dropped.items())) or "none dropped"
    summary = (
        f"{path}: {kept:,} kept ({reasons}); tokens p50 {percentile(lengths, 50):,} "
        f"p95 {percentile(lengths, 95):,} max {lengths[-1] if lengths else 0:,} -> {out}"
    )
    return summary, kept


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = settings_from(Settings, parser.parse_args(argv))
    setup_logging(args.verbose)
    if args.max_tokens < MIN_USER_TOKENS * 2:
        parser.error(f"--max-tokens must be at least {MIN_USER_TOKENS * 2}")
    if not 0 <= args.min_kept <= 1:
        parser.error("--min-kept must be a share between 0 and 1")
    try:
        personas = load_personas(args.personas_file)
    except InputError as e:
        die(str(e))
    inputs = args.inputs or [Path("data") / f"{p.name}.jsonl" for p in personas]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        die(f"input not found: {', '.join(missing)}. Run sdg.py first, or name the files to trim")
    if folders := [str(p) for p in inputs if p.is_dir()]:
        die(f"{folders[0]} is a folder, not a file: name the JSONL files to trim, such as data/eli5.jsonl")
    for path in inputs:
        out = output_path(path, args.max_tokens, args.out_dir)
        fix = "pass --out-dir a folder you can write to"
        fix = fix if args.out_dir else f"its output goes beside it: {fix}"
        if problem := unwritable(out, "--out-dir" if args.out_dir else str(path), fix=fix):
            die(problem)
    started = time.monotonic()
    try:
        counter = load_counter(args.tokenizer)
        log.info("settings: max_tokens=%d tokenizer=%s overflow=%s", args.max_tokens, counter.name, args.overflow)
        empty = []
        for path in inputs:
            summary, kept = trim_file(path, counter, args, personas)
            print(summary)
            empty += [] if kept else [str(path)]
    except InputError as e:
        die(str(e))
    log.info("done in %.1f s", time.monotonic() - started)
    if empty:  # its output is written all the same, so no older trim of that input is left to be split
        die(f"no row kept from {', '.join(empty)}: nothing to train on (the reasons are above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
