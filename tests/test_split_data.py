import os
import random
import subprocess
import sys
import time
import types

import pytest
from conftest import ROOT
from helpers import chat_row, read_rows, run_main, run_script, write_rows

from paper_personas.personas import load_personas
from paper_personas.splits import assign_groups, near_duplicate_pairs
from paper_personas.tokens import TRUNCATION_MARK

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


def test_no_paper_straddles_splits_and_every_persona_validates_on_the_same_papers(tmp_path):
    paths = persona_files(tmp_path)
    out = run_main("split_data.py", [str(p) for p in paths]).stdout
    valid_sets = []
    for path in paths:
        folder = path.with_suffix("")
        train, valid = papers_in(folder / "train.jsonl"), papers_in(folder / "valid.jsonl")
        assert not train & valid
        assert len(train | valid) == 20
        assert len(valid) == 3  # round(20 papers * 0.15)
        valid_sets.append(valid)
    assert valid_sets[0] == valid_sets[1] == valid_sets[2]
    assert "train 51 rows / 17 papers, valid 9 rows / 3 papers; 0 duplicates removed" in out


def test_a_rerun_gives_identical_bytes_and_another_seed_another_split(tmp_path):
    paths = persona_files(tmp_path)
    run_main("split_data.py", [str(paths[0])])
    first = {name: (tmp_path / "eli5_2048" / f"{name}.jsonl").read_bytes() for name in ("train", "valid")}
    run_main("split_data.py", [str(paths[0])])
    assert first == {name: (tmp_path / "eli5_2048" / f"{name}.jsonl").read_bytes() for name in ("train", "valid")}
    run_main("split_data.py", [str(paths[0]), "--seed", "1"])
    assert first["valid"] != (tmp_path / "eli5_2048" / "valid.jsonl").read_bytes()


def test_a_papers_split_does_not_depend_on_which_other_papers_exist():
    everything = assign_groups({f"paper:{i}" for i in range(40)}, 0.15, 0.0, seed=0)
    fewer = assign_groups({f"paper:{i}" for i in range(39)}, 0.15, 0.0, seed=0)
    moved = [g for g in fewer if fewer[g] != everything[g]]
    assert len(moved) <= 1  # dropping one paper shifts at most the one paper at the boundary


def test_duplicates_are_removed_and_counted_and_test_split_is_written(tmp_path):
    path = persona_files(tmp_path, papers=10, sections=2)[0]
    rows = read_rows(path)
    write_rows(path, rows + rows[:4])
    out = run_main("split_data.py", [str(path), "--test-fraction", "0.2"]).stdout
    folder = path.with_suffix("")
    counts = {name: len(read_rows(folder / f"{name}.jsonl")) for name in ("train", "valid", "test")}
    assert sum(counts.values()) == 20 and counts["test"] == 4  # 2 papers (10 * 0.2) of 2 rows
    assert "4 duplicates removed" in out


def test_rows_without_meta_are_grouped_by_their_user_message(tmp_path):
    rows = [chat_row(f"question {i}", paper_id=None) for i in range(10)] * 2  # each question twice
    rows[10:] = [chat_row(f"question {i}", f"another answer {i}", paper_id=None) for i in range(10)]
    path = write_rows(tmp_path / "mine.jsonl", rows)
    out = run_main("split_data.py", [str(path)]).stdout
    train = {r["messages"][0]["content"] for r in read_rows(tmp_path / "mine" / "train.jsonl")}
    valid = {r["messages"][0]["content"] for r in read_rows(tmp_path / "mine" / "valid.jsonl")}
    assert not train & valid and len(train | valid) == 10
    assert "valid 4 rows / 2 groups" in out  # not "papers": these groups are sections


# ----------------------------------------------------------------------------- data from elsewhere (no meta)

VOCABULARY = [f"w{i}" for i in range(400)]
PREFIXES = {p.name: p.user_prefix for p in load_personas()}


