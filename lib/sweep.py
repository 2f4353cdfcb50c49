"""A Hydra multirun as one MLflow parent run with one nested child run per job.

The callback (registered in conf/config.yaml under ``hydra.callbacks``) creates the parent run
when the sweep starts and hands its id to the jobs through an environment variable, which every
launcher passes on to its job processes (sequential, joblib workers, submitit / SLURM). When the
sweep ends it closes the parent FINISHED only if every child run finished, otherwise FAILED with
the count, and makes the command exit non-zero. A sweep that dies before its end (Ctrl-C, a
launcher crash) leaves the parent KILLED, not RUNNING.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import mlflow
from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lib import continuation
from lib.continuation import OVERRIDES_TAG
from lib.errors import UserError
from lib.tracking import NOTE_TAG, PRUNED_TAG, ROLE_TAG, experiment_id, redact, redact_file, tracking_uri

log = logging.getLogger(__name__)

PARENT_ENV = "TITLESWEEP_PARENT_RUN_ID"
SWEPT_ENV = "TITLESWEEP_SWEPT_KEYS"  # the override keys that vary, to name child runs by them


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parent_run_id() -> str | None:
    """The sweep's parent run id inside a multirun job, else None."""
    return os.environ.get(PARENT_ENV) if in_multirun() else None


def child_run_name(job_overrides: list[str]) -> str:
    """ "loss=focal,adversarial=fgm": the job's values of the swept keys (all overrides if unknown)."""
    swept = set(filter(None, os.environ.get(SWEPT_ENV, "").split(",")))
    chosen = [o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return ",".join(chosen or job_overrides)


def swept_keys(overrides: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]


def child_runs(client: MlflowClient, parent: str) -> list:
    """The sweep's job runs, one per job: earlier attempts that a continued sweep redid are left out."""
    run = client.get_run(parent)
    runs = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=50_000)
    return [r for r in runs if continuation.SUPERSEDED_TAG not in r.data.tags]


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            self.uri = tracking_uri(config)
            mlflow.set_tracking_uri(self.uri)
            self.parent = self._open_parent(config)
        except UserError as err:  # Hydra would only warn about an exception here and run every job anyway
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_dir = Path(config.hydra.sweep.dir)
        os.environ[PARENT_ENV] = self.parent
        os.environ[SWEPT_ENV] = ",".join(swept_keys(list(config.hydra.overrides.task)))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "mlflow_parent_run_id").write_text(self.parent)
        atexit.register(self._close_if_still_running)

    def _open_parent(self, config: DictConfig) -> str:
        """A new parent run, or with tracking.resume_sweep the stopped sweep's own, RUNNING again."""
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        tags = {
            ROLE_TAG: "sweep",
            "sweep_dir": redact(str(sweep_dir)),
            "sweep_command": redact(shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])),
            "sweep_overrides": redact(" ".join(overrides)) or "(none)",
            OVERRIDES_TAG: json.dumps([redact(o) for o in overrides]),
            "sweeper": str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1],
            "launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
        }
        client = MlflowClient()
        target = config.tracking.get("resume_sweep")
        if target:
            parent = continuation.find_sweep_to_continue(client, config.tracking.experiment, str(target))
            continuation.check_same_sweep(parent, overrides)
            parent_id = parent.info.run_id
            earlier = parent.data.tags
            tags["sweep_overrides"], tags[OVERRIDES_TAG] = earlier["sweep_overrides"], earlier.get(OVERRIDES_TAG, "[]")
            tags["sweep_dirs_before"] = " ".join(filter(None, [earlier.get("sweep_dirs_before"), earlier["sweep_dir"]]))
            tags["continued"] = str(int(earlier.get("continued", 0)) + 1)
            for key, value in tags.items():
                client.set_tag(parent_id, key, value)
            client.update_run(parent_id, status="RUNNING")
            log.info("MLflow sweep run %s (%s) continued", parent.info.run_name, parent_id)
            return parent_id
        name = config.tracking.get("sweep_name") or f"sweep-{sweep_dir.parent.name}_{sweep_dir.name}"
        run = client.create_run(experiment_id(config), run_name=name, tags=tags)
        log.info("MLflow sweep run %s (%s)", name, run.info.run_id)
        return run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        redact_file(Path(config.hydra.sweep.dir) / "multirun.yaml")  # the jobs did too; a job may have failed first
        # The sweep's outcome is recorded now or never: wait a while for a server that is restarting.
        _when_the_store_answers(lambda: self._record_outcome(config), self.uri)

    def _record_outcome(self, config: DictConfig) -> None:
        client = MlflowClient(self.uri)
        children = child_runs(client, self.parent)
        statuses = _fail_orphans(client, children)
        # A job that could not reach the tracking store at all has no run: count launched jobs too.
        launched = len(list(Path(config.hydra.sweep.dir).glob("*/.hydra")))
        total = max(len(statuses), launched)
        failed = sum(status != "FINISHED" for status in statuses) + total - len(statuses)
        for key, value in {
            "jobs_total": total,
            "jobs_finished": total - failed,
            "jobs_failed": failed,
            "jobs_without_run": total - len(statuses),
            **self._continuation_and_search_counts(config, children),
        }.items():
            client.log_metric(self.parent, key, value)
        _log_optuna_result(client, self.parent, Path(config.hydra.sweep.dir))
        status = "FAILED" if failed or not total else "FINISHED"
        client.set_terminated(self.parent, status)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEPT_ENV, None)
        _show_comparison(client, self.parent)
        if status == "FAILED":
            print(
                f"error: {failed} of {total} sweep jobs failed (sweep run {self.parent}); "
                "see each failed run's error/traceback.txt",
                file=sys.stderr,
            )
            raise SystemExit(1)

    @staticmethod
    def _continuation_and_search_counts(config: DictConfig, children: list) -> dict[str, int]:
        """jobs_reused in a continued sweep; trials_pruned in an Optuna search."""
        counts = {}
        if OmegaConf.select(config, "tracking.resume_sweep"):
            counts["jobs_reused"] = continuation.jobs_reused(Path(config.hydra.sweep.dir))
        if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower():
            counts["trials_pruned"] = sum(run.data.tags.get(PRUNED_TAG) == "true" for run in children)
        return counts

    def _close_if_still_running(self) -> None:
        _when_the_store_answers(self._kill_if_still_running, self.uri)

    def _kill_if_still_running(self) -> None:
        client = MlflowClient(self.uri)
        if client.get_run(self.parent).info.status == "RUNNING":
            client.set_tag(self.parent, "error", "the sweep stopped before all jobs were launched or finished")
            client.set_terminated(self.parent, "KILLED")


