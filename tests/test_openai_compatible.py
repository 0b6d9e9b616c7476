"""The OpenAI-compatible teacher (paper_personas/teachers/openai_compatible.py) through step 2: against a loopback
server that answers as the real services do (tests/fake_openai.py), against the real mlx_lm.server, and against a
server that is down."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from fake_openai import FakeOpenAI, OpenAIFaults
from helpers import free_port, run_main, run_script, write_papers

from paper_personas.blas import preload_env
from paper_personas.personas import answers_schema, load_personas
from paper_personas.teachers import openai_compatible

KEY = "sk-test-8d2c"  # must never appear in anything sdg.py writes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


def openai_args(tmp_path, base_url, tiny_model, *extra, model="teacher-1"):
    return [
        "--teacher",
        "openai",
        "--base-url",
        base_url,
        "--model",
        model,
        "--papers",
        str(tmp_path / "papers.json"),
        "--out-dir",
        str(tmp_path / "data"),
        "--tokenizer",
        str(tiny_model),
        "--max-retries",
        "4",
        *extra,
    ]


def run_step2(args, env=None, timeout=300):
    return run_script("sdg.py", *args, env=env, timeout=timeout)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_openai_teacher_under_real_odd_answers_writes_each_unit_once_or_records_why(tmp_path, tiny_model, monkeypatch):
    write_papers(tmp_path / "papers.json", papers=6)  # 36 units
    faults = OpenAIFaults(rate_429=0.15, server_500=0.05, fenced=0.1, length=0.1, refusal=0.05, no_usage=0.1)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(faults, api_key=KEY, seed=3) as fake:
        run_main("sdg.py", openai_args(tmp_path, fake.base_url, tiny_model, "--price-input", "0.5"))
    data = tmp_path / "data"
    written = [sorted(r["meta"]["key"] for r in rows(data / f"{p}.jsonl")) for p in ("eli5", "intuitive", "executive")]
    failed = {f["key"]: f["reason"] for f in rows(data / "sdg_failures.jsonl")}
    assert written[0] == written[1] == written[2] and len(written[0]) == len(set(written[0]))
    assert len(written[0]) + len(failed) == 36 and len(written[0]) >= 30
    assert fake.outcomes["rate_429"] > 0 and fake.outcomes["fenced"] > 0  # both happened, and were survived
    row = rows(data / "eli5.jsonl")[0]
    assert row["meta"]["model"] == "teacher-1" and row["meta"]["model_version"] == "teacher-1-2025-01-01"
    assert row["messages"][1]["content"].startswith("**Analogy:** Imagine")
    run = json.loads((data / "sdg_stats.json").read_text())["runs"][-1]
    assert run["teacher"] == "openai" and run["retries"] > 0
    assert run["prices_per_million"] == {"input": 0.5, "output": 0.0, "cached": 0.0}
    assert run["cost_usd"] == round(run["prompt_tokens"] * 0.5 / 1e6, 4) > 0
    everything = "".join(p.read_text() for p in data.iterdir() if p.is_file())
    assert KEY not in everything


@pytest.mark.parametrize(
    "faults, key, model, said",
    [
        (OpenAIFaults(), "sk-wrong-0000", "teacher-1", "Incorrect API key provided"),
        (OpenAIFaults(style="vllm"), KEY, "no-such-model", "The model `no-such-model` does not exist"),
        (OpenAIFaults(no_json_schema=True), KEY, "teacher-1", "'response_format' of type 'json_schema' is not"),
    ],
)
def test_openai_errors_every_request_would_meet_stop_the_run_at_once(tmp_path, tiny_model, faults, key, model, said):
    write_papers(tmp_path / "papers.json", papers=4)
    with FakeOpenAI(faults, api_key=KEY) as fake:
        args = openai_args(tmp_path, fake.base_url, tiny_model, "--concurrency", "2", model=model)
        result = run_step2(args, env={"OPENAI_API_KEY": key})
    assert result.returncode == 1 and said in result.stderr and "Traceback" not in result.stderr
    assert "is the server running at --base-url and serving --model?" in result.stderr
    assert len(fake.requests) <= 3  # the 2 in flight and at most one more: no retries, no other units


def test_a_request_over_the_servers_context_fails_alone_and_the_run_goes_on(tmp_path, tiny_model):
    """vLLM's context-length 400 mentions "model" but is about one long unit: that unit is recorded, not the run
    stopped."""
    write_papers(tmp_path / "papers.json", papers=2)  # section 2 of each paper is cut in two long chunks
    with FakeOpenAI(OpenAIFaults(style="vllm", context_chars=2500), api_key=KEY) as fake:
        result = run_step2(openai_args(tmp_path, fake.base_url, tiny_model), {"OPENAI_API_KEY": KEY})
    failures = rows(tmp_path / "data" / "sdg_failures.jsonl")
    assert result.returncode == 0 and failures and {f["reason"] for f in failures} == {"api_error:400"}
    assert {f["section"] for f in failures} == {2}  # only chunks of the long section, one per paper
    assert len(rows(tmp_path / "data" / "eli5.jsonl")) + len(failures) == 12


def test_a_spent_openai_quota_stops_with_what_was_spent_and_keeps_the_rows(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=4)
    with FakeOpenAI(OpenAIFaults(quota_after=3), api_key=KEY) as fake:
        result = run_step2(
            openai_args(tmp_path, fake.base_url, tiny_model, "--concurrency", "1"), {"OPENAI_API_KEY": KEY}
        )
    assert result.returncode == 1 and "the quota is spent (insufficient_quota)" in result.stderr
    assert "add credit or raise the limit" in result.stderr and "3 units done this run" in result.stderr
    assert len(rows(tmp_path / "data" / "eli5.jsonl")) == 3 and len(fake.requests) == 4


def test_a_server_that_ignores_the_schema_is_recorded_unit_by_unit_and_the_run_fails(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=2)  # 12 units
    with FakeOpenAI(OpenAIFaults(free_text=1.0), api_key=KEY) as fake:
        result = run_step2(
            openai_args(tmp_path, fake.base_url, tiny_model, "--quality-attempts", "2"), {"OPENAI_API_KEY": KEY}
        )
    failures = rows(tmp_path / "data" / "sdg_failures.jsonl")
    assert result.returncode == 1 and "no unit succeeded" in result.stderr and "Traceback" not in result.stderr
    assert len(failures) == 12 and {f["reason"] for f in failures} == {"invalid_json:json_invalid"}
    assert len(fake.requests) == 24  # each unit asked --quality-attempts times, then recorded
    assert "0 ok, 12 failed (12 invalid_json)" in result.stdout


def test_openai_requests_carry_a_strict_json_schema():
    schema = openai_compatible.strict_json_schema(answers_schema(load_personas()))
    eli5 = schema["$defs"]["Eli5Answer"]
    assert schema["additionalProperties"] is False and eli5["additionalProperties"] is False
    assert eli5["required"] == ["analogy", "explanation"]


@pytest.mark.slow
def test_the_real_mlx_lm_server_which_ignores_response_format_is_recorded_not_a_crash(tmp_path, tiny_model):
    """mlx_lm.server speaks the OpenAI protocol but silently drops response_format: a random model answers noise,
    cut at --max-output-tokens. sdg.py records each unit's failure and exits 1; nothing crashes."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm", "server", "--model", str(tiny_model), "--port", str(port)],
        env={**os.environ, **preload_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlx_lm.server did not start"
                time.sleep(0.3)
        write_papers(tmp_path / "papers.json", papers=1)
        args = openai_args(tmp_path, f"http://127.0.0.1:{port}/v1", tiny_model, model=str(tiny_model))
        args += ["--max-output-tokens", "48", "--limit", "3", "--quality-attempts", "1"]
        result = run_step2(args)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    failures = rows(tmp_path / "data" / "sdg_failures.jsonl")
    assert result.returncode == 1 and "no unit succeeded" in result.stderr and "Traceback" not in result.stderr
    assert len(failures) == 3 and all(f["reason"] in ("max_tokens", "invalid_json:json_invalid") for f in failures)
    run = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())["runs"][-1]
    assert run["teacher"] == "openai" and run["requests"] == 3 and run["candidates_tokens"] > 0


