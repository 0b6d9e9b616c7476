"""The whole loop with a real model: the 12 shared papers -> step 2 with SmolLM2-135M-Instruct as the teacher ->
trim, split by paper -> one LoRA adapter per persona -> evaluate.py (base, prompted base, adapter) on the
held-out papers. Every step runs as a user runs it, as a command.

    $ python bench/real_model_bench.py [--units 30] [--iters 30]    # about 30 minutes on 2 cores
    $ python bench/real_model_bench.py --reuse-data ...              # steps 3-5 and evaluate.py on the last rows

Reads ../shared/papers/ (extracted once into .bench/papers.json); writes .bench/real/ and prints a markdown
report: teacher units per minute, gate rejections by reason, training tokens per second, validation loss before
and after, and evaluate.py's verdict lines and table.

Settings that differ from adapter_config.json, and why:
  --max-tokens 800   rows of at most 800 tokens (sections chunked to fit, as sdg.py does for any budget): a CPU
                     trains a 2,048-token row about 3x slower, and the answer must fit whole (mask_prompt)
  --iters 30, lr 1e-4, 8 layers, batch 2   a 135M model on a CPU in minutes; at lr 1e-5 twenty steps did not
                     move format adherence at all (issue 22); batch 1 when fewer than 2 rows reach training
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from real_model import CACHE, build_smollm2  # noqa: E402

from paper_personas.blas import preload_env, use_fast_blas  # noqa: E402
from paper_personas.personas import load_personas  # noqa: E402

PAPERS = ROOT.parent / "shared" / "papers"
BENCH = ROOT / ".bench"
MAX_TOKENS = 800


def run(cmd: list, env: dict | None = None) -> tuple[str, float]:
    started = time.monotonic()
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.monotonic() - started
    print(f"$ {' '.join(str(c) for c in cmd)}  ({seconds:.0f} s, exit {result.returncode})", file=sys.stderr)
    if result.returncode not in (0,):
        print(result.stdout[-2000:], result.stderr[-4000:], file=sys.stderr)
    return result.stdout + result.stderr, seconds


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def val_losses(output: str) -> list[float]:
    """mlx_lm lora's report table: "   1    val 3.130    1.00s" (validation) rows."""
    return [float(m[1]) for m in re.finditer(r"(?m)^\s*\d+\s+val\s+(\S+)", ANSI.sub("", output))]


