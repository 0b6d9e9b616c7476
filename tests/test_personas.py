import subprocess
import sys

import pytest
from conftest import ROOT

from paper_personas.cli import InputError
from paper_personas.personas import load_personas, section_text, select

GOOD = """
[tutor]
user_prefix = "Tutor me:\\n"
instructions = "Teach it."
fields = [{ name = "lesson", label = "Lesson", words = [10, 50] }]
"""


def test_the_repository_personas_are_the_three_of_the_brief_in_order():
    personas = load_personas()
    assert [p.name for p in personas] == ["eli5", "intuitive", "executive"]
    assert [f.label for f in personas[0].fields] == ["Analogy", "Explanation"]
    assert personas[0].forbidden_word_in("Optimizing it") == "optimiz"
    assert personas[2].checks.first_field_max_words == 40


def test_render_and_parse_are_inverse_and_the_schema_has_the_fields_in_order():
    eli5 = load_personas()[0]
    text = eli5.render({"analogy": "A box.", "explanation": "It holds toys."})
    assert text == "**Analogy:** A box.\n\n**Explanation:** It holds toys."
    assert eli5.parse(text) == {"analogy": "A box.", "explanation": "It holds toys."}
    assert list(eli5.schema.model_fields) == ["analogy", "explanation"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('"Teach it."', '""'), "[tutor].instructions: expected non-empty text"),
        (lambda t: t.replace("words = [10, 50]", "words = [50, 10]"), "[tutor].fields[0].words: expected [min, max]"),
        (lambda t: t.replace("instructions", "instruction"), "unknown keys ['instruction']"),
        (lambda t: t.replace("[tutor]", "[Tutor Bot]"), "not valid TOML"),
        (lambda t: t.replace("[tutor]", '["tutor bot"]'), "persona name 'tutor bot' must be lowercase"),
        (lambda t: t + t.replace("[tutor]", "[coach]"), "two personas share a user_prefix"),
        (lambda t: t + "checks = { max_grade = 3 }\n", "unknown check ['max_grade']"),
        (lambda t: "", "defines no persona"),
    ],
)
def test_a_mistake_in_a_personas_file_names_the_file_and_the_key(tmp_path, edit, message):
    path = tmp_path / "personas.toml"
    path.write_text(edit(GOOD))
    with pytest.raises(InputError, match=None) as error:
        load_personas(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_select_keeps_the_order_asked_and_names_unknown_personas(tmp_path):
    personas = load_personas()
    assert [p.name for p in select(personas, ["executive", "eli5"], "personas.toml")] == ["executive", "eli5"]
    assert select(personas, None, "personas.toml") == personas
    with pytest.raises(InputError, match="--personas socratic: not in personas.toml"):
        select(personas, ["socratic"], "personas.toml")


@pytest.mark.parametrize(
    "prompt, section",
    [
        ("Explain this like I'm 5:\nHash tables.", "Hash tables."),  # a persona of ours: its prefix goes
        ("Give me an executive summary:\nHash tables.", "Hash tables."),
        ("Summarise for a lawyer:\nHash tables.\nMore.", "Hash tables.\nMore."),  # someone else's: the first line
        ("Hash tables.", "Hash tables."),  # one line: nothing to strip
    ],
)
def test_section_text_strips_the_persona_instruction(prompt, section):
    assert section_text(prompt, load_personas()) == section


def test_the_makefile_reads_the_persona_names_without_the_venv():
    result = subprocess.run(
        ["python3", "-m", "paper_personas.personas"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.split() == ["eli5", "intuitive", "executive"]


SCRIPTS = ["paperExtractor.py", "sdg.py", "trim_jsonl.py", "split_data.py", "analyze.py", "evaluate.py"]
COMMANDS = [[script] for script in SCRIPTS] + [["-m", "paper_personas.personas"]]  # the Makefile's persona lister


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_needs_no_data_file(tmp_path, command):
    """--help in a copy of the code with no adapter_config.json, personas.toml, papers.json or data/."""
    for path in [*ROOT.glob("*.py"), *ROOT.glob("paper_personas/**/*.py")]:
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    result = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0 and "usage:" in result.stdout and "Traceback" not in result.stderr


def test_a_first_field_longer_than_its_own_check_allows_is_an_error(tmp_path):
    """Executive asked for a one-sentence verdict of 40-220 words and checked it at 40 at most: the teacher wrote
    one sentence, and the gate threw the unit away as too short. A file that asks for what it then fails is
    refused."""
    path = tmp_path / "personas.toml"
    path.write_text(GOOD + "checks = { first_field_max_words = 30 }\n")
    with pytest.raises(InputError, match=r"asks for 10-50 words, but checks.first_field_max_words is 30"):
        load_personas(path)
    path.write_text(GOOD.replace("[10, 50]", "[10, 30]") + "checks = { first_field_max_words = 30 }\n")
    assert load_personas(path)[0].checks.first_field_max_words == 30
