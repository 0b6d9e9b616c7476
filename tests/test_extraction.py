"""Step 1's PDF extraction (paper_personas/extraction.py) on generated PDFs: title, authors and abstract from page 1."""

import pytest
from pdfs import make_author_block_pdf

from paper_personas.extraction import extract_paper, names_in


@pytest.mark.parametrize("style, expected_authors", [("sigconf", 9), ("acmsmall", 6), ("acl", 17)])
def test_long_author_blocks_are_read_whole_and_the_abstract_after_them_is_kept(tmp_path, style, expected_authors):
    """ACM sigconf's grid (each name over its affiliation and e-mail, then an abstract with no label), ACM journals'
    NAMES IN CAPITALS with the affiliation on the same line, and ACL's names with superscript digits, symbols and
    Greek letters over several lines, with accented names in each."""
    data, authors = make_author_block_pdf(style)
    pdf = tmp_path / f"{style}.pdf"
    pdf.write_bytes(data)
    paper = extract_paper(str(pdf), str(tmp_path / "images"), max_pages=60, keep_appendix=False)
    assert len(authors) == expected_authors
    assert paper["pdf_authors"] == authors
    assert paper["pdf_title"] == "Learning to Read Author Blocks at Scale"
    assert [s["heading"] for s in paper["sections"]] == ["Abstract", "1 Introduction"]
    assert paper["sections"][0]["text"].startswith("We study how author blocks are read.")


@pytest.mark.parametrize(
    "line, names",
    [
        ("José Müller1 Bob Jones2,α Carol Whiteβ,γ", ["José Müller", "Bob Jones", "Carol White"]),
        ("LEANA GOLUBCHIK, University of Southern California", ["Leana Golubchik"]),
        ("DAN O’BRIEN and EVE BLACK, Institute for Examples, Country 4", ["Dan O’Brien", "Eve Black"]),
        ("Proceedings of the 58th Annual Meeting of the ACL", []),
        ("New York, USA", []),  # capitalised words and a country: a place, not a person
        ("Carol White, Example Research Lab", []),  # a name in normal case beside an affiliation: ambiguous, so no
        ("Department of Computer Science, University of Nowhere", []),
    ],
)
def test_names_in_an_author_line(line, names):
    assert names_in(line) == names
