import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the scripts and the test helpers import as top-level modules

# A shell that starts the suite in the background hands it SIGINT ignored, and exec passes "ignored" on to every
# script a test runs, so the Ctrl-C tests would send a signal nobody hears. Python's own handler here means the
# children start with the default, as they do from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Tests never talk to the real services, even by accident.
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("GEMINI_API_KEY", None)
os.environ.pop("GOOGLE_API_KEY", None)
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)


import pytest  # noqa: E402

# Two pytest workers share 2 cores: an OpenBLAS with a thread per core in each would spin against the other's
# (a 27 s real-model test took 173 s so). One BLAS thread per worker, for its subprocesses too.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from paper_personas.blas import use_fast_blas  # noqa: E402

use_fast_blas()  # before any test imports mlx, as every script does: the suite trains and generates on OpenBLAS


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole chain once per test session, as a new user runs it: `make smoke` in a fresh copy of the
    repository (its files as committed or edited, not its outputs), sharing this venv. Returns the work folder,
    smoke's result and what `make smoke` printed."""
    import shutil
    import subprocess

    from helpers import run_make
    from smoke import load_result

    clone = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    listed = [name for name in listed if (ROOT / name).is_file()]  # not a file deleted since the last commit
    for name in listed:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    made = run_make("smoke", clone, timeout=900)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    work = clone / ".smoke"
    return work, {**load_result(work), "clone": clone, "stdout": made.stdout, "copied": listed}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """On a pytest-xdist worker, after xdist has tagged each grouped test's id with "@group": a test whose id lacks
    it would be scheduled apart from its group (pytest 9.2 did that silently: two workers then built the same
    cached model at once, and one test killed another's Ray workers). Stop rather than run so."""
    if not hasattr(config, "workerinput") or config.getvalue("dist") != "no" or not config.getvalue("loadgroup"):
        return
    ungrouped = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(f"xdist_group ignored by this pytest/pytest-xdist pair, e.g. {ungrouped[0]}")
