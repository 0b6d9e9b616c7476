"""The thin module the pipeline scripts share: JSONL streaming, atomic writes, errors and logging.

The scripts import from here and never from each other, so each step stays a standalone file.
"""

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

PERSONAS = ("eli5", "intuitive", "executive")  # the order of every per-persona loop and file list


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
    for noisy in ("httpx", "google_genai", "google_genai.models", "arxiv"):  # one INFO line per HTTP request
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


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w"):
    """Write to a temporary file beside `path`, then rename it into place: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def dump_jsonl_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


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
