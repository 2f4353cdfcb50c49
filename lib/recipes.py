"""Runs that differ only in their seed are one recipe: mean +- std per recipe, and a paired bootstrap
interval of the accuracy difference between two recipes (the top two, or the rows named by
``pair=``) on each extra evaluation set.

Why: on 300-2000 evaluation titles a difference of one or two points between two single runs is
usually seed noise (the original report ranked its recipes on one run each). The interval resamples
both sources of noise: the evaluation titles (the same draw for both recipes: paired) and the seeds
(each recipe's runs drawn with replacement), so it is wide when the seeds disagree.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from lib.errors import ConfigError

SEED_KEY = "trainer.seed"  # the override a seed sweep varies (python experiments/train.py ... trainer.seed=1,2,3)
# Overrides that say where a run is logged and what it is called, not what it trains: a run named
# on its own (tracking.run_name=...) is the same recipe as the seeds of a named sweep.
NOT_RECIPE_PREFIXES = ("tracking.",)
DEFAULTS_RECIPE = "(defaults)"  # runs that override nothing but the seed, beside recipes that do
TOP_TWO = (1, 2)  # the rows of the ranked recipe table compared unless pair= names others
RANK_DEFAULT = "best_val_f1"  # recipes ranked on validation: ranking on a test set would bias its score
BOOTSTRAP_REPS = 10_000
PREDICTIONS = "reports/{name}/predictions.csv"  # written by lib/run.py for the test split and each extra set


@dataclass
class RecipeSummary:
    table: pd.DataFrame  # one row per recipe: recipe, runs, <metric>_mean, <metric>_std
    metrics: list[str]  # metric keys summarised
    ranked: list[str]  # recipes, best first by ``rank_by``
    rank_by: str
    intervals: list[Interval]  # the paired recipes' bootstrap, one per extra set
    unpaired: list[str]  # extra sets on which the pair was scored on different rows: no interval
    pair: tuple[int, int] = TOP_TWO  # 1-based rows of ``table`` compared


@dataclass
class Interval:
    data: str  # evaluation set, e.g. citeseer_dev
    first: str  # the pair's recipe ranked higher
    second: str
    difference: float  # accuracy(first) - accuracy(second), all seeds
    low: float  # 95% bootstrap interval of the difference
    high: float
    rows: int

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return f"{self.first} is better"
        if self.high < 0:
            return f"{self.second} is better"
        return "no real difference (interval holds 0)"


def recipe_names(table: pd.DataFrame, overrides: list[str]) -> pd.Series | None:
    """A recipe label per run: its differing overrides without the seed; None when the seed is not swept."""
    if SEED_KEY not in overrides:
        return None
    keys = [k for k in overrides if k != SEED_KEY and not k.startswith(NOT_RECIPE_PREFIXES)]
    if not keys:
        return pd.Series("(one recipe)", index=table.index)
    named = table[keys].astype(str).apply(lambda row: " ".join(f"{k}={v}" for k, v in row.items() if v), axis=1)
    return named.replace("", DEFAULTS_RECIPE)


def parse_pair(value: str) -> tuple[int, int]:
    """``pair=1,3`` -> (1, 3): two different rows of the recipe table, best first."""
    parts = value.split(",")
    rows = sorted(int(p) for p in parts if p.strip().isdigit())
    if len(parts) != 2 or len(rows) != 2 or rows[0] < 1 or rows[0] == rows[1]:
        raise ConfigError(f"pair={value}: expected two different row numbers of the recipe table, e.g. pair=1,3")
    return rows[0], rows[1]


def summarise(
    client: MlflowClient,
    comparison,
    metrics: list[str],
    extra_sets: list[str],
    rank_by: str = RANK_DEFAULT,
    seed: int = 0,
    pair: tuple[int, int] | None = None,
) -> RecipeSummary | None:
    """Mean/std per recipe of ``metrics`` over its finished runs, ranked by ``rank_by``, with two recipes
    (rows ``pair`` of the ranked table, 1-based; the top two by default) compared on every set in
    ``extra_sets``. None when the compared runs do not sweep the seed.
    ``comparison.table`` carries ``metrics`` and ``rank_by`` as columns (lib/compare.recipe_summary)."""
    names = recipe_names(comparison.table, comparison.overrides)
    if names is None:
        return None
    finished = comparison.table.assign(recipe=names)[comparison.table["status"] == "FINISHED"].copy()
    if finished.empty:
        raise ConfigError("no finished runs to group by recipe")
    if rank_by not in finished or finished[rank_by].isna().all():
        raise ConfigError(f"rank_by={rank_by}: no finished run has this metric")
    keys = list(dict.fromkeys([*metrics, rank_by]))
    grouped = finished.groupby("recipe", sort=False)
    table = grouped.size().rename("runs").to_frame()
    for key in keys:
        table[f"{key}_mean"] = grouped[key].mean()
        table[f"{key}_std"] = grouped[key].std(ddof=1)  # NaN for a single run: no spread to report
    table = table.sort_values(f"{rank_by}_mean", ascending=lower_is_better(rank_by)).reset_index()
    ranked = table["recipe"].tolist()
    if pair is not None and pair[1] > len(ranked):
        raise ConfigError(
            f"pair={pair[0]},{pair[1]}: the recipe table has {len(ranked)} rows; name two of rows 1-{len(ranked)}"
        )
    pair = pair or TOP_TWO
    intervals, unpaired = [], []
    if len(ranked) >= 2:
        compared = [ranked[pair[0] - 1], ranked[pair[1] - 1]]
        runs_of = {r: finished.loc[finished["recipe"] == r, "run_id"].tolist() for r in compared}
        for data in extra_sets:
            first, second = (correctness(client, runs_of[r], data) for r in compared)
            if first is None or second is None:
                continue
            # Same-sized sets can still hold other rows (e.g. a data.size sweep regenerates cross_source):
            # pairing them row by row would be meaningless.
            if first.texts != second.texts:
                unpaired.append(data)
                continue
            diff, low, high = paired_bootstrap(first.correct, second.correct, seed=seed)
            intervals.append(Interval(data, *compared, diff, low, high, len(first.texts)))
    return RecipeSummary(table, keys, ranked, rank_by, intervals, unpaired, pair)


def lower_is_better(metric: str) -> bool:
    return metric.endswith(("loss", "_seconds"))


class Scored(NamedTuple):
    texts: list[str]  # the evaluation set's rows, in the order of the columns below
    correct: np.ndarray  # (runs, rows): 1 where a run classified a row correctly


def correctness(client: MlflowClient, run_ids: list[str], data: str) -> Scored | None:
    """How each run did on each row of ``data``; None when a run did not log that set. Refuses runs
    scored on different rows, which cannot be paired. Any other failure to read the predictions (the
    store unreachable, a permission refused) is raised: it is not a set that was never logged."""
    frames = []
    artifact = PREDICTIONS.format(name=data)
    # MLflow draws a progress bar per download: dozens of lines in the middle of the comparison
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="titlesweep-recipes-") as tmp:
        for run_id in run_ids:
            # Missing is what the run's artifact listing says, in every store: a download error does not
            # tell (MLflow 3.17 raises MlflowException RESOURCE_DOES_NOT_EXIST for a missing file in the
            # local store and over HTTP, and the same class for a server that fails).
            if artifact not in {item.path for item in client.list_artifacts(run_id, artifact.rsplit("/", 1)[0])}:
                return None
            path = client.download_artifacts(run_id, artifact, tmp)
            frames.append(pd.read_csv(Path(path), keep_default_na=False))
    texts = frames[0]["text"].tolist()
    for run_id, frame in zip(run_ids, frames):
        if frame["text"].tolist() != texts:
            raise ConfigError(
                f"run {run_id} scored other {data} rows than run {run_ids[0]}; recipes can be "
                "compared row by row only on the same data (same data.* settings)"
            )
    return Scored(
        texts, np.stack([(f["label"].to_numpy() == f["prediction"].to_numpy()).astype(float) for f in frames])
    )


def paired_bootstrap(
    first: np.ndarray, second: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0, chunk: int = 500
) -> tuple[float, float, float]:
    """(difference, low, high): mean accuracy of ``first`` minus ``second`` and its 95% percentile interval.
    Each array is (seeds, rows) of 0/1 correctness on the same rows. A replicate draws the rows once for
    both (paired) and each recipe's seeds with replacement."""
    if first.shape[1] != second.shape[1]:
        raise ValueError("paired bootstrap needs both recipes scored on the same rows")
    rng = np.random.default_rng(seed)
    rows = first.shape[1]
    diffs = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        per_row = first[rng.integers(len(first), size=(n, len(first)))].mean(axis=1) - second[
            rng.integers(len(second), size=(n, len(second)))
        ].mean(axis=1)  # (n, rows)
        picked = rng.integers(rows, size=(n, rows))
        diffs.append(np.take_along_axis(per_row, picked, axis=1).mean(axis=1))
    diffs = np.concatenate(diffs)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(first.mean() - second.mean()), float(low), float(high)


