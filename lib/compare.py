"""Compare tracked runs: select them from MLflow, tabulate, mark the best, plot, write, log.

Selection: the children of one sweep (default: the latest sweep), optionally narrowed by
``key=value`` filters on the runs' config (``model=scibert`` means ``model.name``; dotted keys such
as ``loss.gamma=2.0`` are matched as they are). Filters without a sweep search every job run of
the experiment, across sweeps. Several sweeps, comma-separated, are compared together (e.g. students
beside the default runs they must beat), and ``runs=<id>,<id>`` adds runs trained on their own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from lib import plots, recipes
from lib.continuation import SUPERSEDED_TAG
from lib.errors import ConfigError
from lib.tracking import ROLE_TAG

# Metric columns: (MLflow key, header, better). better None: shown, never marked best.
METRICS = [
    ("test_accuracy", "test acc", "max"),
    ("test_f1", "test F1", "max"),
    ("test_macro_f1", "macro F1", "max"),
    ("test_recall", "recall", "max"),
    ("best_epoch", "best epoch", None),
    ("train_seconds", "train s", "min"),
    ("train_samples_per_s", "samples/s", "max"),
]
# Extra evaluation sets (cross-source corpus, the real CiteSeer sample, ...): reported beside test.
EXTRA_SUFFIXES = [("accuracy", "acc", "max"), ("f1", "F1", "max")]
# Metric prefixes that are no evaluation set; distill_teacher_transfer_accuracy: distillation runs of
# 2026-12-03, before it was named distill_teacher_label_agreement.
NOT_EXTRA = ("test", "best_val", "val", "data", "train", "distill_teacher_transfer")
NOT_TRAINING_ROLES = ("sweep", "eval")  # ROLE_TAG of sweep parents and of evaluate.py's runs


@dataclass
class Comparison:
    sweep: object | None  # the parent run, when one sweep was compared
    table: pd.DataFrame  # one row per run: run, run_id, differing overrides, metrics
    columns: list[tuple[str, str, str | None]]  # metric columns present, as in METRICS
    overrides: list[str]  # override keys that differ between the runs


def select_runs(
    client: MlflowClient, experiment: str, sweep: str | None, filters: dict[str, str], runs: str | None = None
):
    """(parent run or None, child runs) for the selection described in the module docstring. ``sweep`` may
    name several sweeps, comma-separated: their runs are compared together, under no one parent. ``runs``
    (run ids, comma-separated) adds runs trained outside those sweeps, e.g. a first seed run on its own."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"experiment={experiment}: no such MLflow experiment in this tracking store")
    clauses = [f"params.`{_param_key(k)}` = '{v}'" for k, v in filters.items()]
    parents, found = [], []
    if sweep or not (filters or runs):
        parents = [_find_sweep(client, exp.experiment_id, name) for name in (sweep or "latest").split(",")]
        # MLflow filters have no OR: one search per sweep
        found = [r for p in parents for r in _search(client, exp.experiment_id, [*clauses, _child_of(p)])]
    elif filters:
        found = _search(client, exp.experiment_id, clauses)
    named = [_named_run(client, run_id) for run_id in runs.split(",")] if runs else []
    selected = {r.info.run_id: r for r in [*found, *named]}.values()  # a run both named and found: once
    parent = parents[0] if len(parents) == 1 and not named else None
    # Training runs only. Filtered here, not with a `tags.role != ...` clause: MLflow's stores drop
    # every run that lacks the tag from such a clause, i.e. every run trained outside a sweep.
    selected = [r for r in selected if r.data.tags.get(ROLE_TAG) not in NOT_TRAINING_ROLES]
    selected = [r for r in selected if SUPERSEDED_TAG not in r.data.tags]  # failed attempts a continued sweep redid
    if not selected:
        where = f"sweep {', '.join(p.info.run_name for p in parents)}" if parents else f"experiment {experiment}"
        raise ConfigError(f"no runs match {filters or ''} in {where}".replace(" {} ", " "))
    return parent, sorted(selected, key=lambda r: r.info.start_time)


