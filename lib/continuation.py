"""Continuing a stopped sweep: ``--multirun <the same overrides> tracking.resume_sweep=<parent run id|name|last>``.

The sweep adopts its parent run again (lib/sweep.py) and every job decides for itself, from the
parent's child runs, what is left to do (so it works with every launcher: the decision is made in
the job's own process, wherever that runs):

    a FINISHED child with the job's overrides     reused: its results stand, nothing is trained
    a KILLED child with a checkpoint              continued from the checkpoint, in its own MLflow run
    a FAILED child, or none                       trained again; a failed attempt is marked superseded

A job is identified by its command-line overrides less the ones that only say how jobs execute
(``EXECUTION_KEYS``), so a sweep stopped on a laptop may continue with ``launcher=parallel``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient

from lib.errors import ConfigError
from lib.tracking import ROLE_TAG, RUN_ID

RESUME_KEY = "tracking.resume_sweep"
# The start of a run id, as compare.py shows it (8 characters); shorter could match by accident.
SHORT_ID = re.compile(r"[0-9a-f]{8,31}")
OVERRIDES_TAG = "titlesweep.overrides"  # a run's command-line overrides (redacted), as a JSON list
SUPERSEDED_TAG = "titlesweep.superseded_by"  # on a failed attempt at a job: the run that redid it
REUSED_FILE = "reused_run_id"  # written in a job's folder when it reused a FINISHED run: counted at the end
# How jobs execute, not what they compute: these may differ between a sweep and its continuation.
EXECUTION_KEYS = frozenset(
    {
        RESUME_KEY,
        "tracking.sweep_name",
        "launcher",
        "trainer.device",
        "trainer.num_threads",
        "trainer.num_workers",
        "trainer.compile",
    }
)


def overrides_identity(overrides: list[str]) -> dict[str, str]:
    """``["+experiment=x", "loss=ce,focal"]`` -> ``{"experiment": "x", "loss": "ce,focal"}``, less
    the execution keys: what must match between a sweep and its continuation, or a job and its run."""
    identity = {}
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key not in EXECUTION_KEYS and not key.startswith("hydra."):
            identity[key] = value
    return identity


def recorded_overrides(run) -> list[str]:
    """The overrides a sweep or job run was started with (its JSON tag, else the space-joined one)."""
    tags = run.data.tags
    if OVERRIDES_TAG in tags:
        return json.loads(tags[OVERRIDES_TAG])
    joined = tags.get("sweep_overrides") or tags.get("hydra_overrides") or ""
    return [] if joined == "(none)" else joined.split()


# --------------------------------------------------------------- the sweep's side


def find_sweep_to_continue(client: MlflowClient, experiment: str, target: str):
    """The parent run named by ``tracking.resume_sweep``: ``last`` (the newest sweep of the experiment),
    a run id, the start of one (the short ids compare.py shows), or a sweep's name
    (``tracking.sweep_name``); a one-line ConfigError when none or several match, or the run is no sweep."""
    if RUN_ID.fullmatch(target):
        return _sweep_run_by_id(client, target)
    exp = client.get_experiment_by_name(experiment)
    if target in ("last", "latest"):
        newest = [] if exp is None else _sweep_runs(client, exp.experiment_id, max_results=1)
        if not newest:
            raise ConfigError(f"{RESUME_KEY}={target}: experiment {experiment} has no sweep run to continue")
        return newest[0]
    sweeps = [] if exp is None else _sweep_runs(client, exp.experiment_id)
    found = [run for run in sweeps if run.info.run_name == target]
    if not found and SHORT_ID.fullmatch(target):
        found = [run for run in sweeps if run.info.run_id.startswith(target)]
    if len(found) > 1:  # continuing the wrong one of two same-named sweeps would mix their runs
        ids = ", ".join(run.info.run_id for run in found)
        raise ConfigError(
            f"{RESUME_KEY}={target}: {len(found)} sweeps of experiment {experiment} match ({ids}); "
            "name one by its run id"
        )
    if not found:
        raise ConfigError(
            f"{RESUME_KEY}={target}: no sweep of experiment {experiment} has that name or run id "
            "(give its parent run id, the start of it, its tracking.sweep_name, or last)"
        )
    return found[0]


def _sweep_runs(client: MlflowClient, experiment_id: str, max_results: int = 5000) -> list:
    """The experiment's sweep parent runs, newest first."""
    return client.search_runs(
        [experiment_id],
        f"tags.`{ROLE_TAG}` = 'sweep'",
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )


def _sweep_run_by_id(client: MlflowClient, run_id: str):
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises different errors for a malformed and an unknown id
        raise ConfigError(f"{RESUME_KEY}={run_id}: no such run in the tracking store") from None
    if run.data.tags.get(ROLE_TAG) != "sweep":
        role = run.data.tags.get(ROLE_TAG, "a single run")
        raise ConfigError(f"{RESUME_KEY}={run_id}: that run is not a sweep's parent run (it is {role})")
    return run


def check_same_sweep(parent, overrides: list[str]) -> None:
    """Refuse a continuation whose overrides differ from the ones the sweep was started with."""
    before, now = overrides_identity(recorded_overrides(parent)), overrides_identity(overrides)
    differing = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differing:
        shown = ", ".join(f"{k} ({before.get(k, 'unset')} -> {now.get(k, 'unset')})" for k in differing)
        raise ConfigError(
            f"{RESUME_KEY}={parent.info.run_id}: the overrides differ from the sweep's in {shown}; "
            "rerun with the sweep's own overrides (its run's tag sweep_overrides)"
        )


def jobs_reused(sweep_dir: Path) -> int:
    return len(list(sweep_dir.glob(f"*/{REUSED_FILE}")))


# --------------------------------------------------------------- the job's side


@dataclass
class JobPlan:
    """What a job of a continued sweep does: reuse a FINISHED run, continue a KILLED one from its
    checkpoint, or train anew; ``superseded`` are its earlier attempts that the new work replaces."""

    reuse: object | None = None
    resume: object | None = None
    superseded: list = field(default_factory=list)


def plan_job(overrides: list[str], children: list) -> JobPlan:
    """The plan for the job with ``overrides`` among the sweep's current ``children`` (lib/sweep.child_runs)."""
    from lib.checkpoint import CHECKPOINT_TAG

    identity = overrides_identity(overrides)
    same = [r for r in children if overrides_identity(recorded_overrides(r)) == identity]
    same.sort(key=lambda r: r.info.start_time or 0, reverse=True)  # the newest attempt first
    for run in same:
        if run.info.status == "FINISHED":
            return JobPlan(reuse=run)
    for run in same:
        path = run.data.tags.get(CHECKPOINT_TAG)
        if run.info.status == "KILLED" and path and Path(path).is_file():
            return JobPlan(resume=run, superseded=[r for r in same if r is not run])
    return JobPlan(superseded=same)


def mark_superseded(client: MlflowClient, runs: list, by_run_id: str) -> None:
    """Earlier attempts at a job, replaced by ``by_run_id``: tagged, and FAILED if left RUNNING, so the
    sweep's outcome and comparison count each job once."""
    for run in runs:
        client.set_tag(run.info.run_id, SUPERSEDED_TAG, by_run_id)
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", "its job ended without closing the run; redone in a continuation")
            client.set_terminated(run.info.run_id, "FAILED")
