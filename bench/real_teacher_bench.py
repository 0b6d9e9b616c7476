"""Does an adapter beat prompting the base model? Steps 3-5 and evaluate.py on what a real teacher wrote: the
rows Gemini 2.5 Flash made for the original pipeline (../shared/teacher-rows, read by path, never copied), with
SmolLM2-135M-Instruct as the base model, on a CPU.

    $ python bench/real_teacher_bench.py --rows ../shared/teacher-rows            # about 2 hours on 2 cores
    $ python bench/real_teacher_bench.py --rows ../shared/teacher-rows --personas eli5   # one persona
    $ python bench/real_teacher_bench.py ... --fresh                               # redo what an earlier run made
    $ python bench/real_teacher_bench.py ... --systems prompted adapter --limit 30  # the comparison the targets need
    $ python bench/real_teacher_bench.py ... --set iters=76 --work .bench/search/iters76 --answers-from .bench/teacher
                                            # one point of a recipe search: the config with one setting changed, in a
                                            # folder of its own, reusing the prompted base's answers of another run

Every step runs as a user runs it, as a command: trim_jsonl.py with the base model's tokenizer, split_data.py by
paper (train / valid for choosing the checkpoint / test for evaluate.py: whole papers held out), `make train`'s
step 5 (paper_personas.training around mlx_lm lora, with --config), and evaluate.py's three systems (base,
prompted base, adapter; --systems picks) on the test papers, then the paired differences the targets are read
from. A rerun reuses what is still current: trimmed and split files, an
adapter newer than its data and config, answers in evaluate.py's journal.

--seed auto takes the first split seed, from 0, at which every persona has at least --min-test test rows, 8 valid
rows and half its rows in train: a rule on sizes alone, fixed before any adapter is trained (12 papers of very
unequal sizes cannot give those from every seed).

Writes .bench/teacher/ (data, adapters, reports) and report.md there; prints the report.
"""

import argparse
import copy
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from machine import cpu  # noqa: E402
from real_model import CACHE, build_smollm2  # noqa: E402

from paper_personas.blas import use_fast_blas  # noqa: E402
from paper_personas.personas import load_personas  # noqa: E402
from paper_personas.statistics import paired_difference  # noqa: E402

WORK = ROOT / ".bench" / "teacher"
SPLIT_COUNTS = re.compile(r"(train|valid|test) ([\d,]+) rows? / ([\d,]+) papers?")


