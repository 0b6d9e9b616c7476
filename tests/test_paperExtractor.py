import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from fake_arxiv import FakeArxiv, FakePaper
from pdfs import CORRUPT_PDF, make_encrypted_pdf, make_paper_pdf

import paperExtractor
from paperExtractor import safe_filename, section_coverage, split_sections, versionless_id

# ----------------------------------------------------------------------------- end to end against a fake arXiv


def fake_papers() -> list[FakePaper]:
    pdf = make_paper_pdf
    return [
        FakePaper(
            "2401.00001", "Fast Hash Tables", ["cs.LG", "cs.AI"], "2024-01-03T00:00:00Z", pdf("Fast Hash Tables")
        ),
        FakePaper("2401.00002", "Sorting in Linear Time", ["cs.LG"], "2024-01-02T00:00:00Z", pdf("Sorting", "Sorting")),
        FakePaper("cs/0112017", "An Old Paper", ["cs.AI"], "2001-12-01T00:00:00Z", pdf("Old", "Caching"), version=2),
        FakePaper("2401.00004", "A Corrupt Upload", ["cs.DS"], "2024-01-01T00:00:00Z", CORRUPT_PDF),
        FakePaper(
            "2401.00005",
            "Behind a Login Wall",
            ["cs.DS"],
            "2024-01-01T00:00:00Z",
            b"<html><body>Please log in</body></html>",
            content_type="text/html",
        ),
    ]


