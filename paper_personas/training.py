"""Step 5 around `mlx_lm.lora`: the base model checked before anything starts, the validation losses read as it
trains (with an optional early stop), and the checkpoint with the lowest validation loss kept.

mlx_lm stays the trainer. Its command trains and saves a checkpoint at every evaluation (save_every equal to
steps_per_eval, as configs/ set it); this module watches its output and chooses among the checkpoints afterwards.
mlx_lm itself keeps the last weights, whatever the validation loss did (its pull requests for a best checkpoint,
#331, #509 and #1665, were never merged).

mlx_lm measures the validation loss at the start of an iteration, one optimizer step before it saves the
checkpoint of the same number, and with val_batches below the whole set on a random subset drawn anew each time;
so every checkpoint's loss is measured again here, with mlx_lm's own evaluate() on the same batches for every
checkpoint, and the number recorded beside the kept weights is the loss of those weights. A recipe that can afford
it validates on the whole set (val_batches -1, as configs/smollm2-135m.json does).

    $ python -m paper_personas.training --check-model MODEL      # local folder, cached, or reachable?
    $ python -m paper_personas.training --adapter-path adapters/eli5 [--patience 3] -- mlx_lm.lora --config ...

Writes, in the adapter folder: adapters.safetensors (the best checkpoint), last_adapters.safetensors (mlx_lm's
final weights) and best.json (the kept step, its loss, every checkpoint's loss and what mlx_lm reported).
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from paper_personas.blas import preload_env, signal_name, use_fast_blas
from paper_personas.cli import InputError, die, stop_on_sigterm
from paper_personas.files import safetensors_complete, write_json
from paper_personas.models import ADAPTER_FILE, local_path_problem

LAST = "last_adapters.safetensors"
BEST = "best.json"
CHECKPOINT = re.compile(r"^(\d{7})_adapters\.safetensors$")  # mlx_lm's "{step:07d}_adapters.safetensors"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# mlx_lm's report table: "    50    val 2.257    1.20s" and "    10    2.968 ▼      431     1.2k".
VAL_ROW = re.compile(r"^\s*(\d+)\s+val\s+(\d+\.\d+|nan|inf)\b")
TRAIN_ROW = re.compile(r"^\s*(\d+)\s+(\d+\.\d+|nan|inf)\s+\S+\s+([\d,.]+)\s+[\d.]+k\s*$")
HUB = "https://huggingface.co"


# ----------------------------------------------------------------------------- the base model, before training


def model_problem(model: str) -> str | None:
    """Why mlx_lm could not load `model` here, or None: a local folder must hold config.json; a Hugging Face id
    must be in the local cache or the hub must be reachable (mlx_lm downloads gigabytes before it reads any data,
    and offline it ends in a long traceback)."""
    local = "make train MODEL=path/to/a/local/model, or pass --model the folder"
    if problem := local_path_problem(model):
        return f"{problem}; {local}"
    if Path(model).expanduser().exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return f"{model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {local}"
    from paper_personas.teachers.base import unreachable

    if problem := unreachable(HUB):
        return f"{model} is not a local folder nor in the Hugging Face cache, and {problem.split(':')[0]}; {local}"
    return None


# ----------------------------------------------------------------------------- watching mlx_lm (pure)


@dataclass
class Watch:
    """What mlx_lm reported so far: validation losses by the number of steps behind them, training tokens/s."""

    patience: int = 0  # evaluations without a new best before stopping; 0 = never stop early
    val: dict[int, float] = field(default_factory=dict)
    tokens_per_s: list[float] = field(default_factory=list)

    def read(self, line: str) -> None:
        line = ANSI.sub("", line)
        if m := VAL_ROW.match(line):
            self.val[int(m[1]) - 1] = finite(float(m[2]))  # measured at the start of iteration N: after N - 1 steps
        elif m := TRAIN_ROW.match(line):
            self.tokens_per_s.append(float(m[3].replace(",", "")))

    def should_stop(self) -> bool:
        """patience evaluations in a row, after the first, without a loss below the best before them."""
        losses = [loss for _, loss in sorted(self.val.items())]
        if self.patience <= 0 or len(losses) <= self.patience:
            return False
        best_before = min(losses[: -self.patience])
        return min(losses[-self.patience :]) >= best_before


def finite(loss: float) -> float:
    """A loss to compare: nan (a diverged run) is worse than any number."""
    return math.inf if math.isnan(loss) else loss


def checkpoints(folder: Path) -> dict[int, Path]:
    """mlx_lm's whole numbered checkpoints in an adapter folder, by step (one cut short by a kill is left out)."""
    found = {int(m[1]): p for p in sorted(folder.glob("*_adapters.safetensors")) if (m := CHECKPOINT.match(p.name))}
    return {step: path for step, path in found.items() if safetensors_complete(path)}


def best_of(losses: dict[int, float]) -> int:
    """The step with the lowest loss; the earlier one on a tie (fewer steps away from the base)."""
    return min(losses, key=lambda step: (finite(losses[step]), step))


# ----------------------------------------------------------------------------- measuring and keeping


