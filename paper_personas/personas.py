"""The personas, read from personas.toml: what each is told, how its answer is shaped, rendered and checked.

Every script that needs a persona gets it here, so adding one is an edit of personas.toml (or of a file named
with --personas-file) and nothing else. `python -m paper_personas.personas` prints the persona names, for the Makefile.
"""

import argparse
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.files import read_text

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "personas.toml"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # persona and field names: file names, JSON keys and Python identifiers
PERSONA_KEYS = {"user_prefix", "instructions", "fields", "forbidden_words", "checks"}
CHECK_KEYS = {"max_reading_grade", "first_field_max_words", "answer_words"}


@dataclass(frozen=True)
class AnswerField:
    name: str
    label: str  # rendered as "**Label:** "
    words: tuple[int, int]  # what the teacher is asked for, at least and at most


@dataclass(frozen=True)
class Checks:
    """evaluate.py's style checks for one persona; None means the check does not apply."""

    max_reading_grade: float | None = None
    first_field_max_words: int | None = None
    answer_words: tuple[int, int] | None = None


@dataclass(frozen=True)
class Persona:
    name: str
    user_prefix: str  # the training prompt is user_prefix + section text, byte for byte
    instructions: str
    fields: tuple[AnswerField, ...]
    forbidden_words: tuple[str, ...] = ()
    checks: Checks = field(default_factory=Checks)

    def user_message(self, section_text: str) -> str:
        """The user turn this persona is trained on; anything that prompts an adapter must build it here."""
        return self.user_prefix + section_text

    def render(self, answer: Mapping[str, str]) -> str:
        """The assistant turn: "**Label:** text" per field, in order, separated by a blank line."""
        return "\n\n".join(f"**{f.label}:** {answer[f.name].strip()}" for f in self.fields)

    def parse(self, text: str) -> dict[str, str] | None:
        """The fields of a rendered answer by name, or None if it does not have exactly this persona's shape: each
        label once, in order, each followed by text. The one format check: step 2's gate and evaluate.py's
        format metric both call it."""
        match = self._answer_pattern.fullmatch(text)
        if not match:
            return None
        fields = {f.name: match[f.name].strip() for f in self.fields}
        markers = [f"**{f.label}:**" for f in self.fields]
        if any(marker in value for value in fields.values() for marker in markers):
            return None  # a label given again inside a field ("**Explanation:**" twice)
        return fields

    def forbidden_word_in(self, text: str) -> str | None:
        """The first forbidden word stem that starts a word of text ("optimiz" catches "Optimizing"), or None."""
        lowered = text.lower()
        return next((stem for stem in self.forbidden_words if re.search(rf"\b{re.escape(stem)}", lowered)), None)

    @cached_property
    def schema(self):
        """The pydantic model of this persona's answer: one required string per field, in order."""
        from pydantic import create_model

        class_name = "".join(part.title() for part in self.name.split("_")) + "Answer"
        return create_model(class_name, **{f.name: (str, ...) for f in self.fields})

    @cached_property
    def _answer_pattern(self) -> re.Pattern:
        parts = [rf"\*\*{re.escape(f.label)}:\*\*\s*(?P<{f.name}>\S.*?)" for f in self.fields]
        return re.compile(r"\s*" + r"\s+".join(parts) + r"\s*", flags=re.DOTALL)


# ----------------------------------------------------------------------------- loading


def _word_range(value, where: str) -> tuple[int, int]:
    ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
    if not ok or not 0 < value[0] <= value[1]:
        raise InputError(f"{where}: expected [min, max] whole numbers with 0 < min <= max, got {value!r}")
    return value[0], value[1]


def _answer_field(raw, where: str) -> AnswerField:
    if not isinstance(raw, dict) or set(raw) != {"name", "label", "words"}:
        raise InputError(f"{where}: expected {{ name = ..., label = ..., words = [min, max] }}, got {raw!r}")
    if not isinstance(raw["name"], str) or not NAME.match(raw["name"]):
        raise InputError(f"{where}: name {raw['name']!r} must be lowercase letters, digits and _")
    if not isinstance(raw["label"], str) or not raw["label"].strip() or "*" in raw["label"]:
        raise InputError(f"{where}: label {raw['label']!r} must be non-empty text without '*'")
    return AnswerField(raw["name"], raw["label"], _word_range(raw["words"], f"{where}.words"))


def _checks(raw, where: str) -> Checks:
    if not isinstance(raw, dict) or set(raw) - CHECK_KEYS:
        raise InputError(f"{where}: unknown check {sorted(set(raw) - CHECK_KEYS)}; known: {sorted(CHECK_KEYS)}")
    grade = raw.get("max_reading_grade")
    if grade is not None and not isinstance(grade, int | float):
        raise InputError(f"{where}.max_reading_grade: expected a number, got {grade!r}")
    first = raw.get("first_field_max_words")
    if first is not None and (type(first) is not int or first < 1):
        raise InputError(f"{where}.first_field_max_words: expected a positive whole number, got {first!r}")
    words = raw.get("answer_words")
    return Checks(
        max_reading_grade=None if grade is None else float(grade),
        first_field_max_words=first,
        answer_words=None if words is None else _word_range(words, f"{where}.answer_words"),
    )


