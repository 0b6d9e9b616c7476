"""mlx on a Linux CPU with its bundled reference BLAS against OpenBLAS loaded first (paper_personas/blas.py):
matmul throughput, generation and one LoRA training step of the real test model, both ways in the same run.

    $ python bench/blas_bench.py [--rounds 3]

Each measurement runs in a fresh process (which BLAS mlx calls is fixed when it is loaded), the two ways
alternating round by round so that a busy machine slows both alike; the table gives the median of the rounds
and the ratio of the medians. The model is SmolLM2-135M-Instruct in float32 (tests/real_model.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from machine import cpu  # noqa: E402
from real_model import CACHE, build_smollm2  # noqa: E402

from paper_personas.blas import chosen, preload_env  # noqa: E402

# One process's measurements; it prints one JSON line. MODE is "reference" or "openblas".
MEASURE = r"""
import json, sys, time
sys.path.insert(0, ROOT)
if MODE == "openblas":
    from paper_personas.blas import use_fast_blas
    assert use_fast_blas().startswith("OpenBLAS"), use_fast_blas()
import mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim, mlx_lm
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tuner.utils import linear_to_lora_layers

a, b = mx.random.normal((1024, 1024)), mx.random.normal((1024, 1024))
mx.eval(a @ b)
start = time.perf_counter()
for _ in range(10):
    mx.eval(a @ b)
gflops = 2 * 1024**3 * 10 / (time.perf_counter() - start) / 1e9

model, tokenizer = mlx_lm.load(MODEL)
prompt = tokenizer.apply_chat_template(
    [{"role": "user", "content": "Explain a hash table like I'm 5. " * 8}], add_generation_prompt=True
)
mlx_lm.generate(model, tokenizer, prompt, max_tokens=4, sampler=make_sampler(0.0))  # warm up
start = time.perf_counter()
tokens = 0
for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=48, sampler=make_sampler(0.0)):
    tokens, prompt_tps = response.generation_tokens, response.prompt_tps
generation_tps = tokens / (time.perf_counter() - start)

model.freeze()
linear_to_lora_layers(model, 16, {"rank": 8, "dropout": 0.0, "scale": 20.0})
optimizer = optim.Adam(learning_rate=1e-5)
batch = mx.array([tokenizer.encode("The library opens at nine in the morning and closes at six. " * 12)[:128]])

def loss_fn(model, x):
    logits = model(x[:, :-1])
    return nn.losses.cross_entropy(logits, x[:, 1:], reduction="mean")

step = nn.value_and_grad(model, loss_fn)
def train_step():
    loss, grads = step(model, batch)
    optimizer.update(model, grads)
    mx.eval(loss, model.parameters(), optimizer.state)

train_step()  # warm up
start = time.perf_counter()
train_step()  # one step: the reference BLAS takes about half a minute for it
step_s = time.perf_counter() - start
print(json.dumps({"matmul_gflops": gflops, "prompt_tps": prompt_tps, "generation_tps": generation_tps,
                  "train_step_s": step_s, "train_tokens_per_s": 127 / step_s}))
"""


def measure(mode: str, model: Path) -> dict:
    code = f"ROOT = {str(ROOT)!r}\nMODE = {mode!r}\nMODEL = {str(model)!r}\n" + MEASURE
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800, check=False
    )
    if result.returncode != 0:
        sys.exit(f"error: the {mode} measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each way (default: %(default)s)")
    args = parser.parse_args()
    if not preload_env():
        sys.exit(f"error: no OpenBLAS to compare with here: {chosen().description}")
    model = build_smollm2(CACHE)
    runs = {"reference": [], "openblas": []}
    for round_ in range(args.rounds):
        for mode in runs:
            runs[mode].append(measure(mode, model))
            print(f"round {round_ + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
    metrics = {
        "matmul_gflops": "1024x1024 float32 matmul, GFLOP/s",
        "prompt_tps": "prompt processing, tokens/s",
        "generation_tps": "generation, tokens/s",
        "train_tokens_per_s": "one LoRA training step (16 layers, 127 tokens), tokens/s",
    }
    print(f"CPU: {cpu()}; OpenBLAS: {chosen().description}\n")
    print(f"| measure (median of {args.rounds}) | reference BLAS | OpenBLAS | ratio |")
    print("|---|---:|---:|---:|")
    for key, label in metrics.items():
        slow = statistics.median(r[key] for r in runs["reference"])
        fast = statistics.median(r[key] for r in runs["openblas"])
        print(f"| {label} | {slow:,.1f} | {fast:,.1f} | {fast / slow:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
