"""The Makefile's targets as a user at a fresh clone meets them."""

import shutil

from conftest import ROOT
from helpers import run_make


def copy_for_make(folder):
    """What `make train` reads, copied: the Makefile, the personas, the configs and the package."""
    for name in ["Makefile", "personas.toml", "adapter_config.json", *(p.name for p in ROOT.glob("requirements*.txt"))]:
        shutil.copy2(ROOT / name, folder / name)
    shutil.copytree(ROOT / "paper_personas", folder / "paper_personas")
    shutil.copytree(ROOT / "configs", folder / "configs")


def split_data(folder, budget: int, personas=("eli5", "intuitive", "executive")):
    for persona in personas:
        (folder / "data" / f"{persona}_{budget}").mkdir(parents=True)
        for name in ("train", "valid"):
            (folder / "data" / f"{persona}_{budget}" / f"{name}.jsonl").write_text('{"messages": []}\n')


def test_make_train_without_split_data_says_which_step_is_missing_before_fetching_the_model(tmp_path):
    copy_for_make(tmp_path)
    (tmp_path / "data" / "eli5_2048").mkdir(parents=True)
    (tmp_path / "data" / "eli5_2048" / "train.jsonl").write_text('{"messages": []}\n')  # no valid.jsonl
    result = run_make("train", tmp_path, timeout=120)
    assert result.returncode != 0
    assert "error: data/eli5_2048/ has no train.jsonl and valid.jsonl to train on: run steps 1-4 first" in result.stdout
    assert "Loading pretrained model" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "adapters").exists()


def test_make_train_reads_the_budget_of_the_config_it_is_given(tmp_path):
    import json

    budget = json.loads((ROOT / "configs" / "smollm2-135m.json").read_text())["max_seq_length"]
    assert budget != 2048
    copy_for_make(tmp_path)
    split_data(tmp_path, 2048)  # trimmed for the 3B recipe, not for the small-model recipe's budget
    result = run_make("train CONFIG=configs/smollm2-135m.json", tmp_path, timeout=120)
    assert result.returncode != 0
    assert f"error: data/eli5_{budget}/ has no train.jsonl and valid.jsonl" in result.stdout
    assert f"--max-seq-length {budget}" in result.stdout


def test_make_train_offline_names_the_missing_base_model_and_how_to_use_a_local_one(tmp_path, monkeypatch):
    copy_for_make(tmp_path)
    split_data(tmp_path, 2048)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as offline: the model must come from the cache, where it is not
    result = run_make("train MODEL=paper-personas-tests/no-such-model", tmp_path, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert (
        "error: the base model: paper-personas-tests/no-such-model is not in the Hugging Face cache and "
        "HF_HUB_OFFLINE is set; make train MODEL=path/to/a/local/model" in result.stderr
    )
    assert not (tmp_path / "adapters").exists()  # no wandb folder, no adapter folder
