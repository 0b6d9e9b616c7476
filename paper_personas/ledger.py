"""Step 2's counts and cost: what one run did (Stats), the cost ledger every run is added to (data/sdg_stats.json:
{"runs": [...], "total": {...}}), and the dry run's estimate."""

import time
from dataclasses import dataclass, field
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.files import read_json
from paper_personas.teachers.base import Prices, Usage

LEDGER_SUMS = (
    "done",
    "failed",
    "requests",
    "retries",
    "prompt_tokens",
    "candidates_tokens",
    "thoughts_tokens",
    "cached_tokens",
    "cost_usd",
    "seconds",
)
ANSWER_FIELD_TOKENS = 150  # the dry run's guess at one answer field's length


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    retrying: int = 0
    requests: int = 0
    usage: Usage = field(default_factory=Usage)  # tokens of every answer received, retries included
    failures: dict = field(default_factory=dict)  # reason -> units that failed for it in the end
    rejections: dict = field(default_factory=dict)  # reason -> answers the gate refused, every attempt counted
    started: float = field(default_factory=time.monotonic)

    def reject(self, reason: str) -> None:
        kind = reason.split(":")[0]
        self.rejections[kind] = self.rejections.get(kind, 0) + 1

    def fail(self, reason: str) -> None:
        kind = reason.split(":")[0]
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.failed += 1

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add_usage(self, usage: Usage) -> None:
        self.usage = self.usage + usage


def read_ledger(path: Path) -> list[dict]:
    """The runs recorded so far; a file from before the ledger (one run's fields) becomes its first run."""
    if not path.exists():
        return []
    data = read_json(path, "the cost ledger", "move it aside to start a new ledger")
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        return data["runs"]
    if isinstance(data, dict) and "cost_usd" in data:
        return [data]
    raise InputError(f"{path}: not a cost ledger ({{'runs': [...], 'total': {{...}}}}); move it aside")


def ledger(runs: list[dict]) -> dict:
    return {"runs": runs, "total": {k: round(sum(r.get(k, 0) for r in runs), 4) for k in LEDGER_SUMS}}


def run_record(settings, stats: Stats, prices: Prices, outcome: str, units: int, pending: int, orphaned: dict) -> dict:
    """One run as the ledger keeps it; `settings` is step 2's (generation.Settings)."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - stats.seconds())),
        "outcome": outcome,
        "teacher": settings.teacher,
        "model": settings.model,
        "units": units,
        "pending": pending,
        "done": stats.done,
        "failed": stats.failed,
        "failures_by_reason": stats.failures,
        "rejections_by_reason": stats.rejections,  # every attempt the gate refused, retried ones included
        "orphaned": orphaned,
        "requests": stats.requests,
        "retries": stats.retrying,
        "prompt_tokens": stats.usage.input,
        "candidates_tokens": stats.usage.output,
        "thoughts_tokens": stats.usage.thinking,
        "cached_tokens": stats.usage.cached,
        "cost_usd": round(prices.cost(stats.usage), 4),
        "prices_per_million": {"input": prices.input, "output": prices.output, "cached": prices.cached},
        "seconds": round(stats.seconds(), 1),
    }


def estimate(input_tokens: int, units: int, fields: int, prices: Prices) -> tuple[int, float]:
    """The dry run's output tokens and cost: every field of every persona at about ANSWER_FIELD_TOKENS tokens."""
    output_tokens = units * fields * ANSWER_FIELD_TOKENS
    return output_tokens, prices.cost(Usage(input=input_tokens, output=output_tokens))
