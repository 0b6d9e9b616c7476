"""A loopback stand-in for the Gemini REST API's generateContent, as the real google-genai client calls it:
POST {base}/v1/models/{model}:generateContent (or /v1beta/) with x-goog-api-key, answering candidates with
finishReason and usageMetadata, or google.rpc error bodies (429 with RetryInfo, 500, 503, 404).

    $ python tests/fake_gemini.py --port 8765 --latency 2 --rate-429 0.05   # for bench/ and make smoke
"""

import argparse
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = (
    "rate_429",
    "rate_500",
    "rate_503",
    "bad_request",
    "malformed_json",
    "safety",
    "max_tokens",
    "empty_candidates",
)
KNOWN_MODELS = {"gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"}


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
    retry_delay_s: float = 0.2  # what a 429's RetryInfo asks for
    latency_s: float = 0.0
    jitter_s: float = 0.0


def good_answers(section: str, schema: dict | None = None) -> dict:
    """Answers for every persona the request's responseSchema names (the three known ones with their own
    wording, any other with generic text per field), as the real API fills the schema it is given."""
    words = " ".join(re.findall(r"[A-Za-z]+", section)[:12]) or "this idea"
    known = {
        "eli5": {
            "analogy": f"Imagine a big toy box where every toy has its own labelled spot, like {words}.",
            "explanation": "When you want a toy you go straight to its spot, so you never have to dig around.",
        },
        "intuitive": {
            "mechanism": f"A function turns each key into an index, as in {words}, so a lookup is one array access.",
            "explanation": "Because the index is computed rather than searched for, the cost stays flat as data grows.",
        },
        "executive": {
            "verdict": "Adopt: it cuts lookup cost to a constant and needs no special hardware at all.",
            "summary": f"The approach ({words}) lowers latency and server cost; memory overhead is the main trade-off.",
        },
    }
    personas = (schema or {}).get("properties") or {name: None for name in known}
    return {
        name: known.get(name)
        or {
            field: f"Seen as {name}, the {field} of this text ({words}) is that each part has a place to go."
            for field in ((personas[name] or {}).get("propertyOrdering") or (personas[name] or {}).get("properties"))
        }
        for name in personas
    }


def error_body(code: int, status: str, message: str, details: list | None = None) -> dict:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


class FakeGemini:
    def __init__(self, faults: Faults | None = None, seed: int = 0, api_key: str = "test-key", port: int = 0):
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.api_key = api_key
        self.request_times: list[float] = []  # monotonic arrival time of every request, retries included
        self.outcomes: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = fake.answer(self.path, self.headers.get("x-goog-api-key"), body)
                data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def pick(self) -> str:
        f = self.faults
        with self.lock:
            draw = self.random.random()
        for name in FAULT_KINDS:
            draw -= getattr(f, name)
            if draw < 0:
                return name
        return "ok"

    def answer(self, path: str, key: str | None, body: bytes) -> tuple[int, dict | bytes]:
        with self.lock:
            self.request_times.append(time.monotonic())
        match = re.match(r"^/v1(?:beta)?/models/([^:/]+):generateContent", path)
        if key != self.api_key:
            return 400, error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        if not match or match[1] not in KNOWN_MODELS:
            model = match[1] if match else path
            return 404, error_body(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta")
        if self.faults.latency_s or self.faults.jitter_s:
            time.sleep(max(0.0, self.faults.latency_s + self.random.uniform(-1, 1) * self.faults.jitter_s))
        outcome = self.pick()
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        request = json.loads(body)
        section = request["contents"][0]["parts"][0]["text"]
        usage = {
            "promptTokenCount": len(section) // 4 + 200,
            "candidatesTokenCount": 180,
            "totalTokenCount": 0,
            "thoughtsTokenCount": 0,
        }
        if outcome == "rate_429":
            retry = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{self.faults.retry_delay_s}s"}
            ]
            return 429, error_body(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", retry)
        if outcome == "rate_500":
            return 500, error_body(500, "INTERNAL", "An internal error has occurred.")
        if outcome == "rate_503":
            return 503, error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if outcome == "bad_request":
            return 400, error_body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        system = "".join(p.get("text", "") for p in (request.get("systemInstruction") or {}).get("parts", []))
        if system.startswith("You judge"):  # evaluate.py's judge; a position-biased one that always picks A
            return 200, {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": '{"winner": "A"}'}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {"promptTokenCount": 1},
            }
        if outcome == "empty_candidates":
            return 200, {"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": usage}
        schema = (request.get("generationConfig") or {}).get("responseSchema")
        text = json.dumps(good_answers(section, schema))
        finish = "STOP"
        if outcome == "malformed_json":
            text = text[: len(text) // 2]
        elif outcome == "max_tokens":
            text, finish = text[: len(text) // 3], "MAX_TOKENS"
        elif outcome == "safety":
            text, finish = "", "SAFETY"
        candidate = {
            "content": {"role": "model", "parts": [{"text": text}] if text else []},
            "finishReason": finish,
            "index": 0,
        }
        return 200, {"candidates": [candidate], "usageMetadata": usage, "modelVersion": match[1]}

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


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
