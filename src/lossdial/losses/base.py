"""The common base of every loss family: class counts as buffers, lambda overrides, weighted reduction.

Signature shared by all families::

    loss(logits [B, C], targets [B], lam=None)

``lam`` maps hyperparameter names to a float / 0-d tensor (one value for the batch) or a shape-[B]
tensor (one value per sample); it overrides the fixed values given at construction for this call.
Reduction follows PyTorch's ``cross_entropy(weight=)``: ``"none"`` returns ``w_i * l_i``, ``"sum"`` their
sum and ``"mean"`` ``sum_i w_i l_i / sum_i w_i`` -- whether lambda is per batch or per sample.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum", "none")


def _counts_tensor(class_counts: Sequence[int]) -> Tensor:
    counts = [float(c) for c in class_counts]
    if len(counts) < 2:
        raise ValueError(f"class_counts needs at least 2 classes, got {list(class_counts)}")
    if any(not math.isfinite(c) or c <= 0 for c in counts):
        raise ValueError(f"class_counts must all be positive (a class with no training samples cannot be "
                         f"weighted); got {list(class_counts)}")
    return torch.tensor(counts, dtype=torch.float64)


class ImbalanceLoss(nn.Module):
    """Base class: stores class counts (buffers), validates inputs, resolves lambda, reduces."""

    #: hyperparameter names that ``lam`` may carry
    hparam_names: tuple[str, ...] = ()

    def __init__(self, class_counts: Sequence[int], *, reduction: str = "mean", positive_index: int = 1):
        super().__init__()
        counts = _counts_tensor(class_counts)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.num_classes = len(counts)
        if self.num_classes == 2 and positive_index not in (0, 1):
            raise ValueError(f"positive_index must be 0 or 1 for a binary task, got {positive_index}")
        self.reduction = reduction
        self.positive_index = positive_index
        self.register_buffer("class_counts", counts)  # float64: exact log-priors
        self.register_buffer("log_prior", torch.log(counts / counts.sum()))

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    # ------------------------------------------------------------------ helpers for subclasses
    def _check_inputs(self, logits: Tensor, targets: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"{type(self).__name__} expects logits of shape [B, {self.num_classes}] "
                             f"(one column per class), got {list(logits.shape)}")
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(f"targets must have shape [{logits.shape[0]}], got {list(targets.shape)}")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise ValueError(f"targets must be class indices in [0, {self.num_classes - 1}]")

    def _resolve(self, lam: Mapping[str, Any] | None, fixed: Mapping[str, Any], logits: Tensor
                 ) -> dict[str, Any]:
        """Fixed hyperparameters overridden by ``lam``; tensors moved to the logits' device and dtype.

        A per-batch value comes back as a 0-d tensor (or the fixed Python value), a per-sample value
        as a [B, 1] tensor, ready to broadcast against [B, C].
        """
        out = dict(fixed)
        if not lam:
            return out
        unknown = [k for k in lam if k not in self.hparam_names]
        if unknown:
            raise KeyError(f"{type(self).__name__} has no hyperparameter {unknown}; lam may carry "
                           f"{list(self.hparam_names)}")
        b = logits.shape[0]
        for k, v in lam.items():
            t = torch.as_tensor(v, dtype=logits.dtype, device=logits.device)
            if t.ndim == 1:
                if t.shape[0] != b:
                    raise ValueError(f"lam[{k!r}] has {t.shape[0]} values but the batch has {b} samples")
                t = t[:, None]
            elif t.ndim != 0:
                raise ValueError(f"lam[{k!r}] must be a scalar or a [B] tensor, got shape {list(t.shape)}")
            out[k] = t
        return out

    def _reduce(self, per_sample: Tensor, weights: Tensor) -> Tensor:
        """``per_sample`` l_i and ``weights`` w_i (both [B]) -> the reduction of w_i * l_i."""
        weighted = weights * per_sample
        if self.reduction == "none":
            return weighted
        if self.reduction == "sum":
            return weighted.sum()
        return weighted.sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)

    def _per_class_weight(self, weights: Tensor, targets: Tensor) -> Tensor:
        return weights.to(device=targets.device)[targets]


def inverse_frequency_weights(counts: Tensor) -> Tensor:
    """w_c proportional to 1 / n_c, normalised to mean 1."""
    w = 1.0 / counts
    return w / w.mean()


def effective_number_weights(counts: Tensor, beta: float = 0.999) -> Tensor:
    """Cui et al. 2019: w_c proportional to (1 - beta) / (1 - beta^n_c), normalised to mean 1."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta_eff must be in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.as_tensor(beta, dtype=counts.dtype), counts))
    return w / w.mean()


def check_unit_interval(name: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
