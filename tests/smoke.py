"""The whole pipeline, offline, on a tiny sample: what `make smoke` runs and tests/test_smoke.py checks.

    $ python tests/smoke.py [WORK_DIR]            # default .smoke/

Every step runs as a user would run it, as a separate command: paperExtractor.py against a loopback arXiv
serving 3 generated papers, sdg.py against a loopback server that speaks Gemini's API (the default teacher),
trim_jsonl.py in exact mode with the tiny Llama's tokenizer, split_data.py, then `mlx_lm lora` with the
repository's adapter_config.json for each persona (WANDB_MODE=offline), `mlx_lm generate` with each adapter, and
evaluate.py's three-system report (base, prompted base, adapter) in WORK_DIR/reports/.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_arxiv import FakeArxiv, FakePaper  # noqa: E402
from fake_gemini import FakeGemini  # noqa: E402
from pdfs import make_paper_pdf  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402

from paper_personas.blas import preload_env, signal_name, use_fast_blas  # noqa: E402
from paper_personas.files import persona_rows_path, split_dir, trimmed_path  # noqa: E402
from paper_personas.personas import DEFAULT_FILE, load_personas  # noqa: E402
from paper_personas.tokens import MAX_TOKENS  # noqa: E402

TOPICS = [
    ("Fast Hash Tables for Everyone", "Hash tables"),
    ("Sorting Without Comparisons", "Radix sort"),
    ("Caching at the Edge", "Edge caching"),
]
SMOKE_ITERS = 4
SMOKE_KEY = "smoke-key-not-a-secret"  # the loopback Gemini's key; a real one is never needed here
STEP_TIMEOUT_S = 600
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves: a log piped to a file is plain text


class StepFailed(Exception):
    """A pipeline command that did not succeed; its message says which step, how it ended and what to try."""


# What to try when a step dies of a signal, by signal.
ADVICE = {
    signal.SIGILL: "the CPU met an instruction it lacks, most likely in the BLAS (this run's: {blas}). Run again "
    "on mlx's reference BLAS: PAPER_PERSONAS_BLAS=reference make smoke, and report your CPU (lscpu) with it",
    signal.SIGKILL: "something killed it, often the kernel's out-of-memory killer (see dmesg); free memory and rerun",
    signal.SIGSEGV: "it crashed in native code; rerun with PAPER_PERSONAS_BLAS=reference to rule out the BLAS",
}


def step_name(cmd: list) -> str:
    """'sdg.py', 'mlx_lm lora': what a user would call the command."""
    parts = [str(c) for c in cmd]
    if parts[1:3] == ["-m", "paper_personas.training"]:
        return "step 5 (mlx_lm lora)"
    if parts[1:3] == ["-m", "mlx_lm"]:
        return f"mlx_lm {parts[3]}"
    return Path(parts[1]).name


def how_it_ended(returncode: int) -> str:
    return f"killed by {signal_name(-returncode)}" if returncode < 0 else f"exited {returncode}"


def run(cmd: list, cwd: Path, log: list[str], env: dict | None = None) -> str:
    """Run one pipeline command and show it as it finishes; raise StepFailed with its last output if it fails."""
    started, name = time.monotonic(), step_name(cmd)
    try:
        result = subprocess.run(  # the mlx_lm commands get OpenBLAS preloaded, as `make train` runs them
            [str(c) for c in cmd],
            cwd=cwd,
            env={**os.environ, **preload_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{name} did not finish in {STEP_TIMEOUT_S} s; is the machine busy?") from None
    shown = " ".join(shown_path(c) for c in cmd)
    log.append(f"$ {shown}  ({time.monotonic() - started:.1f} s)\n{ANSI.sub('', result.stdout).strip()}")
    print(log[-1] + "\n", flush=True)  # as each step ends: a long run is never silent
    if result.returncode != 0:
        output = ANSI.sub("", result.stdout + result.stderr).strip()
        advice = ADVICE.get(-result.returncode, "its output is above")
        raise StepFailed(
            f"{name} {how_it_ended(result.returncode)}; {advice.format(blas=use_fast_blas())}.\n"
            f"Its last output:\n{output[-3000:]}"
        )
    return result.stdout + result.stderr


def shown_path(part) -> str:
    """A path as a user at the repository's root would type it: relative to the root when it is inside it."""
    text = str(part)
    if text == sys.executable:
        return ".venv/bin/python" if Path(text).parent.parent.name == ".venv" else text
    path = Path(text)
    if path.is_absolute() and path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT)) or "."
    return text


