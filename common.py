"""The thin module the pipeline scripts share: the settings the steps must agree on, JSONL streaming, atomic
writes, errors, logging and tokenizers.

The scripts import from here and never from each other, so each step stays a standalone file.
"""

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

# ----------------------------------------------------------------------------- settings every step shares

MAX_TOKENS = 2048  # the trainer's max_seq_length: step 2 sizes chunks for it, step 3 trims to it, 4 and 5 read it
# Llama 3.2's chat template around the message texts, measured with its real tokenizer
# (bench/template_margin.py): 26 tokens once (BOS and the default system header with its dates),
# plus 5 per message (<|start_header_id|>, role, <|end_header_id|>, "\n\n", <|eot_id|>).
TEMPLATE_BASE_TOKENS = 26
TEMPLATE_TOKENS_PER_MESSAGE = 5


# trim_jsonl.py ends a cut user text with this; split_data.py ignores it when it compares sections.
TRUNCATION_MARK = "\n\n[…truncated]"


def template_tokens(messages: int) -> int:
    return TEMPLATE_BASE_TOKENS + TEMPLATE_TOKENS_PER_MESSAGE * messages


def trimmed_path(data_dir: Path, persona: str, max_tokens: int) -> Path:
    """Step 3's output for a persona, e.g. data/eli5_2048.jsonl; step 4 splits it into data/eli5_2048/."""
    return Path(data_dir) / f"{persona}_{max_tokens}.jsonl"


def split_dir(data_dir: Path, persona: str, max_tokens: int) -> Path:
    return trimmed_path(data_dir, persona, max_tokens).with_suffix("")


def other_budgets(data_dir: Path, persona: str, max_tokens: int) -> list[Path]:
    """Step 3 outputs of this persona for another token budget that are newer than this one's: a sign that
    trim_jsonl.py ran with another --max-tokens and the file about to be read is stale."""
    mine = trimmed_path(data_dir, persona, max_tokens)
    since = mine.stat().st_mtime if mine.exists() else 0.0
    pattern = re.compile(rf"^{re.escape(persona)}_(\d+)\.jsonl$")
    return sorted(
        p
        for p in Path(data_dir).glob(f"{persona}_*.jsonl")
        if (m := pattern.match(p.name)) and int(m[1]) != max_tokens and p.stat().st_mtime > since
    )


def safe_filename(paper_id: str) -> str:
    """A paper id as a single path component: old-style 'cs/0112017' must never become a sub-folder. Letters of
    any script are kept, so two papers named in Chinese do not both become "paper"."""
    name = re.sub(r"[^\w.-]+", "_", paper_id).strip("._")
    return name or "paper"


def settings_from(cls, args):
    """A frozen settings dataclass from parsed arguments: the one place argparse's namespace is read."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


class InputError(Exception):
    """Bad input a user can fix. The message names the file, the line and the fix; it is shown without a traceback."""


def die(message: str) -> None:
    """Exit 1 with a one-line message and no traceback (usage mistakes go to parser.error, exit 2)."""
    sys.exit(f"error: {message}")


def setup_logging(verbose: bool = False) -> None:
    # stderr carries logs and progress bars; stdout is kept for results.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # One INFO line per HTTP request; google-genai sends through httpx2, a fork with a logger of its own.
    for noisy in ("httpx", "httpx2", "google_genai", "google_genai.models", "arxiv"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


# ----------------------------------------------------------------------------- reading


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, object, None) for good lines and (line number, None, reason) for bad ones."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, None, f"not valid JSON ({e.msg} at column {e.colno})"
                continue
            if isinstance(obj, dict):
                yield lineno, obj, None
            else:
                yield lineno, None, f"expected a JSON object, got {type(obj).__name__}"


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); a bad line raises InputError naming file:line."""
    for lineno, obj, problem in iter_jsonl(path):
        if problem:
            raise InputError(f"{path}:{lineno}: {problem}")
        yield lineno, obj


def read_json(path: str | Path, what: str, fix: str) -> object:
    """Load a whole JSON file, turning a missing or corrupt file into an InputError that says how to fix it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} not found: {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: {what} is not valid JSON ({e.msg}); {fix}") from None


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that a kill left without its newline; return how many bytes were cut.

    Appends are one `write` of a whole line, so only the last line can be torn, and only by a crash.
    """
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1  # 0 when the only line is torn
        f.truncate(keep)
        return len(data) - keep


# ----------------------------------------------------------------------------- writing


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w"):
    """Write to a temporary file beside `path`, then rename it into place: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a file made with open() would respect umask
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Characters that str.splitlines() and many JSONL readers take for a line break, which json.dumps leaves raw
# inside strings when ensure_ascii is off (it escapes the other control characters itself). A teacher's answer
# can hold one; escaped, the row stays one line everywhere and loads back the same.
LINE_BREAKS_IN_STRINGS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dump_jsonl_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False).translate(LINE_BREAKS_IN_STRINGS) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Atomically write rows as JSONL; return the number written."""
    n = 0
    with atomic_writer(path) as f:
        for row in rows:
            f.write(dump_jsonl_line(row))
            n += 1
    return n


def write_json(path: str | Path, obj: object) -> None:
    with atomic_writer(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


# ----------------------------------------------------------------------------- tokenizers


def load_tiktoken(name: str):
    """Load a tiktoken encoding, or raise InputError that explains the offline case and the local alternative."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError as e:
        raise InputError(f"unknown tiktoken encoding {name!r} ({e}); try cl100k_base or o200k_base") from None
    except Exception as e:  # requests' ConnectionError and friends: tiktoken downloads encodings on first use
        raise InputError(
            f"could not load tiktoken encoding {name!r}: it is downloaded on first use and that failed "
            f"({type(e).__name__}). Without network access, pass --tokenizer PATH to a local model folder "
            "(any folder with tokenizer.json), or set TIKTOKEN_CACHE_DIR to a folder that already holds it."
        ) from None


def load_tokenizer(spec: str):
    """A tiktoken.Encoding for an encoding name, else the tokenizer (with chat template) of a local model folder
    or Hugging Face model id, loaded as mlx_lm loads it. Raises InputError saying what to pass instead."""
    import tiktoken

    if spec in tiktoken.list_encoding_names():
        return load_tiktoken(spec)
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    try:
        return mlx_load_tokenizer(Path(spec) if Path(spec).exists() else spec)
    except Exception as e:
        raise InputError(
            f"could not load tokenizer {spec!r} ({type(e).__name__}: {e}). Pass a tiktoken encoding "
            f"({', '.join(tiktoken.list_encoding_names())}), a local model folder, or a Hugging Face model id"
        ) from None


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Token counts of plain texts (no special tokens) for either kind of tokenizer load_tokenizer returns."""
    if hasattr(tokenizer, "encode_ordinary_batch"):
        return [len(t) for t in tokenizer.encode_ordinary_batch(texts)]
    return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
