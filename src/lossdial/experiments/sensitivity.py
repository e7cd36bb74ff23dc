"""The sensitivity panel: how much a result hinges on a hyperparameter chosen before training.

For each method, on the validation split (each run scored again at the lambdas of its final evaluation, at the
prevalence -- binary -- or class prior -- multi-class -- of the page or table it sits in, :func:`val_rows`; the
rows the training loop wrote are at the validation split's own prevalence, so they are not used):

* an LCT run: each metric's range (min, max) across the lambda grid it was evaluated on (its support, swept);
* a baseline grid: the range across the grid's runs, and fANOVA parameter importances of the loss parameters;
* a tuned baseline (an Optuna study): the range across its complete trials, and the importances;
* every method: the spread across seeds of its test score at the point picked on validation (compare only).

A wide range means the hyperparameter must be chosen well; LCT's range is what one run lets you dial after
training, a grid's or study's is what a wrong choice before training costs. The numbers are means over seeds
of per-seed ranges; ``per_seed`` keeps them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lossdial.rundir import RunDir, is_undefined

#: The metrics of the panel: threshold-free ones (a range over thresholds would be a different question).
PANEL_METRICS = {"binary": ("auc", "ap", "brier"),
                 "multiclass": ("balanced_accuracy", "worst_class_accuracy", "macro_f1", "nll")}
ACROSS = {"lct": "lambda support", "baseline": "grid runs", "tuned": "trials", "runs": "runs given"}


def final_rows(path: str | Path) -> list[dict[str, Any]]:
    """The validation rows of a finished run's final evaluation (one per lambda of an LCT run; one for a baseline)."""
    for rec in reversed(RunDir(path).read_log()):
        if rec.get("event") == "final":
            return rec.get("rows", [])
    return []


def val_rows(run: Any, *, prevalence: float | None = None, prior: Any = None, device: str = "cpu",
             task_cache: Any = None) -> list[dict[str, Any]]:
    """A finished run's validation rows (one per lambda of its final evaluation; one for a baseline, its
    ``lambda`` the loss parameters) at ``prevalence`` (binary; None: the training prevalence, as compare and pick
    use) or the class ``prior`` (multi-class; None: ``"train"``). ``run``: a run directory or a loaded run;
    ``task_cache``: an object whose ``get(loaded)`` returns the run's data task (compare's cache)."""
    from lossdial.evaluate import evaluate_run, load_run
    from lossdial.evaluate.select import run_prevalence

    loaded = load_run(run, device=device) if isinstance(run, (str, Path)) else run
    lambdas = [r["lambda"] for r in final_rows(loaded.path)] if loaded.is_lct else None
    task = task_cache.get(loaded) if task_cache is not None else None
    if loaded.task_type.name == "multiclass":
        return evaluate_run(loaded, lambdas, split="val", task=task, prior=prior)
    return evaluate_run(loaded, lambdas, split="val", task=task, prevalence=run_prevalence(loaded, prevalence))


def at_text(multiclass: bool, prevalence: float | None = None, prior: Any = None) -> str:
    """Where the panel's values are measured, in words (stated in its ``split``)."""
    if multiclass:
        pr = "train" if prior is None else prior if isinstance(prior, str) else \
            "(" + ", ".join(f"{float(v):.3g}" for v in prior) + ")"
        return f"class prior {pr}, t = 0"
    return "the training prevalence" if prevalence is None else f"prevalence {float(prevalence):.4g}"


def metric_range(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float] | None:
    """(min, max) of ``key`` over ``rows``' metrics where defined; None when no row defines it."""
    vals = [float(r["metrics"][key]) for r in rows if key in r["metrics"] and not is_undefined(r["metrics"][key])]
    return (min(vals), max(vals)) if vals else None


def _summarise(per_seed: list[tuple[float, float] | None]) -> dict[str, Any]:
    ok = [p for p in per_seed if p is not None]
    if not ok:
        return {"min": None, "max": None, "width_mean": None, "per_seed": per_seed}
    return {"min": float(np.mean([p[0] for p in ok])), "max": float(np.mean([p[1] for p in ok])),
            "width_mean": float(np.mean([p[1] - p[0] for p in ok])), "per_seed": [list(p) if p else None
                                                                                for p in per_seed]}


