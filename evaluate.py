"""Do the adapters do their job? Compare each persona adapter with the base model on held-out rows.

Run simply as:
    $ python evaluate.py                            # all personas, 50 held-out rows each
    $ python evaluate.py --limit 10 --judge gemini  # plus a pairwise LLM judge (asks before spending)

Reads:  data/{persona}_2048/test.jsonl (or valid.jsonl), the base model, adapters/{persona}/.
Writes: reports/eval.md, reports/eval.json and one PNG chart per metric in reports/.

Per persona, base model against adapter, with greedy decoding:
  val_loss, perplexity   on the answers only (prompt masked), by mlx_lm's own evaluate()
  format                 share of answers with the persona's structure (**Analogy:** then **Explanation:** ...)
  tokens, rouge_l        answer length in tokens and ROUGE-L F1 against the reference answer
and the checks each persona's entry in personas.toml asks for (ELI5 and Executive by default):
  fk_grade, grade_ok     max_reading_grade: Flesch-Kincaid grade (textstat), share at or under the maximum
  forbidden              forbidden_words: share of answers using one
  lead_first             first_field_max_words: the first field opens the answer in at most that many words
  length_ok              answer_words: share of answers within [min, max] words
  judge_win_rate         with --judge gemini: adapter's share of wins over base, both orders judged
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    MAX_TOKENS,
    InputError,
    atomic_writer,
    die,
    other_budgets,
    read_jsonl,
    settings_from,
    setup_logging,
    split_dir,
    write_json,
)
from models import PersonaModel, adapter_configs, default_model, generate
from personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from personas import Persona, load_personas, select
from teachers import DEFAULT_MODEL, PRICE_INPUT, PRICE_OUTPUT, api_key, is_retryable, make_client, wait_for

log = logging.getLogger("evaluate")

METRIC_LABELS = {
    "val_loss": "validation loss (answers only)",
    "perplexity": "perplexity",
    "format": "format adherence",
    "fk_grade": "Flesch-Kincaid grade",
    "grade_ok": "reading grade within the persona's maximum",
    "forbidden": "forbidden-word rate",
    "lead_first": "first field opens the answer, short",
    "length_ok": "length within bounds",
    "tokens": "answer length (tokens)",
    "rouge_l": "ROUGE-L F1 vs reference",
    "judge_win_rate": "judge win rate",
}


@dataclass(frozen=True)
class Settings:
    model: str | None  # None: adapter_config.json's
    adapters: Path
    data: Path
    personas_file: Path
    personas: list[str] | None  # None: all in the personas file
    limit: int
    max_tokens: int
    max_seq_length: int
    seed: int
    out: Path
    judge: str | None
    judge_model: str
    base_url: str | None
    yes: bool
    verbose: bool


# ----------------------------------------------------------------------------- metrics on one answer (pure)


def follows_format(persona: Persona, text: str) -> bool:
    return persona.parse(text) is not None


def reading_grade(text: str) -> float:
    import textstat

    return float(textstat.flesch_kincaid_grade(re.sub(r"\*\*[^*]+:\*\*", "", text)))


def lead_first(persona: Persona, text: str, max_words: int) -> bool:
    """The first field opens the answer and says its piece in at most max_words words."""
    fields = persona.parse(text)
    first = persona.fields[0].name
    return fields is not None and 0 < len(fields[first].split()) <= max_words


def length_ok(text: str, words: tuple[int, int]) -> bool:
    return words[0] <= len(text.split()) <= words[1]


def rouge_l(reference: str, text: str) -> float:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, text)["rougeL"].fmeasure


def answer_metrics(persona: Persona, text: str, reference: str, tokens: int) -> dict[str, float]:
    """Every metric that applies to this persona, as its personas.toml entry says; the same keys for every
    answer of a persona, so means line up."""
    checks = persona.checks
    metrics = {
        "format": float(follows_format(persona, text)),
        "tokens": float(tokens),
        "rouge_l": rouge_l(reference, text),
    }
    if checks.max_reading_grade is not None:
        grade = reading_grade(text)
        metrics |= {"fk_grade": grade, "grade_ok": float(grade <= checks.max_reading_grade)}
    if persona.forbidden_words:
        metrics["forbidden"] = float(persona.forbidden_word_in(text) is not None)
    if checks.first_field_max_words is not None:
        metrics["lead_first"] = float(lead_first(persona, text, checks.first_field_max_words))
    if checks.answer_words is not None:
        metrics["length_ok"] = float(length_ok(text, checks.answer_words))
    return metrics


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(r[key] for r in rows) for key in rows[0]} if rows else {}


# ----------------------------------------------------------------------------- models


def held_out_rows(data: Path, persona: str, limit: int, max_tokens: int) -> tuple[Path, list[dict]]:
    folder = split_dir(data, persona, max_tokens)
    for newer in other_budgets(data, persona, max_tokens):
        log.warning(
            "%s is newer than %s/: was it trimmed with another --max-tokens? Pass --max-seq-length", newer, folder
        )
    path = folder / "test.jsonl" if (folder / "test.jsonl").exists() else folder / "valid.jsonl"
    if not path.exists():
        raise InputError(f"no held-out rows for {persona}: {path} is missing; run split_data.py first")
    rows = [row for _, row in read_jsonl(path)]
    return path, rows[:limit] if limit else rows


def split_prompt(row: dict) -> tuple[list[dict], str]:
    """The conversation up to the answer, and the reference answer."""
    return row["messages"][:-1], row["messages"][-1]["content"]


def masked_loss(model, tokenizer, rows: list[dict], max_seq_length: int) -> float:
    """Mean loss per answer token, prompts masked, with mlx_lm's own dataset, batching and evaluate()."""
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import evaluate

    dataset = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    return float(evaluate(model, dataset, batch_size=1, num_batches=-1, max_seq_length=max_seq_length))


