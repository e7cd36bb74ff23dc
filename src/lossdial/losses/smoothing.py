"""Class-conditional label smoothing (Shwartz-Ziv et al., NeurIPS 2023, "Simplifying neural network
training under class imbalance").

Target q = (1 - a_y) * onehot(y) + a_y / K, more smoothing for rarer classes. Our default: a_c
interpolates in log-count from a_max at the rarest class to a_min at the most frequent,
a_c = a_min + (a_max - a_min) * (log n_max - log n_c) / (log n_max - log n_min); when all counts are
equal every class gets a_max. The loss is -sum_k q_k log softmax(z)_k.

    >>> ClassConditionalSmoothingLoss([900, 100], a_max=0.2).smoothing()
    tensor([0.0000, 0.2000])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import ImbalanceLoss


class ClassConditionalSmoothingLoss(ImbalanceLoss):
    hparam_names = ("a_max", "a_min")

    def __init__(self, class_counts: Sequence[int], a_max: float = 0.2, a_min: float = 0.0,
                 class_weights: Sequence[float] | None = None, *, reduction: str = "mean",
                 positive_index: int = 1):
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        if not (0 <= a_min <= a_max <= 1):
            raise ValueError(f"need 0 <= a_min <= a_max <= 1, got a_min={a_min}, a_max={a_max}")
        logn = self.class_counts.double().log()
        span = logn.max() - logn.min()
        rarity = (logn.max() - logn) / span if span > 0 else torch.ones_like(logn)
        self.register_buffer("rarity", rarity.float())  # 1 at the rarest class, 0 at the most frequent
        w = torch.ones(self.num_classes) if class_weights is None else torch.as_tensor(class_weights).float()
        if w.shape != (self.num_classes,):
            raise ValueError(f"class_weights must have {self.num_classes} entries")
        self.register_buffer("class_weights", w)
        self.a_max, self.a_min = float(a_max), float(a_min)

    def smoothing(self, a_max: Any = None, a_min: Any = None) -> Tensor:
        """Per-class smoothing a_c ([C], or [B, C] for per-sample a_max / a_min)."""
        a_max = self.a_max if a_max is None else a_max
        a_min = self.a_min if a_min is None else a_min
        return a_min + (a_max - a_min) * self.rarity

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None = None) -> Tensor:
        self._check_inputs(logits, targets)
        h = self._resolve(lam, {"a_max": self.a_max, "a_min": self.a_min}, logits)
        a = self.smoothing(h["a_max"], h["a_min"]).to(logits.dtype)  # [C] or [B, C]
        a_y = (a.expand(len(targets), -1) if a.ndim == 1 else a).gather(1, targets[:, None])  # [B, 1]
        onehot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        q = (1 - a_y) * onehot + a_y / self.num_classes
        per_sample = -(q * F.log_softmax(logits, dim=1)).sum(dim=1)
        return self._reduce(per_sample, self._per_class_weight(self.class_weights.to(logits.dtype), targets))
