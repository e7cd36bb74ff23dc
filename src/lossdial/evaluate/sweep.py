"""Lambda x threshold sweeps and operating-point selection.

``sweep`` scores a split for K lambda values with one backbone pass; ``SweepResult`` holds the [K, N]
scores, the labels and a per-lambda metric table, and ``SweepResult.pick`` chooses (lambda, threshold)
for a constraint and an objective, e.g. the highest precision at recall >= 0.95::

    result = sweep(model, task.val, parse_lambda_grid("tau=0:3:31"), space, transform=task.normalizer)
    point = result.pick("recall>=0.95", "precision")
    point.lam, point.threshold            # predict positive when score >= threshold

What a sweep writes (``lossdial sweep``, under ``RUN/sweeps/``):

- ``<split>.csv`` / ``<split>.json`` (:meth:`SweepResult.to_csv` / :meth:`SweepResult.to_json`): the
  summary, ONE row per lambda: the threshold-free metrics (``auc``, ``ap``, ``brier``, ``ece``, the best
  F1 over all thresholds ``f1`` and where it is reached ``f1_threshold``, ``precision@recall=r``,
  ``recall@precision=p``) and the metrics at the default decision threshold (``threshold``, usually 0.5:
  ``precision``, ``recall``, ``f1_at_threshold``, ``accuracy``, ``cost``, ...).
- ``<split>_curves.csv`` (:meth:`SweepResult.to_curves_csv`): every operating point, one row per
  (lambda, threshold) with the columns ``lambda.<name>``, ``threshold``, ``tp``, ``fp``, ``fn``, ``tn``
  (unweighted counts when predicting positive for ``score >= threshold``), ``tpr``, ``fpr`` and
  ``precision`` at the stated prevalence pi: ``pi*tpr / (pi*tpr + (1-pi)*fpr)``. Thresholds are the
  split's distinct scores, highest first; a lambda with more than ``max_points`` (1024) of them is thinned
  by :func:`thin_curve`.

Picking is O(K n log n): per lambda, one sort of the scores gives every threshold's confusion counts.

Multi-class runs (:class:`MultiClassSweepResult`): the knob is the post-hoc adjustment t (scores
``z_c - t log pi_c``), so the sweep is one row per (lambda, t) with every multi-class metric at a deployment
class prior; ``<split>.csv`` holds the ``lambda.<name>`` columns, ``adjustment`` and the scalar metrics,
``<split>.json`` the same rows with ``per_class_recall`` / ``per_class_precision``. No curves file.
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

from lossdial.evaluate.classification import binary_metrics, counts_at, prevalence_weights
from lossdial.evaluate.multiclass import (
    DEFAULT_T_GRID,
    MULTICLASS_KEYS,
    MULTICLASS_MAXIMIZE,
    MULTICLASS_MINIMIZE,
    SHOT_THRESHOLDS,
    adjusted_probs,
    multiclass_metrics,
    shot_groups,
)
from lossdial.evaluate.scoring import score_lambdas

MAXIMIZE = ("precision", "recall", "f1", "balanced_accuracy", "accuracy", "ap", "auc")
MINIMIZE = ("cost", "brier", "ece")
#: objectives that depend on the threshold (chosen per lambda over all thresholds)
THRESHOLD_OBJECTIVES = ("precision", "recall", "f1", "balanced_accuracy", "accuracy", "cost")
#: by default no threshold is chosen that rests on fewer validation true positives than this
MIN_TP = 5
#: at most this many thresholds per lambda in a curves file
MAX_CURVE_POINTS = 1024
_CONSTRAINT = re.compile(r"^\s*(recall|precision)\s*>=\s*([0-9]*\.?[0-9]+)\s*$")
_MC_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+)\s*$")


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
        other = _metric_name(text)
        if other in MULTICLASS_KEYS:
            raise ValueError(f"constraint {text!r}: {other} is a multi-class metric; a binary run's constraint is "
                             f"on recall or precision, e.g. 'recall>=0.95' or 'precision>=0.9'")
        raise ValueError(f"constraint {text!r} must look like 'recall>=0.95' or 'precision>=0.9'")
    value = float(m.group(2))
    if not 0 < value <= 1:
        raise ValueError(f"constraint {text!r}: the level must be in (0, 1]")
    return m.group(1), value


def _metric_name(text: str) -> str:
    """The metric a constraint text names (the part before its comparison), for error messages."""
    return re.split(r"[<>=]", str(text), maxsplit=1)[0].strip()


def parse_multiclass_constraint(text: str | None) -> tuple[str, float] | None:
    """A multi-class run's constraint: ``"few_shot_accuracy>=0.7"`` -> ("few_shot_accuracy", 0.7); None/"" -> None.

    ``>=`` for the metrics one maximises (:data:`MULTICLASS_MAXIMIZE`, level in (0, 1]); ``<=`` for those one
    minimises (:data:`MULTICLASS_MINIMIZE`: nll, ece, brier; level > 0). The direction follows from the metric.
    """
    if text is None or not str(text).strip():
        return None
    valid = (f"one of {', '.join(m + '>=v' for m in MULTICLASS_MAXIMIZE)} (v in (0, 1]), or "
             f"{', '.join(m + '<=v' for m in MULTICLASS_MINIMIZE)}")
    m = _MC_CONSTRAINT.match(str(text))
    name = m.group(1) if m else _metric_name(text)
    if name in MULTICLASS_KEYS and m:
        op, value = m.group(2), float(m.group(3))
        want = ">=" if name in MULTICLASS_MAXIMIZE else "<="
        if op != want:
            raise ValueError(f"constraint {text!r}: {name} is {'maximised' if want == '>=' else 'minimised'}, "
                             f"so its constraint is '{name}{want}v'")
        if want == ">=" and not 0 < value <= 1:
            raise ValueError(f"constraint {text!r}: the level must be in (0, 1]")
        if want == "<=" and not value > 0:
            raise ValueError(f"constraint {text!r}: the level must be > 0")
        return name, value
    if name in MULTICLASS_KEYS:
        raise ValueError(f"constraint {text!r} must look like '{name}>=0.7' ({valid})")
    if name in MAXIMIZE + MINIMIZE + ("precision", "recall"):
        raise ValueError(f"constraint {text!r}: {name} is a binary metric; a multi-class run's constraint is {valid}")
    raise ValueError(f"constraint {text!r} names no multi-class metric; a multi-class run's constraint is {valid}")


#: two objective (or tie-break measure) values closer than this, relative to max(1, |value|), are a tie
TIE_TOLERANCE = 1e-9


def _near_best(values: np.ndarray) -> np.ndarray:
    """Which of ``values`` (higher is better; NaN is worst) tie with the best, up to :data:`TIE_TOLERANCE`."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).any():
        return np.ones(len(v), bool)  # undefined everywhere: the measure says nothing, keep them all
    top = np.nanmax(v)
    return np.isfinite(v) & (v >= top - TIE_TOLERANCE * max(1.0, abs(top)))


