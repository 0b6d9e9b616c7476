"""Do the adapters do their job? Compare each persona adapter with the base model on held-out rows.

Run simply as:
    $ python evaluate.py                            # all personas, 50 held-out rows each
    $ python evaluate.py --limit 10 --judge gemini  # plus a pairwise LLM judge (asks before spending)

Reads:  data/{persona}_2048/test.jsonl (or valid.jsonl), the base model, adapters/{persona}/.
Writes: reports/eval.md, reports/eval.json and one PNG chart per metric in reports/.

Per persona, base model against adapter, with greedy decoding:
  val_loss, perplexity   on the answers only (prompt masked), by mlx_lm's own evaluate()
  format                 share of answers with the persona's structure (**Analogy:** then **Explanation:** ...)
  fk_grade, forbidden    ELI5: Flesch-Kincaid grade (textstat) and share of answers using a forbidden word
  verdict_first, length_ok  Executive: the verdict opens the answer in <= 40 words; 60-400 words in all
  tokens, rouge_l        all: answer length in tokens and ROUGE-L F1 against the reference answer
  judge_win_rate         with --judge gemini: adapter's share of wins over base, both orders judged
"""

import argparse
import json
import logging
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import analyze
import sdg as step2
from common import PERSONAS as PERSONA_NAMES
from common import InputError, atomic_writer, die, read_jsonl, setup_logging, write_json

log = logging.getLogger("evaluate")

PERSONAS = {p.name: p for p in step2.PERSONAS}
VERDICT_MAX_WORDS = 40
EXECUTIVE_WORDS = (60, 400)
METRIC_LABELS = {
    "val_loss": "validation loss (answers only)",
    "perplexity": "perplexity",
    "format": "format adherence",
    "fk_grade": "Flesch-Kincaid grade (ELI5)",
    "forbidden": "forbidden-word rate (ELI5)",
    "verdict_first": "verdict first (Executive)",
    "length_ok": "length within bounds (Executive)",
    "tokens": "answer length (tokens)",
    "rouge_l": "ROUGE-L F1 vs reference",
    "judge_win_rate": "judge win rate",
}

# ----------------------------------------------------------------------------- metrics on one answer (pure)


def sections_of(persona: str, text: str) -> dict[str, str] | None:
    """The persona's labelled fields in order ("**Analogy:** ... **Explanation:** ..."), or None if malformed."""
    labels = [label for _, label in PERSONAS[persona].labels]
    pattern = r"\s*" + r"\s+".join(rf"\*\*{label}:\*\*\s*(?P<f{i}>\S.*?)" for i, label in enumerate(labels)) + r"\s*"
    match = re.fullmatch(pattern, text, flags=re.DOTALL)
    return {label: match[f"f{i}"] for i, label in enumerate(labels)} if match else None


def follows_format(persona: str, text: str) -> bool:
    return sections_of(persona, text) is not None


def uses_forbidden_word(persona: str, text: str) -> bool:
    return PERSONAS[persona].forbidden_word_in(text) is not None


def reading_grade(text: str) -> float:
    import textstat

    return float(textstat.flesch_kincaid_grade(re.sub(r"\*\*[^*]+:\*\*", "", text)))


def verdict_first(text: str) -> bool:
    fields = sections_of("executive", text)
    return fields is not None and 0 < len(fields["Verdict"].split()) <= VERDICT_MAX_WORDS


def length_ok(text: str) -> bool:
    return EXECUTIVE_WORDS[0] <= len(text.split()) <= EXECUTIVE_WORDS[1]


def rouge_l(reference: str, text: str) -> float:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, text)["rougeL"].fmeasure


def answer_metrics(persona: str, text: str, reference: str, tokens: int) -> dict[str, float]:
    metrics = {
        "format": float(follows_format(persona, text)),
        "tokens": float(tokens),
        "rouge_l": rouge_l(reference, text),
    }
    if persona == "eli5":
        metrics |= {"fk_grade": reading_grade(text), "forbidden": float(uses_forbidden_word(persona, text))}
    if persona == "executive":
        metrics |= {"verdict_first": float(verdict_first(text)), "length_ok": float(length_ok(text))}
    return metrics


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(r[key] for r in rows) for key in rows[0]} if rows else {}


# ----------------------------------------------------------------------------- models


def held_out_rows(data: Path, persona: str, limit: int) -> tuple[Path, list[dict]]:
    folder = data / f"{persona}_2048"
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


def run_side(model, tokenizer, persona: str, rows: list[dict], args) -> tuple[dict, list[dict]]:
    """Loss, perplexity and mean answer metrics of one model on one persona's rows, plus the answers."""
    answers, per_answer = [], []
    for row in rows:
        messages, reference = split_prompt(row)
        text, tokens = analyze.generate(model, tokenizer, messages, args.max_tokens, temperature=0.0)
        answers.append({"prompt": messages[-1]["content"], "reference": reference, "answer": text})
        per_answer.append(answer_metrics(persona, text, reference, tokens))
    loss = masked_loss(model, tokenizer, rows, args.max_seq_length)
    return {"val_loss": loss, "perplexity": math.exp(min(loss, 50.0)), **mean_metrics(per_answer)}, answers


# ----------------------------------------------------------------------------- LLM judge


