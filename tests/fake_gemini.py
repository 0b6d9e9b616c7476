"""A loopback stand-in for the Gemini REST API's generateContent, as the real google-genai client calls it:
POST {base}/v1/models/{model}:generateContent (or /v1beta/) with x-goog-api-key, answering candidates with
finishReason, text and thought parts, a full usageMetadata, responseId and modelVersion, or the google.rpc error
bodies the real service sends (copied from real answers quoted in public bug reports):
  400 INVALID_ARGUMENT with ErrorInfo API_KEY_INVALID (bad key); "Budget 0 is invalid. This model only works in
      thinking mode." (gemini-2.5-pro at thinking budget 0) and "The thinking budget (N) is invalid."
  400 FAILED_PRECONDITION "User location is not supported for the API use."
  403 PERMISSION_DENIED with ErrorInfo SERVICE_DISABLED; 404 NOT_FOUND for an unknown model
  429 RESOURCE_EXHAUSTED with QuotaFailure (a per-minute quotaId and RetryInfo, or a per-day one with a short
      RetryInfo, as real daily quotas answer), or bare, with no details at all
  500 INTERNAL, 503 UNAVAILABLE; and a 200 whose body is a proxy's HTML login page
and the Batch API as google-genai's client.files and client.batches call it, on v1 and v1beta: the resumable
upload (POST upload/v1beta/files answering x-goog-upload-url, then "upload, finalize" to that loopback URL),
models/{model}:batchGenerateContent, batches/{id} moving PENDING -> RUNNING -> SUCCEEDED (or FAILED, CANCELLED,
EXPIRED), batches (list), batches/{id}:cancel and files/{id}:download?alt=media. Each request line is answered as
generateContent answers it, keys in camelCase or snake_case as the real API accepts both, and the results file
lists the lines in shuffled order, as real results may come.

    $ python tests/fake_gemini.py --port 8765 --latency 2 --rate-429 0.05   # for bench/ and make smoke
"""

import argparse
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from helpers import Loopback, QuietHandler

FAULT_KINDS = (
    "rate_429",
    "bare_429",
    "rate_500",
    "rate_503",
    "bad_request",
    "malformed_json",
    "safety",
    "max_tokens",
    "empty_candidates",
    "finish_other",
)
QUALITY_FAULTS = ("refusal", "wrong_language", "repeated_label", "copied")  # answers the gate must reject
KNOWN_MODELS = {"gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"}
THINKING = {"gemini-2.5-pro": (128, 32768, False), "gemini-2.5-flash": (1, 24576, True)}
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: "
    "generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: {limit}, model: {model}\n"
    "Please retry in {delay}s."
)
HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}


