"""cfg.tracking -> one MLflow run per job: flattened config as params, provenance tags,
metrics, artifacts, and an end status that tells the truth (FINISHED / FAILED / KILLED)."""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from omegaconf import OmegaConf

from lib.errors import ConfigError, TrainingInterrupted
from lib.paths import PROJECT_ROOT

ROLE_TAG = "titlesweep.role"  # what a run is: "sweep" (a parent), "job" (its child), "eval" (evaluate.py)
NOTE_TAG = "mlflow.note.content"  # a run's description: rendered as markdown on its page in the UI
# Without this experiment tag MLflow 3's UI opens an experiment in its GenAI view (an empty traces page).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
# Alembic logs every schema migration of a new SQLite store at INFO level.
logging.getLogger("alembic").setLevel(logging.WARNING)


# A tracking server that stops answering must fail a run in seconds, not after MLflow's default
# minutes of retries; a user's own environment settings win.
REMOTE_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def tracking_uri(cfg) -> str:
    """cfg.tracking.uri (a server, checked to answer) or the SQLite store under paths.outputs."""
    uri = cfg.tracking.uri or f"sqlite:///{Path(cfg.paths.outputs).resolve()}/mlflow.db"
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    return uri


@functools.cache
def _check_server(uri: str) -> None:
    """One quick GET of the server's /health endpoint per process."""
    for key, value in REMOTE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    parts = urlsplit(redact(uri))
    health = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=5) as answer:
            answer.read()
    except urllib.error.HTTPError:
        return  # it answered: a server (perhaps behind a proxy without /health)
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            f"tracking.uri={redact(uri)}: the MLflow tracking server does not answer ({reason}); "
            "start it (README: Team set-up) or leave tracking.uri unset for the local store"
        ) from None


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
    params.pop("trainer.resume", None)  # differs between an interrupted job and its resumption; a tag instead
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
        if not set(EXPERIMENT_KIND) & set(experiment.tags):  # made by an older version or by hand
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return experiment.experiment_id
    artifacts = None
    if tracking_uri(cfg).startswith("sqlite:"):  # keep artifacts beside the store, not in ./mlruns
        artifacts = (Path(cfg.paths.outputs).resolve() / "mlartifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_KIND)
    except mlflow.exceptions.MlflowException:  # another job created it meanwhile
        return mlflow.get_experiment_by_name(name).experiment_id


@contextmanager
def mlflow_run(
    cfg, tags: dict[str, str], default_name: str | None = None, resume_run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start (or, resuming, reopen) a run with the config as params; end it FINISHED, FAILED with
    the traceback, or KILLED (interrupted: with the checkpoint's location when one was saved)."""
    Path(cfg.paths.outputs).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id, tags=tags)
    else:
        run = mlflow.start_run(
            experiment_id=experiment_id(cfg), run_name=cfg.tracking.run_name or default_name, tags=tags
        )
    try:
        mlflow.log_params(_params_to_log(config_params(cfg), run if resume_run_id else None))
        yield run
    except BaseException as err:
        _end_with_error(err)
        raise
    mlflow.end_run("FINISHED")


# How a run executes, not what it computes: these may differ between an interrupted run and its resumption.
RESUME_MAY_CHANGE = ("trainer.compile", "trainer.device", "trainer.num_threads", "trainer.num_workers")


def _params_to_log(params: dict[str, str], resumed=None) -> dict[str, str]:
    """All params for a new run. A resumed run already has them: MLflow refuses a changed value, so
    changed execution settings become a ``resumed_with`` tag and any other change is refused."""
    if resumed is None:
        return params
    logged = resumed.data.params
    changed = {k: v for k, v in params.items() if k in logged and logged[k] != v}
    refused = sorted(set(changed) - set(RESUME_MAY_CHANGE))
    if refused:
        raise ConfigError(
            f"trainer.resume: the interrupted run had {', '.join(f'{k}={logged[k]}' for k in refused)}; "
            "resume with the same settings (only " + ", ".join(RESUME_MAY_CHANGE) + " may change)"
        )
    if changed:
        mlflow.set_tag("resumed_with", " ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return {k: v for k, v in params.items() if k not in changed}


def _end_with_error(err: BaseException) -> None:
    from lib.checkpoint import CHECKPOINT_TAG  # here: it imports torch

    if isinstance(err, SystemExit) and not err.code:
        mlflow.end_run("FINISHED")
        return
    status = "KILLED" if isinstance(err, (TrainingInterrupted, KeyboardInterrupt)) else "FAILED"
    try:
        if isinstance(err, TrainingInterrupted):
            mlflow.set_tags({CHECKPOINT_TAG: str(err.path), "error": f"interrupted by {err.signal_name}"})
        else:
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:MAX_PARAM_CHARS])
            mlflow.log_text("".join(traceback.format_exception(err)), "error/traceback.txt")
    finally:
        # Even when the store does not answer (the error may be that): end_run takes the run off
        # MLflow's stack first, so MLflow's exit hook can never close it FINISHED. Left RUNNING on a
        # server that is away, a sweep's end marks it FAILED (lib/sweep.py).
        mlflow.end_run(status)
