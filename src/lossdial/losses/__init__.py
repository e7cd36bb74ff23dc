"""Loss families for class-imbalanced training, all called as ``loss(logits, targets, lam=None)``.

``lam`` maps hyperparameter names (each class's ``hparam_names``) to one value for the batch or one value
per sample, for loss-conditional training (LCT). See :mod:`lossdial.losses.base` for the shared contract
(reduction = PyTorch ``cross_entropy(weight=)`` semantics) and ``docs/ARCHITECTURE.md``.

    >>> import torch
    >>> loss = build_loss("vs", [5000, 50], omega=0.5, gamma=0.2, tau=1.0)
    >>> logits, y = torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])
    >>> loss(logits, y, lam={"tau": torch.tensor([0.0, 1.0, 2.0, 3.0])}).shape
    torch.Size([])
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from lossdial.losses.base import (
    ImbalanceLoss,
    check_class_counts,
    effective_number_weights,
    inverse_frequency_weights,
)
from lossdial.losses.focal import FocalLoss
from lossdial.losses.ldam import LDAMLoss
from lossdial.losses.logit_adjust import LogitAdjustedLoss, posthoc_logit_adjust
from lossdial.losses.smoothing import ClassConditionalSmoothingLoss
from lossdial.losses.vs import VSLoss
from lossdial.losses.weighted_ce import WeightedCrossEntropy

#: Registry: family name -> loss class.
LOSSES: dict[str, type[ImbalanceLoss]] = {
    "vs": VSLoss,
    "focal": FocalLoss,
    "ldam": LDAMLoss,
    "logit_adjust": LogitAdjustedLoss,
    "weighted_ce": WeightedCrossEntropy,
    "smoothing": ClassConditionalSmoothingLoss,
}


def loss_keywords(cls: type[ImbalanceLoss]) -> list[str]:
    """The keyword arguments a loss class accepts besides ``class_counts`` (in signature order)."""
    params = inspect.signature(cls.__init__).parameters
    return [
        name
        for name, p in params.items()
        if name not in ("self", "class_counts") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def build_loss(family: str, class_counts: Sequence[int], *, smoothing: Mapping[str, float] | None = None,
               **hparams: Any) -> ImbalanceLoss:
    """Construct a loss by family name (a key of :data:`LOSSES`); ``smoothing={"a_max": .., "a_min": ..}`` turns on
    class-conditional label smoothing (:meth:`ImbalanceLoss.enable_smoothing`, config ``loss.smoothing``).

    Raises ``ValueError`` naming the valid families for an unknown ``family`` and ``TypeError`` naming the
    valid keywords for an unknown hyperparameter.

    >>> build_loss("focal", [900, 100], alpha=0.75, phi=2.0)
    FocalLoss(class_counts=[900, 100], alpha=0.75, phi=2.0, reduction='mean', positive_index=1)
    """
    try:
        cls = LOSSES[family]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss family {family!r}; valid families: {sorted(LOSSES)}") from None
    valid = loss_keywords(cls)
    unknown = sorted(k for k in hparams if k not in valid)
    if unknown:
        raise TypeError(f"loss family {family!r} ({cls.__name__}) does not take {unknown}; valid keywords: {valid}")
    loss = cls(class_counts, **hparams)
    if smoothing is not None:
        loss.enable_smoothing(**smoothing)
    return loss


__all__ = [
    "LOSSES",
    "ClassConditionalSmoothingLoss",
    "FocalLoss",
    "ImbalanceLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "VSLoss",
    "WeightedCrossEntropy",
    "build_loss",
    "check_class_counts",
    "effective_number_weights",
    "inverse_frequency_weights",
    "loss_keywords",
    "posthoc_logit_adjust",
]
