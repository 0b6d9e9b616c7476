"""Step 1: fetch research papers and turn each into clean, sectioned markdown.

Run simply as:
    $ python paperExtractor.py                                   # 7 newest papers in each default category
    $ python paperExtractor.py --ids 1706.03762 cs/0112017       # specific arXiv papers
    $ python paperExtractor.py --pdf-dir ~/papers                # local PDFs, no arXiv involved

Reads:  the arXiv API (or --pdf-dir and its subfolders), then each paper's PDF.
Writes: papers/<id>.pdf, papers/images/<id>/*.png, papers.records/<id>.json (one file per finished paper, the
        resumable store) and, at the end of a run or on Ctrl-C, papers.json assembled from the store:
        {"papers": [{id, version, title, authors, abstract, categories, primary_category, published,
                     pdf_url, pdf_path, markdown, sections: [{heading, text}], images, pages, pages_total,
                     source_sha256, options}],
         "failures": [{id, stage, reason}]}
A rerun keeps the papers already stored and skips them, unless their PDF's bytes or the options that shape a
record (--max-pages, --keep-appendix) changed, or --force; earlier failures are retried. Ctrl-C or SIGTERM stops
within seconds, keeping every finished paper. A run in which nothing succeeded exits 1.
"""

import argparse
import difflib
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections import Counter
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from common import (
    InputError,
    atomic_writer,
    die,
    read_json,
    safe_filename,
    settings_from,
    setup_logging,
    write_json,
)

log = logging.getLogger("paperExtractor")

# ----------------------------------------------------------------------------- constants

DEFAULT_CATEGORIES = ["cs.LG", "cs.AI", "cs.DS", "cs.GT", "cs.PF", "cs.SE", "cs.OH"]
DEFAULT_API_URL = "https://export.arxiv.org/api/query"
USER_AGENT = "paper-personas/0.1 (builds LoRA persona training data from arXiv papers)"
# arXiv's API terms ask for at most one request every 3 seconds.
ARXIV_MIN_DELAY_S = 3.0

# The arXiv category taxonomy (https://arxiv.org/category_taxonomy), so a typo fails fast instead of
# silently returning zero papers.
ARXIV_ARCHIVES_WITHOUT_SUBJECTS = {
    "astro-ph",
    "cond-mat",
    "gr-qc",
    "hep-ex",
    "hep-lat",
    "hep-ph",
    "hep-th",
    "math-ph",
    "nlin",
    "nucl-ex",
    "nucl-th",
    "physics",
    "quant-ph",
    "q-alg",
    "alg-geom",
    "chao-dyn",
    "cmp-lg",
}
ARXIV_SUBJECTS = {
    "cs": "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE NI OH OS "
    "PF PL RO SC SD SE SI SY",
    "math": "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA RT SG SP ST",
    "stat": "AP CO ME ML OT TH",
    "eess": "AS IV SP SY",
    "econ": "EM GN TH",
    "q-bio": "BM CB GN MN NC OT PE QM SC TO",
    "q-fin": "CP EC GN MF PM PR RM ST TR",
    "astro-ph": "CO EP GA HE IM SR",
    "cond-mat": "dis-nn mes-hall mtrl-sci other quant-gas soft stat-mech str-el supr-con",
    "nlin": "AO CD CG PS SI",
    "physics": "acc-ph ao-ph app-ph atm-clus atom-ph bio-ph chem-ph class-ph comp-ph data-an ed-ph flu-dyn "
    "gen-ph geo-ph hist-ph ins-det med-ph optics plasm-ph pop-ph soc-ph space-ph",
}
ARXIV_CATEGORIES = ARXIV_ARCHIVES_WITHOUT_SUBJECTS | {
    f"{archive}.{subject}" for archive, subjects in ARXIV_SUBJECTS.items() for subject in subjects.split()
}

PDF_MAGIC = b"%PDF-"
API_TIMEOUT_S = (10, 120)  # (connect, read) for arXiv API pages
DOWNLOAD_READ_TIMEOUT_S = 30  # a PDF server silent this long is dead; --download-timeout bounds the whole download
DOWNLOAD_ATTEMPTS = 4
# arXiv identifiers (info.arxiv.org/help/arxiv_identifier.html): 2309.13541v2 since 2007, cs/0112017v1 before.
NEW_STYLE_ID = re.compile(r"^\d{4}\.\d{4,5}(?:v\d+)?$")
OLD_STYLE_ID = re.compile(r"^[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?$")

# ----------------------------------------------------------------------------- section splitting

MD_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
ALL_BOLD_LINE = re.compile(r"^(?:\*\*[^*]+\*\*\s*)+$")
NUMBERED_TITLE = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+\S")
ABSTRACT_TITLES = {
    "abstract",
    "摘要",
    "summary",
    "résumé",
    "resume",
    "zusammenfassung",
    "resumen",
    "аннотация",
    "要旨",
    "초록",
}
INLINE_ABSTRACT = re.compile(
    r"^\W{0,4}(?:abstract|摘要|résumé|zusammenfassung|resumen|аннотация)\W{0,4}[.:：—–-]\W{0,4}\s*(?P<rest>\S.*)$",
    re.IGNORECASE,
)
INLINE_ACKNOWLEDGMENT = re.compile(r"^\W{0,4}acknowledge?ments?\b", re.IGNORECASE)
NOT_A_HEADING = re.compile(
    r"^(?:figure|fig\.|table|algorithm|lemma|theorem|corollary|proposition|definition|claim|proof|remark|"
    r"step|conjecture|assumption|observation|fact|note)\b",
    re.IGNORECASE,
)
TOC_LINE = re.compile(r"^.{2,120}?(?:\.\s?){4,}\s*\d{1,4}\s*$")  # "2.1 Method ........ 7"
PAGE_NUMBER = re.compile(r"^\s*(?:page\s+)?\d{1,4}(?:\s+of\s+\d{1,4})?\s*$", re.IGNORECASE)
PICTURE_TEXT = re.compile(r"<!-- Start of picture text -->.*?<!-- End of picture text -->", re.DOTALL)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\([^)]*\)")
OMITTED_PICTURE = re.compile(r"^\W*==> picture .*<==\W*$", re.IGNORECASE)
MARKUP = re.compile(r"<[^>]{1,20}>|\*\*|__|(?<!\w)_|_(?!\w)|`")