def _named_run(client: MlflowClient, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises different errors for a malformed and an unknown id
        raise ConfigError(f"runs={run_id}: no such run in the tracking store (runs= takes run ids)") from None


def _search(client: MlflowClient, experiment_id: str, clauses: list[str]):
    return client.search_runs(
        [experiment_id], " and ".join(clauses), max_results=10_000, order_by=["attributes.start_time ASC"]
    )


def _child_of(parent) -> str:
    return f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"


def _param_key(key: str) -> str:
    return key if "." in key else f"{key}.name"


def _find_sweep(client: MlflowClient, experiment_id: str, sweep: str | None):
    query = f"tags.`{ROLE_TAG}` = 'sweep'"
    found = []
    if sweep and sweep != "latest":  # a run name or a run id (MLflow filters have no OR)
        for attribute in ("run_name", "run_id"):
            found = found or client.search_runs(
                [experiment_id],
                f"{query} and attributes.{attribute} = '{sweep}'",
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
    else:
        found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    if not found:
        raise ConfigError(
            f"sweep={sweep or 'latest'}: no such sweep run; start one with `python experiments/train.py --multirun ...`"
        )
    return found[0]


def build_comparison(parent, runs) -> Comparison:
    overrides = [
        dict(o.split("=", 1) for o in r.data.tags.get("hydra_overrides", "").split() if "=" in o) for r in runs
    ]
    keys = sorted({k for o in overrides for k in o})
    differing = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    candidates = METRICS + _extra_columns(runs)  # scanned once, not once per run
    rows = []
    for run, over in zip(runs, overrides):
        row = {"run": run.info.run_name, "run_id": run.info.run_id, "status": run.info.status}
        row["pruned_at_step"] = _pruned_at_step(run)  # a search trial its pruner stopped: a partial run
        row.update({k: over.get(k, "") for k in differing})
        row.update({key: run.data.metrics.get(key, math.nan) for key, _, _ in candidates})
        rows.append(row)
    columns = [(k, h, b) for k, h, b in candidates if k in rows[0]]
    return Comparison(parent, pd.DataFrame(rows), columns, differing)


def _pruned_at_step(run) -> str:
    tags = run.data.tags
    return tags.get("pruned_at_step", "?") if tags.get("pruned") == "true" else ""


def run_labels(table) -> list[str]:
    """Each run's name, with its short run id where the name repeats (``trainer.seed=2`` in two sweeps);
    a pruned search trial's says so and where: its metrics are from a partial run."""
    counts = table["run"].value_counts()
    return [
        (row["run"] if counts[row["run"]] == 1 else f"{row['run']} ({row['run_id'][:8]})")
        + (f" (pruned at step {row['pruned_at_step']})" if row.get("pruned_at_step") else "")
        for _, row in table.iterrows()
    ]


def _extra_columns(runs) -> list[tuple[str, str, str | None]]:
    names = sorted(
        {k.rsplit("_", 1)[0] for r in runs for k in r.data.metrics if k.endswith("_accuracy")} - set(NOT_EXTRA)
    )
    return [(f"{n}_{suffix}", f"{n} {header}", better) for n in names for suffix, header, better in EXTRA_SUFFIXES]


def extra_sets(comparison: Comparison) -> list[str]:
    """Names of the extra evaluation sets among the comparison's columns (cross_source, citeseer_dev, ...)."""
    return [
        key[: -len("_accuracy")]
        for key, _, _ in comparison.columns
        if key.endswith("_accuracy") and key != "test_accuracy"
    ]


def recipe_summary(
    client: MlflowClient,
    comparison: Comparison,
    rank_by: str = recipes.RANK_DEFAULT,
    pair: tuple[int, int] | None = None,
):
    """Runs grouped by recipe across seeds (lib/recipes.py), ``pair`` (rows of the ranked recipe table) compared;
    None when the runs do not sweep the seed."""
    if recipes.SEED_KEY not in comparison.overrides:
        return None  # before reading every run's metrics for nothing
    sets = extra_sets(comparison)
    metrics = ["test_accuracy", "test_f1", *[f"{n}_{m}" for n in sets for m in ("accuracy", "roc_auc")]]
    # roc_auc and the ranking metric are not table columns: read from the runs
    with_metrics = with_run_metrics(client, comparison, [*metrics, rank_by])
    return recipes.summarise(client, with_metrics, metrics, sets, rank_by, pair=pair)


def with_run_metrics(client: MlflowClient, comparison: Comparison, keys: list[str]) -> Comparison:
    """The comparison with ``keys`` added as table columns, read from each run where missing."""
    missing = [k for k in keys if k not in comparison.table]
    if not missing:
        return comparison
    table = comparison.table.copy()
    logged = [client.get_run(run_id).data.metrics for run_id in table["run_id"]]
    for key in missing:
        table[key] = [m.get(key, math.nan) for m in logged]
    return Comparison(comparison.sweep, table, comparison.columns, comparison.overrides)


RECIPE_HEADERS = {"test_accuracy": "test acc", "test_f1": "test F1", "best_val_f1": "val F1"}


def recipe_headers(summary) -> dict[str, str]:
    return {
        **RECIPE_HEADERS,
        **{
            k: k.replace("_accuracy", " acc").replace("_roc_auc", " AUC")
            for k in summary.metrics
            if k not in RECIPE_HEADERS
        },
    }


def print_recipes(summary, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="recipes across seeds (mean ± std; ranked by mean " + summary.rank_by + ")")
    for header in recipes.headers(summary, recipe_headers(summary)):
        table.add_column(header, justify="left" if header == "recipe" else "right")
    for cells in recipes.rows(summary):
        table.add_row(*cells)
    print_wide(table, console)
    for line in recipes.interval_lines(summary):
        console.print(line, soft_wrap=True)


def best_rows(comparison: Comparison) -> dict[str, set[int]]:
    """{metric key: row indices holding the best value (ties all marked)} for columns with a direction."""
    best = {}
    for key, _, better in comparison.columns:
        values = comparison.table[key]
        if better and values.notna().any():
            top = values.max() if better == "max" else values.min()
            best[key] = set(values.index[values == top])
    return best


# ------------------------------------------------------------------- output


def _fmt(key: str, value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if key in ("best_epoch",):
        return f"{value:.0f}"
    if key == "train_seconds":
        return f"{value:,.1f}"
    if key == "train_samples_per_s":
        return f"{value:,.0f}"
    return f"{value:.4f}"


def print_table(comparison: Comparison, console: Console | None = None) -> None:
    """The rich table on a terminal; in a log file or pipe at its full natural width, because
    rich would otherwise fold it into 80 columns and cut every cell to a few characters."""
    print_wide(_rich_table(comparison), console or Console())


def print_wide(table: Table, console: Console) -> None:
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update_width(100_000), table).maximum
        console = Console(file=console.file, width=max(width, 80), force_terminal=False)
    console.print(table)


def _rich_table(comparison: Comparison) -> Table:
    best = best_rows(comparison)
    title = f"sweep {comparison.sweep.info.run_name}" if comparison.sweep else "runs"
    table = Table(title=f"{title}  (* best per column)")
    for column in ["run", *comparison.overrides]:
        table.add_column(column)
    for _, header, _ in comparison.columns:
        table.add_column(header, justify="right")
    for (i, row), label in zip(comparison.table.iterrows(), run_labels(comparison.table)):
        cells = [label + ("" if row["status"] == "FINISHED" else f" [{row['status']}]")]
        cells += [str(row[k]) for k in comparison.overrides]
        for key, _, _ in comparison.columns:
            text = _fmt(key, row[key])
            cells.append(f"[bold green]{text}*[/]" if i in best.get(key, ()) else text)
        table.add_row(*cells)
    return table


def to_markdown(comparison: Comparison) -> str:
    best = best_rows(comparison)
    headers = ["run", *comparison.overrides, *[h for _, h, _ in comparison.columns]]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for (i, row), label in zip(comparison.table.iterrows(), run_labels(comparison.table)):
        cells = [label, *[str(row[k]) for k in comparison.overrides]]
        cells += [
            f"**{_fmt(k, row[k])}**" if i in best.get(k, ()) else _fmt(k, row[k]) for k, _, _ in comparison.columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nBold: best value per column.\n"


def bar_chart(comparison: Comparison, path: Path) -> Path:
    """Test and extra-set scores (higher is better) of every run."""
    keys = [k for k, _, b in comparison.columns if b == "max" and not k.startswith("train_")]
    labels = pd.Index(run_labels(comparison.table), name="run")
    return plots.score_bars_png(comparison.table[keys].set_axis(labels), path)


def validation_curves(client: MlflowClient, comparison: Comparison, path: Path, metric: str = "val_f1") -> Path:
    """``metric`` against the optimiser step, one line per run, from MLflow's metric history."""
    curves = {}
    for _, row in comparison.table.iterrows():
        history = sorted(client.get_metric_history(row["run_id"], metric), key=lambda m: m.step)
        curves[row["run"]] = ([m.step for m in history], [m.value for m in history])
    return plots.curves_png(curves, metric.replace("_", " "), path)


def write_outputs(client: MlflowClient, comparison: Comparison, out_dir: Path, summary=None) -> list[Path]:
    """comparison.md / .csv and two PNGs in ``out_dir`` (and recipes.md / .csv / .png when runs were
    grouped by recipe); also logged to the sweep run when there is one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(to_markdown(comparison))
    comparison.table.to_csv(out_dir / "comparison.csv", index=False)
    files = [
        out_dir / "comparison.md",
        out_dir / "comparison.csv",
        bar_chart(comparison, out_dir / "comparison_scores.png"),
        validation_curves(client, comparison, out_dir / "validation_curves.png"),
    ]
    if summary is not None:
        headers = recipe_headers(summary)
        (out_dir / "recipes.md").write_text(recipes.to_markdown(summary, headers))
        summary.table.to_csv(out_dir / "recipes.csv", index=False)
        bars = [(k, headers[k]) for k in summary.metrics if k.endswith(("_accuracy", "_roc_auc"))]
        files += [
            out_dir / "recipes.md",
            out_dir / "recipes.csv",
            plots.recipe_bars_png(summary.table, bars, out_dir / "recipes.png"),
        ]
    if comparison.sweep is not None:
        for path in files:
            client.log_artifact(comparison.sweep.info.run_id, str(path), "comparison")
    return files


def default_out_dir(comparison: Comparison, outputs: Path) -> Path:
    if comparison.sweep is not None and comparison.sweep.data.tags.get("sweep_dir"):
        return Path(comparison.sweep.data.tags["sweep_dir"]) / "comparison"
    return Path(outputs) / "comparisons" / time.strftime("%Y-%m-%d_%H-%M-%S")
