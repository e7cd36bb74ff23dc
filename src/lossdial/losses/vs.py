"""VS (vector-scaling) loss: Kini, Paraskevas, Oymak, Thrampoulidis, "Label-imbalanced and group-sensitive
classification under overparameterization", NeurIPS 2021."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lossdial.losses.base import (
    HparamValue,
    ImbalanceLoss,
    _binary_weights,
    _col,
    _is_zero,
    class_weight_vector,
)

__all__ = ["VSLoss"]


class VSLoss(ImbalanceLoss):
    r"""Vector-scaling loss: weighted cross-entropy on multiplicatively and additively adjusted logits.

    .. code-block:: text

        z'_c    = Delta_c * z_c + iota_c
        Delta_c = (n_c / n_max) ** gamma          (multiplicative, CDT-like)
        iota_c  = tau * log(pi_c),  pi_c = n_c / sum_k n_k   (additive, logit adjustment)
        l_i     = -log softmax(z'_i)[y_i],   w_i = class weight of y_i

    Binary tasks weight the classes ``[1 - omega, omega]`` with ``omega`` on ``positive_index`` (the
    minority class); a per-sample ``omega_i`` gives ``w_i = omega_i`` if ``y_i`` is positive else
    ``1 - omega_i``. Multi-class tasks take ``class_weights``: ``"none"`` (default: every sample weighs 1;
    with ``tau = 1`` the adjusted loss is already consistent for the balanced error, Menon et al. 2021, and
    the published cross-entropy / logit-adjustment anchors use no weights), ``"inverse_frequency"``
    (``w_c ∝ 1/n_c``, mean 1: the LCT reference code's habit, which over-corrects on top of ``tau > 0``),
    ``"effective_number"`` (Cui et al. 2019, ``beta_eff`` default 0.9999, mean 1) or a list of C positive
    weights (used as given). ``omega`` does not apply there and passing it (in the constructor or in ``lam``)
    raises ``ValueError``.

    Special cases: ``gamma = 0`` is logit adjustment, ``tau = 0`` is CDT, ``gamma = tau = 0`` is weighted CE
    (plain CE for binary ``omega = 0.5`` under ``reduction="mean"``).

    The adjustment is **training-only**: predictions use the raw logits ``z``.

    Args:
        class_counts: training count per class.
        omega: binary only: weight of the positive class in [0, 1]; ``None`` means 0.5 (binary) / not used
            (multi-class).
        gamma: exponent of the multiplicative adjustment.
        tau: scale of the additive adjustment.
        class_weights: multi-class only: ``"none"`` (default), ``"inverse_frequency"``,
            ``"effective_number"`` or C positive numbers (see above).
        beta_eff: ``beta`` of ``class_weights="effective_number"`` in [0, 1) (None: 0.9999); an error with any
            other ``class_weights``.
        reduction, positive_index: see :class:`~lossdial.losses.base.ImbalanceLoss`.

    ``lam`` may carry ``omega`` (binary), ``gamma`` and ``tau``.

    Example:
        >>> import torch
        >>> loss = VSLoss([5000, 50], omega=0.5, gamma=0.2, tau=1.0)
        >>> logits, y = torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])
        >>> loss(logits, y).shape
        torch.Size([])
        >>> loss(logits, y, lam={"tau": torch.tensor([0.0, 1.0, 2.0, 3.0])}).ndim   # one tau per sample
        0
    """

    smoothable = True  # loss.smoothing replaces the one-hot target of the cross-entropy
    hparam_names = ("omega", "gamma", "tau")
    hparam_ranges = {"omega": (0.0, 1.0, True)}

    log_count_ratio: Tensor
    log_prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        omega: float | None = None,
        gamma: float = 0.0,
        tau: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        beta_eff: float | None = None,
        *,
        reduction: str = "mean",
        positive_index: int = 1,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, positive_index=positive_index)
        n = self._counts64()
        named = class_weights is None or isinstance(class_weights, str)
        self.class_weighting = "none" if class_weights is None else class_weights if named else "explicit"
        if self.is_binary:
            if self.class_weighting != "none" or beta_eff is not None:
                raise ValueError(
                    "binary VSLoss is weighted by omega (weight of the positive class); class_weights and "
                    "beta_eff are for multi-class tasks (class weights [w0, w1] correspond to "
                    "omega = w1 / (w0 + w1))"
                )
            omega = 0.5 if omega is None else float(omega)
            self._check_range("omega", omega)
        else:
            if omega is not None:
                raise ValueError(
                    f"omega (the positive-class weight) only applies to binary tasks; with {self.num_classes} "
                    "classes weigh them with class_weights (none, inverse_frequency, effective_number or a list)"
                )
            w = class_weight_vector(class_weights, n, beta_eff)
            if w is not None:
                self._register_derived("class_weights", w)
        self.beta_eff = beta_eff
        self.omega = omega
        self.gamma = float(gamma)
        self.tau = float(tau)
        self._check_range("gamma", self.gamma)
        self._check_range("tau", self.tau)
        self._register_derived("log_count_ratio", torch.log(n / n.max()))
        self._register_derived("log_prior", torch.log(n / n.sum()))

    def _check_hparams(self, values: Mapping[str, HparamValue], overridden: frozenset[str]) -> None:
        if not self.is_binary and "omega" in overridden:
            raise ValueError(
                f"lam carries omega, which only applies to binary tasks (this loss has {self.num_classes} "
                "classes); condition on gamma and/or tau"
            )

    def adjusted_logits(self, logits: Tensor, gamma: HparamValue = None, tau: HparamValue = None) -> Tensor:
        """``z' = (n_c / n_max)^gamma * z + tau * log(pi_c)`` (defaults: the fixed gamma and tau).

        ``gamma``/``tau`` may be floats, 0-d tensors or ``[B]`` tensors already on ``logits``' device.
        """
        gamma = self.gamma if gamma is None else gamma
        tau = self.tau if tau is None else tau
        z = logits
        if not _is_zero(gamma):
            z = z * torch.exp(_col(gamma) * self._derived("log_count_ratio", z.dtype))
        if not _is_zero(tau):
            z = z + _col(tau) * self._derived("log_prior", z.dtype)
        return z

    def _per_sample(self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]):
        z = self.adjusted_logits(logits, hp["gamma"], hp["tau"])
        losses = self._cross_entropy(z, targets, hp)
        if self.is_binary:
            weights = _binary_weights(hp["omega"], targets, self.positive_index, losses.dtype)
        elif "class_weights" in self._buffers:
            weights = self._derived("class_weights", losses.dtype)[targets]
        else:
            weights = None
        return losses, weights

    def extra_repr(self) -> str:
        extra = "" if self.is_binary else f", class_weights={self.class_weighting!r}"
        if self.beta_eff is not None:
            extra += f", beta_eff={self.beta_eff}"
        return super().extra_repr() + extra
