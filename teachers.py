"""The teacher models behind step 2 and evaluate.py's judge: today Gemini's online API through google-genai.

What lives here is what every caller of Gemini must do alike: find the key, build the client, and decide which
errors a retry can fix and how long to wait. Rate limits, the quality gate and resume sit above, in sdg.py.
"""

import os
import random
import re

DEFAULT_MODEL = "gemini-2.5-flash"
# Gemini 2.5 Flash paid-tier prices, USD per million tokens (ai.google.dev/gemini-api/docs/pricing, 2025).
# Thinking tokens are billed as output.
PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHED = 0.30, 2.50, 0.03
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RETRY_WAIT_S = 300.0
KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


class FatalAPIError(Exception):
    """An error no retry can fix (bad key, unknown model): the run stops with this message."""


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
    details = getattr(error, "details", None)
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    for detail in details or []:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = re.match(r"^([\d.]+)s$", str(detail.get("retryDelay", "")))
            if match:
                return float(match[1])
    return None


def is_retryable(error: BaseException) -> bool:
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return error.code in RETRYABLE_STATUS
    return isinstance(error, (TimeoutError, OSError)) or type(error).__module__.startswith(("httpx", "aiohttp"))


def is_fatal(error) -> bool:
    """A bad key, missing permission or unknown model: every request would fail the same way."""
    bad_key = error.code == 400 and "api key" in str(error.message or "").lower()
    return bad_key or error.code in (401, 403, 404)


def wait_for(retry_state) -> float:
    """RetryInfo's delay when the server gives one, else exponential backoff with full jitter (1 s .. 60 s).

    A delay of hours means a daily quota is spent: waiting MAX_RETRY_WAIT_S at most lets the unit fail in
    bounded time, recorded for the next run, instead of stalling the run."""
    error = retry_state.outcome.exception()
    asked = retry_delay_from(error)
    if asked is not None:
        return min(asked, MAX_RETRY_WAIT_S) + random.uniform(0, 1)
    return random.uniform(0, min(60.0, 2.0**retry_state.attempt_number))
