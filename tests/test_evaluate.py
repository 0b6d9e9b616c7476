import json
import time

import pytest
from conftest import ROOT
from fake_gemini import FakeGemini, Faults
from helpers import free_port, run_main, run_script, tree_hashes

from paper_personas.metrics import STYLE_METRICS, flagged, lead_first, length_ok, reading_grade, rouge_l, score_answers
from paper_personas.personas import by_name, load_personas
from paper_personas.quality import degenerate_reasons
from paper_personas.statistics import mean_ci, verdict
from paper_personas.systems import prompted_messages

# One worker runs every test that needs the session's smoke run, so `make smoke` runs once.
pytestmark = pytest.mark.xdist_group("smoke")

PERSONAS = by_name(load_personas())


def follows_format(persona, text: str) -> bool:
    return persona.parse(text) is not None


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


TOPICS = {
    "hash tables": "hash function bucket collision probing lookup slot key",
    "radix sort": "digit bucket pass integer counting stable order keys",
    "edge caching": "cache server latency user region content miss eviction",
    "gradient descent": "gradient step learning rate loss minimum slope iteration",
    "bloom filters": "bit array hash false positive membership set memory",
    "raft consensus": "leader election log replication majority term follower heartbeat",
}


def planted_rows() -> list[dict]:
    """Held-out ELI5 rows about six unrelated topics, each with a reference answer written for its section."""
    rows = []
    for topic, vocabulary in TOPICS.items():
        k = vocabulary.split()
        section = (
            f"This section studies {topic}. The method relies on the {k[0]} and the {k[1]}, which makes each "
            f"{k[2]} cheap. The authors measure the {k[3]} against the {k[4]} and report that the {k[5]} improves "
            f"when the {k[6]} is tuned. They conclude that {topic} with a careful {k[7]} is practical at scale."
        )
        reference = (
            f"**Analogy:** Think of {topic} as a tidy toy room where the {k[0]} tells you which shelf to use and the "
            f"{k[1]} keeps the shelves in order, so finding a {k[2]} is quick and easy for anyone.\n\n"
            f"**Explanation:** With {topic}, the {k[3]} and the {k[4]} work together, so the {k[5]} gets better "
            f"when the {k[6]} is set well, and a good {k[7]} keeps everything simple even as things grow."
        )
        rows.append(chat_row(f"Explain this like I'm 5:\n{section}", reference))
    return rows


