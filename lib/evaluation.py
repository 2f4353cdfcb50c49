"""Evaluate a trained model on labelled data as its own MLflow run beside the training run:
metrics at the stored threshold and at 0.5, reports, confusion matrix, precision-recall curve,
a 2-D map of the sentence embeddings, and every misclassified title."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lib import plots
from lib.data import CITESEER_LABEL, CITESEER_TEXT, drop_empty, eval_table, load_data, read_table
from lib.errors import ConfigError, DataError, UserError
from lib.inference import DEFAULT_BATCH_SIZE, Predictor, labels_at
from lib.metrics import class_report, confusion, metrics_at_threshold
from lib.tracking import ROLE_TAG, flatten, redact

KIND_COLUMN = "kind"  # optional column of a labelled file: what each row is (title, affiliation, email, ...)


def labelled_file(path: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every row of a labelled file (CiteSeer test format or text/label columns), empties dropped.
    A ``kind`` column, when the file has one, is kept: the evaluation then reports accuracy per kind."""
    table = read_table(Path(path))
    columns = [str(c) for c in table.columns]
    if CITESEER_LABEL not in columns and not {"text", "label"} <= set(columns):
        raise DataError(
            f"{path}: a labelled file needs columns '{CITESEER_TEXT}' and '{CITESEER_LABEL}' (CiteSeer "
            f"test format) or 'text' and 'label' (columns: {', '.join(columns)})"
        )
    frame = eval_table(Path(path))
    if KIND_COLUMN in columns:  # same rows in the same order as eval_table's
        kinds = table[KIND_COLUMN].fillna("").astype(str).str.strip()
        frame = frame.assign(kind=kinds.replace("", "(none)").to_numpy())
    stats: dict[str, int] = {}
    frame = drop_empty(frame, stats, "eval")
    return frame, stats


def kind_report(frame: pd.DataFrame, preds: np.ndarray) -> pd.DataFrame:
    """Accuracy per ``kind`` of a labelled frame that has that column: one row per kind (rows, the
    kind's label(s), correct, accuracy), sorted by label then size, then one row per label
    (``all label 1`` is the recall of correct titles, ``all label 0`` the accuracy on the other rows)."""
    scored = pd.DataFrame(
        {"kind": frame[KIND_COLUMN].astype(str).to_numpy(), "label": frame["label"].to_numpy(), "pred": preds}
    )
    scored["correct"] = (scored["label"] == scored["pred"]).astype(int)
    rows = []
    for kind, part in scored.groupby("kind", sort=False):
        labels = sorted(part["label"].unique())
        rows.append((kind, "/".join(map(str, labels)), len(part), int(part["correct"].sum()), max(labels)))
    rows.sort(key=lambda r: (-r[4], -r[2], r[0]))
    for label in (1, 0):
        part = scored[scored["label"] == label]
        if len(part):
            rows.append((f"all label {label}", str(label), len(part), int(part["correct"].sum()), label))
    table = pd.DataFrame(rows, columns=["kind", "label", "rows", "correct", "_order"]).drop(columns="_order")
    table["accuracy"] = (table["correct"] / table["rows"]).round(4)
    return table


def kind_metrics(table: pd.DataFrame) -> dict[str, float]:
    """MLflow metrics of a ``kind_report``: ``kind_<kind>_accuracy`` per kind, and ``balanced_accuracy``
    (mean of the two labels' accuracies) with ``other_accuracy`` (label 0) when both labels occur."""
    metrics = {}
    for kind, accuracy in zip(table["kind"], table["accuracy"]):
        if not kind.startswith("all label "):
            metrics[f"kind_{_metric_key(kind)}_accuracy"] = float(accuracy)
    by_label = dict(zip(table["kind"], table["accuracy"]))
    if "all label 1" in by_label and "all label 0" in by_label:
        metrics["other_accuracy"] = float(by_label["all label 0"])
        metrics["balanced_accuracy"] = round((float(by_label["all label 1"]) + float(by_label["all label 0"])) / 2, 4)
    return metrics


