"""Lambda x threshold sweeps and operating-point selection.

``sweep`` scores a split for K lambda values with one backbone pass; ``SweepResult`` holds the [K, N]
scores, the labels and a per-lambda metric table, and ``SweepResult.pick`` chooses (lambda, threshold)
for a constraint and an objective, e.g. the highest precision at recall >= 0.95::

    result = sweep(model, task.val, parse_lambda_grid("tau=0:3:31"), space, transform=task.normalizer)
    point = result.pick("recall>=0.95", "precision")
    point.lam, point.threshold            # predict positive when score >= threshold

Picking is O(K n log n): per lambda, one sort of the scores gives every threshold's confusion counts.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from lossdial.evaluate.classification import binary_metrics, prevalence_weights
from lossdial.evaluate.scoring import score_lambdas

MAXIMIZE = ("precision", "recall", "f1", "balanced_accuracy", "accuracy", "ap", "auc")
MINIMIZE = ("cost", "brier", "ece")
#: objectives that depend on the threshold (chosen per lambda over all thresholds)
THRESHOLD_OBJECTIVES = ("precision", "recall", "f1", "balanced_accuracy", "accuracy", "cost")
_CONSTRAINT = re.compile(r"^\s*(recall|precision)\s*>=\s*([0-9]*\.?[0-9]+)\s*$")


class NoFeasiblePoint(ValueError):
    """No (lambda, threshold) meets the constraint; ``closest`` is the point that comes nearest."""

    def __init__(self, message: str, closest: "OperatingPoint"):
        super().__init__(message)
        self.closest = closest


def parse_constraint(text: str | None) -> tuple[str, float] | None:
    """``"recall>=0.95"`` -> ("recall", 0.95); None/"" -> None."""
    if text is None or not str(text).strip():
        return None
    m = _CONSTRAINT.match(str(text))
    if not m:
        raise ValueError(f"constraint {text!r} must look like 'recall>=0.95' or 'precision>=0.9'")
    value = float(m.group(2))
    if not 0 < value <= 1:
        raise ValueError(f"constraint {text!r}: the level must be in (0, 1]")
    return m.group(1), value


def clopper_pearson_lower(successes: np.ndarray, n: int, confidence: float = 0.95) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of a binomial proportion (exact, via the beta quantile)."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=float)
    lower = beta.ppf(1 - confidence, k, n - k + 1)
    return np.where(k > 0, lower, 0.0)


@dataclass
class ThresholdCurve:
    """Every distinct threshold of one score vector (descending) with weighted confusion counts."""

    thresholds: np.ndarray
    tp: np.ndarray  # weighted true positives when predicting s >= threshold
    fp: np.ndarray
    tp_count: np.ndarray  # unweighted true positives (for exact confidence bounds on recall)
    pos: float  # total positive weight
    neg: float  # total negative weight
    n_pos: int

    @classmethod
    def from_scores(cls, y: np.ndarray, s: np.ndarray, w: np.ndarray | None) -> "ThresholdCurve":
        w = np.ones(len(y)) if w is None else w
        order = np.argsort(-s, kind="mergesort")
        s_sorted, y_sorted, w_sorted = s[order], y[order], w[order]
        last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
        tp = np.cumsum(w_sorted * (y_sorted == 1))[last_of_run]
        fp = np.cumsum(w_sorted * (y_sorted == 0))[last_of_run]
        tpc = np.cumsum(y_sorted == 1)[last_of_run]
        return cls(thresholds=s_sorted[last_of_run], tp=tp, fp=fp, tp_count=tpc,
                   pos=float(w[y == 1].sum()), neg=float(w[y == 0].sum()), n_pos=int((y == 1).sum()))

    def values(self, name: str, costs: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        recall = self.tp / self.pos if self.pos else np.zeros_like(self.tp)
        pred_pos = self.tp + self.fp
        precision = np.divide(self.tp, pred_pos, out=np.zeros_like(self.tp), where=pred_pos > 0)
        if name == "recall":
            return recall
        if name == "precision":
            return precision
        if name == "f1":
            d = precision + recall
            return np.divide(2 * precision * recall, d, out=np.zeros_like(d), where=d > 0)
        tnr = 1 - self.fp / self.neg if self.neg else np.ones_like(self.fp)
        if name == "balanced_accuracy":
            return 0.5 * (recall + tnr)
        total = self.pos + self.neg
        if name == "accuracy":
            return (self.tp + (self.neg - self.fp)) / total
        if name == "cost":
            return (costs[0] * self.fp + costs[1] * (self.pos - self.tp)) / total
        raise ValueError(f"unknown threshold metric {name!r}")


@dataclass
class OperatingPoint:
    """A chosen (lambda, threshold): predict positive when ``score >= threshold`` at ``lam``."""

    lam: dict[str, float]
    threshold: float
    index: int  # which lambda of the sweep
    objective: str
    constraint: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # on the split it was chosen on

    def to_dict(self) -> dict[str, Any]:
        return {"lambda": self.lam, "threshold": self.threshold, "objective": self.objective,
                "constraint": self.constraint, "metrics": self.metrics}


@dataclass
class SweepResult:
    """Scores of one split for K lambda values: ``scores[k, i]`` = P(positive | x_i, lambda_k)."""

    lambdas: list[dict[str, float]]
    scores: np.ndarray
    labels: np.ndarray
    split: str = "val"
    prevalence: float | None = None  # None: the split's own
    costs: tuple[float, float] = (1.0, 1.0)
    threshold: float = 0.5  # default decision threshold for the table's precision/recall columns
    _table: list[dict[str, Any]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=float)
        self.labels = np.asarray(self.labels).astype(int)
        if self.scores.ndim != 2 or self.scores.shape != (len(self.lambdas), len(self.labels)):
            raise ValueError(f"scores must be [K={len(self.lambdas)}, N={len(self.labels)}], "
                             f"got {self.scores.shape}")

    @property
    def weights(self) -> np.ndarray | None:
        return prevalence_weights(self.labels, self.prevalence)

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per lambda: ``{"lambda": {...}, "metrics": {...}}`` (metrics at ``prevalence``)."""
        if self._table is None:
            self._table = [{"lambda": dict(lam), "metrics": binary_metrics(
                self.labels, s, threshold=self.threshold, prevalence=self.prevalence, costs=self.costs)}
                for lam, s in zip(self.lambdas, self.scores)]
        return self._table

    def pick(self, constraint: str | None = None, objective: str = "f1", *, conservative: bool = False,
             confidence: float = 0.95) -> OperatingPoint:
        """Choose (lambda, threshold) on this split.

        ``constraint``: "recall>=r" or "precision>=p" (or None). ``objective``: one of
        :data:`MAXIMIZE` or :data:`MINIMIZE`. Threshold objectives (precision, recall, f1, balanced
        accuracy, accuracy, cost) are optimised over every distinct threshold of every lambda. Lambda
        objectives (ap, auc, brier, ece) choose the lambda; the threshold is then the one that meets the
        constraint with the best F1, or the default threshold without a constraint.
        ``conservative``: a recall constraint must hold for the one-sided Clopper-Pearson lower bound at
        ``confidence`` (for screening users who must not fall below the target), not the point estimate.
        Ties go to the better secondary metric (recall for precision, precision for recall), then to the
        earlier lambda. Raises :class:`NoFeasiblePoint` (with the closest point) if nothing qualifies.
        """
        if objective not in MAXIMIZE + MINIMIZE:
            raise ValueError(f"objective must be one of {MAXIMIZE + MINIMIZE}, got {objective!r}")
        cons = parse_constraint(constraint)
        if conservative and (cons is None or cons[0] != "recall"):
            raise ValueError("conservative=True applies a Clopper-Pearson bound to a recall constraint; "
                             "give a constraint like 'recall>=0.95'")
        sign = 1.0 if objective in MAXIMIZE else -1.0
        w = self.weights
        best: tuple | None = None
        closest: tuple | None = None
        for k, s in enumerate(self.scores):
            curve = ThresholdCurve.from_scores(self.labels, s, w)
            if cons is not None:
                if cons[0] == "recall" and conservative:
                    cval = clopper_pearson_lower(curve.tp_count, curve.n_pos, confidence)
                else:
                    cval = curve.values(cons[0], self.costs)
                ok = cval >= cons[1] - 1e-12
                j = int(np.argmax(cval))
                if closest is None or cval[j] > closest[0]:
                    closest = (float(cval[j]), k, float(curve.thresholds[j]))
            else:
                ok = np.ones(len(curve.thresholds), dtype=bool)
            if not ok.any():
                continue
            if objective in THRESHOLD_OBJECTIVES:
                obj = sign * curve.values(objective, self.costs)
                secondary = {"precision": "recall", "recall": "precision"}.get(objective, "f1")
                sec = curve.values(secondary, self.costs)
                cand = np.flatnonzero(ok)
                j = cand[np.lexsort((-sec[cand], -obj[cand]))[0]]
                key = (float(obj[j]), float(sec[j]))
                thr = float(curve.thresholds[j])
            else:
                m = self.table[k]["metrics"][objective]
                if isinstance(m, float) and math.isnan(m):
                    continue
                if cons is not None:
                    f1 = curve.values("f1")
                    cand = np.flatnonzero(ok)
                    thr = float(curve.thresholds[cand[np.argmax(f1[cand])]])
                else:
                    thr = self.threshold
                key = (sign * float(m), 0.0)
            if best is None or key > best[0]:
                best = (key, k, thr)
        if best is None:
            if closest is None:
                raise ValueError("no lambda gives a defined value of the objective (is one class missing?)")
            point = self._point(closest[1], closest[2], objective, constraint)
            bound = " (Clopper-Pearson lower bound)" if conservative else ""
            raise NoFeasiblePoint(
                f"no (lambda, threshold) on the {self.split} split meets {constraint}{bound}; the closest is "
                f"{cons[0]}={closest[0]:.4f} at lambda {point.lam}, threshold {point.threshold:.6g}", point)
        return self._point(best[1], best[2], objective, constraint)

    def _point(self, k: int, thr: float, objective: str, constraint: str | None) -> OperatingPoint:
        metrics = binary_metrics(self.labels, self.scores[k], threshold=thr, prevalence=self.prevalence,
                                 costs=self.costs)
        return OperatingPoint(lam=dict(self.lambdas[k]), threshold=thr, index=k, objective=objective,
                              constraint=constraint, metrics=metrics)

    # ------------------------------------------------------------------ output
    def to_json(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
        from lossdial.rundir import write_json

        write_json(Path(path), {"split": self.split, "prevalence": self.prevalence, "costs": list(self.costs),
                                "threshold": self.threshold, "n": int(len(self.labels)),
                                "n_pos": int(self.labels.sum()), **(extra or {}), "rows": self.table})

    def to_csv(self, path: str | Path) -> None:
        rows = self.table
        lam_keys = list(rows[0]["lambda"]) if rows else []
        met_keys = list(rows[0]["metrics"]) if rows else []
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow([f"lambda.{k}" for k in lam_keys] + met_keys)
            for r in rows:
                wr.writerow([r["lambda"][k] for k in lam_keys] + [r["metrics"][k] for k in met_keys])


def _batches(data) -> tuple[torch.Tensor, np.ndarray]:
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, np.asarray(data.y)
    if isinstance(data, tuple) and len(data) == 2:
        return torch.as_tensor(data[0]), np.asarray(data[1])
    if isinstance(data, Iterable):
        xs, ys = zip(*list(data))
        return torch.cat([torch.as_tensor(x) for x in xs]), np.concatenate([np.asarray(y) for y in ys])
    raise TypeError("data must be a Split (x, y), a tuple (x, y) or an iterable of (x, y) batches")


def sweep(model, data, lambdas: Sequence[Mapping[str, float]] | None, space=None, *, transform=None,
          device: str | torch.device = "cpu", batch_size: int = 1024, prevalence: float | None = None,
          costs: tuple[float, float] = (1.0, 1.0), threshold: float = 0.5, split: str = "val",
          fixed_lambda: Mapping[str, float] | None = None) -> SweepResult:
    """Score `data` for every lambda (one backbone pass; K head passes) and wrap it in a SweepResult.

    An unconditioned (baseline) model is scored once; its row is labelled with ``fixed_lambda``.
    """
    x, y = _batches(data)
    scores = score_lambdas(model, x, lambdas, space, batch_size=batch_size, device=device, transform=transform)
    lams = [dict(lam) for lam in lambdas] if getattr(model, "conditioned", False) else [dict(fixed_lambda or {})]
    return SweepResult(lambdas=lams, scores=scores, labels=y, split=split, prevalence=prevalence, costs=costs,
                       threshold=threshold)
