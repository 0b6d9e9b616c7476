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
Rows are appended as each unit finishes; a rerun skips finished units and retries failed ones. A unit is keyed by
its paper and its text, so editing papers.json re-pays only for what changed, and every run ends with each
persona file holding one row per current unit, in papers.json's order. One run per output folder (a lock). An
error every request would meet (key, permission, model, location, thinking budget, URL, a spent quota) stops the
run, exit 1. The engine is in the package: generation.py (requests, retries, the gate), rows.py (writing),
ledger.py (cost), teachers/ (one module per teacher; gemini_batch.py for the Batch API's jobs).
"""

import argparse
import logging
import sys
from pathlib import Path

from paper_personas.cli import InputError, add_budget_flag, counted, die, run, start
from paper_personas.files import unwritable, write_json
from paper_personas.generation import Settings, runs, with_teacher_defaults
from paper_personas.ledger import Stats, estimate, ledger, read_ledger, run_record
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import Persona, load_personas, system_instruction
from paper_personas.rows import FAILURES, read_done_keys, reconcile
from paper_personas.store import read_papers
from paper_personas.teachers.base import FatalAPIError
from paper_personas.teachers.gemini import DEFAULT_MODEL
from paper_personas.tokens import MAX_TOKENS, count_tokens, load_tokenizer
from paper_personas.units import (
    MIN_PROSE_CHARS,
    Unit,
    across_papers,
    build_units,
    chunk_budget,
    min_max_tokens,
    request_text,
)

log = logging.getLogger("sdg")
RUNS = runs()  # --teacher's choices: each teacher online, and gemini-batch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", type=Path, default=Path("papers.json"), help="step 1 output (default: %(default)s)")
    p.add_argument("--out-dir", type=Path, default=Path("data"), help="where the JSONL files go (default: %(default)s)")
    p.add_argument("--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="(default: personas.toml)")
    api = p.add_argument_group("the teacher")
    api.add_argument(
        "--teacher",
        choices=sorted(RUNS),
        default="gemini",
        help="gemini: Gemini's online API; gemini-batch: the same through Gemini's Batch API, half the price, "
        "results within 24 h; openai: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI) at --base-url; "
        "mlx: a local model in this process, no key (default: %(default)s)",
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
        help="generations per unit before it is recorded as failed: blocked, truncated, unparsable or off-persona "
        "(default: %(default)s)",
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
    fits = "tokens a training row may take; long sections are chunked to leave room for the answer"
    add_budget_flag(gen, MAX_TOKENS, fits)
    gen.add_argument(
        "--tokenizer",
        default="cl100k_base",
        help="tiktoken encoding or local model folder used to size chunks; offline, give a folder (default: "
        "%(default)s, downloaded on first use)",
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


def check_settings(settings: Settings, personas: tuple[Persona, ...], teacher, parser) -> None:
    """Usage mistakes, and settings the teacher would reject on every request, before any request is made."""
    if settings.concurrency < 1 or settings.quality_attempts < 1 or settings.timeout <= 0:
        parser.error("--concurrency, --quality-attempts and --timeout must be positive")
    if settings.batch_size < 1 or settings.poll_interval <= 0:
        parser.error("--batch-size and --poll-interval must be positive")
    if settings.limit < 0 or settings.max_retries < 0 or settings.rpm < 0:
        parser.error("--limit, --max-retries and --rpm must be 0 or more")
    smallest = min_max_tokens(personas)
    if settings.max_seq_length < smallest:
        parser.error(
            f"--max-seq-length {settings.max_seq_length} leaves no room for a useful chunk: the chat template, the "
            f"longest answer and a chunk of text need at least {smallest}"
        )
    if problem := teacher.problem():
        parser.error(problem)


def load_units(settings: Settings, personas: tuple[Persona, ...]) -> tuple[list[Unit], int, object]:
    papers, data = read_papers(settings.papers, "run paperExtractor.py first, or pass --papers")
    if not papers:  # a step 1 that failed, most likely: never a reason to set the persona files aside
        failures = data.get("failures") if isinstance(data.get("failures"), list) else []
        first = failures[0] if failures and isinstance(failures[0], dict) else {}
        why = f" ({counted(len(failures), 'failure')} recorded, first {first.get('id')}: {first.get('reason')})"
        raise InputError(f"{settings.papers} holds no papers{why if first else ''}; rerun paperExtractor.py")
    tokenizer = load_tokenizer(settings.tokenizer)
    count = lambda texts: count_tokens(tokenizer, texts)  # noqa: E731
    units, too_short = build_units(papers, chunk_budget(settings.max_seq_length, personas), count)
    return units, too_short, tokenizer


def dry_run(units: list[Unit], done: int, tokenizer, settings: Settings, personas: tuple[Persona, ...]) -> None:
    system = count_tokens(tokenizer, [system_instruction(personas)])[0]
    inputs = sum(count_tokens(tokenizer, [request_text(u) for u in units])) + system * len(units)
    fields = sum(len(p.fields) for p in personas)
    outputs, cost = estimate(inputs, len(units), fields, settings.prices)
    pace = f"~{len(units) / settings.rpm:,.0f} min at --rpm {settings.rpm:g}" if settings.rpm else "no rate limit"
    print(
        f"dry run: {done:,} units already done in {settings.out_dir}/, {len(units):,} to generate with "
        f"{settings.teacher} {settings.model}, ~{inputs:,} input tokens, ~{outputs:,} output tokens, ~${cost:.2f} "
        f"at ${settings.prices.input:g}/${settings.prices.output:g} per 1M, {pace}"
    )
    same_teacher = {name: r for name, r in RUNS.items() if r.teacher_class is RUNS[settings.teacher].teacher_class}
    if len(same_teacher) > 1:  # another way of running this teacher's requests, at another price
        cost_of = lambda r: estimate(inputs, len(units), fields, r.prices)[1]  # noqa: E731
        print("  list prices: " + ", ".join(f"{r.label} ~${cost_of(r):.2f}" for r in same_teacher.values()))


def generate_all(settings: Settings, personas, teacher, units: list[Unit], too_short: int) -> int:
    """The run under the output folder's lock: generate what is pending, reconcile the persona files with the
    current units, and record the run in the ledger, however it ends."""
    stats_path, way = settings.out_dir / "sdg_stats.json", RUNS[settings.teacher]
    runs_so_far = read_ledger(stats_path)
    done = read_done_keys(settings.out_dir, personas)
    pending = [u for u in units if any(u.key not in done[p.name] for p in personas)]
    finished = len(units) - len(pending)
    log.info("skipping %d units already done; %d pending", finished, len(pending))
    stats, outcome, stop_message, note = Stats(), "complete", None, ""
    try:
        note = way.generate(teacher, settings, personas, units, pending, done, stats)
    except KeyboardInterrupt:
        outcome = "interrupted"
        stop_message = f"interrupted: finished units are saved in {settings.out_dir}/; rerun the same command to resume"
        stop_message += way.interrupted_note
    except InputError as e:  # a damaged batch journal: nothing was sent
        outcome, stop_message = f"stopped: {e}", str(e)
    except FatalAPIError as e:
        outcome = f"stopped: {e}"
        spent = (
            f"Stopped after {stats.requests:,} requests (${settings.prices.cost(stats.usage):.4f}): {stats.done:,} "
            f"units done this run, {len(pending) - stats.done - stats.failed:,} not attempted."
            if stats.requests
            else "Nothing was sent."
        )
        stop_message = f"{e}\n{spent} " + (teacher.quota_hint if e.quota else teacher.fix_hint)
    orphaned = reconcile(settings.out_dir, personas, [u.key for u in units])
    record = run_record(settings, stats, settings.prices, outcome, len(units), len(pending), orphaned)
    write_json(stats_path, ledger([*runs_so_far, record]))
    if stop_message:
        die(stop_message)
    print(summary(settings, stats, finished, too_short, orphaned) + (f"\n{note}" if note else ""))
    if pending and stats.done == 0 and stats.failed:
        die(f"no unit succeeded; the reasons are in {settings.out_dir / FAILURES}")
    return 0


def summary(settings: Settings, stats: Stats, finished: int, too_short: int, orphaned: dict) -> str:
    by_reason = lambda counts: ", ".join(f"{n:,} {r}" for r, n in sorted(counts.items()) if n)  # noqa: E731
    failed, rejected, moved = by_reason(stats.failures), by_reason(stats.rejections), by_reason(orphaned)
    tokens = stats.usage.input + stats.usage.output + stats.usage.thinking
    return (
        f"done: {stats.done:,} ok, {stats.failed:,} failed{f' ({failed})' if failed else ''}, "
        f"{sum(stats.rejections.values()):,} answers rejected{f' ({rejected})' if rejected else ''}, "
        f"{finished:,} skipped, {too_short:,} too short, "
        f"{sum(orphaned.values()):,} orphaned rows moved{f' ({moved})' if moved else ''} | {stats.requests:,} "
        f"requests, {tokens:,} tokens, ${settings.prices.cost(stats.usage):.4f} in {stats.seconds():,.1f} s "
        f"-> {settings.out_dir}/"
    )


def main(argv: list[str] | None = None) -> int:
    from filelock import FileLock, Timeout

    parser = build_parser()
    args = start(parser, Settings, argv)
    settings = with_teacher_defaults(args, RUNS[args.teacher])
    personas = load_personas(settings.personas_file)
    teacher = RUNS[settings.teacher].teacher_class(settings.teacher_options())
    check_settings(settings, personas, teacher, parser)
    log.info("settings: %s", {k: str(v) for k, v in vars(settings).items() if not k.startswith("price_")})
    units, too_short, tokenizer = load_units(settings, personas)
    skipped = counted(too_short, "section")
    log.info("%s (%s under %d characters of prose skipped)", counted(len(units), "unit"), skipped, MIN_PROSE_CHARS)
    if settings.dry_run:
        done = read_done_keys(settings.out_dir, personas, repair=False) if settings.out_dir.exists() else {}
        pending = [u for u in units if any(u.key not in done.get(p.name, ()) for p in personas)]
        dry_run(across_papers(pending, settings.limit), len(units) - len(pending), tokenizer, settings, personas)
        if problem := unwritable(settings.out_dir, "--out-dir", folder=True):
            print(f"  a real run would stop before its first request: {problem}")
        return 0
    alternatives = "or generate with a local model and no key: --teacher mlx --model PATH_OR_HF_ID; or use --dry-run"
    if problem := teacher.preflight(alternatives):
        die(f"{teacher.name}: {problem}; nothing was sent")
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


if __name__ == "__main__":
    sys.exit(run(main))