def section(i: int, words: int = 160) -> str:
    """A paragraph of seeded random words: unrelated sections share almost no word 5-grams."""
    rng = random.Random(i)
    return " ".join(rng.choice(VOCABULARY) for _ in range(words)) + "."


def foreign_rows(persona: str, sections: int = 40) -> list[dict]:
    """Rows as another pipeline writes them: no meta; sections 0-9 twice with different answers, and the
    second copy truncated at a point that differs per persona, as trimming with different answers does."""
    rows = [chat_row(PREFIXES[persona] + section(i), f"{persona} answer {i}", paper_id=None) for i in range(sections)]
    cut = {"eli5": 300, "intuitive": 500, "executive": 700}[persona]
    rows += [
        chat_row(PREFIXES[persona] + section(i)[:cut] + TRUNCATION_MARK, f"{persona} other answer {i}", paper_id=None)
        for i in range(10)
    ]
    return rows


def opening(text: str) -> str:
    """The issue's leak measure, computed independently of split_data: the first 200 characters of the
    section (the prompt without its first line), whitespace folded."""
    return " ".join(text.split("\n", 1)[1].split())[:200]


def test_rows_without_meta_validate_every_persona_on_the_same_sections_and_twins_never_straddle(tmp_path):
    paths = [write_rows(tmp_path / f"{p}_2048.jsonl", foreign_rows(p)) for p in PREFIXES]
    out = run_main("split_data.py", [str(p) for p in paths]).stdout
    valid_sections, train_openings = [], set()
    for path in paths:
        folder = path.with_suffix("")
        train, valid = read_rows(folder / "train.jsonl"), read_rows(folder / "valid.jsonl")
        assert len(train) + len(valid) == 50
        valid_sections.append({opening(r["messages"][0]["content"]) for r in valid})
        train_openings |= {opening(r["messages"][0]["content"]) for r in train}
    assert valid_sections[0] == valid_sections[1] == valid_sections[2]  # 100% shared by the three personas
    assert not set().union(*valid_sections) & train_openings  # no twin or truncated copy on the other side
    out = out
    assert "6 groups" in out  # round(40 sections * 0.15) in valid
    assert "same_opening" in out  # the truncated copies were joined to their sections


def test_near_identical_sections_under_two_paper_ids_are_joined_and_counted(tmp_path):
    rows = [chat_row(PREFIXES["eli5"] + section(i), paper_id=f"2401.{i:05d}") for i in range(20)]
    # Paper 2401.00003 extracted again as a local PDF: one word edited, a line break moved.
    twin = section(3).replace("w", "v", 1).replace(" ", "\n", 1)
    rows.append(chat_row(PREFIXES["eli5"] + "Abstract. " + twin, paper_id="local-copy"))
    path = write_rows(tmp_path / "eli5_2048.jsonl", rows)
    for seed in range(6):  # whatever the seed, the two copies land in the same split
        out = run_main("split_data.py", [str(path), "--seed", str(seed)]).stdout
        where = {
            r["meta"]["paper_id"]: name
            for name in ("train", "valid")
            for r in read_rows(tmp_path / "eli5_2048" / f"{name}.jsonl")
        }
        assert where["local-copy"] == where["2401.00003"]
    assert "1 joins (1 near_duplicate)" in out
    # --check on what was split counts the same join, in the same words: one count, one meaning
    out = run_main("split_data.py", ["--check", str(tmp_path / "eli5_2048")]).stdout
    assert "(1 joins (1 near_duplicate) of near-identical sections)" in out


@pytest.mark.parametrize("meta", [True, False])
def test_split_and_check_count_the_same_joins_on_the_same_rows(tmp_path, meta):
    """Three persona files over the same sections (each section is in all three: no join at all), with truncated
    second copies in the foreign rows (joined by their opening). --check on the split folders counts the same."""
    paths = []
    for p in PREFIXES:
        rows = foreign_rows(p)
        if meta:
            rows = [chat_row(r["messages"][0]["content"], paper_id=f"2401.{i % 40:05d}") for i, r in enumerate(rows)]
        paths.append(write_rows(tmp_path / f"{p}_2048.jsonl", rows))
    out = run_main("split_data.py", [str(p) for p in paths]).stdout
    out = out.splitlines()
    split_joins = {line.rsplit("removed, ", 1)[1].split(" -> ")[0] for line in out if " -> " in line}
    out = run_main("split_data.py", ["--check", *(str(p.with_suffix("")) for p in paths)]).stdout
    (joins,) = split_joins
    assert joins == ("0 joins" if meta else "30 joins (30 same_opening)")  # 10 truncated copies x 3 personas
    assert f"({joins} of near-identical sections)" in out


