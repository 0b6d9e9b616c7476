import json
import signal
import subprocess
import sys
import time

import mlx.core as mx
import mlx_lm
import pytest
from conftest import ROOT
from fake_arxiv import FakeArxiv
from helpers import run_main, run_script, tree_hashes
from mlx.utils import tree_flatten
from pdfs import make_paper_pdf

from paper_personas import models

# One worker runs every test that needs the session's smoke run, so `make smoke` runs once.
pytestmark = pytest.mark.xdist_group("smoke")


def analyze_args(work, *extra):
    model = str(work / "tiny-llama")
    return [
        "--model",
        model,
        "--adapters",
        str(work / "adapters"),
        "--tokenizer",
        model,
        "--max-tokens",
        "8",
        "--papers",
        str(work / "papers.json"),
        "--papers-dir",
        str(work / "papers"),
        *extra,
    ]


def test_a_generated_pdf_gets_a_report_with_three_perspectives_per_section(smoke_run, tmp_path):
    work, _ = smoke_run
    pdf = tmp_path / "queues.pdf"
    pdf.write_bytes(make_paper_pdf("Lock-Free Queues", "Lock-free queues"))
    out = tmp_path / "report.md"
    printed = run_main("analyze.py", analyze_args(work, "--pdf", str(pdf), "--out", str(out))).stdout
    report = json.loads(out.with_suffix(".json").read_text())
    markdown = out.read_text()
    assert report["title"] == "Lock-Free Queues"
    assert [s["heading"] for s in report["sections"]] == [
        "Abstract",
        "1 Introduction",
        "2 Method",
        "3 Experiments",
        "4 Conclusion",
    ]
    for section in report["sections"]:
        assert list(section["perspectives"]) == ["eli5", "intuitive", "executive"]
        assert all(p["tokens"] == 8 for p in section["perspectives"].values())  # 8 tokens generated for each
        assert f"## {section['heading']}" in markdown
    assert markdown.count("### eli5") == markdown.count("### executive") == 5
    assert "done: 5 sections x 3 personas, 120 tokens generated" in printed


