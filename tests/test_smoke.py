"""The whole chain end to end, offline: 3 generated papers to 3 trained LoRA adapters on a tiny Llama."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from smoke import problems

from paper_personas.personas import load_personas

# One worker runs every test that needs the session's smoke run, so `make smoke` runs once.
pytestmark = pytest.mark.xdist_group("smoke")


@pytest.fixture
def smoke(smoke_run):
    return smoke_run


def test_every_persona_trains_an_adapter_with_finite_losses_and_generates(smoke):
    _, result = smoke
    assert set(result["personas"]) == {"eli5", "intuitive", "executive"}
    assert problems(result) == []
    for r in result["personas"].values():
        assert len(r["train_losses"]) == 2 and len(r["val_losses"]) == 2  # reported at steps 2, 4 and 1, 4


def test_the_trainer_ran_with_the_repository_config_and_masked_prompts(smoke):
    work, _ = smoke
    ours = json.loads((ROOT / "adapter_config.json").read_text())
    saved = json.loads((work / "adapters" / "eli5" / "adapter_config.json").read_text())
    for key in (
        "fine_tune_type",
        "batch_size",
        "learning_rate",
        "lora_parameters",
        "max_seq_length",
        "mask_prompt",
        "report_to",
        "optimizer",
        "seed",
    ):
        assert saved[key] == ours[key], key
    assert saved["mask_prompt"] is True and saved["report_to"] == "wandb"


def test_the_brief_values_are_kept_in_adapter_config():
    config = json.loads((ROOT / "adapter_config.json").read_text())
    assert (config["fine_tune_type"], config["batch_size"], config["iters"], config["learning_rate"]) == (
        "lora",
        2,
        500,
        1e-05,
    )
    assert config["lora_parameters"] == {"rank": 8, "dropout": 0.0, "scale": 20.0}
    assert (config["max_seq_length"], config["report_to"], config["mask_prompt"]) == (2048, "wandb", True)


def test_rows_are_split_by_paper_in_the_chain(smoke):
    work, _ = smoke
    for persona in ("eli5", "intuitive", "executive"):
        folder = work / "data" / f"{persona}_2048"
        split = {
            name: {json.loads(line)["meta"]["paper_id"] for line in (folder / f"{name}.jsonl").open()}
            for name in ("train", "valid")
        }
        assert split["train"] and split["valid"] and not split["train"] & split["valid"]


SOCRATIC = """
[socratic]
user_prefix = "Teach me this with questions:\\n"
instructions = "You are a Socratic tutor. Lead the learner to the idea with questions, then answer them plainly."
fields = [
  { name = "questions", label = "Questions", words = [20, 120] },
  { name = "answer", label = "Answer", words = [40, 220] },
]
checks = { answer_words = [30, 400] }
"""


def test_a_fourth_persona_added_to_a_finished_project_works_end_to_end(smoke_run, tmp_path):
    """One edit, a personas file of the user's own, on a project that has run (a copy of the session's smoke
    run): every step follows, as a user reruns them: generate, trim, split, train the new persona, then analyze
    and evaluate, ending with four adapters and a four-perspective report."""
    from helpers import run_main
    from pdfs import make_paper_pdf
    from smoke import generate_rows, train_adapter, trim_and_split

    personas_file = tmp_path / "my-personas.toml"
    personas_file.write_text((ROOT / "personas.toml").read_text() + SOCRATIC)
    work, before = tmp_path / "work", smoke_run[0]
    shutil.copytree(before, work, ignore=shutil.ignore_patterns("tiny-llama"))
    model, log = before / "tiny-llama", []  # the model the three adapters were trained on, where it is
    generate_rows(work, model, personas_file, log)
    trim_and_split(work, model, personas_file, log)
    socratic = load_personas(personas_file)[-1]
    result = {"personas": {"socratic": train_adapter(work, model, socratic, log)}}
    for persona in ("eli5", "intuitive", "executive"):  # the three persona files as they were: nothing lost
        assert (work / "data" / f"{persona}.jsonl").read_bytes() == (before / "data" / f"{persona}.jsonl").read_bytes()
    rows = [json.loads(line) for line in (work / "data" / "socratic_2048" / "train.jsonl").open()]
    assert rows and all(r["messages"][0]["content"].startswith("Teach me this with questions:\n") for r in rows)
    assert all(r["messages"][1]["content"].startswith("**Questions:** ") for r in rows)
    assert all("\n\n**Answer:** " in r["messages"][1]["content"] for r in rows)

    pdf = tmp_path / "queues.pdf"
    pdf.write_bytes(make_paper_pdf("Lock-Free Queues", "Lock-free queues"))
    common = ["--model", str(model), "--adapters", str(work / "adapters"), "--personas-file", str(personas_file)]
    report_path = tmp_path / "report.md"
    analyzed = [*common, "--pdf", str(pdf), "--tokenizer", str(model), "--max-tokens", "4"]
    run_main("analyze.py", analyzed + ["--out", str(report_path), "--papers-dir", str(tmp_path / "papers")])
    report = json.loads(report_path.with_suffix(".json").read_text())
    assert report["personas"] == ["eli5", "intuitive", "executive", "socratic"]
    assert all(list(s["perspectives"]) == report["personas"] for s in report["sections"])
    assert report["sections"][0]["perspectives"]["socratic"]["prompt"].startswith("Teach me this with questions:\n")

    out = tmp_path / "eval"
    args = [*common, "--data", str(work / "data"), "--limit", "2", "--max-tokens", "4", "--out", str(out)]
    run_main("evaluate.py", args)
    assert problems({**result, "report": out / "eval.md"}) == []
    socratic = json.loads((out / "eval.json").read_text())["personas"]["socratic"]["systems"]
    assert set(socratic) == {"base", "prompted", "adapter"}
    content = {"topical", "copy_share", "degenerate", "format", "rouge_l", "tokens", "loss"}
    assert content <= set(socratic["adapter"]["summary"]) <= content | {"length_ok"}  # its one style check


def test_the_readme_quick_start_works_as_written_on_a_fresh_copy(smoke):
    """`make smoke` ran in a fresh copy (the fixture); every command it then prints works there as printed,
    and the README tells a newcomer to run them, with the venv's Python."""
    work, result = smoke
    # Each step's log names the command as typed at the root and the folder its output really went to
    log, next_steps = result["stdout"].split("Next, on what smoke made", 1)
    outputs = [line.rsplit(" -> ", 1)[1] for line in log.splitlines() if " -> " in line and "smoke:" not in line]
    # papers.json, data/, 3 trimmed files, 3 split folders, 3 kept adapters (step 5's best), the report
    assert len(outputs) == 1 + 1 + 3 + 3 + 3 + 1 and all(f"{work}/" in path for path in outputs), outputs
    assert "valid 5 rows / 1 paper;" in log  # not "1 papers"
    printed = next_steps.splitlines()[1:]
    commands = [line.strip() for line in printed if line.startswith("  .venv/bin/python ")]
    assert [c.split()[1] for c in commands] == ["analyze.py", "evaluate.py"]
    for command in commands:
        ran = subprocess.run(shlex.split(command), cwd=result["clone"], capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0 and "Traceback" not in ran.stderr, (command, ran.stderr[-2000:])
        assert ran.stdout.startswith("done: ") or "\ndone: " in ran.stdout, ran.stdout
    assert (work / "reports" / "2401.00001.md").exists() and (work / "reports" / "eval.md").exists()
    # Smoke and the commands it printed wrote nothing outside .smoke/ (Python's bytecode caches aside)
    clone = result["clone"]
    files = {
        str((Path(top) / name).relative_to(clone))
        for top, dirs, names in os.walk(clone)
        if Path(top).relative_to(clone).parts[:1] != (".smoke",) and "__pycache__" not in top
        for name in names
    }
    assert files == set(result["copied"]), files ^ set(result["copied"])
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make test" in quick_start and "make smoke" in quick_start and "source .venv/bin/activate" in quick_start
    assert ".smoke/" in quick_start


def test_a_step_killed_by_a_signal_is_named_with_the_signal_and_what_to_try(tmp_path):
    from smoke import StepFailed, run

    crash = "import os, signal, sys; print('extracting...'); sys.stdout.flush(); os.kill(os.getpid(), signal.SIGILL)"
    log: list[str] = []
    with pytest.raises(StepFailed) as failed:
        run([sys.executable, "-c", crash], tmp_path, log)
    message = str(failed.value)
    assert message.startswith("-c killed by SIGILL (illegal instruction); the CPU met an instruction it lacks")
    assert "PAPER_PERSONAS_BLAS=reference make smoke" in message and "extracting..." in message
    assert "exited -4" not in message and "Traceback" not in message
    assert len(log) == 1  # the step is logged, as the ones before it were


def test_smoke_output_has_no_colour_codes_or_third_party_chatter(smoke):
    """Piped to a file, the log is plain text; wandb's run banner and git warning, transformers' long-sequence
    warning and scipy's degenerate-data warning stay out of it."""
    _, result = smoke
    log = result["stdout"]
    assert "\x1b[" not in log
    for chatter in ("wandb:", "git root", "Token indices sequence length", "DegenerateDataWarning"):
        assert chatter not in log, chatter
