import subprocess
import sys
import types

import pytest
from conftest import ROOT
from helpers import chat_row, read_rows, write_rows

import split_data
from personas import load_personas
from split_data import assign_groups

PERSONAS = [p.name for p in load_personas()]


def persona_files(tmp_path, papers=20, sections=3):
    """Three persona files over the same papers, as sdg.py and trim_jsonl.py write them."""
    paths = []
    for persona in PERSONAS:
        rows = [
            chat_row(f"{persona} prompt for paper {p} section {s}", f"{persona} answer {p}.{s}", f"2401.{p:05d}", s)
            for p in range(papers)
            for s in range(sections)
        ]
        paths.append(write_rows(tmp_path / f"{persona}_2048.jsonl", rows))
    return paths


def papers_in(path):
    return {r["meta"]["paper_id"] for r in read_rows(path)}


def test_no_paper_straddles_splits_and_every_persona_validates_on_the_same_papers(tmp_path, capsys):
    paths = persona_files(tmp_path)
    assert split_data.main([str(p) for p in paths]) == 0
    valid_sets = []
    for path in paths:
        folder = path.with_suffix("")
        train, valid = papers_in(folder / "train.jsonl"), papers_in(folder / "valid.jsonl")
        assert not train & valid
        assert len(train | valid) == 20
        assert len(valid) == 3  # round(20 papers * 0.15)
        valid_sets.append(valid)
    assert valid_sets[0] == valid_sets[1] == valid_sets[2]
    assert "train 51 rows / 17 papers, valid 9 rows / 3 papers; 0 duplicates removed" in capsys.readouterr().out


def test_a_rerun_gives_identical_bytes_and_another_seed_another_split(tmp_path):
    paths = persona_files(tmp_path)
    split_data.main([str(paths[0])])
    first = {name: (tmp_path / "eli5_2048" / f"{name}.jsonl").read_bytes() for name in ("train", "valid")}
    split_data.main([str(paths[0])])
    assert first == {name: (tmp_path / "eli5_2048" / f"{name}.jsonl").read_bytes() for name in ("train", "valid")}
    split_data.main([str(paths[0]), "--seed", "1"])
    assert first["valid"] != (tmp_path / "eli5_2048" / "valid.jsonl").read_bytes()


def test_a_papers_split_does_not_depend_on_which_other_papers_exist():
    everything = assign_groups({f"paper:{i}" for i in range(40)}, 0.15, 0.0, seed=0)
    fewer = assign_groups({f"paper:{i}" for i in range(39)}, 0.15, 0.0, seed=0)
    moved = [g for g in fewer if fewer[g] != everything[g]]
    assert len(moved) <= 1  # dropping one paper shifts at most the one paper at the boundary


def test_duplicates_are_removed_and_counted_and_test_split_is_written(tmp_path, capsys):
    path = persona_files(tmp_path, papers=10, sections=2)[0]
    rows = read_rows(path)
    write_rows(path, rows + rows[:4])
    assert split_data.main([str(path), "--test-fraction", "0.2"]) == 0
    folder = path.with_suffix("")
    counts = {name: len(read_rows(folder / f"{name}.jsonl")) for name in ("train", "valid", "test")}
    assert sum(counts.values()) == 20 and counts["test"] == 4  # 2 papers (10 * 0.2) of 2 rows
    assert "4 duplicates removed" in capsys.readouterr().out


def test_rows_without_meta_are_grouped_by_their_user_message(tmp_path):
    rows = [chat_row(f"question {i}", paper_id=None) for i in range(10)] * 2  # each question twice
    rows[10:] = [chat_row(f"question {i}", f"another answer {i}", paper_id=None) for i in range(10)]
    path = write_rows(tmp_path / "mine.jsonl", rows)
    assert split_data.main([str(path)]) == 0
    train = {r["messages"][0]["content"] for r in read_rows(tmp_path / "mine" / "train.jsonl")}
    valid = {r["messages"][0]["content"] for r in read_rows(tmp_path / "mine" / "valid.jsonl")}
    assert not train & valid and len(train | valid) == 10


@pytest.mark.parametrize("papers, args", [(1, []), (2, ["--test-fraction", "0.1"])])
def test_a_dataset_too_small_to_split_gets_a_clear_error(tmp_path, papers, args):
    path = persona_files(tmp_path, papers=papers)[0]
    result = subprocess.run(
        [sys.executable, str(ROOT / "split_data.py"), str(path), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"only {papers} papers to split" in result.stderr and "Traceback" not in result.stderr
    assert not path.with_suffix("").exists()


def test_mlx_lm_loads_and_tokenizes_the_split_folder(tmp_path):
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load_tokenizer
    from tiny_model import build_tiny_llama

    path = persona_files(tmp_path, papers=8, sections=2)[0]
    split_data.main([str(path)])
    tokenizer = load_tokenizer(build_tiny_llama(tmp_path / "tiny"))
    args = types.SimpleNamespace(  # mlx_lm's own CLI namespace, the shape its load_dataset reads
        data=str(path.with_suffix("")),
        train=True,
        test=False,
        mask_prompt=True,
        hf_dataset=None,
        prompt_feature=None,
        completion_feature=None,
        text_feature=None,
        chat_feature="messages",
    )
    train, valid, _ = load_dataset(args, tokenizer)
    tokens, offset = train.process(train[0])
    assert len(train) + len(valid) == 16
    assert 0 < offset < len(tokens)  # mask_prompt: the loss starts at the answer
