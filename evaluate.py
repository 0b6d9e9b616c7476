"""Do the adapters earn their keep? Compare each adapter with the base model and with the base model *prompted*
with the persona's instructions, on held-out rows, with metrics that see content.

Run simply as:
    $ python evaluate.py                                    # base, prompted base and adapter; 50 rows per persona
    $ python evaluate.py --answers theirs.jsonl             # also score answers made elsewhere (a hosted model, ...)
    $ python evaluate.py --systems --answers a.jsonl b.jsonl  # score only the given answers; no model is loaded
    $ python evaluate.py --limit 10 --judge gemini          # plus a pairwise LLM judge (asks before spending)

Reads:  data/{persona}_2048/test.jsonl (or valid.jsonl), the base model, adapters/{persona}/.
Writes: reports/eval.md (a verdict line per persona, then the tables), reports/eval.json, reports/answers.jsonl
        (every generated answer, in the --answers format) and one PNG chart per metric in reports/.

Systems, each answering every held-out prompt with greedy decoding:
  base        the base model, given the training prompt as it is
  prompted    the base model with the persona's instructions and answer format as a system message: the honest
              baseline; training is justified only if the adapter beats it
  adapter     the base model with the persona's LoRA adapter
  <name>      answers from --answers FILE, one JSON object a line: {"system", "persona", "key", "answer"}, where
              key is the held-out row's meta.key, or "#<n>" for the n-th row (0-based) of a row without one;
              a key met again (a section held out twice, with two references) is followed by "~2", "~3", ...

Metrics per answer; every mean comes with a 95% bootstrap interval and its sample size:
  topical     BM25 (bm25s) ranks the answer's own section first among the persona's held-out sections
  copy_share  share of the answer's words inside runs of 8 or more words copied verbatim from the prompt
  degenerate  empty, under half the words the persona asks of its fields, mostly repeated 3-grams, the same
              answer for different sections, or cut off at --max-tokens
  format      the persona's labelled fields, in order
  rouge_l     ROUGE-L F1 against the reference answer
  style       the checks personas.toml asks for (reading grade, forbidden words, first field short, length),
              on non-degenerate answers only: an empty answer has no reading grade, not the best one
  loss        masked loss per token of the reference answer, per row (the adapter should lower it)
  judge       with --judge gemini|openai|mlx: adapter against prompted base, both orders, accuracy to the section
              and style judged separately, through the same teacher interface as step 2 (paper_personas/teachers/)
"""

import argparse
import asyncio
import dataclasses
import json
import logging
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from paper_personas.cli import InputError, die, settings_from, setup_logging, stop_on_sigterm
from paper_personas.files import (
    atomic_writer,
    other_budgets,
    read_jsonl,
    split_dir,
    unwritable,
    write_json,
    write_jsonl,
)
from paper_personas.journal import AnswerJournal, file_identity, fingerprint
from paper_personas.models import (
    ADAPTER_FILE,
    PersonaModel,
    adapter_configs,
    default_model,
    default_model_help,
    kept_step,
)
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import Persona, load_personas, section_text, select
from paper_personas.quality import copy_share, degenerate_reasons, words
from paper_personas.teachers import ASKING_TEACHERS, TEACHERS, make_teacher
from paper_personas.teachers.base import (
    DAILY_QUOTA,
    SYSTEMIC,
    FatalAPIError,
    FlagNames,
    Teacher,
    TeacherOptions,
    Usage,
    connection_failure,
    retrying,
)
from paper_personas.tokens import MAX_TOKENS

log = logging.getLogger("evaluate")

MODEL_SYSTEMS = ("base", "prompted", "adapter")
COPY_RUN_WORDS = 8  # a run of 8 words taken verbatim is copying, not a shared phrase
COPY_FLAG = 0.5  # an answer with half its words in copied runs is a copy
BOOTSTRAP_RESAMPLES = 2000
# name: (label, higher is better; None = neither, just reported)
METRICS = {
    "topical": ("topical: matches its own section (BM25 top-1)", True),
    "copy_share": ("share of words copied from the prompt", False),
    "degenerate": ("degenerate answers", False),
    "format": ("format adherence", True),
    "rouge_l": ("ROUGE-L F1 vs reference", True),
    "fk_grade": ("Flesch-Kincaid grade (non-degenerate)", False),
    "grade_ok": ("reading grade within the maximum (non-degenerate)", True),
    "forbidden": ("forbidden-word rate (non-degenerate)", False),
    "lead_first": ("first field opens the answer, short (non-degenerate)", True),
    "length_ok": ("length within bounds (non-degenerate)", True),
    "tokens": ("answer length (tokens)", None),
    "loss": ("loss on the reference answer", False),
    "judge_accuracy": ("judge: adapter more accurate than prompted base", True),
    "judge_style": ("judge: adapter better in style than prompted base", True),
}
STYLE_METRICS = ("fk_grade", "grade_ok", "forbidden", "lead_first", "length_ok")