def measure(config: dict, files: dict[int, Path]) -> dict[int, float]:
    """Each checkpoint's validation loss, with mlx_lm's own dataset and evaluate() and the run's settings (its
    adapter_config.json): the same batches mlx_lm validated on."""
    import types

    use_fast_blas()  # before mlx is imported
    import mlx_lm
    import numpy as np
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import evaluate
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, tokenizer = mlx_lm.load(config["model"])
    model.freeze()
    if config.get("fine_tune_type", "lora") in ("lora", "dora"):
        dora = config.get("fine_tune_type") == "dora"
        linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"], use_dora=dora)
    _, valid, _ = load_dataset(types.SimpleNamespace(**config), tokenizer)
    valid = CacheDataset(valid)
    losses = {}
    for step, path in sorted(files.items()):
        model.load_weights(str(path), strict=False)
        # mlx_lm's batches come in an order drawn from NumPy's global generator, at every evaluation: with
        # val_batches below the whole set, each of its evaluations scores another subset. The same seed before
        # each checkpoint makes every checkpoint scored on the same batches.
        np.random.seed(config.get("seed", 0))
        loss = evaluate(model, valid, config["batch_size"], config["val_batches"], config["max_seq_length"])
        losses[step] = float(loss)
        print(f"checkpoint {step:>5}: val {losses[step]:.4f}", file=sys.stderr, flush=True)
    return losses


def keep_best(folder: Path, watch: Watch, stopped_early: bool) -> dict:
    """Measure every checkpoint, put the best in adapters.safetensors (mlx_lm's last weights stay in
    last_adapters.safetensors) and record it in best.json; return the record."""
    config = json.loads((folder / "adapter_config.json").read_text())
    files = checkpoints(folder)
    if stopped_early:  # mlx_lm's last save was its last numbered checkpoint
        last_step = max(files)
        shutil.copyfile(files[last_step], folder / LAST)
    else:  # its final save, after the last iteration, is adapters.safetensors
        last_step = int(config["iters"])
        shutil.copyfile(folder / ADAPTER_FILE, folder / LAST)
        files[last_step] = folder / LAST
    losses = measure(config, files)
    best = best_of(losses)
    tmp = folder / f".{ADAPTER_FILE}.tmp"
    shutil.copyfile(files[best], tmp)
    os.replace(tmp, folder / ADAPTER_FILE)
    record = {
        "step": best,
        "val_loss": losses[best],
        "last_step": last_step,
        "stopped_early": stopped_early,
        "val_loss_by_step": {str(k): v for k, v in sorted(losses.items())},
        "reported_by_mlx_lm": {str(k): v for k, v in sorted(watch.val.items())},  # k = steps behind the loss
        "training_tokens_per_s": watch.tokens_per_s,
    }
    write_json(folder / BEST, record)
    return record


def clear_previous(folder: Path) -> None:
    """A new run's checkpoints must not be mixed with an earlier run's (a shorter run leaves later ones)."""
    for path in [*checkpoints(folder).values(), folder / LAST, folder / BEST]:
        path.unlink(missing_ok=True)


def follow(process: subprocess.Popen, watch: Watch, patience: int) -> bool:
    """Show the trainer's output as it comes and read its reports; stop it early when the watch says so.
    Returns whether it was stopped early."""
    stopped_early = False
    for line in process.stdout:
        if stopped_early:
            continue  # its KeyboardInterrupt traceback: the stop was ours
        sys.stdout.write(ANSI.sub("", line))
        sys.stdout.flush()
        watch.read(line)
        if watch.should_stop():
            stopped_early = True
            print(f"early stop: {patience} evaluations without a lower validation loss", flush=True)
            # SIGINT, not SIGTERM: Python takes it between bytecodes, so a checkpoint being saved is saved whole.
            process.send_signal(signal.SIGINT)
    process.wait()
    return stopped_early


def train(command: list[str], folder: Path, patience: int) -> int:
    """Run mlx_lm's training command, showing its output as it comes; stop it early when asked; keep the best."""
    folder.mkdir(parents=True, exist_ok=True)
    clear_previous(folder)
    watch = Watch(patience)
    env = {**os.environ, **preload_env(), "PYTHONUNBUFFERED": "1"}
    if env.get("WANDB_MODE") == "offline":
        env.setdefault("WANDB_SILENT", "true")  # six lines per run, a git warning among them; the run is kept
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as e:
        raise InputError(f"cannot run {command[0]}: {e.strerror}; is the venv set up (make venv)?") from None
    try:
        stopped_early = follow(process, watch, patience)
    finally:
        if process.poll() is None:  # Ctrl-C or SIGTERM here: the trainer stops too, not left running alone
            process.send_signal(signal.SIGINT)
            process.wait()
    code = process.returncode
    if stopped_early and not checkpoints(folder):
        raise InputError("stopped early before mlx_lm saved a checkpoint: set save_every to steps_per_eval")
    if code != 0 and not stopped_early:
        how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited {code}"
        raise InputError(f"{' '.join(command[:2])} {how}; its output is above. Nothing was kept in {folder}/")
    record = keep_best(folder, watch, stopped_early)
    print(
        f"{folder}: kept step {record['step']:,} of {record['last_step']:,} (val loss {record['val_loss']:.3f}; "
        f"last step {record['val_loss_by_step'][str(record['last_step'])]:.3f}) -> {folder / ADAPTER_FILE}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-model", metavar="MODEL", help="only check that MODEL can be loaded here")
    parser.add_argument("--adapter-path", type=Path, help="the folder mlx_lm writes (its --adapter-path)")
    parser.add_argument(
        "--patience", type=int, default=0, help="stop after N evaluations without improvement; 0 = never (default 0)"
    )
    args = parser.parse_args(own)
    stop_on_sigterm()
    if args.check_model is not None:
        if problem := model_problem(args.check_model):
            die(f"the base model: {problem}")
        return 0
    if not command or args.adapter_path is None:
        parser.error("give --adapter-path and the training command after --")
    try:
        return train(command, args.adapter_path, args.patience)
    except InputError as e:
        die(str(e))
    except KeyboardInterrupt:
        die(f"interrupted: {args.adapter_path}/ holds mlx_lm's checkpoints so far; rerun to train again")


if __name__ == "__main__":
    sys.exit(main())
