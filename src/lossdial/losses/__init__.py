"""Loss families for class imbalance, all with the signature ``loss(logits, targets, lam=None)``.

``lam`` maps hyperparameter names to one value for the batch or one value per sample (LCT); see
:mod:`lossdial.losses.base` for the reduction contract and docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from lossdial.losses.base import ImbalanceLoss, effective_number_weights, inverse_frequency_weights
from lossdial.losses.focal import FocalLoss
from lossdial.losses.ldam import LDAMLoss
from lossdial.losses.logit_adjust import LogitAdjustedLoss, posthoc_logit_adjust
from lossdial.losses.smoothing import ClassConditionalSmoothingLoss
from lossdial.losses.vs import VSLoss
from lossdial.losses.weighted_ce import WeightedCrossEntropy

LOSSES: dict[str, type[ImbalanceLoss]] = {
    "vs": VSLoss,
    "focal": FocalLoss,
    "ldam": LDAMLoss,
    "logit_adjust": LogitAdjustedLoss,
    "weighted_ce": WeightedCrossEntropy,
    "smoothing": ClassConditionalSmoothingLoss,
}


def build_loss(family: str, class_counts: Sequence[int], **hparams: Any) -> ImbalanceLoss:
    """Construct a loss by family name, e.g. ``build_loss("vs", [5000, 50], gamma=0.2, tau=1.0)``."""
    import inspect

    try:
        cls = LOSSES[family]
    except KeyError:
        raise ValueError(f"unknown loss family {family!r}; valid: {sorted(LOSSES)}") from None
    params = inspect.signature(cls.__init__).parameters
    valid = [n for n in params if n not in ("self", "class_counts")]
    unknown = [k for k in hparams if k not in valid]
    if unknown:
        raise ValueError(f"loss {family!r} does not take {unknown}; valid keywords: {valid}")
    return cls(class_counts, **hparams)


__all__ = ["LOSSES", "ClassConditionalSmoothingLoss", "FocalLoss", "ImbalanceLoss", "LDAMLoss",
           "LogitAdjustedLoss", "VSLoss", "WeightedCrossEntropy", "build_loss", "effective_number_weights",
           "inverse_frequency_weights", "posthoc_logit_adjust"]
