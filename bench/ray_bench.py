"""Step 1 as Ray tasks on a local Ray instance against the process pool, on one machine, the same run.

    $ python bench/ray_bench.py                          # ../shared/papers, 3 rounds
    $ python bench/ray_bench.py --copies 4 --rounds 3    # each PDF 4 times (under other names): more work per start

Each round runs `paperExtractor.py --pdf-dir ... --workers <cpus>` and the same with `--ray`, from scratch, in
alternating order (so a busy machine slows both alike); wall time of the whole command, Ray's start and stop
included, since a user waits for them. Each round also checks that the two papers.json are byte-identical.
Prints a markdown table for BENCHMARKS.md: medians and the median of the per-round ratios.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdf-dir", type=Path, default=ROOT.parent / "shared" / "papers", help="folder of PDFs")
    p.add_argument("--copies", type=int, default=1, help="each PDF this many times (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default: %(default)s)")
    args = p.parse_args(argv)
    pdfs = sorted(args.pdf_dir.resolve().glob("*.pdf"))
    if not pdfs:
        sys.exit(f"error: no PDFs in {args.pdf_dir}; pass --pdf-dir")
    cpus = os.cpu_count() or 1
    times: dict[str, list[float]] = {"pool": [], "ray": []}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        for copy in range(args.copies):
            for pdf in pdfs:
                (work / "in" / f"{pdf.stem}-{copy}.pdf").symlink_to(pdf)
        for round_no in range(1, args.rounds + 1):
            order = ["pool", "ray"] if round_no % 2 else ["ray", "pool"]
            for engine in order:
                (work / f"{engine}.json").unlink(missing_ok=True)  # from scratch: never a resumed run
                for folder in (work / f"{engine}.records", work / f"papers-{engine}"):
                    shutil.rmtree(folder, ignore_errors=True)
                cmd = [sys.executable, str(ROOT / "paperExtractor.py"), "--pdf-dir", "in", "--workers", str(cpus)]
                cmd += ["--out", f"{engine}.json", "--papers-dir", "papers"] + (["--ray"] if engine == "ray" else [])
                times[engine].append(run(cmd, work))
                (work / "papers").rename(work / f"papers-{engine}")
                print(f"round {round_no} {engine}: {times[engine][-1]:.1f} s", file=sys.stderr)
            if (work / "ray.json").read_bytes() != (work / "pool.json").read_bytes():
                sys.exit(f"error: round {round_no}: Ray's papers.json differs from the pool's")
            ratios.append(times["ray"][-1] / times["pool"][-1])
    n = len(pdfs) * args.copies
    print(f"{n} PDFs ({len(pdfs)} x {args.copies}), {cpus} CPUs, {args.rounds} rounds; medians\n")
    print("| engine | seconds | papers/s | time vs the pool |")
    print("|---|---:|---:|---:|")
    for engine, label in (("pool", f"process pool ({cpus} workers)"), ("ray", f"Ray, local instance ({cpus} CPUs)")):
        seconds = statistics.median(times[engine])
        ratio = 1.0 if engine == "pool" else statistics.median(ratios)
        print(f"| {label} | {seconds:.1f} | {n / seconds:.2f} | {ratio:.2f}x |")
    print(f"\npapers.json byte-identical in all {args.rounds} rounds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