OUTCOME_WAIT_SECONDS = 180  # how long the end of a sweep waits for a tracking server that does not answer


def _when_the_store_answers(record, uri: str, wait: float = OUTCOME_WAIT_SECONDS) -> None:
    """Run ``record()``, retrying while the tracking store does not answer (a server restart), for at
    most ``wait`` seconds; then say in one line what could not be recorded."""
    from mlflow.exceptions import MlflowException

    deadline, warned = time.monotonic() + wait, False
    while True:
        try:
            return record()
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")) or time.monotonic() > deadline:
                print(
                    f"error: could not record the sweep's outcome in {redact(uri)} ({str(err).splitlines()[0][:200]}); "
                    "runs there may still show RUNNING",
                    file=sys.stderr,
                )
                raise SystemExit(1) from None
            if not warned:
                log.warning(
                    "the tracking server does not answer; retrying for up to %.0f s to record the sweep's outcome", wait
                )
                warned = True
            time.sleep(2)


def _show_comparison(client: MlflowClient, parent: str) -> None:
    """What `python experiments/compare.py` would print and write for this sweep, at its end: the
    table (and recipes across seeds), each failed job's one-line error, where the files went. A
    comparison that cannot be made is a warning, never a failed sweep."""
    from rich.console import Console

    from lib import compare

    try:
        experiment = client.get_experiment(client.get_run(parent).info.experiment_id).name
        comparison = compare.build_comparison(*compare.select_runs(client, experiment, parent, {}))
        console = Console()
        compare.print_table(comparison, console)
        summary = compare.recipe_summary(client, comparison)
        if summary is not None:
            compare.print_recipes(summary, console)
        out_dir = compare.default_out_dir(comparison, Path("outputs"))
        compare.write_outputs(client, comparison, out_dir, summary)
        client.set_tag(parent, NOTE_TAG, sweep_description(comparison, summary))
    except Exception as err:  # noqa: BLE001 - the sweep's outcome is already recorded
        log.warning("could not compare the sweep's runs (%s); try `python experiments/compare.py`", err)
        return
    for row in comparison.table.itertuples():
        if row.status != "FINISHED":
            error = client.get_run(row.run_id).data.tags.get("error", "no error recorded")
            console.print(f"{row.status.lower()}: {row.run} ({row.run_id}): {error}", soft_wrap=True, markup=False)
    console.print(
        f"comparison of sweep {comparison.sweep.info.run_name} (run {parent}) written to {out_dir} and "
        f"logged to the sweep run; again: python experiments/compare.py sweep={parent}",
        soft_wrap=True,
        markup=False,
    )


def sweep_description(comparison, summary=None) -> str:
    """Markdown for the sweep run's page in the MLflow UI: its command, the comparison table of its
    jobs (best per column in bold) and, when seeds were swept, the recipes across seeds."""
    from lib import compare, recipes

    tags = comparison.sweep.data.tags
    parts = [
        f"**Sweep** `{tags.get('sweep_command', '?')}` ({len(comparison.table)} jobs, launcher "
        f"{tags.get('launcher', '?')}); compare again: `python experiments/compare.py "
        f"sweep={comparison.sweep.info.run_id}`",
        "",
        compare.to_markdown(comparison),
    ]
    if summary is not None:
        parts += ["", recipes.to_markdown(summary, compare.recipe_headers(summary))]
    return "\n".join(parts)


def _fail_orphans(client: MlflowClient, children) -> list[str]:
    """Child runs still RUNNING when every job has returned lost their job (killed) or their
    connection to the tracking server (it failed while the job logged): FAILED, never left looking
    alive. Returns every child's status after that."""
    for run in children:
        if run.info.status == "RUNNING":
            client.set_tag(
                run.info.run_id,
                "error",
                "its job ended without closing the run (killed, or the tracking "
                "server did not answer); metrics and artifacts may be incomplete",
            )
            client.set_terminated(run.info.run_id, "FAILED")
    return ["FAILED" if run.info.status == "RUNNING" else run.info.status for run in children]


def _log_optuna_result(client: MlflowClient, parent: str, sweep_dir: Path) -> None:
    """The Optuna sweeper writes its best trial to optimization_results.yaml: copy it to the parent, with
    the study's name and storage (credentials removed), so that optuna.load_study(study_name=...,
    storage=...) opens the study from what MLflow shows."""
    results = sweep_dir / "optimization_results.yaml"
    if not results.is_file():
        return
    best = OmegaConf.load(results)
    for key, value in (best.get("best_params") or {}).items():
        client.log_param(parent, f"best.{key}", value)
    if best.get("best_value") is not None:
        client.log_metric(parent, "best_value", float(best.best_value))
    for key in ("study_name", "storage"):
        if best.get(key):
            client.set_tag(parent, f"optuna.{key}", redact(str(best[key])))
    client.log_artifact(parent, str(results))
