"""Class-weighted cross-entropy with inverse-frequency or effective-number weights.

Inverse frequency: w_c proportional to 1 / n_c. Effective number (Cui et al., CVPR 2019, "Class-balanced
loss based on effective number of samples"): w_c proportional to (1 - beta) / (1 - beta^n_c). Both are
normalised to mean 1 over classes; the mean reduction is sum_i w_i l_i / sum_i w_i.

    >>> WeightedCrossEntropy([900, 100], weighting="inverse").class_weights
    tensor([0.2000, 1.8000])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import ImbalanceLoss, effective_number_weights, inverse_frequency_weights

WEIGHTINGS = ("inverse", "effective", "none")


class WeightedCrossEntropy(ImbalanceLoss):
    hparam_names: tuple[str, ...] = ()

    def __init__(self, class_counts: Sequence[int], weighting: str = "inverse", beta_eff: float = 0.999, *,
                 reduction: str = "mean", positive_index: int = 1):
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        counts = self.class_counts.double()
        if weighting == "inverse":
            w = inverse_frequency_weights(counts)
        elif weighting == "effective":
            w = effective_number_weights(counts, beta_eff)
        else:
            w = torch.ones_like(counts)
        self.weighting, self.beta_eff = weighting, float(beta_eff)
        self.register_buffer("class_weights", w.float())

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None = None) -> Tensor:
        self._check_inputs(logits, targets)
        self._resolve(lam, {}, logits)  # rejects any lambda name
        per_sample = F.cross_entropy(logits, targets, reduction="none")
        return self._reduce(per_sample, self._per_class_weight(self.class_weights.to(logits.dtype), targets))
