import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from fake_gemini import FAULT_KINDS, QUALITY_FAULTS, FakeGemini, Faults
from helpers import run_main, run_script, tree_hashes, write_papers

from paper_personas import units
from paper_personas.personas import load_personas, system_instruction
from paper_personas.rows import make_row
from paper_personas.tokens import count_tokens, load_tokenizer

KEY = "test-key-5f3a9c"  # must never appear in anything sdg.py writes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


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
        "2048",
        *extra,
    ]


def keys(path):
    return [json.loads(line)["meta"]["key"] for line in path.read_text().splitlines()]


def all_unit_keys(tmp_path, tiny_model, max_tokens=2048):
    """Every unit of papers.json as sdg.py would cut it, computed from units.py directly."""
    tokenizer = load_tokenizer(str(tiny_model))
    papers = json.loads((tmp_path / "papers.json").read_text())["papers"]
    budget = units.chunk_budget(max_tokens, load_personas())
    return {u.key for u in units.build_units(papers, budget, lambda t: count_tokens(tokenizer, t))[0]}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def test_under_a_mix_of_faults_every_unit_is_written_once_per_persona_or_recorded(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=12)  # 72 units: enough for every kind of fault to happen
    faults = Faults(
        rate_429=0.1,
        bare_429=0.04,
        finish_other=0.03,
        refusal=0.03,
        wrong_language=0.03,
        repeated_label=0.03,
        copied=0.03,
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
        out = run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model, "--max-retries", "8")).stdout
    data = tmp_path / "data"
    written = [keys(data / f"{p}.jsonl") for p in ("eli5", "intuitive", "executive")]
    failed = {json.loads(line)["key"] for line in (data / "sdg_failures.jsonl").read_text().splitlines()}
    assert written[0] == written[1] == written[2]  # the same units, in the same order, for each persona
    assert len(written[0]) == len(set(written[0]))  # no duplicates
    assert set(written[0]) | failed == all_unit_keys(tmp_path, tiny_model)
    assert not set(written[0]) & failed
    assert set(fake.outcomes) == {"ok", *FAULT_KINDS, *QUALITY_FAULTS}  # every kind of fault really happened
    reasons = {json.loads(line)["reason"] for line in (data / "sdg_failures.jsonl").read_text().splitlines()}
    assert "api_error:400" in reasons  # a request rejected for its content fails that unit, not the run
    rows = [json.loads(line) for line in (data / "eli5.jsonl").read_text().splitlines()]
    bad = ("I'm sorry", "Imagine une", "**Analogy:** **Analogy:**", "Sentence ")
    assert not [r for r in rows if r["messages"][1]["content"].removeprefix("**Analogy:** ").startswith(bad)]
    stats = json.loads((data / "sdg_stats.json").read_text())["runs"][-1]
    assert stats["done"] == len(written[0]) and stats["failed"] == len(failed) and stats["retries"] > 0
    assert stats["prompt_tokens"] > 0 and stats["cost_usd"] > 0
    # Every refused attempt is counted by reason, the ones a later attempt made good included.
    rejected = stats["rejections_by_reason"]
    planted = {"refusal": "refusal", "wrong_language": "wrong_language", "repeated_label": "repeated_label"}
    assert all(rejected.get(reason, 0) >= fake.outcomes[fault] for fault, reason in planted.items()), rejected
    assert f"done: {len(written[0])} ok" in out and f"{sum(rejected.values())} answers rejected (" in out


