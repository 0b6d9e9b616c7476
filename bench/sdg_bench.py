"""Benchmark sdg.py's request rate against the first version's loop, on a loopback Gemini server with
~2 s latency (±0.5 s jitter) and 5% of calls answered 429 (RetryInfo: 1 s).

Run simply as:
    $ python bench/sdg_bench.py                        # 1,000 units at --rpm 600 --concurrency 32, 3 rounds

  sdg.py     the real script in a subprocess, against the fake server
  baseline   the first version's shape: one synchronous call at a time, 1 s sleep after each success,
             errors dropped. It runs at a steady ~20 requests/min, so it is timed on --baseline-units units.
Reported per variant (median over rounds): requests per minute between the first and last request, the steady
rate between the 5th and 95th percentile request, the most requests seen in any 60 s window (retries included),
and units lost.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_gemini import FakeGemini, Faults  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402

KEY = "bench-key"


def write_papers(path: Path, units: int) -> None:
    sections = [
        {"heading": f"{i} Part", "text": f"Part {i} explains how a hash table finds a key in one step. " * 3}
        for i in range(10)
    ]
    papers = [{"id": f"bench.{p:05d}", "title": f"Paper {p}", "sections": sections} for p in range(units // 10)]
    path.write_text(json.dumps({"papers": papers, "failures": []}))


def max_in_window(times: list[float], window: float = 60.0) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def rate_per_minute(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) * 60 if len(times) > 1 else 0.0


def steady_rate_per_minute(times: list[float]) -> float:
    """The rate between the 5th and 95th percentile request: without start-up and the last retries' waits."""
    lo, hi = int(len(times) * 0.05), int(len(times) * 0.95)
    return rate_per_minute(times[lo:hi])


def run_sdg(work: Path, fake: FakeGemini, tokenizer: Path, rpm: int, concurrency: int) -> int:
    """Run sdg.py from scratch; return the number of units it did not write."""
    data = work / "data"
    for old in data.glob("*"):
        old.unlink()  # .sdg.lock included: glob("*") matches dot files
    cmd = [
        sys.executable,
        str(ROOT / "sdg.py"),
        "--papers",
        str(work / "papers.json"),
        "--out-dir",
        str(data),
        "--base-url",
        fake.base_url,
        "--rpm",
        str(rpm),
        "--concurrency",
        str(concurrency),
        "--tokenizer",
        str(tokenizer),
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "GEMINI_API_KEY": KEY}, capture_output=True)
    run = json.loads((data / "sdg_stats.json").read_text())["runs"][-1]  # the ledger's record of this run
    return run["units"] - run["done"]


def run_baseline(fake: FakeGemini, units: int) -> int:
    """The first version: sequential calls, sleep 1 s after a success, exceptions printed and dropped."""
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(base_url=fake.base_url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    lost = 0
    for i in range(units):
        try:
            client.models.generate_content(
                model="gemini-2.5-flash",
                contents=f"Part {i} of a paper.",
                config=types.GenerateContentConfig(response_mime_type="application/json"),
            )
            time.sleep(1)
        except Exception:
            lost += 1
    return lost


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--baseline-units", type=int, default=30)
    p.add_argument("--rpm", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    faults = Faults(rate_429=0.05, retry_delay_s=1.0, latency_s=2.0, jitter_s=0.5)
    results: dict[str, list[tuple[float, float, int, int]]] = {"sdg.py": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_papers(work / "papers.json", args.units)
        tokenizer = build_tiny_llama(work / "tiny")
        for round_no in range(1, args.rounds + 1):
            for name in results:
                with FakeGemini(faults, seed=round_no, api_key=KEY) as fake:
                    if name == "sdg.py":
                        lost = run_sdg(work, fake, tokenizer, args.rpm, args.concurrency)
                    else:
                        lost = run_baseline(fake, args.baseline_units)
                    times = sorted(fake.request_times)
                rate, steady, peak = rate_per_minute(times), steady_rate_per_minute(times), max_in_window(times)
                results[name].append((rate, steady, peak, lost))
                print(
                    f"round {round_no} {name}: {len(times)} requests, {rate:.1f}/min, steady {steady:.1f}/min, "
                    f"max {peak} in 60 s, "
                    f"{lost} lost, 429s {fake.outcomes.get('rate_429', 0)}",
                    file=sys.stderr,
                )
    base_rate = statistics.median(row[0] for row in results["baseline"])
    print(
        f"Fake Gemini: 2 s ± 0.5 s latency, 5% 429 with RetryInfo 1 s. sdg.py: {args.units:,} units, "
        f"--rpm {args.rpm} --concurrency {args.concurrency}; baseline: {args.baseline_units} units. "
        f"Medians of {args.rounds} rounds.\n"
    )
    print(
        "| variant | requests/min | steady requests/min | steady share of --rpm | max in any 60 s "
        "| units lost | speed vs baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        rate = statistics.median(row[0] for row in rows)
        steady = statistics.median(row[1] for row in rows)
        peak = max(row[2] for row in rows)
        lost = max(row[3] for row in rows)
        share = f"{steady / args.rpm:.1%}" if name == "sdg.py" else "-"
        print(f"| {name} | {rate:,.1f} | {steady:,.1f} | {share} | {peak:,} | {lost} | {rate / base_rate:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
