"""The local MLX teacher (paper_personas/teachers/local_mlx.py) through step 2, on a tiny random Llama: answers
constrained by the schema's grammar, refused by the gate as the noise they are, and Ctrl-C."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from helpers import run_main, run_script, write_papers

from paper_personas.personas import answers_schema, load_personas
from paper_personas.teachers import local_mlx


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


def run_step2(args, env=None, timeout=300):
    return run_script("sdg.py", *args, env=env, timeout=timeout)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# What the quality gate calls the random model's noise: degenerate, or in another writing system or language.
NOISE_REASONS = {
    "too_short",
    "repetitive",
    "identifier_slug",
    "numbered_fragments",
    "wrong_script",
    "wrong_language",
    "unreadable",
}


def test_mlx_teacher_gives_only_schema_valid_answers_from_a_random_model_and_the_gate_refuses_its_noise(
    tmp_path, tiny_model
):
    """No key and no server: the tiny random Llama, constrained by llguidance, answers every unit with JSON the
    schema accepts, eight sequences decoded together. What it writes is noise, and the gate writes none of it."""
    write_papers(tmp_path / "papers.json", papers=2)  # 12 units: a batch of 8, then 4 more as slots free
    args = ["--teacher", "mlx", "--model", str(tiny_model), "--papers", str(tmp_path / "papers.json")]
    args += ["--out-dir", str(tmp_path / "data"), "--tokenizer", str(tiny_model), "--max-output-tokens", "400"]
    assert "no unit succeeded" in run_main("sdg.py", [*args, "--quality-attempts", "1"], expect=1).stderr
    data = tmp_path / "data"
    run = json.loads((data / "sdg_stats.json").read_text())["runs"][-1]
    assert run["teacher"] == "mlx" and run["cost_usd"] == 0 and run["requests"] == 12 and run["done"] == 0
    assert sum(run["rejections_by_reason"].values()) == 12  # every answer parsed: no invalid_json, no max_tokens
    assert set(run["rejections_by_reason"]) <= NOISE_REASONS, run["rejections_by_reason"]
    assert all(not rows(data / f"{p}.jsonl") for p in ("eli5", "intuitive", "executive"))


def test_the_grammar_bounds_every_field_so_the_answer_always_closes():
    schema = answers_schema(load_personas()).model_json_schema()
    grammar = local_mlx.lark_grammar(schema, string_max_tokens=77)
    assert local_mlx.string_fields(schema) == 6 and grammar.count("[max_tokens=77]") == 6
    assert '"\\"eli5\\":"' in grammar and "{39,}" in grammar  # keys in order, 40 characters at least
    from llguidance import LLMatcher

    assert LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(grammar)) == ""
    with pytest.raises(ValueError, match="cannot constrain a 'integer' field"):
        local_mlx.lark_grammar({"type": "object", "properties": {"n": {"type": "integer"}}}, 10)


def test_without_any_key_the_error_names_the_local_teacher(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    result = run_step2(["--papers", str(tmp_path / "papers.json"), "--tokenizer", str(tiny_model)])
    assert result.returncode == 1 and "--teacher mlx --model PATH_OR_HF_ID" in result.stderr


def test_an_mlx_model_that_cannot_be_loaded_stops_the_run_with_the_reason(tmp_path, tiny_model):
    write_papers(tmp_path / "papers.json", papers=1)
    args = ["--teacher", "mlx", "--model", str(tmp_path / "no-such-model"), "--papers", str(tmp_path / "papers.json")]
    result = run_step2([*args, "--out-dir", str(tmp_path / "data"), "--tokenizer", str(tiny_model)])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot load '{tmp_path / 'no-such-model'}' with mlx_lm" in result.stderr
    assert "--model must be an mlx_lm model folder or Hugging Face id" in result.stderr
    assert "no such folder" in result.stderr and "HFValidationError" not in result.stderr
    assert "Nothing was sent." in result.stderr and "Stopped after" not in result.stderr  # no request was made


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_local_teacher_at_once_and_the_rerun_finishes_without_duplicates(tmp_path, tiny_model, stop):
    """The random model's units end as recorded failures (its noise never passes the gate): the bookkeeping under
    Ctrl-C is the same, each unit recorded once, and the rerun tries again only what is not done. SIGTERM (a
    `kill`) ends the run as Ctrl-C does. While it works, the bar shows the model's tokens per second."""
    write_papers(tmp_path / "papers.json", papers=1)  # 6 units
    args = ["--teacher", "mlx", "--model", str(tiny_model), "--papers", str(tmp_path / "papers.json")]
    args += ["--out-dir", str(tmp_path / "data"), "--tokenizer", str(tiny_model), "--concurrency", "2"]
    args += ["--quality-attempts", "1", "--max-output-tokens", "400"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "sdg.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    failures = tmp_path / "data" / "sdg_failures.jsonl"
    deadline = time.monotonic() + 120
    while not (failures.exists() and failures.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, "no unit was finished"
        time.sleep(0.05)
    interrupted = time.monotonic()
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and time.monotonic() - interrupted < 10 and "Traceback" not in stderr
    assert "interrupted: finished units are saved" in stderr
    assert re.search(r"tok/s=\d+\.\d", stderr) and "in_flight=" in stderr, stderr[-2000:]
    ledger = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())
    assert ledger["runs"][-1]["outcome"] == "interrupted"
    assert ledger["runs"][-1]["done"] + ledger["runs"][-1]["failed"] < 6
    assert "no unit succeeded" in run_main("sdg.py", args, expect=1).stderr
    recorded = [f["key"] for f in rows(failures)] + [r["meta"]["key"] for r in rows(tmp_path / "data" / "eli5.jsonl")]
    assert len(recorded) == len(set(recorded)) == 6  # every unit once: written, or failed with its reason
