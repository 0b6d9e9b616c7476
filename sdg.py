"""Step 2: generate the three persona training sets from paper sections with Gemini 2.5 Flash.

Run simply as:
    $ export GEMINI_API_KEY=...                  # or GOOGLE_API_KEY; never printed or written
    $ python sdg.py --dry-run                    # units, input tokens and estimated cost; no API call
    $ python sdg.py                              # free tier: 10 requests/minute
    $ python sdg.py --rpm 1000 --concurrency 32  # paid Tier 1

Reads:  papers.json (step 1).
Writes: data/eli5.jsonl, data/intuitive.jsonl, data/executive.jsonl, one row per section chunk:
          {"messages": [{"role": "user", ...}, {"role": "assistant", ...}],
           "meta": {paper_id, section, chunk, key, model}}
        data/sdg_failures.jsonl (units that failed this run, with the reason) and data/sdg_stats.json (tokens, cost).
Rows are appended and flushed as each unit finishes; a rerun skips finished units and retries failed ones.
"""

import argparse
import asyncio
import hashlib
import logging
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError, create_model

from common import (
    InputError,
    count_tokens,
    die,
    dump_jsonl_line,
    iter_jsonl,
    load_tokenizer,
    read_json,
    repair_torn_tail,
    setup_logging,
    write_json,
)

log = logging.getLogger("sdg")

# ----------------------------------------------------------------------------- personas, defined once as data


class Eli5Answer(BaseModel):
    analogy: str
    explanation: str


class IntuitiveAnswer(BaseModel):
    mechanism: str
    explanation: str


class ExecutiveAnswer(BaseModel):
    verdict: str
    summary: str


@dataclass(frozen=True)
class Persona:
    name: str
    user_prefix: str  # the training prompt is user_prefix + section text, byte for byte
    instructions: str
    schema: type[BaseModel]
    labels: tuple[tuple[str, str], ...]  # (field, bold label) in the order they are rendered
    forbidden_words: tuple[str, ...] = ()

    def render(self, answer: BaseModel) -> str:
        return "\n\n".join(f"**{label}:** {getattr(answer, name).strip()}" for name, label in self.labels)

    def forbidden_word_in(self, text: str) -> str | None:
        """The first forbidden word stem that starts a word of text ("optimiz" catches "Optimizing"), or None."""
        lowered = text.lower()
        return next((stem for stem in self.forbidden_words if re.search(rf"\b{stem}", lowered)), None)


PERSONAS = (
    Persona(
        name="eli5",
        user_prefix="Explain this like I'm 5:\n",
        instructions=(
            "You are a kindergarten teacher who is a master of analogies. Explain the single big idea of the text "
            "with one concrete, physical analogy from a child's everyday life, then a short explanation in simple "
            "words. Skip the math and the details. Never use these words: optimize, leverage, paradigm, "
            "stochastic, neural."
        ),
        schema=Eli5Answer,
        labels=(("analogy", "Analogy"), ("explanation", "Explanation")),
        forbidden_words=("optimiz", "optimis", "leverag", "paradigm", "stochastic", "neural"),
    ),
    Persona(
        name="intuitive",
        user_prefix="Explain the intuition behind this:\n",
        instructions=(
            "You are a first-principles engineer in the manner of Richard Feynman. Explain why the idea works: the "
            "mechanism, and what each equation or step actually does. Link ideas to programming concepts such as "
            "hash maps, loops and pointers where that helps."
        ),
        schema=IntuitiveAnswer,
        labels=(("mechanism", "Mechanism"), ("explanation", "Explanation")),
    ),
    Persona(
        name="executive",
        user_prefix="Give me an executive summary:\n",
        instructions=(
            "You are a sceptical venture-capital analyst. Put the bottom line first as a one-sentence verdict, then "
            "summarise value, utility, cost and hardware needs. Ignore novelty unless it changes speed or cost."
        ),
        schema=ExecutiveAnswer,
        labels=(("verdict", "Verdict"), ("summary", "Summary")),
    ),
)
PersonaAnswers = create_model("PersonaAnswers", **{p.name: (p.schema, ...) for p in PERSONAS})

SYSTEM_INSTRUCTION = (
    "You turn one section of a research paper into training data for three explainer personas. Answer only from "
    "the text. Keep every field to 40-220 words, in plain prose without headings.\n\n"
    + "\n\n".join(f"{p.name}: {p.instructions}" for p in PERSONAS)
)


def user_message(persona: Persona, text: str) -> str:
    """The user turn a persona is trained on; anything that prompts an adapter must build it here."""
    return persona.user_prefix + text


# ----------------------------------------------------------------------------- constants

