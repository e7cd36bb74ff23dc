"""Exponential moving average of a model's weights and buffers, without host synchronisation.

Numerically the same as ``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
use_buffers=True)`` (tested), and its ``state_dict`` has the same keys (``module.*`` and ``n_averaged``), but
the update count lives in a Python int: AveragedModel reads its on-device counter with ``bool(n == 0)`` and
``if n > 0`` on every step, two host syncs per step on a GPU.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_pairs(mine: list[torch.Tensor], theirs: list[torch.Tensor]) -> tuple[list, list, list, list]:
    """(mine, theirs, floating mine, floating theirs): what :func:`ema_update_` takes, listed once."""
    fl = [a.is_floating_point() for a in mine]
    return (mine, theirs, [a for a, f in zip(mine, fl) if f], [b for b, f in zip(theirs, fl) if f])


@torch.no_grad()
def ema_update_(pairs: tuple[list, list, list, list], decay: float, first: bool) -> None:
    """One EMA step over :func:`ema_pairs`: copy on the first update, then ``lerp`` floating tensors by
    ``1 - decay`` in one foreach call and integer ones as ``a * decay + b * (1 - decay)`` (AveragedModel's
    rule). Shared by :class:`EMA` and the stacked trainer."""
    mine, theirs, fa, fb = pairs
    if first:
        for a, b in zip(mine, theirs):
            a.copy_(b)
        return
    if fa:
        torch._foreach_lerp_(fa, fb, 1.0 - decay)
    for a, b in zip(mine, theirs):  # integer buffers (BatchNorm's num_batches_tracked)
        if not a.is_floating_point():
            a.copy_(a * decay + b * (1.0 - decay))


class EMA(nn.Module):
    """``ema = decay * ema + (1 - decay) * current`` over parameters and buffers; the first update copies."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long,
                                                        device=next(model.parameters()).device))
        self._n = 0
        self._cache: tuple[int, tuple] | None = None

    def _pairs(self, model: nn.Module) -> tuple:
        """:func:`ema_pairs` of my tensors and the model's, listed once per source model, not every step."""
        if self._cache is None or self._cache[0] != id(model):
            mine = list(self.module.parameters()) + list(self.module.buffers())
            theirs = [t.detach() for t in list(model.parameters()) + list(model.buffers())]
            if len(mine) != len(theirs):
                raise ValueError("EMA.update got a model with a different structure")
            self._cache = (id(model), ema_pairs(mine, theirs))
        return self._cache[1]

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ema_update_(self._pairs(model), self.decay, first=self._n == 0)
        self.n_averaged.add_(1)
        self._n += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._n = int(self.n_averaged)  # one sync, at load time only
        return out
