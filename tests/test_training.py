"""Step 5's watcher around mlx_lm.lora: its report lines read, the early stop, the choice of checkpoint, and the
base model checked before anything starts. The real training runs are in test_real_model.py."""

import math

import pytest

from paper_personas.training import Watch, best_of, model_problem

# mlx_lm 0.32's report table as it reaches a pipe: rich's colour codes included.
REPORT = [
    "  iter   train_loss     tok/s     tokens",
    "\x1b[2m     1\x1b[0m    \x1b[36mval\x1b[0m \x1b[1m3.625\x1b[0m    \x1b[2m2.15s\x1b[0m",
    "     2    3.991 \x1b[32m▼\x1b[0m       54      0.2k",
    "     2    val 3.100    2.07s",
    "    10    2.968 ▼    1,431     12.2k",
    "    50    val nan    2.03s",
]


def test_the_report_is_read_as_losses_by_steps_behind_them_and_tokens_per_second():
    watch = Watch()
    for line in REPORT:
        watch.read(line)
    # a validation row at iteration N measures the weights after N - 1 steps; nan is worse than any loss
    assert watch.val == {0: 3.625, 1: 3.1, 49: math.inf}
    assert watch.tokens_per_s == [54.0, 1431.0]


@pytest.mark.parametrize(
    "losses, patience, stops",
    [
        ([3.0, 2.5, 2.4, 2.3], 2, False),  # still improving
        ([3.0, 2.5, 2.6, 2.7], 2, True),  # two evaluations in a row not below 2.5
        ([3.0, 2.5, 2.6, 2.4], 2, False),  # the second one is a new best
        ([3.0, 3.0, 3.0], 2, True),  # equal is not better
        ([3.0, 3.1], 2, False),  # not enough evaluations yet
        ([3.0, 3.1, 3.2, 3.3], 0, False),  # patience 0: never
    ],
)
def test_patience_counts_evaluations_without_a_new_best(losses, patience, stops):
    watch = Watch(patience=patience, val=dict(enumerate(losses)))
    assert watch.should_stop() is stops


def test_the_lowest_loss_wins_the_earlier_step_on_a_tie_and_nan_never():
    assert best_of({25: 2.4, 50: 2.2, 75: 2.3}) == 50
    assert best_of({25: 2.2, 50: 2.2}) == 25
    assert best_of({25: float("nan"), 50: 9.0}) == 50


def test_a_base_model_that_cannot_be_loaded_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "model").mkdir()
    assert "has no config.json" in model_problem(str(tmp_path / "model"))
    assert "no such folder" in model_problem("./models/smollm2")
    offline = model_problem("paper-personas-tests/no-such-model")  # in no cache
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in offline
    assert "make train MODEL=path/to/a/local/model" in offline
    (tmp_path / "model" / "config.json").write_text("{}")
    assert model_problem(str(tmp_path / "model")) is None
