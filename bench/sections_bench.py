"""Measure step 1's sections against a gold file written by reading the papers: heading recall and precision,
order errors, abstract found, junk share and coverage, per paper and in total.

Run simply as:
    $ python paperExtractor.py --pdf-dir ../shared/papers --out .bench/papers.json --papers-dir .bench/papers
    $ python bench/sections_bench.py --papers .bench/papers.json          # gold: bench/sections_gold.json

  recall       gold headings (levels 1 and 2) found among the extracted section headings
  precision    extracted headings (the "Abstract" section aside, and numbered level-3 headings such as "6.4.1 ...",
               which the gold, levels 1 and 2, does not list) that are gold headings
  order        order errors: matched headings out of the gold's order (matched minus the longest run in order)
  abstract     the paper has an abstract that opens with the gold's first words (the field or the section)
  junk         characters of section text matched by patterns for captions, footnote marks, page furniture
               (venue footers, preprint and copyright lines, page numbers), ACM/CCS/keyword blocks and inline
               markup, over all section characters: a lower bound, since only what the patterns know is counted
  coverage     section_coverage(): section characters over body characters before the references. The body
               still holds the captions, footnotes and running heads that step 1 must remove, so this cannot
               reach 100% on a paper that has them; hence the next column
  prose lost   paragraphs of the body (from the abstract to the gold's last words) whose words are in no section,
               leaving out what step 1 removes on purpose: headings, tables, captions ("Figure 3:"), footnotes
               (pymupdf4llm's "> 1Note ..." blocks), lines repeated on several pages (running heads),
               acknowledgments and blocks of under 5 words; as a share of the body's characters. What is counted
               here is text a teacher should have read and did not get
  body end     the gold's last words of the body appear in a section (the body is not cut short)
Headings match when they are equal once numbering, case, punctuation and spacing are dropped, or when one of two
headings of at least 20 such characters begins the other (a heading broken over two lines).
"""

import argparse
import json
import re
import statistics
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from paper_personas.sections import body_before_references, section_coverage  # noqa: E402

NUMBERING = re.compile(r"^\s*(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.|[A-Z]\.)\s+")
JUNK = [
    re.compile(r"(?m)^\s*(?:Figure|Fig\.|Table)\s*\d+[.:].*$"),  # captions
    re.compile(r"(?m)^.*(?:Proceedings of the|In Proceedings|pages \d+[–-]\d+|Preprint\.|Under review).*$"),
    re.compile(r"(?m)^.*(?:Copyright|©|Permission to make digital|ACM Reference Format|CCS CONCEPTS|KEYWORDS).*$"),
    re.compile(r"(?m)^.*(?:Additional Key Words and Phrases|General Terms:|Categories and Subject Descriptors).*$"),
    re.compile(r"(?m)^\s*\d{1,4}\s*$"),  # a page number on its own line
    # markup: the tags and marks only; what they wrap (a superscript, an italic word) is text to keep
    re.compile(r"</?(?:sup|sub|mark|span|b|i|em|strong)\b[^>]*>|\*\*|`|(?<!\w)_(?=[^_\s]+_(?!\w))|(?<=\S)_(?!\w)"),
]


def junk_chars(text: str) -> int:
    """Characters matched by any junk pattern, each counted once however many patterns match it."""
    spans = sorted((m.start(), m.end()) for pattern in JUNK for m in pattern.finditer(text))
    total, reach = 0, 0
    for start, end in spans:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


CAPTION = re.compile(r"^\W{0,3}(?:Figure|Fig\.|Table)\s*\d+[.:]", re.IGNORECASE)
ON_PURPOSE = re.compile(r"^(?:#|\||>|\W{0,4}acknowledge?ments?\b)", re.IGNORECASE)


def words_of(text: str) -> list[str]:
    """Lowercase words; U+FFFD (an undecodable glyph, which step 1 deletes) is dropped here too."""
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text.replace("\ufffd", "")).lower())


def furniture_key(block: str) -> str:
    """A block's words without digits: running heads that differ only in their page number share it."""
    return " ".join(w for w in words_of(block) if not w.isdigit())


