"""Last-layer retraining with overparameterization-aware loss weights (METHODS.md section 4).

- :func:`omega_star`, :func:`group_weights`: the weight that equalises the class (group) errors of a weighted
  least-squares last layer at effective dimension ``d_eff``.
- :class:`LastLayerClassifier`: the scikit-learn estimator on frozen features.
- :func:`retrain_run` (``lossdial retrain``): a finished run's backbone with a retrained last layer, written as
  an ordinary run directory.
"""

from .estimator import TUNED_POWERS, WEIGHTINGS, InfeasibleWeightWarning, LastLayerClassifier, weighted_least_squares
from .weights import effective_dimension, group_weights, max_feasible_d_eff, omega_star, within_class_eigenvalues

__all__ = ["TUNED_POWERS", "WEIGHTINGS", "InfeasibleWeightWarning", "LastLayerClassifier", "effective_dimension",
           "group_weights", "max_feasible_d_eff", "omega_star", "weighted_least_squares",
           "within_class_eigenvalues"]
