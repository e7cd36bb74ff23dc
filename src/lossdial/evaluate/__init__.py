"""Metrics, lambda x threshold scoring, and evaluation of finished runs."""

from lossdial.evaluate.metrics import (
    best_f1,
    binary_metrics,
    expected_calibration_error,
    precision_at_recall,
    recall_at_precision,
)
from lossdial.evaluate.run import LoadedRun, evaluate_run, load_run
from lossdial.evaluate.scoring import score_lambdas

__all__ = ["LoadedRun", "best_f1", "binary_metrics", "evaluate_run", "expected_calibration_error",
           "load_run", "precision_at_recall", "recall_at_precision", "score_lambdas"]
