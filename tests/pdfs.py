"""Generate small research-paper PDFs with PyMuPDF: title, abstract, numbered headings, two columns,
an embedded figure and a references section, so step 1 runs on real PDF bytes without ../shared."""

import random

import pymupdf

# Sentences that sections are drawn from. Each section of each paper draws its own, so two generated papers are
# as different as two real ones: split_data.py joins near-identical sections, and templated text would be one.
SENTENCES = [
    "The method stores every key in a table and looks it up in constant time.",
    "The cost of a query does not grow with the size of the collection.",
    "We measure this on three workloads drawn from production traces.",
    "The speedup holds when the data no longer fits in memory.",
    "The access pattern stays local, so the cache does most of the work.",
    "A second index answers range queries that the table cannot.",
    "Writes are batched and flushed in the background every few seconds.",
    "Each worker owns a shard, which removes most of the locking.",
    "Failures are detected by heartbeats and repaired from a replica.",
    "The baseline spends most of its time waiting on the disk.",
    "Compression halves the memory footprint at a small cost in speed.",
    "We tune one parameter, the load factor, and leave the rest fixed.",
    "Tail latency improves more than the median does.",
    "The design fits on one machine and scales out when it must.",
    "A simple model predicts the throughput within ten percent.",
    "Hot keys are spread over several slots to avoid contention.",
    "Garbage collection runs incrementally and never pauses the service.",
    "Queries that miss are answered by a compact filter first.",
    "The experiments repeat five times and report the median.",
    "Energy use falls because fewer cores sit idle.",
    "Old entries expire after a time to live set by the operator.",
    "The same idea applies to graphs, where vertices play the role of keys.",
    "We release the code and the traces so others can reproduce the results.",
    "Limitations remain for workloads dominated by scans.",
]


def paper_sections(topic: str) -> list[tuple[str, str]]:
    openings = {
        "1 Introduction": f"{topic} matters because it is everywhere.",
        "2 Method": f"Our approach to {topic} has two parts.",
        "3 Experiments": f"We evaluate {topic} on public benchmarks.",
        "4 Conclusion": f"{topic} can be made simple and fast.",
    }
    sections = []
    for heading, opening in openings.items():
        drawn = random.Random(f"{topic}:{heading}").sample(SENTENCES, 8)
        sections.append((heading, " ".join([opening, *drawn])))
    return sections


def _figure_png() -> bytes:
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 120, 80), False)
    pix.clear_with(200)
    pix.set_rect(pymupdf.IRect(10, 10, 60, 70), (30, 90, 200))
    return pix.tobytes("png")


def _textbox(page, rect, text, **kwargs) -> float:
    """insert_textbox silently drops text that does not fit; a fixture must fail loudly instead."""
    spare = page.insert_textbox(rect, text, **kwargs)
    assert spare >= 0, f"text does not fit in {rect}: {text[:40]!r}"
    return rect.y1 - spare


FIXED_DATES = {"creationDate": "D:20240101000000Z", "modDate": "D:20240101000000Z"}


def make_paper_pdf(title: str, topic: str = "Hash tables") -> bytes:
    """A 2-page paper: title, authors, abstract and a figure across the top, four numbered sections in two
    columns, then a references page."""
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 80), title, fontsize=18, fontname="hebo")
    page.insert_text((72, 104), "Ada Lovelace, Alan Turing", fontsize=11)
    page.insert_text((72, 136), "Abstract", fontsize=12, fontname="hebo")
    abstract = " ".join(random.Random(f"{topic}:abstract").sample(SENTENCES, 3))
    _textbox(page, pymupdf.Rect(72, 142, 540, 230), f"We study {topic}. {abstract}", fontsize=10)
    page.insert_image(pymupdf.Rect(250, 235, 370, 315), stream=_figure_png())
    page.insert_text((200, 330), "Figure 1: The table layout used by the method.", fontsize=9)
    sections = paper_sections(topic)
    for column, (x0, x1) in enumerate([(72, 300), (312, 540)]):
        y = 356
        for heading, body in sections[2 * column : 2 * column + 2]:
            page.insert_text((x0, y), heading, fontsize=12, fontname="hebo")
            y = _textbox(page, pymupdf.Rect(x0, y + 6, x1, 780), body, fontsize=9) + 24
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 80), "References", fontsize=12, fontname="hebo")
    refs = "[1] D. Knuth. The Art of Computer Programming. 1968.\n[2] E. Codd. A Relational Model. 1970."
    _textbox(page, pymupdf.Rect(72, 90, 540, 200), refs, fontsize=9)
    # Fixed dates and no random file id: the same paper is the same bytes, so a smoke run's outputs are too.
    doc.set_metadata({"title": title, "author": "Ada Lovelace, Alan Turing"} | FIXED_DATES)
    data = doc.tobytes(no_new_id=True)
    doc.close()
    return data