REFERENCE_TITLES = {
    "references",
    "reference",
    "bibliography",
    "literature cited",
    "works cited",
    "references and notes",
    "cited literature",
}
ACKNOWLEDGMENT_TITLE = re.compile(r"^acknowledge?ments?$")
APPENDIX_TITLE = re.compile(r"^(?:appendix|appendices|supplementary|supplemental)\b")
LETTERED_APPENDIX = re.compile(r"^a(?:\.\d+)*\.?\s+[a-z]")  # "A. Proofs", "A Proof of Lemma 2"
CONTENTS_TITLE = re.compile(r"^(?:table of )?contents$")
CAPTION = re.compile(r"^\W{0,4}(?:figure|fig\.|table)\s*\d+\s*[.:]", re.IGNORECASE)
# Venue footers, preprint notes and permission blocks: page furniture a paper prints once, so the repeat test
# below misses them. Only short lines: a paragraph that mentions "proceedings" stays.
FOOTER = re.compile(
    r"Proceedings of the .*\b(?:19|20)\d\d\b|\bpages \d+\s*[–-]\s*\d+\b|^\W*Preprint\.|Under review|Copyright\b|©|"
    r"Permission to make digital|^\W*ACM Reference Format|^\W*CCS CONCEPTS|^\W*KEYWORDS\b|"
    r"^\W*Categories and Subject Descriptors|^\W*General Terms\b|^\W*Additional Key Words",
    re.IGNORECASE,
)
# The ACM classification block when layout glued it to the end of the abstract's paragraph: cut from there.
ACM_BLOCK_TAIL = re.compile(r"\s+Categories and Subject Descriptors:.*$")
CONTACT = re.compile(r"@|e-?mail|\bdepartment of\b|\buniversity\b|\binstitute\b|\bcontact\b", re.IGNORECASE)
FOOTER_MAX_CHARS = 300
TEXT_MARKUP = re.compile(
    r"</?(?:sup|sub|mark|span|b|i|em|strong)\b[^>]*>|\*\*|(?<![\w*])_(?=[^_\s][^_]*_(?!\w))|(?<=[^\s_])_(?![\w])|`"
)
# A copyright permission block is furniture however long it runs (VLDB's is 500 characters, beyond FOOTER's reach).
PERMISSION_BLOCK = re.compile(r"^\W*Permission to (?:make digital|copy without fee)", re.IGNORECASE)
# A footnote that is nothing but a URL ("> 4 `http://www.danga.com/memcached/`"), when layout missed its marker.
URL_FOOTNOTE = re.compile(r"^\s*>\s*\d{1,2}\s*`?(?:https?://|www\.)\S*`?\s*$")
FURNITURE_MIN_REPEATS = 3  # a short line seen on 3+ pages is a running header or footer
FURNITURE_MAX_CHARS = 100  # running headers are a title or author list, never a paragraph


def plain(text: str) -> str:
    """Heading or line text without markdown/HTML markup, whitespace folded."""
    return " ".join(MARKUP.sub("", text).split())


def title_key(title: str) -> str:
    """Lower-case heading text without its number: '**4.2 Methods**' -> 'methods'."""
    words = plain(title).lower()
    words = re.sub(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[ivx]{1,5}\.|[a-h]\.)\s+", "", words)
    return words.strip(" .:")


def furniture_key(line: str) -> str:
    """What stays of a line once page numbers and markup go: running headers then look alike on every page."""
    return re.sub(r"[\d\W_]+", " ", plain(line.lstrip("#"))).strip().lower()


def layout_key(text: str) -> str:
    """A line's text for comparing markdown with the PDF's own lines: letters and digits, lower case."""
    return " ".join(re.sub(r"[^\w]+", " ", plain(text.lstrip("#")).lower()).split())


@dataclass(frozen=True)
class PageLayout:
    """What only the PDF's geometry tells: which lines sit at a page's top or bottom edge (only those can be
    running headers or footers), and which are footnotes (small type at the bottom, opening with a marker)."""

    edges: frozenset[str] = frozenset()
    footnotes: frozenset[str] = frozenset()

    def at_edge(self, line: str) -> bool:
        # letters only, as the repeat test compares: "2 · Golubchik, ..." is three pieces in the PDF
        return not self.edges or furniture_key(line) in self.edges

    def is_footnote(self, line: str) -> bool:
        """A markdown line that begins with a footnote's first line (the one with the marker): markdown joins a
        footnote's lines into one."""
        key = layout_key(line)
        return bool(key) and any(key.startswith(note) for note in self.footnotes)


def find_furniture(lines: list[str], layout: PageLayout) -> set[str]:
    """Keys of short lines repeated on 3+ pages at a page's edge: running headers and footers. Lines in the body
    that differ only in digits ("2.1 Experiment 1", "2.2 Experiment 2") are not at the edges, so they stay."""
    counts = Counter(
        furniture_key(line) for line in lines if 0 < len(line) < FURNITURE_MAX_CHARS and layout.at_edge(line)
    )
    return {key for key, n in counts.items() if n >= FURNITURE_MIN_REPEATS and len(key) >= 4}


def heading_title(line: str) -> str | None:
    """The title if this line is a section heading, else None."""
    match = MD_HEADING.match(line)
    if match:
        title = plain(match["title"])
    elif ALL_BOLD_LINE.match(line):
        title = plain(line)
        # A bold line is a heading only when numbered ("**1** **Introduction**") or a known section name.
        key = title_key(title)
        known = key in REFERENCE_TITLES or key in ABSTRACT_TITLES or ACKNOWLEDGMENT_TITLE.match(key)
        if not (NUMBERED_TITLE.match(title) or known):
            return None
    elif title_key(line) in REFERENCE_TITLES and len(line) < 40:
        title = plain(line)  # a bare "REFERENCES" line that layout analysis did not mark
    else:
        return None
    longest = 200 if NUMBERED_TITLE.match(title or "") else 120  # a numbered heading can be long; a paragraph rarely is
    if not title or len(title) > longest or not title[0].isalnum() or title[0].islower():
        return None  # sentence fragments the layout model promoted: "and beneficial in our setting."
    if re.fullmatch(r"[\d.\s]+", title):
        return None  # a page number the layout model set as a heading ("# 26")
    if NOT_A_HEADING.match(title) or title.endswith(","):
        return None  # captions, theorem-like blocks, algorithm boxes
    return title


def heading_role(title: str, seen_numbered: bool) -> str:
    key = title_key(title)
    if key in REFERENCE_TITLES:
        return "references"
    if ACKNOWLEDGMENT_TITLE.match(key):
        return "acknowledgments"
    if CONTENTS_TITLE.match(key):
        return "contents"
    if key in ABSTRACT_TITLES:
        return "abstract"
    if APPENDIX_TITLE.match(key) or (seen_numbered and LETTERED_APPENDIX.match(plain(title).lower())):
        return "appendix"
    return "section"


# What opens a line that carries on the sentence before it: a heading followed by one is a broken sentence.
CONTINUATION = re.compile(r"^\W{0,2}\(|^(?:and|or|but|which|that|of|in|to|for|with|is|are|was|were)\b")
LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s")
TABLE_TITLE_REACH = 8  # non-blank lines after a heading within which a table's caption betrays its title


def demote_false_headings(lines: list[str]) -> list[str]:
    """Unnumbered headings the layout model made of a line that is not one become plain text: a sentence broken
    before a parenthesis ("### TEXTRUNNER returns the extraction" then "(Arbor Health Care, ...)"), or a table's
    title, followed only by list rows and then the table's caption."""
    demoted = list(lines)
    for i, line in enumerate(lines):
        match = MD_HEADING.match(line)
        if not match or NUMBERED_TITLE.match(plain(match["title"])):
            continue
        after = list(islice((plain(other) for other in lines[i + 1 :] if other.strip()), TABLE_TITLE_REACH))
        broken = bool(after) and bool(CONTINUATION.match(after[0]))
        caption = next((k for k, other in enumerate(after) if CAPTION.match(other)), None)
        table_title = bool(caption) and all(LIST_ITEM.match(row) for row in after[:caption])
        if broken or table_title:
            demoted[i] = plain(match["title"])
    return demoted


