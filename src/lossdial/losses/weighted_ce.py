"""Class-weighted cross-entropy with inverse-frequency or effective-number weights (Cui, Jia, Lin, Song,
Belongie, "Class-balanced loss based on effective number of samples", CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossdial.losses.base import HparamValue, ImbalanceLoss, effective_number_weights, inverse_frequency_weights

__all__ = ["WeightedCrossEntropy", "WEIGHTINGS"]

WEIGHTINGS = ("inverse", "effective", "none")


class WeightedCrossEntropy(ImbalanceLoss):
    r"""Cross-entropy with fixed per-class weights derived from the class counts.

    .. code-block:: text

        l_i = -log softmax(z_i)[y_i],   w_i = w_{y_i}
        "inverse":   w_c ∝ 1 / n_c
        "effective": w_c ∝ (1 - beta_eff) / (1 - beta_eff ** n_c)      (Cui et al. 2019)
        "none":      w_c = 1

    Weights are normalised to mean 1 over classes and kept in the ``class_weights`` buffer; ``"mean"``
    equals ``F.cross_entropy(logits, targets, weight=class_weights)``. No hyperparameter can be
    conditioned on (``hparam_names == ()``).

    Args:
        class_counts: training count per class.
        weighting: ``"inverse"``, ``"effective"`` or ``"none"``.
        beta_eff: ``beta`` of the effective number, in [0, 1) (used by ``"effective"`` only).
        reduction, positive_index: see :class:`~lossdial.losses.base.ImbalanceLoss`.

    Example:
        >>> import torch
        >>> WeightedCrossEntropy([900, 100], weighting="inverse").class_weights.tolist()
        [0.20000000298023224, 1.7999999523162842]
    """

    smoothable = True  # loss.smoothing replaces the one-hot target of the cross-entropy
    hparam_names = ()

    class_weights: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        weighting: str = "inverse",
        beta_eff: float = 0.999,
        *,
        reduction: str = "mean",
        positive_index: int = 1,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
        beta_eff = float(beta_eff)
        if not 0.0 <= beta_eff < 1.0:
            raise ValueError(f"beta_eff must be in [0, 1), got {beta_eff}")
        self.weighting = weighting
        self.beta_eff = beta_eff
        n = self._counts64()
        if weighting == "inverse":
            w = inverse_frequency_weights(n)
        elif weighting == "effective":
            w = effective_number_weights(n, beta_eff)
        else:
            w = torch.ones_like(n)
        self._register_derived("class_weights", w)

    def _per_sample(self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]):
        losses = self._cross_entropy(logits, targets, hp)
        if self.weighting == "none":
            return losses, None
        return losses, self._derived("class_weights", losses.dtype)[targets]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weighting={self.weighting!r}, beta_eff={self.beta_eff}"
