"""Metrics against hand computations (pair counts, step sums over thresholds, per-bin sums), never against
the scikit-learn calls the library itself makes."""

import numpy as np
import pytest

from lossdial.evaluate import (
    binary_metrics,
    expected_calibration_error,
    precision_at_recall,
    prevalence_weights,
    recall_at_precision,
)

# ---- hand computations (plain NumPy loops; independent of the library and of scikit-learn) -------------


def hand_auc(y, s):
    """Mann-Whitney: P(score of a positive > score of a negative), ties counting one half."""
    d = s[y == 1][:, None] - s[y == 0][None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def hand_curve(y, s, w):
    """[(threshold, precision, recall)] for every distinct score, highest first (predict positive if s >= t)."""
    rows = []
    for t in sorted(set(s.tolist()), reverse=True):
        pred = s >= t
        tp, fp = w[pred & (y == 1)].sum(), w[pred & (y == 0)].sum()
        rows.append((t, tp / (tp + fp), tp / w[y == 1].sum()))
    return rows


def hand_ap(y, s, w):
    """AP = sum_k (R_k - R_{k-1}) P_k over the thresholds, R_0 = 0."""
    ap, prev = 0.0, 0.0
    for _, p, r in hand_curve(y, s, w):
        ap += (r - prev) * p
        prev = r
    return ap


def hand_ece(y, s, w, n_bins):
    """Equal-width bins [b/n, (b+1)/n) (the last one closed): sum_b |sum w y - sum w s| / sum w."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (s >= lo) & ((s < hi) if b < n_bins - 1 else (s <= hi))
        total += abs((w * y)[inside].sum() - (w * s)[inside].sum())
    return total / w.sum()


def hand_weights(y, p):
    """Each negative weighted (1 - p) / p * n_pos / n_neg, each positive 1."""
    n_pos, n_neg = (y == 1).sum(), (y == 0).sum()
    return np.where(y == 1, 1.0, (1 - p) / p * n_pos / n_neg)


# A small case worked out on paper: 5 positives, 5 negatives, distinct scores.
S10 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
Y10 = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 0])
# (precision, recall) at each threshold, highest first:
# (1, .2) (1/2, .2) (2/3, .4) (3/4, .6) (3/5, .6) (4/6, .8) (4/7, .8) (4/8, .8) (5/9, 1) (5/10, 1)


def test_small_case_worked_on_paper():
    m = binary_metrics(Y10, S10, threshold=0.55)
    # AUC: positive-negative pairs won 5 + 4 + 4 + 3 + 1 = 17 of 25
    assert m["auc"] == pytest.approx(17 / 25, abs=1e-12)
    # AP: recall steps .2 at P=1, .2 at 2/3, .2 at 3/4, .2 at 4/6, .2 at 5/9
    assert m["ap"] == pytest.approx(0.2 * (1 + 2 / 3 + 3 / 4 + 4 / 6 + 5 / 9), abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((S10 - Y10) ** 2), abs=1e-12)
    # at threshold 0.55: tp = 3 (0.9, 0.7, 0.6), fp = 1 (0.8)
    assert (m["precision"], m["recall"], m["accuracy"]) == pytest.approx((3 / 4, 3 / 5, 7 / 10), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(0.5 * (3 / 5 + 4 / 5), abs=1e-12)
    # best F1 over thresholds: 2PR/(P+R) is largest at (4/6, .8) -> 8/11 (5/9, 1 gives 5/7 < 8/11)
    assert m["f1"] == pytest.approx(8 / 11, abs=1e-12) and m["f1_threshold"] == 0.4
    # precision@recall: best precision among points with recall >= r
    assert m["precision@recall=0.5"] == pytest.approx(3 / 4, abs=1e-12)
    assert m["precision@recall=0.8"] == pytest.approx(4 / 6, abs=1e-12)
    assert m["precision@recall=0.9"] == pytest.approx(5 / 9, abs=1e-12)
    assert m["precision@recall=0.99"] == pytest.approx(5 / 9, abs=1e-12)
    # recall@precision: best recall among points with precision >= p
    assert m["recall@precision=0.5"] == pytest.approx(1.0, abs=1e-12)
    assert m["recall@precision=0.8"] == pytest.approx(0.2, abs=1e-12)
    assert m["recall@precision=0.9"] == pytest.approx(0.2, abs=1e-12)
    assert precision_at_recall(Y10, S10, 0.6) == pytest.approx(3 / 4, abs=1e-12)
    assert precision_at_recall(Y10, S10, 0.61) == pytest.approx(4 / 6, abs=1e-12)
    assert recall_at_precision(Y10, S10, 0.7) == pytest.approx(0.6, abs=1e-12)   # (3/4, .6); 2/3 < 0.7
    assert recall_at_precision(Y10, S10, 0.6) == pytest.approx(0.8, abs=1e-12)   # (4/6, .8)
    assert recall_at_precision(Y10, S10, 0.56) == pytest.approx(0.8, abs=1e-12)  # 5/9 = 0.556 < 0.56
    assert recall_at_precision(Y10, S10, 1.0) == pytest.approx(0.2, abs=1e-12)


def test_small_case_with_sample_weights():
    # negatives weighted 3: precision (3/(3+3)) and AP change, recall does not
    w = np.where(Y10 == 1, 1.0, 3.0)
    assert recall_at_precision(Y10, S10, 0.5, sample_weight=w) == pytest.approx(0.6, abs=1e-12)  # 3/(3+3)
    assert precision_at_recall(Y10, S10, 0.8, sample_weight=w) == pytest.approx(4 / 10, abs=1e-12)  # 4/(4+6)
    assert precision_at_recall(Y10, S10, 1.0, sample_weight=w) == pytest.approx(5 / 17, abs=1e-12)  # 5/(5+12)


def _random_case(n=400, seed=0, rounding=2):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    s = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(rounding)  # rounding: many tied scores
    return y, s


@pytest.mark.parametrize("rounding", [2, 6])
def test_metrics_at_own_prevalence_by_hand(rounding):
    y, s = _random_case(rounding=rounding)
    w = np.ones(len(y))
    m = binary_metrics(y, s, threshold=0.5)
    assert m["auc"] == pytest.approx(hand_auc(y, s), abs=1e-12)
    assert m["ap"] == pytest.approx(hand_ap(y, s, w), abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((s - y) ** 2), abs=1e-12)
    assert m["ece"] == pytest.approx(hand_ece(y, s, w, 15), abs=1e-12)
    assert m["prevalence"] == pytest.approx(y.mean())
    pred = s >= 0.5
    assert m["recall"] == pytest.approx((pred & (y == 1)).sum() / (y == 1).sum())
    assert m["precision"] == pytest.approx((pred & (y == 1)).sum() / pred.sum())
    curve = hand_curve(y, s, w)
    assert m["f1"] == pytest.approx(max(2 * p * r / (p + r) for _, p, r in curve), abs=1e-12)
    for r in (0.5, 0.9, 0.99):
        assert m[f"precision@recall={r:g}"] == pytest.approx(max(p for _, p, rr in curve if rr >= r), abs=1e-12)
    for p in (0.5, 0.8):
        assert m[f"recall@precision={p:g}"] == pytest.approx(
            max([r for _, pp, r in curve if pp >= p], default=0.0), abs=1e-12)


@pytest.mark.parametrize("prev", [0.01, 0.05, 0.5])
def test_metrics_at_a_chosen_prevalence_by_hand(prev):
    """Every negative weighted (1-p)/p * n_pos/n_neg: AP, Brier, ECE, precision, accuracy, cost by hand."""
    y, s = _random_case(seed=1)
    w = hand_weights(y, prev)
    np.testing.assert_allclose(prevalence_weights(y, prev), w, rtol=1e-14)
    assert w[y == 1].sum() / w.sum() == pytest.approx(prev)  # positives really are a fraction prev
    m = binary_metrics(y, s, threshold=0.5, prevalence=prev, costs=(1.0, 5.0))
    assert m["prevalence"] == prev
    assert m["auc"] == pytest.approx(hand_auc(y, s), abs=1e-12)  # class-wise weights leave AUC unchanged
    assert m["ap"] == pytest.approx(hand_ap(y, s, w), abs=1e-12)
    assert m["brier"] == pytest.approx((w * (s - y) ** 2).sum() / w.sum(), abs=1e-12)
    assert m["ece"] == pytest.approx(hand_ece(y, s, w, 15), abs=1e-12)
    pred = s >= 0.5
    tpr = (pred & (y == 1)).sum() / (y == 1).sum()
    fpr = (pred & (y == 0)).sum() / (y == 0).sum()
    assert m["recall"] == pytest.approx(tpr)
    assert m["precision"] == pytest.approx(tpr * prev / (tpr * prev + fpr * (1 - prev)), abs=1e-12)
    assert m["accuracy"] == pytest.approx(prev * tpr + (1 - prev) * (1 - fpr), abs=1e-12)
    assert m["cost"] == pytest.approx(1.0 * (1 - prev) * fpr + 5.0 * prev * (1 - tpr), abs=1e-12)
    curve = hand_curve(y, s, w)
    assert m["f1"] == pytest.approx(max(2 * p * r / (p + r) for _, p, r in curve), abs=1e-12)
    assert m["precision@recall=0.9"] == pytest.approx(max(p for _, p, r in curve if r >= 0.9), abs=1e-12)
    assert m["recall@precision=0.5"] == pytest.approx(
        max([r for _, p, r in curve if p >= 0.5], default=0.0), abs=1e-12)
    # the reweighting matters here: AP, Brier, ECE differ from the split's own prevalence
    own = binary_metrics(y, s, threshold=0.5)
    if abs(prev - y.mean()) > 0.1:
        assert abs(m["ap"] - own["ap"]) > 1e-3 and abs(m["brier"] - own["brier"]) > 1e-3
        assert abs(m["ece"] - own["ece"]) > 1e-3


def test_ece_by_hand():
    y = np.array([0, 1, 1, 0])
    s = np.array([0.1, 0.1, 0.9, 0.9])
    # two bins, each with mean score 0.1 / 0.9 and accuracy 0.5: |0.5-0.1|*0.5 + |0.5-0.9|*0.5
    assert expected_calibration_error(y, s, n_bins=10) == pytest.approx(0.4)
    # weights: the first bin's positive counts 3x -> bin 1: |3 - 0.4| / 6, bin 2: |1 - 1.8| / 6
    w = np.array([1.0, 3.0, 1.0, 1.0])
    assert expected_calibration_error(y, s, n_bins=10, sample_weight=w) == pytest.approx((2.6 + 0.8) / 6)
    # a score of exactly 1.0 falls in the last bin (not past it, nor in the first): |0 - 1| and |1 - 0.1|
    assert expected_calibration_error(np.array([0, 1]), np.array([1.0, 0.1]), n_bins=4) == pytest.approx(0.95)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="equal-length"):
        binary_metrics([0, 1, 1], [0.1, 0.2])