def clean_lines(markdown: str, layout: PageLayout = PageLayout()) -> list[str]:
    """Drop what is never section text: picture text, image links, tables, TOC lines, page furniture."""
    text = HTML_COMMENT.sub("", PICTURE_TEXT.sub("", markdown))
    text = IMAGE_LINK.sub("", text).replace("\ufffd", "")
    lines = demote_false_headings([ACM_BLOCK_TAIL.sub("", line.rstrip()) for line in text.splitlines()])
    furniture = find_furniture(lines, layout)
    return [
        line
        for line in lines
        if not (
            line.lstrip().startswith("|")
            or TOC_LINE.match(line)
            or PAGE_NUMBER.match(line)
            or OMITTED_PICTURE.match(line)
            or CAPTION.match(plain(line))
            or layout.is_footnote(line)
            or URL_FOOTNOTE.match(line)
            or PERMISSION_BLOCK.match(plain(line))
            or (len(line) < FOOTER_MAX_CHARS and FOOTER.search(plain(line)))
            or (0 < len(line) < FURNITURE_MAX_CHARS and furniture_key(line) in furniture)
        )
    ]


@dataclass
class _Section:
    heading: str
    role: str
    lines: list[str]

    def text(self) -> str:
        """The section's prose: markup tags and emphasis marks go, what they wrap stays (x<sup>2</sup> -> x2)."""
        return TEXT_MARKUP.sub("", re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines))).strip()


def outline_heading(line: str, outline: list[str]) -> tuple[str, str] | None:
    """(title, rest) when a paragraph opens with the next unused outline entry: a run-in heading such as
    "2.1. High-degree centrality. In this method, ..." that layout analysis left inside the paragraph."""
    text = plain(line)
    for index, title in enumerate(outline[:3]):  # the next few entries, so one missed entry does not stall
        entry = " ".join(title.split())
        if text.lower().startswith(entry.lower()) and (len(text) == len(entry) or text[len(entry)] in " .:"):
            del outline[: index + 1]
            return entry, text[len(entry) :].lstrip(" .:")
    return None


def _walk_sections(lines: list[str], keep_appendix: bool, outline: list[str] | None = None) -> list[_Section]:
    sections: list[_Section] = [_Section("", "front", [])]
    skipping = False  # inside acknowledgments or a table of contents
    after_references = False  # past the references: only a kept appendix restarts the body
    seen_numbered = False
    outline = list(outline or [])
    for line in lines:
        title = heading_title(line)
        if title is not None and outline:
            outline_heading(title, outline)  # the outline entry is used up by the heading it names
        run_in = outline_heading(line, outline) if title is None and outline else None
        if run_in:
            title, rest = run_in
            if not skipping and not after_references and heading_role(title, seen_numbered) == "section":
                sections.append(_Section(title, "section", [rest] if rest else []))
                continue
        inline_abstract = INLINE_ABSTRACT.match(plain(line)) if title is None else None
        if title is None and inline_abstract is None:
            if INLINE_ACKNOWLEDGMENT.match(plain(line)):
                continue  # a paragraph that starts "**Acknowledgments** We thank ..."
            if not skipping and not after_references:
                sections[-1].lines.append(line)
            continue
        role = "abstract" if inline_abstract else heading_role(title, seen_numbered)
        seen_numbered = seen_numbered or bool(NUMBERED_TITLE.match(title or ""))
        if role == "references" or (role == "appendix" and not keep_appendix):
            if not keep_appendix:
                break
            after_references = True
            continue
        if after_references and role != "appendix":
            continue
        after_references = False
        skipping = role in ("acknowledgments", "contents")
        if not skipping:
            first = [inline_abstract["rest"]] if inline_abstract else []
            sections.append(_Section("Abstract" if inline_abstract else title, role, first))
    return sections


def section_number(heading: str) -> tuple[int, ...] | None:
    match = re.match(r"^\s*(\d{1,2}(?:\.\d{1,2})*)\.?\s", heading)
    return tuple(int(n) for n in match[1].split(".")) if match else None


def restore_numbered_order(sections: list[_Section]) -> list[_Section]:
    """Put numbered sections back in their numbers' order within each top-level section, when layout analysis
    read a two-column page out of order ("4.2" before "4.1"). A numbered section carries along the unnumbered
    sections that follow it (its run-in subheadings); sections before the first number stay where they are."""
    blocks: list[list[_Section]] = []
    for section in sections:
        if section_number(section.heading) or not blocks:
            blocks.append([section])
        else:
            blocks[-1].append(section)
    ordered: list[list[_Section]] = []
    for block in blocks:
        number = section_number(block[0].heading)
        # move the block back past earlier siblings (same top-level number) whose numbers are larger
        index = len(ordered)
        while index > 0 and number:
            previous = section_number(ordered[index - 1][0].heading)
            if not previous or previous[0] != number[0] or previous <= number:
                break
            index -= 1
        ordered.insert(index, block)
    return [section for block in ordered for section in block]


def is_prose(paragraph: str, min_chars: int = 300) -> bool:
    """A paragraph of running text: long, several sentences, mostly lower-case words, no contact details."""
    words = paragraph.split()
    capitalised = sum(w[:1].isupper() for w in words) / max(1, len(words))
    sentences = len(re.findall(r"[a-z)\]][.!?](?:\s|$)", paragraph))
    return len(paragraph) >= min_chars and sentences >= 3 and capitalised < 0.3 and not CONTACT.search(paragraph)


def unlabelled_abstract(front: list[_Section]) -> list[str]:
    """The abstract of a paper that does not label it: the first prose paragraph of the front matter (after the
    title, authors and affiliations) and the prose paragraphs that follow it, up to the first one that is not."""
    paragraphs = [p.strip() for s in front for p in re.split(r"\n\s*\n", s.text()) if p.strip()]
    start = next((i for i, p in enumerate(paragraphs) if is_prose(p)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(paragraphs)) if not is_prose(paragraphs[i], 100)), len(paragraphs))
    return paragraphs[start:end]


def split_sections(
    markdown: str, keep_appendix: bool = False, outline: list[str] | None = None, layout: PageLayout = PageLayout()
) -> list[dict]:
    """Split pymupdf4llm markdown into [{heading, text}] in document order.

    Recognises '#' headings and bold numbered headings, and, given the PDF's outline (its bookmarks), run-in
    headings that open a paragraph. Keeps the abstract; drops the title block, acknowledgments, the table of
    contents, the references and everything after them (appendices too, unless keep_appendix); strips image
    links, tables, captions, venue footers, running headers and inline markup from the text. A numbered heading
    is kept though its own text is empty: a parent heading followed at once by its first subsection.
    """
    sections = restore_numbered_order(_walk_sections(clean_lines(markdown, layout), keep_appendix, outline))
    roles = [s.role for s in sections]
    if "abstract" in roles:
        sections = sections[roles.index("abstract") :]  # before it: title, authors, affiliations
    else:  # no label: the abstract is the first prose of the front matter, before the first numbered section
        first = next((i for i, s in enumerate(sections) if section_number(s.heading)), None)
        abstract = unlabelled_abstract(sections[:first]) if first else []
        if abstract:
            sections = [_Section("Abstract", "abstract", ["\n\n".join(abstract)]), *sections[first:]]
    return [
        {"heading": s.heading, "text": s.text()}
        for s in sections
        if s.text() or (s.role == "section" and NUMBERED_TITLE.match(s.heading))
    ]


def body_before_references(markdown: str) -> str:
    """The paper up to its references heading, tables excluded: the denominator of section coverage.

    Markup that carries no prose (tags, emphasis marks, image links, picture text) is not counted, as sections
    do not carry it either. Captions, footers and running headers are counted: dropping them is a judgement
    that could be wrong, so coverage charges for it."""
    markdown = TEXT_MARKUP.sub("", IMAGE_LINK.sub("", HTML_COMMENT.sub("", PICTURE_TEXT.sub("", markdown))))
    kept = []
    for line in markdown.splitlines():
        title = heading_title(line.rstrip())
        if title and title_key(title) in REFERENCE_TITLES:
            break
        if not line.lstrip().startswith("|"):
            kept.append(line)
    return "\n".join(kept)