def run_side(model, tokenizer, persona: Persona, rows: list[dict], settings: Settings) -> tuple[dict, list[dict]]:
    """Loss, perplexity and mean answer metrics of one model on one persona's rows, plus the answers."""
    answers, per_answer = [], []
    for row in rows:
        messages, reference = split_prompt(row)
        text, tokens = generate(model, tokenizer, messages, settings.max_tokens, temperature=0.0)
        answers.append({"prompt": messages[-1]["content"], "reference": reference, "answer": text})
        per_answer.append(answer_metrics(persona, text, reference, tokens))
    loss = masked_loss(model, tokenizer, rows, settings.max_seq_length)
    return {"val_loss": loss, "perplexity": math.exp(min(loss, 50.0)), **mean_metrics(per_answer)}, answers


# ----------------------------------------------------------------------------- LLM judge


JUDGE_INSTRUCTION = (
    "You judge two answers, A and B, to the same request, against this persona's rubric:\n{rubric}\n"
    'Reply with JSON {{"winner": "A" | "B" | "tie"}} and nothing else.'
)


def judge_win_rate(client, model: str, persona: Persona, pairs: list[tuple[str, str, str]]) -> float:
    """Share of wins for the adapter over base. Each pair is judged twice, with A and B swapped, to cancel
    position bias; a tie or a split decision counts half."""
    from google.genai import types

    config = types.GenerateContentConfig(
        system_instruction=JUDGE_INSTRUCTION.format(rubric=persona.instructions),
        response_mime_type="application/json",
        temperature=0.0,
        thinking_config=types.ThinkingConfig(thinking_budget=0),
    )
    score = 0.0
    for prompt, base, adapter in pairs:
        for first, second, adapter_is in ((base, adapter, "B"), (adapter, base, "A")):
            contents = f"Request:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}"
            response = ask_with_retries(client, model, contents, config)
            winner = (json.loads(response.text or "{}").get("winner") or "tie").strip()
            score += 0.5 if winner == "tie" else float(winner == adapter_is)
    return score / (2 * len(pairs)) if pairs else 0.0


def ask_with_retries(client, model: str, contents: str, config):
    """One judge call, retried on 429/5xx/timeouts as sdg.py retries (RetryInfo honoured, backoff with jitter)."""
    import tenacity

    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(6),
        wait=wait_for,
        retry=tenacity.retry_if_exception(is_retryable),
        reraise=True,
    ):
        with attempt:
            return client.models.generate_content(model=model, contents=contents, config=config)


def judge_cost(pairs_count: int, prompt_chars: int) -> float:
    """Rough USD for 2 judge calls per pair: prompt and both answers in, a few tokens out."""
    input_tokens = 2 * (prompt_chars / 4 + pairs_count * 400)
    return input_tokens * PRICE_INPUT / 1e6 + 2 * pairs_count * 10 * PRICE_OUTPUT / 1e6


# ----------------------------------------------------------------------------- report


def render_markdown(results: dict) -> str:
    lines = [
        "# Adapter evaluation",
        "",
        f"Model {results['model']}, greedy decoding, seed {results['seed']}. Base = the model without adapter.",
        "",
    ]
    for persona, r in results["personas"].items():
        lines += [
            f"## {persona} ({r['rows']} held-out rows from {r['source']})",
            "",
            "| metric | base | adapter | change |",
            "|---|---:|---:|---:|",
        ]
        for key, label in METRIC_LABELS.items():
            if key in r["adapter"]:
                base, adapter = r["base"].get(key), r["adapter"][key]
                change = f"{adapter - base:+.3f}" if base is not None else ""
                base_text = f"{base:.3f}" if base is not None else "-"
                lines.append(f"| {label} | {base_text} | {adapter:.3f} | {change} |")
        lines.append("")
    return "\n".join(lines)