def test_rows_follow_the_persona_format_and_mlx_lm_loads_them(tmp_path, tiny_model, api_key):
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.utils import load_tokenizer

    write_papers(tmp_path / "papers.json", papers=1, sections=2)
    with FakeGemini(api_key=KEY) as fake:
        run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model))
    rows = {
        p: [json.loads(line) for line in (tmp_path / "data" / f"{p}.jsonl").read_text().splitlines()]
        for p in ("eli5", "intuitive", "executive")
    }
    # Rows are appended as units finish, then put in papers.json's order at the end of the run.
    first = next(r for r in rows["eli5"] if (r["meta"]["section"], r["meta"]["chunk"]) == (0, 0))
    assert first["messages"][0]["content"].startswith("Explain this like I'm 5:\nSentence 0 of section 0 in paper 0:")
    assert first["messages"][1]["content"].startswith("**Analogy:** ")
    assert "\n\n**Explanation:** " in first["messages"][1]["content"]
    assert rows["intuitive"][0]["messages"][0]["content"].startswith("Explain the intuition behind this:\n")
    assert rows["executive"][0]["messages"][1]["content"].startswith("**Verdict:** ")
    assert set(first["meta"]) == {"paper_id", "section", "chunk", "key", "model", "model_version"}
    assert first["meta"]["model_version"] == "gemini-2.5-flash"  # what the API answered, not what was asked
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
        run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model))
        data = tmp_path / "data"
        complete = {p: (data / f"{p}.jsonl").read_text() for p in ("eli5", "intuitive", "executive")}
        # A kill between personas: the last unit reached eli5 only, and intuitive's last line is half written.
        intuitive = complete["intuitive"].splitlines(keepends=True)
        (data / "intuitive.jsonl").write_text("".join(intuitive[:-1]) + intuitive[-1][:40])
        (data / "executive.jsonl").write_text("".join(complete["executive"].splitlines(keepends=True)[:-1]))
        fake.request_times.clear()
        run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model))
    assert len(fake.request_times) == 1  # only the unfinished unit is paid for again
    for persona, text in complete.items():
        assert keys(data / f"{persona}.jsonl") == [json.loads(line)["meta"]["key"] for line in text.splitlines()]


def test_dry_run_makes_no_request_and_needs_no_key(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json")
    with FakeGemini(api_key=KEY) as fake:
        out = run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model, "--dry-run")).stdout
    assert fake.request_times == []
    assert (
        f"0 units already done in {tmp_path / 'data'}/, {len(all_unit_keys(tmp_path, tiny_model))} to generate" in out
    )
    assert "$" in out


