"""Step 1's section splitting (paper_personas/sections.py), pure: markdown in, sections out."""

import pytest

from paper_personas.sections import section_coverage, split_sections

BODY = "This paragraph explains the idea in enough words to count as a section body. " * 2


HASH_HEADINGS = f"""# A Title
Jane Doe, John Roe
## Abstract
{BODY}
## Contents
1 Introduction ........ 1
2 Method .............. 3
## 1 Introduction
{BODY}
![](papers/images/x/fig1.png)
Figure 1: A caption that is not a heading.
### 1.1 Linking bibliographies to papers
{BODY}
## ACM Reference Format
{BODY}
## 2 Method
{BODY}
| a | b |
|---|---|
| 1 | 2 |
## Acknowledgments
We thank our funders.
## References
[1] A. Author. A paper. 2020.
## A Proofs
The appendix.
"""


BOLD_HEADINGS = f"""**A Title**
**Abstract**
{BODY}
**1** **Introduction**
{BODY}
**2** **Method**
{BODY}
**Acknowledgments** We thank our funders.
**References**
[1] A. Author. A paper. 2020.
"""


@pytest.mark.parametrize(
    "markdown, headings",
    [
        (
            HASH_HEADINGS,
            # "ACM Reference Format" is page furniture, not a section, and it does not end the body either
            ["Abstract", "1 Introduction", "1.1 Linking bibliographies to papers", "2 Method"],
        ),
        (BOLD_HEADINGS, ["Abstract", "1 Introduction", "2 Method"]),
    ],
)
def test_split_sections_on_both_heading_styles(markdown, headings):
    sections = split_sections(markdown)
    assert [s["heading"] for s in sections] == headings
    text = "\n".join(s["text"] for s in sections)
    for dropped in ["A. Author", "We thank", "The appendix", "........", "fig1.png", "| 1 | 2 |", "Jane Doe"]:
        assert dropped not in text
    if "Figure 1:" in markdown:  # only the '#' sample has a caption: neither a heading nor section text
        assert "Figure 1" not in text and not any("Figure" in s["heading"] for s in sections)


def test_keep_appendix_keeps_sections_after_the_references():
    assert [s["heading"] for s in split_sections(HASH_HEADINGS, keep_appendix=True)][-1] == "A Proofs"


def test_inline_abstract_and_running_headers():
    pages = "\n".join(f"J. DOE AND J. ROE\n{n}\n" for n in range(1, 5))
    markdown = f"Abstract. {BODY}\n{pages}\n## 1 Introduction\n{BODY}\nJ. DOE AND J. ROE\n"
    sections = split_sections(markdown)
    assert [s["heading"] for s in sections] == ["Abstract", "1 Introduction"]
    assert sections[0]["text"].startswith("This paragraph")
    assert "DOE" not in " ".join(s["text"] for s in sections)


def test_sentence_fragments_and_theorems_are_not_headings():
    markdown = f"## 1 Intro\n{BODY}\n### and beneficial in our setting.\n### Lemma 4.1. It holds.\n{BODY}"
    sections = split_sections(markdown)
    assert [s["heading"] for s in sections] == ["1 Intro"]
    assert "Lemma 4.1" in sections[0]["text"]


def test_coverage_counts_section_text_against_the_body_before_references():
    sections = split_sections(BOLD_HEADINGS)
    # The body holds the title line, 3 bodies and the acknowledgment line; the sections hold the 3 bodies.
    assert 0.8 < section_coverage(BOLD_HEADINGS, sections) < 1.0


def test_a_parent_heading_followed_by_its_subsection_is_kept_and_a_page_number_is_no_heading():
    markdown = f"# Abstract\n{BODY}\n## 4 MinMax objective\n### 4.1 Off-line algorithm\n{BODY}\n# 26\n{BODY}"
    sections = split_sections(markdown)
    assert [s["heading"] for s in sections] == ["Abstract", "4 MinMax objective", "4.1 Off-line algorithm"]
    assert sections[1]["text"] == "" and sections[2]["text"].count("This paragraph") == 4  # "# 26" stayed text


def test_run_in_headings_come_from_the_pdf_outline():
    markdown = (
        f"# Abstract\n{BODY}\n## 2. Structural measures\n{BODY}\n"
        f"2.1. High-degree centrality. {BODY}\n\n2.2. Closeness centrality. {BODY}\n"
    )
    outline = ["2. Structural measures", "2.1. High-degree centrality", "2.2. Closeness centrality"]
    sections = split_sections(markdown, outline=outline)
    assert [s["heading"] for s in sections] == ["Abstract", *outline]
    assert sections[2]["text"].startswith("This paragraph explains")
    assert [s["heading"] for s in split_sections(markdown)] == ["Abstract", "2. Structural measures"]  # no outline


def test_captions_footers_and_markup_leave_the_section_text():
    markdown = (
        f"# Abstract\n{BODY}\n## 1 Introduction\nThe loss x<sup>2</sup> is **small** and _fast_.\n"
        "Figure 3: The table layout used by the method.\n"
        "Proceedings of the 58th Annual Meeting of the ACL, pages 4969–4983, July 5-10, 2020.\n"
        "Preprint. Under review.\n"
        f"{BODY}"
    )
    text = split_sections(markdown)[1]["text"]
    assert text.startswith("The loss x2 is small and fast.")
    assert "Figure 3" not in text and "Proceedings" not in text and "Preprint" not in text


