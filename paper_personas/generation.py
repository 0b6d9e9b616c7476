"""Step 2's requests: its settings, and the two ways of running them. Online (every teacher): units sent under a
smooth client-side rate limit, each request retried on what its teacher calls retryable, each answer held to the
quality gate and written as its unit finishes. The Gemini Batch API (--teacher gemini-batch): the same units as
jobs, in teachers/gemini_batch.py. Both write through rows.Writer and count in ledger.Stats, so a row and a
failure look the same whichever way they came."""

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

from paper_personas.ledger import Stats
from paper_personas.personas import answers_schema, system_instruction
from paper_personas.replies import parse_answers
from paper_personas.rows import Writer
from paper_personas.teachers import TEACHERS
from paper_personas.teachers.base import (
    RETRYABLE,
    FatalAPIError,
    Prices,
    Reply,
    Teacher,
    TeacherOptions,
    retrying,
    run_stopper,
)
from paper_personas.units import Unit, across_papers, request_text

HEARTBEAT_S = 2.0  # how often the progress bar is refreshed while no unit finishes
SYSTEMIC_STREAK = 3  # the same non-retryable failure on this many units in a row is about the run, not the units


@dataclass(frozen=True)
class Settings:
    """sdg.py's settings, read once from its command line."""

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
    max_seq_length: int
    tokenizer: str
    price_input: float | None  # None: the run's price table
    price_output: float | None
    price_cached: float | None
    limit: int
    dry_run: bool
    batch_size: int
    poll_interval: float
    no_wait: bool
    verbose: bool

    @property
    def prices(self) -> Prices:
        return Prices(self.price_input, self.price_output, self.price_cached)

    def teacher_options(self) -> TeacherOptions:
        return TeacherOptions(
            model=self.model or "",
            base_url=self.base_url,
            timeout=self.timeout,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            thinking_budget=self.thinking_budget,
            concurrency=self.concurrency,
        )


# ----------------------------------------------------------------------------- online: one request per unit


class Requests:
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
        self.stopping = False  # a unit met an error every request would meet: no unit waiting for a slot starts

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

    def failure_reason(self, error: Exception) -> str:
        """This unit's failure reason; FatalAPIError for an error every request would meet, or for the same
        refusal on SYSTEMIC_STREAK units in a row (retries exhausted is weather, not a refusal)."""
        if stop := run_stopper(self.teacher, error):
            raise stop
        facts = self.teacher.facts(error)
        if self.teacher.classify(error) != RETRYABLE:
            same = self.streak[0] == facts.signature
            self.streak = (facts.signature, self.streak[1] + 1 if same else 1)
            if self.streak[1] >= SYSTEMIC_STREAK:
                raise FatalAPIError(
                    f"the same error on {SYSTEMIC_STREAK} units in a row, so it is not about them: {facts.describe()}"
                )
        return f"api_error:{facts.code or type(error).__name__}"

    async def run_unit(self, unit: Unit) -> None:
        async with self.slots:
            if self.stopping:  # the slot was freed by the unit that stops the run, before the run could cancel us
                return
            try:
                await self.try_unit(unit)
            except FatalAPIError:
                self.stopping = True
                raise

    async def try_unit(self, unit: Unit) -> None:
        """Up to --quality-attempts requests for one unit; writes its answers or records why it failed."""
        reason = "no attempt"
        for _ in range(self.settings.quality_attempts):
            try:
                reply = await self.call(unit)
            except FatalAPIError:
                raise
            except Exception as e:  # not retryable, or retries exhausted on 429/5xx/timeouts
                reason = self.failure_reason(e)
                break
            self.stats.add_usage(reply.usage)
            answers, reason = parse_answers(reply, self.schema, self.personas, unit.text)
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


class OnlineRun:
    """Every teacher's ordinary way: one request per unit, answers as they come."""

    interrupted_note = ""
    label = "online"

    def __init__(self, teacher_class: type[Teacher]):
        self.teacher_class = teacher_class
        self.prices = teacher_class.prices
        self.default_rpm = teacher_class.default_rpm

    def generate(self, teacher: Teacher, settings: Settings, personas, units, pending, done, stats: Stats) -> str:
        """Generate `pending` (at most --limit of it, across papers); returns a note for the summary (none)."""
        pending = across_papers(pending, settings.limit)
        if pending:
            asyncio.run(self.generate_async(teacher, settings, personas, pending, done, stats))
        return ""

    async def generate_async(self, teacher: Teacher, settings: Settings, personas, units, done, stats) -> None:
        from tqdm import tqdm

        teacher.prepare()  # a local model is loaded before the first unit: a failure here sent and counted nothing
        with tqdm(total=len(units), desc="generate", unit="unit") as progress:
            writer = Writer(settings.out_dir, settings.model, personas, done, stats, progress, teacher.activity)
            try:
                await Requests(teacher, settings, personas, writer).run(units)
            finally:
                await teacher.aclose()


def runs() -> dict:
    """--teacher's choices: each teacher's online run, and the Gemini Batch API's jobs."""
    from paper_personas.teachers.gemini_batch import GeminiBatchRun

    return {name: OnlineRun(teacher) for name, teacher in TEACHERS.items()} | {"gemini-batch": GeminiBatchRun()}


def with_teacher_defaults(settings: Settings, run) -> Settings:
    """Fill what was not given from the teacher's and the run's defaults: model, endpoint, pace and prices."""
    model, base_url = run.teacher_class.endpoint(settings.model, settings.base_url)
    prices = run.prices
    return replace(
        settings,
        model=model or None,
        base_url=base_url,
        rpm=run.default_rpm if settings.rpm is None else settings.rpm,
        price_input=prices.input if settings.price_input is None else settings.price_input,
        price_output=prices.output if settings.price_output is None else settings.price_output,
        price_cached=prices.cached if settings.price_cached is None else settings.price_cached,
    )
