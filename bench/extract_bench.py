"""Benchmark step 1's extraction against the first version's plain loop, on a folder of real PDFs.

Run simply as:
    $ python bench/extract_bench.py                      # ../shared/papers, 3 rounds
    $ python bench/extract_bench.py --pdf-dir DIR --rounds 5

Each round runs three variants in fresh processes, interleaved so machine noise hits all of them alike:
  baseline   a plain sequential loop of pymupdf4llm.to_markdown(write_images=True), as the first version did
  workers=1  paperExtractor.py --workers 1
  all cores  paperExtractor.py --workers <cpu count>
Pages/s counts the input PDFs' pages (what a user hands in), not the pages actually analysed.
Peak memory is the largest summed RSS of the variant's whole process tree, sampled every 50 ms.
Prints a markdown table for BENCHMARKS.md on stdout.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pymupdf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paper_personas.sections import section_coverage  # noqa: E402

BASELINE = """
import pathlib, sys, pymupdf4llm
out = pathlib.Path(sys.argv[2])
for pdf in sorted(pathlib.Path(sys.argv[1]).glob("*.pdf")):
    pymupdf4llm.to_markdown(str(pdf), write_images=True, image_path=str(out / "images"), image_format="png")
"""


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak summed RSS (bytes) of a command and all its children."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode}")
    return seconds, peak


def variant_commands(pdf_dir: Path, work: Path, cpus: int) -> dict[str, list[str]]:
    def ours(workers: int) -> list[str]:
        out = work / f"w{workers}"
        return [
            sys.executable,
            str(ROOT / "paperExtractor.py"),
            "--pdf-dir",
            str(pdf_dir),
            "--workers",
            str(workers),
            "--out",
            str(out / "papers.json"),
            "--papers-dir",
            str(out / "papers"),
        ]

    return {
        "baseline": [sys.executable, "-c", BASELINE, str(pdf_dir), str(work / "baseline")],
        "workers=1": ours(1),
        f"all cores ({cpus})": ours(cpus),
    }


def coverage_stats(papers_json: Path) -> tuple[float, int]:
    papers = json.loads(papers_json.read_text())["papers"]
    coverages = [section_coverage(p["markdown"], p["sections"]) for p in papers]
    return min(coverages), len(papers)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdf-dir", type=Path, default=ROOT.parent / "shared" / "papers", help="folder of PDFs")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default: 3)")
    args = p.parse_args(argv)
    pdfs = sorted(args.pdf_dir.glob("*.pdf"))
    if not pdfs:
        sys.exit(f"error: no PDFs in {args.pdf_dir}; pass --pdf-dir")
    pages = sum(pymupdf.open(pdf).page_count for pdf in pdfs)
    cpus = os.cpu_count() or 1
    times: dict[str, list[float]] = {}
    peaks: dict[str, list[int]] = {}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        commands = variant_commands(args.pdf_dir, Path(tmp), cpus)
        for round_no in range(1, args.rounds + 1):
            for name, cmd in commands.items():
                for old in Path(tmp).glob("w*/papers.json"):
                    old.unlink()  # each round extracts from scratch, never resumes
                for store in Path(tmp).glob("w*/papers.records"):
                    shutil.rmtree(store)
                seconds, peak = run_measured(cmd)
                times.setdefault(name, []).append(seconds)
                peaks.setdefault(name, []).append(peak)
                print(f"round {round_no} {name}: {seconds:.1f} s, {peak / 2**20:,.0f} MiB", file=sys.stderr)
            base = times["baseline"][-1]
            for name in commands:
                ratios.setdefault(name, []).append(base / times[name][-1])
        min_cov, n_papers = coverage_stats(Path(tmp) / f"w{cpus}" / "papers.json")
    print(f"{len(pdfs)} PDFs, {pages} pages, {cpus} CPUs, {args.rounds} rounds; medians\n")
    print("| variant | seconds | pages/s | speed vs baseline | peak memory |")
    print("|---|---:|---:|---:|---:|")
    for name in times:
        seconds = statistics.median(times[name])
        print(
            f"| {name} | {seconds:.1f} | {pages / seconds:.2f} | {statistics.median(ratios[name]):.2f}x "
            f"| {statistics.median(peaks[name]) / 2**20:,.0f} MiB |"
        )
    print(f"\nSection coverage with all cores: lowest {min_cov:.0%} over {n_papers} papers.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
