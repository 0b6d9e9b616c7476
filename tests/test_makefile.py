"""The Makefile's targets as a user at a fresh clone meets them."""

import shutil
import subprocess

from conftest import ROOT


def copy_of_the_repository(folder):
    """What `make` reads, and the package, in `folder`, sharing this venv (as the smoke fixture does)."""
    for name in ["Makefile", "personas.toml", "adapter_config.json", *(p.name for p in ROOT.glob("requirements*.txt"))]:
        shutil.copy2(ROOT / name, folder / name)
    shutil.copytree(ROOT / "paper_personas", folder / "paper_personas")
    (folder / ".venv").symlink_to(ROOT / ".venv")
    return [f"--assume-old={p.relative_to(ROOT)}" for p in (ROOT / ".venv").glob(".installed-*")]


def test_make_train_without_split_data_says_which_step_is_missing_before_fetching_the_model(tmp_path):
    installed = copy_of_the_repository(tmp_path)
    (tmp_path / "data" / "eli5_2048").mkdir(parents=True)
    (tmp_path / "data" / "eli5_2048" / "train.jsonl").write_text('{"messages": []}\n')  # no valid.jsonl
    result = subprocess.run(["make", *installed, "train"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error: data/eli5_2048/ has no train.jsonl and valid.jsonl to train on: run steps 1-4 first" in result.stdout
    assert "Loading pretrained model" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "adapters").exists()
