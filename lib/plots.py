"""PNG figures logged with each run. Matplotlib's Agg backend: no display needed."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lib.metrics import CLASS_NAMES  # noqa: E402


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


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