def section_coverage(markdown: str, sections: list[dict]) -> float:
    """Share of the body's characters (whitespace folded) that ended up in some section, its heading or its text:
    a heading is kept, in its own field, and a run-in heading leaves its paragraph for it."""
    body = len(" ".join(body_before_references(markdown).split()))
    covered = sum(len(" ".join(s["heading"].split())) + len(" ".join(s["text"].split())) for s in sections)
    return min(1.0, covered / body) if body else 0.0


# ----------------------------------------------------------------------------- arXiv search


def versionless_id(short_id: str) -> tuple[str, int]:
    """'2309.13541v2' -> ('2309.13541', 2); 'cs/0112017v1' -> ('cs/0112017', 1); no version -> 0."""
    match = re.match(r"^(?P<id>.+?)(?:v(?P<version>\d+))?$", short_id)
    return match["id"], int(match["version"] or 0)


def unknown_categories(categories: list[str]) -> list[str]:
    return [c for c in categories if c not in ARXIV_CATEGORIES]


def record_from_result(result, categories: set[str]) -> dict:
    paper_id, version = versionless_id(result.get_short_id())
    return {
        "id": paper_id,
        "version": version,
        "title": " ".join(result.title.split()),
        "authors": [a.name for a in result.authors],
        "abstract": " ".join(result.summary.split()),
        "categories": sorted(set(result.categories) | categories),
        "primary_category": result.primary_category,
        "published": result.published.isoformat() if result.published else None,
        "pdf_url": result.pdf_url,
        "pdf_path": None,  # set once the PDF is on disk
    }


def merge_record(records: dict[str, dict], record: dict) -> None:
    """Add a paper keyed by versionless id; a paper cross-listed in several categories is kept once."""
    seen = records.get(record["id"])
    if seen is None:
        records[record["id"]] = record
    else:
        seen["categories"] = sorted(set(seen["categories"]) | set(record["categories"]))


def bad_ids(ids: list[str]) -> list[str]:
    """The ids that are not arXiv identifiers at all; checked before any request, so one typo sinks nothing else."""
    return [i for i in ids if not (NEW_STYLE_ID.match(i) or OLD_STYLE_ID.match(i))]


class UnreadableFeedError(Exception):
    """The API answered 200 with something that is not an Atom feed (a proxy page, a truncated body)."""


def make_arxiv_client(api_url: str, delay_s: float, page_size: int):
    import arxiv
    import requests.adapters

    class _TimeoutAdapter(requests.adapters.HTTPAdapter):
        # arxiv.Client sends no timeout of its own; a silent server would hang the run forever.
        def send(self, request, **kwargs):
            kwargs["timeout"] = kwargs.get("timeout") or API_TIMEOUT_S
            return super().send(request, **kwargs)

    class StrictClient(arxiv.Client):
        # arxiv.py only logs a malformed feed and carries on with zero results, so an unreadable answer would be
        # reported as "no papers found". Say what it is instead.
        def _parse_feed(self, url, first_page=True, _try_index=0):
            feed = super()._parse_feed(url, first_page, _try_index)
            if feed.malformed and not feed.results:
                raise UnreadableFeedError(f"the arXiv API at {api_url} answered something that is not an Atom feed")
            return feed

    def require_atom(response, *args, **kwargs):
        # lxml's recovering parser reads an HTML page as a feed with no entries; a 200 must be Atom to count.
        if response.status_code == 200 and b"<feed" not in response.content[:4096]:
            kind = response.headers.get("Content-Type", "unknown type")
            raise UnreadableFeedError(f"the arXiv API at {api_url} answered {kind}, not an Atom feed")

    # arxiv.py sends its own User-Agent on every request; this module constant is where it comes from.
    arxiv._USER_AGENT = f"{USER_AGENT} arxiv.py/{arxiv.__version__}"
    client = StrictClient(page_size=max(1, min(100, page_size)), delay_seconds=delay_s, num_retries=3)
    client.query_url_format = api_url + "?{}"
    client._session.mount("http://", _TimeoutAdapter())
    client._session.mount("https://", _TimeoutAdapter())
    client._session.hooks["response"].append(require_atom)
    return client


def search_failure(error: Exception, api_url: str) -> str:
    """Why an arXiv query failed, in words: the status it answered, an unreadable feed, or the network."""
    import arxiv

    if isinstance(error, arxiv.HTTPError):
        return f"the arXiv API answered HTTP {error.status} after retries"
    if isinstance(error, UnreadableFeedError):
        return str(error)
    return f"cannot reach the arXiv API at {api_url} ({type(error).__name__}); check your network or --api-url"


def search_arxiv(client, categories: list[str], per_category: int, ids: list[str], api_url: str):
    """Query arXiv (newest submissions first per category, or by id) and merge cross-listed papers. A query that
    still fails after retries is returned as a failure; the others' papers are kept."""
    import arxiv
    import requests

    records: dict[str, dict] = {}
    failures: list[dict] = []
    queries = [("ids", arxiv.Search(id_list=ids, max_results=len(ids)), set())] if ids else []
    for category in categories:
        search = arxiv.Search(
            query=f"cat:{category}",
            max_results=per_category,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        queries.append((category, search, {category}))
    for name, search, tags in queries:
        try:
            found = [record_from_result(result, tags) for result in client.results(search)]
        except (arxiv.ArxivError, requests.RequestException, UnreadableFeedError) as e:
            failures.append({"id": f"search:{name}", "stage": "search", "reason": search_failure(e, api_url)})
            log.error("arXiv query %s failed: %s", name, failures[-1]["reason"])
            continue
        for record in found:
            merge_record(records, record)
        if name != "ids":
            log.info("%s: %d papers", name, len(found))
    return records, failures


# ----------------------------------------------------------------------------- download


def is_complete_pdf(path: Path) -> bool:
    """Cheap validity check for resume: the PDF header at the start and an end-of-file marker at the end."""
    if not path.exists() or path.stat().st_size < 64:
        return False
    with open(path, "rb") as f:
        head = f.read(5)
        f.seek(-1024, os.SEEK_END) if path.stat().st_size > 1024 else f.seek(0)
        tail = f.read()
    return head == PDF_MAGIC and b"%%EOF" in tail


def make_download_session():
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


class RetryableDownload(Exception):
    """A 429/5xx or a dropped connection: worth another attempt while the deadline allows."""


def fetch_pdf_once(session, url: str, dest: Path, deadline: float, max_bytes: int) -> str | None:
    """One attempt: stream url into dest atomically. Return None or why it failed for good; raise
    RetryableDownload for what another attempt may fix, TimeoutError when the deadline passes."""
    import requests
    import urllib3

    remaining = deadline - time.monotonic()
    try:
        response = session.get(url, stream=True, timeout=(min(10, remaining), min(DOWNLOAD_READ_TIMEOUT_S, remaining)))
    except (requests.ConnectionError, requests.Timeout) as e:
        raise RetryableDownload(f"{type(e).__name__}: {e}") from None
    with response:
        if response.status_code in (429, 500, 502, 503, 504):
            raise RetryableDownload(f"HTTP {response.status_code}")
        if response.status_code != 200:
            return f"download failed: HTTP {response.status_code} from {url}"
        if int(response.headers.get("Content-Length") or 0) > max_bytes:
            return f"larger than --max-pdf-mb ({int(response.headers['Content-Length']):,} bytes)"
        received, head, tail = 0, b"", b""
        try:
            with atomic_writer(dest, "wb") as f:
                # read1 returns what has arrived, so a server trickling a byte at a time meets the deadline too.
                while chunk := response.raw.read1(1 << 16, decode_content=True):
                    head = (head + chunk)[: len(PDF_MAGIC)] if len(head) < len(PDF_MAGIC) else head
                    if len(head) == len(PDF_MAGIC) and head != PDF_MAGIC:
                        kind = response.headers.get("Content-Type", "unknown type")
                        raise ValueError(f"not a PDF: {url} returned {kind}")
                    received += len(chunk)
                    tail = (tail + chunk)[-1024:]
                    if received > max_bytes:
                        raise ValueError(f"larger than --max-pdf-mb (over {max_bytes:,} bytes)")
                    f.write(chunk)
                    if time.monotonic() > deadline:
                        raise TimeoutError
                if b"%%EOF" not in tail:
                    raise ValueError(f"truncated PDF: {url} ended after {received:,} bytes without %%EOF")
        except ValueError as e:
            return str(e)
        except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, OSError) as e:
            if isinstance(e, TimeoutError) and time.monotonic() > deadline:
                raise
            raise RetryableDownload(f"{type(e).__name__}: {e}") from None
    return None


