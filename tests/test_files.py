import json
import os
import stat
from pathlib import Path

import pytest
from helpers import PARAGRAPH, chat_row, run_script, tree_hashes, write_rows
from pdfs import make_paper_pdf

from paper_personas import files
from paper_personas.files import safe_filename, write_json, write_jsonl


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_respect_the_umask_like_any_file_the_user_creates(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
        write_json(tmp_path / "papers.json", {"papers": []})
    finally:
        os.umask(old)
    for name in ("rows.jsonl", "papers.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode  # 0o666 without the umask's bits


def test_a_jsonl_row_stays_one_line_whatever_its_strings_hold():
    row = {"text": "a\u2028b\u2029c\x85d\x0be\x1cf\nand é"}
    line = files.dump_jsonl_line(row)
    assert line.endswith("\n") and len(line.splitlines()) == 1 and json.loads(line) == row
    assert "é" in line  # still UTF-8, not escaped ASCII


@pytest.mark.parametrize("paper_id, name", [("cs/0112017", "cs_0112017"), ("../../etc", "etc"), ("2401.1", "2401.1")])
def test_safe_filename_never_leaves_the_folder(paper_id, name):
    assert safe_filename(paper_id) == name
    assert "/" not in name and not name.startswith(".")


# ----------------------------------------------------------------------------- every script checks its outputs first


def step_inputs(root: Path) -> dict[str, Path]:
    pdfs = root / "pdfs"
    pdfs.mkdir()
    (pdfs / "paper.pdf").write_bytes(make_paper_pdf("A Paper", "Hash tables"))
    locked = root / "locked"
    write_rows(locked / "eli5.jsonl", [chat_row("Explain this like I'm 5:\n" + PARAGRAPH)])
    write_rows(locked / "eli5_2048.jsonl", [chat_row("Explain this like I'm 5:\n" + PARAGRAPH)])
    return {"pdfs": pdfs, "locked": locked}


@pytest.mark.parametrize(
    "script, args, path, flag",
    [
        ("paperExtractor.py", ["--pdf-dir", "{pdfs}", "--out", "{locked}/papers.json"], "{locked}", "pass --out"),
        ("paperExtractor.py", ["--pdf-dir", "{pdfs}", "--papers-dir", "{locked}/papers"], "{locked}", "--papers-dir"),
        ("trim_jsonl.py", ["{locked}/eli5.jsonl"], "{locked}", "its output goes beside it"),
        ("split_data.py", ["{locked}/eli5_2048.jsonl"], "{locked}", "its splits go in a folder beside it"),
    ],
)
def test_a_folder_the_user_cannot_write_to_is_named_before_any_work(tmp_path, script, args, path, flag):
    folders = step_inputs(tmp_path)
    folders["locked"].chmod(0o555)
    before = tree_hashes(tmp_path)
    result = run_script(script, *(a.format(**folders) for a in args), cwd=tmp_path, timeout=120, as_a_user=True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 3, result.stderr
    assert f"cannot write to {path.format(**folders)}/ (Permission denied)" in result.stderr and flag in result.stderr
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"a": "unterminated', "not valid JSON (Unterminated string starting at column 7)"),  # not "at at"
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_a_bad_jsonl_line_is_named_in_plain_words(tmp_path, line, reason):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"ok": 1}\n' + line)  # the last line, as a kill leaves it: no newline
    assert list(files.iter_jsonl(path)) == [(1, {"ok": 1}, None), (2, None, reason)]


# ----------------------------------------------------------------------------- every script names a file it cannot read


def test_a_file_that_is_a_folder_or_not_text_is_named_in_plain_words(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "paper.pdf").write_bytes(make_paper_pdf("A Paper", "Hash tables"))
    with pytest.raises(files.InputError, match=r"folder is a folder, not a file: name a JSONL file"):
        list(files.iter_jsonl(tmp_path / "folder"))
    with pytest.raises(files.InputError, match=r"paper.pdf: not UTF-8 text \(byte \d+\); run step 1"):
        files.read_json(tmp_path / "paper.pdf", "papers.json", "run step 1")
    mixed = tmp_path / "rows.jsonl"
    mixed.write_bytes(b'{"ok": 1}\n\xff\xfe{"x": 2}\n{"ok": 3}\n')
    assert list(files.iter_jsonl(mixed)) == [
        (1, {"ok": 1}, None),
        (2, None, "not UTF-8 text (byte 0 of the line)"),
        (3, {"ok": 3}, None),
    ]


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("sdg.py", ["--papers", "{folder}", "--dry-run"], "{folder} is a folder, not a file: run paperExtractor.py"),
        ("sdg.py", ["--papers", "{pdf}", "--dry-run"], "{pdf}: not UTF-8 text (byte "),
        ("sdg.py", ["--personas-file", "{folder}"], "{folder} is a folder, not a file: pass --personas-file"),
        ("trim_jsonl.py", ["{folder}"], "{folder} is a folder, not a file: name the JSONL files to trim"),
        ("split_data.py", ["{folder}"], "{folder} is a folder, not a file: name the trimmed JSONL files"),
        ("analyze.py", ["--paper", "x", "--personas-file", "{pdf}"], "{pdf}: not UTF-8 text (byte "),
        ("evaluate.py", ["--personas-file", "{folder}"], "{folder} is a folder, not a file: pass --personas-file"),
        ("paperExtractor.py", ["--pdf-dir", "{folder}", "--out", "{pdf}"], "{pdf}: not UTF-8 text (byte "),
    ],
)
def test_every_script_names_an_input_it_cannot_read_and_changes_nothing(tmp_path, script, args, message):
    paths = {"folder": tmp_path / "folder", "pdf": tmp_path / "paper.pdf"}
    paths["folder"].mkdir()
    paths["pdf"].write_bytes(make_paper_pdf("A Paper", "Hash tables"))
    before = tree_hashes(tmp_path)
    result = run_script(script, *(a.format(**paths) for a in args), cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert message.format(**paths) in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert tree_hashes(tmp_path) == before
