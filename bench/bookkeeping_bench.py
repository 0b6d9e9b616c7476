"""Measure step 1's bookkeeping alone: what recording one finished paper costs when 100 or 5,000 papers are
already done, and how many bytes reach the disk for papers.json, against the first version's way.

Run simply as:
    $ python bench/bookkeeping_bench.py                 # 100 and 5,000 records of ~108 KB, 3 rounds, medians

  store      this tree: Store.save_paper() writes one small file per paper (atomic, fsynced); papers.json is
             assembled once at the end, streamed (write_papers_json)
  rewrite    before: papers.json rewritten whole and fsynced after every paper (common.write_json)
Per-paper time is the median of the last 50 saves (3 for rewrite at 5,000: each rewrites ~0.5 GB). Records are
synthetic, sized like real ones: 108 KB of markdown and sections. Nothing else (extraction, download) is timed.
Before the timed saves, os.sync() flushes what the untimed ones wrote: the bench writes 0.5 GB in seconds, where
a real run spends about 2 s extracting each paper, and without the flush every fsync would wait behind the bench's
own backlog of dirty pages, a cost of the bench and not of how many papers are done. Both sizes and both
variants get the same flush.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from paper_personas.files import write_json  # noqa: E402
from paper_personas.store import Store, write_papers_json  # noqa: E402

RECORD_BYTES = 108_000
TIMED_SAVES = 50


def record(i: int) -> dict:
    body = f"Paper {i} explains a method in plain words. " * (RECORD_BYTES // 2 // 44)
    return {
        "id": f"2401.{i:05d}",
        "title": f"Paper {i}",
        "markdown": body,
        "sections": [{"heading": f"{s} Section", "text": body[: len(body) // 8]} for s in range(8)],
        "pages": 12,
    }


def bench_store(work: Path, n: int) -> tuple[float, int, int]:
    """Median seconds per save for the last saves, bytes written in all, final papers.json size."""
    out = work / "papers.json"
    store = Store(out)
    for i in range(n - TIMED_SAVES):
        store.save_paper(record(i))
    os.sync()
    seconds = []
    for i in range(n - TIMED_SAVES, n):
        started = time.perf_counter()
        store.save_paper(record(i))
        seconds.append(time.perf_counter() - started)
    stored = sum(p.stat().st_size for p in store.dir.glob("*.json"))
    write_papers_json(out, store, [])
    return statistics.median(seconds), stored + out.stat().st_size, out.stat().st_size


def bench_rewrite(work: Path, n: int, timed: int) -> tuple[float, int]:
    """Median seconds per save of the last `timed` saves (the rest built in memory), bytes of one save times n."""
    out = work / "papers.json"
    papers = [record(i) for i in range(n - timed)]
    os.sync()
    seconds = []
    for i in range(n - timed, n):
        papers.append(record(i))
        started = time.perf_counter()
        write_json(out, {"papers": papers, "failures": []})
        seconds.append(time.perf_counter() - started)
    # Saving after paper k writes k records: n (n + 1) / 2 records in all, at this record size.
    per_record = out.stat().st_size / n
    return statistics.median(seconds), int(per_record * n * (n + 1) / 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 5000])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    rows = {}
    for n in args.sizes:
        store_times, rewrite_times = [], []
        for round_no in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
                per_save, written, final = bench_store(Path(tmp), n)
                store_times.append(per_save)
            with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
                rewrite, rewrite_written = bench_rewrite(Path(tmp), n, TIMED_SAVES if n <= 500 else 3)
                rewrite_times.append(rewrite)
            print(
                f"round {round_no} n={n}: store {per_save * 1e3:.1f} ms, rewrite {rewrite * 1e3:.1f} ms",
                file=sys.stderr,
            )
        rows[n] = (statistics.median(store_times), written, final, statistics.median(rewrite_times), rewrite_written)
    print(f"Records of ~{RECORD_BYTES // 1000} KB; medians of {args.rounds} rounds\n")
    print(
        "| papers done | store: per paper | store: bytes written / final papers.json | rewrite: per paper "
        "| rewrite: bytes written / final |"
    )
    print("|---:|---:|---:|---:|---:|")
    for n, (store, written, final, rewrite, rewrite_written) in rows.items():
        print(
            f"| {n:,} | {store * 1e3:.1f} ms | {written / final:.2f}x ({written / 1e6:,.0f} MB) | "
            f"{rewrite * 1e3:,.0f} ms | {rewrite_written / final:,.0f}x ({rewrite_written / 1e9:,.1f} GB) |"
        )
    small, large = rows[min(rows)], rows[max(rows)]
    print(
        f"\nper-paper time at {max(rows):,} / at {min(rows):,}: store {large[0] / small[0]:.2f}x, "
        f"rewrite {large[3] / small[3]:.0f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
