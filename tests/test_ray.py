"""paperExtractor.py --ray: step 1 as Ray tasks on a real local Ray instance (ray.init(num_cpus=2), as the script
starts it), with the guarantees of the process pool: the same papers.json byte for byte, a killed worker retried
and nothing lost or counted twice, Ctrl-C in seconds keeping finished papers, and a rerun that skips them."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import free_port, run_script
from pdfs import make_encrypted_pdf, make_paper_pdf

# One worker runs them all: each starts a Ray instance, and two at once on 2 cores would time each other out.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

TASK_TITLE = "ray::extract_task"  # Ray sets a worker's process title to the task it runs


def write_pdfs(folder: Path, n: int, encrypted: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"paper{i:02d}.pdf").write_bytes(make_paper_pdf(f"Paper {i}", f"Topic {i}"))
    if encrypted:
        (folder / "locked.pdf").write_bytes(make_encrypted_pdf())
    return folder


def step1_args(out: str, papers: str | Path, *extra: str) -> list[str]:
    return ["--pdf-dir", "in", "--out", out, "--papers-dir", str(papers), "--workers", "2", *extra]


def command(out: str, papers: str | Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "paperExtractor.py"), *step1_args(out, papers, *extra)]


def run(cwd: Path, out: str, papers: str | Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    return run_script("paperExtractor.py", *step1_args(out, papers, *extra), cwd=cwd, env=env, timeout=300)


def figures(papers: Path) -> dict[str, bytes]:
    return {str(p.relative_to(papers)): p.read_bytes() for p in sorted((papers / "images").rglob("*.png"))}


def task_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(TASK_TITLE.encode()):
                pids.append(int(entry.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def test_ray_writes_the_same_papers_json_and_figures_as_the_pool_and_a_rerun_skips(tmp_path):
    write_pdfs(tmp_path / "in", 4, encrypted=True)
    pool = run(tmp_path, "pool.json", "papers")
    assert pool.returncode == 0, pool.stderr[-2000:]
    pool_figures = figures(tmp_path / "papers")
    assert len(pool_figures) == 4  # one figure per generated paper: the figure links are compared too
    (tmp_path / "papers" / "images").rename(tmp_path / "pool-images")  # Ray must write them itself

    ray = run(tmp_path, "ray.json", "papers", "--ray")
    assert ray.returncode == 0 and "Traceback" not in ray.stderr, ray.stderr[-3000:]
    assert "extracting on a local Ray instance (2 CPUs)" in ray.stderr
    assert "done: 4 ok, 1 failed, 0 skipped" in ray.stdout
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "pool.json").read_bytes()
    assert figures(tmp_path / "papers") == pool_figures
    failure = json.loads((tmp_path / "ray.json").read_text())["failures"][0]
    assert failure["id"] == "locked" and "encrypted PDF" in failure["reason"]  # extract_paper's reason, as is

    rerun = run(tmp_path, "ray.json", "papers", "--ray")
    assert rerun.returncode == 0 and "done: 0 ok, 1 failed, 4 skipped" in rerun.stdout, rerun.stderr[-2000:]
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "pool.json").read_bytes()


def test_a_killed_worker_is_retried_and_every_paper_ends_up_there_exactly_once(tmp_path):
    """Absolute paths this time (figure links outside the working folder are absolute): the killed run must still
    give the pool's papers.json."""
    write_pdfs(tmp_path / "in", 5)
    papers = tmp_path / "papers"
    assert run(tmp_path, "pool.json", papers).returncode == 0
    proc = subprocess.Popen(
        command("ray.json", papers, "--ray"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        if pids := task_pids():
            os.kill(pids[0], signal.SIGKILL)  # mid-extraction: the process title is set while the task runs
            killed = pids[0]
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no Ray worker was seen running a task"
    assert proc.returncode == 0 and "done: 5 ok, 0 failed, 0 skipped" in stdout, stderr[-3000:]
    data = json.loads((tmp_path / "ray.json").read_text())
    assert sorted(p["id"] for p in data["papers"]) == [f"paper{i:02d}" for i in range(5)] and data["failures"] == []
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "pool.json").read_bytes()


def test_a_worker_that_keeps_dying_is_a_recorded_failure_with_its_reason(tmp_path):
    write_pdfs(tmp_path / "in", 1)
    proc = subprocess.Popen(
        command("p.json", "papers", "--ray"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed: set[int] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        for pid in set(task_pids()) - killed:  # every attempt at the one paper: the first and Ray's retries
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    failure = json.loads((tmp_path / "p.json").read_text())["failures"][0]
    assert failure["id"] == "paper00" and failure["stage"] == "extract"
    assert "the Ray worker died while extracting it, 3 times" in failure["reason"]
    assert len(killed) == 3  # the first attempt and paper_personas.ray_extraction.RETRIES (2) retries


def test_ctrl_c_cancels_the_tasks_in_seconds_keeps_finished_papers_and_the_rerun_does_the_rest(tmp_path):
    write_pdfs(tmp_path / "in", 8)
    proc = subprocess.Popen(
        command("p.json", "papers", "--ray"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    store = tmp_path / "p.records"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (store.is_dir() and any(store.glob("*.json"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    seconds = time.monotonic() - interrupted
    assert proc.returncode == 1 and "interrupted:" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert seconds < 15, seconds  # tasks cancelled and Ray stopped, not the queue drained
    time.sleep(1)
    assert task_pids() == []  # no worker goes on extracting
    saved = {p["id"] for p in json.loads((tmp_path / "p.json").read_text())["papers"]}
    assert 1 <= len(saved) < 8
    rerun = run(tmp_path, "p.json", "papers", "--ray")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"done: {8 - len(saved)} ok, 0 failed, {len(saved)} skipped" in rerun.stdout


def test_a_task_over_the_time_cap_is_a_failure_not_a_hang(tmp_path):
    write_pdfs(tmp_path / "in", 1)
    result = run(tmp_path, "p.json", "papers", "--ray", "--timeout", "0.01")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    failure = json.loads((tmp_path / "p.json").read_text())["failures"][0]
    assert "timed out after 0.01 s" in failure["reason"]


def test_without_ray_or_a_cluster_the_message_says_what_to_do(tmp_path, monkeypatch):
    write_pdfs(tmp_path / "in", 1)
    monkeypatch.chdir(tmp_path)
    dead = run(tmp_path, "p.json", "papers", "--ray", "127.0.0.1:9")  # nothing listens on the discard port
    assert dead.returncode == 1 and "--ray 127.0.0.1:9: nothing answers there" in dead.stderr
    assert "Traceback" not in dead.stderr and not (tmp_path / "p.json").exists()  # stopped before any work
    # As if Ray were not installed: a module of that name that fails to import, first on the path.
    (tmp_path / "no_ray").mkdir()
    (tmp_path / "no_ray" / "ray.py").write_text("raise ImportError('No module named ray')\n")
    missing = run_script(
        "paperExtractor.py", "--pdf-dir", "in", "--out", "p.json", "--papers-dir", "papers", "--ray",
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "no_ray")},
    )  # fmt: skip
    assert missing.returncode == 1 and "--ray needs Ray: pip install -r requirements-ray.txt" in missing.stderr


@pytest.fixture
def ray_head(tmp_path):
    """A one-node Ray cluster as `ray start --head` makes it (token authentication on), bound to loopback."""
    port = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port)]
        + ["--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"127.0.0.1:{port}", env
    head.send_signal(signal.SIGTERM)  # --block: the head stops its processes on SIGTERM
    head.wait(timeout=60)


def test_on_a_cluster_at_an_address_the_package_travels_and_the_output_is_the_same(tmp_path, ray_head):
    address, env = ray_head
    write_pdfs(tmp_path / "in", 3)
    assert run(tmp_path, "pool.json", "papers").returncode == 0
    (tmp_path / "papers").rename(tmp_path / "pool-papers")
    result = run(tmp_path, "ray.json", "papers", "--ray", address, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"extracting on the Ray cluster at {address} (2 CPUs)" in result.stderr
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "pool.json").read_bytes()
    assert figures(tmp_path / "papers") == figures(tmp_path / "pool-papers")


def test_without_an_address_a_new_local_instance_starts_even_beside_a_running_cluster(tmp_path, ray_head):
    """Plain ray.init() would join the cluster `ray start` left here, and refuse the CPU count."""
    write_pdfs(tmp_path / "in", 1)
    result = run(tmp_path, "p.json", "papers", "--ray")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting on a local Ray instance (2 CPUs)" in result.stderr
