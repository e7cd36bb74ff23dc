"""Binary classification metrics on positive-class scores (scikit-learn underneath).

Metric keys are stable names used by every command: ``auc``, ``ap``, ``brier``, ``ece``, ``f1``,
``f1_threshold``, ``f1_at_threshold``, ``precision@recall=0.9``, ``recall@precision=0.9``, ``precision``,
``recall``, ``balanced_accuracy``, ``accuracy``, ``acc_class0``, ``acc_class1``, ``cost``.

``f1`` is the best F1 over all thresholds (reached at ``f1_threshold``), a property of the score ranking;
``f1_at_threshold`` is the F1 at the decision threshold, beside ``precision`` and ``recall`` there.
``precision`` is undefined (NaN) when nothing is predicted positive at the threshold.

Prevalence: precision-type metrics depend on how common positives are, and an evaluation split is often
not the deployment (a balanced CIFAR test set, a carved validation set). Pass ``prevalence=p`` and every
metric is computed as if positives made up a fraction p: each negative gets the sample weight
``(1 - p) / p * n_pos / n_neg`` (recall, AUC and balanced accuracy are unchanged; precision, F1, AP,
Brier, ECE, accuracy and cost change).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
)

RECALL_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
PRECISION_LEVELS = (0.5, 0.8, 0.9)


def prevalence_weights(y: np.ndarray, prevalence: float | None) -> np.ndarray | None:
    """Sample weights that make the positives a fraction `prevalence` of the total weight."""
    if prevalence is None:
        return None
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    y = np.asarray(y)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    w_neg = (1 - prevalence) / prevalence * n_pos / n_neg
    return np.where(y == 1, 1.0, w_neg)


def expected_calibration_error(y: np.ndarray, score: np.ndarray, n_bins: int = 15,
                               sample_weight: np.ndarray | None = None) -> float:
    """ECE of the positive-class probability with equal-width bins: sum_b W_b/W * |mean(y) - mean(p)|."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    w = np.ones_like(score) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    bins = np.minimum((score * n_bins).astype(int), n_bins - 1)
    wb = np.bincount(bins, weights=w, minlength=n_bins)
    yb = np.bincount(bins, weights=w * y, minlength=n_bins)
    sb = np.bincount(bins, weights=w * score, minlength=n_bins)
    nz = wb > 0
    return float(np.sum(np.abs(yb[nz] - sb[nz])) / w.sum())


def pr_curve(y, score, sample_weight=None):
    """(precision, recall, thresholds) with one entry per distinct score (predict positive if s >= t).

    O(n log n): one sort. sklearn's trailing (precision=1, recall=0) point, which has no threshold, is dropped.
    """
    precision, recall, thresholds = precision_recall_curve(y, score, sample_weight=sample_weight)
    return precision[:-1], recall[:-1], thresholds


def precision_at_recall(y, score, r: float, sample_weight=None) -> float:
    """Highest precision among thresholds whose recall is >= r."""
    p, rec, _ = pr_curve(y, score, sample_weight)
    ok = rec >= r - 1e-12
    return float(p[ok].max()) if ok.any() else 0.0


def recall_at_precision(y, score, p_min: float, sample_weight=None) -> float:
    """Highest recall among thresholds whose precision is >= p_min (0 if none reaches it)."""
    p, rec, _ = pr_curve(y, score, sample_weight)
    ok = p >= p_min - 1e-12
    return float(rec[ok].max()) if ok.any() else 0.0


def f1_curve(p: np.ndarray, rec: np.ndarray) -> np.ndarray:
    denom = p + rec
    return np.where(denom > 0, 2 * p * rec / np.where(denom > 0, denom, 1), 0.0)