CORRUPT_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage garbage\n%%EOF\n"


def make_encrypted_pdf() -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="pw")
    doc.close()
    return data


def make_hard_paper_pdf() -> bytes:
    """A paper that carries step 1's known failure cases at once: no "Abstract" label, a metadata title that is a
    file name and no metadata author, a parent heading followed at once by its subsection, run-in subsection
    headings that only the PDF outline marks, a figure caption, a venue footer and a page number."""
    sentences = random.Random("hard").sample(SENTENCES, 14)
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 80), "Hard Cases in Paper Extraction", fontsize=18, fontname="hebo")
    page.insert_text((72, 104), "Grace Hopper and Edsger Dijkstra", fontsize=11)
    page.insert_text((72, 118), "Department of Computer Science, University of Nowhere", fontsize=9)
    abstract = "We study why extraction fails on real papers. " + " ".join(sentences[:4] + sentences[11:14])
    _textbox(page, pymupdf.Rect(72, 140, 540, 220), abstract, fontsize=10)
    y = 240
    page.insert_text((72, y), "1 Methods", fontsize=12, fontname="hebo")
    page.insert_text((72, y + 22), "1.1 Storage Layout", fontsize=11, fontname="hebo")
    y = _textbox(page, pymupdf.Rect(72, y + 30, 540, 420), " ".join(sentences[4:7]), fontsize=10) + 10
    page.insert_text((72, y + 10), "Figure 1: The storage layout used by the method.", fontsize=9)
    y += 30
    page.insert_text((72, y), "2 Results", fontsize=12, fontname="hebo")
    run_in = (
        "2.1. Latency under load. " + " ".join(sentences[7:9]) + "\n\n"
        "2.2. Memory footprint. " + " ".join(sentences[9:11])
    )
    _textbox(page, pymupdf.Rect(72, y + 8, 540, 700), run_in, fontsize=10)
    page.insert_text((72, 722), "1 Work done while the first author visited the University of Nowhere.", fontsize=7)
    page.insert_text((72, 750), "Proceedings of the 58th Annual Meeting of the ACL, pages 4969–4983, 2020.", fontsize=8)
    page.insert_text((300, 770), "1", fontsize=9)
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 80), "References", fontsize=12, fontname="hebo")
    _textbox(page, pymupdf.Rect(72, 90, 540, 200), "[1] D. Knuth. The Art of Computer Programming. 1968.", fontsize=9)
    doc.set_toc(
        [
            [1, "1 Methods", 1],
            [2, "1.1 Storage Layout", 1],
            [1, "2 Results", 1],
            [2, "2.1. Latency under load", 1],
            [2, "2.2. Memory footprint", 1],
        ]
    )
    doc.set_metadata({"title": "hard-cases.dvi"})
    data = doc.tobytes()
    doc.close()
    return data


