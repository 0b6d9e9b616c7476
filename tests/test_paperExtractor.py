import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from fake_arxiv import FakeArxiv, FakePaper
from helpers import free_port, run_main
from pdfs import CORRUPT_PDF, make_encrypted_pdf, make_paper_pdf

from paper_personas.arxiv_client import versionless_id
from paper_personas.records import local_records

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


def run_step1(tmp_path, server, *extra):
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
    printed = run_main("paperExtractor.py", args)
    return json.loads((tmp_path / "papers.json").read_text()), printed.stdout


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One full run shared by the tests below: 3 categories, a 503 first, 5 listed papers, 2 of them bad."""
    tmp_path = tmp_path_factory.mktemp("step1")
    with FakeArxiv(fake_papers()) as server:
        server.api_faults = [503]
        data, out = run_step1(tmp_path, server)
        yield tmp_path, server, data, out, dict(server.requests)


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


def test_rerun_after_interruption_neither_downloads_nor_extracts_finished_papers(first_run, tmp_path):
    src, _, data, _, _ = first_run
    # The state a kill leaves behind: every PDF on disk, but papers.json saved before 2401.00002 finished.
    (tmp_path / "papers").mkdir()
    for pdf in (src / "papers").glob("*.pdf"):
        (tmp_path / "papers" / pdf.name).write_bytes(pdf.read_bytes())
    kept = [p for p in data["papers"] if p["id"] != "2401.00002"]
    (tmp_path / "papers.json").write_text(json.dumps({"papers": kept, "failures": []}))
    with FakeArxiv(fake_papers()) as server:
        again, out = run_step1(tmp_path, server)
        pdf_requests = {k: v for k, v in server.requests.items() if k.startswith("pdf:")}
    # Valid PDFs on disk are not fetched again; the two earlier failures are retried.
    assert set(pdf_requests) == {"pdf:2401.00004v1", "pdf:2401.00005v1"}
    assert "done: 1 ok, 2 failed, 2 skipped" in out
    assert sorted(p["id"] for p in again["papers"]) == ["2401.00001", "2401.00002", "cs/0112017"]
    assert next(p for p in again["papers"] if p["id"] == "2401.00001") == kept[0]


# ----------------------------------------------------------------------------- local PDFs and user errors


def run_pdf_dir(tmp_path, pdfs: dict[str, bytes], *extra, code: int = 0):
    """Run step 1 on a folder of the given PDFs (names may hold subfolders) with one worker; return papers.json
    and the finished process. code 1 expects the run to fail as a whole: nothing succeeded."""
    pdf_dir = tmp_path / "in"
    for name, data in pdfs.items():
        (pdf_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (pdf_dir / name).write_bytes(data)
    out = tmp_path / "p.json"
    args = ["--pdf-dir", str(pdf_dir), "--out", str(out), "--papers-dir", str(tmp_path / "papers"), "--workers", "1"]
    printed = run_main("paperExtractor.py", [*args, *extra], expect=code)
    assert code == 0 or "nothing succeeded" in printed.stderr
    return json.loads(out.read_text()), printed


def test_pdf_dir_takes_title_from_the_pdf_and_records_an_encrypted_one(tmp_path):
    data, printed = run_pdf_dir(
        tmp_path, {"good.pdf": make_paper_pdf("Learning to Rank"), "locked.pdf": make_encrypted_pdf()}
    )
    assert [(p["id"], p["title"]) for p in data["papers"]] == [("good", "Learning to Rank")]
    assert data["papers"][0]["abstract"].startswith("We study Hash tables.")
    assert data["failures"][0]["id"] == "locked" and "encrypted" in data["failures"][0]["reason"]
    assert "done: 1 ok, 1 failed, 0 skipped" in printed.stdout


def test_a_pdf_over_the_time_cap_is_a_failure_not_a_hang(tmp_path):
    data, _ = run_pdf_dir(tmp_path, {"slow.pdf": make_paper_pdf("Slow")}, "--timeout", "0.01", code=1)
    failure = data["failures"][0]
    assert failure["stage"] == "extract" and "timed out after 0.01 s" in failure["reason"]


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "paperExtractor.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--categories", "cs.LG", "cs.XX"], 2, "unknown arXiv categories: cs.XX"),
        (["--categories", "cs.lg"], 2, "did you mean cs.LG?"),
        (["--pdf-dir", "no/such/folder"], 2, "--pdf-dir no/such/folder: no such folder"),
        (
            ["--ids", "2401.00001", "--api-delay", "0", "--api-url", f"http://127.0.0.1:{free_port()}/api/query"],
            1,
            "search:ids (search): cannot reach the arXiv API at http://127.0.0.1:",
        ),
    ],
)
def test_user_errors_give_a_message_and_no_traceback(tmp_path, args, code, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 2:  # a usage mistake stops before anything is written
        assert not (tmp_path / "papers.json").exists()
    else:  # a run that failed says so in papers.json too, with no paper in it
        data = json.loads((tmp_path / "papers.json").read_text())
        assert data["papers"] == [] and len(data["failures"]) == 1


def test_ids_fetch_those_papers_and_unknown_ids_are_named(tmp_path):
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
        first = run_main("paperExtractor.py", ["--ids", "cs/0112017", "9999.99999", *base])
        unknown = run_main("paperExtractor.py", ["--ids", "9999.99999", *base], expect=1)
        assert "9999.99999 (id): arXiv has no paper with this id" in unknown.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert [p["id"] for p in data["papers"]] == ["cs/0112017"]
    assert "not found on arXiv, skipped: 9999.99999" in first.stderr


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


# ----------------------------------------------------------------------------- issue 11: faults and scale


def pdf_dir_args(tmp_path, *extra):
    return [
        "--pdf-dir",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "p.json"),
        "--papers-dir",
        str(tmp_path / "papers"),
        "--workers",
        "1",
        *extra,
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_in_seconds_keeps_finished_papers_and_the_rerun_extracts_only_the_rest(tmp_path, sig):
    for i in range(7):  # 2 workers: a few finish before the interrupt, most do not
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"paper{i:02d}.pdf").write_bytes(make_paper_pdf(f"Paper {i}", f"Topic {i}"))
    cmd = [sys.executable, str(ROOT / "paperExtractor.py"), *pdf_dir_args(tmp_path)[:-1], "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = tmp_path / "p.records"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(store.glob("*.json")) if store.exists() else []) < 1:
        time.sleep(0.05)
    proc.send_signal(sig)
    interrupted = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    seconds = time.monotonic() - interrupted
    assert proc.returncode == 1 and "interrupted:" in stderr and "rerun the same command" in stderr
    assert "Traceback" not in stderr
    assert seconds < 10  # queued papers are cancelled and the workers ended, not drained
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "in")], capture_output=True, text=True)
    assert leftover.stdout == ""  # no orphan worker keeps extracting
    saved = {p["id"] for p in json.loads((tmp_path / "p.json").read_text())["papers"]}
    assert 1 <= len(saved) < 7
    rerun = run_cli(*pdf_dir_args(tmp_path), cwd=tmp_path)
    assert rerun.returncode == 0
    assert f"done: {7 - len(saved)} ok, 0 failed, {len(saved)} skipped" in rerun.stdout  # nothing extracted twice


def test_local_names_that_collide_get_distinct_stable_ids_and_subfolders_and_upper_case_count(tmp_path):
    pdfs = {
        "a b.pdf": make_paper_pdf("Space"),
        "a?b.pdf": make_paper_pdf("Question"),
        "a_b.pdf": make_paper_pdf("Underscore"),
        "两篇论文.pdf": make_paper_pdf("Chinese One"),
        "两篇.pdf": make_paper_pdf("Chinese Two"),
        "LOUD.PDF": make_paper_pdf("Loud"),
        "sub/inner.pdf": make_paper_pdf("Inner"),
    }
    first, printed = run_pdf_dir(tmp_path, pdfs)
    ids = {p["title"]: p["id"] for p in first["papers"]}
    assert len(ids) == 7 and len(set(ids.values())) == 7  # nothing lost, nothing merged
    assert ids["Loud"] == "LOUD" and ids["Inner"] == "sub_inner" and ids["Chinese Two"] == "两篇"
    assert all(i.startswith("a_b-") for t, i in ids.items() if t in ("Space", "Question", "Underscore"))
    assert "its name is taken by another PDF" in printed.stderr
    again = local_records(tmp_path / "in")
    assert set(again) == set(ids.values())  # the same ids on every run


def test_a_changed_pdf_or_option_is_extracted_again_and_force_extracts_everything(tmp_path):
    run_pdf_dir(tmp_path, {"one.pdf": make_paper_pdf("One"), "two.pdf": make_paper_pdf("Two")})
    (tmp_path / "in" / "two.pdf").write_bytes(make_paper_pdf("Two, revised", "Revisions"))
    assert "done: 1 ok, 0 failed, 1 skipped" in run_main("paperExtractor.py", pdf_dir_args(tmp_path)).stdout
    titles = {p["id"]: p["title"] for p in json.loads((tmp_path / "p.json").read_text())["papers"]}
    assert titles == {"one": "One", "two": "Two, revised"}
    assert (
        "done: 2 ok, 0 failed, 0 skipped"
        in run_main("paperExtractor.py", pdf_dir_args(tmp_path, "--keep-appendix")).stdout
    )
    assert (
        "done: 0 ok, 0 failed, 2 skipped"
        in run_main("paperExtractor.py", pdf_dir_args(tmp_path, "--keep-appendix")).stdout
    )
    assert (
        "done: 2 ok, 0 failed, 0 skipped"
        in run_main("paperExtractor.py", pdf_dir_args(tmp_path, "--keep-appendix", "--force")).stdout
    )


def test_broken_local_files_are_recorded_failures_with_their_reason(tmp_path):
    good = make_paper_pdf("Good")
    data, _ = run_pdf_dir(
        tmp_path,
        {
            "good.pdf": good,
            "half.pdf": good[: len(good) // 2],  # cut in half: no end marker
            "patched.pdf": good[: len(good) // 2] + b"\n%%EOF\n",  # cut, with an end marker: mupdf must repair it
            "login.pdf": b"<html><body>Please log in</body></html>",
        },
    )
    reasons = {f["id"]: f["reason"] for f in data["failures"]}
    assert [p["id"] for p in data["papers"]] == ["good"]
    assert reasons["half"].startswith("truncated PDF") and reasons["login"].startswith("not a PDF")
    assert reasons["patched"].startswith("damaged PDF: mupdf had to repair it")


@pytest.mark.parametrize(
    "paper_kwargs, extra, reason",
    [
        ({"stall_s": 30}, ["--download-timeout", "2"], "download timed out after 2 s"),  # says nothing at all
        ({"trickle_s": 0.4}, ["--download-timeout", "2"], "download timed out after 2 s"),  # a byte now and then
        ({}, ["--max-pdf-mb", "0.001"], "larger than --max-pdf-mb"),
    ],
)
def test_a_download_that_is_slow_silent_or_too_large_fails_in_bounded_time(tmp_path, paper_kwargs, extra, reason):
    papers = [
        FakePaper("2401.00001", "Fine", ["cs.LG"], "2024-01-03T00:00:00Z", make_paper_pdf("Fine")),
        FakePaper("2401.00002", "Bad", ["cs.LG"], "2024-01-02T00:00:00Z", make_paper_pdf("Bad"), **paper_kwargs),
    ]
    with FakeArxiv(papers) as server:
        started = time.monotonic()
        result = run_cli(
            "--ids", "2401.00001", "2401.00002", "--api-url", server.api_url, "--api-delay", "0",
            "--out", str(tmp_path / "p.json"), "--papers-dir", str(tmp_path / "papers"), "--workers", "1", *extra,
            cwd=tmp_path,
        )  # fmt: skip
        seconds = time.monotonic() - started
    data = json.loads((tmp_path / "p.json").read_text())
    failures = {f["id"]: f for f in data["failures"]}
    if "max-pdf-mb" in extra[0]:  # both PDFs are over the 1 kB cap: nothing succeeded, so the run fails
        assert result.returncode == 1 and reason in failures["2401.00001"]["reason"]
        return
    assert result.returncode == 0, result.stderr
    assert [p["id"] for p in data["papers"]] == ["2401.00001"]
    assert failures["2401.00002"]["stage"] == "download" and reason in failures["2401.00002"]["reason"]
    assert seconds < 30  # 2 s for the download, plus start-up and extracting the good paper
    assert not (tmp_path / "papers" / "2401.00002.pdf").exists()  # no partial file left behind


def test_malformed_ids_are_named_and_the_valid_ones_still_proceed(tmp_path):
    with FakeArxiv(fake_papers()) as server:
        result = run_cli(
            "--ids", "nonsense", "../x", "2401.00001", "--api-url", server.api_url, "--api-delay", "0",
            "--out", str(tmp_path / "p.json"), "--papers-dir", str(tmp_path / "papers"), "--workers", "1",
            cwd=tmp_path,
        )  # fmt: skip
        asked = list(server.page_sizes)
    assert result.returncode == 0 and "nonsense: not an arXiv id" in result.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert [p["id"] for p in data["papers"]] == ["2401.00001"]
    assert {f["id"] for f in data["failures"]} == {"nonsense", "../x"}
    assert asked == [1]  # one query, for the one valid id, asking for one result


def test_a_failing_category_is_recorded_and_the_others_are_kept(tmp_path):
    with FakeArxiv(fake_papers()) as server:
        server.failing_categories = {"cs.AI"}
        data, _ = run_step1(tmp_path, server)
        asked = set(server.page_sizes)
    failures = {f["id"]: f["reason"] for f in data["failures"]}
    assert failures["search:cs.AI"] == "the arXiv API answered HTTP 503 after retries"
    assert {"2401.00001", "2401.00002"} <= {p["id"] for p in data["papers"]}  # cs.LG's papers are kept
    assert asked == {5}  # --per-category 5: no query asks for 100 results to use 5


def test_an_unreadable_api_answer_is_called_that(tmp_path):
    with FakeArxiv(fake_papers()) as server:
        server.html_feed = True
        result = run_cli(
            "--ids", "2401.00001", "--api-url", server.api_url, "--api-delay", "0", "--out", str(tmp_path / "p.json"),
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1 and "answered text/html, not an Atom feed" in result.stderr


def test_a_page_cap_is_logged_and_recorded(tmp_path):
    data, printed = run_pdf_dir(tmp_path, {"one.pdf": make_paper_pdf("One")}, "--max-pages", "1")
    paper = data["papers"][0]
    assert (paper["pages"], paper["pages_total"]) == (1, 2)
    assert "one: only the first 1 of 2 pages extracted (--max-pages)" in printed.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--timeout", "0"], "argument --timeout: must be a positive number of seconds, got 0"),
        (["--timeout", "-1"], "argument --timeout: must be a positive number of seconds, got -1"),
        (["--download-timeout", "0"], "argument --download-timeout: must be a positive number"),
        (["--out", "."], "--out . is a folder"),
    ],
)
def test_flags_that_make_no_sense_are_usage_errors(tmp_path, args, message):
    result = run_cli("--ids", "2401.00001", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr


def test_pdf_dir_mode_logs_what_it_really_does(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.pdf").write_bytes(make_paper_pdf("One"))
    result = run_cli(*pdf_dir_args(tmp_path), cwd=tmp_path)
    assert result.returncode == 0 and "settings (local PDFs)" in result.stderr
    assert "api_url" not in result.stderr and "check:" in result.stderr and "download:" not in result.stderr


def test_a_foreign_papers_json_names_the_record(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"papers": [{"id": "ok"}, {"title": "no id"}], "failures": []}))
    (tmp_path / "in").mkdir()
    result = run_cli(*pdf_dir_args(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert 'papers[1] is not a paper record with an "id"' in result.stderr


def test_papers_json_from_before_the_store_is_kept_and_not_extracted_again(tmp_path):
    run_pdf_dir(tmp_path, {"one.pdf": make_paper_pdf("One")})
    shutil.rmtree(tmp_path / "p.records")  # as an older version left it: papers.json only
    assert "done: 0 ok, 0 failed, 1 skipped" in run_main("paperExtractor.py", pdf_dir_args(tmp_path)).stdout


def test_a_search_that_finds_nothing_exits_non_zero(tmp_path):
    with FakeArxiv([]) as server:
        result = run_cli("--categories", "cs.LG", "--api-url", server.api_url, "--api-delay", "0", cwd=tmp_path)
    assert result.returncode == 1 and "no papers found" in result.stderr and "Traceback" not in result.stderr


def test_a_generated_paper_with_every_known_hard_case(tmp_path):
    """Through the whole extraction (pymupdf4llm on a PDF generated here), not only the markdown splitter."""
    from pdfs import make_hard_paper_pdf

    data, _ = run_pdf_dir(tmp_path, {"hard.pdf": make_hard_paper_pdf()})
    paper = data["papers"][0]
    headings = [s["heading"] for s in paper["sections"]]
    assert paper["title"] == "Hard Cases in Paper Extraction"  # the first page, not "hard-cases.dvi"
    assert paper["authors"] == ["Grace Hopper", "Edsger Dijkstra"]
    assert headings[0] == "Abstract" and paper["sections"][0]["text"].startswith("We study why extraction fails")
    for expected in [
        "1 Methods",
        "1.1 Storage Layout",
        "2 Results",
        "2.1. Latency under load",
        "2.2. Memory footprint",
    ]:
        assert any(h.strip("# *").startswith(expected) for h in headings), (expected, headings)
    text = "\n".join(s["text"] for s in paper["sections"])
    assert "Figure 1" not in text and "Proceedings of the 58th" not in text and "Work done while" not in text
    assert not any(h.strip() in ("1", "Figure 1") for h in headings)
