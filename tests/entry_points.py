"""The entry points as users run them: ``python experiments/<script> args...`` in a subprocess, output
captured as text. One helper for every end-to-end test."""

import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from lib.paths import PROJECT_ROOT
from lib.tracking import create_sqlite_store

EXPERIMENTS = PROJECT_ROOT / "experiments"


def command(script: str, *args) -> list[str]:
    """``[python, experiments/<script>, *args]``, e.g. ``command("train.py", "--multirun", "loss=ce,focal")``;
    a script named with its folder (``benchmarks/throughput.py``) is found from the project root."""
    path = PROJECT_ROOT / script if "/" in script else EXPERIMENTS / script
    return [sys.executable, str(path), *map(str, args)]


def run_entry_point(script: str, *args, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the script ``command`` names with ``args``; ``kwargs`` go to subprocess.run (cwd, env)."""
    return subprocess.run(command(script, *args), capture_output=True, text=True, timeout=timeout, **kwargs)


def polled_store(outputs: Path) -> MlflowClient:
    """A client of the SQLite store under ``outputs`` for a test that reads it while a run may still be
    creating it: opened under the runs' lock (lib.tracking), since two processes creating one store at
    once fail, all but one."""
    uri = f"sqlite:///{outputs}/mlflow.db"
    create_sqlite_store(uri)
    return MlflowClient(uri)


# A tiny_bert run on the toy set that lasts ~400 steps of batch 8: long enough to be interrupted after
# a logged step (tests/test_resume.py, tests/test_slurm.py).
INTERRUPTIBLE_RUN = [
    "model=tiny_bert",
    "data=csv",
    "trainer.epochs=2",
    "trainer.batch_size=8",
    "trainer.log_every_steps=5",
    "schedule.lr=1e-3",
    "tracking.log_model=false",
    "extra_eval=null",
]
