import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from fake_gemini import FAULT_KINDS, FakeGemini, Faults
from google.genai import errors
from helpers import PARAGRAPH
from tenacity import RetryCallState

import sdg
import teachers
import units
from common import count_tokens, load_tokenizer
from personas import load_personas

KEY = "test-key-5f3a9c"  # must never appear in anything sdg.py writes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


def write_papers(path, papers=4, sections=5):
    """papers.json as step 1 writes it: some long sections (chunked), one too short to use."""
    records = []
    for p in range(papers):
        body = [
            {"heading": f"{s} Section", "text": f"Section {s} of paper {p}. " + PARAGRAPH * (2 + 6 * (s == 2))}
            for s in range(sections)
        ]
        body.append({"heading": "Tiny", "text": "Too short."})
        records.append({"id": f"2401.{p:05d}", "title": f"Paper {p}", "sections": body})
    path.write_text(json.dumps({"papers": records, "failures": []}))
    return path


def sdg_args(tmp_path, fake, tiny_model, *extra):
    return [
        "--papers",
        str(tmp_path / "papers.json"),
        "--out-dir",
        str(tmp_path / "data"),
        "--base-url",
        fake.base_url,
        "--rpm",
        "60000",
        "--concurrency",
        "8",
        "--tokenizer",
        str(tiny_model),
        "--max-tokens",
        "512",
        *extra,
    ]


def keys(path):
    return [json.loads(line)["meta"]["key"] for line in path.read_text().splitlines()]


def all_unit_keys(tmp_path, tiny_model, max_tokens=512):
    """Every unit of papers.json as sdg.py would cut it, computed from units.py directly."""
    tokenizer = load_tokenizer(str(tiny_model))
    papers = json.loads((tmp_path / "papers.json").read_text())["papers"]
    budget = units.chunk_budget(max_tokens, load_personas())
    return {u.key for u in units.build_units(papers, budget, lambda t: count_tokens(tokenizer, t))[0]}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def test_under_a_mix_of_faults_every_unit_is_written_once_per_persona_or_recorded(
    tmp_path, tiny_model, api_key, capsys
):
    write_papers(tmp_path / "papers.json")
    faults = Faults(
        rate_429=0.1,
        rate_500=0.05,
        rate_503=0.05,
        bad_request=0.03,
        malformed_json=0.05,
        safety=0.05,
        max_tokens=0.05,
        empty_candidates=0.05,
        retry_delay_s=0.05,
    )
    with FakeGemini(faults, api_key=KEY, seed=1) as fake:
        assert sdg.main(sdg_args(tmp_path, fake, tiny_model, "--max-retries", "8")) == 0
    data = tmp_path / "data"
    written = [keys(data / f"{p}.jsonl") for p in ("eli5", "intuitive", "executive")]
    failed = {json.loads(line)["key"] for line in (data / "sdg_failures.jsonl").read_text().splitlines()}
    assert written[0] == written[1] == written[2]  # the same units, in the same order, for each persona
    assert len(written[0]) == len(set(written[0]))  # no duplicates
    assert set(written[0]) | failed == all_unit_keys(tmp_path, tiny_model)
    assert not set(written[0]) & failed
    assert set(fake.outcomes) == {"ok", *FAULT_KINDS}  # every kind of fault really happened
    reasons = {json.loads(line)["reason"] for line in (data / "sdg_failures.jsonl").read_text().splitlines()}
    assert "api_error:400" in reasons  # a request rejected for its content fails that unit, not the run
    stats = json.loads((data / "sdg_stats.json").read_text())
    assert stats["done"] == len(written[0]) and stats["failed"] == len(failed) and stats["retries"] > 0
    assert stats["prompt_tokens"] > 0 and stats["cost_usd"] > 0
    assert f"done: {len(written[0])} ok" in capsys.readouterr().out


