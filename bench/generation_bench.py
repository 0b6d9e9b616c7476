"""evaluate.py's and analyze.py's generation: answers decoded together by mlx_lm's BatchGenerator
(models.generate_batch) against one at a time (models.generate, mlx_lm's stream_generate), on the real test model,
greedy, the same prompts, in the same run.

    $ python bench/generation_bench.py [--answers 16] [--max-tokens 128] [--batch-size 16] [--rounds 3]

The prompts are paper-like sections from the test corpus in the ELI5 training prompt, of different lengths; each
round times both ways (alternating which goes first) and checks that they gave the same answers. Prints answers
per second and generated tokens per second, the median over rounds, and the ratio, with the CPU.
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from machine import cpu  # noqa: E402
from pdfs import SENTENCES  # noqa: E402
from real_model import CACHE, build_smollm2  # noqa: E402

from paper_personas.blas import use_fast_blas  # noqa: E402
from paper_personas.personas import load_personas  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=16, help="prompts per round (default 16)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per answer at most (default 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences decoded together (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default 3)")
    args = parser.parse_args()
    blas = use_fast_blas()
    import mlx_lm

    from paper_personas.models import generate, generate_batch

    model, tokenizer = mlx_lm.load(str(build_smollm2(CACHE)))
    eli5 = load_personas()[0]
    rng = random.Random(0)
    prompts = [
        [{"role": "user", "content": eli5.user_message(" ".join(rng.sample(SENTENCES, rng.randint(3, 12))))}]
        for _ in range(args.answers)
    ]
    rates = {"one at a time": [], "batched": []}
    tokens = {"one at a time": [], "batched": []}
    for round_no in range(args.rounds):
        ways = {
            "one at a time": lambda: [generate(model, tokenizer, p, args.max_tokens, 0.0) for p in prompts],
            "batched": lambda: generate_batch(model, tokenizer, prompts, args.max_tokens, args.batch_size, 0.0),
        }
        order = list(ways) if round_no % 2 == 0 else list(reversed(ways))
        answers = {}
        for way in order:
            started = time.perf_counter()
            answers[way] = ways[way]()
            seconds = time.perf_counter() - started
            rates[way].append(len(prompts) / seconds)
            tokens[way].append(sum(n for _, n in answers[way]) / seconds)
            print(f"round {round_no + 1} {way}: {rates[way][-1]:.2f} answers/s", file=sys.stderr)
        same = sum(a == b for a, b in zip(answers["one at a time"], answers["batched"], strict=True))
        print(f"round {round_no + 1}: {same} of {len(prompts)} answers identical", file=sys.stderr)
    print(f"CPU: {cpu()}; BLAS: {blas}")
    print(
        f"SmolLM2-135M-Instruct float32, {args.answers} ELI5 prompts, greedy, at most {args.max_tokens} tokens each, "
        f"--batch-size {args.batch_size}; medians of {args.rounds} rounds\n"
    )
    print("| way | answers/s | tokens/s |\n|---|---:|---:|")
    for way in rates:
        print(f"| {way} | {statistics.median(rates[way]):.2f} | {statistics.median(tokens[way]):.1f} |")
    ratio = statistics.median(b / a for a, b in zip(rates["one at a time"], rates["batched"], strict=True))
    print(f"\nbatched / one at a time: {ratio:.1f}x (median of the per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