@dataclass
class Faults:
    """Probabilities per request; whatever is left over answers normally."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    malformed_json: float = 0.0
    safety: float = 0.0
    max_tokens: float = 0.0
    empty_candidates: float = 0.0
    bad_request: float = 0.0  # a 400 INVALID_ARGUMENT about this one request
    bare_429: float = 0.0  # a 429 with no details, as some real ones are
    finish_other: float = 0.0  # finishReason OTHER
    refusal: float = 0.0
    wrong_language: float = 0.0
    repeated_label: float = 0.0
    copied: float = 0.0
    retry_delay_s: float = 0.2  # what a 429's RetryInfo asks for
    latency_s: float = 0.0
    jitter_s: float = 0.0
    # Whole-service states: every request gets the same answer.
    daily_quota_after: int | None = None  # after this many answers, the per-day quota is spent
    location_blocked: bool = False
    service_disabled: bool = False
    html_body: bool = False  # a proxy answering 200 with its login page
    # The Batch API.
    batch_polls: int = 2  # batches.get calls before a job is done (the first moves it to RUNNING)
    batch_end_states: tuple = ()  # how the next jobs end instead of succeeding, e.g. ("BATCH_STATE_EXPIRED",)


def good_answers(section: str, schema: dict | None = None) -> dict:
    """Answers for every persona the request's responseSchema names (the three known ones with their own
    wording, any other with generic text per field), as the real API fills the schema it is given."""
    words = " ".join(re.findall(r"[A-Za-z]+", section)[:12]) or "this idea"
    # As long as the personas ask (40-220 words a field): the gate rejects a field under half of that.
    known = {
        "eli5": {
            "analogy": f"Imagine a big toy box where every toy has its own labelled spot, like {words}. When you "
            "put a toy away you read its label and drop it in the right corner, and your friends can do the same "
            "without asking you where anything goes.",
            "explanation": "When you want a toy you go straight to its spot, so you never have to dig around. It "
            "takes the same short moment whether the box holds five toys or five hundred, which is why grown-ups "
            "build computer programs this way when they must find things fast.",
        },
        "intuitive": {
            "mechanism": f"A function turns each key into an index, as in {words}, so a lookup is one array "
            "access. The function is cheap to compute and spreads keys evenly, so each slot holds only a few "
            "entries and checking them costs almost nothing compared with scanning a list.",
            "explanation": "Because the index is computed rather than searched for, the cost stays flat as data "
            "grows. Collisions are the price: two keys can land in one slot, and the table resizes itself when "
            "slots fill up, which keeps the average work per lookup constant over time.",
        },
        "executive": {
            "verdict": "Adopt: it cuts lookup cost to a constant and needs no special hardware at all. The "
            "change is small for an engineering team, the gains show up at once in latency, and the risk is "
            "limited to memory use, which is easy to measure before rollout.",
            "summary": f"The approach ({words}) lowers latency and server cost; memory overhead is the main "
            "trade-off. Expect fewer machines for the same traffic, faster pages for users, and a modest increase "
            "in memory per server that current hardware absorbs without any new purchases.",
        },
    }
    schema = resolve_refs(schema) if schema else schema
    personas = (schema or {}).get("properties") or {name: None for name in known}
    return {
        name: known.get(name)
        or {
            field: f"Seen as {name}, the {field} of this text ({words}) is that each part has a place to go. "
            "Every piece is filed where it belongs, so finding it later is quick and predictable, and adding "
            "more pieces does not slow anything down in the way a single long list would."
            for field in ((personas[name] or {}).get("propertyOrdering") or (personas[name] or {}).get("properties"))
        }
        for name in personas
    }


def resolve_refs(schema: dict) -> dict:
    """A JSON schema (responseJsonSchema) with its $refs inlined; a responseSchema has none and passes as it is."""
    definitions = schema.get("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(definitions[node["$ref"].split("/")[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def camel_keys(request: dict) -> dict:
    """A request's field names in lowerCamelCase, as the API reads both spellings; the schema's own property
    names are data, not fields, and are left alone."""
    out = {}
    for key, value in request.items():
        key = camel(key)
        if isinstance(value, dict) and key not in ("responseSchema", "responseJsonSchema"):
            value = camel_keys(value)
        elif isinstance(value, list):
            value = [camel_keys(v) if isinstance(v, dict) else v for v in value]
        out[key] = value
    return out


def spoil(answers: dict, kind: str, section: str) -> dict:
    """Answers a real teacher sometimes gives and the quality gate must reject, in the first persona's field."""
    persona = next(iter(answers))
    field = next(iter(answers[persona]))
    label = field.title()
    answers[persona][field] = {
        "refusal": "I'm sorry, but the provided text does not contain enough information to explain this idea.",
        "wrong_language": (
            "Imagine une grande boîte à jouets où chaque jouet a sa place étiquetée. Quand tu veux un jouet, tu vas "
            "directement à sa place, donc tu ne dois jamais fouiller dans toute la boîte pour le trouver, et ranger "
            "reste aussi facile le premier jour que le dernier, même avec beaucoup plus de jouets."
        ),
        "repeated_label": f"**{label}:** " + answers[persona][field],
        "copied": " ".join(section.split()[:45]),
    }[kind]
    return answers


def error_body(code: int, status: str, message: str, details: list | None = None) -> dict:
    """A google.rpc.Status as the API sends it: "details" is absent, not empty, when there are none."""
    return {"error": {"code": code, "message": message, "status": status, **({"details": details} if details else {})}}


def quota_body(model: str, per_day: bool, delay_s: float) -> dict:
    """A real 429: QuotaFailure naming the quota, Help, RetryInfo. A spent daily quota still asks for a short
    retry (about a minute), which is why a client cannot tell it from the RetryInfo alone."""
    quota_id = (
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
        if per_day
        else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    )
    violation = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": "250" if per_day else "10",
    }
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        HELP,
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay_s:g}s"},
    ]
    message = QUOTA_MESSAGE.format(limit=violation["quotaValue"], model=model, delay=delay_s)
    return error_body(429, "RESOURCE_EXHAUSTED", message, details)


