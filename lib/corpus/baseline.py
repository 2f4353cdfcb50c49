"""A cheap reference model for the corpus: TF-IDF word and character n-grams + logistic regression,
trained on the corpus train split and scored in-source (test), cross-source, and on real labelled
files such as CiteSeer's dev set when present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from lib.data import drop_empty, eval_table

MODEL_NAME = "TF-IDF+LR"
MODEL_DETAIL = "TF-IDF word 1-2-grams + case-sensitive char 2-5-grams, logistic regression (C=4)"


@dataclass(frozen=True)
class EvalResult:
    name: str
    rows: int
    accuracy: float
    f1: float
    model: str = MODEL_NAME


def train_baseline(train: pd.DataFrame):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        # Case-sensitive characters: capitals, dot leaders and digits are part of the evidence.
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, lowercase=False),
    )
    model = make_pipeline(features, LogisticRegression(C=4.0, max_iter=3000))
    return model.fit(train["text"].astype(str), train["label"].astype(int))


def evaluate(model, name: str, df: pd.DataFrame) -> EvalResult:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = model.predict(df["text"].astype(str))
    return EvalResult(
        name,
        len(df),
        float(accuracy_score(df["label"], predicted)),
        float(f1_score(df["label"], predicted, pos_label=1)),
    )


def run_baseline(corpus: Path, extra: dict[str, str | None]) -> tuple[list[EvalResult], list[str]]:
    """Scores on test, cross_source and each existing ``extra`` file; returns (results, skipped)."""
    read = lambda name: pd.read_csv(Path(corpus) / f"{name}.csv", keep_default_na=False)  # noqa: E731
    model = train_baseline(read("train"))
    results = [evaluate(model, "test (in-source)", read("test")), evaluate(model, "cross_source", read("cross_source"))]
    skipped = []
    for name, path in (extra or {}).items():
        if path and Path(path).is_file():
            results.append(evaluate(model, name, drop_empty(eval_table(Path(path)), {}, name)))
        else:
            skipped.append(f"{name}: {path} not found, skipped")
    return results, skipped


def tracked_results(client, experiment: str, cfg_data, model: str = "minilm") -> list[EvalResult]:
    """The latest finished MLflow run of ``model`` on this corpus (same size and seed), as rows.

    Lets the report put the fine-tuned transformer beside the baseline without retraining it.
    """
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = (
        f"attributes.status = 'FINISHED' and params.`model.name` = '{model}' and params.`data.name` = 'titles'"
        f" and params.`data.size` = '{cfg_data.size}' and params.`data.seed` = '{cfg_data.seed}'"
    )
    runs = client.search_runs([exp.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        return []
    metrics, label = runs[0].data.metrics, f"{model} (run {runs[0].info.run_id[:8]})"
    sets = [("test", "test (in-source)")] + [(n, n) for n in ("cross_source", "citeseer_dev")]
    return [
        EvalResult(
            shown, int(metrics.get(f"data_{key}_rows", 0)), metrics[f"{key}_accuracy"], metrics[f"{key}_f1"], label
        )
        for key, shown in sets
        if f"{key}_accuracy" in metrics
    ]


def results_table(results: list[EvalResult], title: str) -> Table:
    table = Table(title=title)
    for column in ("model", "eval set", "rows", "accuracy", "F1 (class 1)"):
        table.add_column(column, justify="left" if column in ("model", "eval set") else "right")
    for r in results:
        table.add_row(r.model, r.name, str(r.rows), f"{r.accuracy:.4f}", f"{r.f1:.4f}")
    return table


def results_markdown(results: list[EvalResult], title: str) -> str:
    lines = [
        f"## {title}",
        "",
        f"{MODEL_NAME}: {MODEL_DETAIL}, trained on the corpus train split.",
        "",
        "| model | eval set | rows | accuracy | F1 (class 1) |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {r.model} | {r.name} | {r.rows} | {r.accuracy:.4f} | {r.f1:.4f} |" for r in results]
    return "\n".join(lines) + "\n"
