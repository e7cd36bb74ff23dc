"""Focal loss, softmax form: Lin, Goyal, Girshick, He, Dollár, "Focal loss for dense object detection",
ICCV 2017. Loss-conditional training over (alpha, phi): Lieberman et al. (arXiv 2410.03588)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import HparamValue, ImbalanceLoss, _binary_weights, _check_class_vector, _is_zero

__all__ = ["FocalLoss"]


class FocalLoss(ImbalanceLoss):
    r"""Focal loss ``FL = -alpha_t * (1 - p_t)^phi * log p_t`` with ``p = softmax(z)``, ``p_t = p[y]``.

    .. code-block:: text

        l_i = (1 - p_t)^phi * (-log p_t)        w_i = alpha_t
        binary:      alpha_t = alpha if y_i == positive_index else 1 - alpha
        multi-class: alpha_t = alpha[y_i]  (alpha a per-class sequence, default all 1)

    ``alpha_t`` plays the role of the class weight: ``"none"`` returns ``alpha_t (1-p_t)^phi (-log p_t)`` and
    ``"sum"`` its sum. Two means (``loss.params.reduction`` in a run config):

    - ``"mean"`` (default, the named method): the plain mean over the ``B`` samples,
      ``sum_i alpha_t l_i / B`` -- torchvision's ``sigmoid_focal_loss(reduction="mean")``, here in softmax
      form. The effective learning rate does not move with alpha, so LCT over alpha trains every draw at the
      same step size, and a batch without positives still feels alpha through ``1 - alpha``.
    - ``"weighted_mean"``: ``sum_i alpha_t l_i / sum_i alpha_t`` (PyTorch ``cross_entropy(weight=)``
      semantics; lossdial's behaviour before this option existed). Under LCT over alpha each draw rescales
      the step, and in a batch of one class alpha cancels out.

    Class-conditional label smoothing (``loss.smoothing``, :meth:`enable_smoothing`) keeps the focusing factor of
    the labelled class and smooths the log term: ``l_i = (1 - p_t)^phi * CE(q_i, p_i)`` with
    ``CE(q, p) = -sum_k q_k log p_k`` and ``q_i = (1 - a_y) onehot(y) + a_y / K`` (our choice; ``phi = 0``
    gives smoothed cross-entropy, ``a = 0`` the focal loss). The other form, ``-sum_k q_k (1 - p_k)^phi log
    p_k``, would focus each class term on its own probability; we keep the per-sample focusing of Lin et al.

    ``phi = 0`` is exactly weighted cross-entropy under ``"weighted_mean"``, ``"sum"`` and ``"none"``
    (``(1 - p_t)^0 = 1`` even where ``p_t`` rounds to 1). ``log p_t`` comes from ``log_softmax`` and
    ``1 - p_t`` from ``-expm1(log p_t)``, floored at the dtype's smallest normal number so the gradient
    stays finite as ``p_t -> 1``.

    Args:
        class_counts: training count per class.
        alpha: binary: weight of the positive class in [0, 1] (``None`` = 0.5, equal weights); multi-class:
            ``None`` (all 1) or a per-class sequence.
        phi: focusing exponent, >= 0.
        reduction: ``"mean"`` (plain mean over samples), ``"weighted_mean"``, ``"sum"`` or ``"none"``.
        positive_index: see :class:`~lossdial.losses.base.ImbalanceLoss`.

    ``lam`` may carry ``alpha`` (binary only) and ``phi``, per batch or per sample.

    Example:
        >>> import torch
        >>> loss = FocalLoss([900, 100], alpha=0.75, phi=2.0, reduction="none")
        >>> [round(v, 4) for v in loss(torch.zeros(2, 2), torch.tensor([0, 1])).tolist()]
        [0.0433, 0.13]
    """

    smoothable = True
    hparam_names = ("alpha", "phi")
    hparam_ranges = {"alpha": (0.0, 1.0, True), "phi": (0.0, float("inf"), True)}
    reductions = ("mean", "weighted_mean", "sum", "none")
    config_reductions = ("mean", "weighted_mean")

    def __init__(
        self,
        class_counts: Sequence[int],
        alpha: float | Sequence[float] | None = None,
        phi: float = 2.0,
        *,
        reduction: str = "mean",
        positive_index: int = 1,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        scalar_alpha = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
        if self.is_binary:
            if alpha is not None and not scalar_alpha:
                raise ValueError(
                    "binary FocalLoss takes alpha as one number in [0, 1] (the weight of the positive "
                    f"class; the negative class gets 1 - alpha), got {alpha!r}"
                )
            alpha = 0.5 if alpha is None else float(alpha)
            self._check_range("alpha", alpha)
            self.alpha = alpha
        else:
            if scalar_alpha:
                raise ValueError(
                    f"multi-class FocalLoss takes alpha as {self.num_classes} per-class weights or None, "
                    f"got the single number {alpha}"
                )
            a = (
                _check_class_vector(alpha, self.num_classes, "alpha")
                if alpha is not None
                else torch.ones(self.num_classes, dtype=torch.float64)
            )
            self._register_derived("class_alpha", a)
            self.alpha = None
        self.phi = float(phi)
        self._check_range("phi", self.phi)

    def _check_hparams(self, values: Mapping[str, HparamValue], overridden: frozenset[str]) -> None:
        if not self.is_binary and "alpha" in overridden:
            raise ValueError(
                f"lam carries alpha, which only applies to binary tasks (this loss has {self.num_classes} "
                "classes; per-class alphas are fixed at construction); condition on phi"
            )

    def mean_parts(self, losses: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(sum_i alpha_t l_i, B)`` for ``"mean"``; ``(sum_i alpha_t l_i, sum_i alpha_t)`` for ``"weighted_mean"``."""
        num, den = super().mean_parts(losses, weights)
        if self.reduction == "weighted_mean":
            return num, den
        return num, torch.tensor(float(losses.numel()), dtype=losses.dtype, device=losses.device)

    def _per_sample(self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]):
        logp_t = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        # loss.smoothing: the log term becomes the cross-entropy against the smoothed target (see the class doc)
        nll = self._cross_entropy(logits, targets, hp) if self.smoothing_on else -logp_t
        phi = hp["phi"]
        if _is_zero(phi):
            losses = nll
        else:
            one_minus_pt = (-torch.expm1(logp_t)).clamp_min(torch.finfo(logp_t.dtype).tiny)
            losses = one_minus_pt.pow(phi) * nll
        if self.is_binary:
            weights = _binary_weights(hp["alpha"], targets, self.positive_index, losses.dtype)
        else:
            weights = self._derived("class_alpha", losses.dtype)[targets]
        return losses, weights