def test_a_dry_run_writes_nothing_says_what_is_done_and_names_a_foreign_row(tmp_path, tiny_model, api_key):
    """A torn last line stays as it is (only a real run cuts it); a row sdg.py did not write is a clean error."""
    write_papers(tmp_path / "papers.json", papers=1)
    with FakeGemini(api_key=KEY) as fake:
        run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model))
        data = tmp_path / "data"
        eli5 = data / "eli5.jsonl"
        done = len(eli5.read_text().splitlines())
        rows = eli5.read_text().splitlines(keepends=True)
        eli5.write_text("".join(rows[:-1]) + rows[-1][:40])  # a kill in the middle of the last append
        before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
        result = run_sdg_cli(tmp_path, fake, tiny_model, "--dry-run")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert f"{done - 1} units already done" in result.stdout  # the torn unit is not done: the real run redoes it
        assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before
        eli5.write_text('{"messages": []}\n')
        result = run_sdg_cli(tmp_path, fake, tiny_model, "--dry-run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{eli5}:1: row without meta.key" in result.stderr and "Move the file aside" in result.stderr


def test_a_dry_run_says_when_the_real_run_could_not_write_its_out_dir(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    (tmp_path / "data").write_text("a file where the rows' folder would go")
    with FakeGemini(api_key=KEY) as fake:
        result = run_sdg_cli(tmp_path, fake, tiny_model, "--dry-run")
    assert result.returncode == 0 and "6 to generate" in result.stdout
    assert f"a real run would stop before its first request: cannot write {tmp_path / 'data'}" in result.stdout


def run_sdg_cli(tmp_path, fake, tiny_model, *extra):
    return subprocess.run(
        [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model, *extra)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GEMINI_API_KEY": KEY},
    )


def test_the_api_key_never_reaches_any_file(tmp_path, tiny_model, api_key):
    write_papers(tmp_path / "papers.json", papers=1)
    with FakeGemini(Faults(rate_429=0.3, retry_delay_s=0.01), api_key=KEY) as fake:
        run_main("sdg.py", sdg_args(tmp_path, fake, tiny_model, "-v"))
    written = list((tmp_path / "data").iterdir())
    # 3 persona files, failures, the ledger and the (empty) lock file
    assert sorted(p.name for p in written) == sorted(
        [".sdg.lock", "eli5.jsonl", "intuitive.jsonl", "executive.jsonl", "sdg_failures.jsonl", "sdg_stats.json"]
    )
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
    rows = {p.name: make_row(p, unit, answers, "gemini-2.5-flash") for p in load_personas()}
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
    # The teacher's prompt of the three personas as it was before they became data, but for the lengths: the
    # one-sentence verdict is asked for in 10-40 words, no longer 40-220.
    assert system_instruction(load_personas()).startswith(
        "You turn one section of a research paper into training data for three explainer personas. Answer only "
        "from the text. Keep each field to the words given for it, in plain prose without headings.\n\neli5: You "
        "are a kindergarten teacher who is a master of analogies. Explain the single big idea of the text with one "
        "concrete, physical analogy"
    )
    assert system_instruction(load_personas()).endswith(
        "executive: You are a sceptical venture-capital analyst. Put the bottom line first as a one-sentence "
        "verdict, then summarise value, utility, cost and hardware needs. Ignore novelty unless it changes speed "
        "or cost. Fields: verdict 10-40 words, summary 40-220 words."
    )


def sdg_answers_model():
    from paper_personas.personas import answers_schema

    return answers_schema(load_personas())


# ----------------------------------------------------------------------------- issue 14: loud failures, no paying twice


def run_sdg(tmp_path, fake, tiny_model, *extra, env_key=KEY, timeout=120):
    """sdg.py as a user runs it, in a subprocess; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["GEMINI_API_KEY"] = env_key
    return subprocess.run(
        [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "faults, message",
    [
        (Faults(location_blocked=True), "400 FAILED_PRECONDITION: User location is not supported for the API use."),
        (Faults(service_disabled=True), "403 PERMISSION_DENIED: Generative Language API has not been used"),
        (Faults(html_body=True), "is not JSON"),
        (Faults(bad_request=1.0), "the same error on 3 units in a row"),  # an unknown 400 that hits every unit
    ],
)
def test_an_error_every_request_meets_stops_the_run_within_10_requests(tmp_path, tiny_model, faults, message):
    write_papers(tmp_path / "papers.json", papers=6)
    with FakeGemini(faults, api_key=KEY) as fake:
        result = run_sdg(tmp_path, fake, tiny_model)
        requests = len(fake.request_times)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert requests <= 10  # at most the 8 in flight and the 2 that followed before the third failure
    ledger = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())
    assert ledger["runs"][-1]["outcome"].startswith("stopped:")
    # The ledger counts attempts: one cancelled on its way out counts, though the server never saw it.
    assert requests <= ledger["runs"][-1]["requests"] <= requests + 8


def test_a_spent_daily_quota_stops_at_once_with_what_was_spent_and_how_to_resume(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=6)
    with FakeGemini(Faults(daily_quota_after=4), api_key=KEY) as fake:
        result = run_sdg(tmp_path, fake, tiny_model, "--concurrency", "2")
        requests = len(fake.request_times)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the daily quota is spent (GenerateRequestsPerDayPerProjectPerModel-FreeTier)" in result.stderr
    assert "Rerun after the daily reset" in result.stderr and "4 units done this run" in result.stderr
    assert requests <= 7  # 4 answers, the 429s of the 2 units in flight, one more started: no retries
    assert len((tmp_path / "data" / "eli5.jsonl").read_text().splitlines()) == 4  # what was paid for is kept


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "gemini-2.5-pro"], "gemini-2.5-pro only works in thinking mode: pass --thinking-budget 128"),
        (["--thinking-budget", "99999"], "--thinking-budget 99999 is outside gemini-2.5-flash's range 1-24576"),
        (["--base-url", "localhost:8080"], "--base-url 'localhost:8080' is not an http(s) URL"),
        (["--max-seq-length", "512"], "--max-seq-length 512 leaves no room for a useful chunk"),
        (["--limit", "-2"], "--limit, --max-retries and --rpm must be 0 or more"),
        (["--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_settings_the_api_would_reject_are_caught_before_any_request(tmp_path, tiny_model, extra, message):
    write_papers(tmp_path / "papers.json", papers=1)
    with FakeGemini(api_key=KEY) as fake:
        args = sdg_args(tmp_path, fake, tiny_model) + extra  # a later flag wins
        result = subprocess.run(
            [sys.executable, str(ROOT / "sdg.py"), *args],
            env={**os.environ, "GEMINI_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert fake.request_times == []
    assert result.returncode == 2 and message in result.stderr.replace("\n", " ")


def test_a_second_run_on_the_same_folder_exits_at_once(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=4)
    with FakeGemini(Faults(latency_s=0.3), api_key=KEY) as fake:
        cmd = [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model, "--concurrency", "1")]
        env = {**os.environ, "GEMINI_API_KEY": KEY}
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not fake.request_times:
            time.sleep(0.02)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert first.wait(timeout=120) == 0
    assert second.returncode == 1 and "another sdg.py run is writing to" in second.stderr
    keys_written = keys(tmp_path / "data" / "eli5.jsonl")
    assert len(keys_written) == len(set(keys_written)) == len(all_unit_keys(tmp_path, tiny_model))


def test_after_papers_json_changes_each_persona_file_mirrors_it_and_only_changed_text_is_paid(tmp_path, tiny_model):
    papers_path = write_papers(tmp_path / "papers.json", papers=4)
    with FakeGemini(api_key=KEY) as fake:
        assert run_sdg(tmp_path, fake, tiny_model).returncode == 0
        data = json.loads(papers_path.read_text())
        del data["papers"][0]["sections"][0]  # re-indexes every later section of paper 0
        data["papers"][1]["sections"][1]["text"] += " An edited sentence."  # one section's text changes
        del data["papers"][3]  # a paper removed
        papers_path.write_text(json.dumps(data))
        fake.request_times.clear(), fake.sections.clear()
        result = run_sdg(tmp_path, fake, tiny_model)
    assert result.returncode == 0
    assert len(fake.request_times) == 1 and "An edited sentence." in fake.sections[0]  # only the edit is paid
    current = all_unit_keys(tmp_path, tiny_model)
    for persona in ("eli5", "intuitive", "executive"):
        rows = [json.loads(line) for line in (tmp_path / "data" / f"{persona}.jsonl").read_text().splitlines()]
        assert sorted(r["meta"]["key"] for r in rows) == sorted(current)  # one row per current unit
        prompts = [r["messages"][0]["content"] for r in rows]
        assert len(prompts) == len(set(prompts))
    orphans = [json.loads(line) for line in (tmp_path / "data" / "sdg_orphans.jsonl").read_text().splitlines()]
    # per persona: paper 0's deleted section, paper 1's old text, paper 3's 6 units
    assert len(orphans) == 3 * (1 + 1 + 6) and {o["reason"] for o in orphans} == {"stale"}
    assert "24 orphaned rows moved (24 stale)" in result.stdout


def test_duplicate_rows_and_keys_of_the_old_spelling_are_reconciled_without_paying(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=2)
    with FakeGemini(api_key=KEY) as fake:
        assert run_sdg(tmp_path, fake, tiny_model).returncode == 0
        data = tmp_path / "data"
        for persona in ("eli5", "intuitive", "executive"):
            rows = [json.loads(line) for line in (data / f"{persona}.jsonl").read_text().splitlines()]
            for row in rows:  # the key as sdg.py spelled it before: paper:section:chunk:digest
                paper, digest = row["meta"]["key"].split(":")
                row["meta"]["key"] = f"{paper}:{row['meta']['section']}:{row['meta']['chunk']}:{digest}"
            (data / f"{persona}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:2]))
        fake.request_times.clear()
        result = run_sdg(tmp_path, fake, tiny_model)
    assert result.returncode == 0 and fake.request_times == []  # nothing paid again
    assert "6 orphaned rows moved (6 duplicate)" in result.stdout
    for persona in ("eli5", "intuitive", "executive"):
        assert sorted(keys(data / f"{persona}.jsonl")) == sorted(all_unit_keys(tmp_path, tiny_model))


def test_the_ledger_keeps_every_run_and_their_total_and_survives_ctrl_c(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=2)
    with FakeGemini(api_key=KEY) as fake:
        assert run_sdg(tmp_path, fake, tiny_model, "--limit", "3").returncode == 0
        assert run_sdg(tmp_path, fake, tiny_model).returncode == 0
    ledger = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())
    first, second = ledger["runs"]
    assert (first["done"], second["done"]) == (3, len(all_unit_keys(tmp_path, tiny_model)) - 3)
    assert ledger["total"]["cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"], abs=1e-4)
    assert ledger["total"]["requests"] == first["requests"] + second["requests"]


def test_ctrl_c_and_the_ledger(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=6)
    with FakeGemini(Faults(latency_s=0.05), api_key=KEY) as fake:
        cmd = [sys.executable, str(ROOT / "sdg.py"), *sdg_args(tmp_path, fake, tiny_model, "--concurrency", "2")]
        proc = subprocess.Popen(cmd, env={**os.environ, "GEMINI_API_KEY": KEY}, stderr=subprocess.PIPE, text=True)
        eli5 = tmp_path / "data" / "eli5.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not eli5.exists() or eli5.read_text().count("\n") < 3):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    run = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())["runs"][-1]
    assert run["outcome"] == "interrupted" and run["requests"] >= 3 and run["cost_usd"] > 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["papers"][1].update(sections=None), "paper '2401.00001': \"sections\" is NoneType, not a list"),
        (lambda d: d["papers"][0]["sections"][2].pop("text"), "paper '2401.00000': sections[2] has no text field"),
        (lambda d: d["papers"][0].pop("id"), 'papers[0] is not a paper record with an "id"'),
    ],
)
def test_a_damaged_papers_json_names_the_paper_and_the_field(tmp_path, tiny_model, edit, message):
    papers_path = write_papers(tmp_path / "papers.json", papers=2)
    data = json.loads(papers_path.read_text())
    edit(data)
    papers_path.write_text(json.dumps(data))
    with FakeGemini(api_key=KEY) as fake:
        result = run_sdg(tmp_path, fake, tiny_model)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_a_papers_json_with_no_papers_sets_no_row_aside(tmp_path, tiny_model):
    """Step 1 failed (no network) and wrote its failures only: every row would look orphaned, so nothing runs."""
    write_papers(tmp_path / "papers.json", papers=1)
    with FakeGemini(api_key=KEY) as fake:
        assert run_sdg(tmp_path, fake, tiny_model).returncode == 0
        before = tree_hashes(tmp_path / "data")
        reason = "cannot reach the arXiv API at https://export.arxiv.org/api/query (ConnectionError)"
        failures = [{"id": "search:ids", "stage": "search", "reason": reason}]
        (tmp_path / "papers.json").write_text(json.dumps({"papers": [], "failures": failures}))
        result = run_sdg(tmp_path, fake, tiny_model)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"papers.json holds no papers (1 failure recorded, first search:ids: {reason})" in result.stderr
    assert "rerun paperExtractor.py" in result.stderr and tree_hashes(tmp_path / "data") == before


def test_an_unwritable_output_folder_says_so(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    (tmp_path / "a-file").write_text("not a folder")
    with FakeGemini(api_key=KEY) as fake:
        result = run_sdg(tmp_path, fake, tiny_model, "--out-dir", str(tmp_path / "a-file" / "data"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write to" in result.stderr and "pass --out-dir a folder you can write to" in result.stderr


def test_an_output_folder_the_user_cannot_write_to_is_named_before_any_request(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with FakeGemini(api_key=KEY) as fake:
        args = sdg_args(tmp_path, fake, tiny_model, "--out-dir", str(locked / "data"))
        result = run_script("sdg.py", *args, env={"GEMINI_API_KEY": KEY}, as_a_user=True)
        assert fake.request_times == []
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write to {locked / 'data'}/ (Permission denied); pass --out-dir" in result.stderr
    assert not any(locked.iterdir())


def test_a_run_in_which_nothing_succeeds_exits_non_zero(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    with FakeGemini(Faults(safety=1.0), api_key=KEY) as fake:
        result = run_sdg(tmp_path, fake, tiny_model)
    assert result.returncode == 1 and "no unit succeeded" in result.stderr
    assert "blocked:SAFETY" in (tmp_path / "data" / "sdg_failures.jsonl").read_text()


def test_a_blocked_prompt_is_asked_once_and_finish_reasons_are_reported_as_themselves(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=2)
    with FakeGemini(Faults(empty_candidates=0.3, finish_other=0.7), api_key=KEY, seed=4) as fake:
        run_sdg(tmp_path, fake, tiny_model)
        outcomes = dict(fake.outcomes)
    reasons = [
        json.loads(line)["reason"] for line in (tmp_path / "data" / "sdg_failures.jsonl").read_text().splitlines()
    ]
    assert "blocked_prompt:OTHER" in reasons and "finish:OTHER" in reasons
    # a blocked prompt costs one request; a unit whose answers stopped for OTHER is asked 3 times
    assert outcomes.get("empty_candidates", 0) == reasons.count("blocked_prompt:OTHER")


def test_a_paragraph_with_no_sentence_end_is_cut_into_units_that_fit():
    count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731 - one token per word
    text = " ".join(f"w{i}" for i in range(90_000))  # 90,000 "tokens", no sentence end, no paragraph break
    chunks = units.chunk_text(text, budget=1500, count=count)
    assert max(count(chunks)) <= 1500 and " ".join(chunks) == text
    blob = "x" * 50_000  # not even a space: cut by characters
    by_chars = lambda texts: [len(t) // 4 + 1 for t in texts]  # noqa: E731
    pieces = units.chunk_text(blob, budget=300, count=by_chars)
    assert max(by_chars(pieces)) <= 300 and "".join(pieces) == blob


def test_limit_takes_units_from_each_paper_in_turn():
    made = [units.Unit(f"p{p}", s, 0, "Title", "Heading", f"text {p} {s}") for p in range(3) for s in range(4)]
    taken = units.across_papers(made, 5)
    assert [u.paper_id for u in taken] == ["p0", "p1", "p2", "p0", "p1"]  # not five of the first paper's
    assert units.across_papers(made, 0) == made


@pytest.mark.parametrize(
    "args, said",
    [
        (["--teacher", "openai", "--model", "m"], "--teacher openai needs --base-url"),
        (["--teacher", "openai", "--base-url", "localhost:8000/v1", "--model", "m"], "is not an http(s) URL"),
        (["--teacher", "mlx"], "--teacher mlx needs --model"),
    ],
)
def test_teacher_settings_are_checked_before_anything_runs(tmp_path, args, said):
    result = run_script("sdg.py", *args, "--papers", tmp_path / "missing.json")
    assert result.returncode == 2 and said in result.stderr


def test_rows_end_in_the_units_order_whatever_order_they_finished_in(tmp_path, tiny_model):
    """Eight requests in flight finish in any order; the persona files end in papers.json's order, so a rerun of
    the same inputs gives identical bytes."""
    write_papers(tmp_path / "papers.json", papers=3)
    runs = []
    for attempt in range(2):
        with FakeGemini(Faults(latency_s=0.02, jitter_s=0.05), api_key=KEY) as fake:
            result = run_sdg(tmp_path, fake, tiny_model, "--concurrency", "8", "--out-dir", tmp_path / f"data{attempt}")
            assert result.returncode == 0, result.stderr[-2000:]
        out = tmp_path / f"data{attempt}"
        runs.append({p: (out / f"{p}.jsonl").read_bytes() for p in ("eli5", "intuitive", "executive")})
    assert runs[0] == runs[1]
    keys = [json.loads(line)["meta"]["key"] for line in runs[0]["eli5"].decode().splitlines()]
    papers_order = [k.split(":")[0] for k in keys]
    assert papers_order == sorted(papers_order)  # paper by paper, as papers.json lists them