DEFAULT_MODEL = "gemini-2.5-flash"
# Gemini 2.5 Flash paid-tier prices, USD per million tokens (ai.google.dev/gemini-api/docs/pricing, 2025).
# Thinking tokens are billed as output. Override with --price-input/--price-output/--price-cached.
PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHED = 0.30, 2.50, 0.03
TEMPLATE_TOKENS = 36  # Llama 3.2 chat template around one user + one assistant turn (see trim_jsonl.py)
ANSWER_TOKENS = 450  # room kept for the longest persona answer: 2 fields of at most ~220 words, rendered
MIN_PROSE_CHARS = 100
MIN_FIELD_CHARS = 40
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RETRY_WAIT_S = 300.0
BLOCK_REASONS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}

# ----------------------------------------------------------------------------- work units


@dataclass(frozen=True)
class Unit:
    paper_id: str
    section: int
    chunk: int
    title: str
    heading: str
    text: str

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.text.encode()).hexdigest()[:12]
        return f"{self.paper_id}:{self.section}:{self.chunk}:{digest}"


def prose_chars(text: str) -> int:
    """Characters of running text, not counting markdown symbols, math and whitespace."""
    return len(re.sub(r"[^A-Za-z,.;:'\"()\- ]", "", text).strip())


def chunk_text(text: str, budget: int, count) -> list[str]:
    """Split text at paragraph boundaries (then sentences) into pieces of at most `budget` tokens each."""
    pieces = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    sizes = count(pieces)
    if sum(sizes) + len(pieces) <= budget:
        return ["\n\n".join(pieces)]
    units = []  # (piece, tokens)
    for piece, size in zip(pieces, sizes, strict=True):
        sentences = re.split(r"(?<=[.!?])\s+", piece) if size > budget else [piece]
        if len(sentences) > 1:  # one long paragraph: fall back to sentences
            parts = chunk_text("\n\n".join(sentences), budget, count)
            units.extend(zip(parts, count(parts), strict=True))
        else:
            units.append((piece, size))
    chunks, current, used = [], [], 0
    for piece, size in units:
        if current and used + size + 1 > budget:
            chunks.append("\n\n".join(current))
            current, used = [], 0
        current.append(piece)
        used += size + 1
    return chunks + (["\n\n".join(current)] if current else [])


def build_units(papers: list[dict], budget: int, count) -> tuple[list[Unit], int]:
    """Every section chunk of every paper as a unit; also return how many sections were too short."""
    units, too_short = [], 0
    for paper in papers:
        for index, section in enumerate(paper.get("sections", [])):
            if prose_chars(section["text"]) < MIN_PROSE_CHARS:
                too_short += 1
                continue
            for chunk, text in enumerate(chunk_text(section["text"], budget, count)):
                units.append(Unit(paper["id"], index, chunk, paper.get("title") or "", section["heading"], text))
    return units, too_short


def chunk_budget(max_tokens: int) -> int:
    """Tokens of section text per unit, so that prompt, answer and chat template fit max_tokens."""
    prefix = max(len(p.user_prefix) for p in PERSONAS)  # a few tokens; counted as characters to be safe
    return max_tokens - TEMPLATE_TOKENS - ANSWER_TOKENS - prefix


def request_text(unit: Unit) -> str:
    return f"Paper: {unit.title}\nSection: {unit.heading}\n\n{unit.text}"


# ----------------------------------------------------------------------------- the quality gate


def answers_problem(answers: BaseModel) -> str | None:
    for persona in PERSONAS:
        answer = getattr(answers, persona.name)
        for name, _ in persona.labels:
            if len(getattr(answer, name).strip()) < MIN_FIELD_CHARS:
                return f"too_short:{persona.name}.{name}"
        word = persona.forbidden_word_in(persona.render(answer))
        if word:
            return f"forbidden_word:{persona.name}:{word}"
    return None


def parse_response(response) -> tuple[BaseModel | None, str | None]:
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
        answers = PersonaAnswers.model_validate_json(response.text or "")
    except ValidationError as e:
        return None, f"invalid_json:{e.errors()[0]['type']}"
    problem = answers_problem(answers)
    return (None, problem) if problem else (answers, None)


# ----------------------------------------------------------------------------- output files


def read_done_keys(out_dir: Path) -> dict[str, set[str]]:
    """Keys already written per persona, after cutting a torn last line that a kill may have left."""
    done = {}
    for persona in PERSONAS:
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
            {"role": "user", "content": user_message(persona, unit.text)},
            {"role": "assistant", "content": persona.render(getattr(answers, persona.name))},
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


