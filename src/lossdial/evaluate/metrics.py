"""Binary classification metrics on positive-class scores (scikit-learn underneath).

Metric keys are stable names used by every command: ``auc``, ``ap``, ``brier``, ``ece``, ``f1``,
``f1_threshold``, ``precision@recall=0.9``, ``recall@precision=0.9``, ``precision``, ``recall``,
``balanced_accuracy``, ``accuracy``, ``acc_class0``, ``acc_class1``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
)


def expected_calibration_error(y: np.ndarray, score: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the positive-class probability with equal-width bins: sum_b |B|/n * |mean(y) - mean(p)|."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    bins = np.minimum((score * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(y[m].mean() - score[m].mean())
    return float(total)


def _pr_curve(y: np.ndarray, score: np.ndarray):
    precision, recall, thresholds = precision_recall_curve(y, score)
    # sklearn appends (precision=1, recall=0) without a threshold; drop it for threshold look-ups.
    return precision[:-1], recall[:-1], thresholds


def precision_at_recall(y, score, r: float) -> float:
    """Highest precision among thresholds whose recall is >= r."""
    p, rec, _ = _pr_curve(y, score)
    ok = rec >= r - 1e-12
    return float(p[ok].max()) if ok.any() else 0.0


def recall_at_precision(y, score, p_min: float) -> float:
    """Highest recall among thresholds whose precision is >= p_min (0 if none reaches it)."""
    p, rec, _ = _pr_curve(y, score)
    ok = p >= p_min - 1e-12
    return float(rec[ok].max()) if ok.any() else 0.0


def best_f1(y, score) -> tuple[float, float]:
    """(best F1 over all thresholds, the threshold that reaches it)."""
    p, rec, thr = _pr_curve(y, score)
    denom = p + rec
    f1 = np.where(denom > 0, 2 * p * rec / np.where(denom > 0, denom, 1), 0.0)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def binary_metrics(y: Sequence[int], score: Sequence[float], *, threshold: float = 0.5,
                   recall_levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99),
                   precision_levels: Sequence[float] = (0.5, 0.8, 0.9)) -> dict[str, float]:
    """All the metrics of METHODS.md section 5 for one score vector (score = P(positive))."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if y.shape != score.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {score.shape} must be equal-length vectors")
    if not np.isfinite(score).all():
        raise ValueError("scores contain NaN or inf")
    if set(np.unique(y)) - {0, 1}:
        raise ValueError("labels must be 0/1")
    out: dict[str, float] = {"n": float(len(y)), "n_pos": float(y.sum())}
    both = 0 < y.sum() < len(y)
    pred = (score >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    out["threshold"] = float(threshold)
    out["precision"] = tp / (tp + fp) if tp + fp else 0.0
    out["recall"] = tp / (tp + fn) if tp + fn else 0.0
    out["accuracy"] = float((pred == y).mean())
    out["acc_class0"] = float((pred[y == 0] == 0).mean()) if (y == 0).any() else math.nan
    out["acc_class1"] = float((pred[y == 1] == 1).mean()) if (y == 1).any() else math.nan
    out["brier"] = float(brier_score_loss(y, score))
    out["ece"] = expected_calibration_error(y, score)
    if both:
        out["auc"] = float(roc_auc_score(y, score))
        out["ap"] = float(average_precision_score(y, score))
        out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
        out["f1"], out["f1_threshold"] = best_f1(y, score)
        for r in recall_levels:
            out[f"precision@recall={r:g}"] = precision_at_recall(y, score, r)
        for p in precision_levels:
            out[f"recall@precision={p:g}"] = recall_at_precision(y, score, p)
    else:
        for k in ("auc", "ap", "balanced_accuracy", "f1", "f1_threshold"):
            out[k] = math.nan
    return out
