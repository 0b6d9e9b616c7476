"""What every script does at its edges: a frozen settings object from parsed arguments, errors a user can fix
shown without a traceback, and logging to stderr."""

import dataclasses
import logging
import os
import signal
import sys


def counted(n: int, noun: str, plural: str = "") -> str:
    """'1 paper', '2 papers', '1,204 papers'."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def settings_from(cls, args):
    """A frozen settings dataclass from parsed arguments: the one place argparse's namespace is read."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


class InputError(Exception):
    """Bad input a user can fix. The message names the file, the line and the fix; it is shown without a traceback."""


def stop_on_sigterm() -> None:
    """SIGTERM (a `kill`, a scheduler ending a job) ends a run as Ctrl-C does: finished work is saved, the run's
    bookkeeping is written and the message says how to resume, instead of dying with nothing said."""

    def interrupt(signum, frame):
        signal.raise_signal(signal.SIGINT)  # whatever Ctrl-C does now (asyncio.run cancels its task first)

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a job started in the background: no one can type
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, and SIGTERM must not be ignored too
    signal.signal(signal.SIGTERM, interrupt)


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
    # transformers warns "Token indices sequence length is longer than the specified maximum" for every long
    # section it counts: counting long texts is the point here. Set before transformers configures its logger.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # One INFO line per HTTP request; google-genai sends through httpx2, a fork with a logger of its own.
    # absl: rouge_score logs "Using default tokenizer." once per scorer it builds.
    for noisy in ("httpx", "httpx2", "google_genai", "google_genai.models", "arxiv", "absl"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