class FatalAPIError(Exception):
    """An error no retry can fix (bad key, unknown model): the run stops with this message."""


def retry_delay_from(error) -> float | None:
    """The wait a 429 asks for in its google.rpc.RetryInfo detail ("retryDelay": "7s"), if any."""
    details = getattr(error, "details", None)
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    for detail in details or []:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = re.match(r"^([\d.]+)s$", str(detail.get("retryDelay", "")))
            if match:
                return float(match[1])
    return None


def is_retryable(error: BaseException) -> bool:
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return error.code in RETRYABLE_STATUS
    return isinstance(error, (TimeoutError, OSError)) or type(error).__module__.startswith(("httpx", "aiohttp"))


def is_fatal(error) -> bool:
    """A bad key, missing permission or unknown model: every request would fail the same way."""
    bad_key = error.code == 400 and "api key" in str(error.message or "").lower()
    return bad_key or error.code in (401, 403, 404)


def wait_for(retry_state) -> float:
    """RetryInfo's delay when the server gives one, else exponential backoff with full jitter (1 s .. 60 s).

    A delay of hours means a daily quota is spent: waiting MAX_RETRY_WAIT_S at most lets the unit fail in
    bounded time, recorded for the next run, instead of stalling the run."""
    error = retry_state.outcome.exception()
    asked = retry_delay_from(error)
    if asked is not None:
        return min(asked, MAX_RETRY_WAIT_S) + random.uniform(0, 1)
    return random.uniform(0, min(60.0, 2.0**retry_state.attempt_number))


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

    def cost(self, args) -> float:
        fresh_input = self.prompt_tokens - self.cached_tokens
        output = self.candidates_tokens + self.thoughts_tokens
        return (
            fresh_input * args.price_input + self.cached_tokens * args.price_cached + output * args.price_output
        ) / 1e6


