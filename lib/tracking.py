"""cfg.tracking -> one MLflow run per job: flattened config as params, provenance tags,
metrics, artifacts, and an end status that tells the truth (FINISHED / FAILED / KILLED)."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import platform
import re
import subprocess
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import mlflow
from omegaconf import OmegaConf

from lib.errors import ConfigError, TrainingInterrupted
from lib.paths import PROJECT_ROOT

ROLE_TAG = "titlesweep.role"  # what a run is: "sweep" (a parent), "job" (its child), "eval" (evaluate.py)
PRUNED_TAG = "pruned"  # "true" on a search trial's run that the pruner stopped (a valid, FINISHED partial run)
NOTE_TAG = "mlflow.note.content"  # a run's description: rendered as markdown on its page in the UI
# Without this experiment tag MLflow 3's UI opens an experiment in its GenAI view (an empty traces page).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id
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
    elif uri.startswith("sqlite:///"):
        create_sqlite_store(uri)
    return uri


def sqlite_file(uri: str) -> Path:
    """The database file a ``sqlite:///`` URI names (its path unquoted, its query left out), as
    SQLAlchemy opens it; relative to the working directory unless the path is absolute."""
    return Path(unquote(uri.removeprefix("sqlite:///").split("?")[0]))


@functools.cache
def create_sqlite_store(uri: str) -> None:
    """Create a SQLite store's tables (a no-op for an existing store) holding an exclusive lock on a
    file beside it. MLflow creates and migrates them without a lock: processes opening a new store at
    once (a sweep's parallel jobs, two commands started together) failed, all but one, with
    "duplicate column name: step" (tests/test_tracking_store.py)."""
    path = sqlite_file(uri)
    if not path.name or path.name == ":memory:":
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError:  # a folder this user cannot write (a read-only copy of a store): MLflow says more
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        except OSError:  # a file system without locks (Lustre mounted without them): unlocked, as MLflow does
            pass
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


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
            "start it (docs/tracking.md: team set-up) or leave tracking.uri unset for the local store"
        ) from None


# user:password@ (or token@) in any URL, and password=/token= query values: what redact() removes.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/@'\"]+@")
_QUERY_SECRETS = re.compile(r"(?P<key>\b(?:password|passwd|token|access_token)=)[^&\s'\"]+", re.IGNORECASE)
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` (a URI, a command line, a config file) with every credential in it removed: the
    user:password@ part of any URL, and password= / token= values. The one function that every
    writer of tags, params, descriptions, config files and log lines goes through."""
    text = _URL_CREDENTIALS.sub(lambda m: m["scheme"], text)
    return _QUERY_SECRETS.sub(lambda m: m["key"] + REDACTED, text)


def redact_file(path: Path) -> None:
    """Rewrite a text file (Hydra's .hydra/*.yaml, multirun.yaml) without credentials, atomically."""
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return
    clean = redact(text)
    if clean != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(clean)
        os.replace(tmp, path)


CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def credentials_to_environment(args: list[str]) -> list[str]:
    """Command-line arguments with the user:password of a ``tracking.uri=`` override moved into
    MLflow's own variables (MLFLOW_TRACKING_USERNAME / _PASSWORD, which MLflow sends as HTTP basic
    auth): Hydra then never sees them, so no config file, sweep file, launcher pickle or log line
    that it writes can hold them. Job processes inherit the variables."""
    moved = []
    for arg in args:
        key, sep, value = arg.partition("=")
        parts = urlsplit(value) if sep and key.lstrip("+~") == "tracking.uri" else None
        if parts is None or parts.scheme not in ("http", "https") or parts.username is None:
            moved.append(arg)
            continue
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
        if parts.password is not None:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
        moved.append(f"{key}={redact(value)}")
    return moved


class RedactingLogRecords:
    """A log record factory that removes credentials from every message before any handler sees it
    (Hydra's launchers log each job's overrides; a handler-level filter would be dropped each time
    Hydra reconfigures logging for a job)."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: leave it to logging to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record


def redact_log_records() -> None:
    """Install RedactingLogRecords once per process."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RedactingLogRecords):
        logging.setLogRecordFactory(RedactingLogRecords(factory))


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
    # Differ between an interrupted job and its resumption (or its sweep's continuation): tags instead.
    params.pop("trainer.resume", None)
    params.pop("tracking.resume_sweep", None)
    return {key: redact(value) for key, value in params.items()}


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
        "hydra_overrides": redact(" ".join(overrides)) or "(none)",
        "output_dir": redact(str(output_dir)),
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