def download_pdf(session, url: str, dest: Path, timeout_s: float, max_bytes: int) -> str | None:
    """Download url to dest atomically within one deadline covering connect, every read and every retry (tenacity:
    up to 4 attempts, exponential backoff with jitter); return None on success or the reason it failed."""
    import tenacity

    deadline = time.monotonic() + timeout_s
    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(DOWNLOAD_ATTEMPTS) | tenacity.stop_before_delay(timeout_s),
            wait=tenacity.wait_exponential_jitter(initial=1, max=8),
            retry=tenacity.retry_if_exception_type(RetryableDownload),
            reraise=True,
        ):
            with attempt:
                return fetch_pdf_once(session, url, dest, deadline, max_bytes)
    except TimeoutError:
        return f"download timed out after {timeout_s:g} s (raise --download-timeout)"
    except RetryableDownload as e:
        if time.monotonic() > deadline:
            return f"download timed out after {timeout_s:g} s (raise --download-timeout): {e}"
        return f"download failed after {DOWNLOAD_ATTEMPTS} attempts: {e}"
    return None


# ----------------------------------------------------------------------------- extraction (worker processes)


def find_references_page(page_texts: list[str]) -> int | None:
    """Index of the last page that starts a references section, found on cheap plain text.

    Pages after it are appendix or bibliography and are dropped anyway, so layout analysis skips them.
    The last match wins because a table of contents may also list "References" on page 1.
    """
    hit = None
    for index, text in enumerate(page_texts):
        if any(title_key(line) in REFERENCE_TITLES for line in text.splitlines() if len(line) < 40):
            hit = index
    return hit


def limit_worker_threads(threads: int) -> None:
    """Give each worker process its share of the cores so N workers do not oversubscribe them.

    pymupdf's layout model runs in onnxruntime, which otherwise starts one thread per core in every worker.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import onnxruntime

    options_class = onnxruntime.SessionOptions

    class CappedSessionOptions(options_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.intra_op_num_threads = threads
            self.inter_op_num_threads = 1

    onnxruntime.SessionOptions = CappedSessionOptions


AFFILIATION = re.compile(
    r"@|\b(?:university|universit[äa]t|department|dept\.|institute|school|college|laborator(?:y|ies)|lab\b|inc\.|"
    r"division|computer science|faculty|centre|center|"
    r"corporation|research|google|microsoft|ibm|yahoo|e-?mail|http|www\.|street|road|avenue|usa|china|germany)\b",
    re.IGNORECASE,
)
NAME_TOKEN = re.compile(
    r"^(?:[A-Z][a-zA-Z'’\-]+|[A-Z]\.(?:-?[A-Z]\.)*|[A-Z][A-Z'’\-]+|van|von|de|der|da|del|di|le|la)$"
)


def page_lines(page) -> list[tuple[float, float, str]]:
    """(top y, largest font size, text) of every horizontal text line of a page, top to bottom and left to right
    (authors side by side share a row). Rotated text, such as arXiv's margin stamp, is left out."""
    lines = []
    for block in page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            text = " ".join("".join(span["text"] for span in line["spans"]).split())
            if text and abs(line["dir"][0] - 1) < 1e-3 and not re.match(r"^arXiv:\d", text):
                size = max(span["size"] for span in line["spans"])
                lines.append((round(line["bbox"][1]), line["bbox"][0], size, text))
    return [(y, size, text) for y, _, size, text in sorted(lines)]


def names_in(line: str) -> list[str]:
    """The person names of an author line ("Ada Lovelace, Alan Turing and Grace Hopper"), or [] if it is not one."""
    if AFFILIATION.search(line) or len(line) > 160:
        return []
    cleaned = re.sub(r"[\d*†‡§¶∗⋆]+", " ", line)  # affiliation markers
    cleaned = re.sub(r"[´¨`˝˜ˆ˘˚¸]", "", cleaned)  # TeX's spacing accents: "Zolt´an Gy¨ongyi" -> "Zoltan Gyongyi"
    names = []
    for part in re.split(r",|;|\band\b|·|&", cleaned, flags=re.IGNORECASE):
        tokens = part.split()
        if not tokens:
            continue
        capitalised = all(
            t[0].isupper() or t in ("van", "von", "de", "der", "da", "del", "di", "le", "la") for t in tokens
        )
        if not (2 <= len(tokens) <= 5 and capitalised and all(NAME_TOKEN.match(t) for t in tokens)):
            return []
        names.append(" ".join(t.title() if t.isupper() and "." not in t else t for t in tokens))
    return names


def first_page_title_authors(page) -> tuple[str, list[str]]:
    """The title (the largest type in the upper half of page 1) and the author lines below it, up to the
    abstract: what a reader takes them from, where PDF metadata often holds a file name or nothing."""
    lines = page_lines(page)
    upper = [line for line in lines if line[0] < page.rect.height * 0.5 and len(line[2]) >= 2]
    if not upper:
        return "", []
    size = max(s for _, s, _ in upper)
    title_lines = [i for i, (y, s, t) in enumerate(lines) if abs(s - size) < 0.5 and y < page.rect.height * 0.5]
    title = " ".join(lines[i][2] for i in title_lines)
    authors: list[str] = []
    for _, _, text in lines[title_lines[-1] + 1 :]:
        if re.match(r"^\W*(?:abstract|summary|摘要)\b", text, re.IGNORECASE) or len(text) > 160:
            break
        authors += [n for n in names_in(text) if n not in authors]
    return (title if 8 <= len(title) <= 300 else ""), authors


FOOTNOTE_MARK = re.compile(r"^\s*(?:\d{1,2}|[*†‡§¶∗⋆])\s*\S")
EDGE_SHARE = 0.1  # lines in the top or bottom tenth of a page may be running headers or footers