def trained_tokens_per_s(output: str) -> list[float]:
    """Its training rows: "   2    2.968 ▼      431     1.2k" (iteration, loss, tokens/s, tokens)."""
    rows = re.finditer(r"(?m)^\s*\d+\s+\d+\.\d+\s+\S+\s+([\d,.]+)\s+\S+\s*$", ANSI.sub("", output))
    return [float(m[1].replace(",", "")) for m in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=30, help="teacher units, taken across papers (default: 30)")
    parser.add_argument("--iters", type=int, default=30, help="training steps per persona (default: 30)")
    parser.add_argument("--eval-rows", type=int, default=6, help="held-out rows per persona (default: 6)")
    parser.add_argument(
        "--reuse-data",
        action="store_true",
        help="keep step 2's rows from the last run in .bench/real/data (its ledger is reported) and go on from step 3",
    )
    args = parser.parse_args()
    py, model = sys.executable, build_smollm2(CACHE)
    work = BENCH / "real"
    data = work / "data"
    personas = [p.name for p in load_personas()]
    report = [f"BLAS: {use_fast_blas()}", f"model: SmolLM2-135M-Instruct float32 ({model})"]
    papers = BENCH / "papers.json"
    if not papers.exists():
        run([py, "paperExtractor.py", "--pdf-dir", PAPERS, "--out", papers, "--papers-dir", BENCH / "papers"])

    if args.reuse_data:
        seconds = json.loads((data / "sdg_stats.json").read_text())["runs"][-1]["seconds"]
    else:
        out, seconds = run(
            [py, "sdg.py", "--teacher", "mlx", "--model", model, "--tokenizer", model, "--papers", papers]
            + ["--out-dir", data, "--limit", args.units, "--max-tokens", MAX_TOKENS, "--concurrency", "6"]
            + ["--max-output-tokens", "900", "--quality-attempts", "2"]
        )
    ledger = json.loads((data / "sdg_stats.json").read_text())["runs"][-1]
    report += [
        "",
        f"## Step 2: {args.units} units across the 12 papers, SmolLM2 as the teacher (--teacher mlx)",
        "",
        f"- {ledger['done']} units written, {ledger['failed']} failed, in {seconds:.0f} s: "
        f"**{ledger['done'] / seconds * 60:.2f} units/min** written ({args.units / seconds * 60:.2f} attempted)",
        f"- gate rejections by reason, every attempt: {ledger['rejections_by_reason']}",
        f"- final failures by reason: {ledger['failures_by_reason']}",
        f"- {ledger['requests']} requests, {ledger['candidates_tokens']:,} tokens generated",
    ]
    inputs = [data / f"{p}.jsonl" for p in personas]
    run([py, "trim_jsonl.py", "--tokenizer", model, "--max-tokens", MAX_TOKENS, *inputs])
    split_out, _ = run(
        [py, "split_data.py", "--max-tokens", MAX_TOKENS, "--valid-fraction", "0.3"]
        + [data / f"{p}_{MAX_TOKENS}.jsonl" for p in personas]
    )
    report += ["", "## Steps 3-4", "", *[f"    {line}" for line in split_out.splitlines() if "->" in line]]
    missing = [p for p in personas if not (data / f"{p}_{MAX_TOKENS}" / "valid.jsonl").exists()]
    if missing:  # too few rows passed the gate to split by paper: say so, with what step 2 gave
        errors = [line for line in split_out.splitlines() if line.startswith("error:")]
        report += ["", f"Stopped: no split for {', '.join(missing)}. {' '.join(errors)}"]
        print("\n".join(report))
        return 1

    # mlx_lm needs at least batch_size rows in train and in valid; a run that kept fewer trains on batches of 1.
    rows = [
        len((data / f"{p}_{MAX_TOKENS}" / f"{split}.jsonl").read_text().splitlines())
        for p in personas
        for split in ("train", "valid")
    ]
    batch = max(1, min(2, *rows))
    report += ["", f"## Step 5: {args.iters} steps, lr 1e-4, 8 layers, batch {batch}, max_seq_length {MAX_TOKENS}", ""]
    report += ["| persona | val loss before | after | training tokens/s (median) |", "|---|---:|---:|---:|"]
    for persona in personas:
        out, seconds = run(
            [py, "-m", "mlx_lm", "lora", "--config", "adapter_config.json", "--model", model]
            + ["--data", data / f"{persona}_{MAX_TOKENS}", "--adapter-path", work / "adapters" / persona]
            + ["--iters", args.iters, "--learning-rate", "1e-4", "--num-layers", "8", "--batch-size", batch]
            + ["--max-seq-length", MAX_TOKENS, "--steps-per-eval", args.iters, "--steps-per-report", "10"]
            + ["--val-batches", "-1"],
            env={**__import__("os").environ, **preload_env(), "WANDB_MODE": "offline"},
        )
        losses, speeds = val_losses(out), sorted(trained_tokens_per_s(out))
        speed = speeds[len(speeds) // 2] if speeds else float("nan")
        before, after = (losses[0], losses[-1]) if len(losses) >= 2 else (float("nan"), float("nan"))
        report.append(f"| {persona} | {before:.3f} | {after:.3f} | {speed:,.0f} |")

    out, seconds = run(
        [py, "evaluate.py", "--model", model, "--adapters", work / "adapters", "--data", data]
        + ["--max-seq-length", MAX_TOKENS, "--limit", args.eval_rows, "--max-tokens", "160", "--out", work / "reports"]
    )
    report += ["", f"## evaluate.py on held-out papers ({seconds:.0f} s)", ""]
    report += [line for line in out.splitlines() if "adapter vs prompted base" in line]
    report += ["", (work / "reports" / "eval.md").read_text()]
    text = "\n".join(report)
    (work / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