# ------------------------------------------------------------------- output


def mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def headers(summary: RecipeSummary, header_of: dict[str, str]) -> list[str]:
    return ["#", "recipe", "runs", *[header_of.get(k, k) for k in summary.metrics]]


def rows(summary: RecipeSummary) -> list[list[str]]:
    """One row per recipe, numbered from 1 in ranked order: the numbers ``pair=`` takes."""
    return [
        [
            str(number),
            row["recipe"],
            str(row["runs"]),
            *[mean_std(row[f"{k}_mean"], row[f"{k}_std"]) for k in summary.metrics],
        ]
        for number, (_, row) in enumerate(summary.table.iterrows(), start=1)
    ]


def interval_lines(summary: RecipeSummary) -> list[str]:
    if len(summary.ranked) < 2:
        return []
    first, second = summary.pair
    which = (
        f"Top two by mean {summary.rank_by}"
        if summary.pair == TOP_TWO
        else f"Rows {first} and {second} (pair={first},{second}; ranked by mean {summary.rank_by})"
    )
    lines = [
        f"{which}: {summary.ranked[first - 1]} vs {summary.ranked[second - 1]}. Accuracy difference "
        f"(first - second), paired bootstrap over titles and seeds, {BOOTSTRAP_REPS:,} replicates:"
    ]
    lines += [
        f"  {i.data} ({i.rows} rows): {i.difference:+.4f}, 95% interval [{i.low:+.4f}, {i.high:+.4f}]: {i.verdict}"
        for i in summary.intervals
    ]
    lines += [
        f"  {data}: the two recipes were scored on different rows (their data.* settings differ): no paired interval"
        for data in summary.unpaired
    ]
    if not summary.intervals and not summary.unpaired:
        lines.append("  (no extra evaluation set was logged by both recipes' runs)")
    return lines


def to_markdown(summary: RecipeSummary, header_of: dict[str, str]) -> str:
    head = headers(summary, header_of)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(summary)]
    notes = interval_lines(summary)
    return (
        "\n".join(lines) + "\n\nMean ± sample standard deviation over each recipe's seeds; rows ranked by mean "
        f"{summary.rank_by}.\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )
