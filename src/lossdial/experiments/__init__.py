"""Experiments over many runs: baseline grids against LCT over seeds (``compare``)."""

from lossdial.experiments.compare import (
    METRICS,
    CompareCallback,
    CompareError,
    CompareResult,
    MetricSpec,
    PlannedRun,
    build_methods,
    compare,
    load_compare,
    plan_runs,
)

__all__ = ["METRICS", "CompareCallback", "CompareError", "CompareResult", "MetricSpec", "PlannedRun",
           "build_methods", "compare", "load_compare", "plan_runs"]
