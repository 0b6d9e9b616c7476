"""Answers kept as they are made, so a run of analyze.py or evaluate.py that is interrupted, or fails while
writing its report, resumes without generating them again (as step 2 resumes from its JSONL files).

One JSON line per answer, appended and flushed at once: {"fingerprint", ...the answer}. The fingerprint is a hash
of everything that made the answer (model, adapter file, prompt, decoding settings), so an answer is reused only
where the same command would make it again, and an answer made with other inputs is never kept by mistake.
"""

import hashlib
import json
import logging
from pathlib import Path

from paper_personas.files import append_jsonl, iter_jsonl, repair_torn_tail

log = logging.getLogger("journal")


def fingerprint(**parts) -> str:
    """A stable hash of what made an answer; every part must be JSON (paths as strings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def file_identity(path: Path) -> str:
    """A trained adapter as it is on disk now: retraining it changes its size or modification time."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class AnswerJournal:
    def __init__(self, path: Path):
        self.path = path
        self.known: dict[str, dict] = {}
        repair_torn_tail(path)  # a kill mid-line: that answer is made again, and appends start on a new line
        if path.exists():
            for _, row, _ in iter_jsonl(path):
                if row is not None and isinstance(row.get("fingerprint"), str):
                    self.known[row["fingerprint"]] = row
        if self.known:
            log.info("resuming: %d answers already made, in %s", len(self.known), path)
        self.reused = 0

    def get(self, key: str) -> dict | None:
        found = self.known.get(key)
        self.reused += found is not None
        return found

    def add(self, key: str, answer: dict) -> None:
        row = {"fingerprint": key, **answer}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, [row])
        self.known[key] = row

    def remove(self) -> None:
        """Once the report that holds every answer is written, the journal has done its job."""
        self.path.unlink(missing_ok=True)