def next_commands(work: Path) -> list[str]:
    """What a user runs next on smoke's own artifacts, as they would type it at the repository's root."""
    w = shown_path(work)
    model = f"--model {w}/tiny-llama --adapters {w}/adapters"
    return [
        f".venv/bin/python analyze.py --paper 2401.00001 --papers {w}/papers.json --papers-dir {w}/papers {model} "
        f"--tokenizer {w}/tiny-llama --max-tokens 32 --out {w}/reports/2401.00001.md",
        f".venv/bin/python evaluate.py {model} --data {w}/data --out {w}/reports --max-tokens 64",
    ]


def losses(output: str) -> tuple[list[float], list[float]]:
    """Train and validation losses from mlx_lm lora's report table: "  2   6.61   ..." and "  4   val 6.57"."""
    lines = ANSI.sub("", output).splitlines()
    val = [float(m[1]) for line in lines if (m := re.match(r"^\s*\d+\s+val\s+(\S+)", line))]
    train = [float(m[1]) for line in lines if (m := re.match(r"^\s*\d+\s+(-?\d+\.\d+|nan|inf)\s", line))]
    return train, val


def generated_tokens(output: str) -> int:
    match = re.search(r"Generation: (\d+) tokens", ANSI.sub("", output))
    return int(match[1]) if match else 0