class Generator:
    """Sends units to Gemini under a smooth client-side rate limit, with retries, and writes rows as they finish."""

    def __init__(self, client, args, done: dict[str, set[str]], stats: Stats, progress):
        from aiolimiter import AsyncLimiter
        from google.genai import types

        self.client, self.args, self.done, self.stats, self.progress = client, args, done, stats, progress
        # One request per 60/rpm seconds: a bucket of one never bursts, so no 60 s window exceeds --rpm.
        self.rate = AsyncLimiter(1, 60.0 / args.rpm)
        self.tokens = AsyncLimiter(args.tpm, 60.0) if args.tpm else None
        self.slots = asyncio.Semaphore(args.concurrency)
        self.config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            response_mime_type="application/json",
            response_schema=PersonaAnswers,
            temperature=args.temperature,
            max_output_tokens=args.max_output_tokens,
            thinking_config=types.ThinkingConfig(thinking_budget=args.thinking_budget),
        )
        out = args.out_dir
        # Append-only logs, kept open for the run and closed in close(); each record is flushed as it is written.
        self.files = {p.name: open(out / f"{p.name}.jsonl", "a", encoding="utf-8") for p in PERSONAS}  # noqa: SIM115
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
            stop=tenacity.stop_after_attempt(self.args.max_retries + 1),
            wait=wait_for,
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self.tokens is not None:
                    await self.tokens.acquire(min(self.args.tpm, len(unit.text) // 3 + 1000))
                async with self.rate:
                    self.stats.requests += 1
                try:
                    return await self.client.aio.models.generate_content(
                        model=self.args.model, contents=request_text(unit), config=self.config
                    )
                except errors.ClientError as e:
                    if is_fatal(e):
                        raise FatalAPIError(f"Gemini refused the request: {e.code} {e.status}: {e.message}") from None
                    raise  # retried if retryable (429), else this unit fails (e.g. a 400 about its content)

    async def run_unit(self, unit: Unit) -> None:
        async with self.slots:
            reason = "no attempt"
            for _ in range(self.args.quality_attempts):
                try:
                    response = await self.call(unit)
                except FatalAPIError:
                    raise
                except Exception as e:  # retries exhausted on 429/5xx/timeouts
                    reason = f"api_error:{getattr(e, 'code', None) or type(e).__name__}"
                    break
                self.stats.add_usage(response.usage_metadata)
                answers, reason = parse_response(response)
                if answers is not None:
                    self.write(unit, answers)
                    return
            self.record_failure(unit, reason)

    def write(self, unit: Unit, answers: BaseModel) -> None:
        for persona in PERSONAS:
            if unit.key not in self.done[persona.name]:  # a unit cut short by a kill is completed, not duplicated
                f = self.files[persona.name]
                f.write(dump_jsonl_line(make_row(persona, unit, answers, self.args.model)))
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


def api_key() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")


def make_client(args):
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        timeout=int(args.timeout * 1000),
        # Our own retry loop handles retries, so every attempt passes the client-side rate limiter.
        retry_options=types.HttpRetryOptions(attempts=1),
        **({"base_url": args.base_url} if args.base_url else {}),
    )
    return genai.Client(api_key=api_key(), http_options=options)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", type=Path, default=Path("papers.json"), help="step 1 output (default: %(default)s)")
    p.add_argument("--out-dir", type=Path, default=Path("data"), help="where the JSONL files go (default: %(default)s)")
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
        default=2048,
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


def load_units(args) -> tuple[list[Unit], int, object]:
    data = read_json(args.papers, "papers.json", "run paperExtractor.py first, or pass --papers")
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{args.papers}: expected {{'papers': [...]}} as paperExtractor.py writes it")
    tokenizer = load_tokenizer(args.tokenizer)
    count = lambda texts: count_tokens(tokenizer, texts)  # noqa: E731
    units, too_short = build_units(data["papers"], chunk_budget(args.max_tokens), count)
    return units, too_short, tokenizer


def dry_run(units: list[Unit], tokenizer, args) -> None:
    system = count_tokens(tokenizer, [SYSTEM_INSTRUCTION])[0]
    inputs = sum(count_tokens(tokenizer, [request_text(u) for u in units])) + system * len(units)
    outputs = len(units) * len(PERSONAS) * 2 * 150  # ~150 tokens per answer field
    cost = (inputs * args.price_input + outputs * args.price_output) / 1e6
    minutes = len(units) / args.rpm
    print(
        f"dry run: {len(units):,} units to generate, ~{inputs:,} input tokens, ~{outputs:,} output tokens, "
        f"~${cost:.2f} at ${args.price_input}/${args.price_output} per 1M, ~{minutes:,.0f} min at --rpm {args.rpm:g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.concurrency < 1 or args.rpm <= 0 or args.quality_attempts < 1:
        parser.error("--concurrency, --rpm and --quality-attempts must be positive")
    shown = {k: v for k, v in vars(args).items() if k not in ("price_input", "price_output", "price_cached")}
    log.info("settings: %s", {k: str(v) for k, v in shown.items()})
    started = time.monotonic()
    try:
        units, too_short, tokenizer = load_units(args)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        done = read_done_keys(args.out_dir)
    except InputError as e:
        die(str(e))
    pending = [u for u in units if any(u.key not in done[p.name] for p in PERSONAS)]
    finished = len(units) - len(pending)
    if args.limit:
        pending = pending[: args.limit]
    log.info(
        "%d units (%d sections under %d characters of prose skipped); skipping %d already done",
        len(units),
        too_short,
        MIN_PROSE_CHARS,
        finished,
    )
    if args.dry_run:
        dry_run(pending, tokenizer, args)
        return 0
    if not api_key():
        die("no API key: export GEMINI_API_KEY (get one at https://aistudio.google.com/apikey), or use --dry-run")
    try:
        stats = asyncio.run(generate(pending, args, done)) if pending else Stats()
    except KeyboardInterrupt:
        die(f"interrupted: finished units are saved in {args.out_dir}/; rerun the same command to resume")
    elapsed = time.monotonic() - started
    summary = {
        "model": args.model,
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
        "cost_usd": round(stats.cost(args), 4),
        "prices_per_million": {"input": args.price_input, "output": args.price_output, "cached": args.price_cached},
        "seconds": round(elapsed, 1),
    }
    write_json(args.out_dir / "sdg_stats.json", summary)
    reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(stats.failures.items()))
    print(
        f"done: {stats.done:,} ok, {stats.failed:,} failed{f' ({reasons})' if reasons else ''}, "
        f"{finished:,} skipped, {too_short:,} too short | {stats.requests:,} requests, "
        f"{stats.prompt_tokens + stats.candidates_tokens + stats.thoughts_tokens:,} tokens, "
        f"${summary['cost_usd']:.4f} in {elapsed:,.1f} s -> {args.out_dir}/"
    )
    return 0


async def generate(units: list[Unit], args, done) -> Stats:
    from tqdm import tqdm

    stats = Stats()
    with tqdm(total=len(units), desc="generate", unit="unit") as progress:
        generator = Generator(make_client(args), args, done, stats, progress)
        try:
            await generator.run(units)
        except FatalAPIError as e:
            die(f"{e}. Check GEMINI_API_KEY and --model (e.g. {DEFAULT_MODEL}); finished rows are kept")
        finally:
            generator.close()
    return stats


if __name__ == "__main__":
    sys.exit(main())