def best_f1(y, score, sample_weight=None) -> tuple[float, float]:
    """(best F1 over all thresholds, the threshold that reaches it)."""
    p, rec, thr = pr_curve(y, score, sample_weight)
    f1 = f1_curve(p, rec)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def confusion_at(y, score, threshold: float, sample_weight=None) -> dict[str, float]:
    """Weighted tp, fp, fn, tn when predicting positive for score >= threshold."""
    y = np.asarray(y).astype(int)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    pred = np.asarray(score) >= threshold
    return {"tp": float(w[pred & (y == 1)].sum()), "fp": float(w[pred & (y == 0)].sum()),
            "fn": float(w[~pred & (y == 1)].sum()), "tn": float(w[~pred & (y == 0)].sum())}


def counts_at(y, score, threshold: float) -> dict[str, int]:
    """Unweighted tp, fp, fn, tn at ``score >= threshold``, with the split's positives and negatives."""
    c = {k: int(round(v)) for k, v in confusion_at(y, score, threshold).items()}
    return {**c, "positives": c["tp"] + c["fn"], "negatives": c["fp"] + c["tn"]}


def binary_metrics(y: Sequence[int], score: Sequence[float], *, threshold: float = 0.5,
                   prevalence: float | None = None, costs: tuple[float, float] = (1.0, 1.0),
                   recall_levels: Sequence[float] = RECALL_LEVELS,
                   precision_levels: Sequence[float] = PRECISION_LEVELS) -> dict[str, float]:
    """All the metrics of METHODS.md section 5 for one score vector (score = P(positive)).

    ``threshold``: decision threshold for ``precision``, ``recall``, ``f1_at_threshold``, ``accuracy``,
    ``cost`` and the per-class accuracies (``f1`` is the best F1 over all thresholds, at ``f1_threshold``);
    ``precision`` is NaN (undefined) when nothing is predicted positive. ``prevalence``: see the module
    docstring (None: the split's own).
    ``costs`` = (cost of a false positive, cost of a false negative); ``cost`` is the expected cost per
    sample at the threshold.
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if y.shape != score.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {score.shape} must be equal-length vectors")
    if not np.isfinite(score).all():
        raise ValueError("scores contain NaN or inf")
    if set(np.unique(y)) - {0, 1}:
        raise ValueError("labels must be 0/1")
    w = prevalence_weights(y, prevalence)
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    out: dict[str, float] = {"n": float(len(y)), "n_pos": float(n_pos),
                             "prevalence": float(prevalence if w is not None else n_pos / max(1, len(y)))}
    c = confusion_at(y, score, threshold, w)
    tot = sum(c.values())
    out["threshold"] = float(threshold)
    out["precision"] = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else math.nan  # nothing predicted
    out["recall"] = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1_den = 2 * c["tp"] + c["fp"] + c["fn"]  # 2PR/(P+R) from counts: 0, not undefined, when tp = 0
    out["f1_at_threshold"] = 2 * c["tp"] / f1_den if f1_den else math.nan
    out["accuracy"] = (c["tp"] + c["tn"]) / tot
    out["acc_class0"] = c["tn"] / (c["tn"] + c["fp"]) if n_neg else math.nan
    out["acc_class1"] = out["recall"] if n_pos else math.nan
    out["cost"] = (costs[0] * c["fp"] + costs[1] * c["fn"]) / tot
    out["brier"] = float(brier_score_loss(y, score, sample_weight=w))
    out["ece"] = expected_calibration_error(y, score, sample_weight=w)
    if n_pos and n_neg:
        out["auc"] = float(roc_auc_score(y, score))
        out["ap"] = float(average_precision_score(y, score, sample_weight=w))
        out["balanced_accuracy"] = 0.5 * (out["acc_class0"] + out["acc_class1"])
        out["f1"], out["f1_threshold"] = best_f1(y, score, w)
        for r in recall_levels:
            out[f"precision@recall={r:g}"] = precision_at_recall(y, score, r, w)
        for p in precision_levels:
            out[f"recall@precision={p:g}"] = recall_at_precision(y, score, p, w)
    else:
        for k in ("auc", "ap", "balanced_accuracy", "f1", "f1_threshold"):
            out[k] = math.nan
    return out
