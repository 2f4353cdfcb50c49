"""Optuna search (``--multirun search=optuna``): what a trial's job and the sweeper share.

The sweeper (hydra_plugins/titlesweep_optuna) keeps one Optuna study in an RDB storage, asks it for
trials and launches one job per trial; this module is the other side of that contract:

- ``study_storage``: where the study lives, derived from the config the same way in the sweeper and
  in every job (``hydra.sweeper.storage`` when set, else beside the MLflow store);
- ``check_storage`` / ``open_storage``: reach that storage (one-line errors) / open it for Optuna;
- ``make_pruner``: ``hydra.sweeper.pruner`` (median | hyperband | none) as an Optuna pruner;
- ``trial_reporter``: inside a trial's job, a ``TrialReporter`` whose ``report(val_metrics, step)``
  records each validation's value of the objective's metric on the trial and says when to stop.

A job learns its trial number from the ``TITLESWEEP_OPTUNA_TRIAL`` entry of ``hydra.job.env_set``,
which the sweeper adds to each job's overrides (a hydra.* override: it is no task override, so the
job's config, its MLflow params and its run name stay the recipe's own).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from lib.errors import ConfigError
from lib.tracking import redact, sqlite_file

log = logging.getLogger(__name__)

TRIAL_ENV = "TITLESWEEP_OPTUNA_TRIAL"  # the key in hydra.job.env_set that names a job's trial
SWEEPER_TARGET = "hydra_plugins.titlesweep_optuna.optuna_sweeper.OptunaSweeper"
STUDY_FILE = "optuna.db"  # the SQLite study beside a SQLite MLflow store
PG_SCHEMA = "optuna"  # the study's schema when it shares the MLflow store's PostgreSQL database
PRUNERS = ("median", "hyperband", "none")
CONNECT_TIMEOUT_S = 10  # a database server that does not answer: one line after this long, not a hang
SQLITE_BUSY_TIMEOUT_S = 60  # parallel jobs write their intermediate values to one SQLite file


# ------------------------------------------------------------------ storage


def study_storage(cfg, sweeper) -> str:
    """The study's storage URL. ``hydra.sweeper.storage`` when set; else, from ``tracking.uri``:

    - unset (the local store ``sqlite:///<paths.outputs>/mlflow.db``), or any ``sqlite:///`` store:
      ``sqlite:///<that folder>/optuna.db``;
    - a PostgreSQL database (``postgresql+psycopg2://...``): the same database, schema ``optuna``
      (Optuna and MLflow both keep an ``alembic_version`` table: they cannot share one schema);
    - a tracking server (``http(s)://``): its database is not known here, so the study stays in
      ``sqlite:///<paths.outputs>/optuna.db`` on this machine (a warning says how to share it).
    """
    explicit = sweeper.get("storage")
    if explicit:
        return str(explicit)
    uri = str(cfg.tracking.uri or "")
    outputs = Path(cfg.paths.outputs).resolve()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{sqlite_file(uri).resolve().parent / STUDY_FILE}"
    if uri.startswith("postgresql"):
        separator = "&" if "?" in uri else "?"
        return f"{uri}{separator}options=-csearch_path%3D{PG_SCHEMA}"
    return f"sqlite:///{outputs / STUDY_FILE}"


def storage_note(cfg, sweeper) -> str | None:
    """A warning when the study cannot be shared with other machines although MLflow is."""
    if sweeper.get("storage") or not str(cfg.tracking.uri or "").startswith(("http://", "https://")):
        return None
    return (
        f"tracking.uri is a server but the Optuna study is in {study_storage(cfg, sweeper)} on this machine; "
        "to share it between machines set hydra.sweeper.storage=postgresql+psycopg2://user@db-host/optuna "
        "(docs/sweeps.md)"
    )


def _engine_kwargs(url) -> dict:
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def _parse(storage: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage)
    except ArgumentError:
        raise ConfigError(
            f"hydra.sweeper.storage={redact(storage)}: not a database URL "
            "(e.g. sqlite:////abs/path/optuna.db or postgresql+psycopg2://user@host/optuna)"
        ) from None


def _pg_schema(url) -> str | None:
    """The schema named by ``?options=-csearch_path=<schema>`` in a PostgreSQL URL, else None."""
    if url.get_backend_name() != "postgresql":
        return None
    options = url.query.get("options", "")
    options = " ".join(options) if isinstance(options, tuple) else options
    for word in options.replace("-c", " ").split():
        if word.startswith("search_path="):
            return word.split("=", 1)[1].split(",")[0].strip() or None
    return None


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:300]


def check_storage(storage: str, study_name: str, direction: str, n_trials: int | None = None) -> None:
    """Raise a one-line ConfigError unless ``storage`` can be reached, without creating anything there
    (except Optuna's version stamp on tables that lack one, see ``open_storage``):
    a SQLite file's folder must exist and be writable; a database server must accept a connection
    within CONNECT_TIMEOUT_S. A study of that name already there must have the same direction and, given
    ``n_trials``, fewer trials (else the sweep would have nothing to run)."""
    import sqlalchemy
    from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

    url = _parse(storage)
    shown = redact(storage)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if not path or path == ":memory:":
            raise ConfigError(
                f"hydra.sweeper.storage={shown}: an in-memory study cannot be shared with the jobs; "
                "name a file (sqlite:////abs/path/optuna.db)"
            )
        folder = Path(path).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(
                f"hydra.sweeper.storage={shown}: cannot write the study there ({folder} is not a writable folder)"
            )
        if not Path(path).exists():
            return  # nothing more to check: the sweep creates it
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except (NoSuchModuleError, ModuleNotFoundError) as err:
        raise ConfigError(
            f"hydra.sweeper.storage={shown}: no database driver for it ({_first_line(err)}); "
            "name an installed one, e.g. postgresql+psycopg2:// (pip install -e '.[team]')"
        ) from None
    try:
        with engine.connect() as connection:
            has_study_table = sqlalchemy.inspect(connection).has_table("studies", schema=_pg_schema(url))
    except SQLAlchemyError as err:
        raise ConfigError(
            f"hydra.sweeper.storage={shown}: cannot reach the study's database ({_first_line(err)})"
        ) from None
    finally:
        engine.dispose()
    if has_study_table:
        _check_existing_study(storage, study_name, direction, n_trials)


def _check_existing_study(storage: str, study_name: str, direction: str, n_trials: int | None) -> None:
    rdb = open_storage(storage, create_tables=False)
    try:
        study_id = rdb.get_study_id_from_name(study_name)
        found = [d.name.lower() for d in rdb.get_study_directions(study_id)]
        held = rdb.get_n_trials(study_id)
    except KeyError:
        return
    finally:
        rdb.engine.dispose()
    where = f"study {study_name} in {redact(storage)}"
    if found != [direction]:
        raise ConfigError(
            f"hydra.sweeper.direction={direction}: {where} {'maximizes' if found == ['maximize'] else 'minimizes'}; "
            f"continue it with direction={found[0]} or start another with hydra.sweeper.study_name="
        )
    if n_trials is not None and held >= n_trials:
        raise ConfigError(
            f"hydra.sweeper.n_trials={n_trials}: {where} already holds {held} trials; continue it with a larger "
            "n_trials or start another with hydra.sweeper.study_name="
        )


def open_storage(storage: str, attempts: int = 3, create_tables: bool = True):
    """An Optuna RDBStorage for ``storage``: with ``create_tables``, its tables created when missing (for
    PostgreSQL the schema named by ``options=-csearch_path=...`` too). Optuna also stamps its schema
    version (table alembic_version) when missing, even without ``create_tables``. Retried: two sweeps
    that start together on an empty database race to create the same tables or version table, and the
    loser only has to look again. A schema of another Optuna version: a one-line ConfigError."""
    import optuna
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    url = _parse(storage)
    for attempt in range(1, attempts + 1):
        try:
            schema = _pg_schema(url) if create_tables else None
            if schema:
                engine = sqlalchemy.create_engine(url.difference_update_query(["options"]), **_engine_kwargs(url))
                try:
                    with engine.begin() as connection:
                        connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                finally:
                    engine.dispose()
            return optuna.storages.RDBStorage(
                storage, engine_kwargs=_engine_kwargs(url), skip_table_creation=not create_tables
            )
        except (SQLAlchemyError, RuntimeError, ValueError) as err:
            # RuntimeError/ValueError: a schema of another Optuna version; looking again cannot help
            if attempt == attempts or not isinstance(err, SQLAlchemyError):
                raise ConfigError(f"hydra.sweeper.storage={redact(storage)}: {_first_line(err)}") from None
            time.sleep(attempt)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ pruner


def make_pruner(name: str, options=None):
    """``hydra.sweeper.pruner`` and ``pruner_options`` (keyword arguments of Optuna's pruner class) as
    an Optuna pruner; a one-line ConfigError for an unknown name or option."""
    import optuna

    classes = {
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }
    if name not in classes:
        raise ConfigError(f"hydra.sweeper.pruner={name}: unknown pruner; choose one of {', '.join(PRUNERS)}")
    kwargs = dict(options or {}) if name != "none" else {}  # none: options left for another pruner are moot
    try:
        return classes[name](**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hydra.sweeper.pruner_options={kwargs}: not options of the {name} pruner ({err})") from None


# ------------------------------------------------------------------ the job's side


def validation_key(optimized_metric: str) -> str | None:
    """``best_val_f1`` -> ``f1``: the validation metric a trial reports at each evaluation; None for
    an objective that is no best validation metric (``test_f1``, ``cross_source_roc_auc``)."""
    prefix = "best_val_"
    return optimized_metric[len(prefix) :] if optimized_metric.startswith(prefix) else None


class TrialReporter:
    """One trial of the study, as its job sees it: ``report`` after every validation."""

    def __init__(self, study, trial, metric: str) -> None:
        self.study, self.trial, self.metric = study, trial, metric
        self.number: int = trial.number
        self.pruned_at_step: int | None = None
        self.broken = False  # a report failed: pruning is advice, the training goes on without it

    def report(self, val_metrics: dict[str, float], step: int) -> bool:
        """Record ``val_metrics[metric]`` at ``step`` on the trial; True when the pruner stops it, in which
        case the trial is already PRUNED in the storage (the sweeper then leaves it as it is)."""
        if self.pruned_at_step is not None:
            return True
        value = float(val_metrics[self.metric])
        if self.broken or not math.isfinite(value):  # Optuna would store NaN but no pruner can compare it
            return False
        from optuna.exceptions import OptunaError
        from optuna.trial import TrialState
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self.trial.report(value, step)
            if not self.trial.should_prune():
                return False
            self.study.tell(self.number, state=TrialState.PRUNED, skip_if_finished=True)
        except (OptunaError, SQLAlchemyError) as err:  # the storage is away, or the sweep failed the trial
            self.broken = True
            log.warning(
                "Optuna trial %d: cannot report to the study (%s); training goes on without pruning",
                self.number, _first_line(err),
            )  # fmt: skip
            return False
        self.pruned_at_step = step
        log.info("Optuna trial %d pruned at step %d (%s %.4f)", self.number, step, self.metric, value)
        return True


def trial_number() -> int | None:
    """The Optuna trial this Hydra job runs, from its ``hydra.job.env_set``; None outside such a job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.sweeper.get("_target_") != SWEEPER_TARGET:
        return None
    number = (hydra_cfg.job.get("env_set") or {}).get(TRIAL_ENV)
    return None if number is None else int(number)


def trial_reporter(cfg) -> TrialReporter | None:
    """The job's ``TrialReporter``, or None when the job is no Optuna trial or its objective
    (``optimized_metric``) is no ``best_val_*`` metric (then nothing can be compared during training).
    Inside an MLflow run it also links the two: tag ``optuna.trial`` on the run, user attribute
    ``mlflow_run_id`` on the trial."""
    number = trial_number()
    if number is None:
        return None
    metric = validation_key(str(cfg.optimized_metric))
    if metric is None:
        log.warning("optimized_metric=%s is no best_val_* metric: Optuna cannot prune this trial", cfg.optimized_metric)
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().sweeper
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(study_storage(cfg, sweeper))
    pruner = make_pruner(str(sweeper.pruner), sweeper.get("pruner_options"))
    study = optuna.load_study(study_name=str(sweeper.study_name), storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    trial = optuna.trial.Trial(study, trial_id)
    _link_mlflow_run(trial)
    return TrialReporter(study, trial, metric)


def _link_mlflow_run(trial) -> None:
    import mlflow

    run = mlflow.active_run()
    if run is not None:
        mlflow.set_tag("optuna.trial", str(trial.number))
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
