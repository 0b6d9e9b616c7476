"""--teacher gemini-batch through the real google-genai client against the loopback Batch API: the same rows as
an online run at half the cost, exactly once across SIGKILLs in every phase, and jobs that end badly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from fake_gemini import FakeGemini, Faults
from helpers import run_main, write_papers

KEY = "test-key-batch-71c"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def args_for(tmp_path, fake, tiny_model, teacher="gemini-batch", out="data", *extra):
    return [
        "--teacher",
        teacher,
        "--base-url",
        fake.base_url,
        "--papers",
        str(tmp_path / "papers.json"),
        "--out-dir",
        str(tmp_path / out),
        "--tokenizer",
        str(tiny_model),
        "--poll-interval",
        "0.05",
        "--rpm",
        "0",
        *extra,
    ]


def persona_rows(folder) -> dict[str, list]:
    """Each persona's rows, sorted by key, as comparable tuples."""
    rows = {}
    for persona in ("eli5", "intuitive", "executive"):
        path = folder / f"{persona}.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        rows[persona] = sorted((r["meta"]["key"], json.dumps(r["messages"]), r["meta"]["model"]) for r in lines)
    return rows


def journal(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "sdg_batches.jsonl").read_text().splitlines()]


def test_batch_gives_the_same_rows_as_online_at_half_the_cost_in_the_ledger(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=4)  # 24 units
    with FakeGemini(api_key=KEY) as fake:
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model, "gemini", "online"))
    with FakeGemini(api_key=KEY) as fake:
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model, "gemini-batch", "batch"))
        assert sorted(fake.billed) == sorted(set(fake.billed)) and len(fake.billed) == 24
    online, batch = persona_rows(tmp_path / "online"), persona_rows(tmp_path / "batch")
    assert batch == online and len(batch["eli5"]) == 24
    totals = {k: json.loads((tmp_path / k / "sdg_stats.json").read_text())["total"] for k in ("online", "batch")}
    assert totals["batch"]["prompt_tokens"] == totals["online"]["prompt_tokens"] > 0
    assert totals["batch"]["cost_usd"] == pytest.approx(totals["online"]["cost_usd"] / 2, abs=1e-4)
    run = json.loads((tmp_path / "batch" / "sdg_stats.json").read_text())["runs"][-1]
    assert run["teacher"] == "gemini-batch" and run["prices_per_million"]["input"] == 0.15
    events = [r["event"] for r in journal(tmp_path / "batch")]
    assert events == ["submitting", "created", "collected"]


def test_no_wait_submits_and_exits_and_the_rerun_collects_without_paying_again(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=2)  # 12 units
    with FakeGemini(Faults(batch_polls=3), api_key=KEY) as fake:
        submitted = run_main("sdg.py", args_for(tmp_path, fake, tiny_model, "gemini-batch", "data", "--no-wait"))
        assert "12 units in flight in 1 batch job(s)" in submitted.stdout
        assert persona_rows(tmp_path / "data")["eli5"] == [] and len(fake.jobs) == 1
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model))
        assert len(fake.jobs) == 1 and len(fake.billed) == 12  # collected, not submitted again
    assert len(persona_rows(tmp_path / "data")["executive"]) == 12


def test_a_job_that_expires_returns_its_units_and_a_per_line_error_is_a_recorded_failure(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=2)  # 12 units
    with FakeGemini(Faults(batch_end_states=("BATCH_STATE_EXPIRED",)), api_key=KEY) as fake:
        stopped = run_main("sdg.py", args_for(tmp_path, fake, tiny_model), expect=1)
        assert "every batch job ended without results (JOB_STATE_EXPIRED)" in stopped.stderr
        assert fake.billed == []
        fake.faults.bad_request = 0.3  # now some lines come back as {"key", "error": 400 INVALID_ARGUMENT}
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model))
        failures = [json.loads(line) for line in (tmp_path / "data" / "sdg_failures.jsonl").open()]
        written = persona_rows(tmp_path / "data")["eli5"]
        assert failures and {f["reason"] for f in failures} == {"api_error:400"}
        assert len(written) + len(failures) == 12
        fake.faults.bad_request = 0.0
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model))  # only the failed units are sent again
        assert sorted(fake.billed) == sorted(set(fake.billed)) and len(fake.billed) == 12
        assert sum(job["lines"] for job in fake.jobs.values()) == 12 + 12 + len(failures)
    assert len(persona_rows(tmp_path / "data")["intuitive"]) == 12


def run_killed_at(step: str, tmp_path, tiny_model, fake) -> None:
    """Start sdg.py, SIGKILL it while the fake holds the request of `step` open, then let the fake go on."""
    fake.hold = {step}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "sdg.py"), *args_for(tmp_path, fake, tiny_model)],
        env={**os.environ, "GEMINI_API_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while step not in fake.held:
        assert process.poll() is None and time.monotonic() < deadline, f"sdg.py never reached {step}"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    fake.hold = set()
    fake.release.set()


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_model) -> dict[str, list]:
    """The rows of an uninterrupted batch run on 3 papers (18 units): what every killed run must end with."""
    folder = tmp_path_factory.mktemp("clean")
    write_papers(folder / "papers.json", papers=3)
    with FakeGemini(api_key=KEY) as clean:
        run_main("sdg.py", args_for(folder, clean, tiny_model), env={"GEMINI_API_KEY": KEY})
    return persona_rows(folder / "data")