def page_layout(doc, pages: list[int]) -> PageLayout:
    """Edge lines and footnotes of the pages analysed, from the PDF's geometry and type sizes."""
    sizes: Counter = Counter()
    per_page = []
    for number in pages:
        page = doc[number]
        lines = page_lines(page)
        per_page.append((page, lines))
        for _, size, text in lines:
            sizes[round(size)] += len(text)
    body_size = sizes.most_common(1)[0][0] if sizes else 10
    edges, footnotes = set(), set()
    for page, lines in per_page:
        height = page.rect.height
        edges |= {furniture_key(t) for y, _, t in lines if y < height * EDGE_SHARE or y > height * (1 - EDGE_SHARE)}
        for y, size, text in lines:
            small, low = size <= body_size - 1, y > page.rect.height * 0.7
            if small and low and FOOTNOTE_MARK.match(text) and not re.fullmatch(r"\d{1,4}", text.strip()):
                footnotes.add(layout_key(text))  # a footnote's first line, marker included
    # 20+ characters: a short line would match the start of too many paragraphs
    return PageLayout(frozenset(edges), frozenset(k for k in footnotes if len(k) >= 20))


def metadata_title(metadata: dict) -> str:
    """The metadata title, unless it is a file name or a tool's placeholder ("packing-journal.dvi")."""
    title = (metadata.get("title") or "").strip()
    if re.search(r"\.(?:dvi|tex|pdf|docx?|ps)$|^Microsoft Word|^untitled$", title, re.IGNORECASE):
        return ""
    return title


def extract_paper(pdf_path: str, image_dir: str, max_pages: int, keep_appendix: bool) -> dict:
    """Markdown, sections and figures of one PDF. Raises ValueError with a reason for unusable PDFs."""
    import pymupdf
    import pymupdf4llm

    pymupdf.TOOLS.mupdf_display_warnings(False)
    pymupdf.TOOLS.reset_mupdf_warnings()  # per paper: a worker process extracts many
    try:
        doc = pymupdf.open(pdf_path)
    except Exception as e:
        raise ValueError(f"corrupt PDF: {e}") from None
    with doc:
        if doc.needs_pass:
            raise ValueError("encrypted PDF: it needs a password")
        if doc.page_count == 0:
            raise ValueError("corrupt or empty PDF: no readable pages")
        texts = []
        for number, page in enumerate(doc, start=1):
            try:
                texts.append(page.get_text())
            except Exception as e:
                raise ValueError(f"damaged PDF: page {number} does not load ({e})") from None
        # None of the 12 real test papers makes mupdf repair anything; a truncated or damaged file does, and then
        # "loads" with pages silently missing.
        warnings = pymupdf.TOOLS.mupdf_warnings()
        if "repair" in warnings:
            first = next(line for line in warnings.splitlines() if line.strip())
            raise ValueError(f"damaged PDF: mupdf had to repair it ({first}); pages may be missing")
        if not any(t.strip() for t in texts):
            raise ValueError("no text layer (a scanned PDF?): OCR it first")
        last = len(texts) - 1 if keep_appendix else (find_references_page(texts) or len(texts) - 1)
        pages = list(range(min(last + 1, max_pages)))
        pages_total = doc.page_count
        Path(image_dir).mkdir(parents=True, exist_ok=True)
        markdown = pymupdf4llm.to_markdown(
            doc, pages=pages, write_images=True, image_path=image_dir, image_format="png", show_progress=False
        )
        metadata = doc.metadata or {}
        first_line = next((line.strip() for line in texts[0].splitlines() if line.strip()), "")
        page_title, page_authors = first_page_title_authors(doc[0])
        outline = [title for _, title, *_ in doc.get_toc()]  # the authors' own bookmarks, when LaTeX wrote them
        layout = page_layout(doc, pages)
    sections = split_sections(markdown, keep_appendix=keep_appendix, outline=outline, layout=layout)
    return {
        "markdown": markdown,
        "sections": sections,
        "images": sorted(str(p) for p in Path(image_dir).glob("*.png")),
        "pages": len(pages),
        "pages_total": pages_total,
        "page_capped": len(pages) < last + 1,  # --max-pages cut text that would have been used
        "pdf_title": page_title or metadata_title(metadata) or first_line,
        "pdf_authors": page_authors
        or [a.strip() for a in re.split(r"[;,]| and ", metadata.get("author") or "") if a.strip()],
    }


# ----------------------------------------------------------------------------- the store: one file per paper


class Store:
    """One small JSON file per finished paper (and per failed one) in a folder beside the output, e.g.
    papers.records/ for papers.json: saving a paper costs the same however many are done, where rewriting
    papers.json after each paper cost time and bytes in proportion to all of them (quadratic in a run).
    papers.json is assembled from the store once, at the end of a run and on Ctrl-C."""

    def __init__(self, out: Path):
        self.dir = out.with_name(out.stem + ".records")

    def _path(self, paper_id: str, failed: bool = False) -> Path:
        return self.dir / f"{safe_filename(paper_id)}{'.failed' if failed else ''}.json"

    def records(self, failed: bool = False):
        """Stored papers (or failures), one at a time, in file-name order: never all in memory at once."""
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            if path.name.endswith(".failed.json") != failed:
                continue
            record = read_json(path, "a stored paper", f"delete {path} to extract that paper again")
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise InputError(f'{path}: not a paper record (no "id"); delete it to extract that paper again')
            yield record

    def save_paper(self, record: dict) -> None:
        write_json(self._path(record["id"]), record)
        self._path(record["id"], failed=True).unlink(missing_ok=True)

    def save_failure(self, failure: dict) -> None:
        write_json(self._path(failure["id"], failed=True), failure)

    def is_empty(self) -> bool:
        return not self.dir.is_dir() or not any(self.dir.glob("*.json"))


def write_papers_json(out: Path, store: Store, extra_failures: list[dict]) -> tuple[int, int]:
    """papers.json from the store, streamed one record at a time (memory does not grow with the papers) and
    replaced atomically; return (papers, failures)."""
    ids: set[str] = set()
    with atomic_writer(out) as f:
        f.write('{"papers": [')
        for record in store.records():
            f.write(("," if ids else "") + "\n" + json.dumps(record, ensure_ascii=False))
            ids.add(record["id"])
        failures = [r for r in store.records(failed=True) if r["id"] not in ids] + extra_failures
        f.write('\n], "failures": ' + json.dumps(failures, ensure_ascii=False, indent=1) + "}\n")
    return len(ids), len(failures)


def import_legacy(out: Path, store: Store) -> int:
    """A papers.json written before the store existed seeds it, so an upgrade re-extracts nothing."""
    if not out.is_file() or not store.is_empty():
        return 0
    data = read_json(out, "papers.json", "move it aside or fix it, then rerun")
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{out}: expected {{'papers': [...], 'failures': [...]}}; move it aside and rerun")
    for index, record in enumerate(data["papers"]):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
            raise InputError(f'{out}: papers[{index}] has no "id"; fix or remove that record, or move the file aside')
        store.save_paper(record)
    return len(data["papers"])


# ----------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Settings:
    categories: list[str]
    per_category: int
    ids: list[str]
    pdf_dir: Path | None
    api_url: str
    api_delay: float
    out: Path
    papers_dir: Path
    workers: int
    max_pages: int
    timeout: float
    download_timeout: float
    max_pdf_mb: float
    keep_appendix: bool
    force: bool
    verbose: bool

    @property
    def options(self) -> dict:
        """The settings that shape a record: changing one re-extracts the papers made with another."""
        return {"max_pages": self.max_pages, "keep_appendix": self.keep_appendix}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def empty_record(paper_id: str, pdf_path: Path | None) -> dict:
    """The record of a local PDF; title and authors are filled from the PDF itself after extraction."""
    return {
        "id": paper_id,
        "version": None,
        "title": None,
        "authors": [],
        "abstract": None,
        "categories": [],
        "primary_category": None,
        "published": None,
        "pdf_url": None,
        "pdf_path": str(pdf_path) if pdf_path else None,
    }