def prose_lost(paper: dict, gold: dict) -> tuple[int, int]:
    """(characters of body paragraphs found in no section, characters of body paragraphs considered)."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", body_before_references(paper["markdown"])) if b.strip()]
    counts: dict[str, int] = {}
    for block in blocks:
        counts[furniture_key(block)] = counts.get(furniture_key(block), 0) + 1
    covered = " " + " ".join(" ".join(words_of(s["heading"] + " " + s["text"])) for s in paper["sections"]) + " "
    covered += " ".join(words_of(paper.get("abstract") or "")) + " "
    starts, ends = " ".join(words_of(gold["abstract_starts"]))[:30], " ".join(words_of(gold["body_ends"]))[-30:]
    lost = considered = 0
    inside = False
    for block in blocks:
        words = words_of(block)
        joined = " ".join(words)
        inside = inside or starts in joined
        if not inside:
            continue  # the title block, before the abstract
        furniture = counts[furniture_key(block)] > 1 or junk_chars(block) > len(block) / 2
        skip = len(words) < 5 or furniture or CAPTION.match(block) or ON_PURPOSE.match(block)
        if not skip:
            size = len(" ".join(block.split()))
            considered += size
            middle = " ".join(words[len(words) // 2 - 3 : len(words) // 2 + 3]) if len(words) >= 6 else joined
            lost += size if f" {middle} " not in covered else 0
        if ends in joined:
            break
    return lost, considered


def norm(text: str) -> str:
    text = NUMBERING.sub("", unicodedata.normalize("NFKC", text))
    return "".join(c for c in text.lower() if c.isalnum())


def same_heading(a: str, b: str) -> bool:
    a, b = norm(a), norm(b)
    return a == b or (min(len(a), len(b)) >= 20 and (a.startswith(b) or b.startswith(a)))


def longest_increasing(values: list[int]) -> int:
    tails: list[int] = []
    for v in values:
        i = next((k for k, t in enumerate(tails) if t >= v), len(tails))
        tails[i : i + 1] = [v]
    return len(tails)


LEVEL3 = re.compile(r"^\s*\d{1,2}\.\d{1,2}\.\d{1,2}")


def align(headings: list[str], gold_headings: list[str]) -> list[int]:
    """For each extracted heading in order, the gold index it matches (-1 for none). Each gold entry is used once,
    the next one after the last match first, so two subsections with the same title are both found in order."""
    used, last, matches = set(), -1, []
    for heading in headings:
        candidates = [i for i, g in enumerate(gold_headings) if i not in used and same_heading(g, heading)]
        pick = next((i for i in candidates if i > last), candidates[0] if candidates else -1)
        if pick >= 0:
            used.add(pick)
            last = pick
        matches.append(pick)
    return matches


def score(paper: dict, gold: dict) -> dict:
    sections = paper["sections"]
    headings = [
        s["heading"]
        for s in sections
        if norm(s["heading"]) != "abstract" and s["heading"].strip() and not LEVEL3.match(s["heading"])
    ]
    gold_headings = [h for _, h in gold["headings"]]
    matches = align(headings, gold_headings)
    order = [i for i in matches if i >= 0]
    matched_gold = sorted(set(order))
    true_extracted = order
    text = "\n\n".join(s["text"] for s in sections)
    junk = junk_chars(text)
    abstract = paper.get("abstract") or next((s["text"] for s in sections if norm(s["heading"]) == "abstract"), "")
    return {
        "gold": len(gold_headings),
        "found": len(matched_gold),
        "extracted": len(headings),
        "true": len(true_extracted),
        "order_errors": len(order) - longest_increasing(order),
        "abstract": norm(gold["abstract_starts"])[:40] in norm(abstract[:400]),
        "junk": junk,
        "chars": len(text),
        "coverage": section_coverage(paper["markdown"], sections),
        "prose": prose_lost(paper, gold),
        "body_end": norm(gold["body_ends"])[-40:] in norm(text),
        "missing": [gold_headings[i] for i in range(len(gold_headings)) if i not in matched_gold],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", type=Path, default=Path(".bench/papers.json"), help="paperExtractor.py's output")
    p.add_argument("--gold", type=Path, default=ROOT / "bench" / "sections_gold.json")
    p.add_argument(
        "--missing", action="store_true", help="also list the gold headings not found and the prose lost, per paper"
    )
    args = p.parse_args(argv)
    gold = json.loads(args.gold.read_text())["papers"]
    papers = {p["id"]: p for p in json.loads(args.papers.read_text())["papers"]}
    absent = sorted(set(gold) - set(papers))
    if absent:
        sys.exit(f"error: {args.papers} lacks {', '.join(absent)}; extract ../shared/papers first (see --help)")
    rows = {name: score(papers[name], g) for name, g in gold.items()}
    print("| paper | recall | precision | order errors | abstract | junk | coverage | prose lost | body end |")
    print("|---|---:|---:|---:|:-:|---:|---:|---:|:-:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['found']}/{r['gold']} | {r['true']}/{r['extracted']} | {r['order_errors']} | "
            f"{'yes' if r['abstract'] else 'NO'} | {r['junk'] / max(1, r['chars']):.1%} | {r['coverage']:.0%} | "
            f"{r['prose'][0] / max(1, r['prose'][1]):.1%} | {'yes' if r['body_end'] else 'NO'} |"
        )
    coverages = [r["coverage"] for r in rows.values()]
    lost, considered = (sum(r["prose"][i] for r in rows.values()) for i in (0, 1))
    total = {
        k: sum(r[k] for r in rows.values())
        for k in ("gold", "found", "extracted", "true", "order_errors", "junk", "chars")
    }
    print(
        f"| **total** | **{total['found'] / total['gold']:.1%}** ({total['found']}/{total['gold']}) | "
        f"**{total['true'] / total['extracted']:.1%}** ({total['true']}/{total['extracted']}) | "
        f"**{total['order_errors']}** | {sum(r['abstract'] for r in rows.values())}/{len(rows)} | "
        f"{total['junk'] / total['chars']:.1%} | median {statistics.median(coverages):.0%}, "
        f"lowest {min(coverages):.0%} | {lost / considered:.1%} ({lost:,} of {considered:,} characters) | "
        f"{sum(r['body_end'] for r in rows.values())}/{len(rows)} |"
    )
    if args.missing:
        for name, r in rows.items():
            if r["missing"]:
                print(f"\n{name}: not found: {'; '.join(r['missing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
