"""The teacher models behind step 2 and evaluate.py's judge: today Gemini's online API through google-genai.

What lives here is what every caller of Gemini must do alike: find the key, build the client, check the settings
the API would reject, and sort errors into the four kinds a caller acts on differently (a retry fixes it; it is
about this one request; every request would fail the same way; the daily quota is spent). Rate limits, the
quality gate and resume sit above, in sdg.py.
"""

import json
import os
import random
import re
from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_MODEL = "gemini-2.5-flash"
# Gemini 2.5 Flash paid-tier prices, USD per million tokens (ai.google.dev/gemini-api/docs/pricing, 2025).
# Thinking tokens are billed as output.
PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHED = 0.30, 2.50, 0.03
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RETRY_WAIT_S = 300.0
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

RETRYABLE, PER_UNIT, SYSTEMIC, DAILY_QUOTA = "retryable", "per_unit", "systemic", "daily_quota"


class FatalAPIError(Exception):
    """An error no retry can fix (bad key, unknown model, a spent daily quota): the run stops with this message."""


@dataclass(frozen=True)
class ErrorFacts:
    """What an API error says, read from the google.rpc body: code, status, message, and its details."""

    code: int | None
    status: str
    message: str
    reason: str  # ErrorInfo.reason, e.g. API_KEY_INVALID, SERVICE_DISABLED
    quota_ids: tuple[str, ...]  # QuotaFailure.violations[].quotaId
    retry_delay_s: float | None  # RetryInfo.retryDelay

    @property
    def signature(self) -> str:
        """Two failures with the same signature are the same failure."""
        return f"{self.code} {self.status} {self.reason} {self.message[:120]}"

    def describe(self) -> str:
        """The server's own words, as "404 NOT_FOUND: models/x is not found ..."."""
        head = " ".join(str(part) for part in (self.code, self.status) if part)
        return f"{head}: {self.message}" if head else self.message


def settings_problem(model: str, thinking_budget: int, base_url: str | None) -> str | None:
    """What the API would reject on every request, checked before the first one; None when all is well."""
    if base_url:
        url = urlparse(base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            return f"--base-url {base_url!r} is not an http(s) URL; write it in full, e.g. https://{base_url}"
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


def api_key() -> str | None:
    """The key from the environment only: never a flag, never printed, never written."""
    return next((os.environ[name] for name in KEY_ENV_VARS if os.environ.get(name)), None)


def make_client(timeout_s: float, base_url: str | None = None):
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        timeout=int(timeout_s * 1000),
        # Our own retry loop handles retries, so every attempt passes the client-side rate limiter.
        retry_options=types.HttpRetryOptions(attempts=1),
        **({"base_url": base_url} if base_url else {}),
    )
    return genai.Client(api_key=api_key(), http_options=options)


def retry_delay_from(error) -> float | None:
    """The wait a 429 asks for in its google.rpc.RetryInfo detail ("retryDelay": "7s"), if any."""
    return error_facts(error).retry_delay_s


def is_retryable(error: BaseException) -> bool:
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return error.code in RETRYABLE_STATUS
    return isinstance(error, (TimeoutError, OSError)) or type(error).__module__.startswith(("httpx", "aiohttp"))


def wait_for(retry_state) -> float:
    """RetryInfo's delay when the server gives one (a per-minute quota), else exponential backoff with full
    jitter (1 s .. 60 s), as for a bare 429. A spent daily quota never gets here: classify() stops the run."""
    error = retry_state.outcome.exception()
    asked = retry_delay_from(error)
    if asked is not None:
        return min(asked, MAX_RETRY_WAIT_S) + random.uniform(0, 1)
    return random.uniform(0, min(60.0, 2.0**retry_state.attempt_number))