def run_smoke(work: Path, personas_file: Path = DEFAULT_FILE) -> dict:
    """Run steps 1-5 in `work` for every persona of `personas_file`; return what a caller checks: outputs per
    persona and the command log."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    # Every command runs at the repository's root with its paths into `work`, so the log shows each one as a
    # user would type it there, and each output under the folder it really went to.
    log: list[str] = [f"BLAS: {use_fast_blas()}"]
    print(log[0] + "\n", flush=True)
    data = work / "data"
    py = sys.executable
    model = build_tiny_llama(work / "tiny-llama")
    papers = [
        FakePaper(f"2401.0000{i}", title, ["cs.LG"], f"2024-01-0{i + 1}T00:00:00Z", make_paper_pdf(title, topic))
        for i, (title, topic) in enumerate(TOPICS)
    ]
    with FakeArxiv(papers) as arxiv:
        run(
            [
                py,
                ROOT / "paperExtractor.py",
                "--categories",
                "cs.LG",
                "--per-category",
                "3",
                "--api-url",
                arxiv.api_url,
                "--api-delay",
                "0",
                "--out",
                work / "papers.json",
                "--papers-dir",
                work / "papers",
            ],
            ROOT,
            log,
        )
    generate_rows(work, model, personas_file, log)
    trim_and_split(work, model, personas_file, log)
    result = {"log": log, "personas": {}}
    for persona in load_personas(personas_file):
        result["personas"][persona.name] = train_adapter(work, model, persona, log)
    started = time.monotonic()
    run(
        [py, ROOT / "evaluate.py", "--model", model, "--adapters", work / "adapters", "--data", data]
        + ["--personas-file", personas_file, "--out", work / "reports", "--max-tokens", "64"],
        ROOT,
        log,
    )
    result["evaluate_seconds"] = time.monotonic() - started
    result["report"] = work / "reports" / "eval.md"
    return result


def generate_rows(work: Path, model: Path, personas_file: Path, log: list[str]) -> None:
    """Step 2 on WORK/papers.json into WORK/data. The default teacher, Gemini, as a loopback server speaking its
    API (tests/fake_gemini.py) through the real google-genai client. Not the tiny model as its own teacher: its
    noise is what the quality gate exists to refuse, and it does (tests/test_local_mlx.py); a real model as
    teacher is tests/test_real_model.py."""
    with FakeGemini(api_key=SMOKE_KEY) as gemini:
        run(
            [sys.executable, ROOT / "sdg.py", "--papers", work / "papers.json", "--out-dir", work / "data"]
            + ["--base-url", gemini.base_url, "--rpm", "0", "--tokenizer", model, "--personas-file", personas_file],
            ROOT,
            log,
            env={"GEMINI_API_KEY": SMOKE_KEY},
        )


def trim_and_split(work: Path, model: Path, personas_file: Path, log: list[str]) -> None:
    """Steps 3 and 4 for every persona of the file."""
    data, py, personas = work / "data", sys.executable, load_personas(personas_file)
    trim = [persona_rows_path(data, persona.name) for persona in personas]
    run([py, ROOT / "trim_jsonl.py", *trim, "--tokenizer", model, "--personas-file", personas_file], ROOT, log)
    split = [trimmed_path(data, persona.name, MAX_TOKENS) for persona in personas]
    run([py, ROOT / "split_data.py", *split, "--personas-file", personas_file], ROOT, log)


def train_adapter(work: Path, model: Path, persona, log: list[str]) -> dict:
    """Step 5 for one persona as `make train` runs it (mlx_lm lora under paper_personas.training, which keeps the
    best checkpoint), with the repository's config as is: only what a 2-layer random model on a CPU needs
    differs. Then `mlx_lm generate` with the adapter. Returns what problems() checks."""
    py, adapters = sys.executable, work / "adapters" / persona.name
    train = run(
        [py, "-m", "paper_personas.training", "--adapter-path", adapters, "--"]
        + [py, "-m", "mlx_lm", "lora", "--config", ROOT / "adapter_config.json", "--model", model]
        + ["--data", split_dir(work / "data", persona.name, MAX_TOKENS), "--adapter-path", adapters]
        + ["--num-layers", "2", "--iters", str(SMOKE_ITERS), "--steps-per-eval", str(SMOKE_ITERS)]
        + ["--save-every", str(SMOKE_ITERS), "--steps-per-report", "2", "--val-batches", "2"],
        ROOT,
        log,
        env={"WANDB_MODE": "offline"},
    )
    generated = run(
        [py, "-m", "mlx_lm", "generate", "--model", model, "--adapter-path", adapters]
        + ["--prompt", persona.user_message("Hash tables."), "--max-tokens", "8"],
        ROOT,
        log,
    )
    train_losses, val_losses = losses(train)
    return {
        "train_losses": train_losses,
        "val_losses": val_losses,
        "truncation_warning": "longer than" in train,
        "adapter": adapters / "adapters.safetensors",
        "wandb_runs": sorted(adapters.glob("wandb/offline-run-*")),
        # Random weights decode to arbitrary tokens, often whitespace: count what mlx_lm says it generated.
        "generated_tokens": generated_tokens(generated),
    }


def load_result(work: Path) -> dict:
    """The result a finished `make smoke` left in WORK/smoke_result.json, with its paths as paths again."""
    result = json.loads((work / "smoke_result.json").read_text())
    result["report"] = Path(result["report"])
    for r in result["personas"].values():
        r["adapter"], r["wandb_runs"] = Path(r["adapter"]), [Path(p) for p in r["wandb_runs"]]
    return result


def problems(result: dict) -> list[str]:
    """Everything the smoke run must show, as a list of what is missing (empty when all is well)."""
    found = [] if result["report"].exists() else [f"no evaluation report {result['report']}"]
    for persona, r in result["personas"].items():
        if not r["adapter"].exists():
            found.append(f"{persona}: no {r['adapter']}")
        if not r["adapter"].with_name("best.json").exists():
            found.append(f"{persona}: no best.json beside the adapter (the kept checkpoint is not recorded)")
        if not r["wandb_runs"]:
            found.append(f"{persona}: no offline wandb run folder")
        if not r["train_losses"] or not r["val_losses"]:
            found.append(f"{persona}: no train or validation loss reported")
        if not all(math.isfinite(x) for x in r["train_losses"] + r["val_losses"]):
            found.append(f"{persona}: a loss is not finite: {r['train_losses']} {r['val_losses']}")
        if r["truncation_warning"]:
            found.append(f"{persona}: the trainer truncated sequences")
        if r["generated_tokens"] < 1:
            found.append(f"{persona}: mlx_lm generate produced no text with the adapter")
    return found


def main() -> int:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".smoke"
    started = time.monotonic()
    try:
        result = run_smoke(work)
    except StepFailed as e:
        print(f"smoke: stopped after {time.monotonic() - started:.0f} s: {e}", file=sys.stderr)
        return 1
    missing = problems(result)
    summary = {
        p: {"train_loss": r["train_losses"][-1:], "val_loss": r["val_losses"][-1:]}
        for p, r in result["personas"].items()
    }
    print(
        f"\nsmoke: {len(result['personas'])} adapters in {time.monotonic() - started:.0f} s {json.dumps(summary)}; "
        f"three-system report in {result['evaluate_seconds']:.0f} s -> {result['report']}"
    )
    (work / "smoke_result.json").write_text(json.dumps(result, default=str, indent=1))  # for the tests
    for problem in missing:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not missing:
        print(
            f"\nEverything above is in {shown_path(work)}/. Next, on what smoke made (its random model answers noise):"
        )
        print("\n".join(f"  {command}" for command in next_commands(work)))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