JUDGE_INSTRUCTION = (
    "You judge two answers, A and B, to the same request, against this persona's rubric:\n{rubric}\n"
    'Reply with JSON {{"winner": "A" | "B" | "tie"}} and nothing else.'
)


def judge_win_rate(client, model: str, persona: str, pairs: list[tuple[str, str, str]]) -> float:
    """Share of wins for the adapter over base. Each pair is judged twice, with A and B swapped, to cancel
    position bias; a tie or a split decision counts half."""
    from google.genai import types

    config = types.GenerateContentConfig(
        system_instruction=JUDGE_INSTRUCTION.format(rubric=PERSONAS[persona].instructions),
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
        wait=step2.wait_for,
        retry=tenacity.retry_if_exception(step2.is_retryable),
        reraise=True,
    ):
        with attempt:
            return client.models.generate_content(model=model, contents=contents, config=config)


def judge_cost(pairs_count: int, prompt_chars: int) -> float:
    """Rough USD for 2 judge calls per pair: prompt and both answers in, a few tokens out."""
    input_tokens = 2 * (prompt_chars / 4 + pairs_count * 400)
    return input_tokens * step2.PRICE_INPUT / 1e6 + 2 * pairs_count * 10 * step2.PRICE_OUTPUT / 1e6


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
    p.add_argument("--model", default=analyze.default_model(), help="base model (default: %(default)s)")
    p.add_argument("--adapters", type=Path, default=Path("adapters"), help="(default: %(default)s)")
    p.add_argument("--data", type=Path, default=Path("data"), help="folder of split data (default: %(default)s)")
    p.add_argument("--personas", nargs="+", choices=PERSONA_NAMES, default=list(PERSONA_NAMES))
    p.add_argument("--limit", type=int, default=50, help="held-out rows per persona; 0 = all (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per generated answer (default: %(default)s)")
    p.add_argument("--max-seq-length", type=int, default=2048, help="for the loss (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="(default: %(default)s)")
    p.add_argument("--judge", choices=["gemini"], help="also ask Gemini which answer fits the persona better")
    p.add_argument("--judge-model", default=step2.DEFAULT_MODEL, help="(default: %(default)s)")
    p.add_argument("--base-url", default=None, help="Gemini-compatible endpoint for the judge (env GEMINI_BASE_URL)")
    p.add_argument("--yes", action="store_true", help="run the judge without asking to confirm its cost")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def evaluate_all(args, held_out: dict[str, tuple[Path, list[dict]]]) -> dict:
    """Base first for every persona, then one adapter swap per persona, on a model loaded once."""
    import mlx.core as mx

    persona_model = analyze.PersonaModel(
        args.model, args.adapters, analyze.adapter_configs(args.adapters, args.personas, args.model)
    )
    results = {p: {"source": str(path), "rows": len(rows)} for p, (path, rows) in held_out.items()}
    answers = {p: {} for p in held_out}
    for side in ("base", "adapter"):
        for persona, (_, rows) in held_out.items():
            mx.random.seed(args.seed)
            if side == "adapter":
                persona_model.use(persona)
            results[persona][side], answers[persona][side] = run_side(
                persona_model.model, persona_model.tokenizer, persona, rows, args
            )
            log.info("%s %s: %s", persona, side, {k: round(v, 3) for k, v in results[persona][side].items()})
    return {"model": args.model, "seed": args.seed, "personas": results, "answers": answers}


def maybe_judge(results: dict, args) -> None:
    pairs = {
        p: [(a["prompt"], a["answer"], b["answer"]) for a, b in zip(ans["base"], ans["adapter"], strict=True)]
        for p, ans in results["answers"].items()
    }
    n_pairs = sum(len(rows) for rows in pairs.values())
    cost = judge_cost(n_pairs, sum(len(prompt) for rows in pairs.values() for prompt, _, _ in rows))
    print(f"judge: {2 * n_pairs:,} Gemini calls, estimated ${cost:.3f}", file=sys.stderr)
    if not args.yes and input("run the judge? [y/N] ").strip().lower() != "y":
        return
    args.timeout, args.base_url = 120, args.base_url or os.environ.get("GEMINI_BASE_URL")
    if not step2.api_key():
        die("the judge needs GEMINI_API_KEY")
    client = step2.make_client(args)
    for persona, rows in pairs.items():
        try:
            win_rate = judge_win_rate(client, args.judge_model, persona, rows)
        except Exception as e:  # the generated results are kept; only this persona's judge score is missing
            log.warning("judge failed for %s, reporting without it: %s: %s", persona, type(e).__name__, e)
            continue
        results["personas"][persona]["adapter"]["judge_win_rate"] = win_rate


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    started = time.monotonic()
    try:
        held_out = {p: held_out_rows(args.data, p, args.limit) for p in args.personas}
        results = evaluate_all(args, held_out)
    except InputError as e:
        die(str(e))
    if args.judge:
        maybe_judge(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "eval.json", results)
    with atomic_writer(args.out / "eval.md") as f:
        f.write(render_markdown(results))
    charts = write_charts(results, args.out)
    rows = sum(r["rows"] for r in results["personas"].values())
    print(
        f"done: {len(args.personas)} personas, {rows:,} held-out rows, {len(charts)} charts in "
        f"{time.monotonic() - started:,.1f} s -> {args.out}/eval.md, {args.out}/eval.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