def test_the_base_model_is_loaded_once_and_adapters_are_swapped_in(smoke_run, monkeypatch, tmp_path):
    work, _ = smoke_run
    loads = []
    real_load = mlx_lm.load
    monkeypatch.setattr(mlx_lm, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    configs = models.adapter_configs(work / "adapters", ["eli5", "executive"], str(work / "tiny-llama"))
    persona_model = models.PersonaModel(str(work / "tiny-llama"), work / "adapters", configs)
    for persona in ("eli5", "executive", "eli5"):
        persona_model.use(persona)
        trained = mx.load(str(work / "adapters" / persona / "adapters.safetensors"))
        live = dict(tree_flatten(persona_model.model.parameters()))
        assert all(mx.array_equal(live[name], weight).item() for name, weight in trained.items())
    assert len(loads) == 1
    # and through the script: one load for all three personas
    logged = run_main("analyze.py", analyze_args(work, "--paper", "2401.00001", "--out", str(tmp_path / "r.md")))
    assert logged.stderr.count("loading the base model") == 1


def test_each_persona_sees_exactly_its_training_prompt(smoke_run, tmp_path):
    work, _ = smoke_run
    run_main("analyze.py", analyze_args(work, "--paper", "2401.00000", "--out", str(tmp_path / "r.md")))
    report = json.loads((tmp_path / "r.json").read_text())
    for persona in ("eli5", "intuitive", "executive"):
        training = {
            row["meta"]["key"]: row["messages"][0]["content"]
            for row in map(json.loads, (work / "data" / f"{persona}.jsonl").read_text().splitlines())
        }
        for section in report["sections"]:
            assert section["perspectives"][persona]["prompt"] == training[section["key"]]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--paper", "2401.00000", "--adapters", "nowhere"], "no trained adapter in nowhere/eli5/: train it"),
        (["--paper", "2401.00000", "--model", "mlx-community/Llama-3.2-3B-Instruct-4bit"], "was trained on"),
        (["--paper", "9999.99999"], "paper '9999.99999' is not in"),
        (["--id", "9999.99999"], "paperExtractor.py could not get the paper: arXiv has no paper with this id"),
        # a file that is no PDF gets step 1's reason, naming the file the user gave
        (["--pdf", str(ROOT / "README.md")], f"could not get the paper: not a PDF: {ROOT / 'README.md'} does not"),
        (["--pdf", str(ROOT / "tests")], f"--pdf {ROOT / 'tests'} is a folder: give one PDF file"),
    ],
)
def test_clear_errors(smoke_run, extra, message):
    work, _ = smoke_run
    args = analyze_args(work, *extra)
    if "--adapters" in extra:
        args = args[:2] + args[4:]  # let the later --adapters win without a duplicate
    with FakeArxiv([]) as arxiv:
        result = subprocess.run(
            [sys.executable, str(ROOT / "analyze.py"), *args, "--api-url", arxiv.api_url, "--api-delay", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=work,
        )
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- mistakes cost nothing but a message


def run_analyze(*args, cwd=None, as_a_user=False):
    return run_script("analyze.py", *args, cwd=cwd, as_a_user=as_a_user)


@pytest.mark.parametrize(
    "content, message",
    [
        ('["a", "b"]', 'expected step 1\'s papers.json, {"papers": [{"id": ..., "sections": [...]}, ...]}'),
        ('{"papers": ["a", "b"]}', 'papers[0] is not a paper record with an "id"'),
        ('{"papers": [{"id": "2401.1"}]}', "paper '2401.1' has no sections; rerun step 1"),
    ],
)
def test_a_papers_json_of_another_shape_is_named_not_a_traceback(smoke_run, tmp_path, content, message):
    work, _ = smoke_run
    papers = tmp_path / "list.json"
    papers.write_text(content)
    result = run_analyze(*analyze_args(work, "--paper", "2401.1", "--out", tmp_path / "r.md", "--papers", papers))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{papers}: " in result.stderr and message in result.stderr
    assert papers.read_text() == content and not (tmp_path / "r.md").exists()


def test_an_out_path_that_cannot_be_written_is_named_before_the_paper_is_fetched(smoke_run, tmp_path):
    work, _ = smoke_run
    (tmp_path / "a-file").write_text("")
    result = run_analyze(*analyze_args(work, "--paper", "2401.00001", "--out", "a-file/r.md"), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write a-file/r.md: a-file is a file, not a folder; pass --out another path" in result.stderr
    assert "fetching" not in result.stderr


def test_an_out_folder_the_user_cannot_write_to_is_named_before_any_work(smoke_run, tmp_path):
    work, _ = smoke_run
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    before = tree_hashes(work)
    args = analyze_args(work, "--paper", "2401.00001", "--out", locked / "r.md")
    result = run_analyze(*args, as_a_user=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write to {locked}/ (Permission denied); pass --out another path" in result.stderr
    assert "fetching" not in result.stderr and tree_hashes(work) == before and not any(locked.iterdir())


def test_an_interrupted_analysis_keeps_its_answers_and_the_rerun_makes_only_the_rest(smoke_run, tmp_path):
    work, _ = smoke_run
    out = tmp_path / "r.md"
    journal = out.with_suffix(".partial.jsonl")
    args = analyze_args(work, "--paper", "2401.00001", "--out", out)
    args[args.index("--max-tokens") + 1] = "64"  # long enough to be stopped in the middle
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "analyze.py"), *map(str, args)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    kept = len(journal.read_text().splitlines())
    assert f"interrupted: {kept} answers are kept in {journal}" in stderr and not out.exists()
    result = run_analyze(*args)
    assert result.returncode == 0, result.stderr
    assert f"{kept} answers from an earlier run" in result.stdout and not journal.exists()
    report = json.loads(out.with_suffix(".json").read_text())
    assert all(len(s["perspectives"]) == 3 for s in report["sections"])