def run_step1(tmp_path, server, capsys, *extra):
    args = [
        "--categories",
        "cs.LG",
        "cs.AI",
        "cs.DS",
        "--per-category",
        "5",
        "--api-url",
        server.api_url,
        "--api-delay",
        "0",
        "--out",
        str(tmp_path / "papers.json"),
        "--papers-dir",
        str(tmp_path / "papers"),
        "--workers",
        "2",
        *extra,
    ]
    assert paperExtractor.main(args) == 0
    return json.loads((tmp_path / "papers.json").read_text()), capsys.readouterr().out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One full run shared by the tests below: 3 categories, a 503 first, 5 listed papers, 2 of them bad."""
    tmp_path = tmp_path_factory.mktemp("step1")
    with FakeArxiv(fake_papers()) as server:
        server.api_faults = [503]
        capsys = _Capture()
        data, out = run_step1(tmp_path, server, capsys)
        yield tmp_path, server, data, out, dict(server.requests)


class _Capture:
    """capsys is function-scoped; the module fixture reads stdout through a pipe of its own instead."""

    def readouterr(self):
        sys.stdout.flush()
        return type("Out", (), {"out": self.out})()

    def __init__(self):
        import io

        self.buffer, self._stdout = io.StringIO(), sys.stdout
        sys.stdout = self.buffer

    @property
    def out(self):
        sys.stdout = self._stdout
        return self.buffer.getvalue()


def test_cross_listed_paper_is_kept_once_with_every_category(first_run):
    _, _, data, _, requests = first_run
    records = [p for p in data["papers"] if p["id"] == "2401.00001"]
    assert len(records) == 1
    assert records[0]["categories"] == ["cs.AI", "cs.LG"]
    assert requests["pdf:2401.00001v1"] == 1  # downloaded once although listed in two categories


def test_records_carry_the_documented_schema(first_run):
    _, _, data, _, _ = first_run
    assert sorted(p["id"] for p in data["papers"]) == ["2401.00001", "2401.00002", "cs/0112017"]
    paper = next(p for p in data["papers"] if p["id"] == "cs/0112017")
    expected = {
        "id",
        "version",
        "title",
        "authors",
        "abstract",
        "categories",
        "primary_category",
        "published",
        "pdf_url",
        "pdf_path",
        "markdown",
        "sections",
        "images",
        "pages",
    }
    assert expected <= set(paper)
    assert (paper["version"], paper["title"], paper["primary_category"]) == (2, "An Old Paper", "cs.AI")
    assert paper["authors"] == ["Ada Lovelace", "Alan Turing"]
    assert paper["pdf_url"].endswith("/pdf/cs/0112017v2")  # downloaded exactly as the feed gave it


def test_old_style_id_stays_inside_the_papers_folder(first_run):
    tmp_path, _, data, _, _ = first_run
    paper = next(p for p in data["papers"] if p["id"] == "cs/0112017")
    assert Path(paper["pdf_path"]) == tmp_path / "papers" / "cs_0112017.pdf"
    assert not (tmp_path / "papers" / "cs").exists()
    assert not list((tmp_path / "papers").glob("*.tmp"))


def test_corrupt_pdf_and_html_page_are_recorded_failures(first_run):
    _, _, data, out, _ = first_run
    failures = {f["id"]: f for f in data["failures"]}
    assert failures["2401.00004"]["stage"] == "extract"
    assert failures["2401.00004"]["reason"] == "corrupt or empty PDF: no readable pages"
    assert failures["2401.00005"]["stage"] == "download"
    assert "not a PDF" in failures["2401.00005"]["reason"] and "text/html" in failures["2401.00005"]["reason"]
    assert "done: 3 ok, 2 failed, 0 skipped" in out


def test_api_503_is_retried_and_user_agent_is_descriptive(first_run):
    _, server, _, _, requests = first_run
    assert requests["api"] == 4  # the 503, then one page per category
    assert all(ua.startswith("paper-personas/") for ua in server.user_agents)


def test_sections_come_from_the_pdf_without_references_and_figures_are_written(first_run):
    tmp_path, _, data, _, _ = first_run
    paper = next(p for p in data["papers"] if p["id"] == "2401.00001")
    headings = [s["heading"] for s in paper["sections"]]
    assert headings == ["Abstract", "1 Introduction", "2 Method", "3 Experiments", "4 Conclusion"]
    assert not any("Knuth" in s["text"] for s in paper["sections"])
    assert not any("![" in s["text"] for s in paper["sections"])  # image links stay in markdown only
    assert paper["images"] and all(Path(i).parent == tmp_path / "papers/images/2401.00001" for i in paper["images"])
    assert all(Path(i).exists() for i in paper["images"])


def test_rerun_after_interruption_neither_downloads_nor_extracts_finished_papers(first_run, tmp_path, capsys):
    src, _, data, _, _ = first_run
    # The state a kill leaves behind: every PDF on disk, but papers.json saved before 2401.00002 finished.
    (tmp_path / "papers").mkdir()
    for pdf in (src / "papers").glob("*.pdf"):
        (tmp_path / "papers" / pdf.name).write_bytes(pdf.read_bytes())
    kept = [p for p in data["papers"] if p["id"] != "2401.00002"]
    (tmp_path / "papers.json").write_text(json.dumps({"papers": kept, "failures": []}))
    with FakeArxiv(fake_papers()) as server:
        again, out = run_step1(tmp_path, server, capsys)
        pdf_requests = {k: v for k, v in server.requests.items() if k.startswith("pdf:")}
    # Valid PDFs on disk are not fetched again; the two earlier failures are retried.
    assert set(pdf_requests) == {"pdf:2401.00004v1", "pdf:2401.00005v1"}
    assert "done: 1 ok, 2 failed, 2 skipped" in out
    assert sorted(p["id"] for p in again["papers"]) == ["2401.00001", "2401.00002", "cs/0112017"]
    assert next(p for p in again["papers"] if p["id"] == "2401.00001") == kept[0]


# ----------------------------------------------------------------------------- local PDFs and user errors


def run_pdf_dir(tmp_path, pdfs: dict[str, bytes], *extra) -> dict:
    """Run step 1 on a folder of the given PDFs with one worker; return papers.json."""
    pdf_dir = tmp_path / "in"
    pdf_dir.mkdir()
    for name, data in pdfs.items():
        (pdf_dir / name).write_bytes(data)
    out = tmp_path / "p.json"
    args = ["--pdf-dir", str(pdf_dir), "--out", str(out), "--papers-dir", str(tmp_path / "papers"), "--workers", "1"]
    assert paperExtractor.main([*args, *extra]) == 0
    return json.loads(out.read_text())


def test_pdf_dir_takes_title_from_the_pdf_and_records_an_encrypted_one(tmp_path, capsys):
    data = run_pdf_dir(tmp_path, {"good.pdf": make_paper_pdf("Learning to Rank"), "locked.pdf": make_encrypted_pdf()})
    assert [(p["id"], p["title"]) for p in data["papers"]] == [("good", "Learning to Rank")]
    assert data["papers"][0]["abstract"].startswith("We study Hash tables.")
    assert data["failures"][0]["id"] == "locked" and "encrypted" in data["failures"][0]["reason"]
    assert "done: 1 ok, 1 failed, 0 skipped" in capsys.readouterr().out


def test_a_pdf_over_the_time_cap_is_a_failure_not_a_hang(tmp_path):
    failure = run_pdf_dir(tmp_path, {"slow.pdf": make_paper_pdf("Slow")}, "--timeout", "0.01")["failures"][0]
    assert failure["stage"] == "extract" and "timed out after 0.01 s" in failure["reason"]


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "paperExtractor.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--categories", "cs.LG", "cs.XX"], 2, "unknown arXiv categories: cs.XX"),
        (["--categories", "cs.lg"], 2, "did you mean cs.LG?"),
        (["--pdf-dir", "no/such/folder"], 2, "--pdf-dir no/such/folder: no such folder"),
        (
            ["--ids", "2401.00001", "--api-delay", "0", "--api-url", f"http://127.0.0.1:{free_port()}/api/query"],
            1,
            "cannot query the arXiv API",
        ),
    ],
)
def test_user_errors_give_a_message_and_no_traceback(tmp_path, args, code, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "papers.json").exists()


def test_ids_fetch_those_papers_and_unknown_ids_are_named(tmp_path, caplog):
    with FakeArxiv(fake_papers()) as server:
        base = [
            "--api-url",
            server.api_url,
            "--api-delay",
            "0",
            "--out",
            str(tmp_path / "p.json"),
            "--papers-dir",
            str(tmp_path / "papers"),
            "--workers",
            "1",
        ]
        assert paperExtractor.main(["--ids", "cs/0112017", "9999.99999", *base]) == 0
        with pytest.raises(SystemExit, match="arXiv found none of the ids 9999.99999"):
            paperExtractor.main(["--ids", "9999.99999", *base])
    data = json.loads((tmp_path / "p.json").read_text())
    assert [p["id"] for p in data["papers"]] == ["cs/0112017"]
    assert "not found on arXiv, skipped: 9999.99999" in caplog.text


def test_help_documents_the_flags_other_tools_rely_on(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    for flag in [
        "--categories",
        "--per-category",
        "--ids",
        "--pdf-dir",
        "--workers",
        "--api-url",
        "--out",
        "--papers-dir",
    ]:
        assert flag in result.stdout


# ----------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    "short_id, expected",
    [("2309.13541v2", ("2309.13541", 2)), ("cs/0112017v1", ("cs/0112017", 1)), ("2309.13541", ("2309.13541", 0))],
)
def test_versionless_id(short_id, expected):
    assert versionless_id(short_id) == expected


@pytest.mark.parametrize("paper_id, name", [("cs/0112017", "cs_0112017"), ("../../etc", "etc"), ("2401.1", "2401.1")])
def test_safe_filename_never_leaves_the_folder(paper_id, name):
    assert safe_filename(paper_id) == name
    assert "/" not in name and not name.startswith(".")


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
            ["Abstract", "1 Introduction", "1.1 Linking bibliographies to papers", "ACM Reference Format", "2 Method"],
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
    if "Figure 1:" in markdown:  # only the '#' sample has a caption; it must stay text, not become a heading
        assert "Figure 1: A caption that is not a heading." in text


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