@pytest.mark.parametrize("step", ["upload", "create", "download"])
def test_sigkill_in_any_phase_then_a_rerun_gives_a_clean_runs_rows_and_pays_once(
    tmp_path, tiny_model, api_key, clean_run, step
):
    write_papers(tmp_path / "papers.json", papers=3)  # 18 units
    with FakeGemini(api_key=KEY) as fake:
        run_killed_at(step, tmp_path, tiny_model, fake)
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model))
        assert sorted(fake.billed) == sorted(set(fake.billed)) and len(fake.billed) == 18  # no unit paid twice
        assert len(fake.jobs) == 1  # after a kill in create, the job is found by its display name, not re-sent
    assert persona_rows(tmp_path / "data") == clean_run
    events = [r["event"] for r in journal(tmp_path / "data")]
    expected = {
        "upload": ["submitting", "abandoned", "submitting", "created", "collected"],
        "create": ["submitting", "created", "collected"],
        "download": ["submitting", "created", "collected"],
    }
    assert events == expected[step]


def test_a_kill_while_results_are_written_is_completed_by_the_rerun_without_duplicates(tmp_path, tiny_model, api_key):
    """What a SIGKILL halfway through writing leaves on disk (the job not yet "collected", some rows written, the
    last one torn) is made here by hand from a finished run, since the writing itself takes milliseconds."""
    write_papers(tmp_path / "papers.json", papers=3)
    with FakeGemini(api_key=KEY) as fake:
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model))
        data = tmp_path / "data"
        clean = persona_rows(data)
        lines = (data / "sdg_batches.jsonl").read_text().splitlines()
        (data / "sdg_batches.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # "collected" never written
        for persona, keep in (("eli5", 7), ("intuitive", 6), ("executive", 6)):
            path = data / f"{persona}.jsonl"
            rows = path.read_text().splitlines()
            path.write_text("\n".join(rows[:keep]) + "\n" + rows[keep][:40])  # a torn last line
        run_main("sdg.py", args_for(tmp_path, fake, tiny_model))
        assert len(fake.jobs) == 1 and len(fake.billed) == 18  # downloaded again, not submitted again
    assert persona_rows(data) == clean
    assert [r["event"] for r in journal(data)][-1] == "collected"


def test_dry_run_shows_online_and_batch_prices(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    dry = ["--papers", str(tmp_path / "papers.json"), "--tokenizer", str(tiny_model), "--dry-run"]
    out = run_main("sdg.py", dry).stdout
    online = float(out.split("online ~$")[1].split(",")[0])
    batch = float(out.split("gemini-batch ~$")[1].split(" ")[0])
    assert batch == pytest.approx(online / 2, abs=0.01)


def test_the_fake_batch_api_speaks_v1_and_snake_case_and_cancels_as_the_client_expects(tmp_path):
    """The fake itself, driven by google-genai directly: a snake_case requests file on the v1 API, a job listed,
    cancelled, and its state read back as the client reports it."""
    from google import genai
    from google.genai import types

    lines = [
        {
            "key": "k1",
            "request": {
                "contents": [{"parts": [{"text": "Hash tables map keys to slots."}]}],
                "generation_config": {"response_mime_type": "application/json", "max_output_tokens": 100},
            },
        }
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with FakeGemini(Faults(batch_polls=1), api_key=KEY) as fake:
        options = types.HttpOptions(base_url=fake.base_url, api_version="v1")
        client = genai.Client(api_key=KEY, http_options=options)
        file = client.files.upload(file=str(requests), config={"mime_type": "application/jsonl"})
        job = client.batches.create(model="gemini-2.5-flash", src=file.name, config={"display_name": "snake"})
        assert job.state.value == "JOB_STATE_PENDING" and job.display_name == "snake"
        assert [j.name for j in client.batches.list()] == [job.name]
        done = client.batches.get(name=job.name)
        assert done.state.value == "JOB_STATE_SUCCEEDED"
        result = json.loads(client.files.download(file=done.dest.file_name).decode().splitlines()[0])
        parts = result["response"]["candidates"][0]["content"]["parts"]
        assert result["key"] == "k1" and "eli5" in json.loads("".join(part["text"] for part in parts))
        other = client.batches.create(model="gemini-2.5-flash", src=file.name, config={"display_name": "x"})
        client.batches.cancel(name=other.name)
        assert client.batches.get(name=other.name).state.value == "JOB_STATE_CANCELLED"


def test_a_bad_key_stops_a_batch_run_before_anything_is_paid_and_abandons_the_job(tmp_path, tiny_model, monkeypatch):
    write_papers(tmp_path / "papers.json", papers=1)
    monkeypatch.setenv("GEMINI_API_KEY", "wrong-key")
    with FakeGemini(api_key=KEY) as fake:
        message = run_main("sdg.py", args_for(tmp_path, fake, tiny_model), expect=1).stderr
        assert fake.jobs == {} and fake.billed == []
    assert "the Batch API refused to upload the requests: 400 INVALID_ARGUMENT: API key not valid" in message
    assert "GEMINI_API_KEY" in message  # the fix
    assert [r["event"] for r in journal(tmp_path / "data")] == ["submitting", "abandoned"]


def test_a_damaged_journal_is_an_error_naming_its_line_and_nothing_is_sent(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=1)
    data = tmp_path / "data"
    data.mkdir()
    (data / "sdg_batches.jsonl").write_text('{"event": "submitting", "display_name": "a", "keys": []}\nnot json\n')
    with FakeGemini(api_key=KEY) as fake:
        message = run_main("sdg.py", args_for(tmp_path, fake, tiny_model), expect=1).stderr
        assert fake.jobs == {} and fake.files == {}
    assert "sdg_batches.jsonl:2: not valid JSON" in message
    assert "Move it aside only once every job it names is finished" in message
