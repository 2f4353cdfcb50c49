"""Put the best run of a comparison in the MLflow model registry: its pyfunc model as a new version
of a registered model, an alias (default ``champion``) pointed at it. The run is chosen on a
validation metric; its test score is reported beside, never used to choose."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from mlflow import MlflowClient

from lib import recipes
from lib.compare import Comparison, with_run_metrics
from lib.errors import ConfigError, UserError

# Chosen on validation: picking the best of N runs by a test score biases that score upwards.
REGISTER_DEFAULTS = {"name": "titlesweep-best", "alias": "champion", "metric": "best_val_f1"}
REPORTED_BESIDE = "test_f1"  # printed and tagged beside the selection metric: an unbiased look
FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def registration_options(options: dict[str, str]) -> dict[str, str] | None:
    """{name, alias, metric} when ``register=true``; None when not registering."""
    flag = options.get("register", "false").strip().lower()
    if flag not in FLAGS:
        raise ConfigError(f"register={options['register']}: choose true or false")
    given = [k for k in REGISTER_DEFAULTS if k in options]
    if not FLAGS[flag]:
        if given:
            raise ConfigError(f"{', '.join(given)}: only used with register=true")
        return None
    return {k: options.get(k, default) for k, default in REGISTER_DEFAULTS.items()}


def register_best(
    client: MlflowClient,
    comparison: Comparison,
    name: str = REGISTER_DEFAULTS["name"],
    alias: str = REGISTER_DEFAULTS["alias"],
    metric: str = REGISTER_DEFAULTS["metric"],
):
    """Register the pyfunc model of the compared run with the best ``metric`` as a new version of
    ``name``, and point ``alias`` at it. Returns (model version, best run's row); the row also
    holds the run's test F1 (REPORTED_BESIDE), which the version's tags and description carry."""
    row = best_run(client, comparison, metric)
    if REPORTED_BESIDE not in row:
        row[REPORTED_BESIDE] = client.get_run(row["run_id"]).data.metrics.get(REPORTED_BESIDE, math.nan)
    model = _pyfunc_model_of(client, row["run_id"], row["run"])
    _ensure_registered_model(client, name)
    beside = f"{REPORTED_BESIDE} {row[REPORTED_BESIDE]:.4f}"
    # The SQL registry looks models:/<model id> up through the global tracking URI, not this client's
    # (a TODO in MLflow's create_model_version): point the global one at this store meanwhile.
    with _global_tracking_uri(client.tracking_uri):
        version = client.create_model_version(
            name,
            source=f"models:/{model.model_id}",
            run_id=row["run_id"],
            model_id=model.model_id,
            tags={"selected_by": metric, metric: f"{row[metric]:.6g}", REPORTED_BESIDE: f"{row[REPORTED_BESIDE]:.6g}"},
            description=f"best {metric} ({row[metric]:.4f}; {beside}) of {len(comparison.table)} compared runs: "
            f"{row['run']}",
        )
    client.set_registered_model_alias(name, alias, version.version)
    return version, row


def best_run(client: MlflowClient, comparison: Comparison, metric: str) -> pd.Series:
    """The finished run with the best ``metric`` (lower is better for losses and times, as in METRICS)."""
    table = with_run_metrics(client, comparison, [metric]).table  # e.g. best_val_f1 is not a table column
    table = table[(table["status"] == "FINISHED") & table[metric].notna()]
    if table.empty:
        raise ConfigError(f"metric={metric}: no finished compared run has this metric")
    return table.loc[table[metric].idxmin() if recipes.lower_is_better(metric) else table[metric].idxmax()]


def _pyfunc_model_of(client: MlflowClient, run_id: str, run_name: str):
    from lib.pyfunc import PYFUNC_ARTIFACT  # imported when needed: it loads torch

    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        [experiment],
        filter_string=f"source_run_id = '{run_id}' AND name = '{PYFUNC_ARTIFACT}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        max_results=1,
    )
    if not found:
        raise UserError(
            f"run {run_name} ({run_id}) is the best but has no {PYFUNC_ARTIFACT} to register "
            "(trained with tracking.log_model=false, or before models were logged as pyfunc)"
        )
    return found[0]


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="TitleSweep title classifier (lib/pyfunc.py)")


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
