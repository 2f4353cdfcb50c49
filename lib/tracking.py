"""cfg.tracking -> one MLflow run per job: flattened config as params, provenance tags,
metrics, artifacts, and an end status that tells the truth (FINISHED / FAILED / KILLED)."""
from __future__ import annotations

import logging
import platform
import subprocess
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import mlflow
from omegaconf import OmegaConf

from lib.paths import PROJECT_ROOT

MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
# Alembic logs every schema migration of a new SQLite store at INFO level.
logging.getLogger("alembic").setLevel(logging.WARNING)


def tracking_uri(cfg) -> str:
    return cfg.tracking.uri or f"sqlite:///{Path(cfg.paths.outputs).resolve()}/mlflow.db"


def redact(uri: str) -> str:
    """Drop user:password from a URI before it is written anywhere."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def flatten(node, prefix: str = "") -> dict[str, str]:
    """{"loss": {"gamma": 2.0}} -> {"loss.gamma": "2.0"}; lists stay one value."""
    flat: dict[str, str] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def config_params(cfg) -> dict[str, str]:
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    if params.get("tracking.uri") not in (None, "None"):
        params["tracking.uri"] = redact(params["tracking.uri"])
    return params


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance_tags(overrides: list[str], output_dir: Path) -> dict[str, str]:
    import hydra
    import torch
    import transformers

    dirty = _git("status", "--porcelain")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": str(dirty not in ("", "unknown")).lower(),
        "hydra_overrides": " ".join(overrides) or "(none)",
        "output_dir": str(output_dir),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mlflow": mlflow.__version__,
        "hydra": hydra.__version__,
        "host": platform.node(),
    }


def experiment_id(cfg) -> str:
    """Id of cfg.tracking.experiment, created (artifacts beside a SQLite store) when missing."""
    name = cfg.tracking.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if tracking_uri(cfg).startswith("sqlite:"):  # keep artifacts beside the store, not in ./mlruns
        artifacts = (Path(cfg.paths.outputs).resolve() / "mlartifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts)
    except mlflow.exceptions.MlflowException:  # another job created it meanwhile
        return mlflow.get_experiment_by_name(name).experiment_id


@contextmanager
def mlflow_run(cfg, tags: dict[str, str], default_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a run with the config as params; end it FINISHED, or FAILED / KILLED with the traceback."""
    Path(cfg.paths.outputs).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    name = cfg.tracking.run_name or default_name
    run = mlflow.start_run(experiment_id=experiment_id(cfg), run_name=name, tags=tags)
    try:
        mlflow.log_params(config_params(cfg))
        yield run
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        if isinstance(err, SystemExit) and not err.code:
            status = "FINISHED"
        mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:MAX_PARAM_CHARS])
        mlflow.log_text("".join(traceback.format_exception(*sys.exc_info())), "error/traceback.txt")
        mlflow.end_run(status)
        raise
    mlflow.end_run("FINISHED")
