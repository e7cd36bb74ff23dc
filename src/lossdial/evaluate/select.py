"""Choose a named operating point on the validation split, then measure it once on test.

The order is the point of this module: ``choose_point`` sees only the validation sweep; the test split
is scored only after the point is fixed, at that one (lambda, threshold), with bootstrap intervals.

One operating-point notion for both task types: lambda plus the task's knob -- the decision threshold of a
binary run, the post-hoc adjustment strength t of a multi-class run (scores z_c - t log pi_c). ``sweep_split``,
``choose_point`` and ``select_point`` dispatch on the run's task type (``data.task``); a multi-class sweep is
a :class:`~lossdial.evaluate.sweep.MultiClassSweepResult` over (lambda, t), its metrics at a deployment class
prior, and its test split is scored once at the chosen (lambda, t) with per-class stratified bootstrap intervals.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lossdial.config import fixed_lambda as baseline_lambda
from lossdial.evaluate.classification import binary_metrics, counts_at
from lossdial.evaluate.multiclass import (
    adjusted_probs,
    bootstrap_multiclass,
    class_prior,
    multiclass_metrics,
    parse_adjustments,
)
from lossdial.evaluate.run import LoadedRun
from lossdial.evaluate.tasktype import shot_thresholds_of
from lossdial.evaluate.scoring import score_lambdas
from lossdial.evaluate.sweep import (
    MIN_TP,
    MultiClassSweepResult,
    OperatingPoint,
    SweepResult,
    exact_intervals,
    sweep,
)

BOOTSTRAP_KEYS = ("recall", "precision", "f1_at_threshold", "auc", "ap", "brier", "balanced_accuracy", "cost")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


#: the default lambda grid of `sweep` / `pick` when neither --lambda nor evaluate.lambda gives one:
#: this many points per conditioned name over the training support
DEFAULT_SWEEP_POINTS = 33


@dataclass
class SelectionSpec:
    """How to choose a point; see :meth:`SweepResult.pick` for ``conservative`` and ``min_tp``.

    Binary runs: ``objective`` (None: :func:`resolve_objective`'s default for the constraint), ``conservative``, ``confidence``, ``prevalence``, ``costs``,
    ``min_tp``. Multi-class runs (:meth:`MultiClassSweepResult.pick`): ``objective`` (None:
    ``"balanced_accuracy"``), ``prior`` (the deployment class prior, None: ``"train"``) and ``adjustments`` (the
    t grid, None: :data:`DEFAULT_T_GRID`); the binary-only options are refused there.
    """

    name: str
    constraint: str | None = None
    objective: str | None = None
    conservative: bool = False
    confidence: float = 0.95
    prevalence: float | None = None
    costs: tuple[float, float] = (1.0, 1.0)
    min_tp: int = MIN_TP  # no threshold is chosen on fewer validation true positives
    prior: str | Sequence[float] | None = None  # multi-class: the deployment class prior
    adjustments: str | Sequence[float] | None = None  # multi-class: the t grid

    def resolved_objective(self, task: str) -> str:
        """The objective, or the task type's default by :func:`resolve_objective`'s rule (multi-class
        ``balanced_accuracy``; binary: precision under a recall constraint, recall under a precision constraint,
        else ``f1``)."""
        if self.objective is not None:
            return self.objective
        return resolve_objective(task, self.constraint)


def resolve_objective(task: str, constraint: str | None, maximize: str | None = None, minimize: str | None = None,
                      *, prefix: str = "--") -> str:
    """The objective of a pick (``lossdial pick`` and ``LossDialClassifier.pick``): ``maximize`` or ``minimize``
    checked against the task type's metrics, else the default -- multi-class: ``balanced_accuracy``; binary:
    precision under a recall constraint, recall under a precision constraint, else ``f1``.

    ``prefix`` is how the two options are written in messages (``"--"`` for the CLI's flags, ``""`` for keyword
    arguments). Raises ``ValueError`` for both given, or a metric the task type does not maximise / minimise.
    """
    from lossdial.evaluate.multiclass import MULTICLASS_MAXIMIZE, MULTICLASS_MINIMIZE
    from lossdial.evaluate.sweep import MAXIMIZE, MINIMIZE, _metric_name

    multiclass = task == "multiclass"
    if maximize and minimize:
        raise ValueError(f"give {prefix}maximize or {prefix}minimize, not both")
    maxi, mini = (MULTICLASS_MAXIMIZE, MULTICLASS_MINIMIZE) if multiclass else (MAXIMIZE, MINIMIZE)
    if (maximize and maximize not in maxi) or (minimize and minimize not in mini):
        flag, value = (f"{prefix}maximize", maximize) if maximize else (f"{prefix}minimize", minimize)
        where = " on a multi-class run" if multiclass else ""
        raise ValueError(f"{flag} {value!r}{where}: {prefix}maximize takes {', '.join(maxi)}; {prefix}minimize takes "
                         f"{', '.join(mini)}")
    if maximize or minimize:
        return maximize or minimize
    if multiclass:
        return "balanced_accuracy"
    return {"recall": "precision", "precision": "recall"}.get(_metric_name(constraint or ""), "f1")


def run_prevalence(loaded: LoadedRun, prevalence: float | None) -> float:
    """The prevalence used for precision-type metrics: the user's, or the training prevalence."""
    return float(prevalence) if prevalence is not None else float(loaded.data["train_prevalence"])


def search_grid(loaded: LoadedRun, lambdas: Sequence[Mapping[str, float]] | None = None, *,
                given_as: str = "the lambdas given") -> tuple[list[dict[str, float]] | None, str]:
    """The lambda grid `sweep` and `pick` search, and where it comes from, in words.

    ``lambdas`` if given (described as ``given_as``, e.g. "--lambda"); else ``evaluate.lambda`` of the
    run's config; else :data:`DEFAULT_SWEEP_POINTS` points per name over the training support. A baseline
    run has no lambda (None): only thresholds are searched.
    """
    if not loaded.is_lct:
        knob = "thresholds" if loaded.task_type.name == "binary" else "the adjustment t"
        if lambdas:
            raise ValueError(f"this is a baseline run (fixed loss hyperparameters, no FiLM): it sweeps {knob} "
                             f"only; drop --lambda")
        return None, f"{knob} only (a baseline run has no lambda to vary)"
    from lossdial.train.loop import default_eval_grid

    names = list(loaded.space.names)
    if lambdas:
        grid, source = [dict(lam) for lam in lambdas], f"from {given_as}"
    else:
        grid = default_eval_grid(loaded.config, loaded.space, k=DEFAULT_SWEEP_POINTS)
        if loaded.config.evaluate.lambda_grid is not None:
            source = "from evaluate.lambda of the run's config"
        else:
            per = "" if len(names) == 1 else f", up to {DEFAULT_SWEEP_POINTS} per name,"
            source = f"over the training support{per} (the default: the run's config sets no evaluate.lambda)"
    what = f"value{'s' if len(grid) != 1 else ''} of {names[0]}" if len(names) == 1 else \
        f"combination{'s' if len(grid) != 1 else ''} of ({', '.join(names)})"
    return grid, f"{len(grid)} {what} {source}"


def _check_task_options(loaded: LoadedRun, *, prevalence=None, costs=(1.0, 1.0), prior=None,
                        adjustments=None) -> None:
    """Refuse the options of the other task type, naming the ones that apply (:mod:`~lossdial.evaluate.tasktype`
    for the prior and the prevalence; here for the costs and the t grid)."""
    tt = loaded.task_type
    tt.check_options(train_counts=loaded.train_counts, prevalence=prevalence, prior=prior)
    if tt.name == "multiclass" and tuple(costs) != (1.0, 1.0):
        raise ValueError("--cost (false-positive / false-negative costs) applies to binary runs; a multi-class "
                         "run is picked on its own metrics (--maximize / --minimize)")
    if tt.name != "multiclass" and adjustments is not None:
        raise ValueError("--adjustment (the post-hoc logit adjustment t) applies to multi-class runs; a binary run's "
                         "knob is its decision threshold, which sweep and pick search over already")


def sweep_split(loaded: LoadedRun, split: str, lambdas: Sequence[Mapping[str, float]] | None = None, *,
                prevalence: float | None = None, costs: tuple[float, float] = (1.0, 1.0), task=None,
                prior: str | Sequence[float] | None = None, adjustments: str | Sequence[float] | None = None
                ) -> SweepResult | MultiClassSweepResult:
    """Sweep a run's `split` over `lambdas` (default: :func:`search_grid`).

    Binary runs: every threshold, precision-type metrics at ``prevalence`` (None: the training prevalence).
    Multi-class runs: every (lambda, t), t from ``adjustments`` (:func:`parse_adjustments`; None: the default
    grid), every metric at the class ``prior`` (None: ``"train"``); the backbone runs once, the adjustment acts
    on the saved logits.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    _check_task_options(loaded, prevalence=prevalence, costs=costs, prior=prior, adjustments=adjustments)
    task = task if task is not None else loaded.task()
    lambdas, _ = search_grid(loaded, lambdas)
    if loaded.is_lct:
        for lam in lambdas:
            loaded.space.check_support(lam)
    if loaded.task_type.name == "multiclass":
        ts = parse_adjustments(adjustments)
        data = getattr(task, split)
        logits = score_lambdas(loaded.model, data.x, lambdas, loaded.space, device=loaded.device,
                               batch_size=loaded.config.evaluate.batch_size, transform=task.normalizer,
                               output="logits")
        lams = [dict(lam) for lam in lambdas] if loaded.is_lct else [dict(baseline_lambda(loaded.config))]
        return MultiClassSweepResult(lambdas=lams, logits=logits, labels=data.y.numpy(),
                                     train_counts=loaded.train_counts, adjustments=ts,
                                     prior="train" if prior is None else prior, split=split,
                                     shot_thresholds=shot_thresholds_of(loaded.config))
    return sweep(loaded.model, getattr(task, split), lambdas, loaded.space, transform=task.normalizer,
                 device=loaded.device, batch_size=loaded.config.evaluate.batch_size,
                 prevalence=run_prevalence(loaded, prevalence), costs=costs,
                 threshold=loaded.config.evaluate.threshold, split=split,
                 fixed_lambda=baseline_lambda(loaded.config))


def choose_point(val: SweepResult, spec: SelectionSpec) -> OperatingPoint:
    """Pick on the validation sweep only (this function never sees test data)."""
    if val.split != "val":
        raise ValueError("operating points are chosen on the validation split only")
    if isinstance(val, MultiClassSweepResult):
        return val.pick(spec.constraint, spec.resolved_objective("multiclass"))
    return val.pick(spec.constraint, spec.resolved_objective("binary"), conservative=spec.conservative, confidence=spec.confidence,
                    min_tp=spec.min_tp)


def bootstrap_metrics(y: np.ndarray, s: np.ndarray, threshold: float, *, prevalence: float | None,
                      costs: tuple[float, float], n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> dict[str, list[float]]:
    """Stratified bootstrap (positives and negatives resampled separately) percentile intervals.

    A resample where a metric is undefined (precision when nothing is predicted positive) is left out of
    that metric's interval; [NaN, NaN] (undefined) when no resample defines it.
    """
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws: dict[str, list[float]] = {k: [] for k in BOOTSTRAP_KEYS}
    for _ in range(n_boot):
        ix = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        m = binary_metrics(y[ix], s[ix], threshold=threshold, prevalence=prevalence, costs=costs,
                           recall_levels=(), precision_levels=())
        for k in BOOTSTRAP_KEYS:
            draws[k].append(m[k])
    out = {}
    for k, v in draws.items():
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]
        out[k] = [float(np.percentile(v, 100 * alpha / 2)), float(np.percentile(v, 100 * (1 - alpha / 2)))] \
            if len(v) else [math.nan, math.nan]
    return out


def measure_on_test(loaded: LoadedRun, point: OperatingPoint, task, *, prevalence: float, costs,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score the test split once at the fixed point; metrics plus bootstrap 95% intervals."""
    test = task.test
    lams = [point.lam] if loaded.is_lct else None
    s = score_lambdas(loaded.model, test.x, lams, loaded.space, device=loaded.device,
                      batch_size=loaded.config.evaluate.batch_size, transform=task.normalizer)[0]
    y = test.y.numpy()
    m = binary_metrics(y, s, threshold=point.threshold, prevalence=prevalence, costs=costs)
    ci = bootstrap_metrics(y, s, point.threshold, prevalence=prevalence, costs=costs, n_boot=n_boot, seed=seed)
    counts = counts_at(y, s, point.threshold)
    return {"metrics": m, "ci95": ci, "n_boot": n_boot, "counts": counts,
            "exact_ci95": exact_intervals(counts, prevalence)}


def select_point(loaded: LoadedRun, spec: SelectionSpec, *, lambdas=None, n_boot: int = 1000, task=None,
                 given_as: str = "the lambdas given") -> dict[str, Any]:
    """Choose on validation, fix, then measure on test. Returns the model card entry for the point.

    The entry holds the counts behind the point on each split (``counts.val`` / ``counts.test``: unweighted
    tp, fp, fn, tn, positives, negatives) and, with ``spec.conservative``, the bound the constraint was
    checked against (``val_lower_bound``). Warns when the point rests on fewer than ``spec.min_tp``
    validation true positives (only possible for a lambda objective without a constraint, which keeps the
    default threshold).
    """
    if not _NAME.match(spec.name):
        raise ValueError(f"point name {spec.name!r} must be 1-64 letters, digits, '_', '-' or '.'")
    if loaded.task_type.name == "multiclass":
        return _select_multiclass(loaded, spec, lambdas=lambdas, n_boot=n_boot, task=task, given_as=given_as)
    if spec.prior is not None or spec.adjustments is not None:
        _check_task_options(loaded, prior=spec.prior, adjustments=spec.adjustments)
    task = task if task is not None else loaded.task()
    prevalence = run_prevalence(loaded, spec.prevalence)
    grid, grid_text = search_grid(loaded, lambdas, given_as=given_as)
    val = sweep_split(loaded, "val", grid, prevalence=prevalence, costs=spec.costs, task=task)
    point = choose_point(val, spec)  # fixed here; test has not been read
    if point.counts["tp"] < spec.min_tp:
        warnings.warn(f"point {spec.name!r} keeps the default threshold {point.threshold:g}, where it has only "
                      f"{point.counts['tp']} validation true positives (fewer than min_tp={spec.min_tp}): its "
                      f"precision and recall rest on too few positives; add a constraint (--at) to choose the "
                      f"threshold", stacklevel=2)
    val_metrics = dict(point.metrics)
    test = measure_on_test(loaded, point, task, prevalence=prevalence, costs=spec.costs, n_boot=n_boot)
    return {
        "lambda": point.lam,
        "threshold": point.threshold,
        "objective": spec.resolved_objective("binary"),
        "constraint": spec.constraint,
        "conservative": spec.conservative,
        "confidence": spec.confidence if spec.conservative else None,
        "prevalence": prevalence,
        "costs": {"fp": spec.costs[0], "fn": spec.costs[1]},
        "chosen_on": "val",
        "lambdas_searched": len(val.lambdas),
        "lambda_grid": grid_text,
        "min_tp": spec.min_tp,
        "val_lower_bound": point.bound,
        "counts": {"val": point.counts, "test": test["counts"]},
        "n_pos": {"val": int(val.labels.sum()), "test": int(test["metrics"]["n_pos"])},
        "n": {"val": int(len(val.labels)), "test": int(test["metrics"]["n"])},
        "val": val_metrics,
        "test": test["metrics"],
        "test_ci95": test["ci95"],
        "test_exact_ci95": test["exact_ci95"],
        "n_boot": n_boot,
    }


def measure_multiclass_on_test(loaded: LoadedRun, point: OperatingPoint, task, *, prior, n_boot: int = 1000,
                               seed: int = 0) -> dict[str, Any]:
    """Score the test split once at the fixed (lambda, t): every multi-class metric at ``prior`` and per-class
    stratified bootstrap 95% intervals of the scalar ones (:func:`bootstrap_multiclass`)."""
    test = task.test
    lams = [point.lam] if loaded.is_lct else None
    z = score_lambdas(loaded.model, test.x, lams, loaded.space, device=loaded.device,
                      batch_size=loaded.config.evaluate.batch_size, transform=task.normalizer, output="logits")[0]
    probs = adjusted_probs(z, loaded.train_counts, point.adjustment)
    y = test.y.numpy()
    shots = shot_thresholds_of(loaded.config)
    m = multiclass_metrics(y, probs, train_counts=loaded.train_counts, prior=prior, shot_thresholds=shots)
    ci = bootstrap_multiclass(y, probs, train_counts=loaded.train_counts, prior=prior, n_boot=n_boot, seed=seed,
                              shot_thresholds=shots)
    return {"metrics": m, "ci95": ci, "n_boot": n_boot,
            "counts": np.bincount(y, minlength=len(loaded.train_counts)).tolist()}


def _select_multiclass(loaded: LoadedRun, spec: SelectionSpec, *, lambdas, n_boot: int, task, given_as: str
                       ) -> dict[str, Any]:
    """:func:`select_point` for a multi-class run: (lambda, t) chosen on validation, then test scored once."""
    binary_only = [flag for flag, given in (("--conservative", spec.conservative),
                                            ("--min-tp", spec.min_tp != MIN_TP)) if given]
    if binary_only:
        raise ValueError(f"{' and '.join(binary_only)} appl{'ies' if len(binary_only) == 1 else 'y'} to binary runs "
                         f"(a threshold chosen on validation positives); a multi-class run takes --maximize, "
                         f"--minimize, --at, --prior and --adjustment")
    _check_task_options(loaded, prevalence=spec.prevalence, costs=spec.costs, prior=spec.prior,
                        adjustments=spec.adjustments)
    prior = "train" if spec.prior is None else spec.prior
    q = class_prior(prior, loaded.train_counts)
    task = task if task is not None else loaded.task()
    grid, grid_text = search_grid(loaded, lambdas, given_as=given_as)
    val = sweep_split(loaded, "val", grid, prior=prior, adjustments=spec.adjustments, task=task)
    point = choose_point(val, spec)  # fixed here; test has not been read
    test = measure_multiclass_on_test(loaded, point, task, prior=prior, n_boot=n_boot)
    head = val.table[0]["metrics"]
    return {
        "task": "multiclass",
        "lambda": point.lam,
        "adjustment": point.adjustment,
        "prior": [float(v) for v in q],
        "prior_source": head["prior_source"],
        "objective": point.objective,
        "constraint": spec.constraint,
        "chosen_on": "val",
        "lambdas_searched": len(val.lambdas),
        "lambda_grid": grid_text,
        "adjustments_searched": list(val.adjustments),
        "shot_thresholds": head["shot_thresholds"],
        "shot_groups": head["shot_groups"],
        "counts": {"train": list(loaded.train_counts),
                   "val": np.bincount(val.labels, minlength=len(loaded.train_counts)).tolist(),
                   "test": test["counts"]},
        "n": {"val": int(len(val.labels)), "test": int(test["metrics"]["n"])},
        "val": _point_metrics(point.metrics),
        "test": _point_metrics(test["metrics"]),
        "test_ci95": test["ci95"],
        "n_boot": n_boot,
    }


def _point_metrics(m: Mapping[str, Any]) -> dict[str, Any]:
    """A multi-class metric map for the card: the metrics, without what the entry states once (prior, groups)."""
    return {k: v for k, v in m.items() if k not in ("prior", "prior_source", "shot_groups", "shot_thresholds")}
