"""Experiments over many runs: baseline grids against LCT over seeds (``compare``)."""

from lossdial.experiments.compare import (
    METRICS,
    MULTICLASS_METRICS,
    CompareCallback,
    CompareError,
    CompareResult,
    MetricSpec,
    PlannedRun,
    build_methods,
    compare,
    load_compare,
    plan_runs,
    task_metrics,
)

__all__ = ["METRICS", "MULTICLASS_METRICS", "CompareCallback", "CompareError", "CompareResult", "MetricSpec",
           "PlannedRun", "build_methods", "compare", "load_compare", "plan_runs", "task_metrics"]
