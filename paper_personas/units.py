"""Paper sections as work units: the chunks a teacher writes answers for and an adapter is prompted with.

sdg.py builds its training rows from these units and analyze.py prompts the adapters with the same ones, so a
persona is always asked about exactly the kind of text it was trained on.
"""

import hashlib
import itertools
import re
from dataclasses import dataclass

from paper_personas.tokens import template_tokens

ANSWER_TOKENS = 450  # room kept for the longest persona answer: 2 fields of at most ~220 words, rendered
MIN_PROSE_CHARS = 100  # a section with less running text than this (a lone equation, a caption) is skipped
MIN_CHUNK_TOKENS = 256  # a chunk shorter than this says too little to explain; --max-tokens must leave room for one


@dataclass(frozen=True)
class Unit:
    paper_id: str
    section: int
    chunk: int
    title: str
    heading: str
    text: str

    @property
    def key(self) -> str:
        """The paper and the text, not the section's position: deleting or inserting a section elsewhere in
        papers.json leaves every other unit's key, and so its paid-for rows, as they are."""
        return f"{self.paper_id}:{hashlib.sha256(self.text.encode()).hexdigest()[:12]}"


def canonical_key(key: str) -> str:
    """A row's key as Unit.key spells it today: keys written before it ("paper:section:chunk:digest") name
    the same paper and text hash, so their rows stay done and are not paid for again."""
    parts = key.split(":")
    return f"{parts[0]}:{parts[3]}" if len(parts) == 4 else key


def prose_chars(text: str) -> int:
    """Characters of running text, not counting markdown symbols, math and whitespace."""
    return len(re.sub(r"[^A-Za-z,.;:'\"()\- ]", "", text).strip())


def split_oversized(piece: str, budget: int, count) -> list[str]:
    """A paragraph over budget in pieces that fit: at sentence ends, else between words, else (a run with no
    space at all, such as a garbled formula) at a character count."""
    for pattern, joiner in ((r"(?<=[.!?])\s+", " "), (r"\s+", " ")):
        parts = [p for p in re.split(pattern, piece) if p]
        if len(parts) > 1:
            return pack(parts, count(parts), budget, count, joiner)
    # No whitespace: cut by characters, sized from this piece's own characters per token.
    step = max(1, len(piece) * budget // max(1, count([piece])[0]))
    return (
        [p for start in range(0, len(piece), step) for p in split_oversized(piece[start : start + step], budget, count)]
        if step < len(piece)
        else [piece]
    )


def pack(pieces: list[str], sizes: list[int], budget: int, count, joiner: str) -> list[str]:
    """Greedily join consecutive pieces into chunks of at most `budget` tokens (a piece over it is split)."""
    chunks, current, used = [], [], 0
    for piece, size in zip(pieces, sizes, strict=True):
        if size > budget:
            if current:
                chunks.append(joiner.join(current))
                current, used = [], 0
            chunks += split_oversized(piece, budget, count)
            continue
        if current and used + size + 1 > budget:
            chunks.append(joiner.join(current))
            current, used = [], 0
        current.append(piece)
        used += size + 1  # the joiner, at most a token
    return chunks + ([joiner.join(current)] if current else [])


def chunk_text(text: str, budget: int, count) -> list[str]:
    """Split text at paragraph boundaries (then sentences, then words) into pieces of at most `budget` tokens."""
    pieces = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    sizes = count(pieces)
    if sum(sizes) + len(pieces) <= budget:
        return ["\n\n".join(pieces)]
    return pack(pieces, sizes, budget, count, "\n\n")


def build_units(papers: list[dict], budget: int, count) -> tuple[list[Unit], int]:
    """Every section chunk of every paper as a unit, once per key (a paper that repeats a passage word for word
    gets one unit for it); also return how many sections were too short."""
    units, keys, too_short = [], set(), 0
    for paper in papers:
        for index, section in enumerate(paper.get("sections") or []):
            if prose_chars(section["text"]) < MIN_PROSE_CHARS:
                too_short += 1
                continue
            for chunk, text in enumerate(chunk_text(section["text"], budget, count)):
                unit = Unit(paper["id"], index, chunk, paper.get("title") or "", section["heading"], text)
                if unit.key not in keys:
                    keys.add(unit.key)
                    units.append(unit)
    return units, too_short


def across_papers(units: list[Unit], limit: int) -> list[Unit]:
    """At most `limit` units, taken from each paper in turn (0 = all, in order): a trial run with --limit samples
    every paper instead of the first one's sections."""
    if not limit:
        return units
    by_paper: dict[str, list[Unit]] = {}
    for unit in units:
        by_paper.setdefault(unit.paper_id, []).append(unit)
    in_turn = [u for turn in itertools.zip_longest(*by_paper.values()) for u in turn if u is not None]
    return in_turn[:limit]


def min_max_tokens(personas) -> int:
    """The smallest --max-tokens that leaves room for the template, the longest answer and a useful chunk."""
    return template_tokens(2) + ANSWER_TOKENS + max(len(p.user_prefix) for p in personas) + MIN_CHUNK_TOKENS


def chunk_budget(max_tokens: int, personas) -> int:
    """Tokens of section text per unit, so that prompt, answer and chat template fit max_tokens."""
    prefix = max(len(p.user_prefix) for p in personas)  # a few tokens; counted as characters to be safe
    return max_tokens - template_tokens(2) - ANSWER_TOKENS - prefix


def request_text(unit: Unit) -> str:
    """What the teacher is sent for one unit: where the text comes from, then the text."""
    return f"Paper: {unit.title}\nSection: {unit.heading}\n\n{unit.text}"