def local_records(pdf_dir: Path) -> dict[str, dict]:
    """Every PDF under pdf_dir, subfolders included, whatever the case of ".pdf". An id is the relative path made
    safe ("sub/a b.pdf" -> "sub_a_b"); names that come out the same get a short hash of their path, stable from
    run to run, and the log says so."""
    paths = sorted(p for p in pdf_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    base = {p: safe_filename(str(p.relative_to(pdf_dir).with_suffix(""))) for p in paths}
    taken = Counter(base.values())
    records = {}
    for path, name in base.items():
        if taken[name] > 1:
            suffix = hashlib.sha256(str(path.relative_to(pdf_dir)).encode()).hexdigest()[:8]
            log.warning("%s: its name is taken by another PDF as %r; its id is %s-%s", path, name, name, suffix)
            name = f"{name}-{suffix}"
        records[name] = empty_record(name, path)
    return records


def is_current(stored: dict | None, pdf: Path | None, settings: Settings) -> bool:
    """Whether a stored paper can be kept: made with today's options, from the PDF bytes on disk now."""
    if stored is None or settings.force or stored.get("options", settings.options) != settings.options:
        return False
    if pdf is None or not pdf.is_file() or "source_sha256" not in stored:
        return True  # a paper from before fingerprints, or whose PDF was since deleted: kept as it is
    return stored["source_sha256"] == file_sha256(pdf)


def finish_record(record: dict, extracted: dict, options: dict) -> dict:
    sections = extracted["sections"]
    abstract = next((s["text"] for s in sections if s["heading"].lower() == "abstract"), None)
    return {
        **record,
        "title": record["title"] or extracted["pdf_title"],
        "authors": record["authors"] or extracted["pdf_authors"],
        "abstract": record["abstract"] or abstract,
        "markdown": extracted["markdown"],
        "sections": sections,
        "images": extracted["images"],
        "pages": extracted["pages"],
        "pages_total": extracted["pages_total"],
        "source_sha256": file_sha256(Path(record["pdf_path"])),
        "options": options,
    }


def check_local(record: dict) -> str | None:
    """A local file gets the checks a download gets: a PDF header, and an end marker (else it was cut short)."""
    path = Path(record["pdf_path"])
    with open(path, "rb") as f:
        head = f.read(len(PDF_MAGIC))
    if head != PDF_MAGIC:
        return f"not a PDF: {path} does not start with %PDF- (an HTML page saved as .pdf?)"
    if not is_complete_pdf(path):
        return f"truncated PDF: {path} has no %%EOF marker at its end (an interrupted download?)"
    return None


def ensure_pdf(session, record: dict, papers_dir: Path, settings: Settings) -> str | None:
    """Set record["pdf_path"], downloading unless a complete PDF is already there; return a failure reason."""
    if record["pdf_path"] is None:
        dest = papers_dir / f"{safe_filename(record['id'])}.pdf"
        if not is_complete_pdf(dest):
            max_bytes = int(settings.max_pdf_mb * 1e6)
            reason = download_pdf(session, record["pdf_url"], dest, settings.download_timeout, max_bytes)
            if reason:
                return reason
        record["pdf_path"] = str(dest)
        return None
    return check_local(record)


def fetch_all(records: list[dict], settings: Settings, store: Store, failures: dict) -> list[dict]:
    """Download missing PDFs (arXiv) or check local files; return the records whose PDF is ready to extract."""
    from tqdm import tqdm

    session = make_download_session()
    ready = []
    label, unit = ("check", "file") if settings.pdf_dir else ("download", "pdf")
    for record in tqdm(records, desc=label, unit=unit, disable=not records):
        reason = ensure_pdf(session, record, settings.papers_dir, settings)
        if reason:
            failures[record["id"]] = {"id": record["id"], "stage": label, "reason": reason}
            store.save_failure(failures[record["id"]])
        else:
            ready.append(record)
    return ready


def worker_init(threads: int) -> None:
    """Extraction workers leave Ctrl-C to the main process, which stops them; and share the cores."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_worker_threads(threads)


def extract_all(records: list[dict], settings: Settings, store: Store, failures: dict) -> list[dict]:
    """Extract in worker processes; each finished paper is stored at once. On Ctrl-C or SIGTERM the queued work is
    cancelled and the workers are ended, so the interrupt takes effect in seconds; finished papers are kept."""
    from pebble import ProcessPool
    from tqdm import tqdm

    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    pool = ProcessPool(max_workers=settings.workers, initializer=worker_init, initargs=(threads,))
    done = []
    try:
        futures = {
            pool.schedule(
                extract_paper,
                timeout=settings.timeout,
                args=(
                    r["pdf_path"],
                    str(settings.papers_dir / "images" / safe_filename(r["id"])),
                    settings.max_pages,
                    settings.keep_appendix,
                ),
            ): r
            for r in records
        }
        for future in tqdm(
            as_completed(futures), total=len(futures), desc="extract", unit="paper", disable=not futures
        ):
            record = futures[future]
            try:
                extracted = future.result()
            except Exception as e:  # any failure of one paper is recorded; it never stops the run
                failures[record["id"]] = {
                    "id": record["id"],
                    "stage": "extract",
                    "reason": extract_failure(e, settings),
                }
                store.save_failure(failures[record["id"]])
                continue
            if extracted["page_capped"]:
                log.warning(
                    "%s: only the first %d of %d pages extracted (--max-pages)",
                    record["id"],
                    extracted["pages"],
                    extracted["pages_total"],
                )
            done.append(finish_record(record, extracted, settings.options))
            store.save_paper(done[-1])
            failures.pop(record["id"], None)
    except BaseException:
        pool.stop()  # cancels what is queued and ends the workers now, instead of draining the queue
        pool.join(timeout=5)
        raise
    pool.close()
    pool.join()
    return done


def extract_failure(error: Exception, settings: Settings) -> str:
    """Why one paper's extraction failed, in words for papers.json."""
    if isinstance(error, FutureTimeout):
        return f"timed out after {settings.timeout:g} s (raise --timeout)"
    if isinstance(error, ValueError):  # a reason extract_paper gave: corrupt, damaged, encrypted, empty, no text
        return str(error)
    return f"{type(error).__name__}: {error}"  # pebble.ProcessExpired for a crashed worker, a pymupdf4llm bug, ...


def positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to fetch")
    src.add_argument(
        "--categories",
        nargs="+",
        default=DEFAULT_CATEGORIES,
        metavar="CAT",
        help="arXiv categories to search, newest submissions first (default: %(default)s)",
    )
    src.add_argument(
        "--per-category",
        type=int,
        default=7,
        metavar="N",
        help="papers per category; cross-listed papers are kept once (default: %(default)s)",
    )
    src.add_argument(
        "--ids",
        nargs="+",
        default=[],
        metavar="ID",
        help="specific arXiv ids (e.g. 1706.03762 cs/0112017); skips the category search",
    )
    src.add_argument(
        "--pdf-dir", type=Path, help="ingest local PDFs from this folder and its subfolders instead of arXiv"
    )
    src.add_argument(
        "--api-url",
        default=os.environ.get("ARXIV_API_URL", DEFAULT_API_URL),
        help="arXiv API query endpoint, for mirrors and tests (env ARXIV_API_URL; default: %(default)s)",
    )
    src.add_argument(
        "--api-delay",
        type=float,
        default=ARXIV_MIN_DELAY_S,
        metavar="SECONDS",
        help="pause between API requests; arXiv's terms ask for >= 3 (default: %(default)s)",
    )
    out = p.add_argument_group("where to write")
    out.add_argument(
        "--out",
        type=Path,
        default=Path("papers.json"),
        help="output JSON; finished papers are kept one file each in <out stem>.records/ (default: %(default)s)",
    )
    out.add_argument(
        "--papers-dir",
        type=Path,
        default=Path("papers"),
        help="PDFs and papers/images/<id>/ figures (default: %(default)s)",
    )
    work = p.add_argument_group("download and extraction")
    work.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="extraction processes (default: number of CPUs, %(default)s)",
    )
    work.add_argument(
        "--max-pages", type=int, default=60, help="page cap per PDF; logged when hit (default: %(default)s)"
    )
    work.add_argument(
        "--timeout",
        type=positive,
        default=300,
        help="seconds to extract one PDF; a slower PDF is recorded as failed (default: %(default)s)",
    )
    work.add_argument(
        "--download-timeout",
        type=positive,
        default=300,
        help="seconds to download one PDF, connecting, every read and retries included (default: %(default)s)",
    )
    work.add_argument(
        "--max-pdf-mb", type=positive, default=100, help="largest PDF to download, MB (default: %(default)s)"
    )
    work.add_argument("--keep-appendix", action="store_true", help="keep appendix sections (default: dropped)")
    work.add_argument("--force", action="store_true", help="extract every paper again, even unchanged ones")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def collect_records(settings: Settings) -> tuple[dict[str, dict], list[dict]]:
    """The papers this run is about, and the queries or ids that failed before any paper was fetched."""
    if settings.pdf_dir is not None:
        return local_records(settings.pdf_dir), []
    malformed = bad_ids(settings.ids)
    failures = [
        {"id": i, "stage": "id", "reason": "not an arXiv id (new style 2309.13541 or 2309.13541v2, old cs/0112017)"}
        for i in malformed
    ]
    for failure in failures:
        log.error("%s: %s", failure["id"], failure["reason"])
    ids = [i for i in settings.ids if i not in malformed]
    if settings.ids and not ids:
        return {}, failures
    categories = [] if settings.ids else settings.categories
    page_size = len(ids) if ids else settings.per_category  # ask for no more than is used
    client = make_arxiv_client(settings.api_url, settings.api_delay, page_size)
    records, search_failures = search_arxiv(client, categories, settings.per_category, ids, settings.api_url)
    missing = [i for i in ids if versionless_id(i)[0] not in records]
    if missing and not search_failures:
        log.warning("not found on arXiv, skipped: %s", ", ".join(missing))
        failures += [{"id": i, "stage": "id", "reason": "arXiv has no paper with this id"} for i in missing]
    return records, failures + search_failures


