"""Shortcut check: how far surface features alone (length, casing ratios, trailing punctuation)
separate the classes. A corpus whose classes differ mostly in these would teach a model to read
length and capitals instead of content, so the build reports this and the tests bound it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SHORTCUT_BOUND = 0.70  # grouped-CV logistic-regression accuracy on these features must stay under this
_TRAILING = ("letter", "digit", ".", ",", ":", ";", "?", ")", "quote", "other", "empty")
_WORD_BINS = (0, 3, 6, 9, 13, 18, 26)
FEATURE_NAMES = (
    ["n_chars", "log_chars", "n_words", "upper_ratio", "lower_ratio", "titlecase_word_ratio", "allcaps_word_ratio"]
    + [f"trailing_{t}" for t in _TRAILING]
    + [f"words_ge_{b}" for b in _WORD_BINS]
)


def _trailing(text: str) -> str:
    if not text:
        return "empty"
    ch = text[-1]
    if ch.isalpha():
        return "letter"
    if ch.isdigit():
        return "digit"
    if ch in "\"'”’":
        return "quote"
    return ch if ch in _TRAILING else "other"


def surface_features(text: str) -> list[float]:
    letters = [c for c in text if c.isalpha()]
    words = text.split()
    alpha_words = [w for w in words if any(c.isalpha() for c in w)] or [""]
    n_letters = max(1, len(letters))
    trailing = _trailing(text)
    return (
        [
            len(text),
            math.log1p(len(text)),
            len(words),
            sum(c.isupper() for c in letters) / n_letters,
            sum(c.islower() for c in letters) / n_letters,
            sum(w[:1].isupper() for w in alpha_words) / len(alpha_words),
            sum(w.isupper() for w in alpha_words) / len(alpha_words),
        ]
        + [float(trailing == t) for t in _TRAILING]
        + [float(len(words) >= b) for b in _WORD_BINS]
    )


def feature_matrix(texts) -> np.ndarray:
    return np.array([surface_features(str(t)) for t in texts], dtype=float)


def _logreg():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def shortcut_scores(frames: dict[str, pd.DataFrame], folds: int = 5) -> dict[str, float]:
    """See _shortcut_scores; on one OpenMP thread, because beside torch's OpenMP runtime sklearn's
    threads spin against it (the check took 27 s on 2 cores instead of a few)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        return _shortcut_scores(frames, folds)


def _shortcut_scores(frames: dict[str, pd.DataFrame], folds: int = 5) -> dict[str, float]:
    """Accuracy of surface-feature-only classifiers on the in-source splits.

    ``logreg_accuracy`` (the bounded number) is the mean over ``folds`` group-wise folds of all
    train+val+test rows, steadier than one test split; ``logreg_test_accuracy`` trains on train and
    scores test; ``trees_test_accuracy`` does the same with gradient-boosted trees, a non-linear
    reference that shows how much more the same features give a flexible model.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold

    data = pd.concat([frames[s] for s in ("train", "val", "test")], ignore_index=True)
    x, y = feature_matrix(data["text"]), data["label"].to_numpy()
    fold_acc = []
    for fit_idx, eval_idx in GroupKFold(n_splits=folds).split(x, y, groups=data["group"]):
        model = _logreg().fit(x[fit_idx], y[fit_idx])
        fold_acc.append(float((model.predict(x[eval_idx]) == y[eval_idx]).mean()))
    train, test = frames["train"], frames["test"]
    x_train, x_test = feature_matrix(train["text"]), feature_matrix(test["text"])
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    logreg = _logreg().fit(x_train, y_train)
    trees = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(x_train, y_train)
    return {
        "logreg_accuracy": round(sum(fold_acc) / len(fold_acc), 4),
        "logreg_fold_accuracies": [round(a, 4) for a in fold_acc],
        "logreg_test_accuracy": round(float((logreg.predict(x_test) == y_test).mean()), 4),
        "trees_test_accuracy": round(float((trees.predict(x_test) == y_test).mean()), 4),
        "majority_accuracy": round(float(max(y.mean(), 1 - y.mean())), 4),
        "bound": SHORTCUT_BOUND,
        "features": list(FEATURE_NAMES),
    }