def _persona(name: str, raw, where: str) -> Persona:
    if not NAME.match(name):
        raise InputError(f"{where}: persona name {name!r} must be lowercase letters, digits and _ (it names files)")
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a table [{name}]")
    unknown, missing = set(raw) - PERSONA_KEYS, {"user_prefix", "instructions", "fields"} - set(raw)
    if unknown or missing:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    for key in ("user_prefix", "instructions"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise InputError(f"{where}.{key}: expected non-empty text")
    if not isinstance(raw["fields"], list) or not raw["fields"]:
        raise InputError(f"{where}.fields: expected a non-empty list of fields")
    fields = tuple(_answer_field(f, f"{where}.fields[{i}]") for i, f in enumerate(raw["fields"]))
    if len({f.name for f in fields}) != len(fields):
        raise InputError(f"{where}.fields: two fields share a name")
    forbidden = raw.get("forbidden_words", [])
    if not isinstance(forbidden, list) or not all(isinstance(w, str) and w.strip() for w in forbidden):
        raise InputError(f"{where}.forbidden_words: expected a list of words")
    checks = _checks(raw.get("checks", {}), f"{where}.checks")
    lead = checks.first_field_max_words
    if lead is not None and fields[0].words[1] > lead:
        raise InputError(
            f"{where}: the first field asks for {fields[0].words[0]}-{fields[0].words[1]} words, but "
            f"checks.first_field_max_words is {lead}: the teacher would be told a length the check then fails. Make "
            f"the field's words fit under {lead}, or raise the check"
        )
    return Persona(name, raw["user_prefix"], raw["instructions"], fields, tuple(w.lower() for w in forbidden), checks)


def load_personas(path: str | Path | None = None) -> tuple[Persona, ...]:
    """The personas of a personas file, in file order; a mistake raises InputError naming the file and key."""
    path = Path(path or DEFAULT_FILE)
    try:
        raw = tomllib.loads(read_text(path, "pass --personas-file, or restore personas.toml from git"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from None
    personas = tuple(_persona(name, table, f"{path}: [{name}]") for name, table in raw.items())
    if not personas:
        raise InputError(f"{path}: defines no persona; add a table such as [eli5]")
    prefixes = [p.user_prefix for p in personas]
    if len(set(prefixes)) != len(prefixes):
        raise InputError(f"{path}: two personas share a user_prefix, so their training rows could not be told apart")
    return personas


def by_name(personas: tuple[Persona, ...]) -> dict[str, Persona]:
    return {p.name: p for p in personas}


def select(personas: tuple[Persona, ...], names: list[str] | None, source: Path) -> tuple[Persona, ...]:
    """The personas a --personas flag names, in the order given (all of them for None), checked against the file."""
    known = by_name(personas)
    unknown = [name for name in names or [] if name not in known]
    if unknown:
        raise InputError(f"--personas {' '.join(unknown)}: not in {source} (it has {', '.join(known)})")
    return tuple(known[name] for name in names) if names else personas


def answers_schema(personas: tuple[Persona, ...]):
    """The pydantic model of one teacher answer: every persona's answer at once, in order."""
    from pydantic import create_model

    return create_model("PersonaAnswers", **{p.name: (p.schema, ...) for p in personas})


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def system_instruction(personas: tuple[Persona, ...]) -> str:
    """What the teacher is told once per request: the task, then each persona's instructions."""
    count = NUMBER_WORDS[len(personas)] if len(personas) < len(NUMBER_WORDS) else str(len(personas))
    ranges = {f.words for p in personas for f in p.fields}
    if len(ranges) == 1:
        (low, high) = ranges.pop()
        length, per_persona = f"Keep every field to {low}-{high} words", {p.name: "" for p in personas}
    else:
        length = "Keep each field to the words given for it"
        per_persona = {
            p.name: " Fields: " + ", ".join(f"{f.name} {f.words[0]}-{f.words[1]} words" for f in p.fields) + "."
            for p in personas
        }
    return (
        f"You turn one section of a research paper into training data for {count} explainer personas. Answer only "
        f"from the text. {length}, in plain prose without headings.\n\n"
        + "\n\n".join(f"{p.name}: {p.instructions}{per_persona[p.name]}" for p in personas)
    )


def section_text(user_message: str, personas: tuple[Persona, ...]) -> str:
    """The section a training prompt is about: the prompt without its persona prefix.

    Rows from elsewhere may use another prefix: then the first line is taken to be the instruction, as in
    every persona prompt here, when there is more than one line."""
    for persona in personas:
        if user_message.startswith(persona.user_prefix):
            return user_message[len(persona.user_prefix) :]
    head, newline, rest = user_message.partition("\n")
    return rest if newline and rest.strip() else user_message


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas-file", type=Path, default=DEFAULT_FILE, help="(default: personas.toml)")
    args = parser.parse_args(argv)
    try:
        print(" ".join(p.name for p in load_personas(args.personas_file)))
    except InputError as e:
        sys.exit(f"error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
