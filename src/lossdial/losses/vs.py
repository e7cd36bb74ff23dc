"""VS loss (Kini et al., NeurIPS 2021, "Label-imbalanced and group-sensitive classification under
overparameterization").

Adjusted logits  z'_c = Delta_c * z_c + iota_c  with  Delta_c = (n_c / n_max)^gamma  and
iota_c = tau * log(pi_c); the loss is weighted cross-entropy on z'. Binary class weights are
w = [1 - omega, omega] (omega on the positive/minority class); multi-class weights default to inverse
frequency normalised to mean 1. Special cases: logit adjustment (gamma = 0), CDT (tau = 0), weighted CE
(gamma = tau = 0). The adjustment is training-only: predict with the raw logits z.

Binary closed form (beta = n_0 / n_1): s = z_1 * beta^(-gamma) - z_0 - tau * log(beta), and the per-sample
loss is softplus(-s) for y = 1, softplus(s) for y = 0.

    >>> loss = VSLoss(class_counts=[5000, 50], omega=0.5, gamma=0.2, tau=2.0)
    >>> logits, y = torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])
    >>> loss(logits, y, lam={"tau": torch.tensor([0.0, 1.0, 2.0, 3.0])}).shape
    torch.Size([])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import ImbalanceLoss, check_unit_interval, inverse_frequency_weights


class VSLoss(ImbalanceLoss):
    hparam_names = ("omega", "gamma", "tau")

    def __init__(self, class_counts: Sequence[int], omega: float | None = None, gamma: float = 0.0,
                 tau: float = 0.0, class_weights: Sequence[float] | None = None, *, reduction: str = "mean",
                 positive_index: int = 1):
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        if self.binary:
            if class_weights is not None:
                raise ValueError("binary VSLoss is weighted by omega; class_weights is for multi-class tasks")
            omega = 0.5 if omega is None else omega
            check_unit_interval("omega", omega)
            w = torch.ones(2)
        else:
            if omega is not None:
                raise ValueError("omega (the minority-class weight) only applies to binary tasks; for "
                                 f"{self.num_classes} classes pass class_weights (default inverse frequency)")
            w = (torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None
                 else inverse_frequency_weights(self.class_counts.double()).float())
            if w.shape != (self.num_classes,) or (w < 0).any():
                raise ValueError(f"class_weights must be {self.num_classes} non-negative numbers")
        self.omega, self.gamma, self.tau = omega, float(gamma), float(tau)
        self.register_buffer("class_weights", w)
        self.register_buffer("log_count_ratio", torch.log(self.class_counts / self.class_counts.max()))

    def adjusted_logits(self, logits: Tensor, gamma: Any, tau: Any) -> Tensor:
        """z' = (n_c / n_max)^gamma * z + tau * log(pi_c); gamma, tau scalars or [B, 1]."""
        delta = torch.exp(torch.as_tensor(gamma, dtype=logits.dtype, device=logits.device)
                          * self.log_count_ratio.to(logits.dtype))
        iota = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device) * self.log_prior.to(logits.dtype)
        return delta * logits + iota

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None = None) -> Tensor:
        self._check_inputs(logits, targets)
        h = self._resolve(lam, {"omega": self.omega, "gamma": self.gamma, "tau": self.tau}, logits)
        if not self.binary and lam and "omega" in lam:
            raise ValueError("omega only applies to binary tasks")
        z = self.adjusted_logits(logits, h["gamma"], h["tau"])
        per_sample = F.cross_entropy(z, targets, reduction="none")
        if self.binary:
            omega = torch.as_tensor(h["omega"], dtype=logits.dtype, device=logits.device)
            omega = omega.reshape(-1) if omega.ndim else omega
            is_pos = targets == self.positive_index
            weights = torch.where(is_pos, omega, 1 - omega).to(logits.dtype)
            weights = weights * self._per_class_weight(self.class_weights.to(logits.dtype), targets)
        else:
            weights = self._per_class_weight(self.class_weights.to(logits.dtype), targets)
        return self._reduce(per_sample, weights)
