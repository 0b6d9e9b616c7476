"""The README and docs/ tell the truth about the commands: every link resolves, every script a command names
exists, and every flag it passes is one that script takes (the commands that need a key, the network or a Mac
cannot run here; the ones smoke prints are run as printed in test_smoke.py)."""

import re
import shlex

import pytest
from conftest import ROOT
from helpers import run_script

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = ["paperExtractor.py", "sdg.py", "trim_jsonl.py", "split_data.py", "analyze.py", "evaluate.py"]


def code_lines(page) -> list[str]:
    """Shell lines in the page's fenced blocks, comments cut, continuations joined."""
    lines, inside, blocks = [], False, page.read_text().split("\n")
    for line in blocks:
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(line)
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [line.split("  #")[0].split(" # ")[0].strip() for line in joined.splitlines()]


def script_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in PAGES:
        for line in code_lines(page):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # a quoted prompt that goes on over lines: no script command
                continue
            for i, word in enumerate(words):
                if word.endswith(tuple(SCRIPTS)) and i > 0 and words[i - 1].endswith("python"):
                    found.append((page.name, word.split("/")[-1], words[i + 1 :]))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
        if not target.startswith("http"):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_every_flag_in_a_documented_command_is_one_its_script_takes():
    helps = {script: run_script(script, "--help").stdout for script in SCRIPTS}
    commands = script_commands()
    assert len(commands) >= 20  # the pages do show commands
    for page, script, args in commands:
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", helps[script]), f"{page}: {script} has no {flag}"


def test_the_readme_is_a_front_door_with_nothing_left_to_fill_in():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
    for page in PAGES:
        for placeholder in ("SAMPLE_SECTION", "RESULTS_TABLE", "LIMITATIONS", "TEST_MINUTES", "RECIPE_", "TRAIN_SPEED"):
            assert placeholder not in page.read_text(), f"{page.name} still says {placeholder}"
