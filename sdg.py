"""Step 2: generate one training set per persona (personas.toml) from paper sections with Gemini 2.5 Flash.

Run simply as:
    $ export GEMINI_API_KEY=...                  # or GOOGLE_API_KEY; never printed or written
    $ python sdg.py --dry-run                    # units, input tokens and estimated cost; no API call
    $ python sdg.py                              # free tier: 10 requests/minute
    $ python sdg.py --rpm 1000 --concurrency 32  # paid Tier 1

Reads:  papers.json (step 1).
Writes: data/{persona}.jsonl (eli5, intuitive, executive by default), one row per section chunk:
          {"messages": [{"role": "user", ...}, {"role": "assistant", ...}],
           "meta": {paper_id, section, chunk, key, model}}
        data/sdg_failures.jsonl (units that failed this run, with the reason) and data/sdg_stats.json (tokens, cost).
Rows are appended and flushed as each unit finishes; a rerun skips finished units and retries failed ones.
"""

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from common import (
    MAX_TOKENS,
    InputError,
    count_tokens,
    die,
    dump_jsonl_line,
    iter_jsonl,
    load_tokenizer,
    read_json,
    repair_torn_tail,
    settings_from,
    setup_logging,
    write_json,
)
from personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from personas import Persona, answers_schema, load_personas
from teachers import (
    DEFAULT_MODEL,
    PRICE_CACHED,
    PRICE_INPUT,
    PRICE_OUTPUT,
    FatalAPIError,
    api_key,
    is_fatal,
    is_retryable,
    make_client,
    wait_for,
)
from units import MIN_PROSE_CHARS, Unit, build_units, chunk_budget, request_text

log = logging.getLogger("sdg")

# ----------------------------------------------------------------------------- constants

MIN_FIELD_CHARS = 40
BLOCK_REASONS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class Settings:
    papers: Path
    out_dir: Path
    personas_file: Path
    model: str
    base_url: str | None
    concurrency: int
    rpm: float
    tpm: int
    timeout: float
    max_retries: int
    quality_attempts: int
    thinking_budget: int
    temperature: float
    max_output_tokens: int
    max_tokens: int
    tokenizer: str
    price_input: float
    price_output: float
    price_cached: float
    limit: int
    dry_run: bool
    verbose: bool


# ----------------------------------------------------------------------------- the teacher's prompt


def system_instruction(personas: tuple[Persona, ...]) -> str:
    """What the teacher is told once per request: the task, then each persona's instructions."""
    count = NUMBER_WORDS[len(personas)] if len(personas) < len(NUMBER_WORDS) else str(len(personas))
    ranges = {f.words for p in personas for f in p.fields}
    if len(ranges) == 1:
        (low, high) = ranges.pop()
        length, per_persona = f"Keep every field to {low}-{high} words", {p.name: "" for p in personas}
    else:
        length = "Keep each field to the words given for it"
        per_persona = {
            p.name: " Fields: " + ", ".join(f"{f.name} {f.words[0]}-{f.words[1]} words" for f in p.fields) + "."
            for p in personas
        }
    return (
        f"You turn one section of a research paper into training data for {count} explainer personas. Answer only "
        f"from the text. {length}, in plain prose without headings.\n\n"
        + "\n\n".join(f"{p.name}: {p.instructions}{per_persona[p.name]}" for p in personas)
    )


# ----------------------------------------------------------------------------- the quality gate


def answers_problem(answers: BaseModel, personas: tuple[Persona, ...]) -> str | None:
    for persona in personas:
        answer = getattr(answers, persona.name).model_dump()
        for f in persona.fields:
            if len(answer[f.name].strip()) < MIN_FIELD_CHARS:
                return f"too_short:{persona.name}.{f.name}"
        word = persona.forbidden_word_in(persona.render(answer))
        if word:
            return f"forbidden_word:{persona.name}:{word}"
    return None


