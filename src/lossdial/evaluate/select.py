"""Choose a named operating point on the validation split, then measure it once on test.

The order is the point of this module: ``choose_point`` sees only the validation sweep; the test split
is scored only after the point is fixed, at that one (lambda, threshold), with bootstrap intervals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lossdial.config import fixed_lambda as baseline_lambda
from lossdial.evaluate.classification import binary_metrics
from lossdial.evaluate.run import LoadedRun
from lossdial.evaluate.scoring import score_lambdas
from lossdial.evaluate.sweep import OperatingPoint, SweepResult, sweep

BOOTSTRAP_KEYS = ("recall", "precision", "f1_at_threshold", "auc", "ap", "brier", "balanced_accuracy", "cost")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class SelectionSpec:
    name: str
    constraint: str | None = None
    objective: str = "f1"
    conservative: bool = False
    confidence: float = 0.95
    prevalence: float | None = None
    costs: tuple[float, float] = (1.0, 1.0)


def run_prevalence(loaded: LoadedRun, prevalence: float | None) -> float:
    """The prevalence used for precision-type metrics: the user's, or the training prevalence."""
    return float(prevalence) if prevalence is not None else float(loaded.data["train_prevalence"])


def sweep_split(loaded: LoadedRun, split: str, lambdas: Sequence[Mapping[str, float]] | None = None, *,
                prevalence: float | None = None, costs: tuple[float, float] = (1.0, 1.0), task=None
                ) -> SweepResult:
    """Sweep a run's `split` over `lambdas` (default: the run's evaluation grid)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    task = task if task is not None else loaded.task()
    if loaded.is_lct:
        if not lambdas:
            from lossdial.train.loop import default_eval_grid

            lambdas = default_eval_grid(loaded.config, loaded.space, k=33)
        for lam in lambdas:
            loaded.space.check_support(lam)
    elif lambdas:
        raise ValueError("this is a baseline run (fixed loss hyperparameters, no FiLM): it sweeps thresholds "
                         "only; drop --lambda")
    return sweep(loaded.model, getattr(task, split), lambdas, loaded.space, transform=task.normalizer,
                 device=loaded.device, batch_size=loaded.config.evaluate.batch_size,
                 prevalence=run_prevalence(loaded, prevalence), costs=costs,
                 threshold=loaded.config.evaluate.threshold, split=split,
                 fixed_lambda=baseline_lambda(loaded.config))


def choose_point(val: SweepResult, spec: SelectionSpec) -> OperatingPoint:
    """Pick on the validation sweep only (this function never sees test data)."""
    if val.split != "val":
        raise ValueError("operating points are chosen on the validation split only")
    return val.pick(spec.constraint, spec.objective, conservative=spec.conservative, confidence=spec.confidence)


def bootstrap_metrics(y: np.ndarray, s: np.ndarray, threshold: float, *, prevalence: float | None,
                      costs: tuple[float, float], n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> dict[str, list[float]]:
    """Stratified bootstrap (positives and negatives resampled separately) percentile intervals."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws: dict[str, list[float]] = {k: [] for k in BOOTSTRAP_KEYS}
    for _ in range(n_boot):
        ix = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        m = binary_metrics(y[ix], s[ix], threshold=threshold, prevalence=prevalence, costs=costs,
                           recall_levels=(), precision_levels=())
        m["f1_at_threshold"] = _f1(m["precision"], m["recall"])
        for k in BOOTSTRAP_KEYS:
            draws[k].append(m[k])
    return {k: [float(np.nanpercentile(v, 100 * alpha / 2)), float(np.nanpercentile(v, 100 * (1 - alpha / 2)))]
            for k, v in draws.items()}


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def measure_on_test(loaded: LoadedRun, point: OperatingPoint, task, *, prevalence: float, costs,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score the test split once at the fixed point; metrics plus bootstrap 95% intervals."""
    test = task.test
    lams = [point.lam] if loaded.is_lct else None
    s = score_lambdas(loaded.model, test.x, lams, loaded.space, device=loaded.device,
                      batch_size=loaded.config.evaluate.batch_size, transform=task.normalizer)[0]
    y = test.y.numpy()
    m = binary_metrics(y, s, threshold=point.threshold, prevalence=prevalence, costs=costs)
    m["f1_at_threshold"] = _f1(m["precision"], m["recall"])
    ci = bootstrap_metrics(y, s, point.threshold, prevalence=prevalence, costs=costs, n_boot=n_boot, seed=seed)
    return {"metrics": m, "ci95": ci, "n_boot": n_boot}


def select_point(loaded: LoadedRun, spec: SelectionSpec, *, lambdas=None, n_boot: int = 1000, task=None
                 ) -> dict[str, Any]:
    """Choose on validation, fix, then measure on test. Returns the model card entry for the point."""
    if not _NAME.match(spec.name):
        raise ValueError(f"point name {spec.name!r} must be 1-64 letters, digits, '_', '-' or '.'")
    task = task if task is not None else loaded.task()
    prevalence = run_prevalence(loaded, spec.prevalence)
    val = sweep_split(loaded, "val", lambdas, prevalence=prevalence, costs=spec.costs, task=task)
    point = choose_point(val, spec)  # fixed here; test has not been read
    val_metrics = dict(point.metrics)
    val_metrics["f1_at_threshold"] = _f1(val_metrics["precision"], val_metrics["recall"])
    test = measure_on_test(loaded, point, task, prevalence=prevalence, costs=spec.costs, n_boot=n_boot)
    return {
        "lambda": point.lam,
        "threshold": point.threshold,
        "objective": spec.objective,
        "constraint": spec.constraint,
        "conservative": spec.conservative,
        "confidence": spec.confidence if spec.conservative else None,
        "prevalence": prevalence,
        "costs": {"fp": spec.costs[0], "fn": spec.costs[1]},
        "chosen_on": "val",
        "lambdas_searched": len(val.lambdas),
        "n_pos": {"val": int(val.labels.sum()), "test": int(test["metrics"]["n_pos"])},
        "n": {"val": int(len(val.labels)), "test": int(test["metrics"]["n"])},
        "val": val_metrics,
        "test": test["metrics"],
        "test_ci95": test["ci95"],
        "n_boot": n_boot,
    }