def test_near_duplicate_pairs_finds_edits_and_not_strangers():
    texts = [section(i) for i in range(30)]
    edited = texts[7].split()
    edited[50] = "changed"
    pairs = near_duplicate_pairs([*texts, " ".join(edited)], threshold=0.8)
    # one word of 160 changed touches 5 of 156 five-grams: Jaccard ~0.94; unrelated sections share none
    assert pairs == [(7, 30)]


def test_check_reports_leaks_in_an_existing_split_and_passes_a_clean_one(tmp_path):
    paths = [write_rows(tmp_path / f"{p}_2048.jsonl", foreign_rows(p)) for p in PREFIXES]
    run_main("split_data.py", [str(p) for p in paths])
    folders = [str(p.with_suffix("")) for p in paths]
    clean = subprocess.run(
        [sys.executable, str(ROOT / "split_data.py"), "--check", *folders], capture_output=True, text=True, timeout=60
    )
    assert clean.returncode == 0 and "check: 0 leaking rows in 3 folders" in clean.stdout
    # A user's own split: the same section in train and valid with two answers, one copy cut short.
    leaky = tmp_path / "theirs"
    write_rows(leaky / "train.jsonl", [chat_row("Summarise:\n" + section(i)) for i in range(5)])
    write_rows(leaky / "valid.jsonl", [chat_row("Summarise:\n" + section(2)[:400], "another answer")])
    before = {p.name: p.read_bytes() for p in leaky.iterdir()}
    result = subprocess.run(
        [sys.executable, str(ROOT / "split_data.py"), "--check", str(leaky)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"{leaky}: 1 held-out rows; 1 also in its own train" in result.stdout
    assert {p.name: p.read_bytes() for p in leaky.iterdir()} == before  # nothing rewritten


@pytest.mark.parametrize("papers, args", [(1, []), (2, ["--test-fraction", "0.1"])])
def test_a_dataset_too_small_to_split_gets_a_clear_error(tmp_path, papers, args):
    path = persona_files(tmp_path, papers=papers)[0]
    result = subprocess.run(
        [sys.executable, str(ROOT / "split_data.py"), str(path), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"only {papers} {'paper' if papers == 1 else 'papers'} to split" in result.stderr  # "1 paper", "2 papers"
    assert "Traceback" not in result.stderr
    assert not path.with_suffix("").exists()


def test_mlx_lm_loads_and_tokenizes_the_split_folder(tmp_path):
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load_tokenizer
    from tiny_model import build_tiny_llama

    path = persona_files(tmp_path, papers=8, sections=2)[0]
    run_main("split_data.py", [str(path)])
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


def test_a_newer_file_for_another_token_budget_is_warned_about(tmp_path):
    """trim_jsonl.py --max-seq-length 4096 after a 2048 run: split_data.py's default still reads the _2048 files,
    and says that a newer _4096 file exists."""
    for persona in PERSONAS:
        rows = [chat_row(f"{persona} {p}", paper_id=f"p{p}") for p in range(10)]
        write_rows(tmp_path / "data" / f"{persona}_2048.jsonl", rows)
    newer = write_rows(tmp_path / "data" / "eli5_4096.jsonl", [chat_row("eli5 new", paper_id="p0")])
    os.utime(newer, (time.time() + 60, time.time() + 60))
    result = run_script("split_data.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data/eli5_4096.jsonl is newer than the file read: pass --max-seq-length" in result.stderr


def test_a_held_out_share_far_from_its_fraction_is_warned_with_the_reason(tmp_path):
    """3 papers at --valid-fraction 0.15: one whole paper, a third of the rows, goes to valid. Said, with why."""
    paths = persona_files(tmp_path, papers=3)
    result = subprocess.run(
        [sys.executable, str(ROOT / "split_data.py"), str(paths[0]), "--valid-fraction", "0.15"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "valid holds 33% of the rows, not the 15% asked for: whole papers are assigned" in result.stderr
    many = subprocess.run(
        [sys.executable, str(ROOT / "split_data.py"), str(persona_files(tmp_path / "many", papers=40)[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert many.returncode == 0 and "asked for" not in many.stderr, many.stderr  # 6 of 40 equal papers: 15%


WORDS = "packet path scheduler delivers first measures every window sender receiver loss delay rate".split()


def prose(seed: int) -> str:
    """A paragraph of its own (sections alike are joined into one group, across papers too)."""
    rng = random.Random(seed)
    return " ".join(" ".join(rng.sample(WORDS, 8)).capitalize() + "." for _ in range(3))


def pseudo_code(seed: int) -> str:
    """Pseudo-code as PDF extraction writes it: line numbers, arrows, Unicode's mathematical letters."""
    rng = random.Random(seed)
    letters = "𝐾𝑜𝑟𝑖𝑔𝑛𝑝𝑡𝑐𝑤𝑑𝐶"
    return "\n\n".join(
        f"**{rng.randrange(100)}** _{''.join(rng.sample(letters, 4))}_ ←− _{''.join(rng.sample(letters, 3))}_ "
        f"+ {rng.randrange(10)}"
        for _ in range(4)
    )


def test_min_prose_keeps_pseudo_code_out_of_train_and_valid_and_every_row_in_test(tmp_path):
    """The original's data holds dozens of pseudo-code fragments a teacher explained from what it knew of the
    paper: --min-prose drops them from what the adapter learns from and picks its checkpoint by, while test keeps
    them (it measures the sections users bring), and the papers' assignment does not change."""
    rows = []
    for p in range(10):
        rows.append(chat_row(f"Explain this like I'm 5:\n{prose(p)}", paper_id=f"p{p}"))
        rows.append(chat_row(f"Explain this like I'm 5:\n{pseudo_code(p)}", paper_id=f"p{p}", section=1))
    path = write_rows(tmp_path / "eli5_2048.jsonl", rows)
    args = [str(path), "--valid-fraction", "0.2", "--test-fraction", "0.2"]
    run_main("split_data.py", args)
    folder = path.with_suffix("")
    before = {name: read_rows(folder / f"{name}.jsonl") for name in ("train", "valid", "test")}

    out = run_main("split_data.py", [*args, "--min-prose", "0.5"]).stdout
    after = {name: read_rows(folder / f"{name}.jsonl") for name in ("train", "valid", "test")}
    assert "train 6 rows / 6 papers, valid 2 rows / 2 papers, test 4 rows / 2 papers" in out
    assert "0 duplicates removed, 8 not prose (train, valid), 0 joins" in out
    assert after["test"] == before["test"]  # the held-out rows a comparison is made on are the same rows
    for name in ("train", "valid"):
        assert after[name] == [r for r in before[name] if r["meta"]["section"] == 0]
        assert {r["meta"]["paper_id"] for r in after[name]} == {r["meta"]["paper_id"] for r in before[name]}


def test_min_prose_that_leaves_no_training_rows_says_which_setting_to_lower(tmp_path):
    rows = [chat_row(f"Explain this like I'm 5:\n{pseudo_code(p)}", paper_id=f"p{p}") for p in range(10)]
    path = write_rows(tmp_path / "eli5_2048.jsonl", rows)
    result = run_script("split_data.py", str(path), "--min-prose", "0.5", cwd=tmp_path)
    assert result.returncode == 1
    assert "no rows fall in the train and valid papers" in result.stderr
    assert "lower --min-prose (10 rows were dropped as not prose)" in result.stderr
    assert "Traceback" not in result.stderr
