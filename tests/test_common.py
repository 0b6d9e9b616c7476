import os
import stat

import pytest

from common import write_json, write_jsonl


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
