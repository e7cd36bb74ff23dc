"""Multi-class long-tailed metrics and the post-hoc logit-adjustment dial (METHODS.md section 6).

Metric keys (stable; the same in sweep tables, model cards and compare): ``accuracy``,
``balanced_accuracy``, ``worst_class_accuracy``, ``many_shot_accuracy``, ``medium_shot_accuracy``,
``few_shot_accuracy``, ``macro_f1``, ``nll``, ``ece``, ``brier``, ``per_class_recall``,
``per_class_precision``, plus the bookkeeping keys ``n``, ``prior``, ``prior_source``, ``shot_groups`` and
``shot_thresholds``.

Deployment prior. An evaluation split rarely has the deployment's class mix (CIFAR-10's test set is
balanced; a long-tailed deployment is not). Every prior-dependent metric is computed as if class c made up a
fraction q_c of the data: sample i of class y_i gets the weight ``w_i = q_{y_i} / n_{y_i}`` (n_c = the
number of evaluation samples of class c), so class c has total weight q_c and the weights sum to 1. Then

- ``accuracy`` = sum_i w_i [pred_i = y_i] = sum_c q_c recall_c;
- ``per_class_precision[c]`` = sum_{pred=c, y=c} w / sum_{pred=c} w (NaN when nothing carries weight
  predicted c: a never-predicted class has no precision);
- ``nll`` = sum_i w_i (-log max(p_{i,y_i}, 1e-12));
- ``brier`` = sum_i w_i sum_c (p_ic - [c = y_i])^2 (the multi-class Brier score: for two classes it is twice
  the binary ``brier`` of ``classification.py``, which scores the positive-class probability only);
- ``ece`` = top-label ECE: confidence max_c p_ic, correct [argmax = y], 15 equal-width bins on [0, 1],
  sum_b |sum_{i in b} w_i (correct_i - conf_i)| (``classification.expected_calibration_error``).

Prior-free: ``per_class_recall[c]`` = fraction of the class-c samples predicted c (it does not depend on q,
and is defined even where q_c = 0); ``balanced_accuracy`` = mean recall (the uniform-prior accuracy);
``worst_class_accuracy`` = min recall; ``many/medium/few_shot_accuracy`` = mean recall over the classes
whose *training* count is > ``shot_thresholds[0]`` / in [``shot_thresholds[1]``, ``shot_thresholds[0]``] /
< ``shot_thresholds[1]`` (default 100 / 20, Liu et al. 2019). Every key is always present; a group with no
class (CIFAR-10-LT at ratio 100 has no class under 20) is NaN, which JSON writers turn into ``null``.

``macro_f1`` = mean over classes of F1_c = 2 P_c R_c / (P_c + R_c) with P_c the prior-weighted precision and
R_c the recall (for q_c > 0 this is 2 tp_c / (2 tp_c + fp_c + fn_c) in weighted mass). A class never
predicted has no precision; it counts as F1 = 0 in the average (as does one with P_c + R_c = 0).

Classes absent from the evaluation split. Their recall is undefined: ``per_class_recall`` holds NaN and the
class is left out of every recall average (balanced, worst-class, shot groups: a group whose classes are all
absent is NaN) and out of ``macro_f1``. The prior-weighted metrics renormalise q over the classes present
(q_c / sum_{present} q), and ``prior`` reports that renormalised q (0 for an absent class); if no q mass is
left on the present classes, ``ValueError``. ``per_class_recall`` containing NaN is the signal that a split
lacks a class.

Predictions are ``argmax`` over classes; a tie goes to the lower class index (numpy's rule).

The dial: ``adjust_logits`` computes s_c = z_c - t log(pi_c) with pi the training prior (Menon et al. 2021;
t = 1 is consistent for the balanced error, larger t favours rarer classes, t < 0 favours the head). On a
fixed model the rarest class's recall never falls as t grows: s_rare - s_c changes by -t (log pi_rare -
log pi_c) >= 0 per unit t, so a sample predicted rare stays rare (ties keep their index order).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from lossdial.evaluate.classification import expected_calibration_error

SHOT_THRESHOLDS = (100, 20)
DEFAULT_T_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
MULTICLASS_MAXIMIZE = ("balanced_accuracy", "accuracy", "worst_class_accuracy", "many_shot_accuracy",
                       "medium_shot_accuracy", "few_shot_accuracy", "macro_f1")
MULTICLASS_MINIMIZE = ("nll", "ece", "brier")
MULTICLASS_KEYS = MULTICLASS_MAXIMIZE + MULTICLASS_MINIMIZE  # the scalar metrics (sweep columns, bootstrap)
PRIOR_TOLERANCE = 1e-6
PROB_CLIP = 1e-12
ECE_BINS = 15

_PRIOR_FIX = ("give 'train', 'uniform', or one probability per class in label order that are all >= 0 and "
              "sum to 1 (e.g. --prior 0.5,0.3,0.2)")


def _check_counts(train_counts: Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """Training counts per class as a float64 vector; every class must have trained on at least one sample."""
    c = np.asarray(train_counts, dtype=float)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError(f"train_counts must be one count per class, got shape {c.shape}")
    if num_classes is not None and len(c) != num_classes:
        raise ValueError(f"train_counts has {len(c)} entries but the scores have {num_classes} classes; "
                         f"pass the training count of every class in label order")
    if not np.isfinite(c).all() or (c != np.round(c)).any():
        raise ValueError(f"train_counts must be whole numbers, got {c.tolist()}")
    bad = np.flatnonzero(c <= 0)
    if len(bad):
        raise ValueError(f"class(es) {bad.tolist()} have no training samples (train_counts {c.astype(int).tolist()}); "
                         f"every class needs at least one training sample: lengthen the long tail's smallest "
                         f"class or drop the class")
    return c


def class_prior(spec: str | Sequence[float], train_counts: Sequence[int]) -> np.ndarray:
    """The deployment class prior q named by ``spec`` (float64, sums to 1).

    ``"train"``: train_counts / sum; ``"uniform"``: 1/C each; otherwise C non-negative numbers (a sequence or
    a comma string ``"0.1,0.2,0.7"``) summing to 1 within 1e-6 (renormalised to exactly 1).
    """
    counts = _check_counts(train_counts)
    C = len(counts)
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "train":
            return counts / counts.sum()
        if s == "uniform":
            return np.full(C, 1.0 / C)
        try:
            values = [float(v) for v in s.split(",")]
        except ValueError:
            raise ValueError(f"prior {spec!r} is neither 'train', 'uniform' nor a comma list of numbers; "
                             f"{_PRIOR_FIX}") from None
    else:
        try:
            values = [float(v) for v in np.asarray(spec, dtype=float).ravel()]
        except (TypeError, ValueError):
            raise ValueError(f"prior {spec!r} is not a list of numbers; {_PRIOR_FIX}") from None
        if np.ndim(spec) != 1:
            raise ValueError(f"prior must be a flat list of {C} numbers, got shape {np.shape(spec)}; {_PRIOR_FIX}")
    q = np.asarray(values, dtype=float)
    if len(q) != C:
        raise ValueError(f"prior has {len(q)} values but the task has {C} classes; {_PRIOR_FIX}")
    if not np.isfinite(q).all():
        raise ValueError(f"prior {q.tolist()} contains NaN or inf; {_PRIOR_FIX}")
    if (q < 0).any():
        raise ValueError(f"prior {q.tolist()} has negative entries (classes {np.flatnonzero(q < 0).tolist()}); "
                         f"{_PRIOR_FIX}")
    if abs(q.sum() - 1.0) > PRIOR_TOLERANCE:
        raise ValueError(f"prior {q.tolist()} sums to {q.sum():.6g}, not 1; {_PRIOR_FIX}")
    return q / q.sum()


def _prior_source(spec) -> str:
    if isinstance(spec, str) and spec.strip().lower() in ("train", "uniform"):
        return spec.strip().lower()
    return "given"


def adjust_logits(logits, train_counts: Sequence[int], t: float):
    """Post-hoc logit adjustment s_c = z_c - t log(pi_c), pi = train_counts / sum (Menon et al. 2021).

    ``logits``: a torch tensor (any device, any float dtype) or a numpy array, last axis = classes; the
    result has the input's type, dtype, device and shape.
    """
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"adjustment strength t must be a finite number, got {t}")
    counts = _check_counts(train_counts)
    log_pi = np.log(counts / counts.sum())
    shape = tuple(logits.shape)
    if len(shape) == 0 or shape[-1] != len(counts):
        raise ValueError(f"logits of shape {shape} do not end in the {len(counts)} classes of train_counts")
    if isinstance(logits, np.ndarray):
        dtype = logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float64
        return (logits.astype(dtype, copy=False) - (t * log_pi).astype(dtype)).astype(dtype, copy=False)
    import torch

    if isinstance(logits, torch.Tensor):
        dtype = logits.dtype if logits.is_floating_point() else torch.float32
        shift = torch.as_tensor(t * log_pi, dtype=dtype, device=logits.device)
        return logits.to(dtype) - shift
    raise TypeError(f"logits must be a torch tensor or a numpy array, got {type(logits).__name__}")


def parse_adjustments(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """The grid of adjustment strengths t: ``"lo:hi:n"`` (n evenly spaced values, ends included), ``"a,b,c"``, a
    sequence of numbers, or None/"" for :data:`DEFAULT_T_GRID`."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return DEFAULT_T_GRID
    fix = "give --adjustment as lo:hi:n (e.g. 0:2:9) or a comma list (e.g. 0,0.5,1)"
    try:
        if isinstance(text, str) and ":" in text:
            lo, hi, n = text.split(":")
            if not float(n).is_integer() or int(float(n)) < 1:
                raise ValueError(f"adjustment grid {text!r}: n must be a whole number >= 1; {fix}")
            n = int(float(n))
            ts = [float(lo)] if n == 1 else np.linspace(float(lo), float(hi), n).tolist()
        else:
            ts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        if str(exc).startswith("adjustment grid"):
            raise
        raise ValueError(f"adjustment grid {text!r} is not numbers; {fix}") from None
    if not ts or not all(math.isfinite(t) for t in ts):
        raise ValueError(f"adjustment grid {text!r} must be finite numbers; {fix}")
    return tuple(round(t, 12) for t in ts)


