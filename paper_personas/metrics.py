"""evaluate.py's metrics on one answer, pure: topicality (BM25), copying, degenerate answers, format, ROUGE-L and
the style checks personas.toml asks for. What each one means is in METRICS, the table every report is built from."""

import logging
import re

from paper_personas.personas import Persona, section_text
from paper_personas.quality import copy_share, degenerate_reasons, words

COPY_RUN_WORDS = 8  # a run of 8 words taken verbatim is copying, not a shared phrase
COPY_FLAG = 0.5  # an answer with half its words in copied runs is a copy
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