def chat_row(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def planted_answers(rows: list[dict]) -> dict[str, list[str]]:
    """The issue's table: the reference, and four answers every check used to pass or even prefer."""
    references = [r["messages"][1]["content"] for r in rows]
    sections = [r["messages"][0]["content"].split("\n", 1)[1] for r in rows]
    return {
        "reference": references,
        "wrong_section": references[1:] + references[:1],  # a reference written for another section
        "copied_prompt": [f"**Analogy:** {s}\n\n**Explanation:** {s}" for s in sections],
        "empty": [""] * len(rows),
        "three_words": ["**Analogy:** a toy box.\n\n**Explanation:** keys find slots."] * len(rows),
    }


@pytest.mark.parametrize(
    "planted, expected",
    [("wrong_section", "off_topic"), ("copied_prompt", "copied"), ("empty", "empty"), ("three_words", "too_short")],
)
def test_every_planted_bad_answer_is_flagged_and_no_reference_is(planted, expected):
    rows = planted_rows()
    answers = planted_answers(rows)
    scored = score_answers(PERSONAS["eli5"], rows, [{"answer": a} for a in answers[planted]], 512)
    assert all(expected in flagged(s) for s in scored), [flagged(s) for s in scored]
    references = score_answers(PERSONAS["eli5"], rows, [{"answer": a} for a in answers["reference"]], 512)
    assert [flagged(s) for s in references] == [[]] * len(rows)
    # Style is measured on real attempts only: an empty answer no longer gets the best reading grade.
    if expected in ("empty", "too_short"):
        assert all("fk_grade" not in s["metrics"] for s in scored)


def test_the_same_answer_for_different_sections_and_a_cut_off_answer_are_degenerate():
    rows = planted_rows()
    same = [{"answer": rows[0]["messages"][1]["content"], "tokens": 40}] * len(rows)
    scored = score_answers(PERSONAS["eli5"], rows, same, max_tokens=40)
    assert all({"same_answer_for_other_sections", "cut_off"} <= set(s["degenerate_reasons"]) for s in scored)
    looping = "**Analogy:** " + "the toy box " * 30
    assert degenerate_reasons(PERSONAS["eli5"], looping) == ["repetitive"]


def test_a_section_held_out_twice_is_one_prompt_for_the_repeat_and_topicality_checks():
    """The original data holds some sections twice, with two answers. The same greedy answer to the same
    prompt is no repeat, and a section is no rival of its own twin: the reference answers stay unflagged."""
    rows = planted_rows()
    twin = {**rows[0], "messages": [rows[0]["messages"][0], {"role": "assistant", "content": "**Analogy:** Other."}]}
    rows = [rows[0], twin, *rows[1:]]
    answers = [{"answer": r["messages"][1]["content"]} for r in planted_rows()]
    answers = [answers[0], answers[0], *answers[1:]]  # one greedy answer to both copies of the section
    scored = score_answers(PERSONAS["eli5"], rows, answers, 512)
    assert [flagged(s) for s in scored] == [[]] * len(rows)
    assert scored[0]["metrics"]["topical"] == scored[1]["metrics"]["topical"] == 1.0


def test_a_label_given_twice_fails_the_format_check_that_the_gate_shares():
    from paper_personas.personas import answers_schema
    from paper_personas.quality import answers_problem

    twice = "**Analogy:** A toy box.\n\n**Explanation:** Keys find slots. **Explanation:** Again."
    assert PERSONAS["eli5"].parse(twice) is None
    scored = score_answers(PERSONAS["eli5"], planted_rows()[:1], [{"answer": twice}], 512)
    assert scored[0]["metrics"]["format"] == 0.0
    eli5 = (PERSONAS["eli5"],)
    section = planted_rows()[0]["messages"][0]["content"]
    good = " ".join(["A toy box keeps every toy in its own place, so you always find it."] * 3)
    doubled = {"eli5": {"analogy": good, "explanation": f"{good} **Explanation:** {good}"}}
    assert answers_problem(answers_schema(eli5).model_validate(doubled), eli5, section) == "format:eli5"


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_more_data():
    small = mean_ci([0.0, 1.0] * 5, seed=0)
    large = mean_ci([0.0, 1.0] * 200, seed=0)
    assert small["n"] == 10 and large["n"] == 400
    assert small["low"] < 0.5 < small["high"] and large["low"] < 0.5 < large["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]
    assert mean_ci([2.0], seed=0) == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 1}


def test_the_verdict_says_where_the_adapter_beats_ties_and_loses():
    def answers(topical, copy):
        return [{"metrics": {"topical": t, "copy_share": c}} for t, c in zip(topical, copy, strict=True)]

    adapter = answers([1.0] * 20, [0.1 + 0.01 * (i % 3) for i in range(20)])
    prompted = answers([0.0] * 10 + [1.0] * 10, [0.1 + 0.01 * (i % 4) for i in range(20)])
    line = verdict("eli5", adapter, prompted, seed=0)
    assert line.startswith("eli5: adapter vs prompted base (n=20): beats on topical; ties on copy_share")


def test_answers_from_elsewhere_are_scored_with_no_model_loaded(tmp_path):
    """--answers with --systems and nothing after it: a hosted model's answers, scored like ours."""
    rows = planted_rows()
    folder = tmp_path / "data" / "eli5_2048"
    folder.mkdir(parents=True)
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "answers.jsonl"
    planted = planted_answers(rows)
    lines = [
        {"system": system, "persona": "eli5", "key": f"#{i}", "answer": text}
        for system in ("reference", "wrong_section")
        for i, text in enumerate(planted[system])
    ]
    answers.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "reports"
    args = ["--data", str(tmp_path / "data"), "--personas", "eli5", "--out", str(out), "--systems"]
    run_main("evaluate.py", [*args, "--answers", str(answers)])
    result = json.loads((out / "eval.json").read_text())["personas"]["eli5"]["systems"]
    assert result["reference"]["summary"]["topical"]["mean"] == 1.0 and result["reference"]["flags"] == {}
    assert result["wrong_section"]["summary"]["topical"]["mean"] == 0.0
    assert result["wrong_section"]["flags"] == {"off_topic": 6}
    assert (
        "| topical: matches its own section (BM25 top-1) | 1.000 [1.000, 1.000] | 0.000"
        in (out / "eval.md").read_text()
    )
    rescored = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [(r["system"], r["key"], r["answer"]) for r in rescored] == [
        (line["system"], line["key"], line["answer"]) for line in lines
    ]
    missing = tmp_path / "partial.jsonl"
    missing.write_text(json.dumps(lines[0]) + "\n")
    failed = run_main("evaluate.py", [*args, "--answers", str(missing)], expect=1)
    assert "answers of 'reference' miss 5 of 6 held-out eli5 rows" in failed.stderr


def test_a_persona_split_folder_given_as_data_names_its_parent(tmp_path):
    folder = tmp_path / "data" / "eli5_2048"
    folder.mkdir(parents=True)
    (folder / "valid.jsonl").write_text(json.dumps(planted_rows()[0]) + "\n")
    result = run_script("evaluate.py", "--data", folder, "--systems", "--answers", tmp_path / "a.jsonl")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--data {folder} is one persona's split folder; pass the folder that holds" in result.stderr
    assert f"--data {folder.parent}" in result.stderr


def test_help_names_the_default_base_model():
    result = run_script("evaluate.py", "--help")
    default = json.loads((ROOT / "adapter_config.json").read_text())["model"]
    expected = f"(default: {default}, the model adapter_config.json trains)"
    assert "".join(expected.split()) in "".join(result.stdout.split())  # argparse wraps lines at spaces and "-"


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


def test_three_systems_side_by_side_with_intervals_and_a_verdict_and_a_rerun_gives_identical_numbers(
    smoke_run, tmp_path
):
    work, _ = smoke_run
    out = run_main("evaluate.py", eval_args(work, tmp_path / "a")).stdout
    run_main("evaluate.py", eval_args(work, tmp_path / "b"))
    first, second = (json.loads((tmp_path / d / "eval.json").read_text()) for d in "ab")
    assert first["systems"] == ["base", "prompted", "adapter"]
    for persona, result in first["personas"].items():
        assert result["rows"] == 3 and set(result["systems"]) == {"base", "prompted", "adapter"}
        for system, data in result["systems"].items():
            again = second["personas"][persona]["systems"][system]["summary"]
            for metric, stat in data["summary"].items():
                assert set(stat) == {"mean", "low", "high", "n"} and stat["low"] <= stat["mean"] <= stat["high"]
                tolerance = 1e-5 if metric == "loss" else 0  # MLX's multithreaded CPU sums differ in the last bit
                assert stat["mean"] == pytest.approx(again[metric]["mean"], rel=tolerance), (persona, system, metric)
        adapter, base = result["systems"]["adapter"]["summary"], result["systems"]["base"]["summary"]
        assert adapter["loss"]["mean"] != base["loss"]["mean"]  # the adapter is really applied
    expected_style = {
        "eli5": {"fk_grade", "grade_ok", "forbidden"},
        "intuitive": set(),
        "executive": {"lead_first", "length_ok"},
    }
    for persona, style in expected_style.items():
        offered = {m for m in STYLE_METRICS if m in json.dumps(first["personas"][persona])}
        assert offered <= style  # style metrics only where personas.toml asks for them
    assert [line.split(":")[0] for line in out.splitlines() if "adapter vs prompted base" in line] == [
        "eli5",
        "intuitive",
        "executive",
    ]
    answers = [json.loads(line) for line in (tmp_path / "a" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 3 * 3 * 3 and {a["system"] for a in answers} == {"base", "prompted", "adapter"}
    charts = {p.stem for p in (tmp_path / "a").glob("*.png")}
    assert {"topical", "copy_share", "degenerate", "format", "rouge_l", "loss"} <= charts
    report = (tmp_path / "a" / "eval.md").read_text()
    assert "| metric | base | prompted | adapter | n |" in report and "adapter vs prompted base" in report


def test_the_prompted_baseline_gets_the_persona_and_its_format_as_a_system_message():
    messages = [{"role": "user", "content": "Explain this like I'm 5:\nHash tables."}]
    prompted = prompted_messages(PERSONAS["eli5"], messages)
    assert prompted[0]["role"] == "system" and prompted[1:] == messages
    assert PERSONAS["eli5"].instructions in prompted[0]["content"]
    assert "**Analogy:** (40-220 words)\n\n**Explanation:** (40-220 words)" in prompted[0]["content"]


def test_the_loss_is_over_the_whole_reference_answer_when_the_prompted_rows_outgrow_the_budget(tmp_path):
    """The prompted system's instructions lengthen its rows past the budget the data was trimmed to; mlx_lm would cut
    their ends and score that system on part of the reference only."""
    import mlx_lm
    from tiny_model import build_tiny_llama

    from paper_personas.systems import row_losses

    model, tokenizer = mlx_lm.load(str(build_tiny_llama(tmp_path / "tiny")))
    row = chat_row("Explain this like I'm 5:\n" + "Hash tables map keys to buckets. " * 4, "A long answer. " * 30)
    length = len(tokenizer.apply_chat_template(row["messages"], return_dict=False))
    prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, return_dict=False)
    prompt_length = len(prompt)
    budget = (prompt_length + length) // 2  # the row ends beyond it, halfway through its answer
    whole = row_losses(model, tokenizer, [row], max_seq_length=length + 64)
    assert row_losses(model, tokenizer, [row], max_seq_length=budget) == whole


def test_judge_swaps_positions_so_a_position_biased_judge_scores_even(smoke_run, tmp_path, monkeypatch):
    work, _ = smoke_run
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    with FakeGemini(Faults(rate_429=0.3, retry_delay_s=0.01), api_key="test-key", seed=3) as fake:
        args = eval_args(
            work, tmp_path, "--personas", "eli5", "--judge", "gemini", "--yes", "--base-url", fake.base_url
        )
        err = run_main("evaluate.py", args).stderr
        judged = len(fake.request_times) - fake.outcomes.get("rate_429", 0)
        refused = fake.outcomes.get("rate_429", 0)
    result = json.loads((tmp_path / "eval.json").read_text())["personas"]["eli5"]["systems"]["adapter"]["summary"]
    assert refused > 0  # some judge calls were answered 429 and retried
    assert judged == 6  # 3 pairs, each judged in both orders
    # "always A" wins once for each side of every pair, for accuracy and for style alike
    assert result["judge_accuracy"]["mean"] == 0.5 and result["judge_style"]["mean"] == 0.5
    assert result["judge_accuracy"]["n"] == 3
    assert "judge: 6 gemini calls, estimated $" in err


def test_a_judge_that_must_think_is_given_the_least_thinking_it_accepts(smoke_run, tmp_path, monkeypatch):
    """gemini-2.5-pro refuses a thinking budget of 0 (the loopback server answers 400 as the API does), and
    evaluate.py has no --thinking-budget to ask the user for one: the judge takes the model's minimum."""
    work, _ = smoke_run
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    with FakeGemini(api_key="test-key") as fake:
        judge = ["--judge", "gemini", "--judge-model", "gemini-2.5-pro", "--yes", "--base-url", fake.base_url]
        err = run_main("evaluate.py", eval_args(work, tmp_path, "--personas", "eli5", *judge)).stderr
        assert len(fake.request_times) == 6  # 3 pairs, both orders, none refused
    summary = json.loads((tmp_path / "eval.json").read_text())["personas"]["eli5"]["systems"]["adapter"]["summary"]
    assert summary["judge_style"]["n"] == 3
    assert "--thinking-budget" not in err


def test_any_teacher_can_judge_here_an_openai_compatible_server_and_a_local_mlx_model(smoke_run, tmp_path):
    """The judge goes through the same teacher interface as step 2: a position-biased OpenAI-compatible judge
    scores even, and the tiny model judging under the verdict grammar gives a verdict for every pair."""
    from fake_openai import FakeOpenAI

    work, _ = smoke_run
    with FakeOpenAI(api_key="no-key") as fake:  # a local server: the client sends a placeholder key
        args = ["--personas", "eli5", "--judge", "openai", "--judge-model", "teacher-1", "--base-url", fake.base_url]
        run_main("evaluate.py", eval_args(work, tmp_path / "openai", *args, "--yes"))
        assert len(fake.requests) == 6
    summary = json.loads((tmp_path / "openai" / "eval.json").read_text())["personas"]["eli5"]["systems"]
    assert summary["adapter"]["summary"]["judge_accuracy"]["mean"] == 0.5
    args = ["--personas", "eli5", "--judge", "mlx", "--judge-model", str(work / "tiny-llama"), "--yes"]
    err = run_main("evaluate.py", eval_args(work, tmp_path / "mlx", *args)).stderr
    summary = json.loads((tmp_path / "mlx" / "eval.json").read_text())["personas"]["eli5"]["systems"]
    judged = summary["adapter"]["summary"]["judge_style"]
    assert judged["n"] == 3 and 0 <= judged["mean"] <= 1
    assert "judge: 6 mlx calls, estimated $0.000" in err


# ----------------------------------------------------------------------------- mistakes cost nothing but a message


def run_evaluate(*args, cwd=None):
    return run_script("evaluate.py", *args, cwd=cwd)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--systems", "--answers", "missing.jsonl"], 1, "--answers missing.jsonl: no such file"),
        (["--judge", "gemini"], 2, "--judge asks before it spends, and there is no terminal to ask: add --yes"),
        (["--judge", "gemini", "--yes"], 1, "--judge mlx --judge-model PATH_OR_HF_ID; or leave out --judge"),
        (["--judge", "openai", "--judge-model", "m", "--base-url", "CLOSED", "--yes"], 1, "cannot reach http://127"),
        (["--judge", "mlx", "--yes"], 1, "--judge mlx needs --judge-model: an mlx_lm model folder"),
        (["--judge", "openai", "--judge-model", "m", "--yes"], 1, "--judge openai needs --base-url, e.g."),
        (
            ["--judge", "openai", "--base-url", "http://127.0.0.1:9/v1", "--yes"],
            1,
            "--judge openai needs --judge-model",
        ),
        (["--out", "a-file/reports"], 1, "cannot write a-file/reports: a-file is a file, not a folder"),
    ],
)
def test_mistakes_fail_before_any_generation_with_a_message_and_change_nothing(
    smoke_run, tmp_path, extra, code, message
):
    work, _ = smoke_run
    (tmp_path / "a-file").write_text("not a folder")
    extra = [closed_port_url() if e == "CLOSED" else e for e in extra]
    before = tree_hashes(work)
    started = time.monotonic()
    result = run_evaluate(*eval_args(work, tmp_path / "reports")[:-2], *extra, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "--teacher" not in result.stderr and "--dry-run" not in result.stderr  # sdg.py's flags, not evaluate.py's
    assert time.monotonic() - started < 60  # stopped before generating (a generous bound; not a speed claim)
    assert not (tmp_path / "reports").exists() and tree_hashes(work) == before


def test_an_unwritable_out_folder_is_named_before_any_work(smoke_run, tmp_path):
    work, _ = smoke_run
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    before = tree_hashes(work)
    result = run_script("evaluate.py", *eval_args(work, locked / "reports"), as_a_user=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot write to {locked}/ (Permission denied); pass --out another path" in result.stderr
    assert tree_hashes(work) == before and not any(locked.iterdir())


def test_answers_are_kept_as_they_are_made_so_a_failed_run_resumes_without_generating_them_again(smoke_run, tmp_path):
    """The judge's quota runs out after generation: the run fails, the answers stay in answers.journal.jsonl, and
    the rerun makes none again. The run's own answers.jsonl is scored again, as the README says, its loss row
    included; and a later run with fewer systems and the model spelled otherwise makes no answer again."""
    from fake_openai import FakeOpenAI, OpenAIFaults

    work, _ = smoke_run
    out = tmp_path / "reports"
    with FakeOpenAI(OpenAIFaults(quota_after=2), api_key="no-key") as fake:
        judge = ["--judge", "openai", "--judge-model", "teacher-1", "--base-url", fake.base_url, "--yes"]
        failed = run_evaluate(*eval_args(work, out), *judge)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "the answers are kept in" in failed.stderr and "insufficient_quota" in failed.stderr
    assert "generate: 100%" in failed.stderr and "27/27" in failed.stderr  # a progress bar while it generated
    journal = out / "answers.journal.jsonl"
    assert len(journal.read_text().splitlines()) == 3 * 3 * 3  # 3 systems x 3 personas x --limit 3
    rerun = run_evaluate(*eval_args(work, out))
    assert rerun.returncode == 0, rerun.stderr
    assert "27 answers from an earlier run" in rerun.stdout and journal.exists()
    # Scoring at the default verbosity: none of the third-party chatter (rouge_score's, bm25s's)
    assert "Using default tokenizer" not in rerun.stderr and "Building index" not in rerun.stderr
    rescored = run_evaluate(*eval_args(work, tmp_path / "again"), "--systems", "--answers", out / "answers.jsonl")
    assert rescored.returncode == 0, rescored.stderr
    again = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert again["systems"] == ["base", "prompted", "adapter"]
    first = json.loads((out / "eval.json").read_text())
    for system in again["systems"]:  # the loss row survives the rescoring, with the same values
        assert (
            again["personas"]["eli5"]["systems"][system]["summary"]["loss"]
            == (first["personas"]["eli5"]["systems"][system]["summary"]["loss"])
        )
    fewer_args = eval_args(work, out, "--systems", "base", "prompted")
    fewer_args[1] = "tiny-llama"  # the same model spelled relatively: the same answers
    fewer = run_evaluate(*fewer_args, cwd=work)
    assert fewer.returncode == 0 and "18 answers from an earlier run" in fewer.stdout, fewer.stdout + fewer.stderr
    assert len(journal.read_text().splitlines()) == 27  # nothing generated again


def test_base_and_prompted_alone_need_no_adapters(smoke_run, tmp_path):
    work, _ = smoke_run
    args = eval_args(work, tmp_path / "reports")
    args[args.index("--adapters") + 1] = str(tmp_path / "no-adapters")  # nothing trained there
    run_main("evaluate.py", [*args, "--systems", "base", "prompted"])
    assert json.loads((tmp_path / "reports" / "eval.json").read_text())["systems"] == ["base", "prompted"]