def method_panel(kind: str, groups: Sequence[Sequence[Mapping[str, Any]]], metrics: Sequence[str], *,
                 importance_metric: str | None = None, param_names: Sequence[str] = ()) -> dict[str, Any]:
    """One method's entry. ``groups``: per seed, the rows over which the method varies (an LCT run's lambda rows;
    one row per grid run or trial, its ``lambda`` holding the loss parameters)."""
    out: dict[str, Any] = {"kind": kind, "across": ACROSS.get(kind, kind),
                           "points": float(np.mean([len(g) for g in groups])) if groups else 0.0,
                           "range": {k: _summarise([metric_range(g, k) for g in groups]) for k in metrics},
                           "importances": None}
    if importance_metric and param_names and kind != "lct":
        from lossdial.experiments.tune import param_importances

        per = []
        for g in groups:
            imp = param_importances([r["lambda"] for r in g], [r["metrics"].get(importance_metric) for r in g],
                                    list(param_names))
            if imp is not None:
                per.append(imp)
        if per:
            out["importances"] = {n: float(np.mean([p[n] for p in per])) for n in param_names}
            out["importance_metric"] = importance_metric
    return out


def seed_spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Spread across seeds of one method's test scores: sample std (ddof=1) and max - min over defined seeds."""
    v = np.asarray([x for x in values if not is_undefined(x)], dtype=float)
    return {"std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "range": float(v.max() - v.min()) if len(v) > 1 else None, "n": int(len(v))}


def compare_sensitivity(result, run_paths: Mapping[str, Sequence[Sequence[Path]]],
                        param_names: Mapping[str, Sequence[str]], *, prevalence: float | None = None,
                        prior: Any = None, device: str = "cpu", task_cache: Any = None) -> dict[str, Any]:
    """The panel of a compare: ``run_paths[method]`` lists per seed the run directories the method varies over
    (an LCT method: its one run; a grid: its runs; a tuned baseline: its complete trials' runs); validation
    values at the compare's ``prevalence`` (binary) or ``prior`` (multi-class), :func:`val_rows`."""
    task = "multiclass" if result.is_multiclass else "binary"
    picked = {s.key for s in result.metric_specs}
    metrics = [k for k in PANEL_METRICS[task] if k in picked]
    imp_metric = metrics[1] if task == "binary" else metrics[0]  # ap / balanced_accuracy: tune's defaults
    methods = {}
    for m in result.methods:
        groups = []
        for paths in run_paths.get(m.name, []):
            rows = []
            for p in paths:
                rows.extend(val_rows(p, prevalence=prevalence, prior=prior, device=device, task_cache=task_cache))
            groups.append(rows)
        panel = method_panel(m.kind, groups, metrics, importance_metric=imp_metric,
                             param_names=param_names.get(m.name, ()))
        panel["label"] = m.label
        panel["seed_spread"] = {k: seed_spread(result.summary[m.name][k]["values"]) for k in metrics}
        methods[m.name] = panel
    at = at_text(task == "multiclass", prevalence, prior)
    return {"split": f"val at {at} (ranges, importances); test (seed spread at the point picked on val)",
            "at": at, "metrics": metrics, "methods": methods}


def runs_sensitivity(loaded_runs: Sequence[Any], *, prevalence: float | None = None, prior: Any = None
                     ) -> dict[str, Any]:
    """The panel of ``lossdial report``'s runs: each LCT run across its lambda grid; the baseline runs given
    (two or more) across one another. No seeds here (one run each). Validation values at the page's
    ``prevalence`` (binary; None: the first run's training prevalence, as the page) or ``prior``."""
    tasks = {r.task_type.name for r in loaded_runs}
    task = tasks.pop() if len(tasks) == 1 else "binary"
    metrics = list(PANEL_METRICS[task])
    if task == "binary" and prevalence is None and loaded_runs:  # the page's: the first run's training prevalence
        prevalence = float(loaded_runs[0].data["train_prevalence"])
    methods: dict[str, Any] = {}
    for r in loaded_runs:
        if r.is_lct:
            panel = method_panel("lct", [val_rows(r, prevalence=prevalence, prior=prior)], metrics)
            panel["label"] = f"LCT {Path(r.path).name}"
            methods[str(r.path)] = panel
    base = [r for r in loaded_runs if not r.is_lct]
    if len(base) >= 2:
        rows = [row for r in base for row in val_rows(r, prevalence=prevalence, prior=prior)]
        names = sorted({k for row in rows for k in row["lambda"]})
        panel = method_panel("runs", [rows], metrics, importance_metric=metrics[1] if task == "binary" else metrics[0],
                             param_names=names)
        panel["label"] = f"{len(base)} baseline runs"
        methods["baselines"] = panel
    at = at_text(task == "multiclass", prevalence, prior)
    return {"split": f"val at {at}", "at": at, "metrics": metrics, "methods": methods}
