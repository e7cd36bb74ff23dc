"""Common machinery of the imbalance losses: class-count checks, ``lam`` resolution, reduction.

Every loss in :mod:`lossdial.losses` is an :class:`ImbalanceLoss`: an ``nn.Module`` built from the training
class counts, called as ``loss(logits, targets, lam=None)``. ``lam`` maps hyperparameter names (the class
attribute ``hparam_names``) to one value for the batch (float or 0-d tensor) or one value per sample
(shape-``[B]`` tensor), overriding the fixed values given at construction for that call only.

Reduction (PyTorch ``cross_entropy(weight=)`` semantics): with per-sample weight ``w_i`` and per-sample
loss ``l_i``, ``"none"`` returns ``w_i * l_i``, ``"sum"`` returns ``sum_i w_i l_i`` and ``"mean"`` returns
``sum_i w_i l_i / sum_i w_i`` -- whether lambda is one value per batch or per sample. One deliberate
difference from PyTorch: a batch whose weights sum to exactly 0 gives a ``"mean"`` of 0 (and no gradient)
rather than NaN. A family may define its own mean (focal: ``"mean"`` is the plain mean over samples,
``"weighted_mean"`` the weighted one) by overriding :meth:`ImbalanceLoss.mean_parts`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossdial.checks import require

__all__ = [
    "ImbalanceLoss",
    "HparamValue",
    "CLASS_WEIGHTINGS",
    "check_class_counts",
    "check_hparam_values",
    "class_weight_vector",
    "describe_range",
    "effective_number_weights",
    "hparam_range",
    "inverse_frequency_weights",
]

#: A resolved hyperparameter: a Python float, a 0-d tensor (one value for the batch) or a ``[B]`` tensor.
HparamValue = Union[float, Tensor]

REDUCTIONS = ("mean", "sum", "none")

#: Named per-class weightings of :func:`class_weight_vector` (``loss.params.class_weights`` of multi-class VS).
CLASS_WEIGHTINGS = ("none", "inverse_frequency", "effective_number")


# --------------------------------------------------------------------------------------------------------
# class counts and class weights
# --------------------------------------------------------------------------------------------------------
def check_class_counts(class_counts) -> list[int]:
    """Validate training class counts and return them as a list of Python ints.

    Accepts a sequence, NumPy array or 1-D tensor of positive whole numbers with at least 2 entries;
    raises ``ValueError`` naming the offending entry otherwise.

    >>> check_class_counts([5000, 50])
    [5000, 50]
    """
    if isinstance(class_counts, Tensor):
        class_counts = class_counts.detach().cpu().reshape(-1).tolist()
    elif hasattr(class_counts, "tolist") and not isinstance(class_counts, (str, bytes)):
        class_counts = class_counts.tolist()  # NumPy arrays
    if isinstance(class_counts, (str, bytes)) or not isinstance(class_counts, Sequence):
        raise ValueError(
            f"class_counts must be a sequence of per-class training counts, got {type(class_counts).__name__}"
        )
    if len(class_counts) < 2:
        raise ValueError(f"class_counts needs at least 2 classes, got {len(class_counts)}: {list(class_counts)}")
    counts = []
    for c, n in enumerate(class_counts):
        if isinstance(n, bool) or not isinstance(n, numbers.Real):
            raise ValueError(f"class_counts[{c}] = {n!r} is not a number; class counts are whole numbers")
        if not math.isfinite(n) or n != int(n):
            raise ValueError(f"class_counts[{c}] = {n!r} is not a whole number")
        if n <= 0:
            raise ValueError(
                f"class_counts[{c}] = {int(n)}: every class needs at least one training sample "
                "(drop empty classes or fix the counts)"
            )
        counts.append(int(n))
    return counts


def inverse_frequency_weights(class_counts) -> Tensor:
    """Per-class weights ``w_c ∝ 1 / n_c``, normalised to mean 1 (float64 tensor of shape ``[C]``).

    >>> inverse_frequency_weights([90, 10]).tolist()
    [0.2, 1.8]
    """
    n = torch.tensor(check_class_counts(class_counts), dtype=torch.float64)
    w = 1.0 / n
    return w * (len(n) / w.sum())


def effective_number_weights(class_counts, beta: float = 0.999) -> Tensor:
    """Class-balanced weights of Cui et al. (CVPR 2019), normalised to mean 1 (float64, shape ``[C]``).

    ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, the inverse "effective number" of samples of class ``c``.
    ``beta = 0`` gives equal weights; ``beta -> 1`` approaches inverse frequency.

    >>> [round(x, 3) for x in effective_number_weights([1000, 10], beta=0.99).tolist()]
    [0.175, 1.825]
    """
    counts = check_class_counts(class_counts)
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta for effective-number weights must be in [0, 1), got {beta}")
    n = torch.tensor(counts, dtype=torch.float64)
    if beta == 0.0:
        return torch.ones_like(n)
    one_minus_beta_n = -torch.expm1(n * math.log(beta))  # 1 - beta^n, accurate for beta near 1
    w = 1.0 / one_minus_beta_n  # the constant factor (1 - beta) cancels in the normalisation
    return w * (len(n) / w.sum())


def class_weight_vector(spec, class_counts, beta: float | None = None) -> Tensor | None:
    """Per-class weights from a named weighting or an explicit list (float64 ``[C]``; None for ``"none"``).

    ``spec``: ``"none"`` (or None) -> None (all samples weigh 1); ``"inverse_frequency"`` ->
    :func:`inverse_frequency_weights`; ``"effective_number"`` -> :func:`effective_number_weights` with
    ``beta`` (default 0.9999, Cao et al.'s DRW value); a sequence of C positive numbers -> those weights, used as
    given. ``beta`` belongs to ``"effective_number"`` only: passing it with any other spec raises ``ValueError``.

    >>> [round(x, 3) for x in class_weight_vector("effective_number", [1000, 10], beta=0.99).tolist()]
    [0.175, 1.825]
    >>> class_weight_vector("none", [1000, 10]) is None
    True
    """
    counts = check_class_counts(class_counts)
    name = spec if isinstance(spec, str) or spec is None else None
    if beta is not None and name != "effective_number":
        raise ValueError(f"beta_eff applies only to class_weights: effective_number (class_weights is {spec!r}); "
                         "remove beta_eff or set class_weights: effective_number")
    if isinstance(spec, str) or spec is None:
        if spec in (None, "none"):
            return None
        if spec == "inverse_frequency":
            return inverse_frequency_weights(counts)
        if spec == "effective_number":
            return effective_number_weights(counts, 0.9999 if beta is None else beta)
        raise ValueError(f"class_weights must be one of {list(CLASS_WEIGHTINGS)} or a list of {len(counts)} positive "
                         f"per-class weights, got {spec!r}")
    w = _check_class_vector(spec, len(counts), "class_weights")
    if bool((w <= 0).any()):
        raise ValueError(f"class_weights must be positive (a zero weight drops a class from training), got {w.tolist()}")
    return w


def _check_class_vector(values, num_classes: int, name: str) -> Tensor:
    """A user-given per-class vector (weights, alphas): finite, non-negative, length C; float64."""
    try:
        t = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a sequence of {num_classes} non-negative numbers ({exc})") from None
    if t.numel() != num_classes:
        raise ValueError(f"{name} has {t.numel()} entries but there are {num_classes} classes")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative, got {t.tolist()}")
    return t


# --------------------------------------------------------------------------------------------------------
# small tensor helpers shared by the families
# --------------------------------------------------------------------------------------------------------
def _is_zero(v: HparamValue) -> bool:
    """True only for a Python float 0 (lets a family skip work without a device sync)."""
    return not isinstance(v, Tensor) and v == 0.0


def _col(v: HparamValue) -> HparamValue:
    """Make a resolved hyperparameter broadcast against ``[B, C]``: ``[B]`` -> ``[B, 1]``, others unchanged."""
    if isinstance(v, Tensor) and v.ndim == 1:
        return v.unsqueeze(-1)
    return v


def _binary_weights(omega: HparamValue, targets: Tensor, positive_index: int, dtype: torch.dtype) -> Tensor:
    """Per-sample weights: ``omega_i`` where ``y_i == positive_index``, ``1 - omega_i`` elsewhere."""
    is_pos = targets == positive_index
    if isinstance(omega, Tensor):
        return torch.where(is_pos, omega, 1.0 - omega).to(dtype)
    w = torch.full(targets.shape, 1.0 - omega, dtype=dtype, device=targets.device)
    return w.masked_fill(is_pos, omega)


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """Losses are computed in float32 at least (half/bfloat16 logits are upcast); float64 stays float64."""
    if logits.dtype in (torch.float32, torch.float64):
        return logits.dtype
    return torch.float32


# --------------------------------------------------------------------------------------------------------
# class-conditional label smoothing (Shwartz-Ziv et al. 2023), shared by the smoothing family and loss.smoothing
# --------------------------------------------------------------------------------------------------------
#: The hyperparameters class-conditional smoothing adds to a family (``loss.smoothing``), their ranges and order.
SMOOTHING_NAMES: tuple[str, ...] = ("a_max", "a_min")
#: a_max is open at 1 (a_max = 1 would replace the rarest class's label by the uniform distribution); a_min <= a_max
#: (``SMOOTHING_ORDER``). ``loss.smoothing`` in the config is checked against these same ranges.
SMOOTHING_RANGES: dict[str, tuple] = {"a_max": (0.0, 1.0, True, False), "a_min": (0.0, 1.0, True)}
SMOOTHING_ORDER: tuple[tuple[str, str], ...] = (("a_min", "a_max"),)


def log_count_rarity(class_counts) -> Tensor:
    """``r_c = (log n_max - log n_c) / (log n_max - log n_min)``: 0 at the most frequent class, 1 at the rarest
    (float64 ``[C]``; all ones if every count is equal). Smoothing is ``a_c = a_min + (a_max - a_min) r_c``.

    >>> [round(r, 4) for r in log_count_rarity([1000, 100, 10]).tolist()]
    [0.0, 0.5, 1.0]
    """
    n = torch.tensor(check_class_counts(class_counts), dtype=torch.float64)
    log_n = torch.log(n)
    span = float(log_n.max() - log_n.min())
    return (log_n.max() - log_n) / span if span > 0 else torch.ones_like(n)


def smoothed_cross_entropy(logits: Tensor, targets: Tensor, a_y: HparamValue) -> Tensor:
    """Per-sample cross-entropy against ``q = (1 - a_y) onehot(y) + a_y / K``:
    ``(1 - a_y) (-log p_y) + a_y mean_k(-log p_k)`` (``a_y``: a float or one value per sample)."""
    logp = torch.log_softmax(logits, dim=1)
    nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    return (1.0 - a_y) * nll + a_y * (-logp.mean(dim=1))


# --------------------------------------------------------------------------------------------------------
# hyperparameter ranges (declared once per family in ``hparam_ranges``; used by the losses and by config load)
# --------------------------------------------------------------------------------------------------------
#: ``(low, high, low_inclusive)`` or ``(low, high, low_inclusive, high_inclusive)`` (high inclusive by default)
Range = tuple
_ANY: Range = (-math.inf, math.inf, True)


def _range_parts(rng: Range) -> tuple[float, float, bool, bool]:
    return (rng[0], rng[1], rng[2], rng[3] if len(rng) > 3 else True)


def hparam_range(cls: type, name: str) -> Range:
    """``(low, high, low_inclusive)`` of hyperparameter ``name`` of loss class ``cls`` (any finite value if
    the family declares no range for it)."""
    return getattr(cls, "hparam_ranges", {}).get(name, _ANY)


def describe_range(rng: Range) -> str:
    """``"[0, 1]"``, ``"[0, 1)"``, ``"(0, inf)"``, ``"[0, inf)"`` or ``"any finite value"``."""
    low, high, low_inclusive, high_inclusive = _range_parts(rng)
    if math.isinf(low) and math.isinf(high):
        return "any finite value"
    close = ')' if math.isinf(high) or not high_inclusive else ']'
    return f"{'[' if low_inclusive and not math.isinf(low) else '('}{low:g}, {high:g}{close}"


def _within(v, rng: Range):
    """Is ``v`` (a float, or a tensor elementwise) finite and inside ``rng``?"""
    low, high, low_inclusive, high_inclusive = _range_parts(rng)
    if isinstance(v, Tensor):
        return torch.isfinite(v) & ((v <= high) if high_inclusive else (v < high)) \
            & ((v >= low) if low_inclusive else (v > low))
    return math.isfinite(v) and (v <= high if high_inclusive else v < high) and (v >= low if low_inclusive else v > low)


def check_hparam_values(cls: type, name: str, values) -> float | None:
    """The first of ``values`` (floats) that hyperparameter ``name`` of loss class ``cls`` does not allow, or
    None. For a law it is enough to pass the ends of its support (every range is an interval).

    >>> from lossdial.losses import VSLoss
    >>> check_hparam_values(VSLoss, "omega", [0.5, 1.5]), check_hparam_values(VSLoss, "tau", [-1.0, 4.0])
    (1.5, None)
    """
    rng = hparam_range(cls, name)
    for v in values:
        if not _within(float(v), rng):
            return float(v)
    return None


def _short(v: HparamValue):
    if isinstance(v, Tensor):
        return v.reshape(-1)[:5].tolist() if v.ndim else v.item()
    return v if not math.isnan(v) else "nan"


# --------------------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------------------
class ImbalanceLoss(nn.Module):
    """Base class of the lossdial loss families.

    Subclasses set ``hparam_names`` (the names ``lam`` may carry), store each fixed hyperparameter as an
    attribute of that name, register class-count-derived tensors as buffers (so ``.to(device)`` moves them)
    and implement :meth:`_per_sample`, which returns per-sample losses ``l_i`` and weights ``w_i`` (or None
    for all-ones weights). :meth:`forward` validates the inputs, resolves ``lam`` and reduces.

    Args:
        class_counts: training count of each class (length C >= 2, all > 0), stored as the float buffer
            ``class_counts``.
        reduction: ``"mean"`` (``sum w l / sum w``), ``"sum"`` or ``"none"`` (per-sample ``w_i l_i``).
        positive_index: binary tasks only: the index of the minority/positive class (default 1).

    Resolved hyperparameters (:meth:`resolve_hparams`) are a Python float, a 0-d tensor or a ``[B]`` tensor
    on the logits' device and compute dtype; ``_col`` turns ``[B]`` into ``[B, 1]`` to broadcast against
    ``[B, C]``. Range checks on ``lam`` values (``hparam_ranges``, ``hparam_order``) run on every device: on
    the CPU immediately, on CUDA as an asynchronous device assert (no host sync per step; see
    :func:`lossdial.checks.require`). A config's lambda laws are checked against the same ranges when it is
    loaded (:func:`check_hparam_values`), so a training run never reaches the device assert.

    Inputs: ``logits`` must be ``[B, C]`` floating point (half/bfloat16 are upcast to float32 for the loss)
    and ``targets`` ``[B]`` integer. The target range is checked when targets are on the CPU; on an
    accelerator the indexing kernels assert out-of-range classes on the device instead.
    """

    hparam_names: ClassVar[tuple[str, ...]] = ()
    #: The reductions this family accepts.
    reductions: ClassVar[tuple[str, ...]] = REDUCTIONS
    #: Reductions a run config may choose with ``loss.params.reduction`` (only families where the choice is a
    #: documented variant of the method; empty: the config cannot set it and training uses ``"mean"``).
    config_reductions: ClassVar[tuple[str, ...]] = ()
    #: name -> (low, high, low_inclusive): allowed range of a hyperparameter (values must also be finite;
    #: ``high`` is inclusive unless infinite). Names not listed take any finite value. Declared once per family;
    #: the constructor, ``lam`` and config loading all check against it (:func:`hparam_violation`).
    hparam_ranges: ClassVar[dict[str, tuple[float, float, bool]]] = {}
    #: pairs (a, b) that must satisfy a <= b for every value (e.g. smoothing's a_min <= a_max).
    hparam_order: ClassVar[tuple[tuple[str, str], ...]] = ()

    class_counts: Tensor

    def __init__(self, class_counts, *, reduction: str = "mean", positive_index: int = 1) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        if reduction not in self.reductions:
            raise ValueError(f"reduction must be one of {list(self.reductions)}, got {reduction!r}")
        if isinstance(positive_index, bool) or not isinstance(positive_index, numbers.Integral):
            raise ValueError(f"positive_index must be an int class index, got {positive_index!r}")
        if not 0 <= int(positive_index) < len(counts):
            raise ValueError(
                f"positive_index={positive_index} is not a class index (there are {len(counts)} classes)"
            )
        self.reduction = reduction
        self.positive_index = int(positive_index)
        self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.get_default_dtype()))

    # ---- basic properties ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    def _counts64(self) -> Tensor:
        """Class counts as a float64 CPU tensor (for deriving buffers at construction)."""
        return self.class_counts.detach().to("cpu", torch.float64)

    def _register_derived(self, name: str, value: Tensor) -> None:
        """Register a class-count-derived float buffer (computed in float64, stored in the default dtype).

        A float64 master copy is kept so that a dtype change of the module (``.double()``, ``.to(dtype)``)
        re-derives the buffer from it instead of up-casting an already rounded float32 value.
        """
        master = value.detach().to("cpu", torch.float64)
        self.__dict__.setdefault("_derived_masters", {})[name] = master
        self.register_buffer(name, master.to(torch.get_default_dtype()))

    def _derived(self, name: str, dtype: torch.dtype) -> Tensor:
        """A derived buffer in ``dtype``; float64 requests on a lower-precision module use the exact master."""
        buf = self._buffers[name]
        if buf.dtype == dtype:
            return buf
        if dtype == torch.float64:
            master = self.__dict__.get("_derived_masters", {}).get(name)
            if master is not None:
                return master if buf.device.type == "cpu" else master.to(buf.device)
        return buf.to(dtype)

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        for name, master in self.__dict__.get("_derived_masters", {}).items():
            buf = self._buffers.get(name)
            if buf is not None and buf.is_floating_point():
                # cast on the CPU first: some backends (MPS) cannot hold float64 at all
                self._buffers[name] = master.to(dtype=buf.dtype).to(device=buf.device)
        return module

    # ---- hyperparameters ------------------------------------------------------------------------------
    def fixed_hparams(self) -> dict[str, HparamValue]:
        """The hyperparameters used where ``lam`` does not override them."""
        return {name: getattr(self, name) for name in self.hparam_names}

    def _check_range(self, name: str, value: HparamValue) -> None:
        """Range-check a float or a tensor of values against ``hparam_ranges`` (on any device, no host sync)."""
        rng = hparam_range(self, name)  # the instance: loss.smoothing adds a_max / a_min to a family
        message = f"{type(self).__name__}: {name} must be finite and in {describe_range(rng)}"
        if isinstance(value, Tensor):
            v = value.detach()
            ok = _within(v, rng)
            require(ok, message, lambda: v[~ok].reshape(-1)[:5].tolist())
            return
        require(_within(value, rng), message, lambda: value)

    def _check_order(self, values: Mapping[str, HparamValue]) -> None:
        """``hparam_order``: ``values[a] <= values[b]`` for each declared pair (on any device, no host sync)."""
        for a, b in self.hparam_order:
            va, vb = values[a], values[b]
            if not isinstance(va, Tensor) and not isinstance(vb, Tensor):
                ok = va <= vb
            else:
                dev = (va if isinstance(va, Tensor) else vb).device
                ok = torch.as_tensor(va, device=dev) <= torch.as_tensor(vb, device=dev)
            require(ok, f"{type(self).__name__} needs {a} <= {b}",
                    lambda: f"{a}={_short(va)}, {b}={_short(vb)}")

    def _check_hparams(self, values: Mapping[str, HparamValue], overridden: frozenset[str]) -> None:
        """Family hook: checks across hyperparameters, binary/multi-class rules (values not yet moved)."""

    @staticmethod
    def _coerce(name: str, value, batch_size: int) -> HparamValue:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, Tensor):
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"lam[{name!r}] must be a float or a tensor, got {type(value).__name__}") from None
        if value.dtype == torch.bool or value.is_complex():
            raise ValueError(f"lam[{name!r}] must be real-valued, got dtype {value.dtype}")
        if value.ndim == 1 and value.shape[0] == 1 and batch_size != 1:
            value = value.reshape(())
        if value.ndim == 0 or (value.ndim == 1 and value.shape[0] == batch_size):
            return value
        raise ValueError(
            f"lam[{name!r}] must be a scalar (one value for the batch) or a tensor of shape [{batch_size}] "
            f"(one value per sample), got shape {list(value.shape)}"
        )

    def resolve_hparams(
        self,
        lam: Mapping[str, HparamValue] | None,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, HparamValue]:
        """Merge ``lam`` over the fixed hyperparameters, validate, and move tensors to ``device``/``dtype``.

        Returns name -> Python float | 0-d tensor | ``[B]`` tensor. Raises ``KeyError`` for a name not in
        ``hparam_names`` and ``ValueError`` for a wrong shape or an out-of-range value.
        """
        values = self.fixed_hparams()
        overridden: frozenset[str] = frozenset()
        if lam:
            if not isinstance(lam, Mapping):
                raise TypeError(f"lam must be a mapping of hyperparameter name -> value, got {type(lam).__name__}")
            unknown = [k for k in lam if k not in self.hparam_names]
            if unknown:
                valid = list(self.hparam_names) or "none (this loss takes no lambda)"
                raise KeyError(
                    f"{type(self).__name__} got unknown lambda hyperparameter(s) {unknown}; valid: {valid}"
                )
            for name, value in lam.items():
                value = self._coerce(name, value, batch_size)
                self._check_range(name, value)
                values[name] = value
            overridden = frozenset(lam)
        self._check_order(values)
        self._check_hparams(values, overridden)
        for name, value in values.items():
            if isinstance(value, Tensor):
                values[name] = value.to(device=device, dtype=dtype)
        return values

    # ---- class-conditional label smoothing (loss.smoothing) ---------------------------------------------
    smoothing_on: bool = False

    def enable_smoothing(self, a_max: float, a_min: float = 0.0) -> "ImbalanceLoss":
        """Replace the one-hot target of this family's cross-entropy by ``(1 - a_y) onehot(y) + a_y / K``, with
        ``a_c`` interpolated in log-count from ``a_max`` (rarest class) to ``a_min`` (most frequent;
        :func:`log_count_rarity`). ``a_max`` and ``a_min`` become hyperparameters of this loss (``lam`` may
        carry them). Only families whose per-sample loss goes through :meth:`_cross_entropy` support it
        (VS, logit adjustment, LDAM, weighted CE; focal: see :class:`~lossdial.losses.focal.FocalLoss`).
        Returns ``self``."""
        if not getattr(type(self), "smoothable", False):
            raise ValueError(f"{type(self).__name__} does not take class-conditional smoothing")
        self.hparam_names = tuple(type(self).hparam_names) + SMOOTHING_NAMES
        self.hparam_ranges = {**type(self).hparam_ranges, **SMOOTHING_RANGES}
        self.hparam_order = tuple(type(self).hparam_order) + SMOOTHING_ORDER
        self.a_max, self.a_min = float(a_max), float(a_min)
        self._check_range("a_max", self.a_max)
        self._check_range("a_min", self.a_min)
        self._check_order({"a_max": self.a_max, "a_min": self.a_min})
        self._register_derived("smoothing_rarity", log_count_rarity(self._counts64()))
        self.smoothing_on = True
        return self

    def _cross_entropy(self, z: Tensor, targets: Tensor, hp: Mapping[str, HparamValue]) -> Tensor:
        """Per-sample cross-entropy of the (adjusted) logits ``z``: one-hot targets, or the class-conditionally
        smoothed ones when :meth:`enable_smoothing` was called."""
        if not self.smoothing_on:
            return F.cross_entropy(z, targets, reduction="none")
        a_min, a_max = hp["a_min"], hp["a_max"]
        rarity = self._derived("smoothing_rarity", z.dtype)[targets]
        return smoothed_cross_entropy(z, targets, a_min + (a_max - a_min) * rarity)

    def sample_terms(self, logits: Tensor, targets: Tensor, lam: Mapping[str, HparamValue] | None = None
                     ) -> Tensor:
        """Each sample's share ``r_i`` of the batch loss (``[B]``): ``sum_i r_i`` equals :meth:`forward` under
        ``"mean"``-type reductions (``w_i l_i / den``, ``den`` from :meth:`mean_parts`) and ``"sum"``
        (``w_i l_i``). Used by SAM's asymmetric and group modes to re-weight or split the batch loss."""
        if self.reduction == "none":
            raise ValueError("sample_terms needs a reducing loss (reduction mean or sum)")
        logits, targets = self._check_inputs(logits, targets)
        hp = self.resolve_hparams(lam, logits.shape[0], logits.device, logits.dtype)
        losses, weights = self._per_sample(logits, targets, hp)
        wl = losses if weights is None else losses * weights
        if self.reduction == "sum":
            return wl
        _, den = self.mean_parts(losses, weights)
        return wl / den.clamp_min(torch.finfo(losses.dtype).tiny)

    # ---- forward --------------------------------------------------------------------------------------
    def _check_inputs(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"{type(self).__name__} expects logits of shape [batch, {self.num_classes}], got {shape}"
            )
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} classes but {type(self).__name__} was built from "
                f"{self.num_classes} class counts (logits shape {list(logits.shape)})"
            )
        if not logits.is_floating_point():
            raise ValueError(f"logits must be floating point, got dtype {logits.dtype}")
        if not isinstance(targets, Tensor) or targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            shape = list(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"targets must be class indices of shape [{logits.shape[0]}], got {shape}")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices (torch.long), got dtype {targets.dtype}")
        if targets.dtype != torch.long:
            targets = targets.long()
        if targets.device.type == "cpu" and targets.numel() > 0:
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(f"targets contain class {bad}, outside [0, {self.num_classes - 1}]")
        return logits.to(_compute_dtype(logits)), targets

    def _per_sample(
        self, logits: Tensor, targets: Tensor, hp: dict[str, HparamValue]
    ) -> tuple[Tensor, Tensor | None]:
        """Per-sample losses ``l`` ``[B]`` and weights ``w`` ``[B]`` (None = all ones)."""
        raise NotImplementedError

    def mean_parts(self, losses: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
        """Numerator and denominator of the mean reduction: ``(sum_i w_i l_i, sum_i w_i)``.

        The one definition of this family's mean: :meth:`forward` divides them (a zero denominator gives 0)
        and distributed training sums each over ranks first (``lossdial.train.distributed.loss_parts``).
        ``weights=None`` means all ones (the denominator is the batch size).
        """
        if weights is None:
            return losses.sum(), torch.tensor(float(losses.numel()), dtype=losses.dtype, device=losses.device)
        return (losses * weights).sum(), weights.sum()

    def _reduce(self, losses: Tensor, weights: Tensor | None) -> Tensor:
        if self.reduction == "none":
            return losses if weights is None else losses * weights
        if self.reduction == "sum":
            return (losses if weights is None else losses * weights).sum()
        num, den = self.mean_parts(losses, weights)
        return num / den.clamp_min(torch.finfo(losses.dtype).tiny)

    def forward(self, logits: Tensor, targets: Tensor, lam: Mapping[str, HparamValue] | None = None) -> Tensor:
        """Loss of ``logits`` ``[B, C]`` against ``targets`` ``[B]``; ``lam`` overrides hyperparameters."""
        logits, targets = self._check_inputs(logits, targets)
        hp = self.resolve_hparams(lam, logits.shape[0], logits.device, logits.dtype)
        losses, weights = self._per_sample(logits, targets, hp)
        return self._reduce(losses, weights)

    def extra_repr(self) -> str:
        parts = [f"class_counts={[int(c) for c in self.class_counts.tolist()]}"]
        parts += [f"{k}={v}" for k, v in self.fixed_hparams().items()]
        parts.append(f"reduction={self.reduction!r}")
        if self.is_binary:
            parts.append(f"positive_index={self.positive_index}")
        return ", ".join(parts)
