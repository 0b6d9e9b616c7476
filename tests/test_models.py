"""paper_personas/models.py: which model an adapter was trained on, as a user names it."""

import os

from paper_personas.models import model_identity, same_model


def test_a_folder_named_relatively_or_absolutely_or_through_a_link_is_one_model(tmp_path, monkeypatch):
    (tmp_path / "tiny-llama").mkdir()
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "tiny-llama", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    assert same_model(str(tmp_path / "tiny-llama"), "tiny-llama")  # mlx_lm.lora kept the path as it was given
    assert same_model("tiny-llama", "./tiny-llama/")
    assert same_model(str(tmp_path / "tiny-llama"), "link")
    assert not same_model(str(tmp_path / "tiny-llama"), "other")


def test_a_hub_id_is_an_id_even_when_no_such_folder_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = "mlx-community/Llama-3.2-3B-Instruct-4bit"
    assert same_model(hub, hub)
    assert not same_model(hub, "mlx-community/Llama-3.2-1B-Instruct-4bit")
    assert not same_model("gone/model", "gone/model/../model-2")  # neither exists: compared as the ids they are


def test_a_model_has_one_identity_however_it_is_spelled_so_journalled_answers_are_reused(tmp_path, monkeypatch):
    """evaluate.py's and analyze.py's journals key answers by model: `.cache/smollm2` and its absolute path made the
    same answers, and a rerun spelled the other way generated them all again."""
    (tmp_path / "tiny-llama").mkdir()
    os.symlink(tmp_path / "tiny-llama", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    spellings = ["tiny-llama", "./tiny-llama/", str(tmp_path / "tiny-llama"), "link"]
    assert {model_identity(name) for name in spellings} == {str((tmp_path / "tiny-llama").resolve())}
    assert model_identity("mlx-community/Llama-3.2-3B-Instruct-4bit") == "mlx-community/Llama-3.2-3B-Instruct-4bit"
