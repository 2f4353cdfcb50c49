"""Bad search settings refused in one line before anything is written: no MLflow parent run, no study.

Hydra calls the callbacks' ``on_multirun_start`` before it instantiates the sweeper, and the MLflow
parent run is made in one (lib/sweep.MlflowSweepCallback). ``conf/search/optuna.yaml`` therefore
registers ``SearchConfigCheck`` as a callback that comes first (the search preset is merged before
conf/config.yaml's own ``hydra.callbacks``); the sweeper's ``setup`` checks again for a config that
selects ``hydra/sweeper=optuna`` without the preset.
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hydra_plugins.titlesweep_optuna.optuna_sweeper import OptunaSweeperConf


def check_search_config(config: DictConfig) -> None:
    """Raise a one-line lib.errors.ConfigError for a bad ``hydra.sweeper`` of this plugin: an unknown
    pruner, sampler or direction, a search space Hydra or Optuna cannot read, a study storage that
    cannot be reached (or holds the study with the other direction, or n_trials already). Writes nothing. Other
    sweepers' configs pass."""
    from hydra_plugins.titlesweep_optuna._space import parse_space
    from hydra_plugins.titlesweep_optuna.optuna_sweeper import make_sampler
    from lib.errors import ConfigError
    from lib.search import check_storage, make_pruner, study_storage

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != OptunaSweeperConf._target_:
        return
    make_pruner(str(sweeper.pruner), sweeper.get("pruner_options"))
    make_sampler(str(sweeper.sampler.get("name", "tpe")), None)
    if sweeper.direction not in ("maximize", "minimize"):
        raise ConfigError(f"hydra.sweeper.direction={sweeper.direction}: choose maximize or minimize")
    for key in ("n_trials", "n_jobs"):
        if not isinstance(sweeper[key], int) or sweeper[key] < 1:
            raise ConfigError(f"hydra.sweeper.{key}={sweeper[key]}: must be a positive whole number")
    parse_space(sweeper.get("params"), list(config.hydra.overrides.task))
    check_storage(study_storage(config, sweeper), str(sweeper.study_name), str(sweeper.direction), sweeper.n_trials)


class SearchConfigCheck(Callback):
    """``check_search_config`` when a multirun starts: an error is one line and exit status 2."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from lib.errors import UserError

        try:
            check_search_config(config)
        except UserError as err:  # an Exception here, Hydra would only warn and sweep anyway
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
