"""Benchmark --teacher gemini-batch against the online teacher on the same units, through the real google-genai
client and a loopback Gemini that bills the tokens it is sent (the same count for both):

Run simply as:
    $ python bench/batch_bench.py                    # 1,000 units; 3 kill rounds per phase

  cost      USD per 1,000 units from each run's ledger (data/sdg_stats.json), online and batch, and their ratio;
            and whether both runs wrote the same rows
  kills     for each phase (upload, create, download: the fake holds that request open; writing: a SIGKILL at a
            random moment once the first rows are on disk), sdg.py is killed, then rerun to the end. Counted:
            units the account paid for more than once, units missing or written twice, and rows that differ from
            a clean batch run's
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_gemini import FakeGemini  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402

KEY = "bench-key"
PERSONAS = ("eli5", "intuitive", "executive")


def write_papers(path: Path, units: int) -> None:
    papers = [
        {
            "id": f"bench.{p:05d}",
            "title": f"Paper {p}",
            "sections": [
                {"heading": f"{s} Part", "text": f"Part {s} of paper {p} explains how a hash table finds a key. " * 3}
                for s in range(10)
            ],
        }
        for p in range(units // 10)
    ]
    path.write_text(json.dumps({"papers": papers, "failures": []}))


def sdg_command(work: Path, fake, model: Path, teacher: str, out: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "sdg.py"),
        "--teacher",
        teacher,
        "--base-url",
        fake.base_url,
        "--papers",
        str(work / "papers.json"),
        "--out-dir",
        str(work / out),
        "--tokenizer",
        str(model),
        "--rpm",
        "0",
        "--concurrency",
        "32",
        "--poll-interval",
        "0.05",
    ]


def run(command: list[str]) -> None:
    result = subprocess.run(command, env={**os.environ, "GEMINI_API_KEY": KEY}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command[2:4]} failed:\n{result.stderr[-2000:]}")


def rows(folder: Path) -> dict[str, list]:
    found = {}
    for persona in PERSONAS:
        path = folder / f"{persona}.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        found[persona] = sorted((r["meta"]["key"], json.dumps(r["messages"])) for r in lines)
    return found


def cost_per_thousand(folder: Path) -> float:
    total = json.loads((folder / "sdg_stats.json").read_text())["total"]
    return total["cost_usd"] / total["done"] * 1000


def killed_run(work: Path, model: Path, phase: str, out: str, rng: random.Random) -> tuple[bool, int, FakeGemini]:
    """One run killed in `phase`, then the rerun. Returns whether the kill landed while sdg.py still ran, the
    eli5 rows on disk at that moment, and the fake."""
    fake = FakeGemini(api_key=KEY)
    fake.__enter__()
    command = sdg_command(work, fake, model, "gemini-batch", out)
    fake.hold = {phase} if phase != "writing" else set()
    process = subprocess.Popen(
        command, env={**os.environ, "GEMINI_API_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    landed = False
    first_rows = work / out / "eli5.jsonl"
    while process.poll() is None:
        if phase in fake.held or (phase == "writing" and first_rows.exists() and first_rows.stat().st_size):
            if phase == "writing":
                time.sleep(rng.uniform(0, 0.3))
            landed = process.poll() is None
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.005)
    process.wait()
    at_kill = len(first_rows.read_text().splitlines()) if first_rows.exists() else 0
    fake.hold = set()
    fake.release.set()
    run(command)
    return landed, at_kill, fake


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3, help="kills per phase")
    args = p.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = build_tiny_llama(work / "tiny")
        write_papers(work / "papers.json", args.units)
        with FakeGemini(api_key=KEY) as fake:
            run(sdg_command(work, fake, model, "gemini", "online"))
        with FakeGemini(api_key=KEY) as fake:
            run(sdg_command(work, fake, model, "gemini-batch", "batch"))
        online, batch = cost_per_thousand(work / "online"), cost_per_thousand(work / "batch")
        clean = rows(work / "batch")
        same = clean == rows(work / "online")
        print("| teacher | USD per 1,000 units (ledger) |\n|---|---|")
        print(f"| gemini (online) | {online:.4f} |\n| gemini-batch | {batch:.4f} |")
        print(f"\nbatch/online: {batch / online:.3f}; same rows: {'yes' if same else 'NO'}\n")
        print(
            "| killed in | runs | kill landed | eli5 rows on disk at the kill | paid twice | missing | duplicate rows "
            "| rows differ |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for phase in ("upload", "create", "download", "writing"):
            landed = paid_twice = missing = duplicates = differ = 0
            at_kills = []
            for round_ in range(args.rounds):
                out = f"kill-{phase}-{round_}"
                hit, at_kill, fake = killed_run(work, model, phase, out, rng)
                at_kills.append(at_kill)
                fake.__exit__(None, None, None)
                found = rows(work / out)
                landed += hit
                paid_twice += len(fake.billed) - len(set(fake.billed))
                keys = [key for key, _ in found["eli5"]]
                missing += len({k for k, _ in clean["eli5"]} - set(keys))
                duplicates += sum(len(r) - len({k for k, _ in r}) for r in found.values())
                differ += found != clean
            on_disk = ", ".join(str(n) for n in at_kills)
            cells = [phase, args.rounds, landed, on_disk, paid_twice, missing, duplicates, differ]
            print("| " + " | ".join(str(c) for c in cells) + " |")
        print(f"\n({args.units} units; the fake bills each line of a job once, when the job finishes)")


if __name__ == "__main__":
    main()