@dataclass(frozen=True)
class Settings:
    model: str | None  # None: adapter_config.json's
    adapters: Path
    data: Path
    personas_file: Path
    personas: list[str] | None  # None: all in the personas file
    systems: list[str]
    answers: list[Path]
    limit: int
    max_tokens: int
    max_seq_length: int
    batch_size: int
    seed: int
    out: Path
    judge: str | None  # a teacher name, or None: no judge
    judge_model: str | None  # None: the teacher's default
    base_url: str | None
    yes: bool
    verbose: bool


# ----------------------------------------------------------------------------- metrics on answers (pure)


def topical(answers: list[str], sections: list[str], own: list[int]) -> list[bool]:
    """For each answer i, whether BM25 ranks its own section, sections[own[i]], strictly first among all the
    sections (distinct texts: a section held out twice is one section, not its own rival)."""
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.NOTSET)  # it sets DEBUG on import: follow ours instead
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(sections, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    flags = []
    for answer, mine in zip(answers, own, strict=True):
        query = bm25s.tokenize([answer], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)[0]
        if not query:
            flags.append(False)
            continue
        scores = retriever.get_scores(query)
        others = [s for j, s in enumerate(scores) if j != mine]
        flags.append(bool(scores[mine] > 0 and all(scores[mine] > s for s in others)))
    return flags


def reading_grade(text: str) -> float:
    import textstat

    return float(textstat.flesch_kincaid_grade(re.sub(r"\*\*[^*]+:\*\*", "", text)))


def lead_first(persona: Persona, text: str, max_words: int) -> bool:
    """The first field opens the answer and says its piece in at most max_words words."""
    fields = persona.parse(text)
    first = persona.fields[0].name
    return fields is not None and 0 < len(fields[first].split()) <= max_words


def length_ok(text: str, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= len(text.split()) <= bounds[1]


def rouge_l(reference: str, text: str) -> float:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, text)["rougeL"].fmeasure


def style_metrics(persona: Persona, text: str) -> dict[str, float]:
    """The checks personas.toml asks of this persona, as data: reading grade, forbidden words, lead, length."""
    checks, metrics = persona.checks, {}
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


def score_answers(persona: Persona, rows: list[dict], answers: list[dict], max_tokens: int) -> list[dict]:
    """Per-answer metrics for one system's answers to one persona's held-out rows (answers[i] answers rows[i];
    an answer is {"answer": text, "tokens": n or None}). Rows with the same section (data that holds a section
    twice, with two reference answers) are one prompt: the same greedy answer to both is not a repeat, and the
    section is not its own rival for topicality."""
    prompts = [row["messages"][-2]["content"] for row in rows]
    sections = [section_text(p, (persona,)) for p in prompts]
    distinct = list(dict.fromkeys(sections))
    own = [distinct.index(section) for section in sections]
    texts = [a["answer"] for a in answers]
    on_topic = topical(texts, distinct, own)
    sections_answered: dict[str, set[int]] = {}  # an answer's words -> the distinct sections it answered
    for text, mine in zip(texts, own, strict=True):
        sections_answered.setdefault(" ".join(words(text)), set()).add(mine)
    scored = []
    for i, (row, answer, text) in enumerate(zip(rows, answers, texts, strict=True)):
        cut_off = answer.get("tokens") is not None and answer["tokens"] >= max_tokens
        repeated = len(sections_answered[" ".join(words(text))]) > 1
        reasons = degenerate_reasons(persona, text)
        reasons += ["same_answer_for_other_sections"] if repeated and text.strip() else []
        reasons += ["cut_off"] if cut_off else []
        metrics = {
            "topical": float(on_topic[i]),
            "copy_share": copy_share(text, prompts[i], COPY_RUN_WORDS),
            "degenerate": float(bool(reasons)),
            "format": float(persona.parse(text) is not None),
            "rouge_l": rouge_l(row["messages"][-1]["content"], text),
        }
        if answer.get("tokens") is not None:
            metrics["tokens"] = float(answer["tokens"])
        if not reasons:
            metrics |= style_metrics(persona, text)
        scored.append({"metrics": metrics, "degenerate_reasons": reasons})
    return scored


def flagged(scored: dict) -> list[str]:
    """What is wrong with one scored answer, by the content metrics: off topic, copied, degenerate."""
    m = scored["metrics"]
    return (
        (["off_topic"] if not m["topical"] else [])
        + (["copied"] if m["copy_share"] >= COPY_FLAG else [])
        + scored["degenerate_reasons"]
    )


# ----------------------------------------------------------------------------- statistics (pure)


def mean_ci(values: list[float], seed: int) -> dict:
    """Mean, 95% percentile bootstrap interval (scipy) and n; a single value or a constant has a zero-width one."""
    import numpy as np
    from scipy.stats import DegenerateDataWarning, bootstrap

    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(np.mean(values))
    if n < 2 or min(values) == max(values):
        return {"mean": mean, "low": mean, "high": mean, "n": n}
    with warnings.catch_warnings():  # nearly constant values: scipy warns, and the interval is the mean itself
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(
            (np.asarray(values, dtype=float),),
            np.mean,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=0.95,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        low = high = mean
    return {"mean": mean, "low": low, "high": high, "n": n}


def summarise(per_answer: list[dict], seed: int) -> dict[str, dict]:
    keys = [k for k in METRICS if any(k in a["metrics"] for a in per_answer)]
    return {k: mean_ci([a["metrics"][k] for a in per_answer if k in a["metrics"]], seed) for k in keys}


def paired_difference(a: list[dict], b: list[dict], metric: str, seed: int) -> dict | None:
    """Mean and 95% interval of (a - b) over the rows both systems have the metric for."""
    pairs = [(x["metrics"][metric], y["metrics"][metric]) for x, y in zip(a, b, strict=True)]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    return mean_ci([x - y for x, y in pairs], seed) if pairs else None


def verdict(persona: str, adapter: list[dict], prompted: list[dict], seed: int) -> str:
    """One line: on which metrics the adapter beats, ties with or loses to the prompted base model. A difference
    counts only when its 95% interval excludes zero."""
    outcome = {"beats": [], "ties": [], "loses": []}
    for metric, (_, higher_is_better) in METRICS.items():
        if higher_is_better is None or metric.startswith("judge"):
            continue
        both = [
            (x, y) for x, y in zip(adapter, prompted, strict=True) if metric in x["metrics"] and metric in y["metrics"]
        ]
        if not both:
            continue
        diff = paired_difference([x for x, _ in both], [y for _, y in both], metric, seed)
        sign = 1 if higher_is_better else -1
        low, high = sorted((diff["low"] * sign, diff["high"] * sign))  # > 0: better for the adapter
        outcome["beats" if low > 0 else "loses" if high < 0 else "ties"].append(metric)
    parts = [f"{word} on {', '.join(names)}" for word, names in outcome.items() if names]
    return f"{persona}: adapter vs prompted base (n={len(adapter)}): " + ("; ".join(parts) or "nothing comparable")


# ----------------------------------------------------------------------------- held-out rows and answers (I/O)


def held_out_rows(data: Path, persona: str, limit: int, max_tokens: int) -> tuple[Path, list[dict]]:
    if any((data / f"{name}.jsonl").exists() for name in ("train", "valid", "test")):
        raise InputError(
            f"--data {data} is one persona's split folder; pass the folder that holds the persona folders: "
            f"--data {data.parent}"
        )
    folder = split_dir(data, persona, max_tokens)
    for newer in other_budgets(data, persona, max_tokens):
        log.warning("%s is newer than %s/: trimmed with another --max-tokens? Pass --max-seq-length", newer, folder)
    path = folder / "test.jsonl" if (folder / "test.jsonl").exists() else folder / "valid.jsonl"
    if not path.exists():
        raise InputError(f"no held-out rows for {persona}: {path} is missing; run split_data.py first")
    rows = [row for _, row in read_jsonl(path)]
    return path, rows[:limit] if limit else rows


def row_keys(rows: list[dict]) -> list[str]:
    """Each held-out row's key in --answers files: its meta.key, or "#<index>" without one. A key that comes
    again (a section the data holds twice, with two reference answers) is followed by "~2", "~3", ..."""
    keys, seen = [], {}
    for index, row in enumerate(rows):
        key = (row.get("meta") or {}).get("key") or f"#{index}"
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}~{seen[key]}")
    return keys


def read_answers(
    paths: list[Path], held_out: dict[str, list[dict]], generated: list[str]
) -> tuple[dict[str, dict[str, list[dict]]], dict[str, dict[str, list[float]]]]:
    """--answers files as {system: {persona: [answer per held-out row]}}, and the losses on the reference they
    carry (a run's own answers.jsonl does) as {system: {persona: [loss per row]}}; every held-out row must be
    answered. A file may hold "base", "prompted" or "adapter" answers (a run's own answers.jsonl, scored again)
    as long as this run does not generate that system too."""
    found: dict[str, dict[str, dict[str, dict]]] = {}
    for path in paths:
        if not path.is_file():
            raise InputError(f"--answers {path}: no such file; give a JSONL file of answers (see evaluate.py --help)")
        for lineno, row in read_jsonl(path):
            where = f"{path}:{lineno}"
            if not isinstance(row.get("answer"), str) or row.get("persona") not in held_out or "key" not in row:
                raise InputError(
                    f'{where}: expected {{"system", "persona", "key", "answer"}} with a persona of '
                    f"{', '.join(held_out)}; see evaluate.py --help"
                )
            system = str(row.get("system") or path.stem)
            if system in generated:
                raise InputError(
                    f"{where}: system {system!r} is also generated by this run; leave it out of --systems "
                    "(`--systems` alone generates nothing) or name yours otherwise"
                )
            tokens, loss = row.get("tokens"), row.get("loss")
            entry = {"answer": row["answer"], "tokens": tokens if isinstance(tokens, int) else None}
            entry["loss"] = float(loss) if isinstance(loss, int | float) else None
            found.setdefault(system, {}).setdefault(row["persona"], {})[str(row["key"])] = entry
    answers, losses = {}, {}
    for system, by_persona in found.items():
        answers[system] = {}
        for persona, rows in held_out.items():
            keys = row_keys(rows)
            missing = [k for k in keys if k not in by_persona.get(persona, {})]
            if missing:
                raise InputError(
                    f"answers of {system!r} miss {len(missing)} of {len(keys)} held-out {persona} rows "
                    f"(first: {missing[0]!r}); answer every row, keyed by meta.key or #index"
                )
            entries = [by_persona[persona][k] for k in keys]
            answers[system][persona] = [{"answer": e["answer"], "tokens": e["tokens"]} for e in entries]
            if all(e["loss"] is not None for e in entries):
                losses.setdefault(system, {})[persona] = [e["loss"] for e in entries]
    return answers, losses


def answers_file_rows(answers: dict, losses: dict, held_out: dict[str, list[dict]]) -> list[dict]:
    """Every answer in the --answers format, with the system's loss on the reference where a model made it, so a
    run's answers can be scored again (loss included) or compared elsewhere."""
    rows = []
    for system, by_persona in answers.items():
        for persona, held in held_out.items():
            row_losses = losses.get(system, {}).get(persona) or [None] * len(held)
            for key, a, loss in zip(row_keys(held), by_persona[persona], row_losses, strict=True):
                entry = {"system": system, "persona": persona, "key": key, "answer": a["answer"]}
                rows.append({**entry, "tokens": a["tokens"], **({"loss": loss} if loss is not None else {})})
    return rows


# ----------------------------------------------------------------------------- the model systems


def prompted_messages(persona: Persona, messages: list[dict]) -> list[dict]:
    """The honest baseline: the base model told what the adapter learned, the persona and its answer format."""
    shape = "\n\n".join(f"**{f.label}:** ({f.words[0]}-{f.words[1]} words)" for f in persona.fields)
    system = f"{persona.instructions}\n\nAnswer in exactly this format, in plain prose:\n{shape}"
    return [{"role": "system", "content": system}, *[m for m in messages if m["role"] != "system"]]


def row_losses(model, tokenizer, rows: list[dict], max_seq_length: int) -> list[float]:
    """Loss per answer token of each row, prompt masked, with mlx_lm's own dataset and evaluate()."""
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import evaluate as mlx_evaluate

    losses = []
    for row in rows:
        dataset = CacheDataset(ChatDataset([row], tokenizer, mask_prompt=True))
        losses.append(float(mlx_evaluate(model, dataset, batch_size=1, num_batches=-1, max_seq_length=max_seq_length)))
    return losses


def run_system(persona_model, persona: Persona, system: str, rows: list[dict], settings: Settings, journal, progress):
    """One model system's answers to one persona's rows, and its loss on each reference answer. The answers the
    journal does not hold for the same model, adapter, prompt and settings are generated together, greedily, in
    batches (models.generate_batch), each journaled as it finishes."""
    conversations = [
        prompted_messages(persona, row["messages"]) if system == "prompted" else row["messages"] for row in rows
    ]
    adapter = settings.adapters / persona.name / ADAPTER_FILE
    keys = [
        fingerprint(
            system=system,
            model=settings.model,
            adapter=file_identity(adapter) if system == "adapter" else None,
            messages=messages[:-1],
            max_tokens=settings.max_tokens,
        )
        for messages in conversations
    ]
    made = {i: found for i, key in enumerate(keys) if (found := journal.get(key)) is not None}
    progress.update(len(made))
    todo = [i for i in range(len(rows)) if i not in made]

    def keep(j: int, text: str, tokens: int) -> None:
        made[todo[j]] = {"answer": text, "tokens": tokens}
        journal.add(keys[todo[j]], made[todo[j]])
        progress.update(1)

    persona_model.generate_batch(
        [conversations[i][:-1] for i in todo], settings.max_tokens, settings.batch_size, 0.0, on_answer=keep
    )
    answers = [{"answer": made[i]["answer"], "tokens": made[i]["tokens"]} for i in range(len(rows))]
    losses = row_losses(
        persona_model.model, persona_model.tokenizer, [{"messages": m} for m in conversations], settings.max_seq_length
    )
    return answers, losses


def model_answers(settings: Settings, personas, held_out: dict[str, list[dict]], journal) -> tuple[dict, dict]:
    """Answers and per-row losses of the model systems asked for, on a base model loaded once: base and prompted
    first, then one adapter swap per persona. Adapters are needed only when the adapter system is asked for."""
    from tqdm import tqdm

    if not settings.systems:
        return {}, {}
    names = [p.name for p in personas]
    configs = adapter_configs(settings.adapters, names, settings.model) if "adapter" in settings.systems else {}
    for name in configs:
        log.info("adapter %s: %s", name, kept_step(settings.adapters / name))
    persona_model = PersonaModel(settings.model, settings.adapters, configs)
    answers, losses = {}, {}
    total = len(settings.systems) * sum(len(rows) for rows in held_out.values())
    with tqdm(total=total, desc="generate", unit="answer") as progress:
        for system in settings.systems:
            answers[system], losses[system] = {}, {}
            for persona in personas:
                if system == "adapter":
                    persona_model.use(persona.name)
                answers[system][persona.name], losses[system][persona.name] = run_system(
                    persona_model, persona, system, held_out[persona.name], settings, journal, progress
                )
    if journal.reused:
        log.info("%d answers taken from %s, made earlier with the same settings", journal.reused, journal.path)
    return answers, losses


# ----------------------------------------------------------------------------- LLM judge

JUDGE_OUTPUT_TOKENS = 64  # the verdict's JSON is about 20 tokens
JUDGE_INSTRUCTION = (
    "You judge two answers, A and B, to the same request about a section of a research paper. Judge two things "
    "separately. accuracy: which answer is more faithful to the section, with no claim the section does not "
    "support. style: which answer better fits this persona's rubric:\n{rubric}\n"
    'Reply with JSON {{"accuracy": "A" | "B" | "tie", "style": "A" | "B" | "tie"}} and nothing else.'
)


class Verdict(BaseModel):
    """The judge's answer for one ordered pair."""

    accuracy: Literal["A", "B", "tie"]
    style: Literal["A", "B", "tie"]


async def judge_pairs(teacher: Teacher, persona: Persona, pairs: list[tuple[str, str, str]]) -> dict[str, list[float]]:
    """Per pair, the adapter's score against the prompted base for accuracy and style. Each pair is judged twice,
    with A and B swapped, to cancel position bias; a tie or a split decision counts half. Calls are retried as
    step 2 retries them (teachers.retrying): only what the teacher calls retryable, waiting what the server asks."""
    system = JUDGE_INSTRUCTION.format(rubric=persona.instructions)
    scores = {"judge_accuracy": [], "judge_style": []}
    for prompt, prompted, adapter in pairs:
        totals = {"accuracy": 0.0, "style": 0.0}
        for first, second, adapter_is in ((prompted, adapter, "B"), (adapter, prompted, "A")):
            contents = f"Request:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}"
            async for attempt in retrying(teacher, max_retries=6):
                with attempt:
                    reply = await teacher.ask(system, contents, Verdict)
            decision = json.loads(reply.text or "{}")
            for aspect in totals:
                winner = str(decision.get(aspect) or "tie").strip()
                totals[aspect] += 0.5 if winner == "tie" else float(winner == adapter_is)
        scores["judge_accuracy"].append(totals["accuracy"] / 2)
        scores["judge_style"].append(totals["style"] / 2)
    return scores


def judge_cost(teacher: Teacher, pairs_count: int, prompt_chars: int) -> float:
    """Rough USD for 2 judge calls per pair: prompt and both answers in, a few tokens out (and the thinking a
    model that must think spends, billed as output)."""
    input_tokens = int(2 * (prompt_chars / 4 + pairs_count * 400))
    output_tokens = 2 * pairs_count * (20 + teacher.options.thinking_budget)
    return teacher.prices.cost(Usage(input=input_tokens, output=output_tokens))


def prepare_judge(held_out: dict, personas, settings: Settings) -> Teacher | None:
    """The judge, checked before any answer is generated: its settings, its key, that its server answers, and
    the user's yes to its estimated cost. None when the user declines (the report is made without it)."""
    model, base_url = TEACHERS[settings.judge].endpoint(settings.judge_model, settings.base_url)
    # Thinking off where the model allows it; gemini-2.5-pro must think, and its thoughts count as output.
    thinking = TEACHERS[settings.judge].least_thinking_budget(model)
    options = TeacherOptions(
        model=model,
        base_url=base_url,
        temperature=0.0,
        max_output_tokens=JUDGE_OUTPUT_TOKENS + thinking,
        thinking_budget=thinking,
        flags=FlagNames(teacher="--judge", model="--judge-model"),
    )
    teacher = make_teacher(settings.judge, options)
    alternatives = (
        "or judge with a local model and no key: --judge mlx --judge-model PATH_OR_HF_ID; or leave out --judge"
    )
    problem = teacher.problem() or teacher.key_problem(alternatives) or teacher.unreachable()
    if problem:
        raise InputError(f"the judge ({teacher.name}), before any answer was generated: {problem}")
    n_pairs = sum(len(held_out[p.name]) for p in personas)
    prompt_chars = sum(len(row["messages"][-2]["content"]) for p in personas for row in held_out[p.name])
    cost = judge_cost(teacher, n_pairs, prompt_chars)
    print(f"judge: {2 * n_pairs:,} {teacher.name} calls, estimated ${cost:.3f}", file=sys.stderr)
    if not settings.yes and input("run the judge? [y/N] ").strip().lower() != "y":
        log.info("no judge: the report is made without its scores")
        return None
    return teacher


def run_judge(teacher: Teacher, answers: dict, held_out: dict, personas) -> dict[str, dict[str, list[float]]]:
    """Judge scores per persona. An error about one pair leaves that persona without them; an error every call
    would meet (the server is down, the key is refused, the quota is spent) stops the run: answers are kept."""
    if not {"prompted", "adapter"} <= set(answers):
        log.warning("the judge compares the adapter with the prompted base: both systems are needed")
        return {}
    pairs = {
        p.name: [
            (row["messages"][-2]["content"], a["answer"], b["answer"])
            for row, a, b in zip(held_out[p.name], answers["prompted"][p.name], answers["adapter"][p.name], strict=True)
        ]
        for p in personas
    }

    async def judge_all():
        scores = {}
        try:
            for persona in personas:
                try:
                    scores[persona.name] = await judge_pairs(teacher, persona, pairs[persona.name])
                except Exception as e:
                    if teacher.classify(e) in (SYSTEMIC, DAILY_QUOTA) or connection_failure(e):
                        raise FatalAPIError(f"{teacher.name} at {teacher.url}: {teacher.facts(e).describe()}") from e
                    log.warning("judge failed for %s, reporting without it: %s: %s", persona.name, type(e).__name__, e)
        finally:
            await teacher.aclose()
        return scores

    return asyncio.run(judge_all())


# ----------------------------------------------------------------------------- report


def ci_text(stat: dict | None) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def render_markdown(results: dict) -> str:
    lines = [
        "# Adapter evaluation",
        "",
        f"Model {results['model']}, greedy decoding, seed {results['seed']}. Systems: "
        f"{', '.join(results['systems'])}. Each cell: mean [95% bootstrap interval]; n is the number of answers "
        "the metric applies to.",
        "",
        *[f"- {line}" for line in results["verdicts"]],
        "",
    ]
    for persona, r in results["personas"].items():
        systems = list(r["systems"])
        lines += [
            f"## {persona} ({r['rows']} held-out rows from {r['source']})",
            "",
            "| metric | " + " | ".join(systems) + " | n |",
            "|---|" + "---:|" * (len(systems) + 1),
        ]
        for key, (label, _) in METRICS.items():
            stats = [r["systems"][s]["summary"].get(key) for s in systems]
            if any(stats):
                n = max((st["n"] for st in stats if st), default=0)
                lines.append(f"| {label} | " + " | ".join(ci_text(st) for st in stats) + f" | {n} |")
        flags = {s: r["systems"][s]["flags"] for s in systems}
        described = {s: ", ".join(f"{n} {flag}" for flag, n in sorted(f.items())) or "none" for s, f in flags.items()}
        lines += ["", "Flagged answers: " + "; ".join(f"{s}: {text}" for s, text in described.items()), ""]
    return "\n".join(lines)


def write_charts(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    personas = list(results["personas"])
    systems = results["systems"]
    for key, (label, _) in METRICS.items():
        if not any(key in results["personas"][p]["systems"][s]["summary"] for p in personas for s in systems):
            continue
        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(systems)
        for k, system in enumerate(systems):
            stats = [results["personas"][p]["systems"][system]["summary"].get(key) for p in personas]
            means = [st["mean"] if st and st["mean"] is not None else 0.0 for st in stats]
            errors = [
                [m - st["low"] if st and st["mean"] is not None else 0.0 for m, st in zip(means, stats, strict=True)],
                [st["high"] - m if st and st["mean"] is not None else 0.0 for m, st in zip(means, stats, strict=True)],
            ]
            xs = [x + (k - (len(systems) - 1) / 2) * width for x in range(len(personas))]
            ax.bar(xs, means, width=width, yerr=errors, capsize=3, label=system)
        ns = [
            max(
                (s.get(key) or {}).get("n", 0)
                for s in (results["personas"][p]["systems"][x]["summary"] for x in systems)
            )
            for p in personas
        ]
        ax.set_xticks(range(len(personas)), [f"{p}\n(n={n})" for p, n in zip(personas, ns, strict=True)])
        ax.set_title(f"{label}, 95% bootstrap intervals")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(systems), frameon=False)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100, metadata={"Software": None})  # no version string: reruns give identical bytes
        plt.close(fig)
        charts.append(path)
    return charts


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=default_model_help())
    p.add_argument(
        "--adapters",
        type=Path,
        default=Path("adapters"),
        help="folder with one trained adapter per persona, adapters/<persona>/ (default: %(default)s)",
    )
    p.add_argument("--data", type=Path, default=Path("data"), help="folder of split data (default: %(default)s)")
    p.add_argument(
        "--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="persona definitions (default: personas.toml)"
    )
    p.add_argument("--personas", nargs="+", metavar="NAME", help="which personas (default: all in the personas file)")
    p.add_argument(
        "--systems",
        nargs="*",
        choices=MODEL_SYSTEMS,
        default=list(MODEL_SYSTEMS),
        help="model systems to generate answers with; none with --answers scores only the files (default: all)",
    )
    p.add_argument("--answers", nargs="+", type=Path, default=[], metavar="FILE", help="answers made elsewhere")
    p.add_argument("--limit", type=int, default=50, help="held-out rows per persona; 0 = all (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per generated answer (default: %(default)s)")
    p.add_argument(
        "--max-seq-length",
        type=int,
        default=MAX_TOKENS,
        help="the token budget the data was trimmed to: reads data/{persona}_N/ and bounds the loss "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="answers decoded together; greedy answers are the same at any size (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="folder for eval.md, eval.json, answers.jsonl and the charts (default: %(default)s)",
    )
    p.add_argument(
        "--judge",
        choices=ASKING_TEACHERS,
        help="also ask a teacher (as in sdg.py --teacher) which answer is more accurate and in style",
    )
    p.add_argument("--judge-model", help="the judge's model (default: gemini-2.5-flash for gemini)")
    p.add_argument(
        "--base-url",
        help="the judge's endpoint: Gemini-compatible (env GEMINI_BASE_URL) or OpenAI-compatible (env OPENAI_BASE_URL)",
    )
    p.add_argument("--yes", action="store_true", help="run the judge without asking to confirm its cost")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def evaluate_persona(persona: Persona, rows: list[dict], answers: dict, losses: dict, settings: Settings) -> dict:
    """Every system's scored answers for one persona, their summaries and what was flagged."""
    systems = {}
    for system, by_persona in answers.items():
        scored = score_answers(persona, rows, by_persona[persona.name], settings.max_tokens)
        for entry, loss in zip(scored, losses.get(system, {}).get(persona.name, [None] * len(scored)), strict=True):
            if loss is not None:
                entry["metrics"]["loss"] = loss
        counts: dict[str, int] = {}
        for entry in scored:
            for flag in flagged(entry):
                counts[flag] = counts.get(flag, 0) + 1
        systems[system] = {"scored": scored, "summary": summarise(scored, settings.seed), "flags": counts}
    return systems


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = settings_from(Settings, parser.parse_args(argv))
    setup_logging(settings.verbose)
    stop_on_sigterm()
    if not settings.systems and not settings.answers:
        parser.error("nothing to evaluate: give --systems, or --answers FILE")
    if settings.judge and not settings.yes and not sys.stdin.isatty():
        parser.error("--judge asks before it spends, and there is no terminal to ask: add --yes to confirm the cost")
    if problem := unwritable(settings.out, "--out", folder=True):
        die(problem)
    started = time.monotonic()
    # Kept across runs: a later run with other systems or personas reuses what the same settings made before.
    journal = AnswerJournal(settings.out / "answers.journal.jsonl")
    try:
        personas = select(load_personas(settings.personas_file), settings.personas, settings.personas_file)
        needs_model = bool(settings.systems)
        settings = dataclasses.replace(
            settings,
            model=settings.model or (default_model() if needs_model else "-"),
            personas=[p.name for p in personas],
        )
        sources = {
            p.name: held_out_rows(settings.data, p.name, settings.limit, settings.max_seq_length) for p in personas
        }
        held_out = {name: rows for name, (_, rows) in sources.items()}
        outside, outside_losses = read_answers(settings.answers, held_out, settings.systems)
        judge = prepare_judge(held_out, personas, settings) if settings.judge else None
        answers, losses = model_answers(settings, personas, held_out, journal)
    except InputError as e:
        die(str(e))
    except KeyboardInterrupt:
        die(f"interrupted: the answers made so far are kept in {journal.path}; rerun the same command to resume")
    answers |= outside
    losses |= outside_losses
    try:
        judged = run_judge(judge, answers, held_out, personas) if judge else {}
    except FatalAPIError as e:
        die(f"the judge: {e}; the answers are kept in {journal.path}, and a rerun does not generate them again")
    results = report(settings, personas, sources, answers, losses, judged)
    write_json(settings.out / "eval.json", results)
    write_jsonl(settings.out / "answers.jsonl", answers_file_rows(answers, losses, held_out))
    with atomic_writer(settings.out / "eval.md") as f:
        f.write(render_markdown(results))
    charts = write_charts(results, settings.out)
    for line in results["verdicts"]:
        print(line)
    total = sum(len(rows) for rows in held_out.values())
    reused = f", {journal.reused:,} answers from an earlier run" if journal.reused else ""
    print(
        f"done: {len(personas)} personas x {len(answers)} systems, {total:,} held-out rows{reused}, {len(charts)} "
        f"charts in {time.monotonic() - started:,.1f} s -> {settings.out}/eval.md, eval.json, answers.jsonl"
    )
    return 0


def report(settings: Settings, personas, sources: dict, answers: dict, losses: dict, judged: dict) -> dict:
    """The results every output is made from: per persona, each system's scored answers and summaries."""
    results = {"model": settings.model, "seed": settings.seed, "systems": list(answers), "personas": {}, "verdicts": []}
    for persona in personas:
        source, rows = sources[persona.name]
        systems = evaluate_persona(persona, rows, answers, losses, settings)
        for metric, values in judged.get(persona.name, {}).items():
            systems["adapter"]["summary"][metric] = mean_ci(values, settings.seed)
        if {"adapter", "prompted"} <= set(systems):
            results["verdicts"].append(
                verdict(persona.name, systems["adapter"]["scored"], systems["prompted"]["scored"], settings.seed)
            )
        results["personas"][persona.name] = {"source": str(source), "rows": len(rows), "systems": systems}
    return results


if __name__ == "__main__":
    sys.exit(main())