def thinking_problem(model: str, budget) -> str | None:
    low, high, can_disable = THINKING.get(model, (0, 24576, True))
    if budget is None or budget == -1 or (budget == 0 and can_disable) or low <= budget <= high:
        return None
    if budget == 0:
        return "Budget 0 is invalid. This model only works in thinking mode."
    return f"The thinking budget ({budget}) is invalid."


class FakeGemini(Loopback):
    def __init__(self, faults: Faults | None = None, seed: int = 0, api_key: str = "test-key", port: int = 0):
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.api_key = api_key
        self.request_times: list[float] = []  # monotonic arrival time of every request, retries included
        self.outcomes: dict[str, int] = {}
        self.answered = 0  # 200s with an answer, for daily_quota_after
        self.sections: list[str] = []  # the section text of every request, in arrival order
        self.files: dict[str, bytes] = {}  # "files/x" -> content (uploaded requests, or results)
        self.uploads: dict[str, bytearray] = {}  # upload id -> bytes so far
        self.jobs: dict[str, dict] = {}  # "batches/x" -> {display_name, model, file, state, polls, results}
        self.billed: list[str] = []  # the key of every batch line answered: what the account pays for
        self.hold: set[str] = set()  # batch steps that hang (so a test can SIGKILL the client there)
        self.held: dict[str, threading.Event] = {}
        self.release = threading.Event()  # set by the test once it has killed the client
        fake = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.body()
                if ":generateContent" in self.path:
                    status, payload = fake.answer(self.path, self.headers.get("x-goog-api-key"), body)
                    self.reply(status, payload)
                else:
                    self.reply(*fake.batch_answer("POST", self.path, self.headers, body))

            def do_GET(self):
                self.reply(*fake.batch_answer("GET", self.path, self.headers, b""))

            def reply(self, status, payload, headers=None):
                data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
                self.send_response(status)
                html = isinstance(payload, bytes) and payload.startswith(b"<")
                kind = "text/html" if html else "application/json; charset=UTF-8"
                self.send_header("Content-Type", "application/octet-stream" if headers == "raw" else kind)
                for name, value in (headers if isinstance(headers, dict) else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def pick(self, kinds=FAULT_KINDS) -> str:
        f = self.faults
        with self.lock:
            draw = self.random.random()
        for name in kinds:
            draw -= getattr(f, name)
            if draw < 0:
                return name
        return "ok"

    def answer(self, path: str, key: str | None, body: bytes) -> tuple[int, dict | bytes]:
        with self.lock:
            self.request_times.append(time.monotonic())
        match = re.match(r"^/v1(?:beta)?/models/([^:/]+):generateContent", path)
        model = match[1] if match else path
        if self.faults.html_body:
            return 200, b"<html><head><title>Sign in</title></head><body>Please log in to the proxy.</body></html>"
        if key != self.api_key:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ]
            return 400, error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details)
        if self.faults.location_blocked:
            return 400, error_body(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")
        if self.faults.service_disabled:
            message = (
                "Generative Language API has not been used in project 1234567 before or it is disabled. Enable it by "
                "visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview"
                "?project=1234567 then retry."
            )
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
            }
            return 403, error_body(403, "PERMISSION_DENIED", message, [info])
        if not match or match[1] not in KNOWN_MODELS:
            message = (
                f"models/{model} is not found for API version v1beta, or is not supported for generateContent. "
                "Call ListModels to see the list of available models and their supported methods."
            )
            return 404, error_body(404, "NOT_FOUND", message)
        request = json.loads(body)
        config = request.get("generationConfig") or {}
        budget = (config.get("thinkingConfig") or {}).get("thinkingBudget")
        problem = thinking_problem(model, budget)
        if problem:
            return 400, error_body(400, "INVALID_ARGUMENT", problem)
        if self.faults.daily_quota_after is not None and self.answered >= self.faults.daily_quota_after:
            return 429, quota_body(model, per_day=True, delay_s=47.0)
        if self.faults.latency_s or self.faults.jitter_s:
            time.sleep(max(0.0, self.faults.latency_s + self.random.uniform(-1, 1) * self.faults.jitter_s))
        outcome = self.pick()
        if outcome == "ok":
            outcome = self.pick(QUALITY_FAULTS)
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        section = request["contents"][0]["parts"][0]["text"]
        with self.lock:
            self.sections.append(section)
        if outcome == "rate_429":
            return 429, quota_body(model, per_day=False, delay_s=self.faults.retry_delay_s)
        if outcome == "bare_429":
            return 429, error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
        if outcome == "rate_500":
            return 500, error_body(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            )
        if outcome == "rate_503":
            return 503, error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if outcome == "bad_request":
            return 400, error_body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        with self.lock:
            self.answered += 1
        prompt_tokens = len(section) // 4 + 200
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": 180,
            "totalTokenCount": prompt_tokens + 180,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        }
        system = "".join(p.get("text", "") for p in (request.get("systemInstruction") or {}).get("parts", []))
        if system.startswith("You judge"):  # evaluate.py's judge; a position-biased one that always picks A
            return 200, self.candidate_response('{"accuracy": "A", "style": "A"}', "STOP", usage, model)
        if outcome == "empty_candidates":
            return 200, {"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": usage, "modelVersion": model}
        answers = good_answers(section, config.get("responseSchema") or config.get("responseJsonSchema"))
        if outcome in QUALITY_FAULTS:
            answers = spoil(answers, outcome, section.split("\n\n", 1)[-1])
        text, finish = json.dumps(answers), "STOP"
        if outcome == "malformed_json":
            text = text[: len(text) // 2]
        elif outcome == "max_tokens":
            text, finish = text[: len(text) // 3], "MAX_TOKENS"
        elif outcome == "safety":
            text, finish = "", "SAFETY"
        elif outcome == "finish_other":
            text, finish = "", "OTHER"
        thoughts = budget not in (None, 0)
        if thoughts:
            usage |= {"thoughtsTokenCount": 64, "totalTokenCount": usage["totalTokenCount"] + 64}
        return 200, self.candidate_response(text, finish, usage, model, thought=thoughts)

    # ------------------------------------------------------------------------- the Batch API

    def wait_if_held(self, step: str) -> None:
        """Hang here for good when a test asked to: it SIGKILLs the client while this request is open."""
        if step in self.hold:
            self.held.setdefault(step, threading.Event()).set()
            self.release.wait(600)

    def operation(self, name: str) -> dict:
        """A batch as batches.get returns it: a long-running operation whose metadata is the GenerateContentBatch."""
        job = self.jobs[name]
        metadata = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{job['model']}",
            "displayName": job["display_name"],
            "inputConfig": {"fileName": job["file"]},
            "createTime": "2026-11-25T10:00:00.000000Z",
            "updateTime": "2026-11-25T10:00:01.000000Z",
            "batchStats": {"requestCount": str(job["lines"])},
            "state": job["state"],
            "name": name,
        }
        done = job["state"] not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING")
        if job["state"] == "BATCH_STATE_SUCCEEDED":
            metadata["output"] = {"responsesFile": job["results"]}
        return {"name": name, "metadata": metadata, **({"done": True} if done else {})}

    def batch_answer(self, method: str, path: str, headers, body: bytes):
        route = re.sub(r"^/(?:upload/|download/)?v1(?:beta)?/", "", path.split("?")[0])
        upload_id = re.search(r"upload_id=([\w-]+)", path)
        if upload_id:  # the upload URL this server handed out: one or more chunks, the last "upload, finalize"
            return self.upload_chunk(upload_id[1], headers, body)
        if headers.get("x-goog-api-key") != self.api_key:
            message = "API key not valid. Please pass a valid API key."
            return 400, error_body(400, "INVALID_ARGUMENT", message)
        if method == "POST" and route == "files":  # start a resumable upload
            self.wait_if_held("upload")
            new_id = f"up-{self.random.getrandbits(40):010x}"
            self.uploads[new_id] = bytearray()
            url = f"{self.base_url}/upload/v1beta/files?upload_id={new_id}&upload_protocol=resumable"
            return 200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
        match = re.match(r"^models/([^:/]+):batchGenerateContent$", route)
        if method == "POST" and match:
            return self.create_batch(match[1], camel_keys(json.loads(body or b"{}")))
        if method == "GET" and route == "batches":
            return 200, {"operations": [self.operation(name) for name in reversed(self.jobs)]}
        match = re.match(r"^batches/([\w-]+)(:cancel)?$", route)
        if match and f"batches/{match[1]}" in self.jobs:
            name = f"batches/{match[1]}"
            if match[2]:
                self.jobs[name]["state"] = "BATCH_STATE_CANCELLED"
                return 200, {}
            return 200, self.operation(self.advance(name))
        match = re.match(r"^files/([\w-]+):download$", route)
        if method == "GET" and match and f"files/{match[1]}" in self.files:
            self.wait_if_held("download")
            return 200, self.files[f"files/{match[1]}"], "raw"
        return 404, error_body(404, "NOT_FOUND", f"Requested entity was not found: {route}")

    def upload_chunk(self, upload_id: str, headers, body: bytes):
        if upload_id not in self.uploads:
            return 404, error_body(404, "NOT_FOUND", "Upload session not found.")
        self.uploads[upload_id] += body
        if "finalize" not in headers.get("X-Goog-Upload-Command", ""):
            return 200, {}, {"x-goog-upload-status": "active"}
        name = f"files/{upload_id.removeprefix('up-')}"
        self.files[name] = bytes(self.uploads.pop(upload_id))
        file = {
            "name": name,
            "mimeType": "application/jsonl",
            "sizeBytes": str(len(self.files[name])),
            "createTime": "2026-11-25T10:00:00.000000Z",
            "expirationTime": "2026-11-27T10:00:00.000000Z",
            "sha256Hash": "",
            "uri": f"{self.base_url}/v1beta/{name}",
            "state": "ACTIVE",
            "source": "UPLOADED",
        }
        return 200, {"file": file}, {"x-goog-upload-status": "final"}

    def create_batch(self, model: str, request: dict):
        if model not in KNOWN_MODELS:
            message = (
                f"models/{model} is not found for API version v1beta, or is not supported for batchGenerateContent."
            )
            return 404, error_body(404, "NOT_FOUND", message)
        batch = request.get("batch") or {}
        file = (batch.get("inputConfig") or {}).get("fileName")
        if file not in self.files:
            return 400, error_body(400, "INVALID_ARGUMENT", f"File {file} not found or not accessible.")
        name = f"batches/{self.random.getrandbits(48):012x}"
        with self.lock:
            lines = len(self.files[file].splitlines())
            self.jobs[name] = {
                "display_name": batch.get("displayName", ""),
                "model": model,
                "file": file,
                "state": "BATCH_STATE_PENDING",
                "polls": 0,
                "lines": lines,
                "results": None,
            }
        self.wait_if_held("create")  # the job exists; the client never hears its name
        return 200, self.operation(name)

    def advance(self, name: str) -> str:
        """One batches.get: PENDING, then RUNNING, then the end state after `batch_polls` looks."""
        with self.lock:
            job = self.jobs[name]
            if job["state"] not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                return name
            job["polls"] += 1
            job["state"] = "BATCH_STATE_RUNNING"
            if job["polls"] < self.faults.batch_polls:
                return name
            if self.faults.batch_end_states:
                job["state"], self.faults.batch_end_states = (
                    self.faults.batch_end_states[0],
                    self.faults.batch_end_states[1:],
                )
                return name
        results = []
        for raw in self.files[job["file"]].splitlines():
            line = json.loads(raw)
            request = camel_keys(line["request"])
            status, payload = self.answer(
                f"/v1beta/models/{job['model']}:generateContent", self.api_key, json.dumps(request).encode()
            )
            if status == 200:
                results.append({"key": line["key"], "response": payload})
                with self.lock:
                    self.billed.append(line["key"])
            else:
                results.append({"key": line["key"], "error": payload["error"]})
        self.random.shuffle(results)
        with self.lock:
            job["results"] = f"files/batch-{name.removeprefix('batches/')}"
            self.files[job["results"]] = "".join(json.dumps(r) + "\n" for r in results).encode()
            job["state"] = "BATCH_STATE_SUCCEEDED"
        return name

    def candidate_response(self, text: str, finish: str, usage: dict, model: str, thought: bool = False) -> dict:
        """A candidate as the API sends it: a thought summary part when thinking is on, and the answer in two text
        parts (the client joins them), then usage, the model version that answered and a response id."""
        half = len(text) // 2
        parts = ([{"text": "**Planning the answer**\nRead the section first.", "thought": True}] if thought else []) + (
            [{"text": text[:half]}, {"text": text[half:]}] if text else []
        )
        with self.lock:
            response_id = f"resp-{self.random.getrandbits(48):012x}"
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": response_id,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--rate-429", type=float, default=0.0)
    p.add_argument("--api-key", default="test-key")
    args = p.parse_args()
    faults = Faults(rate_429=args.rate_429, latency_s=args.latency, jitter_s=args.jitter)
    with FakeGemini(faults, api_key=args.api_key, port=args.port) as fake:
        print(f"fake Gemini on {fake.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
