"""Step 1's section splitting, pure: markdown (and the PDF's outline and page layout) in, sections out, no I/O.

Finds headings (markdown, bold, numbered, the outline's), drops page furniture (running heads, page numbers,
footnotes, captions, permission blocks), junk (image links, picture text, tables of contents), references and
appendices, finds the abstract even without its label, and restores numbered order. section_coverage measures
how much of the body the sections keep."""

import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice

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
