"""The BLAS on a CPU without AVX-512, on any machine: qemu-user emulates a Haswell (AVX2, no AVX-512) for one Python
process, which multiplies the matrices of SmolLM2-135M in mlx through each way the project loads OpenBLAS
(LD_PRELOAD, as the mlx_lm command lines get it; use_fast_blas(), as the scripts do) and compares the products with
mlx's reference BLAS. Optionally the same with another OpenBLAS, e.g. the cmeel-openblas SKYLAKEX build that
crashed on an AMD EPYC (issue 27), to show the emulation catches what the guard exists for.

    $ apt-get install qemu-user                    # Debian's qemu-user 7.2: TCG emulates AVX2, not AVX-512
    $ python bench/no_avx512_check.py [--also /path/to/other/libopenblas.so.0]

Each emulated process takes minutes (TCG runs the vector code instruction by instruction). Prints one line per
way: exit status (a signal by name), whether OpenBLAS was in the process, and the largest relative difference
from the reference BLAS.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu  # noqa: E402

from paper_personas.blas import SWITCH, chosen, signal_name  # noqa: E402

# SmolLM2-135M's matmuls for one decoded token (m = 1), a short prompt and a training row.
MATMULS = r"""
import json, sys
import numpy as np
mode, out = sys.argv[1], sys.argv[2]
if mode == "use_fast_blas":
    from paper_personas.blas import use_fast_blas
    use_fast_blas()
import mlx.core as mx
rng = np.random.default_rng(0)
products = {}
for m in (1, 7, 128):
    for k, n in ((576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152), (64, 128)):
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
        products[f"{m}x{k}x{n}"] = np.array(mx.array(a) @ mx.array(b))
np.savez(out, **products)
print(json.dumps({"openblas": "libopenblas" in open("/proc/self/maps").read()}))
"""


def run(way: str, env: dict, out: Path, emulate: bool) -> tuple[str, dict | None]:
    prefix = ["qemu-x86_64", "-cpu", "Haswell"] if emulate else []
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    child = subprocess.run(
        [*prefix, sys.executable, "-c", MATMULS, way, str(out)],
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": str(ROOT), **env},
    )
    if child.returncode < 0 or child.returncode > 128:
        number = -child.returncode if child.returncode < 0 else child.returncode - 128
        return f"killed by {signal_name(number)}", None
    if child.returncode != 0:
        return f"exited {child.returncode}: {child.stderr.strip().splitlines()[-1:]}", None
    return "exit 0", json.loads(child.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--also", type=Path, help="another OpenBLAS to try the same way (preloaded)")
    args = parser.parse_args()
    if not shutil.which("qemu-x86_64"):
        sys.exit("error: qemu-x86_64 not found: apt-get install qemu-user")
    import numpy as np

    library = chosen().library
    if library is None:
        sys.exit(f"error: no OpenBLAS to check here: {chosen().description}")
    print(f"host CPU: {cpu()}; emulated: qemu-user -cpu Haswell; OpenBLAS: {chosen().description}")
    ways = [("preload", {"LD_PRELOAD": str(library)}), ("use_fast_blas", {})]
    if args.also:
        ways.append((f"preload {args.also}", {"LD_PRELOAD": str(args.also)}))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        status, _ = run("plain", {SWITCH: "reference"}, tmp / "reference.npz", emulate=False)
        reference = dict(np.load(tmp / "reference.npz"))
        print(f"reference BLAS, native: {status}")
        for way, env in ways:
            out = tmp / f"{len(way)}.npz"
            status, report = run("use_fast_blas" if way == "use_fast_blas" else "plain", env, out, emulate=True)
            line = f"{way}, emulated Haswell (no AVX-512): {status}"
            if report is not None:
                got = np.load(out)
                worst = max(float(np.abs(got[k] - reference[k]).max() / np.abs(reference[k]).max()) for k in reference)
                line += f", OpenBLAS in the process: {report['openblas']}, largest relative difference {worst:.1e}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
