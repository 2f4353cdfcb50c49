"""PNG figures logged with each run. Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lib.metrics import CLASS_NAMES, compute_metrics  # noqa: E402

TSNE_MIN_POINTS = 50  # t-SNE needs a neighbourhood to work with; below this the map is a PCA


def confusion_png(matrix: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, f"{count}", ha="center", va="center", color=colour, fontsize=13)
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def training_curves_png(history: list[dict], path: Path) -> Path:
    """Train loss (per logging step) and validation loss / F1 / accuracy (per evaluation)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    train = [h for h in history if "train_loss" in h]
    evals = [h for h in history if "val_f1" in h]
    left.plot([h["step"] for h in train], [h["train_loss"] for h in train], label="train loss", alpha=0.8)
    left.plot([h["step"] for h in evals], [h["val_loss"] for h in evals], "o-", label="val loss")
    left.set_xlabel("optimiser step")
    left.legend()
    for key in ("val_f1", "val_accuracy"):
        right.plot([h["step"] for h in evals], [h[key] for h in evals], "o-", label=key.replace("_", " "))
    right.set_xlabel("optimiser step")
    right.legend()
    fig.suptitle("training curves")
    return _save(fig, path)


def pr_curve_png(labels, probs: np.ndarray, threshold: float, path: Path) -> Path:
    """Precision against recall of the correct-title class, the stored threshold and 0.5 marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 4.2))
    if len(np.unique(labels)) < 2:  # undefined with one class: say so rather than draw a misleading curve
        ax.text(0.5, 0.5, "only one class in the data:\nno precision-recall curve", ha="center", va="center")
    else:
        precision, recall, _ = precision_recall_curve(labels, probs)
        ax.plot(recall, precision, label=f"AP {average_precision_score(labels, probs):.4f}")
        for cut, marker, name in ((threshold, "o", f"stored threshold {threshold:.3f}"), (0.5, "s", "threshold 0.5")):
            m = compute_metrics(labels, probs, cut)
            ax.plot(m["recall"], m["precision"], marker, markersize=8, label=name, alpha=0.8)
        ax.legend(loc="lower left")
    ax.set_xlabel("recall (correct titles)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall curve")
    return _save(fig, path)


def embedding_2d(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the embeddings: t-SNE, or PCA when there are too few points for t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    if n < TSNE_MIN_POINTS:
        coords = PCA(n_components=min(2, n, vectors.shape[1]), random_state=seed).fit_transform(vectors)
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))), "PCA"
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    # One OpenMP thread: beside torch's own OpenMP runtime, sklearn's threads spin against it and
    # t-SNE of 1000 titles took 27 s with 2 threads against 5 s with one (2-core machine).
    with threadpool_limits(1, user_api="openmp"):
        return tsne.fit_transform(vectors), "t-SNE"


def embedding_map_png(vectors: np.ndarray, labels, preds, path: Path) -> Path:
    """Sentence embeddings in 2-D, coloured by true label, misclassified titles ringed in red."""
    coords, method = embedding_2d(vectors)
    labels, wrong = np.asarray(labels), np.asarray(preds) != np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for value, name, colour in ((0, "wrong title (0)", "tab:orange"), (1, "correct title (1)", "tab:blue")):
        here = labels == value
        ax.scatter(coords[here, 0], coords[here, 1], s=12, c=colour, alpha=0.7, label=name)
    ax.scatter(
        coords[wrong, 0],
        coords[wrong, 1],
        s=60,
        facecolors="none",
        edgecolors="red",
        linewidths=1.2,
        label=f"misclassified ({int(wrong.sum())})",
    )
    ax.legend(fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{method} of mean-pooled encoder embeddings ({len(coords)} titles)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recipe_bars_png(table, metrics: list[tuple[str, str]], path: Path) -> Path:
    """Mean per recipe with a one-standard-deviation bar across its seeds, one group of bars per metric.
    Recipes are numbered as in the recipe table (the numbers ``pair=`` takes); the legend sits under the
    plot, each name wrapped, because recipe names are whole override strings."""
    legend = [
        recipe_legend_label(number, row["recipe"], row["runs"]) for number, (_, row) in enumerate(table.iterrows(), 1)
    ]
    legend_lines = sum(label.count("\n") + 1 for label in legend)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(metrics) * max(1, len(table)) / 2), 4 + 0.17 * legend_lines))
    width = 0.8 / max(1, len(table))
    for i, (_, row) in enumerate(table.iterrows()):
        means = [row[f"{key}_mean"] for key, _ in metrics]
        stds = [0.0 if np.isnan(row[f"{key}_std"]) else row[f"{key}_std"] for key, _ in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, means, width, yerr=stds, capsize=3, label=legend[i])
    ticks = [header.replace(" ", "\n", 1) for _, header in metrics]  # "citeseer_dev\nacc": no overlap
    ax.set_xticks(np.arange(len(metrics)) + width * (len(table) - 1) / 2, ticks, fontsize=8)
    low = float(np.nanmin([table[f"{key}_mean"].min() for key, _ in metrics]))
    ax.set_ylim(max(0.0, low - 0.08), 1.0)
    ax.set_ylabel("mean over seeds (bar: ± 1 std)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax.set_title("recipes across seeds")
    return _save(fig, path)


def recipe_legend_label(number: int, recipe: str, runs: int, width: int = 110, max_lines: int = 3) -> str:
    """``#<number> <recipe> (n=<runs>)``, wrapped at spaces to ``width`` characters, at most ``max_lines``
    lines: the rest of the name elided with an ellipsis (the full name is in recipes.md), the run count kept."""
    runs_note = f" (n={runs})"
    lines = textwrap.wrap(f"#{number} {recipe}", width)
    if len(lines) > max_lines:
        rest = textwrap.shorten(" ".join(lines[max_lines - 1 :]), width - len(runs_note), placeholder=" …")
        lines = [*lines[: max_lines - 1], rest]
    lines[-1] += runs_note
    return "\n".join(lines)


def score_bars_png(frame, path: Path) -> Path:
    """One group of bars per run (``frame``'s index), one bar per score column; the y axis starts
    just under the lowest score, so differences of a point or two stay visible."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(frame) * max(1, len(frame.columns)) / 3), 4))
    frame.plot.bar(ax=ax, rot=20)
    low = frame.min().min()
    ax.set_ylim(max(0.0, (low if np.isfinite(low) else 0.0) - 0.05), 1.0)
    ax.set_ylabel("score")
    # beside the plot: inside it, the legend hid the bars of the last runs
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("test and extra-set scores per run")
    return _save(fig, path)


def curves_png(curves: dict[str, tuple[list, list]], ylabel: str, path: Path) -> Path:
    """One line per name: (optimiser steps, values)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, "o-", label=name, markersize=3)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title("validation curves")
    return _save(fig, path)
