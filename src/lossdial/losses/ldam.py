"""LDAM loss with optional deferred re-weighting (Cao et al., NeurIPS 2019).

Margins m_c = C / n_c^(1/4), scaled so that max_c m_c = max_margin; the loss is cross-entropy on
scale * (z - m_y * onehot(y)). DRW: from epoch ``drw_epoch`` on (call ``set_epoch`` each epoch), class
weights switch to effective-number weights with ``drw_beta`` (normalised to mean 1).

    >>> LDAMLoss([5000, 50]).margins
    tensor([0.1581, 0.5000])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import ImbalanceLoss, effective_number_weights


class LDAMLoss(ImbalanceLoss):
    hparam_names = ("max_margin", "scale")

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 30.0,
                 class_weights: Sequence[float] | None = None, drw_epoch: int | None = None,
                 drw_beta: float = 0.9999, *, reduction: str = "mean", positive_index: int = 1):
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        if max_margin < 0 or scale <= 0:
            raise ValueError(f"LDAM needs max_margin >= 0 and scale > 0, got {max_margin}, {scale}")
        m = self.class_counts.double().pow(-0.25)
        self.register_buffer("unit_margins", (m / m.max()).float())  # max = 1; times max_margin
        base = torch.ones(self.num_classes) if class_weights is None else torch.as_tensor(class_weights).float()
        if base.shape != (self.num_classes,):
            raise ValueError(f"class_weights must have {self.num_classes} entries")
        self.register_buffer("base_weights", base)
        self.register_buffer("drw_weights", effective_number_weights(self.class_counts.double(), drw_beta).float())
        self.max_margin, self.scale = float(max_margin), float(scale)
        self.drw_epoch, self.drw_beta = drw_epoch, drw_beta
        self.epoch = 0

    @property
    def margins(self) -> Tensor:
        return self.unit_margins * self.max_margin

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current (0-based) epoch; DRW weights apply from ``drw_epoch`` on."""
        self.epoch = int(epoch)

    @property
    def class_weights(self) -> Tensor:
        if self.drw_epoch is not None and self.epoch >= self.drw_epoch:
            return self.drw_weights
        return self.base_weights

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None = None) -> Tensor:
        self._check_inputs(logits, targets)
        h = self._resolve(lam, {"max_margin": self.max_margin, "scale": self.scale}, logits)
        mm = torch.as_tensor(h["max_margin"], dtype=logits.dtype, device=logits.device)
        s = torch.as_tensor(h["scale"], dtype=logits.dtype, device=logits.device)
        margin_y = self.unit_margins.to(logits.dtype)[targets][:, None] * mm  # [B, 1]
        onehot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        z = s * (logits - margin_y * onehot)
        per_sample = F.cross_entropy(z, targets, reduction="none")
        return self._reduce(per_sample, self._per_class_weight(self.class_weights.to(logits.dtype), targets))
