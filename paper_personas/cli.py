"""What every script does at its edges: a frozen settings object from parsed arguments, the one entry wrapper
that shows errors a user can fix without a traceback, old flag spellings kept for a release, and logging."""

import argparse
import dataclasses
import logging
import os
import signal
import sys
from argparse import SUPPRESS


def counted(n: int, noun: str, plural: str = "") -> str:
    """'1 paper', '2 papers', '1,204 papers'."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def settings_from(cls, args):
    """A frozen settings dataclass from parsed arguments: the one place argparse's namespace is read."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def start(parser: argparse.ArgumentParser, cls, argv: list[str] | None):
    """What every script's main does first: its settings from the command line, logging to stderr (--verbose:
    debug), and SIGTERM taken as Ctrl-C is."""
    settings = settings_from(cls, parser.parse_args(argv))
    setup_logging(settings.verbose)
    stop_on_sigterm()
    return settings


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


def run(main, argv: list[str] | None = None) -> int:
    """Every script's entry: its main, with bad input a user can fix (InputError) shown as one line, exit 1, and
    a Ctrl-C that main did not handle itself as one line too, never a traceback."""
    try:
        return main(argv)
    except InputError as e:
        die(str(e))
    except KeyboardInterrupt:
        die("interrupted: nothing was lost; rerun the same command to go on")
    return 1


class RenamedFlag(argparse.Action):
    """An old spelling of a flag that still works for one release, saying which flag replaces it."""

    def __init__(self, option_strings, dest, new_name: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_name = new_name

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"warning: {option_string} is deprecated and will be removed in the next release; use {self.new_name} "
            "(the same meaning)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_budget_flag(parser, default: int, help_text: str, old_name: str | None = "--max-tokens") -> None:
    """--max-seq-length, the tokens a training row may take (mlx_lm's name), in every script alike; `old_name`
    is the spelling this script used before, if any."""
    parser.add_argument("--max-seq-length", type=int, default=default, help=f"{help_text} (default: %(default)s)")
    if old_name:
        parser.add_argument(
            old_name, dest="max_seq_length", type=int, action=RenamedFlag, new_name="--max-seq-length", help=SUPPRESS
        )


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
