"""The embedded demo: a VS-loss baseline and an LCT model on digit 8 vs the rest (scikit-learn digits)."""

from __future__ import annotations

import math
from typing import Any

from lossdial.config import Config, load_config, packaged_config_path
from lossdial.rundir import is_undefined

QUICK_OVERRIDES = ["train.epochs=8", "train.eval_every=0", "schedule.warmup_epochs=1"]


def demo_configs(quick: bool = False) -> tuple[Config, Config]:
    """(baseline, LCT) configs from the packaged ``demo_digits.yaml``; the baseline fixes tau = loss.params.tau."""
    path = packaged_config_path("demo_digits")
    extra = QUICK_OVERRIDES if quick else []
    lct = load_config(path, extra)
    base = load_config(path, extra + ["lct.enabled=false", "name=demo_digits_baseline"])
    return base, lct


def dial_summary(lct_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How much each metric moves across the LCT rows (the lambda grid), from the measured numbers."""
    def span(key: str) -> tuple[float, float]:
        vals = [v for r in lct_rows if not is_undefined(v := r["metrics"][key])]  # undefined: NaN or null
        return (min(vals), max(vals)) if vals else (math.nan, math.nan)

    return {k: span(k) for k in ("auc", "ap", "brier", "precision", "recall")}