def parse_response(response, schema, personas: tuple[Persona, ...]) -> tuple[BaseModel | None, str | None]:
    """The validated answers of a generateContent response, or the reason it is unusable."""
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and feedback.block_reason:
        return None, f"blocked:{getattr(feedback.block_reason, 'value', feedback.block_reason)}"
    if not response.candidates:
        return None, "no_candidates"
    candidate = response.candidates[0]
    finish = getattr(candidate.finish_reason, "value", candidate.finish_reason) or "STOP"
    if finish in BLOCK_REASONS:
        return None, f"blocked:{finish}"
    if finish == "MAX_TOKENS":
        return None, "max_tokens"
    try:
        answers = schema.model_validate_json(response.text or "")
    except ValidationError as e:
        return None, f"invalid_json:{e.errors()[0]['type']}"
    problem = answers_problem(answers, personas)
    return (None, problem) if problem else (answers, None)


# ----------------------------------------------------------------------------- output files


def read_done_keys(out_dir: Path, personas: tuple[Persona, ...]) -> dict[str, set[str]]:
    """Keys already written per persona, after cutting a torn last line that a kill may have left."""
    done = {}
    for persona in personas:
        path = out_dir / f"{persona.name}.jsonl"
        if repair_torn_tail(path):
            log.warning("%s: cut a torn last line left by an interrupted run", path)
        keys = set()
        if path.exists():
            for lineno, row, problem in iter_jsonl(path):
                if problem or not (row.get("meta") or {}).get("key"):
                    raise InputError(
                        f"{path}:{lineno}: {problem or 'row without meta.key'}; it was not written by "
                        "sdg.py. Move the file aside to start over"
                    )
                keys.add(row["meta"]["key"])
        done[persona.name] = keys
    return done


def make_row(persona: Persona, unit: Unit, answers: BaseModel, model: str) -> dict:
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
        },
    }


# ----------------------------------------------------------------------------- calling Gemini


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    retrying: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    failures: dict = field(default_factory=dict)  # reason -> count

    def add_usage(self, usage) -> None:
        if usage is None:
            return
        self.prompt_tokens += usage.prompt_token_count or 0
        self.candidates_tokens += usage.candidates_token_count or 0
        self.thoughts_tokens += usage.thoughts_token_count or 0
        self.cached_tokens += usage.cached_content_token_count or 0

    def cost(self, settings: Settings) -> float:
        fresh_input = self.prompt_tokens - self.cached_tokens
        output = self.candidates_tokens + self.thoughts_tokens
        return (
            fresh_input * settings.price_input
            + self.cached_tokens * settings.price_cached
            + output * settings.price_output
        ) / 1e6


