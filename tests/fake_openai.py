"""A loopback OpenAI-compatible chat completions server, as the real `openai` client calls it:
POST {base}/chat/completions with "Authorization: Bearer KEY", answering a chat.completion with finish_reason,
usage (with prompt_tokens_details and completion_tokens_details) and the model that answered, or the error bodies
the real services send. The bodies are OpenAI's documented ones (platform.openai.com/docs/guides/error-codes):
  401 invalid_api_key; 404 model_not_found; 400 "Invalid parameter: 'response_format' of type 'json_schema' is not
  supported with this model."; 429 rate_limit_exceeded with a retry-after header; 429 insufficient_quota (the
  account's credit is spent: no retry helps); 500 server_error
and, with `style="vllm"`, vLLM's flat body ({"object": "error", "message", "type", "code": 404}).
Odd answers real servers give: the schema ignored (free text, or JSON in a ```json fence, as llama.cpp, Ollama
and mlx_lm.server do without grammar support), finish_reason "length" with cut JSON, a refusal, no usage at all.

    $ python tests/fake_openai.py --port 8766
"""

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from fake_gemini import good_answers
from helpers import Loopback, QuietHandler

ODD_ANSWERS = ("free_text", "fenced", "length", "refusal", "no_usage")


@dataclass
class OpenAIFaults:
    """Probabilities per request (the rest answers normally), and whole-service states."""

    rate_429: float = 0.0
    server_500: float = 0.0
    free_text: float = 0.0  # the schema ignored: prose instead of JSON
    fenced: float = 0.0  # the schema ignored, but JSON inside a ```json fence
    length: float = 0.0
    refusal: float = 0.0
    no_usage: float = 0.0
    retry_after_s: float = 0.2
    quota_after: int | None = None  # after this many answers, 429 insufficient_quota
    no_json_schema: bool = False  # the model does not support response_format json_schema
    context_chars: int | None = None  # a prompt longer than this gets vLLM's context-length 400
    style: str = "openai"  # or "vllm": the flat error body


class FakeOpenAI(Loopback):
    def __init__(self, faults: OpenAIFaults | None = None, api_key="sk-test", models=("teacher-1",), seed=0, port=0):
        self.faults = faults or OpenAIFaults()
        self.api_key, self.models = api_key, set(models)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # every request body, retries included
        self.outcomes: dict[str, int] = {}
        self.answered = 0
        fake = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.body()
                status, payload, headers = fake.answer(self.path, self.headers.get("Authorization", ""), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def error(self, status: int, message: str, kind: str, code) -> dict:
        if self.faults.style == "vllm":
            return {"object": "error", "message": message, "type": kind, "param": None, "code": status}
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def pick(self) -> str:
        with self.lock:
            draw = self.random.random()
        for name in ("rate_429", "server_500", *ODD_ANSWERS):
            draw -= getattr(self.faults, name)
            if draw < 0:
                return name
        return "ok"

    def answer(self, path: str, authorization: str, body: bytes) -> tuple[int, dict, dict]:
        request = json.loads(body)
        with self.lock:
            self.requests.append(request)
        if not path.endswith("/chat/completions"):
            return 404, self.error(404, f"Invalid URL (POST {path})", "invalid_request_error", None), {}
        if authorization != f"Bearer {self.api_key}":
            given = authorization.removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {given[:3]}***{given[-4:]}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return 401, self.error(401, message, "invalid_request_error", "invalid_api_key"), {}
        model = request.get("model")
        if model not in self.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return 404, self.error(404, message, "invalid_request_error", "model_not_found"), {}
        schema = (request.get("response_format") or {}).get("json_schema", {}).get("schema")
        if self.faults.no_json_schema and schema is not None:
            message = (
                "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model. Learn "
                "more about supported models at the Structured Outputs guide: "
                "https://platform.openai.com/docs/guides/structured-outputs"
            )
            return 400, self.error(400, message, "invalid_request_error", None), {}
        prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
        if self.faults.context_chars is not None and prompt_chars > self.faults.context_chars:
            asked = prompt_chars // 4
            message = (
                f"This model's maximum context length is 2048 tokens. However, you requested {asked + 2048} tokens "
                f"({asked} in the messages, 2048 in the completion). Please reduce the length of the messages or "
                "completion."
            )
            return 400, self.error(400, message, "BadRequestError", None), {}
        if self.faults.quota_after is not None and self.answered >= self.faults.quota_after:
            message = (
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            return 429, self.error(429, message, "insufficient_quota", "insufficient_quota"), {}
        outcome = self.pick()
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "rate_429":
            message = (
                f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 3, Used "
                f"3, Requested 1. Please try again in {self.faults.retry_after_s:g}s. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
            headers = {"retry-after": f"{self.faults.retry_after_s:g}", "x-ratelimit-remaining-requests": "0"}
            return 429, self.error(429, message, "requests", "rate_limit_exceeded"), headers
        if outcome == "server_500":
            message = "The server had an error while processing your request. Sorry about that!"
            return 500, self.error(500, message, "server_error", None), {}
        with self.lock:
            self.answered += 1
        messages = request.get("messages", [])
        section = next((m["content"] for m in messages if m.get("role") == "user"), "")
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        if system.startswith("You judge"):
            content = json.dumps({"accuracy": "A", "style": "A"})
        else:
            content = json.dumps(good_answers(section, schema))
        finish, refusal = "stop", None
        if outcome == "free_text":
            content = "Sure! Here is an explanation of the section in simple words: it stores things in boxes."
        elif outcome == "fenced":
            content = f"```json\n{content}\n```"
        elif outcome == "length":
            content, finish = content[: len(content) // 3], "length"
        elif outcome == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that."
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
        completion = {
            "id": f"chatcmpl-{self.random.getrandbits(40):010x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{model}-2025-01-01",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 180,
                "total_tokens": prompt_tokens + 180,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_fake",
        }
        if outcome == "no_usage":
            del completion["usage"]
        return 200, completion, {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--api-key", default="sk-test")
    args = p.parse_args()
    with FakeOpenAI(api_key=args.api_key, port=args.port) as fake:
        print(f"fake OpenAI-compatible server on {fake.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
