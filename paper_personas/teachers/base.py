"""The interface every teacher has, the four kinds of error a caller acts on, and the one retry policy.

A teacher is given the system instructions, the unit's text and the response schema (a pydantic model) and
returns a Reply: the answer's text, the finish reason, the usage and the model version; or it raises an error
that its classify() sorts into the four kinds a caller acts on differently (a retry fixes it; it is about this
one request; every request would fail the same way; the quota is spent). Rate limits, retries, the quality
gate, resume, the lock, the ledger and orphans sit above, in sdg.py, the same for every teacher."""

import abc
import os
import random
import socket
import ssl
from dataclasses import astuple, dataclass
from urllib.parse import urlparse

MAX_RETRY_WAIT_S = 300.0  # the longest a server's asked-for retry delay is honoured
# What a caller does about an error: retry it; record this one unit; stop the run; stop and wait for the quota.
RETRYABLE, PER_UNIT, SYSTEMIC, DAILY_QUOTA = "retryable", "per_unit", "systemic", "daily_quota"
# Connection refused, an unknown host, a failed TLS handshake: retried this many times, not --max-retries, since
# a server that is down or a wrong URL fails every request the same way (a timeout is weather and keeps its retries).
UNREACHABLE_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5.0


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


def connection_failure(error: BaseException | None) -> bool:
    """The server could not be reached at all: nothing listens there, the host is unknown, or TLS failed. Read
    through the chain of causes, since each client wraps the socket's error in its own (openai's
    APIConnectionError around httpx's ConnectError around ConnectionRefusedError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ConnectionRefusedError | socket.gaierror | ssl.SSLError):
            return True
        if type(error).__name__ in ("ConnectError", "ClientConnectorError"):  # httpx and httpcore, aiohttp
            return True
        error = error.__cause__ or error.__context__
    return False


def unreachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at url's host and port (a TCP connection is all it tries: no request, no cost), or
    None. Skipped behind a proxy, where only the proxy is reached directly."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as e:
        return f"cannot reach {url} ({e.strerror or type(e).__name__}): is the server running, and is the URL right?"
    return None


def wait_for(retry_state, facts) -> float:
    """The delay the server asks for when it gives one (Gemini's RetryInfo, a Retry-After header), else
    exponential backoff with full jitter (1 s .. 60 s), as for a bare 429. A spent daily quota never gets here:
    classify() stops the run. `facts` reads an error of the teacher in use."""
    error = retry_state.outcome.exception()
    asked = facts(error).retry_delay_s
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
class FlagNames:
    """How the script that builds a teacher spells the flags a teacher's messages name: sdg.py's by default,
    evaluate.py's judge its own (--judge, --judge-model), so every message names a flag the user can pass."""

    teacher: str = "--teacher"
    model: str = "--model"


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
    flags: FlagNames = FlagNames()


class Teacher(abc.ABC):
    """The interface; one subclass per provider, each implementing ask(). A new teacher is one class, its
    TEACHERS entry (teachers/__init__.py) and its tests; keys, retries, rate limits and resume are handled once,
    here and above."""

    name = ""
    default_model = ""  # "" = --model is required
    base_url_env = ""  # the environment variable --base-url defaults to
    prices = FREE
    default_rpm = 0.0  # requests per minute when --rpm is not given; 0 = no client-side limit
    remote = True  # a network call, bounded by --timeout as a whole; a local model is not
    default_url = ""  # where requests go without --base-url
    key_env_vars: tuple[str, ...] = ()  # where the API key is read from, the first set wins; () = no key
    key_help = ""  # where a user gets a key, or why one may need none
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

    @classmethod
    def least_thinking_budget(cls, model: str) -> int:
        """The smallest thinking budget `model` accepts, for a caller with no --thinking-budget flag (evaluate.py's
        judge): 0, thinking off, unless the model must think."""
        return 0

    # ----------------------------------------------------------------------------- before the first request

    def problem(self) -> str | None:
        """A setting every request would be refused for, found before the first one; None when all is well."""
        return None

    @property
    def needs_key(self) -> bool:
        return bool(self.key_env_vars)

    def api_key(self) -> str | None:
        """The key, from the environment only: never a flag, never printed, never written."""
        return next((os.environ[name] for name in self.key_env_vars if os.environ.get(name)), None)

    def key_problem(self, alternatives: str = "") -> str | None:
        """What to do when the teacher needs a key and none is set; None when it needs none or has one.
        `alternatives` is the calling script's own way around it, in its own flags."""
        if not self.needs_key or self.api_key():
            return None
        help_text = f" ({self.key_help})" if self.key_help else ""
        return f"no API key: export {self.key_env_vars[0]}{help_text}" + (f"; {alternatives}" if alternatives else "")

    @property
    def url(self) -> str:
        return self.options.base_url or self.default_url

    def unreachable(self) -> str | None:
        """Why the teacher's server cannot be reached, found before the first request; None when it can be (or
        when the teacher runs in this process)."""
        problem = unreachable(self.url) if self.remote and self.url else None
        return f"{problem} Check --base-url" if problem else None

    def preflight(self, alternatives: str = "") -> str | None:
        """The one check before the first request, for step 2 and the judge alike: a setting every request would
        be refused for, a missing key, a server that does not answer. None: go ahead."""
        return self.problem() or self.key_problem(alternatives) or self.unreachable()

    def prepare(self) -> None:
        """What must be ready before the first request (a local model, loaded); raises FatalAPIError if it cannot
        be, before anything is sent or counted."""
        return None  # a remote teacher has nothing to prepare

    # ----------------------------------------------------------------------------- asking

    @abc.abstractmethod
    async def ask(self, system: str, text: str, schema) -> Reply:
        """One request: the system instructions, the text, the response schema (a pydantic model)."""

    def activity(self) -> dict[str, str]:
        """What the teacher is doing now, for the progress bar (a local model's tokens per second)."""
        return {}

    def facts(self, error: BaseException) -> ErrorFacts:
        return ErrorFacts(None, "", str(error) or type(error).__name__, "", (), None)

    def classify(self, error: BaseException) -> str:
        return PER_UNIT

    async def aclose(self) -> None:
        return None  # a teacher without a client or a model to release


def run_stopper(teacher: Teacher, error: BaseException) -> FatalAPIError | None:
    """The error to stop a whole run with, when this one is an error every request would meet: a spent quota, a
    refusal of the settings or the key, a server that cannot be reached; None when it is about one request.
    Step 2, the Batch API's calls and evaluate.py's judge all stop on exactly these."""
    kind, facts = teacher.classify(error), teacher.facts(error)
    if kind == DAILY_QUOTA:
        daily = "daily " if any("PerDay" in q for q in facts.quota_ids) else ""
        return FatalAPIError(f"the {daily}quota is spent ({', '.join(facts.quota_ids)}): {facts.message}", quota=True)
    if kind == SYSTEMIC:
        return FatalAPIError(f"{teacher.name} refused the request: {facts.describe()}")
    if connection_failure(error):  # UNREACHABLE_ATTEMPTS in a row: the server went down or the URL is wrong
        return FatalAPIError(
            f"cannot reach {teacher.name} at {teacher.url} ({facts.describe()}) on {UNREACHABLE_ATTEMPTS} attempts "
            "in a row: is the server running? Check --base-url"
        )
    return None


def retrying(teacher: Teacher, max_retries: int, before_sleep=None, blocking: bool = False):
    """The one retry policy: only what the teacher calls retryable, waiting what the server asks, or backing off
    with jitter. Used by sdg.py (with its rate limiter inside each attempt), by evaluate.py's judge and, blocking,
    by the Batch API's calls (teachers/gemini_batch.py)."""
    import tenacity

    def unreachable_for_good(state) -> bool:
        return state.attempt_number >= UNREACHABLE_ATTEMPTS and connection_failure(state.outcome.exception())

    return (tenacity.Retrying if blocking else tenacity.AsyncRetrying)(
        stop=tenacity.stop_after_attempt(max_retries + 1) | unreachable_for_good,
        wait=lambda state: wait_for(state, teacher.facts),
        retry=tenacity.retry_if_exception(lambda e: teacher.classify(e) == RETRYABLE),
        before_sleep=before_sleep,
        reraise=True,
    )
