"""Class-conditional label smoothing, as recommended for imbalanced training by Shwartz-Ziv, Goldblum, Li,
Bruss, Wilson, "Simplifying neural network training under class imbalance", NeurIPS 2023."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lossdial.losses.base import (HparamValue, ImbalanceLoss, _check_class_vector, log_count_rarity,
                                  smoothed_cross_entropy)

__all__ = ["ClassConditionalSmoothingLoss"]


class ClassConditionalSmoothingLoss(ImbalanceLoss):
    r"""Cross-entropy against class-conditionally smoothed targets, with more smoothing for rarer classes.

    .. code-block:: text

        q   = (1 - a_y) * onehot(y) + a_y / K                       (K = number of classes)
        l_i = -sum_k q_k log softmax(z_i)_k
            = (1 - a_y) * (-log p_y) + a_y * mean_k(-log p_k)
        a_c = a_min + (a_max - a_min) * (log n_max - log n_c) / (log n_max - log n_min)

    so the rarest class gets ``a_max`` and the most frequent ``a_min``, interpolating in log-count. If all
    counts are equal every class gets ``a_max`` (the rarest class is every class). ``w_i`` is the class
    weight of ``y_i`` (default 1). Requires ``0 <= a_min <= a_max <= 1``.

    Args:
        class_counts: training count per class.
        a_max: smoothing of the rarest class.
        a_min: smoothing of the most frequent class.
        class_weights: optional per-class weights (used as given); default all 1.
        reduction, positive_index: see :class:`~lossdial.losses.base.ImbalanceLoss`.

    ``lam`` may carry ``a_max`` and ``a_min``, per batch or per sample.

    Example:
        >>> import torch
        >>> loss = ClassConditionalSmoothingLoss([1000, 100, 10], a_max=0.2, a_min=0.0)
        >>> [round(a, 4) for a in loss.smoothing().tolist()]
        [0.0, 0.1, 0.2]
    """

    hparam_names = ("a_max", "a_min")
    hparam_ranges = {"a_max": (0.0, 1.0, True), "a_min": (0.0, 1.0, True)}
    hparam_order = (("a_min", "a_max"),)

    rarity: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        a_max: float = 0.2,
        a_min: float = 0.0,
        class_weights: Sequence[float] | None = None,
        *,
        reduction: str = "mean",
        positive_index: int = 1,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        self.a_max = float(a_max)
        self.a_min = float(a_min)
        self._check_range("a_max", self.a_max)
        self._check_range("a_min", self.a_min)
        self._check_order({"a_max": self.a_max, "a_min": self.a_min})
        # rarity_c = (log n_max - log n_c) / (log n_max - log n_min): 0 at the most frequent, 1 at the rarest
        self._register_derived("rarity", log_count_rarity(self._counts64()))
        self._has_weights = class_weights is not None
        if class_weights is not None:
            self._register_derived(
                "class_weights", _check_class_vector(class_weights, self.num_classes, "class_weights")
            )

    def smoothing(self, a_max: float | None = None, a_min: float | None = None) -> Tensor:
        """Per-class smoothing ``a_c`` (shape ``[C]``); defaults: the fixed ``a_max`` and ``a_min``."""
        a_max = self.a_max if a_max is None else a_max
        a_min = self.a_min if a_min is None else a_min
        return a_min + (a_max - a_min) * self.rarity

    def _per_sample(self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]):
        a_min, a_max = hp["a_min"], hp["a_max"]
        a_y = a_min + (a_max - a_min) * self._derived("rarity", logits.dtype)[targets]
        losses = smoothed_cross_entropy(logits, targets, a_y)
        weights = self._derived("class_weights", logits.dtype)[targets] if self._has_weights else None
        return losses, weights

