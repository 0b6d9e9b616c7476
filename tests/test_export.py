"""make export on what the smoke run trained (a tiny random Llama): what is written, what is refused and why,
and that nothing partial is ever left. The GGUF itself is read back on the real model in test_real_model.py."""

import resource
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from paper_personas.export import gguf_problem, ollama_template, permute, render_template, rope_factors

# One worker runs every test that needs the session's smoke run, so `make smoke` runs once.
pytestmark = pytest.mark.xdist_group("smoke")


def export(*args, limit_file_size: int | None = None) -> subprocess.CompletedProcess:
    def full_disk():  # a disk that fills after `limit_file_size` bytes of any one file: writes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "paper_personas.export", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        preexec_fn=full_disk if limit_file_size else None,
    )


@pytest.fixture
def trained(smoke_run, tmp_path):
    """A copy of the smoke run's adapters, to change freely, and its base model."""
    work, _ = smoke_run
    shutil.copytree(work / "adapters", tmp_path / "adapters", ignore=shutil.ignore_patterns("wandb"))
    return tmp_path / "adapters", work / "tiny-llama"


def test_no_adapters_folder_is_named_with_the_fix(tmp_path):
    result = export("--adapters", tmp_path / "none", "--out", tmp_path / "exports")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"no {tmp_path / 'none'}/ folder of trained adapters: train first (make train)" in result.stderr


def test_an_adapter_trained_on_another_base_is_refused_before_any_work(trained, tmp_path):
    adapters, tiny = trained
    result = export("--adapters", adapters, "--out", tmp_path / "exports", "--model", ROOT / ".cache" / "other")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"was trained on '{tiny}'" in result.stderr and f"pass --model {tiny}" in result.stderr
    assert not (tmp_path / "exports").exists()


def test_a_model_gguf_cannot_hold_here_is_still_fused_and_the_line_says_what_to_run(trained, tmp_path):
    """The tiny Llama's own BPE has a pre-tokenizer llama.cpp has no name for: the fused folder is written,
    the GGUF is not, and the way to make one is named."""
    adapters, tiny = trained
    out = tmp_path / "exports"
    result = export("--adapters", adapters, "--out", out, "--model", tiny)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no GGUF: its tokenizer's pre-tokenizer is none of those named here" in result.stderr
    assert "convert_hf_to_gguf.py" in result.stderr and "done: 3 exported" in result.stdout
    for persona in ("eli5", "intuitive", "executive"):
        folder = out / persona
        assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
        assert not (folder / "model.gguf").exists() and "convert_hf_to_gguf.py" in (folder / "README.md").read_text()
    again = export("--adapters", adapters, "--out", out, "--model", tiny)
    assert "0 exported, 3 unchanged" in again.stdout  # nothing changed: nothing exported again


def test_missing_and_stale_adapters_are_named_not_skipped(trained, tmp_path):
    import json
    import os

    adapters, tiny = trained
    shutil.rmtree(adapters / "intuitive")
    data = json.loads((adapters / "executive" / "adapter_config.json").read_text())["data"]
    os.utime(f"{data}/train.jsonl")  # its data changed after it was trained
    result = export("--adapters", adapters, "--out", tmp_path / "exports", "--model", tiny)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"intuitive: no adapter in {adapters / 'intuitive'}/: train it (make train)" in result.stderr
    assert f"executive: the adapter is older than {data}/train.jsonl: retrain it" in result.stderr
    assert "1 exported (eli5)" in result.stdout and "1 missing (intuitive), 1 stale (executive)" in result.stdout


def test_a_full_disk_leaves_nothing_partial(trained, tmp_path):
    adapters, tiny = trained
    out = tmp_path / "exports"
    result = export("--adapters", adapters, "--out", out, "--model", tiny, "--personas", "eli5", limit_file_size=4096)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write {out}/ (" in result.stderr and "is the disk full?): nothing partial was left" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


# ----------------------------------------------------------------------------- pure parts


def test_only_the_llama_architecture_is_written_as_gguf_here():
    encode = lambda text: [1, 2, 3]  # noqa: E731 - a tokenizer llama.cpp has no name for
    assert "not 'qwen2'" in gguf_problem({"model_type": "qwen2"}, encode)
    assert "pre-tokenizer" in gguf_problem({"model_type": "llama"}, encode)


def test_the_query_permutation_interleaves_the_rotary_halves_of_each_head():
    import numpy as np

    # 2 heads of 4 rows: Hugging Face's halves [0 1 | 2 3] become llama.cpp's pairs [0 2 1 3]
    rows = np.arange(8).reshape(8, 1)
    assert permute(rows, heads=2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_llama3_rope_scaling_gives_its_frequency_factors_and_smollm2_none():
    llama32 = {"hidden_size": 2048, "num_attention_heads": 32, "rope_theta": 500000.0}
    llama32["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    factors = rope_factors(llama32)
    # 32 frequencies: the fastest unscaled, the slowest scaled by the whole factor, a smooth ramp between
    assert len(factors) == 32 and factors[0] == 1.0 and factors[-1] == 32.0
    assert all(a <= b for a, b in zip(factors, factors[1:], strict=False))
    assert rope_factors({"hidden_size": 576, "num_attention_heads": 9}) is None


def test_the_modelfile_template_is_the_training_prompt_with_the_section_left_open(tmp_path):
    from mlx_lm.utils import load_tokenizer
    from tiny_model import build_tiny_llama

    from paper_personas.personas import load_personas

    eli5 = load_personas()[0]
    tokenizer = load_tokenizer(build_tiny_llama(tmp_path / "tiny"))
    section = "Hash tables map each key to a slot."
    rendered = render_template(ollama_template(tokenizer, eli5), section)
    trained = [{"role": "user", "content": eli5.user_message(section)}]
    assert rendered == tokenizer.apply_chat_template(trained, add_generation_prompt=True, tokenize=False)