def test_rows_follow_the_persona_format_and_mlx_lm_loads_them(tmp_path, tiny_model, api_key):
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.utils import load_tokenizer

    write_papers(tmp_path / "papers.json", papers=1, sections=2)
    with FakeGemini(api_key=KEY) as fake:
        sdg.main(sdg_args(tmp_path, fake, tiny_model))
    rows = {
        p: [json.loads(line) for line in (tmp_path / "data" / f"{p}.jsonl").read_text().splitlines()]
        for p in ("eli5", "intuitive", "executive")
    }
    # Rows are appended as units finish, so with concurrency the file order is completion order.
    first = next(r for r in rows["eli5"] if (r["meta"]["section"], r["meta"]["chunk"]) == (0, 0))
    assert first["messages"][0]["content"].startswith("Explain this like I'm 5:\nSection 0 of paper 0.")
    assert first["messages"][1]["content"].startswith("**Analogy:** ")
    assert "\n\n**Explanation:** " in first["messages"][1]["content"]
    assert rows["intuitive"][0]["messages"][0]["content"].startswith("Explain the intuition behind this:\n")
    assert rows["executive"][0]["messages"][1]["content"].startswith("**Verdict:** ")
    assert set(first["meta"]) == {"paper_id", "section", "chunk", "key", "model"}
    dataset = ChatDataset(rows["eli5"], load_tokenizer(tiny_model), mask_prompt=True)
    tokens, offset = dataset.process(dataset[0])
    assert 0 < offset < len(tokens)


def test_a_sigkilled_run_resumes_to_the_same_keys_without_duplicates_or_torn_lines(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=6)
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    with FakeGemini(Faults(latency_s=0.05), api_key=KEY) as fake:
        cmd = [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model, "--concurrency", "4")]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eli5 = tmp_path / "data" / "eli5.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not eli5.exists() or eli5.read_text().count("\n") < 5):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = eli5.read_text().count("\n")
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    expected = all_unit_keys(tmp_path, tiny_model)
    assert 5 <= partial < len(expected)  # it really was killed part-way
    for persona in ("eli5", "intuitive", "executive"):
        lines = (tmp_path / "data" / f"{persona}.jsonl").read_text().splitlines()
        got = [json.loads(line)["meta"]["key"] for line in lines]  # every line parses: none torn
        assert sorted(got) == sorted(expected)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=6)
    with FakeGemini(Faults(latency_s=0.05), api_key=KEY) as fake:
        cmd = [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model, "--concurrency", "2")]
        proc = subprocess.Popen(
            cmd, env={**os.environ, "GEMINI_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        eli5 = tmp_path / "data" / "eli5.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not eli5.exists() or eli5.read_text().count("\n") < 3):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "interrupted: finished units are saved" in stderr and "Traceback" not in stderr
    assert all(json.loads(line) for line in eli5.read_text().splitlines())


def test_a_unit_written_for_some_personas_is_completed_and_a_torn_line_repaired(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=1, sections=2)
    with FakeGemini(api_key=KEY) as fake:
        sdg.main(sdg_args(tmp_path, fake, tiny_model))
        data = tmp_path / "data"
        complete = {p: (data / f"{p}.jsonl").read_text() for p in ("eli5", "intuitive", "executive")}
        # A kill between personas: the last unit reached eli5 only, and intuitive's last line is half written.
        intuitive = complete["intuitive"].splitlines(keepends=True)
        (data / "intuitive.jsonl").write_text("".join(intuitive[:-1]) + intuitive[-1][:40])
        (data / "executive.jsonl").write_text("".join(complete["executive"].splitlines(keepends=True)[:-1]))
        fake.request_times.clear()
        sdg.main(sdg_args(tmp_path, fake, tiny_model))
    assert len(fake.request_times) == 1  # only the unfinished unit is paid for again
    for persona, text in complete.items():
        assert keys(data / f"{persona}.jsonl") == [json.loads(line)["meta"]["key"] for line in text.splitlines()]


def test_dry_run_makes_no_request_and_needs_no_key(tmp_path, tiny_model, capsys):
    write_papers(tmp_path / "papers.json")
    with FakeGemini(api_key=KEY) as fake:
        assert sdg.main(sdg_args(tmp_path, fake, tiny_model, "--dry-run")) == 0
    assert fake.request_times == []
    out = capsys.readouterr().out
    assert f"dry run: {len(all_unit_keys(tmp_path, tiny_model))} units to generate" in out and "$" in out


def test_the_api_key_never_reaches_any_file(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=1)
    with FakeGemini(Faults(rate_429=0.3, retry_delay_s=0.01), api_key=KEY) as fake:
        sdg.main(sdg_args(tmp_path, fake, tiny_model, "-v"))
    written = list((tmp_path / "data").iterdir())
    assert len(written) == 5
    assert all(KEY not in path.read_text() for path in written)


@pytest.mark.parametrize(
    "env_key, extra, message",
    [
        (None, [], "no API key: export GEMINI_API_KEY"),
        (KEY, ["--model", "gemini-9-ultra"], "404 NOT_FOUND: models/gemini-9-ultra is not found"),
        ("wrong-key", [], "API key not valid"),
        (KEY, ["--papers", "missing.json"], "missing.json not found: run paperExtractor.py first"),
    ],
)
def test_user_errors_exit_nonzero_with_a_clear_message(tmp_path, tiny_model, env_key, extra, message):
    write_papers(tmp_path / "papers.json", papers=1)
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    if env_key:
        env["GEMINI_API_KEY"] = env_key
    with FakeGemini(api_key=KEY) as fake:
        result = subprocess.run(
            [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert (env_key or "") == "" or env_key not in result.stderr


def test_retry_info_delay_is_read_from_a_real_429_error():
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    error = errors.ClientError(429, body)
    assert teachers.retry_delay_from(error) == 37.0
    assert teachers.is_retryable(error)
    assert not teachers.is_retryable(errors.ClientError(404, {"error": {"code": 404}}))


@pytest.mark.parametrize("asked, low, high", [("7s", 7.0, 8.0), ("86400s", 300.0, 301.0)])
def test_retry_info_is_waited_out_up_to_a_cap(asked, low, high):
    body = {
        "error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": asked}]}
    }
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.set_exception((errors.ClientError, errors.ClientError(429, body), None))
    wait = teachers.wait_for(state)
    assert low <= wait <= high  # the delay asked for, plus up to 1 s of jitter; a day is capped at 5 minutes


