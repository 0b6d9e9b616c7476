"""The teacher models behind step 2 and evaluate.py's judge, behind one interface.

A teacher is given the system instructions, the unit's text and the response schema (a pydantic model) and
returns a Reply: the answer's text, the finish reason, the usage and the model version; or it raises an error
that its classify() sorts into the four kinds a caller acts on differently (a retry fixes it; it is about this
one request; every request would fail the same way; the quota is spent). Rate limits, retries, the quality
gate, resume, the lock, the ledger and orphans sit above, in sdg.py, the same for every teacher.

    gemini   Gemini's online API through google-genai (the default)
    openai   any OpenAI-compatible chat completions server: vLLM, llama.cpp, Ollama, LM Studio, OpenAI
    mlx      a local model in this process through mlx_lm, constrained to the schema by llguidance: no key
The Gemini Batch API (--teacher gemini-batch) is a way of running, not a way of asking: it lives in
gemini_batch.py and turns Gemini's batch results into the same Replies.
"""

import json
import os
import random
import re
from dataclasses import astuple, dataclass
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

    def __init__(self, message: str, quota: bool = False):
        super().__init__(message)
        self.quota = quota  # the quota is spent: the fix is to wait or pay, not to change a setting


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


def url_problem(base_url: str, example_scheme: str = "https") -> str | None:
    """Why --base-url cannot be an endpoint (no http(s) scheme, or no host), or None."""
    url = urlparse(base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        return f"--base-url {base_url!r} is not an http(s) URL; write it in full, e.g. {example_scheme}://{base_url}"
    return None


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


def is_retryable(error: BaseException) -> bool:
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return error.code in RETRYABLE_STATUS
    return isinstance(error, (TimeoutError, OSError)) or type(error).__module__.startswith(("httpx", "aiohttp"))


def wait_for(retry_state, facts=None) -> float:
    """The delay the server asks for when it gives one (Gemini's RetryInfo, a Retry-After header), else
    exponential backoff with full jitter (1 s .. 60 s), as for a bare 429. A spent daily quota never gets here:
    classify() stops the run. `facts` reads an error of the teacher in use (default: Gemini's)."""
    error = retry_state.outcome.exception()
    asked = (facts or error_facts)(error).retry_delay_s
    if asked is not None:
        return min(asked, MAX_RETRY_WAIT_S) + random.uniform(0, 1)
    return random.uniform(0, min(60.0, 2.0**retry_state.attempt_number))


# ----------------------------------------------------------------------------- the interface every teacher has

MIN_STRING_CHARS = 40  # the quality gate's floor for an answer field; a constrained local model is held to it


@dataclass
class Usage:
    """Tokens one request used. Thinking (reasoning) tokens are billed as output but counted apart."""

    input: int = 0
    output: int = 0
    thinking: int = 0
    cached: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input: float
    output: float
    cached: float

    def cost(self, usage: Usage) -> float:
        fresh = usage.input - usage.cached
        return (fresh * self.input + usage.cached * self.cached + (usage.output + usage.thinking) * self.output) / 1e6


GEMINI_PRICES = Prices(PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHED)
# The Batch API bills half the online price (ai.google.dev/gemini-api/docs/batch-mode).
GEMINI_BATCH_PRICES = Prices(PRICE_INPUT / 2, PRICE_OUTPUT / 2, PRICE_CACHED / 2)
FREE = Prices(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Reply:
    """One answer. `finish` is STOP, MAX_TOKENS, a block reason (SAFETY, CONTENT_FILTER, REFUSAL, ...) or the
    teacher's own word for anything else; `blocked_prompt` says the prompt itself was refused."""

    text: str
    finish: str
    usage: Usage
    blocked_prompt: str | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class TeacherOptions:
    """What a teacher is built from, read once from the command line by the script that uses it."""

    model: str
    base_url: str | None = None
    timeout: float = 120.0
    temperature: float = 0.7
    max_output_tokens: int = 2048
    thinking_budget: int = 0
    concurrency: int = 8  # mlx: the sequences decoded together


class Teacher:
    """The interface; one subclass per way of asking. A new teacher is one class here and its tests."""

    name = ""
    default_model = ""  # "" = --model is required
    base_url_env = ""  # the environment variable --base-url defaults to
    prices = FREE
    default_rpm = 0.0  # requests per minute when --rpm is not given; 0 = no client-side limit
    remote = True  # a network call, bounded by --timeout as a whole; a local model is not
    batch = False  # answers come back from a job later (gemini_batch.py), not from ask()
    fix_hint = "Fix the cause and rerun; finished rows are kept."
    quota_hint = "Rerun when the quota is restored; it resumes."

    def __init__(self, options: TeacherOptions):
        self.options = options

    @classmethod
    def endpoint(cls, model: str | None, base_url: str | None) -> tuple[str, str | None]:
        """The model and URL to use when the command line leaves them out: the teacher's default model ("" when
        it must be named), and its endpoint's environment variable."""
        from_env = os.environ.get(cls.base_url_env) if cls.base_url_env else None
        return model or cls.default_model, base_url or from_env

    def problem(self) -> str | None:
        """A setting every request would be refused for, found before the first one; None when all is well."""
        return None

    def key_problem(self) -> str | None:
        """What to do when the teacher needs a key and none is set; None when it needs none or has one."""
        return None

    async def ask(self, system: str, text: str, schema) -> Reply:
        raise NotImplementedError

    def facts(self, error: BaseException) -> ErrorFacts:
        return ErrorFacts(None, "", str(error) or type(error).__name__, "", (), None)

    def classify(self, error: BaseException) -> str:
        return PER_UNIT

    async def aclose(self) -> None:
        pass


def retrying(teacher: Teacher, max_retries: int, before_sleep=None, blocking: bool = False):
    """The one retry policy: only what the teacher calls retryable, waiting what the server asks, or backing off
    with jitter. Used by sdg.py (with its rate limiter inside each attempt), by evaluate.py's judge and, blocking,
    by gemini_batch.py's API calls."""
    import tenacity

    return (tenacity.Retrying if blocking else tenacity.AsyncRetrying)(
        stop=tenacity.stop_after_attempt(max_retries + 1),
        wait=lambda state: wait_for(state, teacher.facts),
        retry=tenacity.retry_if_exception(lambda e: teacher.classify(e) == RETRYABLE),
        before_sleep=before_sleep,
        reraise=True,
    )


# ----------------------------------------------------------------------------- gemini: the online API


class GeminiTeacher(Teacher):
    name = "gemini"
    default_model = DEFAULT_MODEL
    base_url_env = "GEMINI_BASE_URL"
    prices = GEMINI_PRICES
    default_rpm = 10.0  # the free tier
    fix_hint = (
        f"Fix the cause (GEMINI_API_KEY, --model e.g. {DEFAULT_MODEL}, --base-url, --thinking-budget) and rerun; "
        "finished rows are kept."
    )
    quota_hint = "Rerun after the daily reset (midnight Pacific time), or use a paid key; it resumes."

    def __init__(self, options: TeacherOptions):
        super().__init__(options)
        self.client = None  # built on first use: --dry-run and --help never need the key

    def problem(self) -> str | None:
        return settings_problem(self.options.model, self.options.thinking_budget, self.options.base_url)

    def key_problem(self) -> str | None:
        if api_key():
            return None
        return (
            "no API key: export GEMINI_API_KEY (get one at https://aistudio.google.com/apikey); or generate with a "
            "local model and no key: --teacher mlx --model PATH_OR_HF_ID; or use --dry-run"
        )

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


class GeminiBatchTeacher(GeminiTeacher):
    """Gemini through the Batch API: the same model, key and error classes, half the price. sdg.py runs it with
    gemini_batch.py instead of asking unit by unit."""

    name = "gemini-batch"
    prices = GEMINI_BATCH_PRICES
    default_rpm = 0.0
    batch = True

    async def ask(self, system: str, text: str, schema) -> Reply:
        raise NotImplementedError("gemini-batch answers through jobs (gemini_batch.py), never one request at a time")


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
    fix_hint = (
        "Fix the cause (is the server running at --base-url and serving --model? OPENAI_API_KEY?) and rerun; "
        "finished rows are kept."
    )
    quota_hint = "The account's quota or credit is spent: add credit or raise the limit, then rerun; it resumes."

    def __init__(self, options: TeacherOptions):
        super().__init__(options)
        self.client = None

    def problem(self) -> str | None:
        if not self.options.base_url:
            return (
                "--teacher openai needs --base-url, e.g. http://localhost:8000/v1 (vLLM) or https://api.openai.com/v1"
            )
        if url_problem(self.options.base_url, example_scheme="http"):
            return url_problem(self.options.base_url, example_scheme="http")
        if not self.options.model:
            return "--teacher openai needs --model: the name the server serves the model under"
        return None

    def key_problem(self) -> str | None:
        if "api.openai.com" in (self.options.base_url or "") and not os.environ.get(OPENAI_KEY_ENV):
            return f"no API key: export {OPENAI_KEY_ENV} (local servers such as vLLM or Ollama need none)"
        return None

    async def ask(self, system: str, text: str, schema) -> Reply:
        if self.client is None:
            from openai import AsyncOpenAI

            self.client = AsyncOpenAI(
                base_url=self.options.base_url,
                api_key=os.environ.get(OPENAI_KEY_ENV) or "no-key",  # local servers ignore it; the client needs one
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


# ----------------------------------------------------------------------------- mlx: a local model, no key


# A JSON string's content without escapes: no quote, no backslash, no control character, and not opening with a
# space. Rust regex syntax, which llguidance's lexer uses.
STRING_REGEX = r'/[^"\\\x00-\x20][^"\\\x00-\x1f]{%d,}/'


def lark_grammar(schema: dict, string_max_tokens: int, min_chars: int = MIN_STRING_CHARS) -> str:
    """An llguidance Lark grammar for the JSON a pydantic schema describes (objects of strings and string enums,
    as the answer and judge schemas are): keys in schema order, no whitespace between tokens (a weak model
    would emit whitespace until max_tokens), no extra keys, strings of at least `min_chars` characters starting
    with a non-space and of at most `string_max_tokens` tokens, with no escapes. The token caps add up to a bound
    on the whole answer, so it always closes before --max-output-tokens."""
    definitions = schema.get("$defs", {})
    rules: list[str] = []

    def literal(value: str) -> str:
        return json.dumps(value)  # a Lark string literal; JSON's escapes are Lark's

    def rule_for(node: dict) -> str:
        if "$ref" in node:
            node = definitions[node["$ref"].split("/")[-1]]
        slot = len(rules)
        rules.append("")  # reserve the slot, so nested rules get later numbers
        if "enum" in node:
            body = " | ".join(literal(json.dumps(value)) for value in node["enum"])
        elif node.get("type") == "object":
            members = [
                f"{literal(json.dumps(key) + ':')} {rule_for(value)}" for key, value in node["properties"].items()
            ]
            body = " ".join([literal("{"), f" {literal(',')} ".join(members), literal("}")])
        elif node.get("type") == "string":
            text = f"t{slot}"
            rules.append(f"{text}[max_tokens={string_max_tokens}]: {STRING_REGEX % (min_chars - 1)}")
            body = " ".join([literal('"'), text, literal('"')])
        else:
            raise ValueError(f"the mlx teacher cannot constrain a {node.get('type')!r} field yet")
        rules[slot] = f"r{slot}: {body}"
        return f"r{slot}"

    top = rule_for(schema)
    return "\n".join([f"start: {top}", *rules])


def string_fields(schema: dict) -> int:
    """Free-text fields in the schema: what the output budget is shared among."""
    definitions = schema.get("$defs", {})

    def count(node: dict) -> int:
        if "$ref" in node:
            node = definitions[node["$ref"].split("/")[-1]]
        if "enum" in node:
            return 0
        if node.get("type") == "object":
            return sum(count(value) for value in node["properties"].values())
        return 1

    return count(schema)


class SchemaConstraint:
    """An mlx_lm logits processor for one sequence: llguidance's matcher follows the tokens generated so far and
    masks every token the grammar forbids next. One per sequence, since it holds that sequence's parse state.

    llguidance's own llguidance.mlx needs Metal, so the mask is llguidance.numpy's bitmask applied with mx.where,
    which runs on every mlx backend."""

    def __init__(self, tokenizer, grammar: str, n_vocab: int, eos_ids: list[int]):
        import llguidance
        import llguidance.numpy

        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"llguidance rejected the grammar: {self.matcher.get_error()}")
        self.bitmask = llguidance.numpy.allocate_token_bitmask(1, n_vocab)
        self.eos_ids = eos_ids
        self.seen = None  # tokens of the context already given to the matcher

    def __call__(self, tokens, logits):
        import llguidance.numpy
        import mlx.core as mx
        import numpy as np

        if self.seen is None:
            self.seen = len(tokens)  # the first call sees the prompt only
        elif len(tokens) > self.seen:
            self.matcher.consume_tokens([int(t) for t in np.array(tokens[self.seen :])])
            self.seen = len(tokens)
        vocab = logits.shape[-1]
        if self.matcher.is_error():  # cannot happen with the mask applied; end the sequence rather than loop
            allowed = np.zeros(vocab, dtype=bool)
            allowed[self.eos_ids] = True
        else:
            llguidance.numpy.fill_next_token_bitmask(self.matcher, self.bitmask)
            allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")[:vocab].astype(bool)
        return mx.where(mx.array(allowed), logits, -mx.inf)


@dataclass
class Sequence:
    future: object
    prompt_tokens: int
    tokens: list


class MLXTeacher(Teacher):
    """A local model in this process: mlx_lm's BatchGenerator decodes every unit in flight together (up to
    --concurrency), each constrained to the schema by its own SchemaConstraint. Decoding steps run on the
    event loop between awaits, so sdg.py's machinery above is unchanged."""

    name = "mlx"
    remote = False
    fix_hint = "Fix the cause (--model must be an mlx_lm model folder or Hugging Face id) and rerun."

    def __init__(self, options: TeacherOptions):
        super().__init__(options)
        self.model = self.tokenizer = self.generator = None
        self.running: dict[int, Sequence] = {}
        self.driver = None
        self.grammars: dict[object, str] = {}

    def problem(self) -> str | None:
        if not self.options.model:
            return "--teacher mlx needs --model: an mlx_lm model folder or Hugging Face id"
        return None

    def load(self) -> None:
        """Load the model and its tokenizer for llguidance (once, on first use)."""
        import llguidance.hf
        import mlx_lm
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        try:
            self.model, self.tokenizer = mlx_lm.load(self.options.model)
        except Exception as e:  # a missing folder, no network for a hub id, an unsupported architecture
            raise FatalAPIError(f"cannot load {self.options.model!r} with mlx_lm: {type(e).__name__}: {e}") from e
        hf_tokenizer = self.tokenizer._tokenizer
        # The mask must cover every logit: the model's output layer can be larger than the tokenizer's vocabulary.
        self.eos_ids = sorted(self.tokenizer.eos_token_ids)
        self.n_vocab = max(len(hf_tokenizer), self.model_vocab())
        try:
            self.lltokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=self.n_vocab, eos_token=self.eos_ids)
        except ValueError as e:  # llguidance reads the Rust tokenizer of a "fast" Hugging Face tokenizer only
            raise FatalAPIError(f"{self.options.model}: llguidance cannot use its tokenizer ({e})") from e
        self.generator = BatchGenerator(
            self.model,
            max_tokens=self.options.max_output_tokens,
            stop_tokens=[[t] for t in self.eos_ids],
            sampler=make_sampler(temp=self.options.temperature),
            completion_batch_size=self.options.concurrency,
            prefill_batch_size=min(8, self.options.concurrency),
        )

    def model_vocab(self) -> int:
        args = getattr(self.model, "args", None)
        return int(getattr(args, "vocab_size", 0) or 0)

    def grammar(self, schema) -> str:
        """The schema's grammar, built and converted for llguidance once per schema."""
        from llguidance import LLMatcher

        if schema not in self.grammars:
            json_schema = schema.model_json_schema()
            fields = string_fields(json_schema)
            skeleton = len(self.tokenizer.encode(json.dumps(json_schema.get("properties", {})))) + 16
            per_field = (self.options.max_output_tokens - skeleton) // max(1, fields)
            if fields and per_field < MIN_STRING_CHARS:  # a token is a character at least, so 40 always fit
                raise FatalAPIError(
                    f"--max-output-tokens {self.options.max_output_tokens} leaves {per_field} tokens for each of "
                    f"{fields} answer fields; give at least {skeleton + fields * MIN_STRING_CHARS}"
                )
            self.grammars[schema] = LLMatcher.grammar_from_lark(lark_grammar(json_schema, per_field))
        return self.grammars[schema]

    async def ask(self, system: str, text: str, schema) -> Reply:
        import asyncio

        if self.model is None:
            self.load()
        prompt = self.prompt(system, text)
        constraint = SchemaConstraint(self.lltokenizer, self.grammar(schema), self.n_vocab, self.eos_ids)
        (uid,) = self.generator.insert([prompt], logits_processors=[[constraint]])
        sequence = Sequence(asyncio.get_running_loop().create_future(), len(prompt), [])
        self.running[uid] = sequence
        if self.driver is None or self.driver.done():
            self.driver = asyncio.create_task(self.drive())
        try:
            finish = await sequence.future
        except asyncio.CancelledError:
            self.generator.remove([uid])
            self.running.pop(uid, None)
            raise
        usage = Usage(input=sequence.prompt_tokens, output=len(sequence.tokens))
        return Reply(self.tokenizer.decode(sequence.tokens), finish, usage, model_version=self.options.model)

    def prompt(self, system: str, text: str) -> list[int]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception:  # a chat template without a system role (Gemma's, for one): the instructions lead the turn
            merged = [{"role": "user", "content": f"{system}\n\n{text}"}]
            return self.tokenizer.apply_chat_template(merged, add_generation_prompt=True)

    async def drive(self) -> None:
        """Step the batch while any sequence runs; each step decodes one token of every sequence in flight. An
        error in a step fails every sequence waiting on it, so no caller waits for ever."""

        try:
            await self.decode()
        except Exception as e:
            for sequence in self.running.values():
                if not sequence.future.done():
                    sequence.future.set_exception(e)
            self.running.clear()

    async def decode(self) -> None:
        import asyncio

        while self.running:
            for response in self.generator.next_generated():
                sequence = self.running.get(response.uid)
                if sequence is None:
                    continue
                if response.finish_reason != "stop":  # the stop token itself is not part of the answer
                    sequence.tokens.append(response.token)
                if response.finish_reason:
                    del self.running[response.uid]
                    if not sequence.future.done():
                        sequence.future.set_result("STOP" if response.finish_reason == "stop" else "MAX_TOKENS")
            await asyncio.sleep(0)  # let new units join the batch

    async def aclose(self) -> None:
        if self.generator is not None:
            self.generator.close()


TEACHERS = {teacher.name: teacher for teacher in (GeminiTeacher, GeminiBatchTeacher, OpenAITeacher, MLXTeacher)}
ASKING_TEACHERS = sorted(name for name, teacher in TEACHERS.items() if not teacher.batch)  # what a judge can use


def make_teacher(name: str, options: TeacherOptions) -> Teacher:
    return TEACHERS[name](options)