def run(cmd: list, log: list[str], env: dict | None = None, echo: bool = False) -> str:
    """One command as a user runs it, from the repository's root; its output, or exit with it on failure."""
    started = time.monotonic()
    shown = " ".join(str(c).replace(str(ROOT) + "/", "") for c in cmd)
    print(f"$ {shown}", file=sys.stderr, flush=True)
    process = subprocess.Popen(
        [str(c) for c in cmd], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    for line in process.stdout:
        lines.append(line)
        if echo:
            sys.stderr.write(line)
    output = "".join(lines)
    if process.wait() != 0:
        sys.exit(f"error: {shown} exited {process.returncode}:\n{output[-4000:]}")
    log.append(f"$ {shown}  ({time.monotonic() - started:,.0f} s)")
    return output


def shown(path: Path) -> str:
    """A path as typed at the repository's root."""
    return str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def newer(output: Path, *inputs: Path) -> bool:
    return output.exists() and all(output.stat().st_mtime >= p.stat().st_mtime for p in inputs)


# Issue 28's targets, on adapter minus prompted base paired by row: what each must show, and the test of it
# (mean: the adapter's own mean; low, high: the paired difference's 95% interval).
TARGETS = {
    "format": ("adapter >= 0.90, interval above 0", lambda mean, low, high: mean >= 0.9 and low > 0),
    "degenerate": ("interval below 0", lambda mean, low, high: high < 0),
    "topical": ("interval's upper end >= 0", lambda mean, low, high: high >= 0),
    "loss": ("interval below 0", lambda mean, low, high: high < 0),
}


def paired_table(results: dict, personas: list[str]) -> list[str]:
    """Adapter minus prompted base, paired by held-out row, mean [95% bootstrap interval] (evaluate.py's own
    statistics), for the metrics the targets name, with whether each target is met."""
    lines = [
        "Adapter minus prompted base, paired by held-out row: mean [95% bootstrap interval]; target met?", "",
        "| persona | n | " + " | ".join(TARGETS) + " |", "|---|---:|" + "---|" * len(TARGETS),
    ]  # fmt: skip
    for persona in personas:
        systems = results["personas"][persona]["systems"]
        adapter, prompted = systems["adapter"]["scored"], systems["prompted"]["scored"]
        cells = []
        for metric, target in TARGETS.items():
            diff = paired_difference(adapter, prompted, metric, results["seed"])
            met = target[1](systems["adapter"]["summary"][metric]["mean"], diff["low"], diff["high"])
            cells.append(f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] {'yes' if met else 'no'}")
        lines.append(f"| {persona} | {len(adapter)} | " + " | ".join(cells) + " |")
    targets = "; ".join(f"{metric}: {target[0]}" for metric, target in TARGETS.items())
    return lines + ["", f"Targets: {targets}.", ""]


def split_sizes(output: str) -> dict[str, dict[str, tuple[int, int]]]:
    """split_data.py's lines, as {file stem: {split: (rows, papers)}}."""
    sizes = {}
    for line in output.splitlines():
        if " -> " in line and ": " in line:
            stem = Path(line.split(": ", 1)[0]).stem
            sizes[stem] = {
                m[1]: (int(m[2].replace(",", "")), int(m[3].replace(",", ""))) for m in SPLIT_COUNTS.finditer(line)
            }
    return sizes


def with_settings(config: dict, settings: list[str]) -> dict:
    """`config` with each KEY=JSON applied; a dotted key reaches into a nested setting (lora_parameters.rank)."""
    config = copy.deepcopy(config)
    for setting in settings:
        key, _, value = setting.partition("=")
        *parents, name = key.split(".")
        place = config
        for parent in parents:
            place = place[parent]
        if name not in place:
            sys.exit(f"error: --set {setting}: the config has no setting {key!r}")
        place[name] = json.loads(value)
    return config


def good_split(sizes: dict, min_test: int) -> bool:
    return all(
        s.get("test", (0, 0))[0] >= min_test
        and s.get("valid", (0, 0))[0] >= 8
        and s.get("train", (0, 0))[0] >= sum(rows for rows, _ in s.values()) / 2
        for s in sizes.values()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=Path, default=ROOT.parent / "shared" / "teacher-rows", help="{persona}.jsonl")
    parser.add_argument("--personas", nargs="+", help="which personas to train and evaluate (default: all)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "smollm2-135m.json", help="mlx_lm config")
    parser.add_argument("--overflow", default="truncate", choices=["drop", "truncate"], help="trim_jsonl.py's")
    parser.add_argument("--min-prose", type=float, default=0.0, help="split_data.py's (default 0: keep all)")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="share of papers (default 0.2)")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="share of papers (default 0.3)")
    parser.add_argument("--seed", default="auto", help="split seed, or auto (see above)")
    parser.add_argument("--min-test", type=int, default=30, help="--seed auto: test rows per persona (default 30)")
    parser.add_argument("--patience", type=int, default=0, help="make train's PATIENCE (default 0)")
    parser.add_argument("--max-tokens", type=int, default=400, help="evaluate.py's answer length (default 400)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate.py's held-out rows per persona (default 0: all)")
    parser.add_argument(
        "--systems", nargs="+", default=["base", "prompted", "adapter"], help="evaluate.py's systems (default: all)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="evaluate.py's --batch-size (default 16)")
    parser.add_argument("--work", type=Path, default=WORK, help=f"(default: {WORK.relative_to(ROOT)})")
    parser.add_argument("--fresh", action="store_true", help="retrain and regenerate what an earlier run made")
    parser.add_argument("--train-only", action="store_true", help="steps 3-5 only: a recipe search on val loss")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=JSON", help="change the config's settings (e.g. iters=76 "
        'lora_parameters.rank=16); the config used is written to --work as config.json',
    )  # fmt: skip
    parser.add_argument(
        "--answers-from", type=Path, help="an earlier run's --work: its journalled answers are reused where they "
        "match (evaluate.py's fingerprints: same model, prompt and settings), so a recipe change regenerates only "
        "the adapter's answers",
    )  # fmt: skip
    args = parser.parse_args()
    started = time.monotonic()
    all_personas = [p.name for p in load_personas()]
    personas = args.personas or all_personas
    args.work = args.work.resolve()
    config = json.loads(args.config.read_text())
    if args.set:
        config, args.config = with_settings(config, args.set), args.work / "config.json"
        args.work.mkdir(parents=True, exist_ok=True)
        # Written only when it changes: an adapter newer than its config is reused by a rerun
        if not args.config.exists() or json.loads(args.config.read_text()) != config:
            args.config.write_text(json.dumps(config, indent=2) + "\n")
    budget, py, model = config["max_seq_length"], sys.executable, build_smollm2(CACHE)
    data, adapters, reports = args.work / "data", args.work / "adapters", args.work / "reports"
    log: list[str] = []
    report = [
        f"CPU: {cpu()}; BLAS: {use_fast_blas()}",
        f"Base model: SmolLM2-135M-Instruct, float32 ({model.relative_to(ROOT)}); rows: {args.rows} (Gemini 2.5 "
        "Flash, the original pipeline's data)",
        "",
    ]

    # ----------------------------------------------------------------------------- step 3: trim
    # All personas, always: step 4 assigns papers over every persona's rows at once.
    inputs = [args.rows / f"{p}.jsonl" for p in all_personas]
    trimmed = [data / f"{p}_{budget}.jsonl" for p in all_personas]
    if args.fresh or not all(newer(t, i) for t, i in zip(trimmed, inputs, strict=True)):
        out = run(
            [py, "trim_jsonl.py", *inputs, "--out-dir", data, "--tokenizer", model, "--max-tokens", budget]
            + ["--overflow", args.overflow],
            log,
        )
        (args.work / "trim.txt").write_text(out)
    trim_lines = [line for line in (args.work / "trim.txt").read_text().splitlines() if " kept " in line]
    report += [f"## Step 3: trim to {budget:,} tokens (SmolLM2's chat template), --overflow {args.overflow}", ""]
    report += [f"    {line.split(' -> ')[0]}" for line in trim_lines] + [""]

    # ----------------------------------------------------------------------------- step 4: split by paper
    split_cmd = [py, "split_data.py", *trimmed, "--valid-fraction", args.valid_fraction]
    split_cmd += ["--test-fraction", args.test_fraction, "--min-prose", args.min_prose]
    seeds = range(100) if args.seed == "auto" else [int(args.seed)]
    # Splitting rewrites its files; one that ends with the same bytes keeps its time, so that an adapter trained
    # on it stays current (the seed search writes other splits on the way).
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in data.glob("*/*.jsonl")}
    for seed in seeds:
        out = run([*split_cmd, "--seed", seed], log)
        if good_split(split_sizes(out), args.min_test) or args.seed != "auto":
            break
    else:
        sys.exit(f"error: no seed below 100 gives every persona {args.min_test} test rows")
    for f, (content, mtime) in before.items():
        if f.exists() and f.read_bytes() == content:
            os.utime(f, ns=(mtime, mtime))
    sizes = split_sizes(out)
    prose = f", --min-prose {args.min_prose}" if args.min_prose else ""
    report += [
        f"## Step 4: split by paper, seed {seed} ({'--seed auto' if args.seed == 'auto' else 'given'}){prose}",
        "",
    ]
    report += [f"    {line.split(' -> ')[0]}" for line in out.splitlines() if " -> " in line] + [""]

    # ----------------------------------------------------------------------------- step 5: train
    settings = {k: config[k] for k in ("learning_rate", "iters", "batch_size", "num_layers", "lora_parameters")}
    settings |= {k: config[k] for k in ("max_seq_length", "steps_per_eval", "mask_prompt", "grad_checkpoint")}
    report += [f"## Step 5: `make train CONFIG={shown(args.config)}` (PATIENCE={args.patience})", ""]
    report += [f"    {json.dumps(settings)}", ""]
    report += ["| persona | train rows | val loss at each evaluation (steps: loss) | kept step | kept val loss | "
               "training tokens/s (median) | time |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for persona in personas:
        folder, split = adapters / persona, data / f"{persona}_{budget}"
        took = "reused"
        if args.fresh or not newer(folder / "best.json", split / "train.jsonl", args.config):
            t0 = time.monotonic()
            run(
                [py, "-m", "paper_personas.training", "--adapter-path", folder, "--patience", args.patience, "--"]
                + [py, "-m", "mlx_lm", "lora", "--config", args.config, "--model", model, "--data", split]
                + ["--adapter-path", folder],
                log,
                env={"WANDB_MODE": "offline"},
                echo=True,
            )
            took = f"{time.monotonic() - t0:,.0f} s"
        best = json.loads((folder / "best.json").read_text())
        curve = ", ".join(f"{k}: {v:.3f}" for k, v in best["val_loss_by_step"].items())
        speed = statistics.median(best["training_tokens_per_s"]) if best["training_tokens_per_s"] else float("nan")
        report.append(
            f"| {persona} | {sizes[f'{persona}_{budget}']['train'][0]} | {curve} | {best['step']} of "
            f"{best['last_step']} | {best['val_loss']:.3f} | {speed:,.0f} | {took} |"
        )
    report.append("")

    # ----------------------------------------------------------------------------- evaluate.py on the test papers
    if args.train_only:
        print("\n".join(report))
        return 0
    journal = reports / "answers.journal.jsonl"
    if args.answers_from and not journal.exists():
        reports.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.answers_from / "reports" / journal.name, journal)
    t0 = time.monotonic()
    out = run(
        [py, "evaluate.py", "--model", model, "--adapters", adapters, "--data", data, "--personas", *personas]
        + [
            "--systems",
            *args.systems,
            "--max-seq-length",
            budget,
            "--limit",
            args.limit,
            "--max-tokens",
            args.max_tokens,
        ]
        + ["--batch-size", args.batch_size, "--out", reports],
        log,
        echo=True,
    )
    report += [f"## evaluate.py on the test papers ({time.monotonic() - t0:,.0f} s)", ""]
    report += [line for line in out.splitlines() if "adapter vs prompted base" in line] + [""]
    report += paired_table(json.loads((reports / "eval.json").read_text()), personas)
    report += [(reports / "eval.md").read_text(), ""]
    report += ["## Commands", "", *[f"    {line}" for line in log], ""]
    report += [f"Whole bench: {(time.monotonic() - started) / 60:,.1f} min on {cpu()}."]
    text = "\n".join(report)
    (args.work / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
