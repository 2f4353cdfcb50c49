import math

import numpy as np
import pytest

from lib.metrics import best_threshold, class_report, compute_metrics, confusion


def test_metrics_match_hand_counts():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    probs = [0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.7, 0.4]
    # threshold 0.5 -> preds 1 1 0 1 0 0 1 0: TP=3 FN=1 FP=1 TN=3
    m = compute_metrics(labels, probs)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75) and m["macro_f1"] == pytest.approx(0.75)
    # ROC-AUC: of the 16 (pos, neg) pairs, the positive scores higher in 15 (0.3 < 0.4 and 0.6).
    assert m["roc_auc"] == pytest.approx(14 / 16)
    assert confusion(labels, (np.array(probs) >= 0.5).astype(int)).tolist() == [[3, 1], [1, 3]]


def test_threshold_moves_predictions():
    m = compute_metrics([1, 0], [0.6, 0.4], threshold=0.7)
    assert m["accuracy"] == 0.5 and m["recall"] == 0.0


def test_one_class_split_gives_nan_ranking_metrics():
    m = compute_metrics([1, 1, 1], [0.9, 0.2, 0.8])
    assert m["accuracy"] == pytest.approx(2 / 3) and math.isnan(m["roc_auc"])


def test_class_report_has_both_classes():
    text, as_dict = class_report([0, 1, 1], [0, 1, 0])
    assert "wrong" in text and "correct" in text
    assert as_dict["correct"]["recall"] == 0.5 and as_dict["wrong"]["precision"] == 0.5


def test_best_threshold_maximises_f1_and_accuracy():
    labels = [0, 0, 0, 1, 1, 1]
    probs = [0.1, 0.2, 0.65, 0.7, 0.8, 0.9]  # any cut between 0.65 and 0.7 separates perfectly
    t = best_threshold(labels, probs, "accuracy")
    assert 0.65 < t < 0.7 and compute_metrics(labels, probs, t)["accuracy"] == 1.0
    assert best_threshold(labels, probs, "f1") == pytest.approx(0.675)


def test_best_threshold_prefers_one_half_on_ties():
    assert best_threshold([0, 1], [0.2, 0.8], "f1") == 0.5


def test_a_cut_off_nearly_as_good_and_nearer_one_half_wins_within_the_tolerance():
    # 400 positives at 0.6-0.9, 400 negatives at 0.05-0.2, and in the gap 3 positives (0.30, 0.32, 0.34)
    # with 1 negative (0.31): cutting near 0.3 catches 2-3 more positives for 0-1 false positive.
    rng = np.random.default_rng(0)
    probs = np.concatenate([rng.uniform(0.6, 0.9, 400), rng.uniform(0.05, 0.2, 400), [0.30, 0.32, 0.34, 0.31]])
    labels = np.array([1] * 400 + [0] * 400 + [1, 1, 1, 0])
    low = best_threshold(labels, probs, "f1")
    assert 0.2 < low < 0.35  # the bare arg-max chases four titles
    within = best_threshold(labels, probs, "f1", tolerance=0.005)
    assert within == 0.5  # a cut-off in the empty 0.34-0.6 gap loses 0.0025 F1: inside the tolerance
    f1 = {t: compute_metrics(labels, probs, t)["f1"] for t in (low, within)}
    assert 0 < f1[low] - f1[within] <= 0.005
    # a smaller tolerance only admits 0.315 (F1 0.000003 below the arg-max), not 0.5
    assert best_threshold(labels, probs, "f1", tolerance=0.001) == pytest.approx(0.315)


def test_a_tolerance_outside_0_1_is_refused():
    with pytest.raises(Exception, match=r"trainer.threshold_tolerance=1.5: must be in \[0, 1\)"):
        best_threshold([0, 1], [0.2, 0.8], "f1", tolerance=1.5)


def test_threshold_metric_none_keeps_one_half_whatever_validation_says():
    labels, probs = [0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9]  # tuned: a cut-off between 0.6 and 0.7 is perfect
    assert best_threshold(labels, probs, "f1") == pytest.approx(0.65)
    assert best_threshold(labels, probs, "none") == 0.5
    with pytest.raises(Exception, match=r"trainer.threshold_metric=auc: choose f1, accuracy or none \(keep 0.5\)"):
        best_threshold(labels, probs, "auc")


def test_recall_at_specificity_is_the_best_recall_any_cut_off_gives_above_each_floor():
    from lib.metrics import recall_at_specificity

    # 10 label-0 rows at 0.05 .. 0.95 and 4 label-1 rows; a NaN (unscored) row is left out.
    negatives = np.arange(10) / 10 + 0.05
    positives = np.array([0.3, 0.62, 0.9, 0.99])
    labels = np.r_[np.zeros(10), np.ones(4), 1]
    probs = np.r_[negatives, positives, np.nan]
    rows = recall_at_specificity(labels, probs, floors=(0.5, 0.9, 1.0))
    # >= 0.5 of label 0 below the cut-off: 0.55 works (5 of 10 below), recall 3/4 (0.62, 0.9, 0.99).
    # >= 0.9: the cut-off must pass 0.85, so 0.9 itself (9 below), recall 2/4. 1.0: above 0.95, recall 1/4.
    assert [(f, r) for f, r, _ in rows] == [(0.5, 0.75), (0.9, 0.5), (1.0, 0.25)]
    assert [t for *_, t in rows] == [0.55, 0.9, 0.99]
    for floor, recall, cut in rows:  # each cut-off really gives what it claims
        assert (negatives < cut).mean() >= floor and (positives >= cut).mean() == recall


def test_recall_at_specificity_is_nan_when_a_label_is_missing():
    from lib.metrics import recall_at_specificity

    ((floor, recall, cut),) = recall_at_specificity([1, 1], [0.2, 0.8], floors=(0.97,))
    assert floor == 0.97 and math.isnan(recall) and math.isnan(cut)
