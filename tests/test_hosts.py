"""Step 5 on several machines (paper_personas/hosts.py, `make train HOSTS=...`): the batch-size check, and two
ranks under mlx.launch training as one process does, here as two local ranks on the ring backend."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from smoke import ANSI, losses

from paper_personas.blas import preload_env
from paper_personas.hosts import batch_problem

# One worker runs every test that needs the session's smoke run, so `make smoke` runs once.
pytestmark = pytest.mark.xdist_group("smoke")

LOCAL = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}  # mlx.launch runs a 127.0.0.1 host without ssh


@pytest.mark.parametrize("batch_size, hosts, ok", [(2, 2, True), (4, 2, True), (2, 3, False), (3, 2, False)])
def test_the_batch_must_divide_among_the_hosts(tmp_path, batch_size, hosts, ok):
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps({"hosts": [LOCAL] * hosts}))
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({**json.loads((ROOT / "adapter_config.json").read_text()), "batch_size": batch_size}))
    result = subprocess.run(
        [sys.executable, "-m", "paper_personas.hosts", str(hostfile), str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert (result.returncode == 0) == ok and "Traceback" not in result.stderr
    if not ok:
        assert f"batch_size {batch_size} does not divide among the {hosts} hosts of {hostfile}" in result.stderr
        assert "Set batch_size in adapter_config.json to a multiple of" in result.stderr
    assert batch_problem(batch_size, hosts, hostfile) is None if ok else batch_problem(batch_size, hosts, hostfile)


@pytest.mark.slow
def test_two_ranks_train_as_one_process_does(smoke_run, tmp_path):
    """Same global batch (2), seed and data: two ranks each take one row of every batch and average gradients,
    which is the full batch's mean gradient. The validation losses agree to the 3 decimals mlx_lm prints, up to
    float rounding in the all-reduce: within 0.002."""
    import mlx_lm

    work, _ = smoke_run
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps({"hosts": [LOCAL, LOCAL]}))
    train = [sys.executable, "-m", "mlx_lm", "lora", "--config", str(ROOT / "adapter_config.json")]
    train += ["--model", str(work / "tiny-llama"), "--data", str(work / "data" / "eli5_2048"), "--iters", "4"]
    train += ["--steps-per-eval", "4", "--steps-per-report", "2", "--val-batches", "2", "--num-layers", "2"]
    train += ["--report-to", ""]  # no wandb here: its start-up is most of a 4-step run
    env = {**os.environ, **preload_env(), "WANDB_MODE": "offline"}
    launch = [str(Path(sys.executable).parent / "mlx.launch"), "--hostfile", str(hostfile), "--backend", "ring"]
    runs = {}
    for name, prefix in (("one", []), ("two", [*launch, "--env", "WANDB_MODE=offline", "--"])):
        adapters = tmp_path / name
        result = subprocess.run(
            [*prefix, *train, "--adapter-path", str(adapters)], capture_output=True, text=True, timeout=300, env=env
        )
        assert result.returncode == 0, ANSI.sub("", result.stdout[-2000:] + result.stderr[-2000:])
        runs[name] = losses(result.stdout + result.stderr)[1]
        mlx_lm.load(str(work / "tiny-llama"), adapter_path=str(adapters))  # the adapter loads
    one, two = runs["one"], runs["two"]
    assert len(one) == len(two) == 2 and all(abs(a - b) <= 0.002 for a, b in zip(one, two, strict=True)), runs
