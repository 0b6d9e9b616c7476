import json
import os
import stat

import pytest

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
