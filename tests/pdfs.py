"""Generate small research-paper PDFs with PyMuPDF: title, abstract, numbered headings, two columns,
an embedded figure and a references section, so step 1 runs on real PDF bytes without ../shared."""

import pymupdf

LOREM = (
    "The method stores every key in a table and looks it up in constant time, so the cost of a query "
    "does not grow with the size of the collection. We measure this on three workloads and find that "
    "the speedup holds when the data no longer fits in memory, because the access pattern stays local. "
)


def paper_sections(topic: str) -> list[tuple[str, str]]:
    return [
        ("1 Introduction", f"{topic} matters because it is everywhere. " + LOREM * 2),
        ("2 Method", f"Our approach to {topic} has two parts. " + LOREM * 2),
        ("3 Experiments", f"We evaluate {topic} on public benchmarks. " + LOREM * 2),
        ("4 Conclusion", f"{topic} can be made simple and fast. " + LOREM * 2),
    ]


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


def make_paper_pdf(title: str, topic: str = "Hash tables") -> bytes:
    """A 2-page paper: title, authors, abstract and a figure across the top, four numbered sections in two
    columns, then a references page."""
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 80), title, fontsize=18, fontname="hebo")
    page.insert_text((72, 104), "Ada Lovelace, Alan Turing", fontsize=11)
    page.insert_text((72, 136), "Abstract", fontsize=12, fontname="hebo")
    _textbox(page, pymupdf.Rect(72, 142, 540, 230), f"We study {topic}. " + LOREM, fontsize=10)
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
    doc.set_metadata({"title": title, "author": "Ada Lovelace, Alan Turing"})
    data = doc.tobytes()
    doc.close()
    return data


CORRUPT_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage garbage\n%%EOF\n"


def make_encrypted_pdf() -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="pw")
    doc.close()
    return data