def grid_coordinates(lambdas: Sequence[Mapping[str, float]], extra: Sequence[float] | None = None) -> np.ndarray:
    """Grid-step coordinates [K, D] of lambda points: per name, the rank of the value among that name's distinct
    values (so a cartesian grid, evenly or log spaced, is the integer lattice); ``extra``, one more value per
    point (the multi-class adjustment t), becomes one more coordinate the same way."""
    names = list(lambdas[0]) if len(lambdas) else []
    cols = [[float(lam[n]) for lam in lambdas] for n in names]
    if extra is not None:
        cols.append([float(v) for v in extra])
    out = np.zeros((len(lambdas), len(cols)))
    for d, col in enumerate(cols):
        out[:, d] = np.searchsorted(np.unique(col), col)
    return out


def break_ties(tied: Sequence[int], measures: Sequence[np.ndarray], coords: np.ndarray) -> int:
    """The one point of ``tied`` (indices of points that tie on the objective) that pick returns.

    1. ``measures``, in order (each [K], higher is better, NaN worst): keep the tied points whose value ties with
       the best among them (up to :data:`TIE_TOLERANCE`). These are threshold-free validation measures of each
       point's model, e.g. AUC then -Brier: among equally good operating points, the better model.
    2. Still tied: the centre of the widest tied plateau, not its edge. The tied points are split into connected
       runs on the grid (``coords``: :func:`grid_coordinates`; two points are neighbours when every coordinate
       differs by at most one grid step); the largest run wins (equal sizes: the run holding the earliest grid
       index), and within it the point nearest its centroid (equal distances: the earlier grid index). On a
       one-name grid this is the median of the longest contiguous run of tied lambdas (the lower median for an
       even run).
    """
    idx = sorted(int(i) for i in tied)
    for m in measures:
        if len(idx) == 1:
            return idx[0]
        vals = np.asarray(m, dtype=float)[idx]
        idx = [i for i, keep in zip(idx, _near_best(vals)) if keep]
    if len(idx) == 1:
        return idx[0]
    pts = np.asarray(coords, dtype=float)[idx]
    comp = list(range(len(idx)))  # union-find over Chebyshev-adjacent points

    def root(a: int) -> int:
        while comp[a] != a:
            comp[a] = comp[comp[a]]
            a = comp[a]
        return a
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            if np.max(np.abs(pts[a] - pts[b]), initial=0.0) <= 1.0 + 1e-9:
                comp[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for a in range(len(idx)):
        groups.setdefault(root(a), []).append(a)
    run = max(groups.values(), key=lambda g: (len(g), -min(g)))  # members are positions in idx (grid order)
    centre = pts[run].mean(axis=0)
    best, best_dist = run[0], math.inf
    for a in run:  # in grid order: a later point must be nearer by more than rounding to win
        dist = float(np.sum((pts[a] - centre) ** 2))
        if dist < best_dist - 1e-9:
            best, best_dist = a, dist
    return idx[best]


def clopper_pearson_lower(successes: np.ndarray, n: int, confidence: float = 0.95) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of a binomial proportion (exact, via the beta quantile)."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=float)
    lower = beta.ppf(1 - confidence, np.maximum(k, 1), n - k + 1)
    return np.where(k > 0, lower, 0.0)


def clopper_pearson_upper(successes: np.ndarray, n: int, confidence: float = 0.95) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound of a binomial proportion (exact, via the beta quantile)."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=float)
    upper = beta.ppf(confidence, k + 1, np.maximum(n - k, 1))
    return np.where(k < n, upper, 1.0)


def precision_at_prevalence(tpr, fpr, prevalence: float) -> np.ndarray:
    """Precision when positives make up a fraction pi of the population: pi*TPR / (pi*TPR + (1-pi)*FPR).

    NaN where nothing would be predicted positive (TPR = FPR = 0).
    """
    tpr, fpr = np.asarray(tpr, dtype=float), np.asarray(fpr, dtype=float)
    num = prevalence * tpr
    den = num + (1 - prevalence) * fpr
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def conservative_precision_lower(tp, n_pos: int, fp, n_neg: int, prevalence: float,
                                 confidence: float = 0.95) -> np.ndarray:
    """A lower confidence bound on precision at the deployment prevalence pi.

    Precision at pi is pi*TPR / (pi*TPR + (1-pi)*FPR), increasing in TPR and decreasing in FPR, so with
    alpha = 1 - confidence it is bounded below by putting in a one-sided Clopper-Pearson lower bound on
    TPR (tp of n_pos) and an upper bound on FPR (fp of n_neg), each at confidence 1 - alpha/2 (Bonferroni:
    both hold together with probability >= 1 - alpha). This bounds precision where it is reported, at pi;
    a bound on the raw validation tp / (tp + fp) would be one at the validation prevalence.
    """
    half = 1 - (1 - confidence) / 2
    tpr_lo = clopper_pearson_lower(tp, n_pos, half)
    fpr_hi = clopper_pearson_upper(fp, n_neg, half)
    return np.nan_to_num(precision_at_prevalence(tpr_lo, fpr_hi, prevalence), nan=0.0)


def exact_intervals(counts: Mapping[str, int], prevalence: float, confidence: float = 0.95) -> dict[str, list]:
    """Two-sided exact intervals for recall and for precision at the prevalence pi, from unweighted counts.

    recall: Clopper-Pearson on tp of the positives (each tail alpha/2). precision at pi: pi*TPR / (pi*TPR +
    (1-pi)*FPR) is increasing in TPR and decreasing in FPR, so it lies between its values at (TPR_lo, FPR_hi)
    and (TPR_hi, FPR_lo) whenever both Clopper-Pearson intervals (each tail alpha/4, Bonferroni) hold. Unlike the
    percentile bootstrap these do not collapse to a point when a count is 0 or full (e.g. 21 of 21 positives
    found and no false positive: the bootstrap interval of precision is [1, 1]). An undefined end is NaN.
    """
    alpha = 1 - confidence
    tp, fp, n_pos, n_neg = counts["tp"], counts["fp"], counts["positives"], counts["negatives"]
    out: dict[str, list] = {}
    if n_pos:
        out["recall"] = [float(clopper_pearson_lower(tp, n_pos, 1 - alpha / 2)),
                         float(clopper_pearson_upper(tp, n_pos, 1 - alpha / 2))]
    if n_pos and n_neg:
        q = 1 - alpha / 4
        tpr = (clopper_pearson_lower(tp, n_pos, q), clopper_pearson_upper(tp, n_pos, q))
        fpr = (clopper_pearson_lower(fp, n_neg, q), clopper_pearson_upper(fp, n_neg, q))
        out["precision"] = [float(precision_at_prevalence(tpr[0], fpr[1], prevalence)),
                            float(precision_at_prevalence(tpr[1], fpr[0], prevalence))]
    return out


def best_certifiable(metric: str, n_pos: int, n_neg: int, prevalence: float, confidence: float) -> float:
    """The largest lower bound ``pick(conservative=True)`` can reach on this split, whatever the scores.

    recall: every positive found, (1 - confidence)^(1/n_pos). precision: every positive found and no
    negative predicted positive, from TPR >= (alpha/2)^(1/n_pos) and FPR <= 1 - (alpha/2)^(1/n_neg).
    """
    if metric == "recall":
        return float(clopper_pearson_lower(np.array([n_pos]), n_pos, confidence)[0])
    return float(conservative_precision_lower(np.array([n_pos]), n_pos, np.array([0]), n_neg, prevalence,
                                              confidence)[0])


@dataclass
class ThresholdCurve:
    """Every distinct threshold of one score vector (descending) with weighted confusion counts."""

    thresholds: np.ndarray
    tp: np.ndarray  # weighted true positives when predicting s >= threshold
    fp: np.ndarray
    tp_count: np.ndarray  # unweighted true positives (exact confidence bounds, min_tp, curves files)
    pos: float  # total positive weight
    neg: float  # total negative weight
    n_pos: int
    fp_count: np.ndarray = field(default_factory=lambda: np.zeros(0))  # unweighted false positives
    n_neg: int = 0

    @classmethod
    def from_scores(cls, y: np.ndarray, s: np.ndarray, w: np.ndarray | None) -> "ThresholdCurve":
        w = np.ones(len(y)) if w is None else w
        order = np.argsort(-s, kind="mergesort")
        s_sorted, y_sorted, w_sorted = s[order], y[order], w[order]
        last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
        tp = np.cumsum(w_sorted * (y_sorted == 1))[last_of_run]
        fp = np.cumsum(w_sorted * (y_sorted == 0))[last_of_run]
        tpc = np.cumsum(y_sorted == 1)[last_of_run]
        fpc = np.cumsum(y_sorted == 0)[last_of_run]
        return cls(thresholds=s_sorted[last_of_run], tp=tp, fp=fp, tp_count=tpc,
                   pos=float(w[y == 1].sum()), neg=float(w[y == 0].sum()), n_pos=int((y == 1).sum()),
                   fp_count=fpc, n_neg=int((y == 0).sum()))

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
    #: unweighted tp, fp, fn, tn, positives, negatives behind the point on that split
    counts: dict[str, int] = field(default_factory=dict)
    #: with conservative=True: the lower confidence bound of the constrained metric at this point
    bound: float | None = None
    #: multi-class runs: the post-hoc adjustment strength t (scores z_c - t log pi_c); threshold is then None
    adjustment: float | None = None

    def to_dict(self) -> dict[str, Any]:
        knob = {"threshold": self.threshold} if self.adjustment is None else {"adjustment": self.adjustment}
        return {"lambda": self.lam, **knob, "objective": self.objective,
                "constraint": self.constraint, "metrics": self.metrics, "counts": self.counts,
                "bound": self.bound}


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
    _rows: dict[int, dict[str, float]] = field(default_factory=dict, repr=False)  # tie-break metrics per lambda

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

    @property
    def effective_prevalence(self) -> float:
        """The prevalence precision-type values are computed at: the given one, else the split's own."""
        if self.prevalence is not None:
            return float(self.prevalence)
        return float(self.labels.sum()) / max(1, len(self.labels))

    def curve(self, k: int) -> ThresholdCurve:
        """Every distinct threshold of lambda ``k`` with its confusion counts (weighted at the prevalence)."""
        return ThresholdCurve.from_scores(self.labels, self.scores[k], self.weights)

    def _constraint_values(self, curve: ThresholdCurve, metric: str, conservative: bool,
                           confidence: float) -> np.ndarray:
        """The value a constraint on `metric` is checked against at each threshold (estimate or bound)."""
        if not conservative:
            return curve.values(metric, self.costs)
        if metric == "recall":
            return clopper_pearson_lower(curve.tp_count, curve.n_pos, confidence)
        return conservative_precision_lower(curve.tp_count, curve.n_pos, curve.fp_count, curve.n_neg,
                                            self.effective_prevalence, confidence)

    def pick(self, constraint: str | None = None, objective: str = "f1", *, conservative: bool = False,
             confidence: float = 0.95, min_tp: int = MIN_TP) -> OperatingPoint:
        """Choose (lambda, threshold) on this split.

        ``constraint``: "recall>=r" or "precision>=p" (or None). ``objective``: one of
        :data:`MAXIMIZE` or :data:`MINIMIZE`. Threshold objectives (precision, recall, f1, balanced
        accuracy, accuracy, cost) are optimised over every distinct threshold of every lambda. Lambda
        objectives (ap, auc, brier, ece) choose the lambda; the threshold is then the one that meets the
        constraint with the best F1, or the default threshold without a constraint.

        ``min_tp`` (default 5): a threshold chosen on this split must have at least ``min_tp`` true
        positives on it (unweighted counts), so that no point rests on one or two positives (a
        ``precision>=0.99`` met by the single highest-scoring positive says nothing about deployment).
        It applies wherever the threshold is chosen from the scores (threshold objectives and any
        constraint); an unconstrained lambda objective keeps the default threshold, which is not chosen.

        ``conservative``: the constraint must hold for a lower confidence bound at ``confidence``, not
        for the point estimate (for screening users who must not fall below the target). recall: the
        one-sided Clopper-Pearson lower bound of tp / positives. precision: precision is reported at the
        prevalence pi, so it is bounded there, by :func:`conservative_precision_lower`: a lower bound on
        TPR and an upper bound on FPR (Clopper-Pearson, each at 1 - alpha/2) put into
        pi*TPR / (pi*TPR + (1-pi)*FPR) - not a bound on the raw tp / (tp + fp) of this split.

        Ties (objective values equal up to :data:`TIE_TOLERANCE`; common when changing lambda nearly shifts the
        scores monotonically, so the best point over thresholds is the same at many lambdas) go to the better
        secondary metric (recall for precision, precision for recall, else F1), then to the lambda with the higher
        validation AUC, then the lower Brier score at the prevalence, then to the centre of the widest run of tied
        lambdas on the grid (:func:`break_ties`) - never to the first grid point because it is first. Among
        thresholds of one lambda with equal objective and secondary values, the highest wins; the threshold is
        always a validation score (the midpoint to the next lower score would predict the same on this split).
        Raises :class:`NoFeasiblePoint` (with the closest point, the one whose constrained
        value - or bound - comes nearest among thresholds with at least ``min_tp`` true positives) if
        nothing qualifies; the message says why, including the best bound this split's size allows.
        """
        if objective not in MAXIMIZE + MINIMIZE:
            raise ValueError(f"objective must be one of {MAXIMIZE + MINIMIZE}, got {objective!r}")
        cons = parse_constraint(constraint)
        if conservative and cons is None:
            raise ValueError("conservative=True bounds a constraint (a Clopper-Pearson lower bound on recall, or "
                             "on precision at the prevalence); give one like 'recall>=0.95' or 'precision>=0.9'")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if isinstance(min_tp, bool) or not isinstance(min_tp, (int, np.integer)) or min_tp < 0:
            raise ValueError(f"min_tp must be an integer >= 0, got {min_tp!r}")
        chooses_threshold = cons is not None or objective in THRESHOLD_OBJECTIVES
        n_pos = int(self.labels.sum())
        if chooses_threshold and n_pos < min_tp:
            raise ValueError(f"the {self.split} split has {n_pos} positives, fewer than min_tp={min_tp} (--min-tp): "
                             f"no threshold can rest on {min_tp} true positives; use a larger validation split, "
                             f"or lower min_tp knowing the point rests on so few positives")
        sign = 1.0 if objective in MAXIMIZE else -1.0
        found: list[tuple[tuple[float, float], int, float]] = []  # each lambda's best (key, k, threshold)
        closest: tuple | None = None
        too_few = 0  # thresholds that meet the constraint but rest on fewer than min_tp true positives
        for k in range(len(self.lambdas)):
            curve = self.curve(k)
            enough = curve.tp_count >= min_tp if chooses_threshold else np.ones(len(curve.thresholds), bool)
            if cons is not None:
                cval = self._constraint_values(curve, cons[0], conservative, confidence)
                meets = cval >= cons[1] - 1e-12
                too_few += int((meets & ~enough).sum())
                ok = meets & enough
                if enough.any():
                    j = int(np.flatnonzero(enough)[np.argmax(cval[enough])])
                    if closest is None or cval[j] > closest[0]:
                        closest = (float(cval[j]), k, float(curve.thresholds[j]))
            else:
                ok = enough
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
            found.append((key, k, thr))
        if found:
            k, thr = self._break_ties(found)
            return self._point(k, thr, objective, constraint, (cons[0], conservative, confidence) if cons else None)
        if cons is None:
            raise ValueError("no lambda gives a defined value of the objective (is one class missing?)")
        raise self._infeasible(cons, constraint, objective, conservative, confidence, min_tp, too_few, closest)

    def _break_ties(self, found: list[tuple[tuple[float, float], int, float]]) -> tuple[int, float]:
        """The (lambda index, threshold) pick returns from each lambda's best (key, k, threshold).

        The tied set: the lambdas whose objective ties with the best (up to :data:`TIE_TOLERANCE`), then among
        those the ones whose secondary key ties with the best. Then :func:`break_ties`: the higher validation AUC
        (ranking: prevalence-free), then the lower Brier score at :attr:`effective_prevalence` (calibration at the
        deployment prevalence), then the centre of the widest tied run of lambdas on the grid.
        """
        keys = np.array([f[0] for f in found], dtype=float)
        tied = _near_best(keys[:, 0])
        tied &= _near_best(np.where(tied, keys[:, 1], np.nan))
        ks = [f[1] for f in found]
        tied_k = [ks[i] for i in np.flatnonzero(tied)]
        if len(tied_k) > 1:
            auc = np.full(len(self.lambdas), np.nan)
            neg_brier = np.full(len(self.lambdas), np.nan)
            for k in tied_k:
                m = self._lambda_metrics(k)
                auc[k], neg_brier[k] = m["auc"], -m["brier"]
            k = break_ties(tied_k, [auc, neg_brier], grid_coordinates(self.lambdas))
        else:
            k = tied_k[0]
        return k, found[ks.index(k)][2]

    def _lambda_metrics(self, k: int) -> dict[str, float]:
        """The table's metrics of lambda ``k``, computed for that lambda alone when the table is not built."""
        if self._table is not None:
            return self._table[k]["metrics"]
        if k not in self._rows:
            self._rows[k] = binary_metrics(self.labels, self.scores[k], threshold=self.threshold,
                                           prevalence=self.prevalence, costs=self.costs)
        return self._rows[k]

    def _infeasible(self, cons, constraint, objective, conservative, confidence, min_tp, too_few, closest
                    ) -> NoFeasiblePoint:
        metric, level = cons
        n_pos, n_neg = int(self.labels.sum()), int((self.labels == 0).sum())
        pi = self.effective_prevalence
        at_pi = f" at prevalence {pi:.4g}" if metric == "precision" else ""
        what = f"{constraint.strip()}{at_pi}"
        if conservative:
            what += f" (its {confidence:.0%} lower confidence bound)"
        parts = [f"no (lambda, threshold) on the {self.split} split meets {what}"]
        if too_few:
            parts.append(f"{too_few} (lambda, threshold) points meet it but rest on fewer than {min_tp} "
                         f"{self.split} true positives (min_tp, --min-tp {min_tp})")
        if conservative:
            cap = best_certifiable(metric, n_pos, n_neg, pi, confidence)
            if level > cap:
                if metric == "recall":
                    how = (f"with {n_pos} positives the best attainable one-sided {confidence:.0%} lower bound on "
                           f"recall is {cap:.4f} = {1 - confidence:.4g}^(1/{n_pos}) (every positive found)")
                else:
                    how = (f"with {n_pos} positives and {n_neg} negatives the best attainable {confidence:.0%} "
                           f"lower bound on precision at prevalence {pi:.4g} is {cap:.4f} (every positive found "
                           f"and no negative predicted positive)")
                parts.append(f"{how}, so {metric}>={level:g} cannot be certified: lower the target, lower "
                             f"--confidence, or use a larger validation split")
        point = None
        if closest is None:
            parts.append(f"no threshold has {min_tp} or more true positives")
        else:
            point = self._point(closest[1], closest[2], objective, constraint, (metric, conservative, confidence))
            parts.append("the closest is " + describe_point(point, pi))
        return NoFeasiblePoint("; ".join(parts), point)

    def _point(self, k: int, thr: float, objective: str, constraint: str | None,
               bounded: tuple[str, bool, float] | None = None) -> OperatingPoint:
        metrics = binary_metrics(self.labels, self.scores[k], threshold=thr, prevalence=self.prevalence,
                                 costs=self.costs)
        counts = counts_at(self.labels, self.scores[k], thr)
        bound = None
        if bounded is not None and bounded[1]:
            metric, _, confidence = bounded
            tp, fp = np.array([counts["tp"]]), np.array([counts["fp"]])
            bound = float(clopper_pearson_lower(tp, counts["positives"], confidence)[0] if metric == "recall"
                          else conservative_precision_lower(tp, counts["positives"], fp, counts["negatives"],
                                                            self.effective_prevalence, confidence)[0])
        return OperatingPoint(lam=dict(self.lambdas[k]), threshold=thr, index=k, objective=objective,
                              constraint=constraint, metrics=metrics, counts=counts, bound=bound)

    # ------------------------------------------------------------------ curves
    def curve_rows(self, max_points: int = MAX_CURVE_POINTS) -> list[dict[str, Any]]:
        """Every operating point: one row per (lambda, threshold), thresholds highest first.

        Each row: ``lambda`` (dict), ``threshold``, unweighted ``tp``, ``fp``, ``fn``, ``tn`` when predicting
        positive for ``score >= threshold``, ``tpr``, ``fpr`` and ``precision`` at the prevalence
        (:attr:`effective_prevalence`). All distinct scores are thresholds; a lambda with more than
        ``max_points`` is thinned by :func:`thin_curve`.
        """
        n_pos, n_neg = int(self.labels.sum()), int((self.labels == 0).sum())
        rows = []
        for k, lam in enumerate(self.lambdas):
            c = self.curve(k)
            tpr = c.tp_count / n_pos if n_pos else np.full(len(c.thresholds), np.nan)
            fpr = c.fp_count / n_neg if n_neg else np.full(len(c.thresholds), np.nan)
            prec = c.values("precision")  # negatives reweighted to the prevalence: pi*tpr / (pi*tpr + (1-pi)*fpr)
            for j in thin_curve(fpr, tpr, max_points):
                tp, fp = int(c.tp_count[j]), int(c.fp_count[j])
                rows.append({"lambda": dict(lam), "threshold": float(c.thresholds[j]), "tp": tp, "fp": fp,
                             "fn": n_pos - tp, "tn": n_neg - fp, "tpr": float(tpr[j]), "fpr": float(fpr[j]),
                             "precision": float(prec[j])})
        return rows

    def to_curves_csv(self, path: str | Path, max_points: int = MAX_CURVE_POINTS) -> int:
        """Write :meth:`curve_rows` as CSV (columns ``lambda.<name>``, threshold, tp, fp, fn, tn, tpr, fpr,
        precision); returns the number of rows. Written to a temporary file, then renamed."""
        rows = self.curve_rows(max_points)
        lam_keys = list(self.lambdas[0]) if self.lambdas else []
        cols = ["threshold", "tp", "fp", "fn", "tn", "tpr", "fpr", "precision"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow([f"lambda.{k}" for k in lam_keys] + cols)
            for r in rows:
                wr.writerow([r["lambda"][k] for k in lam_keys] + [csv_cell(r[c]) for c in cols])
        tmp.replace(path)
        return len(rows)

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
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow([f"lambda.{k}" for k in lam_keys] + met_keys)
            for r in rows:
                wr.writerow([r["lambda"][k] for k in lam_keys] + [csv_cell(r["metrics"][k]) for k in met_keys])


#: the scalar columns of a multi-class sweep's CSV (per-class lists are in the JSON only)
MULTICLASS_COLUMNS = MULTICLASS_KEYS + ("n",)
_SHOT_GROUP_OF = {"many_shot_accuracy": "many", "medium_shot_accuracy": "medium", "few_shot_accuracy": "few"}


@dataclass
class MultiClassSweepResult:
    """A multi-class run's split scored for K lambda values: ``logits[k, i, c]``; its operating points are the
    (lambda, t) pairs, t the post-hoc adjustment strength on a grid (scores ``z_c - t log pi_c``, pi the training
    prior; :func:`~lossdial.evaluate.multiclass.adjust_logits`).

    Every metric (:func:`~lossdial.evaluate.multiclass.multiclass_metrics`) is computed at the deployment class
    ``prior`` (``"train"``, ``"uniform"`` or C probabilities). The table has one row per (lambda, t), lambda-major,
    t in grid order. The multi-class counterpart of :class:`SweepResult` (same ``split``, ``lambdas``,
    ``table``, ``pick``, ``to_csv`` and ``to_json``).
    """

    lambdas: list[dict[str, float]]
    logits: np.ndarray
    labels: np.ndarray
    train_counts: list[int]
    adjustments: tuple[float, ...] = DEFAULT_T_GRID
    prior: Any = "train"
    split: str = "val"
    shot_thresholds: tuple[float, float] = SHOT_THRESHOLDS
    _table: list[dict[str, Any]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=float)
        self.labels = np.asarray(self.labels).astype(int)
        self.adjustments = tuple(float(t) for t in self.adjustments)
        self.train_counts = [int(v) for v in self.train_counts]
        K, N = len(self.lambdas), len(self.labels)
        if self.logits.ndim != 3 or self.logits.shape[:2] != (K, N):
            raise ValueError(f"logits must be [K={K}, N={N}, C], got {self.logits.shape}")
        if not self.adjustments:
            raise ValueError("the adjustment grid is empty: give at least one t")

    def scores(self, k: int, t: float) -> np.ndarray:
        """Class probabilities [N, C] at lambda ``k`` and adjustment ``t``: softmax(z - t log pi)."""
        return adjusted_probs(self.logits[k], self.train_counts, t)

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per (lambda, t): ``{"lambda": {...}, "adjustment": t, "metrics": {...}}``."""
        if self._table is None:
            self._table = [{"lambda": dict(lam), "adjustment": t, "metrics": multiclass_metrics(
                self.labels, self.scores(k, t), train_counts=self.train_counts, prior=self.prior,
                shot_thresholds=self.shot_thresholds)}
                for k, lam in enumerate(self.lambdas) for t in self.adjustments]
        return self._table

    def check_metric(self, metric: str, role: str) -> None:
        """``metric`` can be picked on / constrained here: a multi-class metric whose shot group has a class."""
        if metric not in MULTICLASS_KEYS:
            kind = "a binary metric" if metric in MAXIMIZE + MINIMIZE else "not a metric"
            raise ValueError(f"{role} {metric!r} is {kind}; on a multi-class run maximise one of "
                             f"{', '.join(MULTICLASS_MAXIMIZE)} or minimise one of {', '.join(MULTICLASS_MINIMIZE)}")
        group = _SHOT_GROUP_OF.get(metric)
        if group and not shot_groups(self.train_counts, self.shot_thresholds)[group]:
            hi, lo = self.shot_thresholds
            rule = {"many": f"> {hi:g}", "medium": f"{lo:g}-{hi:g}", "few": f"< {lo:g}"}[group]
            defined = [m for m in MULTICLASS_MAXIMIZE + MULTICLASS_MINIMIZE if _SHOT_GROUP_OF.get(m) is None
                       or shot_groups(self.train_counts, self.shot_thresholds)[_SHOT_GROUP_OF[m]]]
            raise ValueError(f"{role} {metric!r}: the {group}-shot group (classes with {rule} training samples) is "
                             f"empty in this run (training counts {self.train_counts}), so {metric} is undefined; "
                             f"use one of {', '.join(defined)}")

    def pick(self, constraint: str | None = None, objective: str = "balanced_accuracy") -> OperatingPoint:
        """Choose (lambda, t) on this split: the best ``objective`` among the rows that meet ``constraint``.

        ``constraint``: e.g. ``"few_shot_accuracy>=0.7"`` or ``"nll<=0.5"`` (:func:`parse_multiclass_constraint`).
        ``objective``: one of :data:`MULTICLASS_MAXIMIZE` (maximised) or :data:`MULTICLASS_MINIMIZE` (minimised).
        A row where a metric is undefined (NaN: its group's classes are all absent from this split) neither meets
        a constraint on it nor wins on it. Ties (up to :data:`TIE_TOLERANCE`) go to the higher balanced accuracy
        (unless that is the objective), then the lower NLL (unless that is the objective), then the centre of the
        widest run of tied rows on the lambda x t grid (:func:`break_ties`), not to the earlier row. Raises
        :class:`NoFeasiblePoint` with the row closest to the constraint when no row meets it.
        """
        self.check_metric(objective, "--minimize" if objective in MULTICLASS_MINIMIZE else "--maximize")
        cons = parse_multiclass_constraint(constraint)
        if cons is not None:
            self.check_metric(cons[0], "constraint")
        sign = 1.0 if objective in MULTICLASS_MAXIMIZE else -1.0
        value = np.full(len(self.table), np.nan)  # sign * objective of the rows that meet the constraint
        closest: tuple[float, int] | None = None
        for i, row in enumerate(self.table):
            m = row["metrics"]
            if cons is not None:
                v = m[cons[0]]
                if math.isnan(v):
                    continue
                margin = v - cons[1] if cons[0] in MULTICLASS_MAXIMIZE else cons[1] - v
                if closest is None or margin > closest[0]:
                    closest = (margin, i)
                if margin < -1e-12:
                    continue
            value[i] = sign * m[objective]
        if np.isfinite(value).any():
            return self._point(self._break_ties(np.flatnonzero(_near_best(value)), objective), objective, constraint)
        if cons is None or closest is None:
            what = cons[0] if cons is not None and closest is None else objective
            raise ValueError(f"no (lambda, t) on the {self.split} split gives a defined {what}: the classes it "
                             f"averages over are absent from the {self.split} split")
        point = self._point(closest[1], objective, constraint)
        raise NoFeasiblePoint(f"no (lambda, t) on the {self.split} split meets {constraint.strip()}; the closest is "
                              + describe_multiclass_point(point, cons[0]), point)

    def _break_ties(self, tied: Sequence[int], objective: str) -> int:
        """The row pick returns among rows tied on the objective: :func:`break_ties` with the higher balanced
        accuracy, then the lower NLL (each skipped when it is the objective), then the centre of the widest tied
        run on the grid of (lambda, t) coordinates."""
        if len(tied) == 1:
            return int(tied[0])
        measures = [np.array([sign * r["metrics"][key] for r in self.table], dtype=float)
                    for key, sign in (("balanced_accuracy", 1.0), ("nll", -1.0)) if key != objective]
        coords = grid_coordinates([r["lambda"] for r in self.table], [r["adjustment"] for r in self.table])
        return break_ties(tied, measures, coords)

    def _point(self, i: int, objective: str, constraint: str | None) -> OperatingPoint:
        row = self.table[i]
        return OperatingPoint(lam=dict(row["lambda"]), threshold=None, index=i // len(self.adjustments),
                              objective=objective, constraint=constraint, metrics=dict(row["metrics"]),
                              adjustment=row["adjustment"])

    def _header(self) -> dict[str, Any]:
        m = self.table[0]["metrics"]
        return {"split": self.split, "task": "multiclass", "prior": m["prior"], "prior_source": m["prior_source"],
                "adjustments": list(self.adjustments), "train_counts": self.train_counts,
                "counts": np.bincount(self.labels, minlength=self.logits.shape[2]).tolist(),
                "shot_thresholds": m["shot_thresholds"], "shot_groups": m["shot_groups"], "n": int(len(self.labels))}

    def to_json(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
        """Every row with every metric (per-class recall and precision included) and how they were computed."""
        from lossdial.rundir import write_json

        rows = [{"lambda": r["lambda"], "adjustment": r["adjustment"],
                 "metrics": {k: v for k, v in r["metrics"].items()
                             if k not in ("prior", "prior_source", "shot_groups", "shot_thresholds")}}
                for r in self.table]
        write_json(Path(path), {**self._header(), **(extra or {}), "rows": rows})

    def to_csv(self, path: str | Path) -> None:
        """One row per (lambda, t): the ``lambda.<name>`` columns, ``adjustment`` and the scalar metrics."""
        rows = self.table
        lam_keys = list(rows[0]["lambda"]) if rows else []
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow([f"lambda.{k}" for k in lam_keys] + ["adjustment", *MULTICLASS_COLUMNS])
            for r in rows:
                wr.writerow([r["lambda"][k] for k in lam_keys] + [r["adjustment"]]
                            + [csv_cell(r["metrics"][k]) for k in MULTICLASS_COLUMNS])


def describe_multiclass_point(point: OperatingPoint, constrained: str | None = None) -> str:
    """One line for a multi-class point: lambda, t, the constrained metric and the objective."""
    from lossdial.rundir import fmt_value

    lam = ", ".join(f"{k}={v:g}" for k, v in point.lam.items()) or "(fixed)"
    keys = [k for k in (constrained, point.objective) if k] if constrained != point.objective else [constrained]
    vals = ", ".join(f"{k} {fmt_value(point.metrics[k], '.4f')}" for k in keys)
    return f"lambda {lam}, t {point.adjustment:g}: {vals}"


def csv_cell(v: Any) -> Any:
    """A CSV cell: an undefined value (NaN / null, e.g. precision when nothing is predicted positive) is empty,
    which CSV readers such as pandas read back as missing."""
    from lossdial.rundir import is_undefined

    return "" if is_undefined(v) else v


def thin_curve(fpr: np.ndarray, tpr: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of the points of one curve (thresholds highest first) to keep, at most ``max_points``.

    All of them when there are no more than ``max_points``. Otherwise, in this order until the budget is
    spent: the first and last thresholds; the vertices of the ROC curve's upper convex hull (the points an
    optimal threshold choice can land on; evenly thinned if they alone exceed the budget); then points
    evenly spaced along the curve, by (fpr + tpr) / 2 (which grows from 0 to 1 along the curve, so both the
    positive-heavy and negative-heavy stretches get points). Returned sorted, without duplicates.
    """
    n = len(fpr)
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    keep = {0, n - 1}
    hull = _upper_hull(np.asarray(fpr, float), np.asarray(tpr, float))
    room = max_points - len(keep)
    hull = [i for i in hull if i not in keep]
    if len(hull) > room:
        hull = [hull[i] for i in np.unique(np.linspace(0, len(hull) - 1, room).round().astype(int))]
    keep.update(hull)
    room = max_points - len(keep)
    if room > 0:
        u = (np.nan_to_num(fpr) + np.nan_to_num(tpr)) / 2  # non-decreasing along the curve
        targets = np.linspace(u[0], u[-1], room + 2)[1:-1]
        extra = np.unique(np.clip(np.searchsorted(u, targets), 0, n - 1))
        extra = [int(i) for i in extra if int(i) not in keep][:room]
        keep.update(extra)
    return np.array(sorted(keep))


def _upper_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the upper convex hull of points sorted by x then y (Andrew's monotone chain)."""
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if cross >= 0:  # b is on or below the segment a-i: not a vertex of the upper hull
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def describe_point(point: OperatingPoint, prevalence: float) -> str:
    """One line for a point: lambda, threshold, recall/precision (with the bound) and the counts behind it."""
    m, c = point.metrics, point.counts
    lam = ", ".join(f"{k}={v:g}" for k, v in point.lam.items()) or "(fixed)"
    prec = "undefined" if math.isnan(m["precision"]) else f"{m['precision']:.4f}"
    text = f"lambda {lam}, threshold {point.threshold:.6g}: recall {m['recall']:.4f}, precision {prec} at " \
           f"prevalence {prevalence:.4g}"
    if point.bound is not None:
        metric = parse_constraint(point.constraint)[0]
        text += f" (lower confidence bound on {metric} {point.bound:.4f})"
    return text + (f"; tp {c['tp']}, fp {c['fp']}, fn {c['fn']}, tn {c['tn']} "
                   f"({c['positives']} positives, {c['negatives']} negatives)")


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
