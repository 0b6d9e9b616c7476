import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import PARAGRAPH, chat_row, read_rows, run_main, tiny_tiktoken, write_rows
from mlx_lm.utils import load_tokenizer

from paper_personas.tokens import (
    TEMPLATE_BASE_TOKENS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    TRUNCATION_MARK,
    ChatTemplateCounter,
    TiktokenCounter,
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


def exact_length(tokenizer, row) -> int:
    """What mlx_lm's ChatDataset feeds the trainer, counted independently of trim_jsonl."""
    return len(tokenizer.apply_chat_template(row["messages"], return_dict=False))


def long_user_text(paragraphs: int) -> str:
    return "Explain this like I'm 5:\n" + "\n\n".join(f"Part {i}. " + PARAGRAPH * 2 for i in range(paragraphs))


def test_drop_keeps_only_rows_that_fit_by_the_exact_chat_template_count(tmp_path, tiny_model):
    rows = [chat_row(long_user_text(n), paper_id=f"p{n}") for n in (1, 2, 8, 30)]
    src = write_rows(tmp_path / "eli5.jsonl", rows)
    out = run_main("trim_jsonl.py", [str(src), "--max-tokens", "400", "--tokenizer", str(tiny_model)]).stdout
    kept = read_rows(tmp_path / "eli5_400.jsonl")
    tokenizer = load_tokenizer(tiny_model)
    assert [r["meta"]["paper_id"] for r in kept] == ["p1", "p2"]
    assert all(exact_length(tokenizer, r) <= 400 for r in kept)
    assert all(exact_length(tokenizer, r) > 400 for r in rows[2:])  # the dropped ones really were too long
    assert "2 kept (2 too_long)" in out


def test_truncate_cuts_user_text_at_a_boundary_and_never_the_answer(tmp_path, tiny_model):
    row = chat_row(long_user_text(30))
    src = write_rows(tmp_path / "intuitive.jsonl", [row, chat_row(long_user_text(1), paper_id="p2")])
    args = [str(src), "--max-tokens", "400", "--tokenizer", str(tiny_model), "--overflow", "truncate"]
    out = run_main("trim_jsonl.py", [*args, "--min-kept", "0"]).stdout  # this test is about where the cut falls
    cut, short = read_rows(tmp_path / "intuitive_400.jsonl")
    tokenizer = load_tokenizer(tiny_model)
    user = cut["messages"][0]["content"]
    assert exact_length(tokenizer, cut) <= 400
    assert cut["messages"][1] == row["messages"][1]  # the answer is untouched
    assert user.endswith(TRUNCATION_MARK)
    assert user.removesuffix(TRUNCATION_MARK).endswith(".")  # cut after a sentence
    assert row["messages"][0]["content"].startswith(user.removesuffix(TRUNCATION_MARK))
    assert "<|" not in user  # no special token leaks into the text
    assert short == chat_row(long_user_text(1), paper_id="p2")
    assert "2 kept (1 truncated (kept))" in out


def test_exact_batched_count_equals_mlx_lm_per_row_count(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    rows = [chat_row(long_user_text(n)) for n in (1, 3, 7)] + [chat_row("Hi <|eot_id|> there", "ok")]
    counter = ChatTemplateCounter(tokenizer, "tiny")
    assert counter.count(rows) == [exact_length(tokenizer, row) for row in rows]


def test_tiktoken_estimate_adds_the_measured_llama_template_overhead():
    encoding = tiny_tiktoken()
    row = chat_row("the key of a hash table", "look it up")
    text_tokens = len(encoding.encode_ordinary("the key of a hash table")) + len(encoding.encode_ordinary("look it up"))
    # 26 fixed template tokens plus 5 for each of the 2 messages
    assert TiktokenCounter(encoding).count([row]) == [
        text_tokens + TEMPLATE_BASE_TOKENS + 2 * TEMPLATE_TOKENS_PER_MESSAGE
    ]
    assert TEMPLATE_BASE_TOKENS + 2 * TEMPLATE_TOKENS_PER_MESSAGE == 36


BAD_ROWS = [
    ("not json", "not valid JSON"),
    ('{"meta": {}}', "missing 'messages'"),
    (
        '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}',
        "messages[0] has role 'robot'",
    ),
    (
        '{"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "x"}]}',
        "messages[0].content is list, not text",
    ),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}', "empty assistant"),
]


@pytest.mark.parametrize("bad, reason", BAD_ROWS)
def test_a_bad_row_stops_the_run_with_file_line_and_reason_and_writes_nothing(tmp_path, tiny_model, bad, reason):
    src = write_rows(tmp_path / "eli5.jsonl", [chat_row("fine"), bad])
    result = subprocess.run(
        [sys.executable, str(ROOT / "trim_jsonl.py"), str(src), "--tokenizer", str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"{src}:2: {reason}" in result.stderr and "--skip-invalid" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eli5.jsonl"]  # no output, not even a temp file


def test_skip_invalid_drops_and_counts_every_kind_of_bad_row(tmp_path, tiny_model):
    src = write_rows(tmp_path / "eli5.jsonl", [chat_row("fine")] + [bad for bad, _ in BAD_ROWS])
    out = run_main("trim_jsonl.py", [str(src), "--tokenizer", str(tiny_model), "--skip-invalid"]).stdout
    assert len(read_rows(tmp_path / "eli5_2048.jsonl")) == 1
    assert "1 kept (5 invalid)" in out


def test_a_file_with_no_row_kept_fails_and_leaves_no_older_trim_to_split(tmp_path, tiny_model):
    src = write_rows(tmp_path / "eli5.jsonl", [bad for bad, _ in BAD_ROWS])
    write_rows(tmp_path / "eli5_2048.jsonl", [chat_row("from an earlier run")])
    result = subprocess.run(
        [sys.executable, str(ROOT / "trim_jsonl.py"), str(src), "--tokenizer", str(tiny_model), "--skip-invalid"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "0 kept (5 invalid)" in result.stdout
    assert f"error: no row kept from {src}: nothing to train on" in result.stderr
    assert read_rows(tmp_path / "eli5_2048.jsonl") == []  # the output mirrors its input, even when empty


def test_rows_without_meta_are_trimmed_too(tmp_path, tiny_model):
    src = write_rows(tmp_path / "mine.jsonl", [chat_row("a question", paper_id=None)])
    run_main("trim_jsonl.py", [str(src), "--tokenizer", str(tiny_model)])
    assert read_rows(tmp_path / "mine_2048.jsonl") == [chat_row("a question", paper_id=None)]


def test_offline_tiktoken_gives_a_clear_message(tmp_path):
    src = write_rows(tmp_path / "eli5.jsonl", [chat_row("fine")])
    env = {
        "PATH": "/usr/bin:/bin",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "trim_jsonl.py"), str(src)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 1
    assert "could not load tiktoken encoding 'cl100k_base'" in result.stderr
    assert "--tokenizer PATH" in result.stderr and "Traceback" not in result.stderr


def test_missing_input_says_which_step_to_run(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "trim_jsonl.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "Run sdg.py first" in result.stderr


@pytest.mark.parametrize(
    "text, token",
    [
        ("<|begin_of_text|>Explain this like I'm 5:\nHash tables.", "<|begin_of_text|>"),  # the first pipeline's bug
        ("Explain this:\nA <|start_header_id|> inside the text.", "<|start_header_id|>"),
    ],
)
def test_a_special_token_in_the_text_is_invalid_content(tmp_path, tiny_model, text, token):
    src = write_rows(tmp_path / "eli5.jsonl", [chat_row("fine"), chat_row(text)])
    result = subprocess.run(
        [sys.executable, str(ROOT / "trim_jsonl.py"), str(src), "--tokenizer", str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{src}:2: special_token: messages[0] contains {token!r}" in result.stderr
    out = run_main("trim_jsonl.py", [str(src), "--tokenizer", str(tiny_model), "--skip-invalid"]).stdout
    assert "1 kept (1 special_token)" in out
    assert [r["messages"][0]["content"] for r in read_rows(tmp_path / "eli5_2048.jsonl")] == ["fine"]


def test_the_estimate_mode_knows_llama_special_tokens_without_loading_llama():
    find = TiktokenCounter(tiny_tiktoken()).find_special
    assert find("text <|eot_id|> more") == "<|eot_id|>"
    assert find("a <|reserved_special_token_17|> b") == "<|reserved_special_token_17|>"
    assert find("a <|plain|> pipe and < | spaced") is None


def test_truncation_that_keeps_too_little_of_the_section_drops_the_row(tmp_path, tiny_model):
    # 30 paragraphs where 400 tokens hold about 3: far under half of the user text survives the cut
    src = write_rows(
        tmp_path / "eli5.jsonl", [chat_row(long_user_text(30)), chat_row(long_user_text(1), paper_id="p2")]
    )
    args = [str(src), "--max-tokens", "400", "--tokenizer", str(tiny_model), "--overflow", "truncate"]
    out = run_main("trim_jsonl.py", args).stdout
    assert "1 kept (1 truncated_too_much)" in out
    out = run_main("trim_jsonl.py", [*args, "--min-kept", "0.05"]).stdout  # a user who accepts short cuts keeps it
    assert "2 kept (1 truncated (kept))" in out


def test_a_table_of_contents_row_is_dropped_and_counted_and_out_dir_takes_the_output(tmp_path, tiny_model):
    """A teacher asked to explain a contents page invents the paper behind its titles: such rows (data from
    another pipeline holds them; step 1 never makes them) are dropped, counted by reason. --out-dir writes the
    output there, for inputs in a folder that is not ours to write to."""
    contents = "\n\n".join(f"2.{i} A Section Title . . . . . . . . . . . . . . {i + 3}" for i in range(6))
    rows = [chat_row("Explain this like I'm 5:\n" + PARAGRAPH), chat_row("Explain this like I'm 5:\n" + contents)]
    inputs = write_rows(tmp_path / "in" / "eli5.jsonl", rows)
    out = run_main(
        "trim_jsonl.py", [str(inputs), "--out-dir", str(tmp_path / "out"), "--tokenizer", str(tiny_model)]
    ).stdout
    assert "1 kept (1 table_of_contents)" in out
    assert read_rows(tmp_path / "out" / "eli5_2048.jsonl") == rows[:1]
    assert not (tmp_path / "in" / "eli5_2048.jsonl").exists()
