"""Logit adjustment (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment").

Training form: cross-entropy on z_c + tau * log(pi_c) (VS with gamma = 0, unweighted). Post-hoc form:
predict argmax_c (z_c - tau * log pi_c); tau = 1 is Fisher-consistent for the balanced error.

    >>> LogitAdjustedLoss([900, 100], tau=1.0)(torch.zeros(2, 2), torch.tensor([0, 1]))
    tensor(...)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import ImbalanceLoss


class LogitAdjustedLoss(ImbalanceLoss):
    hparam_names = ("tau",)

    def __init__(self, class_counts: Sequence[int], tau: float = 1.0, *, reduction: str = "mean",
                 positive_index: int = 1):
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        self.tau = float(tau)

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None = None) -> Tensor:
        self._check_inputs(logits, targets)
        h = self._resolve(lam, {"tau": self.tau}, logits)
        tau = torch.as_tensor(h["tau"], dtype=logits.dtype, device=logits.device)
        z = logits + tau * self.log_prior.to(logits.dtype)
        per_sample = F.cross_entropy(z, targets, reduction="none")
        return self._reduce(per_sample, torch.ones_like(per_sample))


def posthoc_logit_adjust(logits: Tensor, class_counts: Sequence[int], tau: float = 1.0) -> Tensor:
    """z_c - tau * log(pi_c): the post-hoc logit adjustment of Menon et al. (argmax it to predict)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    log_prior = torch.log(counts / counts.sum()).to(device=logits.device, dtype=logits.dtype)
    return logits - tau * log_prior