def _metric_key(kind: str) -> str:
    """An MLflow-safe metric name part: letters, digits, ``_ - .`` only."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in kind) or "_"


def format_kind_report(table: pd.DataFrame) -> str:
    width = max(12, *(len(k) for k in table["kind"]))
    lines = [f"  {'kind':<{width}} {'label':>5} {'rows':>6} {'correct':>8} {'accuracy':>9}"]
    for row in table.itertuples(index=False):
        lines.append(f"  {row.kind:<{width}} {row.label:>5} {row.rows:>6} {row.correct:>8} {row.accuracy:>9.4f}")
    return "\n".join(lines)


def config_test_split(cfg) -> tuple[pd.DataFrame, dict[str, int]]:
    """The test split exactly as training builds it from ``cfg.data`` (see experiments/evaluate.py)."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        splits = load_data(cfg)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key}: required with data={cfg.data.name}") from None
    return splits.test, splits.stats


def require_data_options(cfg) -> None:
    """The data options that have no default (data.train, data.dir) are given: checked before a model loads."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg.data))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required with data={cfg.data.name}")


ALLOW_MISMATCH = "allow_data_mismatch"  # evaluate.py's option, and the tag recording its use
MISMATCH_TAG = "data_mismatch"  # the differing data options an allowed evaluation was scored with


def data_differences(cfg_data, logged: dict[str, str]) -> list[str]:
    """``data.<key>=<value here> (training run: <value there>)`` for every option of ``cfg_data`` whose
    value differs from the training run's logged ``data.*`` param (lib/tracking.config_params), sorted;
    only ``data.name`` when that differs.
    Every data option decides which rows land in train / val / test (file, seed, fractions, size, the
    corpus's sources and recipe: the titles corpus is cached by a hash of all of them). A path names
    the same data when it is the same file on this machine, however it is spelled."""
    from omegaconf import OmegaConf

    here = flatten(OmegaConf.to_container(cfg_data, resolve=True), "data.")
    if logged.get("data.name", here["data.name"]) != here["data.name"]:  # another reader: its options are no news
        return [f"data.name={here['data.name']} (training run: {logged['data.name']})"]
    differences = []
    for key in sorted(here):
        there = logged.get(key)
        if there is None:
            differences.append(f"{key}={_shown(here[key])} (training run: not logged)")
        elif not _same_value(here[key], there):
            differences.append(f"{key}={_shown(here[key])} (training run: {_shown(there)})")
    return differences


def _same_value(here: str, there: str) -> bool:
    if here == there:
        return True
    try:
        return os.path.samefile(here, there)
    except (OSError, ValueError):  # not two existing paths
        return False


def _shown(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def check_training_data(cfg, predictor: Predictor, allow: bool) -> dict[str, str]:
    """Refuse, in one line, ``cfg.data`` options that differ from those the model's training run logged:
    their test split is not the one training held out, and may hold rows the model trained on. With
    ``allow`` (evaluate.py allow_data_mismatch=true), the tags that record the differences instead."""
    if predictor.run_id is None:
        return {}  # evaluate_in_mlflow refuses a model without a training run
    params = _source_run(predictor.run_id).data.params
    logged = {k: v for k, v in params.items() if k.startswith("data.")}
    differences = data_differences(cfg.data, logged) if logged else ["(the training run logged no data.* params)"]
    if not differences:
        return {}
    if allow:
        return {ALLOW_MISMATCH: "true", MISMATCH_TAG: _shown(", ".join(differences), 5000)}
    if logged:
        reason = f"the data options differ from its training run's: {', '.join(differences)}"
    else:
        reason = "its training run logged no data.* params to compare the data options with"
    raise ConfigError(
        f"{predictor.source}: {reason}; the test split they build may not be the one held out from training "
        f"and may hold rows the model trained on. Give the training run's data.* values, or {ALLOW_MISMATCH}=true "
        "to score it anyway (recorded as a tag on the evaluation run)"
    )


def evaluate_in_mlflow(
    predictor: Predictor,
    frame: pd.DataFrame,
    data_name: str,
    stats: dict[str, int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    tags: dict[str, str] | None = None,
) -> tuple[str, dict[str, float], pd.DataFrame | None]:
    """Score ``frame`` (text, label, optional kind) and log a new run ``eval-<training run name>`` beside the
    training run, tagged ``source_run_id`` and ``tags``: metrics, reports, plots, errors.csv, and with a
    ``kind`` column per_kind.csv plus ``kind_<kind>_accuracy``, ``other_accuracy`` and ``balanced_accuracy``.
    Returns (run id, metrics, the per-kind table or None)."""
    if predictor.run_id is None:
        raise ConfigError(
            f"{predictor.source}: evaluation is logged beside the training run; name the model "
            "with run=RUN_ID or model=NAME[@ALIAS]"
        )
    if frame.empty:
        raise DataError(f"{data_name}: no labelled rows to evaluate")
    source = _source_run(predictor.run_id)
    probs, vectors = predictor.score(frame["text"].tolist(), batch_size, progress, embeddings=True)
    labels = frame["label"].to_numpy()
    metrics = {
        **metrics_at_threshold(labels, probs, predictor.threshold),
        "threshold": predictor.threshold,
        "rows": float(len(frame)),
        **{f"data_{k}": float(v) for k, v in stats.items()},
    }
    per_kind = kind_report(frame, labels_at(probs, predictor.threshold)) if KIND_COLUMN in frame.columns else None
    if per_kind is not None:
        metrics.update(kind_metrics(per_kind))
    tags = {
        "source_run_id": predictor.run_id,
        ROLE_TAG: "eval",
        "eval_data": data_name,
        "model_source": predictor.source,
        **(tags or {}),
    }
    with mlflow.start_run(
        experiment_id=source.info.experiment_id, run_name=f"eval-{source.info.run_name}", tags=tags
    ) as run:
        mlflow.log_params(
            {
                "eval.data": data_name,
                "eval.rows": len(frame),
                "eval.threshold": predictor.threshold,
                "eval.precision": predictor.precision,
                "eval.source_run_id": predictor.run_id,
            }
        )
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="titlesweep-eval-") as tmp:
            write_evaluation_files(frame, probs, vectors, predictor.threshold, Path(tmp))
            mlflow.log_artifacts(tmp)
    return run.info.run_id, metrics, per_kind


def _source_run(run_id: str):
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        store = redact(mlflow.get_tracking_uri())
        raise UserError(f"run={run_id}: the model's training run is not in {store}") from None


def write_evaluation_files(
    frame: pd.DataFrame, probs: np.ndarray, vectors: np.ndarray | None, threshold: float, folder: Path
) -> list[Path]:
    """Report (txt, json), confusion matrix, PR curve, embedding map (when ``vectors`` are given),
    predictions.csv and errors.csv of one labelled split: what training (lib/run.py, per held-out
    split) and evaluate.py both write; per_kind.csv (kind_report) when ``frame`` has a ``kind`` column."""
    labels, preds = frame["label"].to_numpy(), labels_at(probs, threshold)
    text, as_dict = class_report(labels, preds)
    files = [folder / "classification_report.txt", folder / "classification_report.json"]
    files[0].write_text(f"decision threshold {threshold:.4f}, {len(frame)} rows\n\n{text}")
    files[1].write_text(json.dumps({"threshold": threshold, **as_dict}, indent=2))
    accuracy = float((labels == preds).mean())
    files.append(
        plots.confusion_png(
            confusion(labels, preds),
            folder / "confusion_matrix.png",
            f"threshold {threshold:.3f}: accuracy {accuracy:.4f}",
        )
    )
    files.append(plots.pr_curve_png(labels, probs, threshold, folder / "precision_recall_curve.png"))
    if vectors is not None:
        files.append(plots.embedding_map_png(vectors, labels, preds, folder / "embedding_map.png"))
    kept = ["text", "label"] + ([KIND_COLUMN] if KIND_COLUMN in frame.columns else [])
    scored = frame[kept].assign(probability=probs, prediction=preds)
    scored.to_csv(folder / "predictions.csv", index=False)
    scored[scored["prediction"] != scored["label"]].to_csv(folder / "errors.csv", index=False)
    files += [folder / "predictions.csv", folder / "errors.csv"]
    if KIND_COLUMN in frame.columns:
        kind_report(frame, preds).to_csv(folder / "per_kind.csv", index=False)
        files.append(folder / "per_kind.csv")
    return files
