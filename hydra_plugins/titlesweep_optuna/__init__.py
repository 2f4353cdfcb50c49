"""TitleSweep's Optuna sweeper for Hydra (``--multirun search=optuna``): optuna_sweeper.OptunaSweeper,
registered as ``hydra/sweeper=optuna``. Hydra finds it in the ``hydra_plugins`` namespace package."""
