"""What every script shares at its edges: one name for the row budget, old spellings that still work for a
release with a line saying so, and help on every script."""

import pytest
from helpers import run_script

SCRIPTS = ["paperExtractor.py", "sdg.py", "trim_jsonl.py", "split_data.py", "analyze.py", "evaluate.py"]
BUDGET_SCRIPTS = ["sdg.py", "trim_jsonl.py", "split_data.py", "analyze.py", "evaluate.py"]


@pytest.mark.parametrize("script", BUDGET_SCRIPTS)
def test_every_script_takes_the_row_budget_as_max_seq_length(script):
    shown = " ".join(run_script(script, "--help").stdout.split())
    assert "--max-seq-length MAX_SEQ_LENGTH" in shown


@pytest.mark.parametrize(
    "script, old, args",
    [
        ("sdg.py", "--max-tokens", ["--papers", "missing.json"]),
        ("trim_jsonl.py", "--max-tokens", ["missing.jsonl"]),
        ("split_data.py", "--max-tokens", ["missing.jsonl"]),
        ("analyze.py", "--chunk-max-tokens", ["--paper", "x", "--papers", "missing.json"]),
    ],
)
def test_an_old_budget_flag_still_works_and_says_what_replaces_it(tmp_path, script, old, args):
    result = run_script(script, old, "999", *args, cwd=tmp_path)
    assert f"warning: {old} is deprecated and will be removed in the next release; use --max-seq-length" in (
        result.stderr
    )
    # and the run went on, to the error its missing input makes
    assert result.returncode == 1 and "Traceback" not in result.stderr and "\nerror: " in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help(script):
    result = run_script(script, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout and "Run simply as" in result.stdout