class Generator:
    """Sends units to Gemini under a smooth client-side rate limit, with retries, and writes rows as they finish."""

    def __init__(self, client, settings: Settings, personas, done: dict[str, set[str]], stats: Stats, progress):
        from aiolimiter import AsyncLimiter
        from google.genai import types

        self.client, self.settings, self.done, self.stats, self.progress = client, settings, done, stats, progress
        args = settings
        self.personas, self.schema = personas, answers_schema(personas)
        # One request per 60/rpm seconds: a bucket of one never bursts, so no 60 s window exceeds --rpm.
        self.rate = AsyncLimiter(1, 60.0 / args.rpm)
        self.tokens = AsyncLimiter(args.tpm, 60.0) if args.tpm else None
        self.slots = asyncio.Semaphore(args.concurrency)
        self.config = types.GenerateContentConfig(
            system_instruction=system_instruction(personas),
            response_mime_type="application/json",
            response_schema=self.schema,
            temperature=args.temperature,
            max_output_tokens=args.max_output_tokens,
            thinking_config=types.ThinkingConfig(thinking_budget=args.thinking_budget),
        )
        out = args.out_dir
        # Append-only logs, kept open for the run and closed in close(); each record is flushed as it is written.
        self.files = {p.name: open(out / f"{p.name}.jsonl", "a", encoding="utf-8") for p in personas}  # noqa: SIM115
        self.failures = open(out / "sdg_failures.jsonl", "w", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        for f in [*self.files.values(), self.failures]:
            f.close()

    async def call(self, unit: Unit):
        """One generateContent call; every attempt, retries included, waits its turn at the rate limiter."""
        import tenacity
        from google.genai import errors

        def count_retry(state):
            self.stats.retrying += 1
            self.progress.set_postfix(done=self.stats.done, failed=self.stats.failed, retrying=self.stats.retrying)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.settings.max_retries + 1),
            wait=wait_for,
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self.tokens is not None:
                    await self.tokens.acquire(min(self.settings.tpm, len(unit.text) // 3 + 1000))
                async with self.rate:
                    self.stats.requests += 1
                try:
                    return await self.client.aio.models.generate_content(
                        model=self.settings.model, contents=request_text(unit), config=self.config
                    )
                except errors.ClientError as e:
                    if is_fatal(e):
                        raise FatalAPIError(f"Gemini refused the request: {e.code} {e.status}: {e.message}") from None
                    raise  # retried if retryable (429), else this unit fails (e.g. a 400 about its content)

    async def run_unit(self, unit: Unit) -> None:
        async with self.slots:
            reason = "no attempt"
            for _ in range(self.settings.quality_attempts):
                try:
                    response = await self.call(unit)
                except FatalAPIError:
                    raise
                except Exception as e:  # retries exhausted on 429/5xx/timeouts
                    reason = f"api_error:{getattr(e, 'code', None) or type(e).__name__}"
                    break
                self.stats.add_usage(response.usage_metadata)
                answers, reason = parse_response(response, self.schema, self.personas)
                if answers is not None:
                    self.write(unit, answers)
                    return
            self.record_failure(unit, reason)

    def write(self, unit: Unit, answers: BaseModel) -> None:
        for persona in self.personas:
            if unit.key not in self.done[persona.name]:  # a unit cut short by a kill is completed, not duplicated
                f = self.files[persona.name]
                f.write(dump_jsonl_line(make_row(persona, unit, answers, self.settings.model)))
                f.flush()
                self.done[persona.name].add(unit.key)
        self.stats.done += 1
        self.tick()

    def record_failure(self, unit: Unit, reason: str) -> None:
        kind = reason.split(":")[0]
        self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
        self.stats.failed += 1
        self.failures.write(
            dump_jsonl_line(
                {
                    "key": unit.key,
                    "paper_id": unit.paper_id,
                    "section": unit.section,
                    "chunk": unit.chunk,
                    "reason": reason,
                }
            )
        )
        self.failures.flush()
        self.tick()

    def tick(self) -> None:
        self.progress.update(1)
        self.progress.set_postfix(done=self.stats.done, failed=self.stats.failed, retrying=self.stats.retrying)

    async def run(self, units: list[Unit]) -> None:
        tasks = [asyncio.create_task(self.run_unit(u)) for u in units]
        try:
            for finished in asyncio.as_completed(tasks):
                await finished
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


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
    api = p.add_argument_group("Gemini")
    api.add_argument("--model", default=DEFAULT_MODEL, help="Gemini model (default: %(default)s)")
    api.add_argument(
        "--base-url",
        default=os.environ.get("GEMINI_BASE_URL"),
        help="a Gemini-compatible endpoint, e.g. a gateway or test server (env GEMINI_BASE_URL)",
    )
    api.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default: %(default)s)")
    api.add_argument(
        "--rpm",
        type=float,
        default=10,
        help="requests per minute, retries included; 10 suits the free tier, 1000 paid Tier 1 (default: %(default)s)",
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
    gen.add_argument("--temperature", type=float, default=0.7, help="(default: %(default)s)")
    gen.add_argument("--max-output-tokens", type=int, default=2048, help="(default: %(default)s)")
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
        "--price-input", type=float, default=PRICE_INPUT, help="USD per 1M input tokens (default: %(default)s)"
    )
    gen.add_argument(
        "--price-output",
        type=float,
        default=PRICE_OUTPUT,
        help="USD per 1M output and thinking tokens (default: %(default)s)",
    )
    gen.add_argument(
        "--price-cached", type=float, default=PRICE_CACHED, help="USD per 1M cached input tokens (default: %(default)s)"
    )
    gen.add_argument("--limit", type=int, default=0, help="process at most N pending units; 0 = all")
    gen.add_argument("--dry-run", action="store_true", help="count units, tokens and cost; call nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def load_units(settings: Settings, personas: tuple[Persona, ...]) -> tuple[list[Unit], int, object]:
    data = read_json(settings.papers, "papers.json", "run paperExtractor.py first, or pass --papers")
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{settings.papers}: expected {{'papers': [...]}} as paperExtractor.py writes it")
    tokenizer = load_tokenizer(settings.tokenizer)
    count = lambda texts: count_tokens(tokenizer, texts)  # noqa: E731
    units, too_short = build_units(data["papers"], chunk_budget(settings.max_tokens, personas), count)
    return units, too_short, tokenizer


def dry_run(units: list[Unit], tokenizer, settings: Settings, personas: tuple[Persona, ...]) -> None:
    system = count_tokens(tokenizer, [system_instruction(personas)])[0]
    inputs = sum(count_tokens(tokenizer, [request_text(u) for u in units])) + system * len(units)
    outputs = len(units) * sum(len(p.fields) for p in personas) * 150  # ~150 tokens per answer field
    cost = (inputs * settings.price_input + outputs * settings.price_output) / 1e6
    minutes = len(units) / settings.rpm
    print(
        f"dry run: {len(units):,} units to generate, ~{inputs:,} input tokens, ~{outputs:,} output tokens, "
        f"~${cost:.2f} at ${settings.price_input}/${settings.price_output} per 1M, "
        f"~{minutes:,.0f} min at --rpm {settings.rpm:g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = settings_from(Settings, parser.parse_args(argv))
    setup_logging(settings.verbose)
    if settings.concurrency < 1 or settings.rpm <= 0 or settings.quality_attempts < 1:
        parser.error("--concurrency, --rpm and --quality-attempts must be positive")
    shown = {k: str(v) for k, v in vars(settings).items() if not k.startswith("price_")}
    log.info("settings: %s", shown)
    started = time.monotonic()
    try:
        personas = load_personas(settings.personas_file)
        units, too_short, tokenizer = load_units(settings, personas)
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        done = read_done_keys(settings.out_dir, personas)
    except InputError as e:
        die(str(e))
    pending = [u for u in units if any(u.key not in done[p.name] for p in personas)]
    finished = len(units) - len(pending)
    if settings.limit:
        pending = pending[: settings.limit]
    log.info(
        "%d units (%d sections under %d characters of prose skipped); skipping %d already done",
        len(units),
        too_short,
        MIN_PROSE_CHARS,
        finished,
    )
    if settings.dry_run:
        dry_run(pending, tokenizer, settings, personas)
        return 0
    if not api_key():
        die("no API key: export GEMINI_API_KEY (get one at https://aistudio.google.com/apikey), or use --dry-run")
    try:
        stats = asyncio.run(generate(pending, settings, personas, done)) if pending else Stats()
    except KeyboardInterrupt:
        die(f"interrupted: finished units are saved in {settings.out_dir}/; rerun the same command to resume")
    elapsed = time.monotonic() - started
    summary = {
        "model": settings.model,
        "units": len(units),
        "skipped_done": finished,
        "skipped_too_short": too_short,
        "done": stats.done,
        "failed": stats.failed,
        "failures_by_reason": stats.failures,
        "requests": stats.requests,
        "retries": stats.retrying,
        "prompt_tokens": stats.prompt_tokens,
        "candidates_tokens": stats.candidates_tokens,
        "thoughts_tokens": stats.thoughts_tokens,
        "cached_tokens": stats.cached_tokens,
        "cost_usd": round(stats.cost(settings), 4),
        "prices_per_million": {
            "input": settings.price_input,
            "output": settings.price_output,
            "cached": settings.price_cached,
        },
        "seconds": round(elapsed, 1),
    }
    write_json(settings.out_dir / "sdg_stats.json", summary)
    reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(stats.failures.items()))
    print(
        f"done: {stats.done:,} ok, {stats.failed:,} failed{f' ({reasons})' if reasons else ''}, "
        f"{finished:,} skipped, {too_short:,} too short | {stats.requests:,} requests, "
        f"{stats.prompt_tokens + stats.candidates_tokens + stats.thoughts_tokens:,} tokens, "
        f"${summary['cost_usd']:.4f} in {elapsed:,.1f} s -> {settings.out_dir}/"
    )
    return 0


async def generate(units: list[Unit], settings: Settings, personas: tuple[Persona, ...], done) -> Stats:
    from tqdm import tqdm

    stats = Stats()
    with tqdm(total=len(units), desc="generate", unit="unit") as progress:
        client = make_client(settings.timeout, settings.base_url)
        generator = Generator(client, settings, personas, done, stats, progress)
        try:
            await generator.run(units)
        except FatalAPIError as e:
            die(f"{e}. Check GEMINI_API_KEY and --model (e.g. {DEFAULT_MODEL}); finished rows are kept")
        finally:
            generator.close()
    return stats


if __name__ == "__main__":
    sys.exit(main())
