"""The embedded demo: a VS-loss baseline and an LCT model on digit 8 vs the rest (scikit-learn digits)."""

from __future__ import annotations

import math
from typing import Any

from lossdial.config import Config, load_config, packaged_config_path
from lossdial.rundir import is_undefined

QUICK_OVERRIDES = ["train.epochs=8", "train.eval_every=0", "schedule.warmup_epochs=1"]


def _baseline_and_lct(name: str, quick_overrides: list[str], quick: bool) -> tuple[Config, Config]:
    """(baseline, LCT) configs from the packaged config ``name``: the baseline is the same config with LCT off,
    trained at its fixed loss.params."""
    path = packaged_config_path(name)
    extra = quick_overrides if quick else []
    lct = load_config(path, extra)
    base = load_config(path, extra + ["lct.enabled=false", f"name={name}_baseline"])
    return base, lct


def demo_configs(quick: bool = False) -> tuple[Config, Config]:
    """(baseline, LCT) configs from the packaged ``demo_digits.yaml``; the baseline fixes tau = loss.params.tau."""
    return _baseline_and_lct("demo_digits", QUICK_OVERRIDES, quick)


def dial_summary(lct_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How much each metric moves across the LCT rows (the lambda grid), from the measured numbers."""
    def span(key: str) -> tuple[float, float]:
        vals = [v for r in lct_rows if not is_undefined(v := r["metrics"][key])]  # undefined: NaN or null
        return (min(vals), max(vals)) if vals else (math.nan, math.nan)

    return {k: span(k) for k in ("auc", "ap", "brier", "precision", "recall")}


# ---------------------------------------------------------------------------------------------------------
# the multi-class demo: digits with an exponential long tail

#: The baseline's post-hoc adjustment strengths t shown by ``lossdial demo --multiclass`` (a subset of
#: ``lossdial.evaluate.multiclass.DEFAULT_T_GRID``; the LCT model's tau grid, evaluate.lambda, takes the same values).
DEMO_T_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)

#: ``--multiclass --quick``: a third of the epochs (the long-tailed training split is small: a few seconds).
MULTICLASS_QUICK_OVERRIDES = ["train.epochs=24", "train.eval_every=0", "schedule.warmup_epochs=1"]


def demo_multiclass_configs(quick: bool = False) -> tuple[Config, Config]:
    """(baseline, LCT) configs from the packaged ``demo_digits_lt.yaml``; the baseline fixes loss.params."""
    return _baseline_and_lct("demo_digits_lt", MULTICLASS_QUICK_OVERRIDES, quick)


def posthoc_dial(loaded, task, ts=DEMO_T_GRID, *, split: str = "val", prior="train") -> list[dict[str, Any]]:
    """A multi-class baseline run's rows over the post-hoc adjustment t (z_c - t log pi_c, pi the training
    prior) on ``split``: ``[{"lambda": its fixed loss hyperparameters, "t": t, "metrics": ...}]``."""
    from lossdial.config import fixed_lambda
    from lossdial.evaluate.multiclass import dial_table
    from lossdial.evaluate.scoring import score_lambdas

    if loaded.is_lct:
        raise ValueError("posthoc_dial takes a baseline run (its one model); an LCT run has a lambda per row")
    data = getattr(task, split)
    logits = score_lambdas(loaded.model, data.x, None, None, device=loaded.device,
                           batch_size=loaded.config.evaluate.batch_size, transform=task.normalizer,
                           output="logits")[0]
    lam = fixed_lambda(loaded.config)
    return [{"lambda": lam, **row} for row in dial_table(logits, data.y.numpy(), task.class_counts, ts, prior)]


def multiclass_dial_summary(base_rows: list[dict[str, Any]], lct_rows: list[dict[str, Any]], knob: str = "tau"
                            ) -> dict[str, Any]:
    """What each dial does, from the measured numbers: for the baseline's rows over t and the LCT model's
    rows over ``knob``, the knob's first and last value, many-/few-shot accuracy there, and the row with the
    best balanced accuracy."""
    def side(rows, value):
        first, last = rows[0], rows[-1]
        best = max(rows, key=lambda r: r["metrics"]["balanced_accuracy"])
        return {"from": value(first), "to": value(last),
                **{f"{g}_{end}": r["metrics"][f"{g}_shot_accuracy"] for g in ("many", "few")
                   for end, r in (("from", first), ("to", last))},
                "best_balanced_accuracy": best["metrics"]["balanced_accuracy"], "best_at": value(best),
                "accuracy_at_best": best["metrics"]["accuracy"]}

    return {"baseline": side(base_rows, lambda r: r["t"]), "lct": side(lct_rows, lambda r: r["lambda"][knob])}
