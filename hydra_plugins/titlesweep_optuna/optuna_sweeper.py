"""A Hydra sweeper that runs an Optuna study by ask-and-tell: ``--multirun search=optuna``.

Each round asks the study for up to ``n_jobs`` trials, launches one Hydra job per trial through the
configured launcher (sequential, joblib, submitit / SLURM), and tells the study each job's return
value (its ``optimized_metric``). The study lives in an RDB storage (lib/search.study_storage), so

- a rerun of the same command with a larger ``n_trials`` continues it: ``n_trials`` counts every trial
  of the study, also those of earlier sweeps, and the sampler sees them all;
- several sweep commands (other machines) on one storage share it, each asking for trials until
  the study holds ``n_trials``;
- a job reports its validation metric to its trial at every evaluation (lib/search.TrialReporter)
  and, when the pruner says so, marks the trial PRUNED itself; the sweeper leaves such a trial as is.

At the end it writes ``optimization_results.yaml`` in the sweep folder (the study's best trial, its
name and the storage URL without credentials), which lib/sweep.py copies to the MLflow parent run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random
    seed: int | None = None  # a rerun continuing a study seeds with seed + the trials already there


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.titlesweep_optuna.optuna_sweeper.OptunaSweeper"
    direction: str = "maximize"  # of each job's return value (optimized_metric): maximize | minimize
    study_name: str = "titlesweep"
    storage: str | None = None  # null: beside the MLflow store (lib/search.study_storage)
    n_trials: int = 20  # trials the study is to hold, counting those of earlier sweeps
    n_jobs: int = 1  # trials asked and launched together (run in parallel by a parallel launcher)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: str = "median"  # median | hyperband | none
    pruner_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of Optuna's pruner
    params: dict[str, str] = field(default_factory=dict)  # key: Hydra sweep grammar (interval, choice, range, tag)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="titlesweep")


def make_sampler(name: str, seed: int | None):
    import optuna

    from lib.errors import ConfigError

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)  # constant_liar (Optuna 5's default): parallel trials differ
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"hydra.sweeper.sampler.name={name}: unknown sampler; choose tpe or random")


def _name_child_runs_by(space) -> None:
    """Child runs are named by the swept keys' values (lib/sweep.child_run_name): add the searched ones,
    which are in hydra.sweeper.params, not on the command line the MLflow callback read them from."""
    from lib.sweep import SWEPT_ENV

    keys = [*filter(None, os.environ.get(SWEPT_ENV, "").split(",")), *(p.name for p in space)]
    os.environ[SWEPT_ENV] = ",".join(dict.fromkeys(keys))


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        sampler: DictConfig,
        pruner: str,
        pruner_options: DictConfig | dict,
        params: DictConfig | dict | None,
    ) -> None:
        self.direction, self.study_name, self.storage_setting = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler_cfg, self.pruner_name = sampler, pruner
        self.pruner_options = (
            OmegaConf.to_container(pruner_options)
            if isinstance(pruner_options, DictConfig)
            else dict(pruner_options or {})
        )
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        from hydra_plugins.titlesweep_optuna.checks import check_search_config

        # Normally already made by the search preset's callback before the MLflow parent run exists.
        check_search_config(config)
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        from hydra_plugins.titlesweep_optuna._space import parse_space
        from lib.search import open_storage, storage_note, study_storage

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space, fixed = parse_space(self.params, arguments, self.hydra_context.config_loader)
        url = study_storage(self.config, self.config.hydra.sweeper)
        note = storage_note(self.config, self.config.hydra.sweeper)
        if note:
            log.warning(note)
        storage = open_storage(url)
        study = self._study(storage)
        _name_child_runs_by(space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        from lib.tracking import redact

        log.info(
            "Optuna study %s in %s: %d trials there, up to %d (%d at a time); searching %s",
            self.study_name, redact(url), len(study.get_trials(deepcopy=False)), self.n_trials, self.n_jobs,
            ", ".join(p.name for p in space) or "nothing",
        )  # fmt: skip
        returns: list[list[JobReturn]] = []
        job_index, open_trials = 0, []
        try:
            while True:
                wanted = min(self.n_jobs, self.n_trials - len(study.get_trials(deepcopy=False)))
                if wanted <= 0:
                    break
                open_trials = [study.ask({p.name: p.distribution for p in space}) for _ in range(wanted)]
                batch = [self._job_overrides(fixed, space, trial) for trial in open_trials]
                self.validate_batch_is_legal(batch)
                results = self.launcher.launch(batch, initial_job_idx=job_index)
                job_index += len(batch)
                for trial, result in zip(open_trials, results):
                    self._tell(study, trial, result)
                open_trials = []
                returns.append(list(results))
        finally:  # interrupted, or a launcher error: the trials asked for and not told are failed
            for trial in open_trials:
                study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        self._write_results(study, url, sweep_dir)
        return returns

    def _study(self, storage):
        import optuna

        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            direction=self.direction,
            pruner=self._pruner(),
            load_if_exists=True,
        )
        if [d.name.lower() for d in study.directions] != [self.direction]:  # checked before, unless a race
            from lib.errors import ConfigError

            raise ConfigError(
                f"hydra.sweeper.direction={self.direction}: study {self.study_name} has another direction"
            )
        seed = self.sampler_cfg.get("seed")
        # The same seed on a continued study would sample the first sweep's points again.
        seed = None if seed is None else int(seed) + len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(str(self.sampler_cfg.get("name", "tpe")), seed)
        return study

    def _pruner(self):
        from lib.search import make_pruner

        return make_pruner(self.pruner_name, self.pruner_options)

    def _job_overrides(self, fixed: list[str], space, trial) -> list[str]:
        from hydra_plugins.titlesweep_optuna._space import override_value
        from lib.search import TRIAL_ENV

        sampled = [f"{p.key}={override_value(trial.params[p.name], p.raw)}" for p in space]
        return [*fixed, *sampled, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]

    def _tell(self, study, trial, result: JobReturn) -> None:
        from optuna.trial import TrialState

        try:
            value = result.return_value
        except Exception as err:  # noqa: BLE001 - the job raised: its trial failed, the sweep goes on
            log.error("Optuna trial %d: its job failed (%s: %s)", trial.number, type(err).__name__, err)
            value = None
        try:
            value = None if value is None else float(value)
        except (TypeError, ValueError):
            log.error("Optuna trial %d: its job returned %r, not a number", trial.number, value)
            value = None
        if value is None or not math.isfinite(value):
            frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        else:
            frozen = study.tell(trial, value, skip_if_finished=True)  # a trial its job pruned stays PRUNED
        log.info(
            "Optuna trial %d: %s %s", frozen.number, frozen.state.name, "" if frozen.value is None else frozen.value
        )

    def _write_results(self, study, url: str, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        from lib.tracking import redact

        trials = study.get_trials(deepcopy=False)
        counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.study_name,
            "storage": redact(url),
            "direction": self.direction,
            "trials": {k: v for k, v in counts.items() if v},
            "best_trial": None,
            "best_params": None,
            "best_value": None,
        }
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=dict(best.params), best_value=float(best.value))
        else:
            log.warning("Optuna study %s has no complete trial yet: no best trial", self.study_name)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        log.info(
            "Optuna study %s: best trial %s, value %s, params %s",
            self.study_name, results["best_trial"], results["best_value"], results["best_params"],
        )  # fmt: skip
