"""Focal loss (Lin et al., ICCV 2017), softmax form.

FL = -alpha_t * (1 - p_t)^phi * log p_t. Binary: alpha weights the positive class (alpha_t = alpha for
y = positive, 1 - alpha otherwise); multi-class: alpha is None (all 1) or a per-class sequence. alpha_t
plays the role of the class weight in the reduction: "none" returns alpha_t * (1 - p_t)^phi * (-log p_t)
and "mean" divides the sum by sum_i alpha_t. With phi = 0 it is weighted cross-entropy. LCT over
(alpha, phi): Lieberman et al. 2024.

    >>> FocalLoss([900, 100], alpha=0.75, phi=2.0)(torch.zeros(2, 2), torch.tensor([0, 1])).item() > 0
    True
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import ImbalanceLoss, check_unit_interval


class FocalLoss(ImbalanceLoss):
    hparam_names = ("alpha", "phi")

    def __init__(self, class_counts: Sequence[int], alpha: float | Sequence[float] | None = None,
                 phi: float = 2.0, *, reduction: str = "mean", positive_index: int = 1):
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        if phi < 0:
            raise ValueError(f"phi (the focusing exponent) must be >= 0, got {phi}")
        if self.binary:
            alpha = 0.5 if alpha is None else alpha
            if not isinstance(alpha, (int, float)):
                raise ValueError("binary FocalLoss takes a single alpha in [0, 1] (weight of the positive class)")
            check_unit_interval("alpha", alpha)
            self.alpha = float(alpha)
            self.register_buffer("class_alpha", torch.ones(2))
        else:
            if isinstance(alpha, (int, float)):
                raise ValueError(f"multi-class FocalLoss takes alpha as {self.num_classes} per-class weights "
                                 "(or None)")
            a = torch.ones(self.num_classes) if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
            if a.shape != (self.num_classes,) or (a < 0).any():
                raise ValueError(f"alpha must be {self.num_classes} non-negative numbers")
            self.alpha = None
            self.register_buffer("class_alpha", a)
        self.phi = float(phi)

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None = None) -> Tensor:
        self._check_inputs(logits, targets)
        h = self._resolve(lam, {"alpha": self.alpha, "phi": self.phi}, logits)
        if not self.binary and lam and "alpha" in lam:
            raise ValueError("a lambda alpha only applies to binary tasks")
        logp_t = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        p_t = logp_t.exp()
        phi = torch.as_tensor(h["phi"], dtype=logits.dtype, device=logits.device)
        phi = phi.reshape(-1) if phi.ndim else phi
        # (1 - p_t)^phi; the floor keeps 0^0 = 1 and the gradient finite when p_t rounds to 1
        modulator = (1 - p_t).clamp_min(1e-12).pow(phi)
        per_sample = -modulator * logp_t
        if self.binary:
            alpha = torch.as_tensor(h["alpha"], dtype=logits.dtype, device=logits.device)
            alpha = alpha.reshape(-1) if alpha.ndim else alpha
            weights = torch.where(targets == self.positive_index, alpha, 1 - alpha).to(logits.dtype)
        else:
            weights = self._per_class_weight(self.class_alpha.to(logits.dtype), targets)
        return self._reduce(per_sample, weights)
