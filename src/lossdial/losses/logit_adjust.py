"""Logit adjustment: Menon, Jayasumana, Rawat, Jain, Veit, Kumar, "Long-tail learning via logit
adjustment", ICLR 2021. Training form (a loss) and post-hoc form (a transform of trained logits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossdial.losses.base import HparamValue, ImbalanceLoss, _col, _is_zero, check_class_counts

__all__ = ["LogitAdjustedLoss", "posthoc_logit_adjust"]


class LogitAdjustedLoss(ImbalanceLoss):
    r"""Logit-adjusted cross-entropy: unweighted CE on ``z_c + tau * log(pi_c)``.

    .. code-block:: text

        l_i = -log softmax(z_i + tau * log pi)[y_i],   pi_c = n_c / sum_k n_k,   w_i = 1

    This is :class:`~lossdial.losses.vs.VSLoss` with ``gamma = 0`` and all class weights 1. ``tau = 1`` is
    Fisher-consistent for the balanced error. The adjustment is training-only: predictions use the raw
    logits (for the post-hoc variant on a plainly trained model see :func:`posthoc_logit_adjust`).

    Args:
        class_counts: training count per class.
        tau: scale of the additive adjustment (``lam`` may carry ``tau``).
        reduction, positive_index: see :class:`~lossdial.losses.base.ImbalanceLoss`.

    Example:
        >>> import torch
        >>> loss = LogitAdjustedLoss([900, 100], tau=1.0)
        >>> round(loss(torch.zeros(2, 2), torch.tensor([0, 1])).item(), 4)   # (-log .9 - log .1) / 2
        1.204
    """

    smoothable = True  # loss.smoothing replaces the one-hot target of the cross-entropy
    hparam_names = ("tau",)

    log_prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        tau: float = 1.0,
        *,
        reduction: str = "mean",
        positive_index: int = 1,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        self.tau = float(tau)
        self._check_range("tau", self.tau)
        n = self._counts64()
        self._register_derived("log_prior", torch.log(n / n.sum()))

    def _per_sample(self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]):
        tau = hp["tau"]
        z = logits if _is_zero(tau) else logits + _col(tau) * self._derived("log_prior", logits.dtype)
        return self._cross_entropy(z, targets, hp), None


def posthoc_logit_adjust(logits: Tensor, class_counts, tau: float | Tensor = 1.0) -> Tensor:
    r"""Post-hoc logit adjustment ``z_c - tau * log(pi_c)``; predict with its argmax.

    ``logits`` is ``[..., C]``; ``class_counts`` the training counts (sequence or tensor); ``tau`` a float,
    or a tensor broadcastable against ``logits[..., :1]`` (e.g. ``[B, 1]`` for one tau per sample).
    Returns a tensor of the logits' shape, dtype and device.

    Example:
        >>> import torch
        >>> adj = posthoc_logit_adjust(torch.zeros(1, 2), [900, 100], tau=1.0)
        >>> [round(v, 4) for v in adj[0].tolist()]    # -log .9, -log .1
        [0.1054, 2.3026]
    """
    counts = torch.tensor(check_class_counts(class_counts), dtype=torch.float64)
    if logits.shape[-1] != counts.numel():
        raise ValueError(
            f"logits have {logits.shape[-1]} classes but class_counts has {counts.numel()} entries"
        )
    dtype = logits.dtype if logits.is_floating_point() else torch.get_default_dtype()
    log_prior = torch.log(counts / counts.sum()).to(device=logits.device, dtype=dtype)
    if isinstance(tau, Tensor):
        tau = tau.to(device=logits.device, dtype=dtype)
    return logits - tau * log_prior
