"""Step 2: generate one training set per persona (personas.toml) from paper sections with a teacher model:
Gemini 2.5 Flash by default, the Gemini Batch API at half the price, any OpenAI-compatible server, or a local
model in this process (paper_personas/teachers/).

Run simply as:
    $ export GEMINI_API_KEY=...                  # or GOOGLE_API_KEY; never printed or written
    $ python sdg.py --dry-run                    # units, input tokens and estimated cost; no API call
    $ python sdg.py                              # free tier: 10 requests/minute
    $ python sdg.py --rpm 1000 --concurrency 32  # paid Tier 1
    $ python sdg.py --teacher gemini-batch       # half the price, results within 24 h (--no-wait: submit, exit)
    $ python sdg.py --teacher openai --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
    $ python sdg.py --teacher mlx --model mlx-community/Qwen2.5-7B-Instruct-4bit    # no key, no server

Reads:  papers.json (step 1).
Writes: data/{persona}.jsonl (eli5, intuitive, executive by default), one row per section chunk:
          {"messages": [{"role": "user", ...}, {"role": "assistant", ...}],
           "meta": {paper_id, section, chunk, key, model}}
        data/sdg_failures.jsonl (units that failed this run, with the reason), data/sdg_orphans.jsonl (rows moved
        out because their unit left papers.json, or a second copy), data/sdg_stats.json (the cost ledger: one
        entry per run, and their total) and, for gemini-batch, data/sdg_batches.jsonl (the journal of its jobs).
Rows are appended and flushed as each unit finishes; a rerun skips finished units and retries failed ones. A unit
is keyed by its paper and its text, so editing papers.json re-pays only for what changed, and every run ends with
each persona file holding one row per current unit. One run per output folder (a lock). An error every request
would meet (key, permission, model, location, thinking budget, URL, a spent quota) stops the run, exit 1.
Every teacher goes through the same rate limiter, retries, quality gate, writer, ledger and orphan handling.
"""

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ValidationError

from paper_personas.cli import InputError, counted, die, settings_from, setup_logging, stop_on_sigterm
from paper_personas.files import (
    dump_jsonl_line,
    iter_jsonl,
    read_json,
    repair_torn_tail,
    unwritable,
    write_json,
    write_jsonl,
)
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import Persona, answers_schema, load_personas, system_instruction
from paper_personas.quality import answers_problem
from paper_personas.teachers import TEACHERS, make_teacher
from paper_personas.teachers.base import (
    DAILY_QUOTA,
    RETRYABLE,
    SYSTEMIC,
    UNREACHABLE_ATTEMPTS,
    FatalAPIError,
    Prices,
    Reply,
    Teacher,
    TeacherOptions,
    Usage,
    connection_failure,
    retrying,
)
from paper_personas.teachers.gemini import DEFAULT_MODEL, GEMINI_PRICES
from paper_personas.teachers.gemini_batch import GEMINI_BATCH_PRICES
from paper_personas.tokens import MAX_TOKENS, count_tokens, load_tokenizer
from paper_personas.units import (
    MIN_PROSE_CHARS,
    Unit,
    across_papers,
    build_units,
    canonical_key,
    chunk_budget,
    min_max_tokens,
    request_text,
)

log = logging.getLogger("sdg")

# ----------------------------------------------------------------------------- constants

HEARTBEAT_S = 2.0  # how often the progress bar is refreshed while no unit finishes
SYSTEMIC_STREAK = 3  # the same non-retryable failure on this many units in a row is about the run, not the units
# Gemini's block reasons, and OpenAI's content filter and refusal.
BLOCK_REASONS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"} | {
    "CONTENT_FILTER",
    "REFUSAL",
}


@dataclass(frozen=True)
class Settings:
    papers: Path
    out_dir: Path
    personas_file: Path
    teacher: str
    model: str | None  # None: the teacher's default
    base_url: str | None
    concurrency: int
    rpm: float | None  # None: the teacher's default
    tpm: int
    timeout: float
    max_retries: int
    quality_attempts: int
    thinking_budget: int
    temperature: float
    max_output_tokens: int
    max_tokens: int
    tokenizer: str
    price_input: float | None  # None: the teacher's price table
    price_output: float | None
    price_cached: float | None
    limit: int
    dry_run: bool
    batch_size: int
    poll_interval: float
    no_wait: bool
    verbose: bool