class AcceptsOnce:
    """A loopback port that accepts one connection (sdg.py's reachability check) and then closes, so every
    request after it is refused, as when a server dies just after a run starts."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._accept_one, daemon=True)
        self.thread.start()

    def _accept_one(self):
        connection, _ = self.listener.accept()
        connection.close()
        self.listener.close()


def test_a_teacher_server_that_is_down_stops_the_run_at_once_naming_the_url(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=2)
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    result = run_step2(openai_args(tmp_path, down, tiny_model))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot reach {down} (Connection refused)" in result.stderr and "Check --base-url" in result.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "data" / "eli5.jsonl").exists()


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_teacher_server_that_goes_down_during_the_run_stops_it_after_a_few_attempts(
    tmp_path, tiny_model, concurrency
):
    """Before: 105 requests over 144 s and "no unit succeeded". Now: 3 attempts per unit in flight, then stop;
    and no unit that was waiting for a slot starts once the run is stopping (CI once counted 7 requests at
    concurrency 2: the slot the stopping unit freed went to a third unit before the run cancelled it)."""
    write_papers(tmp_path / "papers.json", papers=2)
    server = AcceptsOnce()
    result = run_step2(openai_args(tmp_path, server.url, tiny_model, "--concurrency", str(concurrency)))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach openai at {server.url}" in result.stderr and "on 3 attempts in a row" in result.stderr
    ledger = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())
    requests = ledger["runs"][-1]["requests"]
    assert requests == 3 if concurrency == 1 else requests <= concurrency * 3, requests  # units in flight x 3
