"""Paper sections as work units: the chunks a teacher writes answers for and an adapter is prompted with.

sdg.py builds its training rows from these units and analyze.py prompts the adapters with the same ones, so a
persona is always asked about exactly the kind of text it was trained on.
"""

import hashlib
import re
from dataclasses import dataclass

from common import template_tokens

ANSWER_TOKENS = 450  # room kept for the longest persona answer: 2 fields of at most ~220 words, rendered
MIN_PROSE_CHARS = 100  # a section with less running text than this (a lone equation, a caption) is skipped


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
        digest = hashlib.sha256(self.text.encode()).hexdigest()[:12]
        return f"{self.paper_id}:{self.section}:{self.chunk}:{digest}"


def prose_chars(text: str) -> int:
    """Characters of running text, not counting markdown symbols, math and whitespace."""
    return len(re.sub(r"[^A-Za-z,.;:'\"()\- ]", "", text).strip())


def chunk_text(text: str, budget: int, count) -> list[str]:
    """Split text at paragraph boundaries (then sentences) into pieces of at most `budget` tokens each."""
    pieces = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    sizes = count(pieces)
    if sum(sizes) + len(pieces) <= budget:
        return ["\n\n".join(pieces)]
    units = []  # (piece, tokens)
    for piece, size in zip(pieces, sizes, strict=True):
        sentences = re.split(r"(?<=[.!?])\s+", piece) if size > budget else [piece]
        if len(sentences) > 1:  # one long paragraph: fall back to sentences
            parts = chunk_text("\n\n".join(sentences), budget, count)
            units.extend(zip(parts, count(parts), strict=True))
        else:
            units.append((piece, size))
    chunks, current, used = [], [], 0
    for piece, size in units:
        if current and used + size + 1 > budget:
            chunks.append("\n\n".join(current))
            current, used = [], 0
        current.append(piece)
        used += size + 1
    return chunks + (["\n\n".join(current)] if current else [])


def build_units(papers: list[dict], budget: int, count) -> tuple[list[Unit], int]:
    """Every section chunk of every paper as a unit; also return how many sections were too short."""
    units, too_short = [], 0
    for paper in papers:
        for index, section in enumerate(paper.get("sections", [])):
            if prose_chars(section["text"]) < MIN_PROSE_CHARS:
                too_short += 1
                continue
            for chunk, text in enumerate(chunk_text(section["text"], budget, count)):
                units.append(Unit(paper["id"], index, chunk, paper.get("title") or "", section["heading"], text))
    return units, too_short


def chunk_budget(max_tokens: int, personas) -> int:
    """Tokens of section text per unit, so that prompt, answer and chat template fit max_tokens."""
    prefix = max(len(p.user_prefix) for p in personas)  # a few tokens; counted as characters to be safe
    return max_tokens - template_tokens(2) - ANSWER_TOKENS - prefix


def request_text(unit: Unit) -> str:
    """What the teacher is sent for one unit: where the text comes from, then the text."""
    return f"Paper: {unit.title}\nSection: {unit.heading}\n\n{unit.text}"