def check_settings(settings: Settings, parser) -> None:
    if settings.workers < 1 or settings.per_category < 1 or settings.max_pages < 1:
        parser.error("--workers, --per-category and --max-pages must be at least 1")
    if settings.pdf_dir is not None and not settings.pdf_dir.is_dir():
        parser.error(f"--pdf-dir {settings.pdf_dir}: no such folder; pass a folder that holds .pdf files")
    if settings.out.is_dir():
        parser.error(f"--out {settings.out} is a folder; pass a file name such as {settings.out / 'papers.json'}")
    bad = [] if (settings.ids or settings.pdf_dir) else unknown_categories(settings.categories)
    if bad:
        by_lower = {c.lower(): c for c in ARXIV_CATEGORIES}
        hints = {c: [by_lower[m] for m in difflib.get_close_matches(c.lower(), by_lower, n=1)] for c in bad}
        parser.error(
            "unknown arXiv categories: "
            + ", ".join(f"{c}" + (f" (did you mean {h[0]}?)" if h else "") for c, h in hints.items())
            + "; see https://arxiv.org/category_taxonomy"
        )


def shown_settings(settings: Settings) -> dict:
    """What this run really uses: arXiv settings only when it talks to arXiv."""
    arxiv_only = {"categories", "per_category", "ids", "api_url", "api_delay", "download_timeout", "max_pdf_mb"}
    skip = arxiv_only if settings.pdf_dir else {"pdf_dir"}
    return {k: str(v) for k, v in vars(settings).items() if k not in skip}


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends the run as Ctrl-C does: finished papers are saved


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = settings_from(Settings, parser.parse_args(argv))
    setup_logging(settings.verbose)
    check_settings(settings, parser)
    signal.signal(signal.SIGTERM, _interrupt)
    log.info("settings (%s): %s", "local PDFs" if settings.pdf_dir else "arXiv", shown_settings(settings))
    started = time.monotonic()
    store = Store(settings.out)
    try:
        imported = import_legacy(settings.out, store)
        if imported:
            log.info("kept %d papers of %s in %s/", imported, settings.out, store.dir)
        # Only the fingerprints: a store of thousands of papers is not held in memory for a comparison.
        stored = {r["id"]: {k: r[k] for k in ("options", "source_sha256") if k in r} for r in store.records()}
        records, early_failures = collect_records(settings)
    except InputError as e:
        die(str(e))
    todo = [r for r in records.values() if not is_current(stored.get(r["id"]), local_pdf(r, settings), settings)]
    skipped = len(records) - len(todo)
    if skipped:
        log.info("skipping %d papers already in %s, unchanged", skipped, settings.out)
    failures: dict[str, dict] = {}
    new: list[dict] = []
    try:
        ready = fetch_all(todo, settings, store, failures)
        new = extract_all(ready, settings, store, failures)
    except KeyboardInterrupt:
        papers, _ = write_papers_json(settings.out, store, early_failures)
        die(f"interrupted: {papers:,} papers are saved in {settings.out}; rerun the same command to resume")
    write_papers_json(settings.out, store, early_failures)
    failed = len(failures) + len(early_failures)
    print(
        f"done: {len(new):,} ok, {failed:,} failed, {skipped:,} skipped | "
        f"{sum(p['pages'] for p in new):,} pages, {sum(len(p['sections']) for p in new):,} sections, "
        f"{sum(len(p['images']) for p in new):,} images in {time.monotonic() - started:,.1f} s -> {settings.out}"
    )
    for failure in [*failures.values(), *early_failures]:
        log.warning("failed %s (%s): %s", failure["id"], failure["stage"], failure["reason"])
    if not new and not skipped:
        first = next(iter([*early_failures, *failures.values()]), None)
        if first is None:
            die("no papers found: check the categories, ids or --pdf-dir")
        die(f"nothing succeeded: {failed:,} failed; first {first['id']} ({first['stage']}): {first['reason']}")
    return 0


def local_pdf(record: dict, settings: Settings) -> Path | None:
    """Where a record's PDF is (or will be) on disk, for the fingerprint check."""
    if record["pdf_path"]:
        return Path(record["pdf_path"])
    return settings.papers_dir / f"{safe_filename(record['id'])}.pdf"


if __name__ == "__main__":
    sys.exit(main())