def test_chunks_split_at_paragraphs_and_fit_the_budget():
    text = "\n\n".join(f"Paragraph {i}." + " word" * 40 for i in range(10))
    count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731 - one token per word
    chunks = units.chunk_text(text, budget=100, count=count)
    assert all(sum(count([c])) <= 100 for c in chunks)
    assert "\n\n".join(chunks) == text  # nothing lost, nothing reordered
    assert all(c.startswith("Paragraph") for c in chunks)


def test_todays_personas_render_the_rows_they_always_did_byte_for_byte():
    """Rows generated before personas.toml existed stay valid: same prompts, same labels, same layout."""
    unit = units.Unit("2401.00001", 2, 0, "A Paper", "2 Method", "Hash tables map keys to slots.")
    answers = sdg_answers_model()(
        eli5={"analogy": " A toy box. ", "explanation": "Each toy has a spot."},
        intuitive={"mechanism": "A hash picks the slot.", "explanation": "No search needed."},
        executive={"verdict": "Adopt it.", "summary": "Cheap and fast."},
    )
    rows = {p.name: sdg.make_row(p, unit, answers, "gemini-2.5-flash") for p in load_personas()}
    assert [m["content"] for m in rows["eli5"]["messages"]] == [
        "Explain this like I'm 5:\nHash tables map keys to slots.",
        "**Analogy:** A toy box.\n\n**Explanation:** Each toy has a spot.",
    ]
    assert [m["content"] for m in rows["intuitive"]["messages"]] == [
        "Explain the intuition behind this:\nHash tables map keys to slots.",
        "**Mechanism:** A hash picks the slot.\n\n**Explanation:** No search needed.",
    ]
    assert [m["content"] for m in rows["executive"]["messages"]] == [
        "Give me an executive summary:\nHash tables map keys to slots.",
        "**Verdict:** Adopt it.\n\n**Summary:** Cheap and fast.",
    ]
    # The teacher's prompt of the three personas as it was before they became data.
    assert sdg.system_instruction(load_personas()).startswith(
        "You turn one section of a research paper into training data for three explainer personas. Answer only "
        "from the text. Keep every field to 40-220 words, in plain prose without headings.\n\neli5: You are a "
        "kindergarten teacher who is a master of analogies. Explain the single big idea of the text with one "
        "concrete, physical analogy"
    )
    assert sdg.system_instruction(load_personas()).endswith(
        "executive: You are a sceptical venture-capital analyst. Put the bottom line first as a one-sentence "
        "verdict, then summarise value, utility, cost and hardware needs. Ignore novelty unless it changes speed "
        "or cost."
    )


def sdg_answers_model():
    from personas import answers_schema

    return answers_schema(load_personas())
