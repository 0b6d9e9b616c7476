import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the scripts and the test helpers import as top-level modules

# Tests never talk to the real services, even by accident.
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("GEMINI_API_KEY", None)
os.environ.pop("GOOGLE_API_KEY", None)
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole chain once per test session: papers, data, a tiny Llama and three trained adapters."""
    from smoke import run_smoke

    work = tmp_path_factory.mktemp("smoke")
    return work, run_smoke(work)
