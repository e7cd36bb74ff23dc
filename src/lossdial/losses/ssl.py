"""NT-Xent, the contrastive loss of SimCLR (Chen, Kornblith, Norouzi, Hinton, ICML 2020), used by Joint-SSL."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["nt_xent"]


def nt_xent(a: Tensor, b: Tensor, temperature: float = 0.5) -> Tensor:
    r"""Normalised-temperature cross-entropy of the pairs ``(a_i, b_i)`` (two views of sample i).

    .. code-block:: text

        u = normalise([a; b])  (2B rows),   s_ij = <u_i, u_j> / t
        loss = mean over the 2B anchors i of  -log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) )

    where ``p(i)`` is the other view of the same sample; every other row of the 2B is a negative.

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(nt_xent(a, a, temperature=1.0).item(), 4)     # -log(e / (e + 1 + 1)): positive at cos 1, negatives at 0, 0
        0.5514
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"nt_xent takes two [B, D] views of the same shape, got {list(a.shape)} and {list(b.shape)}")
    n = a.shape[0]
    u = F.normalize(torch.cat([a, b]), dim=1)
    sim = (u @ u.T) / temperature
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(self_pair, float("-inf"))
    idx = torch.arange(n, device=sim.device)
    positives = torch.cat([idx + n, idx])
    return F.cross_entropy(sim, positives)
