import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the scripts and the test helpers import as top-level modules

# Tests never talk to the real services, even by accident.
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("GEMINI_API_KEY", None)
os.environ.pop("GOOGLE_API_KEY", None)
