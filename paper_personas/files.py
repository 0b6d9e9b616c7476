"""Files every step reads and writes: JSONL streaming with file:line errors, atomic writes that respect the
umask, torn-tail repair, and where each step's outputs live (data/eli5_2048.jsonl, data/eli5_2048/)."""

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from paper_personas.cli import InputError


def persona_rows_path(data_dir: Path, persona: str) -> Path:
    """Step 2's output for a persona, e.g. data/eli5.jsonl; step 3 trims it."""
    return Path(data_dir) / f"{persona}.jsonl"


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


# ----------------------------------------------------------------------------- reading


def cannot_open(path: str | Path, error: OSError) -> str:
    """Why a file to read could not be opened, in plain words."""
    if isinstance(error, IsADirectoryError):
        return f"{path} is a folder, not a file"
    if isinstance(error, FileNotFoundError):
        return f"{path} not found"
    return f"cannot read {path} ({error.strerror or type(error).__name__})"


def open_to_read(path: str | Path, fix: str = ""):
    """The file opened in binary; a missing file, a folder or a refused read is an InputError saying `fix`."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(cannot_open(path, e) + (f": {fix}" if fix else "")) from None


def read_text(path: str | Path, fix: str = "") -> str:
    """A whole UTF-8 file; a file that cannot be opened or is not text (a PDF given as papers.json) is an
    InputError saying `fix`."""
    with open_to_read(path, fix) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}){f'; {fix}' if fix else ''}") from None


def iter_jsonl(path: str | Path, skip_torn_tail: bool = False) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, object, None) for good lines and (line number, None, reason) for bad ones. With
    skip_torn_tail, a last line without its newline (a kill mid-append) is left out instead of reported."""
    with open_to_read(path, "name a JSONL file, one JSON object a line") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip() or (skip_torn_tail and not raw.endswith(b"\n")):
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, f"not UTF-8 text (byte {e.start} of the line)"
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, None, f"not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})"
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
    text = read_text(path, fix)
    try:
        return json.loads(text)
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


def unwritable(path: str | Path, flag: str, folder: bool = False, fix: str = "") -> str | None:
    """Why `path` (a file to write, or with folder=True a folder to write into) cannot be written, or None.
    Every script asks before any work, so a run never spends minutes and then fails at its end. The nearest
    folder that exists is probed with a real temporary file: permissions alone do not tell (root, ACLs, a
    read-only mount). `fix` says what to do instead when no flag moves the output."""
    path, fix = Path(path), fix or f"pass {flag} another path"
    if path.is_dir() and not folder:
        return f"{flag} {path} is a folder; give a file path"
    probe = path if folder else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot write {path}: {probe} is a file, not a folder; {fix}"
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        return f"cannot write to {probe}/ ({e.strerror}); {fix}"
    return None


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


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append whole lines and make them durable before returning: the one way a journal, a ledger of orphans or
    a persona file grows. A kill can only tear the last line, which repair_torn_tail() cuts on the next read."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(dump_jsonl_line(row) for row in rows))
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Atomically write rows as JSONL; return the number written."""
    n = 0
    with atomic_writer(path) as f:
        for row in rows:
            f.write(dump_jsonl_line(row))
            n += 1
    return n


def safetensors_complete(path: Path) -> bool:
    """A safetensors file as long as its header says: one cut short (a kill mid-write, a full disk the writer did
    not report) is not taken for weights."""
    import struct

    try:
        with Path(path).open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, ValueError):
        return False
    data = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return Path(path).stat().st_size == 8 + header_len + data


def write_json(path: str | Path, obj: object) -> None:
    with atomic_writer(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
