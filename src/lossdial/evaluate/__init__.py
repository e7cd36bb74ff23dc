"""Metrics, lambda x threshold sweeps, operating-point selection, evaluation of finished runs."""

from lossdial.evaluate.classification import (
    best_f1,
    binary_metrics,
    expected_calibration_error,
    precision_at_recall,
    prevalence_weights,
    recall_at_precision,
)
from lossdial.evaluate.multiclass import (
    DEFAULT_T_GRID,
    MULTICLASS_KEYS,
    MULTICLASS_MAXIMIZE,
    MULTICLASS_MINIMIZE,
    SHOT_THRESHOLDS,
    adjust_logits,
    bootstrap_multiclass,
    class_prior,
    dial_table,
    multiclass_metrics,
    shot_groups,
)
from lossdial.evaluate.run import LoadedRun, evaluate_run, load_run
from lossdial.evaluate.scoring import score_lambdas
from lossdial.evaluate.sweep import (
    MultiClassSweepResult,
    NoFeasiblePoint,
    OperatingPoint,
    SweepResult,
    parse_constraint,
    sweep,
)

metrics = binary_metrics  # the name the Python surface uses: lossdial.evaluate.metrics(...)

__all__ = ["DEFAULT_T_GRID", "MULTICLASS_KEYS", "MULTICLASS_MAXIMIZE", "MULTICLASS_MINIMIZE", "SHOT_THRESHOLDS",
           "adjust_logits", "bootstrap_multiclass", "class_prior", "dial_table", "multiclass_metrics", "shot_groups",
           "LoadedRun", "MultiClassSweepResult", "NoFeasiblePoint", "OperatingPoint", "SweepResult", "best_f1", "binary_metrics",
           "evaluate_run", "expected_calibration_error", "load_run", "metrics", "parse_constraint",
           "precision_at_recall", "prevalence_weights", "recall_at_precision", "score_lambdas", "sweep"]
