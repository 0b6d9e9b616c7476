"""Small builders shared by the tests: chat rows, a tiny tiktoken encoding, running a script as a user does."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import tiktoken

# The repository, as conftest.py has it; not imported from there, since scripts and benches import these helpers
# and conftest.py sets up the test session (it drops API keys from the environment).
ROOT = Path(__file__).resolve().parent.parent

PARAGRAPH = "Hash tables map each key to a slot. A lookup costs the same however many keys there are. "


def chat_row(
    user: str,
    answer: str = "**Analogy:** A library.\n\n**Explanation:** Each book has a shelf.",
    paper_id: str | None = "p1",
    section: int = 0,
) -> dict:
    row = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    if paper_id is not None:
        row["meta"] = {"paper_id": paper_id, "section": section, "chunk": 0, "key": f"{paper_id}:{section}"}
    return row


def write_rows(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tiny_tiktoken() -> tiktoken.Encoding:
    """A byte-level encoding with a few merges: tiktoken's real machinery, no download."""
    ranks = {bytes([b]): b for b in range(256)}
    for word in ["the", "ke", "key", " a", "sh", "hash", "ta", "table", "lo", "look"]:
        ranks.setdefault(word.encode(), len(ranks))
    pattern = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    pattern += r"""|\s*[\r\n]|\s+(?!\S)|\s+"""  # cl100k_base's split pattern
    return tiktoken.Encoding(name="tiny", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


class Loopback:
    """What every loopback fake shares: `with Fake(...) as fake:` serves `self.server` on a daemon thread and shuts
    it down on exit."""

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A fake's request handler: keep-alive as real APIs answer, no log lines in the test output."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))


# Root bypasses file permissions; a user's run does not. Dropping these capabilities makes a root test see what
# the user sees (util-linux's setpriv, on every Debian).
AS_A_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under folder with its SHA-256: equal before and after means nothing was touched."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "wandb" not in p.parts
    }


def run_script(script: str, *args, cwd=None, env=None, timeout=600, as_a_user=False):
    """One of the repository's scripts as a user runs it: a new process, no terminal on stdin (as in CI or a
    pipe), stdout and stderr captured. as_a_user: without root's permission override (AS_A_USER), so a folder's
    mode is obeyed; the test is skipped where setpriv is missing."""
    if as_a_user and not shutil.which("setpriv"):
        import pytest  # here: smoke.py and the benches import this module, and need no pytest

        pytest.skip("setpriv (util-linux) is needed to drop root's permission override")
    return subprocess.run(
        [*(AS_A_USER if as_a_user else []), sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def run_main(script: str, args, expect: int | None = 0, env=None, timeout=600) -> subprocess.CompletedProcess:
    """A script run as a user runs it (tests import the package, never a script), asserting its exit code:
    0 by default, 1 for an error, None to leave it to the caller. The failure message shows what it printed."""
    result = run_script(script, *args, env=env, timeout=timeout)
    if expect is not None:
        assert result.returncode == expect, f"{script} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def free_port() -> int:
    """A loopback port nothing listens on once this returns (the socket that found it is closed): where to
    start a server, or an address that refuses connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_make(target: str, copy: Path, timeout: float) -> subprocess.CompletedProcess:
    """`make target` in `copy`, a copy of (part of) the repository, sharing this venv: linked in, and taken as
    installed, since make would judge it by the copied requirements' modification times and rebuild it. `target`
    is what follows `make` as a user types it ("train CONFIG=configs/x.json")."""
    (copy / ".venv").symlink_to(ROOT / ".venv")
    installed = [f"--assume-old={p.relative_to(ROOT)}" for p in (ROOT / ".venv").glob(".installed-*")]
    return subprocess.run(
        ["make", *installed, *target.split()], cwd=copy, capture_output=True, text=True, timeout=timeout
    )


def section_text(paper: int, section: int, sentences: int) -> str:
    """Sentences that name their paper and section, so no two units of a test corpus share their text."""
    return " ".join(f"Sentence {i} of section {section} in paper {paper}: {PARAGRAPH}" for i in range(sentences))


def write_papers(path, papers=4, sections=5):
    """papers.json as step 1 writes it: section 2 long enough to be cut in two chunks at the real 2,048-token
    budget (30 sentences of about 70 tiny-Llama tokens against a chunk budget of 1,527), one section too short."""
    records = []
    for p in range(papers):
        body = [{"heading": f"{s} Section", "text": section_text(p, s, 30 if s == 2 else 2)} for s in range(sections)]
        body.append({"heading": "Tiny", "text": "Too short."})
        records.append({"id": f"2401.{p:05d}", "title": f"Paper {p}", "sections": body})
    path.write_text(json.dumps({"papers": records, "failures": []}))
    return path
