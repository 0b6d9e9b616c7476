"""The whole chain end to end, offline: 3 generated papers to 3 trained LoRA adapters on a tiny Llama."""

import json

import pytest
from conftest import ROOT
from smoke import problems


@pytest.fixture
def smoke(smoke_run):
    return smoke_run


def test_every_persona_trains_an_adapter_with_finite_losses_and_generates(smoke):
    _, result = smoke
    assert set(result["personas"]) == {"eli5", "intuitive", "executive"}
    assert problems(result) == []
    for r in result["personas"].values():
        assert len(r["train_losses"]) == 2 and len(r["val_losses"]) == 2  # reported at steps 2, 4 and 1, 4


def test_the_trainer_ran_with_the_repository_config_and_masked_prompts(smoke):
    work, _ = smoke
    ours = json.loads((ROOT / "adapter_config.json").read_text())
    saved = json.loads((work / "adapters" / "eli5" / "adapter_config.json").read_text())
    for key in (
        "fine_tune_type",
        "batch_size",
        "learning_rate",
        "lora_parameters",
        "max_seq_length",
        "mask_prompt",
        "report_to",
        "optimizer",
        "seed",
    ):
        assert saved[key] == ours[key], key
    assert saved["mask_prompt"] is True and saved["report_to"] == "wandb"


def test_the_brief_values_are_kept_in_adapter_config():
    config = json.loads((ROOT / "adapter_config.json").read_text())
    assert (config["fine_tune_type"], config["batch_size"], config["iters"], config["learning_rate"]) == (
        "lora",
        2,
        500,
        1e-05,
    )
    assert config["lora_parameters"] == {"rank": 8, "dropout": 0.0, "scale": 20.0}
    assert (config["max_seq_length"], config["report_to"], config["mask_prompt"]) == (2048, "wandb", True)


def test_rows_are_split_by_paper_in_the_chain(smoke):
    work, _ = smoke
    for persona in ("eli5", "intuitive", "executive"):
        folder = work / "data" / f"{persona}_2048"
        split = {
            name: {json.loads(line)["meta"]["paper_id"] for line in (folder / f"{name}.jsonl").open()}
            for name in ("train", "valid")
        }
        assert split["train"] and split["valid"] and not split["train"] & split["valid"]
