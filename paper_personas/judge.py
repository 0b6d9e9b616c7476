"""evaluate.py's optional LLM judge: the adapter's answer against the prompted base model's, both orders, accuracy
to the section and style judged apart, through the same teacher interface, pre-flight check, reply reading and
retry policy as step 2."""

import asyncio
import logging
import sys
from typing import Literal

from pydantic import BaseModel

from paper_personas.cli import InputError
from paper_personas.personas import Persona
from paper_personas.replies import parse_reply
from paper_personas.teachers import TEACHERS, make_teacher
from paper_personas.teachers.base import FlagNames, Teacher, TeacherOptions, Usage, retrying, run_stopper

log = logging.getLogger("evaluate")

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
            decision, problem = parse_reply(reply, Verdict)
            if decision is None:  # a reply cut short, blocked or off the schema: no decision, a tie
                log.debug("judge reply unusable (%s): counted as a tie", problem)
                decision = Verdict(accuracy="tie", style="tie")
            for aspect in totals:
                winner = getattr(decision, aspect)
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


def prepare_judge(held_out: dict, personas, settings) -> Teacher | None:
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
    if problem := teacher.preflight(alternatives):
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
                    if stop := run_stopper(teacher, e):
                        raise stop from e
                    log.warning("judge failed for %s, reporting without it: %s: %s", persona.name, type(e).__name__, e)
        finally:
            await teacher.aclose()
        return scores

    return asyncio.run(judge_all())