def write_charts(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    metrics = [k for k in METRIC_LABELS if any(k in r["adapter"] for r in results["personas"].values())]
    for key in metrics:
        personas = [p for p, r in results["personas"].items() if key in r["adapter"]]
        base = [results["personas"][p]["base"].get(key, 0.0) for p in personas]
        adapter = [results["personas"][p]["adapter"][key] for p in personas]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = range(len(personas))
        ax.bar([x - 0.2 for x in xs], base, width=0.4, label="base", color="#9aa5b1")
        ax.bar([x + 0.2 for x in xs], adapter, width=0.4, label="adapter", color="#2f6fdb")
        ax.set_xticks(list(xs), personas)
        ax.set_title(METRIC_LABELS[key])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100, metadata={"Software": None})  # no version string: reruns give identical bytes
        plt.close(fig)
        charts.append(path)
    return charts


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="base model (default: the one adapter_config.json trains)")
    p.add_argument("--adapters", type=Path, default=Path("adapters"), help="(default: %(default)s)")
    p.add_argument("--data", type=Path, default=Path("data"), help="folder of split data (default: %(default)s)")
    p.add_argument(
        "--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="persona definitions (default: personas.toml)"
    )
    p.add_argument("--personas", nargs="+", metavar="NAME", help="which personas (default: all in the personas file)")
    p.add_argument("--limit", type=int, default=50, help="held-out rows per persona; 0 = all (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per generated answer (default: %(default)s)")
    p.add_argument(
        "--max-seq-length",
        type=int,
        default=MAX_TOKENS,
        help="the token budget the data was trimmed to: reads data/{persona}_N/ and bounds the loss "
        "(default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="(default: %(default)s)")
    p.add_argument("--judge", choices=["gemini"], help="also ask Gemini which answer fits the persona better")
    p.add_argument("--judge-model", default=DEFAULT_MODEL, help="(default: %(default)s)")
    p.add_argument(
        "--base-url",
        default=os.environ.get("GEMINI_BASE_URL"),
        help="Gemini-compatible endpoint for the judge (env GEMINI_BASE_URL)",
    )
    p.add_argument("--yes", action="store_true", help="run the judge without asking to confirm its cost")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def evaluate_all(settings: Settings, personas, held_out: dict[str, tuple[Path, list[dict]]]) -> dict:
    """Base first for every persona, then one adapter swap per persona, on a model loaded once."""
    import mlx.core as mx

    configs = adapter_configs(settings.adapters, settings.personas, settings.model)
    persona_model = PersonaModel(settings.model, settings.adapters, configs)
    results = {p: {"source": str(path), "rows": len(rows)} for p, (path, rows) in held_out.items()}
    answers = {p: {} for p in held_out}
    for side in ("base", "adapter"):
        for persona in personas:
            rows = held_out[persona.name][1]
            mx.random.seed(settings.seed)
            if side == "adapter":
                persona_model.use(persona.name)
            results[persona.name][side], answers[persona.name][side] = run_side(
                persona_model.model, persona_model.tokenizer, persona, rows, settings
            )
            metrics = {k: round(v, 3) for k, v in results[persona.name][side].items()}
            log.info("%s %s: %s", persona.name, side, metrics)
    return {"model": settings.model, "seed": settings.seed, "personas": results, "answers": answers}


def maybe_judge(results: dict, personas, settings: Settings) -> None:
    pairs = {
        p: [(a["prompt"], a["answer"], b["answer"]) for a, b in zip(ans["base"], ans["adapter"], strict=True)]
        for p, ans in results["answers"].items()
    }
    n_pairs = sum(len(rows) for rows in pairs.values())
    cost = judge_cost(n_pairs, sum(len(prompt) for rows in pairs.values() for prompt, _, _ in rows))
    print(f"judge: {2 * n_pairs:,} Gemini calls, estimated ${cost:.3f}", file=sys.stderr)
    if not settings.yes and input("run the judge? [y/N] ").strip().lower() != "y":
        return
    if not api_key():
        die("the judge needs GEMINI_API_KEY")
    client = make_client(timeout_s=120, base_url=settings.base_url)
    for persona in personas:
        try:
            win_rate = judge_win_rate(client, settings.judge_model, persona, pairs[persona.name])
        except Exception as e:  # the generated results are kept; only this persona's judge score is missing
            log.warning("judge failed for %s, reporting without it: %s: %s", persona.name, type(e).__name__, e)
            continue
        results["personas"][persona.name]["adapter"]["judge_win_rate"] = win_rate


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = settings_from(Settings, parser.parse_args(argv))
    setup_logging(settings.verbose)
    started = time.monotonic()
    try:
        personas = select(load_personas(settings.personas_file), settings.personas, settings.personas_file)
        settings = dataclasses.replace(
            settings, model=settings.model or default_model(), personas=[p.name for p in personas]
        )
        held_out = {
            p.name: held_out_rows(settings.data, p.name, settings.limit, settings.max_seq_length) for p in personas
        }
        results = evaluate_all(settings, personas, held_out)
    except InputError as e:
        die(str(e))
    if settings.judge:
        maybe_judge(results, personas, settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / "eval.json", results)
    with atomic_writer(settings.out / "eval.md") as f:
        f.write(render_markdown(results))
    charts = write_charts(results, settings.out)
    rows = sum(r["rows"] for r in results["personas"].values())
    print(
        f"done: {len(personas)} personas, {rows:,} held-out rows, {len(charts)} charts in "
        f"{time.monotonic() - started:,.1f} s -> {settings.out}/eval.md, {settings.out}/eval.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
