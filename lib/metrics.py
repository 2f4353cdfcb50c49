"""Classification metrics of the "correct title" class (label 1), from labels and probabilities."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

CLASS_NAMES = ["wrong", "correct"]


def compute_metrics(labels, probs, threshold: float = 0.5) -> dict[str, float]:
    """Scalar metrics; ROC-AUC and average precision are NaN when only one class is present."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    preds = (probs >= threshold).astype(int)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, preds, labels=[1], average=None, zero_division=0
    )
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "f1": float(f1[0]),
        "macro_f1": float(skm.f1_score(labels, preds, labels=[0, 1], average="macro", zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, probs)) if both_classes else float("nan"),
        "average_precision": float(skm.average_precision_score(labels, probs)) if both_classes else float("nan"),
    }


THRESHOLD_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1")  # also reported as <name>_at_0.5


def metrics_at_threshold(labels, probs, threshold: float) -> dict[str, float]:
    """Metrics at the stored (validation-chosen) threshold, the threshold-dependent ones again at 0.5 as
    ``<name>_at_0.5``, and ``recall_at_specificity_<floor>`` (how well the rows are ranked, like ROC-AUC):
    training's test/extra-set reports and evaluate.py use this."""
    metrics = compute_metrics(labels, probs, threshold)
    at_half = compute_metrics(labels, probs, 0.5)
    metrics.update({f"{name}_at_0.5": at_half[name] for name in THRESHOLD_METRICS})
    metrics.update(
        {f"recall_at_specificity_{floor}": recall for floor, recall, _ in recall_at_specificity(labels, probs)}
    )
    return metrics


def class_report(labels, preds) -> tuple[str, dict]:
    """Per-class precision/recall/F1/support, as text and as a dict."""
    kwargs = dict(labels=[0, 1], target_names=CLASS_NAMES, digits=4, zero_division=0)
    return (
        skm.classification_report(labels, preds, **kwargs),
        skm.classification_report(labels, preds, output_dict=True, **kwargs),
    )


def confusion(labels, preds) -> np.ndarray:
    """2x2 counts: rows true (wrong, correct), columns predicted."""
    return skm.confusion_matrix(labels, preds, labels=[0, 1])


def best_threshold(labels, probs, metric: str = "f1", tolerance: float = 0.0) -> float:
    """The probability cut-off that maximises ``metric`` (f1 or accuracy) on a labelled split; 0.5
    itself for ``none`` (no tuning).

    Candidates are midpoints between consecutive distinct probabilities, so the chosen cut-off
    does not sit exactly on a validation example. Every cut-off scoring within ``tolerance`` of the
    best counts as a tie, and ties go to the cut-off closest to 0.5: on a few hundred validation
    titles the arg-max alone is noise (it moved from 0.20 to 0.61 between two seeds of the default run
    for F1 differences of a few titles), and a cut-off far from 0.5 picked that way transfers badly.
    """
    if not 0.0 <= tolerance < 1.0:
        from lib.errors import ConfigError

        raise ConfigError(f"trainer.threshold_tolerance={tolerance}: must be in [0, 1)")
    if metric not in ("f1", "accuracy", "none"):
        from lib.errors import ConfigError

        raise ConfigError(f"trainer.threshold_metric={metric}: choose f1, accuracy or none (keep 0.5)")
    if metric == "none":  # untuned: the natural cut-off of a model trained on balanced classes
        return 0.5
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    distinct = np.unique(probs)
    candidates = np.concatenate([[0.5], (distinct[1:] + distinct[:-1]) / 2])
    tp, fp, ones, zeros = _counts_at(labels, probs, candidates)
    fn, tn = ones - tp, zeros - fp
    if metric == "f1":
        scores = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(candidates)), where=(2 * tp + fp + fn) > 0)
    else:
        scores = (tp + tn) / len(labels)
    ties = candidates[scores >= scores.max() - tolerance - 1e-12]
    return float(ties[np.argmin(np.abs(ties - 0.5))])


def _counts_at(
    labels: np.ndarray, probs: np.ndarray, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """True and false positives at every candidate cut-off at once (predicted 1 = prob >= cut-off), and
    the numbers of label-1 and label-0 rows."""
    ones, zeros = np.sort(probs[labels == 1]), np.sort(probs[labels == 0])
    tp = len(ones) - np.searchsorted(ones, candidates, side="left")
    fp = len(zeros) - np.searchsorted(zeros, candidates, side="left")
    return tp, fp, len(ones), len(zeros)


SPECIFICITY_FLOORS = (0.95, 0.97, 0.99)  # shares of label-0 rows kept out: what evaluate.py reports recall at


def recall_at_specificity(labels, probs, floors=SPECIFICITY_FLOORS) -> list[tuple[float, float, float]]:
    """For each floor, the highest recall of label 1 that any cut-off gives while at least that share of
    the label-0 rows (specificity) stays below it: ``(floor, recall, cut-off)``, predicted 1 = prob >= cut-off.

    The cut-off is read off the very rows it is scored on, so this measures the ranking (what the best
    possible cut-off could reach on these rows, e.g. whether a target is a matter of the threshold at
    all), never a threshold to adopt: one chosen on a real sample is tuned to that sample."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    keep = ~np.isnan(probs)
    labels, probs = labels[keep], probs[keep]
    candidates = np.append(np.unique(probs), np.inf)  # inf: every row predicted 0
    tp, fp, ones, zeros = _counts_at(labels, probs, candidates)
    if not ones or not zeros:
        return [(floor, float("nan"), float("nan")) for floor in floors]
    specificity, recall = (zeros - fp) / zeros, tp / ones
    rows = []
    for floor in floors:
        first = int(np.argmax(specificity >= floor - 1e-12))  # specificity only grows with the cut-off
        rows.append((floor, float(recall[first]), float(candidates[first])))
    return rows