def test_long_permission_blocks_url_footnotes_and_code_marks_leave_the_section_text():
    permission = (
        "Permission to copy without fee all or part of this material is granted provided that the copies are not "
        "made or distributed for direct commercial advantage, the VLDB copyright notice and the title of the "
        "publication and its date appear, and notice is given that copying is by permission of the Very Large Data "
        "Base Endowment. To copy otherwise, or to republish, requires a fee and/or special permission from the "
        "Endowment. Proceedings of the 30th VLDB Conference, Toronto, Canada, 2004"
    )
    markdown = (
        f"# Abstract\n{BODY}\n## 1 Introduction\nClients share state through `memcached` .\n\n{permission}\n\n"
        f"> 4 `http://www.danga.com/memcached/`\n\n{BODY}"
    )
    text = split_sections(markdown)[1]["text"]
    assert len(permission) > 300 and "Permission" not in text and "danga" not in text and "`" not in text
    assert text.startswith("Clients share state through memcached .")


def test_a_sentence_broken_into_a_heading_and_a_table_title_are_not_headings():
    markdown = (
        f"# Abstract\n{BODY}\n## 2 Method\nFor example, given the sentence\n\n"
        "### TEXTRUNNER returns the extraction\n\n_(Arbor Health Care, for assumed, debt)_ .\n\n"
        "### **REVERB - Incorrect Extractions**\n\n- 65% Correct relation phrase\n\n- 8% Non-contiguous phrase\n\n"
        "Table 5: The majority of the incorrect extractions.\n\n### Results\n\nWe find that it works.\n"
    )
    sections = split_sections(markdown)
    assert [s["heading"] for s in sections] == ["Abstract", "2 Method", "Results"]
    assert "TEXTRUNNER returns the extraction" in sections[1]["text"] and "REVERB" in sections[1]["text"]


def test_an_acm_classification_block_glued_to_the_abstract_is_cut_off():
    markdown = (
        f"# Abstract\n{BODY} Categories and Subject Descriptors: F.2.2 [Analysis of Algorithms]: Nonnumerical\n\n"
        "General Terms: Algorithms, Theory\n\nAdditional Key Words and Phrases: Data Placement, Storage Systems\n\n"
        f"## 1 Introduction\n{BODY}"
    )
    abstract = split_sections(markdown)[0]["text"]
    assert abstract == BODY.strip() and "Categories" not in abstract


def test_numbered_sections_read_out_of_order_are_put_back_in_order():
    markdown = (
        f"# Abstract\n{BODY}\n## 4 Refinements\n{BODY}\n## 4.2 Ordering\nOrdering text.\n"
        f"**Run-in** under 4.2.\n## 4.1 Partitioning\nPartitioning text.\n## 5 Performance\n{BODY}"
    )
    headings = [s["heading"] for s in split_sections(markdown)]
    assert headings == ["Abstract", "4 Refinements", "4.1 Partitioning", "4.2 Ordering", "5 Performance"]


def test_an_unlabelled_abstract_is_found_after_the_author_block_and_the_title_is_no_section():
    abstract = "We study an optimization problem that arises in data placement. " * 6
    markdown = (
        "# Approximation Algorithms for Data Placement\n\nLEANA GOLUBCHIK\n\n"
        "Department of Computer Science University of Southern California and SANJEEV KHANNA Department of "
        "Computer Science, University of Pennsylvania. Contact: leana@cs.usc.edu. Supported by NSF. Thanks.\n\n"
        f"{abstract}\n\nGeneral Terms: Algorithms, Theory\n\n## 1. INTRODUCTION\n{BODY}"
    )
    sections = split_sections(markdown)
    assert [s["heading"] for s in sections] == ["Abstract", "1. INTRODUCTION"]
    assert sections[0]["text"] == abstract.strip() and "General Terms" not in sections[0]["text"]


def test_non_latin_headings_and_abstract_labels_and_a_long_numbered_heading():
    long_heading = "3 " + "A heading that runs on because the authors had much to say about it " * 2
    markdown = f"## 摘要\n{BODY}\n## 1 引言\n{BODY}\n## 2 方法\n{BODY}\n## {long_heading.strip()}\n{BODY}"
    headings = [s["heading"] for s in split_sections(markdown)]
    assert headings == ["摘要", "1 引言", "2 方法", long_heading.strip()]
    assert 120 < len(headings[-1]) <= 200
    inline = split_sections(f"# Title\nAuthors\n摘要：{BODY}\n## 1 Intro\n{BODY}")
    assert inline[0]["heading"] == "Abstract" and inline[0]["text"].startswith("This paragraph")


def test_repeated_lines_are_furniture_only_at_a_page_edge():
    """Headings that differ only in digits repeat like running headers do; only the PDF's page edges tell them
    apart, so with the layout known they stay, and the real running header still goes."""
    from paper_personas.sections import PageLayout

    header = "J. DOE AND J. ROE"
    pages = "".join(f"{header}\n## 2.{n} Experiment {n}\n{BODY}\n" for n in (1, 2, 3))
    markdown = f"# Abstract\n{BODY}\n{pages}"
    layout = PageLayout(edges=frozenset({"j doe and j roe"}))
    headings = [s["heading"] for s in split_sections(markdown, layout=layout)]
    assert headings == ["Abstract", "2.1 Experiment 1", "2.2 Experiment 2", "2.3 Experiment 3"]
    assert header not in "\n".join(s["text"] for s in split_sections(markdown, layout=layout))
