"""LDAM loss with optional deferred re-weighting (DRW): Cao, Wei, Gaidon, Arechiga, Ma, "Learning
imbalanced datasets with label-distribution-aware margin loss", NeurIPS 2019."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossdial.losses.base import (
    HparamValue,
    ImbalanceLoss,
    _check_class_vector,
    _col,
    effective_number_weights,
)

__all__ = ["LDAMLoss"]


class LDAMLoss(ImbalanceLoss):
    r"""Label-distribution-aware margin loss: cross-entropy with a class-dependent margin on the true logit.

    .. code-block:: text

        m_c = max_margin * n_c^(-1/4) / max_k n_k^(-1/4)        (so max_c m_c = max_margin)
        u_i = z_i / logit_scale                                  (the cosines, for a normalised head)
        l_i = -log softmax(scale * (u_i - m_{y_i} * onehot(y_i)))[y_i],   w_i = class weight of y_i

    Cao et al. use ``scale = 30`` on a normalised classifier: ``u_c = cos(feature, w_c)`` in [-1, 1] with
    unit-norm features and weight rows, so a margin of 0.5 is a large share of the logit range. lossdial's
    cosine head (``model.head: cosine``) already multiplies the cosines by its scale ``s`` so that the model's
    logits ``z = s * cos`` are calibrated scores; ``logit_scale = s`` tells the loss to take the margin off
    the cosine, giving exactly ``softmax(scale * (cos - m onehot))``. With ``logit_scale = 1`` (a plain
    linear head) the margin and scale act on raw logits, where 0.5 is negligible and ``scale = 30`` is
    cross-entropy at temperature 1/30.

    Deferred re-weighting (DRW): call :meth:`set_epoch` each epoch; from ``drw_epoch`` on the class weights
    are the effective-number weights ``∝ (1 - drw_beta) / (1 - drw_beta^n_c)`` (mean 1); before that
    they are ``class_weights`` (default all 1). ``drw_epoch=None`` never switches. The epoch is not part
    of the state dict: a resumed run must call ``set_epoch`` again.

    The margin is training-only: predictions use the raw logits.

    Args:
        class_counts: training count per class.
        max_margin: the largest margin (that of the rarest class), >= 0.
        scale: logit scale ``s`` (> 0); Cao et al. use 30 with normalised features.
        logit_scale: the factor the model already applied to its logits (a cosine head's scale; 1 for a
            linear head). Set by the trainer from the model config, not a loss hyperparameter.
        class_weights: per-class weights before DRW (used as given); default all 1.
        drw_epoch: first epoch of re-weighting, or None.
        drw_beta: ``beta`` of the effective-number DRW weights, in [0, 1).
        reduction, positive_index: see :class:`~lossdial.losses.base.ImbalanceLoss`.

    ``lam`` may carry ``max_margin`` and ``scale``, per batch or per sample.

    Example:
        >>> import torch
        >>> loss = LDAMLoss([10000, 625], max_margin=0.5, scale=30.0, drw_epoch=160)
        >>> [round(m, 4) for m in loss.margins().tolist()]     # (625 / 10000)^(1/4) = 0.5
        [0.25, 0.5]
        >>> loss.set_epoch(160); loss.drw_active
        True
    """

    smoothable = True  # loss.smoothing replaces the one-hot target of the cross-entropy
    hparam_names = ("max_margin", "scale")
    hparam_ranges = {"max_margin": (0.0, float("inf"), True), "scale": (0.0, float("inf"), False)}

    margin_ratio: Tensor
    base_weights: Tensor
    drw_weights: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        max_margin: float = 0.5,
        scale: float = 30.0,
        class_weights: Sequence[float] | None = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        *,
        reduction: str = "mean",
        positive_index: int = 1,
        logit_scale: float = 1.0,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        logit_scale = float(logit_scale)
        if not (logit_scale > 0 and logit_scale < float("inf")):
            raise ValueError(f"logit_scale must be a finite number > 0 (the head's scale), got {logit_scale}")
        self.logit_scale = logit_scale
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self._check_range("max_margin", self.max_margin)
        self._check_range("scale", self.scale)
        if drw_epoch is not None and (
            isinstance(drw_epoch, bool) or not isinstance(drw_epoch, numbers.Integral) or drw_epoch < 0
        ):
            raise ValueError(f"drw_epoch must be a non-negative int epoch or None, got {drw_epoch!r}")
        drw_beta = float(drw_beta)
        if not 0.0 <= drw_beta < 1.0:
            raise ValueError(f"drw_beta must be in [0, 1), got {drw_beta}")
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.drw_beta = drw_beta
        self.epoch = 0

        n = self._counts64()
        quarter = n.pow(-0.25)
        self._register_derived("margin_ratio", quarter / quarter.max())
        self._has_base_weights = class_weights is not None
        base = (
            _check_class_vector(class_weights, self.num_classes, "class_weights")
            if class_weights is not None
            else torch.ones_like(n)
        )
        self._register_derived("base_weights", base)
        self._register_derived("drw_weights", effective_number_weights(n, drw_beta))

    # ---- DRW ------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current (0-based) training epoch; switches to DRW weights at ``drw_epoch``."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    @property
    def drw_active(self) -> bool:
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def current_class_weights(self) -> Tensor:
        """The per-class weights in use at the current epoch (shape ``[C]``)."""
        return self.drw_weights if self.drw_active else self.base_weights

    def margins(self, max_margin: float | None = None) -> Tensor:
        """Per-class margins ``m_c`` (shape ``[C]``) for ``max_margin`` (default: the fixed one)."""
        return (self.max_margin if max_margin is None else max_margin) * self.margin_ratio

    # ---- loss -----------------------------------------------------------------------------------------
    def _per_sample(self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]):
        dtype = logits.dtype
        margin = hp["max_margin"] * self._derived("margin_ratio", dtype)[targets]  # [B]
        onehot = F.one_hot(targets, self.num_classes).to(dtype)
        u = logits if self.logit_scale == 1.0 else logits / self.logit_scale
        z = _col(hp["scale"]) * (u - onehot * margin.unsqueeze(1))
        losses = self._cross_entropy(z, targets, hp)
        if not self.drw_active and not self._has_base_weights:
            return losses, None
        name = "drw_weights" if self.drw_active else "base_weights"
        return losses, self._derived(name, dtype)[targets]

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, drw_epoch={self.drw_epoch}, drw_beta={self.drw_beta}, "
                f"logit_scale={self.logit_scale}")