# Servers that ignore the response schema often still answer JSON, wrapped in a Markdown code fence.
FENCE = re.compile(r"^\s*```(?:json)?[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def unfenced(text: str | None) -> str:
    match = FENCE.match(text or "")
    return match[1] if match else text or ""


def parse_response(reply: Reply, schema, personas, section: str) -> tuple[BaseModel | None, str | None]:
    """The validated answers of a teacher's reply, or the reason it is unusable. A reason starting with
    "blocked_prompt" means the prompt itself was refused: asking again is pointless."""
    if reply.blocked_prompt:
        return None, f"blocked_prompt:{reply.blocked_prompt}"
    if reply.finish in ("NO_CANDIDATES", "NO_CHOICES"):
        return None, "no_candidates"
    if reply.finish in BLOCK_REASONS:
        return None, f"blocked:{reply.finish}"
    if reply.finish == "MAX_TOKENS":
        return None, "max_tokens"
    if reply.finish != "STOP":
        return None, f"finish:{reply.finish}"  # OTHER, MALFORMED_FUNCTION_CALL, ...: each reported as itself
    try:
        answers = schema.model_validate_json(unfenced(reply.text))
    except ValidationError as e:
        return None, f"invalid_json:{e.errors()[0]['type']}"
    problem = answers_problem(answers, personas, section)
    return (None, problem) if problem else (answers, None)


# ----------------------------------------------------------------------------- output files


def read_done_keys(out_dir: Path, personas: tuple[Persona, ...], repair: bool = True) -> dict[str, set[str]]:
    """Keys already written per persona, after cutting a torn last line that a kill may have left (with
    repair=False, as a dry run reads, the torn line is only left out: nothing is written)."""
    done = {}
    for persona in personas:
        path = out_dir / f"{persona.name}.jsonl"
        if repair and repair_torn_tail(path):
            log.warning("%s: cut a torn last line left by an interrupted run", path)
        keys = set()
        if path.exists():
            for lineno, row, problem in iter_jsonl(path, skip_torn_tail=not repair):
                if problem or not (row.get("meta") or {}).get("key"):
                    raise InputError(
                        f"{path}:{lineno}: {problem or 'row without meta.key'}; it was not written by "
                        "sdg.py. Move the file aside to start over"
                    )
                keys.add(canonical_key(row["meta"]["key"]))
        done[persona.name] = keys
    return done


def reconcile(out_dir: Path, personas: tuple[Persona, ...], current: list[str]) -> dict[str, int]:
    """Make each persona file hold exactly one row per current unit, in the units' order (papers.json's), whatever
    order they finished in, so a rerun gives identical bytes. Rows whose unit is no longer in papers.json (a paper
    removed, a section edited) and second copies of a key move to sdg_orphans.jsonl, kept and never deleted; keys
    of an older spelling are rewritten. A persona file is replaced atomically, after its orphans are safely
    appended."""
    rank = {key: i for i, key in enumerate(current)}
    moved = {"stale": 0, "duplicate": 0}
    for persona in personas:
        path = out_dir / f"{persona.name}.jsonl"
        if not path.exists():
            continue
        seen, orphans, rekeyed, order = set(), [], 0, []
        for _, row, _ in iter_jsonl(path):  # every line was checked by read_done_keys
            key = canonical_key(row["meta"]["key"])
            reason = "stale" if key not in rank else "duplicate" if key in seen else None
            if reason:
                orphans.append({"persona": persona.name, "reason": reason, "row": row})
                moved[reason] += 1
            else:
                order.append(rank[key])
            seen.add(key)
            rekeyed += key != row["meta"]["key"]
        if not orphans and not rekeyed and order == sorted(order):
            continue
        if orphans:
            with open(out_dir / "sdg_orphans.jsonl", "a", encoding="utf-8") as f:
                f.writelines(dump_jsonl_line(o) for o in orphans)
                f.flush()
                os.fsync(f.fileno())
        write_jsonl(path, sorted(kept_rows(path, rank), key=lambda row: rank[row["meta"]["key"]]))
    return moved


def kept_rows(path: Path, current):
    """The rows of a persona file that reconcile() keeps, first copy of each current key, keys respelled."""
    seen = set()
    for _, row, _ in iter_jsonl(path):
        key = canonical_key(row["meta"]["key"])
        if key in current and key not in seen:
            seen.add(key)
            yield {**row, "meta": {**row["meta"], "key": key}}


def make_row(persona: Persona, unit: Unit, answers: BaseModel, model: str, model_version: str | None = None) -> dict:
    return {
        "messages": [
            {"role": "user", "content": persona.user_message(unit.text)},
            {"role": "assistant", "content": persona.render(getattr(answers, persona.name).model_dump())},
        ],
        "meta": {
            "paper_id": unit.paper_id,
            "section": unit.section,
            "chunk": unit.chunk,
            "key": unit.key,
            "model": model,
            **({"model_version": model_version} if model_version else {}),
        },
    }


# ----------------------------------------------------------------------------- asking the teacher


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    retrying: int = 0
    requests: int = 0
    usage: Usage = field(default_factory=Usage)  # tokens of every answer received, retries included
    failures: dict = field(default_factory=dict)  # reason -> units that failed for it in the end
    rejections: dict = field(default_factory=dict)  # reason -> answers the gate refused, every attempt counted

    def reject(self, reason: str) -> None:
        kind = reason.split(":")[0]
        self.rejections[kind] = self.rejections.get(kind, 0) + 1

    started: float = field(default_factory=time.monotonic)

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add_usage(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    def cost(self, settings: Settings) -> float:
        return prices_of(settings).cost(self.usage)


class Writer:
    """Where answers become rows, for every teacher alike: a unit's rows are appended and flushed as it
    finishes, once per persona (a unit cut short by a kill is completed, never duplicated), and a failure is
    recorded with its reason. Counts go to `stats`, progress to the bar."""

    def __init__(self, settings: Settings, personas, done: dict[str, set[str]], stats: Stats, progress, activity=dict):
        self.settings, self.personas, self.done, self.stats, self.progress = settings, personas, done, stats, progress
        self.activity = activity  # what the teacher is doing now (a local model's tokens/s), for the bar
        out = settings.out_dir
        # Append-only logs, kept open for the run and closed in close(); each record is flushed as it is written.
        self.files = {p.name: open(out / f"{p.name}.jsonl", "a", encoding="utf-8") for p in personas}  # noqa: SIM115
        self.failures = open(out / "sdg_failures.jsonl", "w", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        for f in [*self.files.values(), self.failures]:
            f.close()

    def is_done(self, key: str) -> bool:
        return all(key in self.done[p.name] for p in self.personas)

    def write(self, unit: Unit, answers: BaseModel, model_version: str | None) -> None:
        for persona in self.personas:
            if unit.key not in self.done[persona.name]:  # a unit cut short by a kill is completed, not duplicated
                f = self.files[persona.name]
                f.write(dump_jsonl_line(make_row(persona, unit, answers, self.settings.model, model_version)))
                f.flush()
                self.done[persona.name].add(unit.key)
        self.stats.done += 1
        self.tick()

    def record_failure(self, unit: Unit, reason: str) -> None:
        kind = reason.split(":")[0]
        self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
        self.stats.failed += 1
        record = {"key": unit.key, "paper_id": unit.paper_id, "section": unit.section, "chunk": unit.chunk}
        self.failures.write(dump_jsonl_line({**record, "reason": reason}))
        self.failures.flush()
        self.tick()

    def tick(self) -> None:
        self.progress.update(1)
        self.tick_postfix()

    def tick_postfix(self) -> None:
        counts = {"done": self.stats.done, "failed": self.stats.failed, "retrying": self.stats.retrying}
        self.progress.set_postfix(counts | self.activity())


class Generator:
    """Sends units to the teacher under a smooth client-side rate limit, with retries, and hands each answer to
    the gate and the writer. The same for every teacher: what differs is behind Teacher.ask and .classify."""

    def __init__(self, teacher: Teacher, settings: Settings, personas, writer: Writer):
        from aiolimiter import AsyncLimiter

        self.teacher, self.settings, self.writer, self.stats = teacher, settings, writer, writer.stats
        self.personas, self.schema = personas, answers_schema(personas)
        self.system = system_instruction(personas)
        self.streak = ("", 0)  # (signature of the last non-retryable failure, units in a row that had it)
        # One request per 60/rpm seconds: a bucket of one never bursts, so no 60 s window exceeds --rpm.
        self.rate = AsyncLimiter(1, 60.0 / settings.rpm) if settings.rpm else None
        self.tokens = AsyncLimiter(settings.tpm, 60.0) if settings.tpm else None
        self.slots = asyncio.Semaphore(settings.concurrency)

    async def call(self, unit: Unit) -> Reply:
        """One request, bounded by --timeout as a whole when it goes over the network; every attempt, retries
        included, waits its turn at the rate limiter. Only what the teacher calls retryable is retried."""

        def count_retry(state):
            self.stats.retrying += 1
            self.writer.tick_postfix()

        async for attempt in retrying(self.teacher, self.settings.max_retries, before_sleep=count_retry):
            with attempt:
                if self.tokens is not None:
                    await self.tokens.acquire(min(self.settings.tpm, len(unit.text) // 3 + 1000))
                if self.rate is not None:
                    async with self.rate:
                        pass
                self.stats.requests += 1
                request = self.teacher.ask(self.system, request_text(unit), self.schema)
                if not self.teacher.remote:
                    return await request
                return await asyncio.wait_for(request, timeout=self.settings.timeout)

    def stop_if_systemic(self, error: Exception) -> str:
        """Raise FatalAPIError for an error every request would meet; else return this unit's failure reason."""
        kind, facts = self.teacher.classify(error), self.teacher.facts(error)
        if kind == DAILY_QUOTA:
            daily = "daily " if any("PerDay" in q for q in facts.quota_ids) else ""
            raise FatalAPIError(
                f"the {daily}quota is spent ({', '.join(facts.quota_ids)}): {facts.message}", quota=True
            )
        if kind == SYSTEMIC:
            raise FatalAPIError(f"{self.teacher.name} refused the request: {facts.describe()}")
        if connection_failure(error):  # UNREACHABLE_ATTEMPTS in a row: the server went down or the URL is wrong
            raise FatalAPIError(
                f"cannot reach {self.teacher.name} at {self.teacher.url} ({facts.describe()}) on "
                f"{UNREACHABLE_ATTEMPTS} attempts in a row: is the server running? Check --base-url"
            )
        reason = f"api_error:{facts.code or type(error).__name__}"
        if kind != RETRYABLE:  # retries exhausted is weather; the same refusal again and again is not
            same = self.streak[0] == facts.signature
            self.streak = (facts.signature, self.streak[1] + 1 if same else 1)
            if self.streak[1] >= SYSTEMIC_STREAK:
                raise FatalAPIError(
                    f"the same error on {SYSTEMIC_STREAK} units in a row, so it is not about them: {facts.describe()}"
                )
        return reason

    async def run_unit(self, unit: Unit) -> None:
        async with self.slots:
            reason = "no attempt"
            for _ in range(self.settings.quality_attempts):
                try:
                    reply = await self.call(unit)
                except FatalAPIError:
                    raise
                except Exception as e:  # not retryable, or retries exhausted on 429/5xx/timeouts
                    reason = self.stop_if_systemic(e)
                    break
                self.stats.add_usage(reply.usage)
                answers, reason = parse_response(reply, self.schema, self.personas, unit.text)
                if answers is None:
                    self.stats.reject(reason)
                else:
                    self.streak = ("", 0)
                    self.writer.write(unit, answers, reply.model_version)
                    return
                if reason.startswith("blocked_prompt"):
                    break  # the same prompt is blocked again: do not pay to hear it twice
            self.writer.record_failure(unit, reason)

    async def heartbeat(self) -> None:
        """Refresh the bar while no unit finishes: a local model spends minutes on its first batch."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.writer.tick_postfix()

    async def run(self, units: list[Unit]) -> None:
        tasks = [asyncio.create_task(self.run_unit(u)) for u in units]
        heartbeat = asyncio.create_task(self.heartbeat())
        try:
            for finished in asyncio.as_completed(tasks):
                await finished
        finally:
            for task in [*tasks, heartbeat]:
                task.cancel()
            await asyncio.gather(*tasks, heartbeat, return_exceptions=True)


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", type=Path, default=Path("papers.json"), help="step 1 output (default: %(default)s)")
    p.add_argument("--out-dir", type=Path, default=Path("data"), help="where the JSONL files go (default: %(default)s)")
    p.add_argument(
        "--personas-file",
        type=Path,
        default=DEFAULT_PERSONAS_FILE,
        help="the personas to generate (default: personas.toml)",
    )
    api = p.add_argument_group("the teacher")
    api.add_argument(
        "--teacher",
        choices=sorted(TEACHERS),
        default="gemini",
        help="gemini: Gemini's online API; gemini-batch: Gemini's Batch API, half the price, results within 24 h; "
        "openai: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI) at --base-url; mlx: a local model "
        "in this process, no key (default: %(default)s)",
    )
    api.add_argument(
        "--model",
        help=f"the teacher's model: a Gemini model (default {DEFAULT_MODEL}), the name the OpenAI-compatible server "
        "serves, or an mlx_lm model folder or Hugging Face id",
    )
    api.add_argument(
        "--base-url",
        help="gemini: a Gemini-compatible endpoint, e.g. a gateway or test server (env GEMINI_BASE_URL); "
        "openai: the server's /v1 URL (env OPENAI_BASE_URL)",
    )
    api.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight, or mlx sequences decoded together (default: 8)"
    )
    api.add_argument(
        "--rpm",
        type=float,
        help="requests per minute, retries included; 0 = no limit. Default: 10 for gemini (the free tier; paid "
        "Tier 1 allows 1000), no limit for openai and mlx",
    )
    api.add_argument(
        "--tpm", type=int, default=0, help="input tokens per minute, estimated; 0 = no limit (free tier: 250000)"
    )
    api.add_argument("--timeout", type=float, default=120, help="seconds per request (default: %(default)s)")
    api.add_argument(
        "--max-retries", type=int, default=6, help="retries per request on 429/5xx/timeouts (default: %(default)s)"
    )
    api.add_argument(
        "--quality-attempts",
        type=int,
        default=3,
        help="generations per unit before it is recorded "
        "as failed: blocked, truncated, unparsable or off-persona (default: %(default)s)",
    )
    gen = p.add_argument_group("generation and cost")
    gen.add_argument(
        "--thinking-budget",
        type=int,
        default=0,
        help="thinking tokens; billed as output, and this task does not need them (default: %(default)s)",
    )
    gen.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="the teacher's sampling temperature: 0 = always its likeliest answer, higher = more varied wording; a "
        "rejected answer is asked again, so some variety helps (default: %(default)s)",
    )
    gen.add_argument(
        "--max-output-tokens",
        type=int,
        default=2048,
        help="the teacher's cap on one answer of all personas together, in its tokens; a reply cut there is "
        "recorded as max_tokens (default: %(default)s)",
    )
    gen.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help="training length each row must fit; long "
        "sections are chunked to leave room for the answer (default: %(default)s)",
    )
    gen.add_argument(
        "--tokenizer",
        default="cl100k_base",
        help="tiktoken encoding or local model folder used to size chunks (default: %(default)s)",
    )
    gen.add_argument(
        "--price-input",
        type=float,
        help="USD per 1M input tokens (default: the teacher's table: Gemini 2.5 Flash's for gemini, 0 for openai "
        "and mlx; set all three for a paid OpenAI-compatible API)",
    )
    gen.add_argument("--price-output", type=float, help="USD per 1M output and thinking tokens (default: as above)")
    gen.add_argument("--price-cached", type=float, help="USD per 1M cached input tokens (default: as above)")
    gen.add_argument(
        "--limit", type=int, default=0, help="process at most N pending units, taken from each paper in turn; 0 = all"
    )
    gen.add_argument("--dry-run", action="store_true", help="count units, tokens and cost; call nothing")
    batch = p.add_argument_group("--teacher gemini-batch")
    batch.add_argument("--batch-size", type=int, default=10000, help="units per batch job (default: %(default)s)")
    batch.add_argument(
        "--poll-interval", type=float, default=30, help="seconds between job state checks (default: %(default)s)"
    )
    batch.add_argument(
        "--no-wait",
        action="store_true",
        help="submit (and collect what has finished), then exit; rerun later to collect the rest",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def check_papers(data, path: Path) -> list[dict]:
    """papers.json's records, checked field by field; a damaged or foreign file names the paper and the field."""
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{path}: expected {{'papers': [...]}} as paperExtractor.py writes it")
    if not data["papers"]:  # a step 1 that failed, most likely: never a reason to set the persona files aside
        failures = data.get("failures") if isinstance(data.get("failures"), list) else []
        first = failures[0] if failures and isinstance(failures[0], dict) else {}
        why = f" ({counted(len(failures), 'failure')} recorded, first {first.get('id')}: {first.get('reason')})"
        raise InputError(f"{path} holds no papers{why if first else ''}; rerun paperExtractor.py, or pass --papers")
    for index, paper in enumerate(data["papers"]):
        name = paper.get("id") if isinstance(paper, dict) else None
        where = f"{path}: paper {name!r}" if isinstance(name, str) and name else f"{path}: papers[{index}]"
        fix = "rerun paperExtractor.py, or remove that record"
        if not isinstance(paper, dict) or not isinstance(name, str) or not name:
            raise InputError(f'{where}: no "id"; {fix}')
        sections = paper.get("sections")
        if sections is None and "sections" in paper or not isinstance(sections, list | None):
            raise InputError(f'{where}: "sections" is {type(sections).__name__}, not a list; {fix}')
        for i, section in enumerate(sections or []):
            for field_name in ("heading", "text"):
                if not isinstance(section, dict) or not isinstance(section.get(field_name), str):
                    raise InputError(f'{where}: sections[{i}] has no text field "{field_name}"; {fix}')
    return data["papers"]


def load_units(settings: Settings, personas: tuple[Persona, ...]) -> tuple[list[Unit], int, object]:
    data = read_json(settings.papers, "papers.json", "run paperExtractor.py first, or pass --papers")
    papers = check_papers(data, settings.papers)
    tokenizer = load_tokenizer(settings.tokenizer)
    count = lambda texts: count_tokens(tokenizer, texts)  # noqa: E731
    units, too_short = build_units(papers, chunk_budget(settings.max_tokens, personas), count)
    return units, too_short, tokenizer


# ----------------------------------------------------------------------------- the cost ledger

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


def run_record(settings: Settings, stats: "Stats", outcome: str, units: int, pending: int, orphaned: dict) -> dict:
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
        "cost_usd": round(stats.cost(settings), 4),
        "prices_per_million": {
            "input": settings.price_input,
            "output": settings.price_output,
            "cached": settings.price_cached,
        },
        "seconds": round(stats.seconds(), 1),
    }


def dry_run(units: list[Unit], done: int, tokenizer, settings: Settings, personas: tuple[Persona, ...]) -> None:
    system = count_tokens(tokenizer, [system_instruction(personas)])[0]
    inputs = sum(count_tokens(tokenizer, [request_text(u) for u in units])) + system * len(units)
    outputs = len(units) * sum(len(p.fields) for p in personas) * 150  # ~150 tokens per answer field
    prices = prices_of(settings)
    cost = prices.cost(Usage(input=inputs, output=outputs))
    pace = f"~{len(units) / settings.rpm:,.0f} min at --rpm {settings.rpm:g}" if settings.rpm else "no rate limit"
    print(
        f"dry run: {done:,} units already done in {settings.out_dir}/, {len(units):,} to generate with "
        f"{settings.teacher} {settings.model}, ~{inputs:,} input "
        f"tokens, ~{outputs:,} output tokens, ~${cost:.2f} at ${prices.input:g}/${prices.output:g} per 1M, {pace}"
    )
    if settings.teacher in ("gemini", "gemini-batch"):
        online = GEMINI_PRICES.cost(Usage(input=inputs, output=outputs))
        batch = GEMINI_BATCH_PRICES.cost(Usage(input=inputs, output=outputs))
        print(f"  Gemini list prices: online ~${online:.2f}, --teacher gemini-batch ~${batch:.2f} (within 24 h)")


def with_teacher_defaults(settings: Settings) -> Settings:
    """Fill what was not given from the teacher's own defaults: model, endpoint, pace and prices."""
    teacher = TEACHERS[settings.teacher]
    prices = teacher.prices
    model, base_url = teacher.endpoint(settings.model, settings.base_url)
    return replace(
        settings,
        model=model or None,
        base_url=base_url,
        rpm=teacher.default_rpm if settings.rpm is None else settings.rpm,
        price_input=prices.input if settings.price_input is None else settings.price_input,
        price_output=prices.output if settings.price_output is None else settings.price_output,
        price_cached=prices.cached if settings.price_cached is None else settings.price_cached,
    )


def prices_of(settings: Settings) -> Prices:
    return Prices(settings.price_input, settings.price_output, settings.price_cached)


def teacher_options(settings: Settings) -> TeacherOptions:
    return TeacherOptions(
        model=settings.model or "",
        base_url=settings.base_url,
        timeout=settings.timeout,
        temperature=settings.temperature,
        max_output_tokens=settings.max_output_tokens,
        thinking_budget=settings.thinking_budget,
        concurrency=settings.concurrency,
    )


def check_settings(settings: Settings, personas: tuple[Persona, ...], teacher: Teacher, parser) -> None:
    """Usage mistakes, and settings the teacher would reject on every request, before any request is made."""
    if settings.concurrency < 1 or settings.quality_attempts < 1 or settings.timeout <= 0:
        parser.error("--concurrency, --quality-attempts and --timeout must be positive")
    if settings.batch_size < 1 or settings.poll_interval <= 0:
        parser.error("--batch-size and --poll-interval must be positive")
    if settings.limit < 0 or settings.max_retries < 0 or settings.rpm < 0:
        parser.error("--limit, --max-retries and --rpm must be 0 or more")
    smallest = min_max_tokens(personas)
    if settings.max_tokens < smallest:
        parser.error(
            f"--max-tokens {settings.max_tokens} leaves no room for a useful chunk: the chat template, the longest "
            f"answer and a chunk of text need at least {smallest}"
        )
    problem = teacher.problem()
    if problem:
        parser.error(problem)


def main(argv: list[str] | None = None) -> int:
    from filelock import FileLock, Timeout

    parser = build_parser()
    settings = with_teacher_defaults(settings_from(Settings, parser.parse_args(argv)))
    setup_logging(settings.verbose)
    stop_on_sigterm()
    try:
        personas = load_personas(settings.personas_file)
    except InputError as e:
        die(str(e))
    teacher = make_teacher(settings.teacher, teacher_options(settings))
    check_settings(settings, personas, teacher, parser)
    shown = {k: str(v) for k, v in vars(settings).items() if not k.startswith("price_")}
    log.info("settings: %s", shown)
    try:
        units, too_short, tokenizer = load_units(settings, personas)
    except InputError as e:
        die(str(e))
    skipped = counted(too_short, "section")
    log.info("%s (%s under %d characters of prose skipped)", counted(len(units), "unit"), skipped, MIN_PROSE_CHARS)
    if settings.dry_run:
        try:
            done = read_done_keys(settings.out_dir, personas, repair=False) if settings.out_dir.exists() else {}
        except InputError as e:
            die(str(e))
        pending = [u for u in units if any(u.key not in done.get(p.name, ()) for p in personas)]
        dry_run(across_papers(pending, settings.limit), len(units) - len(pending), tokenizer, settings, personas)
        if problem := unwritable(settings.out_dir, "--out-dir", folder=True):
            print(f"  a real run would stop before its first request: {problem}")
        return 0
    if problem := teacher.key_problem(
        "or generate with a local model and no key: --teacher mlx --model PATH_OR_HF_ID; or use --dry-run"
    ):
        die(problem)
    if problem := teacher.unreachable():
        die(f"{teacher.name}: {problem} Check --base-url; nothing was sent")
    try:
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(settings.out_dir / ".sdg.lock")
        lock.acquire(timeout=0)
    except Timeout:
        die(f"another sdg.py run is writing to {settings.out_dir}/; wait for it to finish, or pass another --out-dir")
    except OSError as e:
        die(f"cannot write to {settings.out_dir}/ ({e.strerror}); pass --out-dir a folder you can write to")
    with lock:
        return generate_all(settings, personas, teacher, units, too_short)


def generate_all(settings: Settings, personas, teacher: Teacher, units: list[Unit], too_short: int) -> int:
    """The run under the output folder's lock: generate what is pending, reconcile the persona files with the
    current units, and record the run in the ledger, however it ends."""
    stats_path = settings.out_dir / "sdg_stats.json"
    try:
        runs = read_ledger(stats_path)
        done = read_done_keys(settings.out_dir, personas)
    except InputError as e:
        die(str(e))
    pending = [u for u in units if any(u.key not in done[p.name] for p in personas)]
    finished = len(units) - len(pending)
    if not teacher.batch:  # a batch run applies --limit to what is neither done nor in flight
        pending = across_papers(pending, settings.limit)
    log.info("skipping %d units already done; %d to generate", finished, len(pending))
    stats, outcome, stop_message, note = Stats(), "complete", None, ""
    try:
        if teacher.batch:
            note = generate_in_batches(settings, personas, teacher, units, pending, done, stats)
        elif pending:
            asyncio.run(generate(pending, settings, personas, teacher, done, stats))
    except KeyboardInterrupt:
        outcome = "interrupted"
        stop_message = f"interrupted: finished units are saved in {settings.out_dir}/; rerun the same command to resume"
        if teacher.batch:
            stop_message += "; submitted batch jobs keep running at Google and are collected by the rerun"
    except InputError as e:  # a damaged batch journal: nothing was sent
        outcome, stop_message = f"stopped: {e}", str(e)
    except FatalAPIError as e:
        outcome = f"stopped: {e}"
        left = len(pending) - stats.done - stats.failed
        spent = (
            f"Stopped after {stats.requests:,} requests (${stats.cost(settings):.4f}): {stats.done:,} units done "
            f"this run, {left:,} not attempted."
            if stats.requests
            else "Nothing was sent."
        )
        stop_message = f"{e}\n{spent} " + (teacher.quota_hint if e.quota else teacher.fix_hint)
    orphaned = reconcile(settings.out_dir, personas, [u.key for u in units])
    write_json(stats_path, ledger([*runs, run_record(settings, stats, outcome, len(units), len(pending), orphaned)]))
    if stop_message:
        die(stop_message)
    reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(stats.failures.items()))
    rejected = ", ".join(f"{n:,} {r}" for r, n in sorted(stats.rejections.items()))
    moved = ", ".join(f"{n:,} {r}" for r, n in orphaned.items() if n)
    print(
        f"done: {stats.done:,} ok, {stats.failed:,} failed{f' ({reasons})' if reasons else ''}, "
        f"{sum(stats.rejections.values()):,} answers rejected{f' ({rejected})' if rejected else ''}, "
        f"{finished:,} skipped, {too_short:,} too short, "
        f"{sum(orphaned.values()):,} orphaned rows moved{f' ({moved})' if moved else ''} | "
        f"{stats.requests:,} requests, "
        f"{stats.usage.input + stats.usage.output + stats.usage.thinking:,} tokens, "
        f"${stats.cost(settings):.4f} in {stats.seconds():,.1f} s -> {settings.out_dir}/"
    )
    if note:
        print(note)
    if pending and stats.done == 0 and stats.failed:
        die(f"no unit succeeded; the reasons are in {settings.out_dir}/sdg_failures.jsonl")
    return 0


async def generate(units: list[Unit], settings: Settings, personas, teacher: Teacher, done, stats) -> None:
    from tqdm import tqdm

    teacher.prepare()  # a local model is loaded before the first unit: a failure here sent and counted nothing
    with tqdm(total=len(units), desc="generate", unit="unit") as progress:
        writer = Writer(settings, personas, done, stats, progress, teacher.activity)
        try:
            await Generator(teacher, settings, personas, writer).run(units)
        finally:
            writer.close()
            await teacher.aclose()


def generate_in_batches(settings: Settings, personas, teacher: Teacher, units, pending, done, stats: Stats) -> str:
    """The Gemini Batch API run (paper_personas/teachers/gemini_batch.py has the protocol and why each step is
    journaled): settle every job a previous run left unfinished, submit what is neither done nor in flight, then
    wait for the jobs and write their results through the same gate and writer as online answers. Returns a note
    for the summary."""
    from tqdm import tqdm

    from paper_personas.teachers.gemini_batch import JOURNAL, BatchAPI, Journal, settle_unheard

    journal = Journal.read(settings.out_dir / JOURNAL)
    api = BatchAPI(teacher)
    settle_unheard(api, journal)
    in_flight = journal.in_flight_keys()
    to_submit = across_papers([u for u in pending if u.key not in in_flight], settings.limit)
    stats.requests += submit_jobs(api, journal, to_submit, settings, personas)
    waiting = journal.unsettled()
    this_run = {job.display_name for job in waiting}  # the jobs this run waits for, old and new
    with tqdm(total=sum(len(job.keys) for job in waiting), desc="batch", unit="unit") as progress:
        writer = Writer(settings, personas, done, stats, progress)
        try:
            while waiting:
                for job in waiting:
                    collect_job(api, journal, job, writer, settings, personas, units, progress)
                waiting = journal.unsettled()
                if not waiting or settings.no_wait:
                    break
                time.sleep(settings.poll_interval)
        finally:
            writer.close()
    ended = [job for job in journal.jobs.values() if job.status == "ended" and job.display_name in this_run]
    if ended and stats.done == 0 and not waiting:
        states = ", ".join(sorted({job.end_state or "ended" for job in ended}))
        raise FatalAPIError(f"every batch job ended without results ({states}); rerun to submit their units again")
    return batch_note(waiting, ended)


def submit_jobs(api, journal, units: list[Unit], settings: Settings, personas) -> int:
    """Jobs of at most --batch-size units: the requests file is written, the job journaled as "submitting" (so a
    kill from here on is settled by the next run), uploaded, created, and journaled as "created". Returns the
    number of requests submitted."""
    import tempfile

    from paper_personas.teachers.gemini_batch import new_job, request_line

    system, json_schema = system_instruction(personas), answers_schema(personas).model_json_schema()
    options = teacher_options(settings)
    for start in range(0, len(units), settings.batch_size):
        chunk = units[start : start + settings.batch_size]
        job = new_job([u.key for u in chunk])
        with tempfile.TemporaryDirectory() as folder:
            requests = Path(folder) / f"{job.display_name}.jsonl"
            with open(requests, "w", encoding="utf-8") as f:
                f.writelines(
                    dump_jsonl_line(request_line(u.key, system, request_text(u), json_schema, options)) for u in chunk
                )
            journal.append("submitting", job)
            try:
                file_name = api.upload(requests)
            except FatalAPIError:
                journal.append("abandoned", job)  # nothing was created: the units stay pending
                raise
            job.job = api.create(file_name, job.display_name)
        journal.append("created", job)
        log.info("submitted %d units as %s", len(chunk), job.job)
    return len(units)


def batch_note(waiting: list, ended: list) -> str:
    """What the summary line should add: jobs still in flight, and units that ended jobs returned to pending."""
    notes = []
    if waiting:
        names = ", ".join(job.job or job.display_name for job in waiting)
        keys = sum(len(job.keys) for job in waiting)
        notes.append(
            f"{keys:,} units in flight in {len(waiting)} batch job(s) ({names}); rerun the same command to collect"
        )
    if ended:
        keys = sum(len(job.keys) for job in ended)
        notes.append(
            f"{keys:,} units of {len(ended)} job(s) that ended without results are pending again; rerun to resubmit"
        )
    return "\n".join(notes)


def collect_job(api, journal, job, writer: Writer, settings: Settings, personas, units, progress) -> None:
    """One look at a job: write its results if it has succeeded, return its units to pending if it ended without
    results, else leave it running. Each result is written once: a unit already written (a kill cut an earlier
    collection short) is skipped, and so is a result whose unit's text changed while the job ran."""
    from paper_personas.teachers.gemini_batch import ENDED_WITHOUT_RESULTS, SUCCEEDED, result_lines, result_of

    state, results, message = api.status(job.job)
    progress.set_postfix(job=job.job, state=state.removeprefix("JOB_STATE_").lower())
    if state in ENDED_WITHOUT_RESULTS:
        reason = f" ({message})" if message else ""
        log.warning("%s ended %s%s: its %d units return to pending", job.job, state, reason, len(job.keys))
        journal.append("ended", job, state=state, message=message)
        return
    if state != SUCCEEDED:
        return
    by_key = {u.key: u for u in units}
    schema = answers_schema(personas)
    ours, seen, usage = set(job.keys), set(), Usage()
    written = failed = 0
    for line in result_lines(api.download(results)):
        key, reply, reason = result_of(line)
        if key not in ours or key in seen:
            continue  # not a unit of this job, or a second copy of its result
        seen.add(key)
        if reply is not None:
            usage = usage + reply.usage
            writer.stats.add_usage(reply.usage)
        unit = by_key.get(key)
        if unit is None or writer.is_done(key):
            continue
        if reply is not None:
            answers, reason = parse_response(reply, schema, personas, unit.text)
            if answers is not None:
                writer.write(unit, answers, reply.model_version)
                written += 1
                continue
        writer.record_failure(unit, reason)
        failed += 1
    for key in ours - seen:
        if key in by_key and not writer.is_done(key):
            writer.record_failure(by_key[key], "missing_result")
            failed += 1
    cost = round(prices_of(settings).cost(usage), 6)
    journal.append("collected", job, usage=vars(usage), cost_usd=cost, written=written, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
