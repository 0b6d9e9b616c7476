"""Any OpenAI-compatible chat completions server through the openai client (--teacher openai): vLLM,
llama.cpp, Ollama, LM Studio, OpenAI. Strict json_schema answers; OpenAI's and vLLM's error bodies classified."""

import json

from paper_personas.teachers.base import (
    DAILY_QUOTA,
    PER_UNIT,
    RETRYABLE,
    SYSTEMIC,
    ErrorFacts,
    Reply,
    Teacher,
    TeacherOptions,
    Usage,
    url_problem,
)

# ----------------------------------------------------------------------------- openai: any compatible server

OPENAI_KEY_ENV = "OPENAI_API_KEY"
# A 400 about a setting every request shares (the schema feature, the model, a parameter), not about the text.
# Not "model" alone: vLLM's "This model's maximum context length is ..." is about one long request.
OPENAI_SETTINGS_PHRASES = (
    "response_format",
    "json_schema",
    "does not exist",
    "unsupported parameter",
    "'max_tokens' is not supported",
)


def strict_json_schema(schema) -> dict:
    """The pydantic model's JSON schema as OpenAI's strict mode wants it: every object closed
    (additionalProperties false) and every property required."""

    def close(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                node["additionalProperties"] = False
                node["required"] = list(node.get("properties", {}))
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)
        return node

    return close(schema.model_json_schema())


class OpenAITeacher(Teacher):
    name = "openai"
    base_url_env = "OPENAI_BASE_URL"
    key_env_vars = (OPENAI_KEY_ENV,)
    key_help = "local servers such as vLLM or Ollama need none"
    fix_hint = (
        "Fix the cause (is the server running at --base-url and serving --model? OPENAI_API_KEY?) and rerun; "
        "finished rows are kept."
    )
    quota_hint = "The account's quota or credit is spent: add credit or raise the limit, then rerun; it resumes."

    def __init__(self, options: TeacherOptions):
        super().__init__(options)
        self.client = None

    def problem(self) -> str | None:
        flags = self.options.flags
        if not self.options.base_url:
            return (
                f"{flags.teacher} openai needs --base-url, e.g. http://localhost:8000/v1 (vLLM) or "
                "https://api.openai.com/v1"
            )
        if url_problem(self.options.base_url, example_scheme="http"):
            return url_problem(self.options.base_url, example_scheme="http")
        if not self.options.model:
            return f"{flags.teacher} openai needs {flags.model}: the name the server serves the model under"
        return None

    @property
    def needs_key(self) -> bool:
        return "api.openai.com" in (self.options.base_url or "")  # local servers take any key, or none

    async def ask(self, system: str, text: str, schema) -> Reply:
        if self.client is None:
            from openai import AsyncOpenAI

            self.client = AsyncOpenAI(
                base_url=self.options.base_url,
                api_key=self.api_key() or "no-key",  # local servers ignore it; the client needs one
                timeout=self.options.timeout,
                max_retries=0,  # our retry loop retries, so every attempt passes the rate limiter
            )
        response = await self.client.chat.completions.create(
            model=self.options.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": strict_json_schema(schema), "strict": True},
            },
            temperature=self.options.temperature,
            max_tokens=self.options.max_output_tokens,
        )
        return openai_reply(response)

    def facts(self, error: BaseException) -> ErrorFacts:
        body = getattr(error, "body", None)
        body = body if isinstance(body, dict) else {}
        delay = None
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None) or {}
        if headers.get("retry-after-ms", "").replace(".", "", 1).isdigit():
            delay = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after", "").replace(".", "", 1).isdigit():
            delay = float(headers["retry-after"])
        message = str(body.get("message") or getattr(error, "message", "") or error)
        if type(error).__name__ == "APIResponseValidationError" or isinstance(error, json.JSONDecodeError):
            message = f"the server's answer is not an OpenAI chat completion ({message}): is --base-url right?"
        return ErrorFacts(
            code=getattr(error, "status_code", None),
            status=str(body.get("type") or ""),
            message=message,
            reason=str(body.get("code") or ""),
            quota_ids=("insufficient_quota",) if body.get("code") == "insufficient_quota" else (),
            retry_delay_s=delay,
        )

    def classify(self, error: BaseException) -> str:
        import openai

        if isinstance(error, openai.APIStatusError):
            facts = self.facts(error)
            if facts.code == 429:
                return DAILY_QUOTA if facts.quota_ids else RETRYABLE
            if facts.code in (408, 409) or (facts.code or 0) >= 500:
                return RETRYABLE
            if facts.code in (401, 403, 404):
                return SYSTEMIC
            if any(phrase in facts.message.lower() for phrase in OPENAI_SETTINGS_PHRASES):
                return SYSTEMIC
            return PER_UNIT
        if isinstance(error, openai.APIConnectionError | TimeoutError):  # includes APITimeoutError
            return RETRYABLE
        if isinstance(error, openai.APIResponseValidationError | json.JSONDecodeError):
            return SYSTEMIC
        return PER_UNIT

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()


def openai_reply(response) -> Reply:
    usage = response.usage
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = (details and details.reasoning_tokens) or 0
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None) or 0
    counted = Usage(
        input=(usage and usage.prompt_tokens) or 0,
        output=max(0, ((usage and usage.completion_tokens) or 0) - reasoning),  # reasoning is inside completion
        thinking=reasoning,
        cached=cached,
    )
    if not response.choices:
        return Reply("", "NO_CHOICES", counted, model_version=response.model)
    choice = response.choices[0]
    if getattr(choice.message, "refusal", None):
        return Reply("", "REFUSAL", counted, model_version=response.model)
    finish = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "CONTENT_FILTER"}.get(
        choice.finish_reason or "stop", str(choice.finish_reason).upper()
    )
    return Reply(choice.message.content or "", finish, counted, model_version=response.model)
