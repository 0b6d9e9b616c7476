"""Gemini's online API through google-genai (--teacher gemini, the default): settings checked before the first
request, google.rpc error bodies read for their reason, quota and retry delay."""

import json
import os
import re

from paper_personas.teachers.base import (
    DAILY_QUOTA,
    PER_UNIT,
    RETRYABLE,
    SYSTEMIC,
    ErrorFacts,
    Prices,
    Reply,
    Teacher,
    TeacherOptions,
    Usage,
    url_problem,
)

DEFAULT_MODEL = "gemini-2.5-flash"
# Gemini 2.5 Flash paid-tier prices, USD per million tokens (ai.google.dev/gemini-api/docs/pricing, 2025).
# Thinking tokens are billed as output.
PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHED = 0.30, 2.50, 0.03
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


# Thinking budgets each model accepts, from ai.google.dev/gemini-api/docs/thinking: (min, max, can be 0 = off).
# -1 (dynamic) is accepted by all. Longest prefix first: "gemini-2.5-flash-lite" before "gemini-2.5-flash".
THINKING_BUDGETS = {
    "gemini-2.5-flash-lite": (512, 24576, True),
    "gemini-2.5-flash": (1, 24576, True),
    "gemini-2.5-pro": (128, 32768, False),
}
# Phrases in a 400's message that say it is about the request's settings, which every request shares. Narrow on
# purpose: a 400 about one request's content can mention a "model-reference" docs URL. What these miss, the
# same failure on consecutive units catches (sdg.py).
SETTINGS_PHRASES = (
    "api key",
    "thinking",
    "location is not supported",
    "not found for api version",
    "not supported for generatecontent",
    "billing",
)


def settings_problem(model: str, thinking_budget: int, base_url: str | None) -> str | None:
    """What the API would reject on every request, checked before the first one; None when all is well."""
    if base_url and url_problem(base_url):
        return url_problem(base_url)
    prefix = next((p for p in THINKING_BUDGETS if model.startswith(p)), None)
    if prefix is None or thinking_budget == -1:
        return None
    low, high, can_disable = THINKING_BUDGETS[prefix]
    if thinking_budget == 0 and not can_disable:
        return f"{model} only works in thinking mode: pass --thinking-budget {low} or more (or -1, dynamic)"
    if thinking_budget != 0 and not low <= thinking_budget <= high:
        off = ", 0 to turn thinking off" if can_disable else ""
        return f"--thinking-budget {thinking_budget} is outside {model}'s range {low}-{high}{off}, or -1 (dynamic)"
    return None


def error_facts(error) -> ErrorFacts:
    details = getattr(error, "details", None)
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    reason, quota_ids, delay = "", [], None
    for detail in details if isinstance(details, list) else []:
        kind = str(detail.get("@type", "")) if isinstance(detail, dict) else ""
        if kind.endswith("google.rpc.ErrorInfo"):
            reason = str(detail.get("reason", ""))
        elif kind.endswith("google.rpc.QuotaFailure"):
            quota_ids += [str(v.get("quotaId", "")) for v in detail.get("violations", []) if isinstance(v, dict)]
        elif kind.endswith("google.rpc.RetryInfo"):
            match = re.match(r"^([\d.]+)s$", str(detail.get("retryDelay", "")))
            delay = float(match[1]) if match else None
    message = str(getattr(error, "message", "") or error)
    if isinstance(error, json.JSONDecodeError):
        message = f"the server's answer is not JSON ({error}): is --base-url a proxy or a login page?"
    return ErrorFacts(
        code=getattr(error, "code", None),
        status=str(getattr(error, "status", "") or ""),
        message=message,
        reason=reason,
        quota_ids=tuple(quota_ids),
        retry_delay_s=delay,
    )


def classify(error: BaseException) -> str:
    """RETRYABLE, PER_UNIT, SYSTEMIC or DAILY_QUOTA: what a caller should do about this error."""
    from google.genai import errors

    if not isinstance(error, errors.APIError):
        name = type(error).__name__
        if name in ("UnsupportedProtocol", "InvalidURL", "LocalProtocolError") or isinstance(
            error, json.JSONDecodeError
        ):
            return SYSTEMIC  # the URL is wrong, or something else answers there: so for every request
        return RETRYABLE if is_retryable(error) else PER_UNIT
    facts = error_facts(error)
    if facts.code == 429:
        return DAILY_QUOTA if any("PerDay" in q for q in facts.quota_ids) else RETRYABLE
    if facts.code in RETRYABLE_STATUS:
        return RETRYABLE
    if facts.code in (401, 403, 404) or facts.status == "FAILED_PRECONDITION" or facts.reason:
        return SYSTEMIC
    if facts.code == 400 and any(phrase in facts.message.lower() for phrase in SETTINGS_PHRASES):
        return SYSTEMIC
    return PER_UNIT


