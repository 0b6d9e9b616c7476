"""The Makefile's targets as a user at a fresh clone meets them."""

import shutil

from conftest import ROOT
from helpers import run_make


def test_make_train_without_split_data_says_which_step_is_missing_before_fetching_the_model(tmp_path):
    for name in ["Makefile", "personas.toml", "adapter_config.json", *(p.name for p in ROOT.glob("requirements*.txt"))]:
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "paper_personas", tmp_path / "paper_personas")
    (tmp_path / "data" / "eli5_2048").mkdir(parents=True)
    (tmp_path / "data" / "eli5_2048" / "train.jsonl").write_text('{"messages": []}\n')  # no valid.jsonl
    result = run_make("train", tmp_path, timeout=120)
    assert result.returncode != 0
    assert "error: data/eli5_2048/ has no train.jsonl and valid.jsonl to train on: run steps 1-4 first" in result.stdout
    assert "Loading pretrained model" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "adapters").exists()