def shot_groups(train_counts: Sequence[int], shot_thresholds: Sequence[int] = SHOT_THRESHOLDS) -> dict[str, list[int]]:
    """Class indices per group: many = count > hi, medium = lo <= count <= hi, few = count < lo."""
    hi, lo = _check_thresholds(shot_thresholds)
    counts = _check_counts(train_counts)
    return {"many": np.flatnonzero(counts > hi).tolist(),
            "medium": np.flatnonzero((counts >= lo) & (counts <= hi)).tolist(),
            "few": np.flatnonzero(counts < lo).tolist()}


def _check_thresholds(shot_thresholds) -> tuple[int, int]:
    try:
        hi, lo = (float(v) for v in shot_thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"shot_thresholds must be two numbers (many-shot above, few-shot below), "
                         f"e.g. (100, 20); got {shot_thresholds!r}") from None
    if not (math.isfinite(hi) and math.isfinite(lo)) or lo < 0 or hi < lo:
        raise ValueError(f"shot_thresholds {list(shot_thresholds)} must be (many_above, few_below) with "
                         f"0 <= few_below <= many_above, e.g. (100, 20)")
    as_int = lambda v: int(v) if float(v).is_integer() else v  # noqa: E731
    return as_int(hi), as_int(lo)


def _check_inputs(y, probs, train_counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = _to_numpy(probs)
    y = _to_numpy(y)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, C] class probabilities, got shape {probs.shape}")
    N, C = probs.shape
    if y.shape != (N,):
        raise ValueError(f"labels of shape {y.shape} do not match probs of shape {probs.shape}")
    if N == 0:
        raise ValueError("no evaluation samples: the split is empty")
    if C < 2:
        raise ValueError(f"probs has {C} class column(s); a classifier needs at least 2")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise ValueError("labels must be integer class indices")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= C)
    if bad.any():
        raise ValueError(f"labels must be class indices 0..{C - 1}; found {np.unique(y[bad]).tolist()}")
    half = np.issubdtype(probs.dtype, np.floating) and probs.dtype.itemsize < 4  # float16 rows sum to 1 +- 1e-3
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or inf")
    if (probs < 0).any() or np.abs(probs.sum(1) - 1).max() > (1e-2 if half else 1e-4):
        raise ValueError("probs must be probabilities (non-negative rows summing to 1); pass softmax(logits), "
                         "not logits")
    counts = _check_counts(train_counts, C)
    return y, probs, counts


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor on any device
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _per_sample(y: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """The per-sample quantities every metric is a weighted sum of (computed once; resampled by bootstrap)."""
    N = len(y)
    pred = probs.argmax(1)
    p_true = probs[np.arange(N), y]
    sq = (probs ** 2).sum(1) - 2 * p_true + 1  # sum_c (p_c - onehot_c)^2
    return {"y": y, "pred": pred, "conf": probs.max(1), "nll": -np.log(np.maximum(p_true, PROB_CLIP)), "sq": sq}


def _summarise(s: dict[str, np.ndarray], C: int, q_req: np.ndarray, groups: dict[str, list[int]]) -> dict[str, Any]:
    y, pred = s["y"], s["pred"]
    n_c = np.bincount(y, minlength=C).astype(float)
    present = n_c > 0
    q = np.where(present, q_req, 0.0)
    if q.sum() <= 0:
        raise ValueError(f"the deployment prior {q_req.tolist()} puts no mass on the classes present in the "
                         f"evaluation split ({np.flatnonzero(present).tolist()}); choose a prior that covers them")
    q = q / q.sum()
    w = np.divide(q, n_c, out=np.zeros(C), where=present)[y]
    correct = (pred == y).astype(float)
    hits = np.bincount(y, weights=correct, minlength=C)
    recall = np.divide(hits, n_c, out=np.full(C, np.nan), where=present)
    tp_w = np.bincount(y, weights=w * correct, minlength=C)
    pred_w = np.bincount(pred, weights=w, minlength=C)
    precision = np.divide(tp_w, pred_w, out=np.full(C, np.nan), where=pred_w > 0)
    p0 = np.nan_to_num(precision, nan=0.0)
    f1_den = p0 + np.nan_to_num(recall, nan=0.0)
    f1 = np.divide(2 * p0 * np.nan_to_num(recall, nan=0.0), f1_den, out=np.zeros(C), where=f1_den > 0)

    def mean_recall(idx) -> float:
        r = recall[list(idx)]
        r = r[~np.isnan(r)]
        return float(r.mean()) if len(r) else math.nan

    rec_present = recall[present]
    return {
        "accuracy": float(np.sum(w * correct)),
        "balanced_accuracy": float(rec_present.mean()),
        "worst_class_accuracy": float(rec_present.min()),
        "many_shot_accuracy": mean_recall(groups["many"]),
        "medium_shot_accuracy": mean_recall(groups["medium"]),
        "few_shot_accuracy": mean_recall(groups["few"]),
        "macro_f1": float(f1[present].mean()),
        "nll": float(np.sum(w * s["nll"])),
        "ece": expected_calibration_error(correct, s["conf"], n_bins=ECE_BINS, sample_weight=w),
        "brier": float(np.sum(w * s["sq"])),
        "per_class_recall": [float(v) for v in recall],
        "per_class_precision": [float(v) for v in precision],
        "n": int(len(y)),
        "prior": [float(v) for v in q],
    }


def multiclass_metrics(y, probs, *, train_counts: Sequence[int], prior: str | Sequence[float] = "train",
                       shot_thresholds: Sequence[int] = SHOT_THRESHOLDS) -> dict[str, Any]:
    """Every multi-class metric of the module docstring for labels ``y`` [N] and probabilities ``probs`` [N, C].

    ``train_counts``: the training count of every class (label order) — the training prior and the shot
    groups come from it. ``prior``: the deployment class prior (``class_prior`` spec), default the training
    prior.
    """
    y, probs, counts = _check_inputs(y, probs, train_counts)
    C = probs.shape[1]
    q = class_prior(prior, counts)
    hi, lo = _check_thresholds(shot_thresholds)
    groups = shot_groups(counts, (hi, lo))
    out = _summarise(_per_sample(y, probs), C, q, groups)
    out.update(prior_source=_prior_source(prior), shot_groups=groups, shot_thresholds=[hi, lo])
    return out


def bootstrap_multiclass(y, probs, *, train_counts: Sequence[int], prior: str | Sequence[float] = "train",
                         n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                         keys: Sequence[str] = MULTICLASS_KEYS,
                         shot_thresholds: Sequence[int] = SHOT_THRESHOLDS) -> dict[str, list[float]]:
    """Per-class stratified bootstrap percentile intervals ``{key: [lo, hi]}`` of the scalar metrics.

    Each resample draws n_c samples with replacement from class c's samples, for every class, so every
    resample has the split's class counts. A resample where a metric is undefined (NaN) is left out of that
    metric's interval; [NaN, NaN] when no resample defines it (e.g. an empty shot group).
    """
    unknown = [k for k in keys if k not in MULTICLASS_KEYS]
    if unknown:
        raise ValueError(f"no bootstrap interval for {unknown}; choose from {list(MULTICLASS_KEYS)}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y, probs, counts = _check_inputs(y, probs, train_counts)
    C = probs.shape[1]
    q = class_prior(prior, counts)
    groups = shot_groups(counts, shot_thresholds)
    per = _per_sample(y, probs)
    by_class = [np.flatnonzero(y == c) for c in range(C)]
    by_class = [ix for ix in by_class if len(ix)]
    rng = np.random.default_rng(seed)
    draws = {k: np.empty(n_boot) for k in keys}
    for b in range(n_boot):
        ix = np.concatenate([rng.choice(members, len(members)) for members in by_class])
        m = _summarise({k: v[ix] for k, v in per.items()}, C, q, groups)
        for k in keys:
            draws[k][b] = m[k]
    out = {}
    for k, v in draws.items():
        v = v[~np.isnan(v)]
        out[k] = [float(np.percentile(v, 100 * alpha / 2)), float(np.percentile(v, 100 * (1 - alpha / 2)))] \
            if len(v) else [math.nan, math.nan]
    return out


def softmax(logits) -> np.ndarray:
    """Row softmax in float64 numpy (max-shifted), for torch or numpy logits."""
    z = _to_numpy(logits).astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def adjusted_probs(logits, train_counts: Sequence[int], t: float) -> np.ndarray:
    """Class probabilities at adjustment strength t: softmax(z - t log pi) (float64 numpy, [..., C])."""
    return softmax(adjust_logits(_to_numpy(logits).astype(np.float64), train_counts, t))


def dial_table(logits, y, train_counts: Sequence[int], ts: Sequence[float] = DEFAULT_T_GRID,
               prior: str | Sequence[float] = "train",
               shot_thresholds: Sequence[int] = SHOT_THRESHOLDS) -> list[dict[str, Any]]:
    """``[{"t": t, "metrics": multiclass_metrics(y, softmax(adjust_logits(logits, train_counts, t)))}]``
    for every t in ``ts`` (one model's logits [N, C]; the post-hoc dial)."""
    z = _to_numpy(logits)
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {z.shape}")
    if len(ts) == 0:
        raise ValueError("ts is empty: give at least one adjustment strength t")
    z = z.astype(np.float64)
    return [{"t": float(t), "metrics": multiclass_metrics(y, softmax(adjust_logits(z, train_counts, t)),
                                                          train_counts=train_counts, prior=prior,
                                                          shot_thresholds=shot_thresholds)}
            for t in ts]
