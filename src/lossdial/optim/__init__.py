"""Optimisation add-ons of the training loop: sharpness-aware minimisation (:mod:`lossdial.optim.sam`)."""

from lossdial.optim.sam import (SAM_MODES, Objective, SharpnessAware, asymmetric_class_weights, frozen_batchnorm,
                                minority_classes, perturbation, split_objective)

__all__ = ["SAM_MODES", "Objective", "SharpnessAware", "asymmetric_class_weights", "frozen_batchnorm",
           "minority_classes", "perturbation", "split_objective"]
