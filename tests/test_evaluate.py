import json

import pytest
from fake_gemini import FakeGemini, Faults

import evaluate
from evaluate import follows_format, lead_first, length_ok, reading_grade, rouge_l
from personas import by_name, load_personas

PERSONAS = by_name(load_personas())

GOOD = {
    "eli5": "**Analogy:** A toy box with a spot for each toy.\n\n**Explanation:** You find each toy at once.",
    "intuitive": "**Mechanism:** A function turns a key into a slot.\n\n**Explanation:** So lookups skip the search.",
    "executive": "**Verdict:** Adopt it.\n\n**Summary:** It cuts lookup cost to a constant on ordinary servers.",
}


@pytest.mark.parametrize("persona", list(GOOD))
def test_format_accepts_the_persona_structure_only(persona):
    shape = PERSONAS[persona]
    assert follows_format(shape, GOOD[persona])
    labels = [f.label for f in shape.fields]
    swapped = GOOD[persona].replace(labels[0], "TMP").replace(labels[1], labels[0]).replace("TMP", labels[1])
    assert not follows_format(shape, swapped)  # fields in the wrong order
    assert not follows_format(shape, GOOD[persona].split("\n\n")[0])  # second field missing
    assert not follows_format(shape, "Just some prose without the labels.")
    other = next(p for p in GOOD if p != persona)
    assert not follows_format(shape, GOOD[other])


@pytest.mark.parametrize(
    "text, forbidden",
    [
        ("We optimize the neural net.", True),
        ("Leveraging data helps.", True),
        ("The optimal path is short.", False),
        ("A toy box.", False),
    ],
)
def test_forbidden_words_match_their_inflections_only(text, forbidden):
    assert (PERSONAS["eli5"].forbidden_word_in(text) is not None) is forbidden


def test_reading_grade_of_known_texts():
    # Flesch-Kincaid: 0.39 * words/sentence + 11.8 * syllables/word - 15.59
    # "The cat sat on the mat.": 6 words, 1 sentence, 6 syllables -> 0.39*6 + 11.8 - 15.59 = -1.45
    assert reading_grade("The cat sat on the mat.") == pytest.approx(-1.45, abs=0.06)
    hard = (
        "Asymptotically optimal approximation algorithms necessitate sophisticated probabilistic "
        "characterizations of computational complexity."
    )
    assert reading_grade(hard) > 15
    assert reading_grade("**Analogy:** The cat sat on the mat.") == reading_grade("The cat sat on the mat.")


def test_executive_verdict_first_and_length_bounds():
    executive = PERSONAS["executive"]
    assert executive.checks.first_field_max_words == 40 and executive.checks.answer_words == (60, 400)
    assert lead_first(executive, GOOD["executive"], 40)
    long_verdict = "**Verdict:** " + "word " * 41 + "\n\n**Summary:** Fine."
    assert not lead_first(executive, long_verdict, 40)
    assert not lead_first(executive, "**Summary:** First.\n\n**Verdict:** Later.", 40)
    assert not length_ok(GOOD["executive"], (60, 400))  # 17 words: under the 60-word floor
    assert length_ok("word " * 60, (60, 400)) and not length_ok("word " * 401, (60, 400))


def test_rouge_l_bounds():
    assert rouge_l("a hash table maps keys", "a hash table maps keys") == 1.0
    assert rouge_l("a hash table maps keys", "completely different words here") == 0.0


def test_answer_metrics_on_planted_answers():
    metrics = evaluate.answer_metrics(PERSONAS["eli5"], GOOD["eli5"], GOOD["eli5"], tokens=20)
    assert metrics["format"] == 1.0 and metrics["forbidden"] == 0.0 and metrics["rouge_l"] == 1.0
    assert metrics["tokens"] == 20.0 and metrics["fk_grade"] < 6 and metrics["grade_ok"] == 1.0
    bad = evaluate.answer_metrics(PERSONAS["eli5"], "We optimize a neural network.", GOOD["eli5"], tokens=5)
    assert bad["format"] == 0.0 and bad["forbidden"] == 1.0


def eval_args(work, out, *extra):
    return [
        "--model",
        str(work / "tiny-llama"),
        "--adapters",
        str(work / "adapters"),
        "--data",
        str(work / "data"),
        "--limit",
        "3",
        "--max-tokens",
        "8",
        "--out",
        str(out),
        *extra,
    ]


def test_every_metric_and_chart_is_produced_and_a_rerun_gives_identical_numbers(smoke_run, tmp_path):
    work, _ = smoke_run
    assert evaluate.main(eval_args(work, tmp_path / "a")) == 0
    assert evaluate.main(eval_args(work, tmp_path / "b")) == 0
    first, second = (json.loads((tmp_path / d / "eval.json").read_text()) for d in "ab")
    assert first["answers"] == second["answers"]  # greedy decoding: the same text, token for token
    for persona, result in first["personas"].items():
        for side in ("base", "adapter"):
            again = second["personas"][persona][side]
            for metric, value in result[side].items():
                if metric in ("val_loss", "perplexity"):
                    # MLX's multithreaded float32 CPU reductions can differ in the last bit between runs
                    # (seen: 6.420069694 vs 6.420069218); everything else must match exactly.
                    assert value == pytest.approx(again[metric], rel=1e-5), (persona, side, metric)
                else:
                    assert value == again[metric], (persona, side, metric)
    expected = {
        "eli5": {"fk_grade", "grade_ok", "forbidden"},
        "intuitive": set(),
        "executive": {"lead_first", "length_ok"},
    }
    common_metrics = {"val_loss", "perplexity", "format", "tokens", "rouge_l"}
    for persona, extra in expected.items():
        result = first["personas"][persona]
        assert set(result["base"]) == set(result["adapter"]) == common_metrics | extra
        assert result["rows"] == 3
        assert result["adapter"]["val_loss"] != result["base"]["val_loss"]  # the adapter is really applied
    charts = {p.stem for p in (tmp_path / "a").glob("*.png")}
    assert charts == common_metrics | {"fk_grade", "grade_ok", "forbidden", "lead_first", "length_ok"}
    assert "| validation loss (answers only) |" in (tmp_path / "a" / "eval.md").read_text()


def test_judge_swaps_positions_so_a_position_biased_judge_scores_even(smoke_run, tmp_path, monkeypatch, capsys):
    work, _ = smoke_run
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    with FakeGemini(Faults(rate_429=0.3, retry_delay_s=0.01), api_key="test-key", seed=3) as fake:
        args = eval_args(
            work, tmp_path, "--personas", "eli5", "--judge", "gemini", "--yes", "--base-url", fake.base_url
        )
        assert evaluate.main(args) == 0
        judged = len(fake.request_times) - fake.outcomes.get("rate_429", 0)
        refused = fake.outcomes.get("rate_429", 0)
    result = json.loads((tmp_path / "eval.json").read_text())["personas"]["eli5"]["adapter"]
    assert refused > 0  # some judge calls were answered 429 and retried
    assert judged == 6  # 3 pairs, each judged in both orders
    assert result["judge_win_rate"] == 0.5  # "always A" wins once for each side of every pair
    assert "judge: 6 Gemini calls, estimated $" in capsys.readouterr().err
