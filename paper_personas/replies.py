"""Reading a teacher's reply, for step 2 and evaluate.py's judge alike: the finish reason (a block, a cut, a
refusal), the code fence some servers wrap JSON in, then the response schema; step 2 adds the quality gate."""

import re

from pydantic import BaseModel, ValidationError

from paper_personas.quality import answers_problem
from paper_personas.teachers.base import Reply

# Gemini's block reasons, and OpenAI's content filter and refusal.
BLOCK_REASONS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"} | {
    "CONTENT_FILTER",
    "REFUSAL",
}
# Servers that ignore the response schema often still answer JSON, wrapped in a Markdown code fence.
FENCE = re.compile(r"^\s*```(?:json)?[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def unfenced(text: str | None) -> str:
    match = FENCE.match(text or "")
    return match[1] if match else text or ""


def parse_reply(reply: Reply, schema) -> tuple[BaseModel | None, str | None]:
    """The reply as the schema's model, or the reason it is unusable. A reason starting with "blocked_prompt"
    means the prompt itself was refused: asking again is pointless."""
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
        return schema.model_validate_json(unfenced(reply.text)), None
    except ValidationError as e:
        return None, f"invalid_json:{e.errors()[0]['type']}"


def parse_answers(reply: Reply, schema, personas, section: str) -> tuple[BaseModel | None, str | None]:
    """Step 2's reading: the reply parsed, then held to the quality gate (quality.py) for this section."""
    answers, reason = parse_reply(reply, schema)
    if answers is None:
        return None, reason
    problem = answers_problem(answers, personas, section)
    return (None, problem) if problem else (answers, None)