def make_client(timeout_s: float, base_url: str | None = None):
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        timeout=int(timeout_s * 1000),
        # Our own retry loop handles retries, so every attempt passes the client-side rate limiter.
        retry_options=types.HttpRetryOptions(attempts=1),
        **({"base_url": base_url} if base_url else {}),
    )
    key = next((os.environ[name] for name in KEY_ENV_VARS if os.environ.get(name)), None)
    return genai.Client(api_key=key, http_options=options)


def is_retryable(error: BaseException) -> bool:
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return error.code in RETRYABLE_STATUS
    return isinstance(error, (TimeoutError, OSError)) or type(error).__module__.startswith(("httpx", "aiohttp"))


GEMINI_PRICES = Prices(PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHED)


# ----------------------------------------------------------------------------- gemini: the online API


class GeminiTeacher(Teacher):
    name = "gemini"
    default_model = DEFAULT_MODEL
    base_url_env = "GEMINI_BASE_URL"
    default_url = "https://generativelanguage.googleapis.com"
    prices = GEMINI_PRICES
    default_rpm = 10.0  # the free tier
    key_env_vars = KEY_ENV_VARS
    key_help = "get one at https://aistudio.google.com/apikey"
    fix_hint = (
        f"Fix the cause (GEMINI_API_KEY, --model e.g. {DEFAULT_MODEL}, --base-url, --thinking-budget) and rerun; "
        "finished rows are kept."
    )
    quota_hint = "Rerun after the daily reset (midnight Pacific time), or use a paid key; it resumes."

    @classmethod
    def least_thinking_budget(cls, model: str) -> int:
        """0 where thinking can be turned off; gemini-2.5-pro cannot, and takes at least 128."""
        prefix = next((p for p in THINKING_BUDGETS if model.startswith(p)), None)
        if prefix is None or THINKING_BUDGETS[prefix][2]:
            return 0
        return THINKING_BUDGETS[prefix][0]

    def __init__(self, options: TeacherOptions):
        super().__init__(options)
        self.client = None  # built on first use: --dry-run and --help never need the key

    def problem(self) -> str | None:
        return settings_problem(self.options.model, self.options.thinking_budget, self.options.base_url)

    def config(self, system: str, schema):
        from google.genai import types

        return types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_schema=schema,
            temperature=self.options.temperature,
            max_output_tokens=self.options.max_output_tokens,
            thinking_config=types.ThinkingConfig(thinking_budget=self.options.thinking_budget),
        )

    async def ask(self, system: str, text: str, schema) -> Reply:
        if self.client is None:
            self.client = make_client(self.options.timeout, self.options.base_url)
        response = await self.client.aio.models.generate_content(
            model=self.options.model, contents=text, config=self.config(system, schema)
        )
        return gemini_reply(response)

    def facts(self, error: BaseException) -> ErrorFacts:
        return error_facts(error)

    def classify(self, error: BaseException) -> str:
        return classify(error)


def gemini_reply(response) -> Reply:
    """A GenerateContentResponse, online or from a batch, as a Reply."""
    meta = response.usage_metadata
    usage = Usage(
        input=(meta and meta.prompt_token_count) or 0,
        output=(meta and meta.candidates_token_count) or 0,
        thinking=(meta and meta.thoughts_token_count) or 0,
        cached=(meta and meta.cached_content_token_count) or 0,
    )
    version = getattr(response, "model_version", None)
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and feedback.block_reason:
        reason = str(getattr(feedback.block_reason, "value", feedback.block_reason))
        return Reply("", "BLOCKED_PROMPT", usage, blocked_prompt=reason, model_version=version)
    if not response.candidates:
        return Reply("", "NO_CANDIDATES", usage, model_version=version)
    candidate = response.candidates[0]
    finish = str(getattr(candidate.finish_reason, "value", candidate.finish_reason) or "STOP")
    if finish == "FINISH_REASON_UNSPECIFIED":
        finish = "STOP"
    return Reply(response.text or "", finish, usage, model_version=version)