# Author blocks as the venues print them, where step 1 used to miss the authors: many names over several lines,
# affiliation marks in superscript (digits, symbols or Greek letters), names in capitals, accented letters, and
# names interleaved with affiliation and e-mail lines. Each style gives (PDF, the authors a reader sees).
MANY_AUTHORS = [
    "José Müller", "Bob Jones", "Carol White", "Dan O’Brien", "Eve Black", "Frank Green", "Grace Hall",
    "Henry King", "Irene Lopez", "Jürgen Schmidt", "Kim Nguyen", "Lena Petrova", "Marco Rossi", "Nina Berg",
    "Omar Haddad", "Paula Souza", "Quentin Moreau",
]  # fmt: skip
MARKS = ["1", "2", "α", "β,γ", "∗", "†", "1,2", "3"]
AFFILIATIONS = ["University of Nowhere", "Institute for Examples", "Example Research Lab"]


def _name_with_mark(writer, page_font, mark_font, x, y, name, mark, size):
    """A name followed by its affiliation mark, raised and smaller as LaTeX sets a superscript."""
    _, end = writer.append((x, y), name, font=page_font, fontsize=size)
    _, end = writer.append((end.x, y - size * 0.35), mark, font=mark_font, fontsize=size * 0.65)
    return end.x


def make_author_block_pdf(style: str) -> tuple[bytes, list[str]]:
    """style: "sigconf" (ACM: a grid of names, each over its affiliation and e-mail; no "Abstract" label),
    "acmsmall" (ACM journals: NAMES IN CAPITALS, each followed by its affiliation on the same line), or "acl" (ACL:
    names with superscript marks over two lines, then the marked affiliations and the e-mails)."""
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    latin, marks = pymupdf.Font("helv"), pymupdf.Font("cjk")  # helv has Latin-1; the fallback font has Greek
    writer = pymupdf.TextWriter(page.rect)
    page.insert_text((72, 70), "Learning to Read Author Blocks at Scale", fontsize=18, fontname="hebo")
    if style == "sigconf":
        authors = MANY_AUTHORS[:9]
        for i, name in enumerate(authors):
            x, y = 72 + (i % 3) * 170, 110 + (i // 3) * 60
            writer.append((x, y), name, font=latin, fontsize=11)
            writer.append((x, y + 13), AFFILIATIONS[i % 3], font=latin, fontsize=9)
            writer.append((x, y + 25), f"{name.split()[-1].lower()}@example.org", font=latin, fontsize=9)
        top = 300
    elif style == "acmsmall":
        authors = MANY_AUTHORS[:6]
        for i, name in enumerate(authors):
            line = f"{name.upper()}, {AFFILIATIONS[i % 3]}, Country {i}"
            writer.append((72, 100 + 14 * i), line, font=latin, fontsize=10)
        top = 200
    elif style == "acl":
        authors = MANY_AUTHORS
        x, y = 72, 100
        for i, name in enumerate(authors):
            if x > 430:
                x, y = 72, y + 16
            x = _name_with_mark(writer, latin, marks, x, y, name, MARKS[i % len(MARKS)], 11) + 14
        for j, affiliation in enumerate(AFFILIATIONS):
            writer.append((72, y + 20 + 12 * j), f"{j + 1} {affiliation}", font=latin, fontsize=9)
        writer.append((72, y + 56), "{jmuller,bjones,cwhite}@example.org", font=latin, fontsize=9)
        top = y + 80
    else:
        raise ValueError(style)
    writer.write_text(page)
    abstract = "We study how author blocks are read. " + " ".join(random.Random(style).sample(SENTENCES, 5))
    if style != "sigconf":
        page.insert_text((72, top), "Abstract", fontsize=12, fontname="hebo")
        top += 8
    _textbox(page, pymupdf.Rect(72, top, 540, top + 90), abstract, fontsize=10)
    page.insert_text((72, top + 120), "1 Introduction", fontsize=12, fontname="hebo")
    _textbox(page, pymupdf.Rect(72, top + 128, 540, 700), " ".join(random.Random(style + "i").sample(SENTENCES, 6)))
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 80), "References", fontsize=12, fontname="hebo")
    _textbox(page, pymupdf.Rect(72, 90, 540, 200), "[1] D. Knuth. The Art of Computer Programming. 1968.", fontsize=9)
    data = doc.tobytes()
    doc.close()
    return data, authors
