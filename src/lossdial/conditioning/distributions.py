"""Distributions over one loss hyperparameter (one component of lambda).

Loss-conditional training (LCT) draws each component of lambda independently from its own
distribution ``P_Lambda``. This module offers five of them, all with the same small API:

=================  ==============================  =========================================
class              spec (``parse_distribution``)   law
=================  ==============================  =========================================
``Fixed(v)``       ``"1.5"`` / ``"Fixed(1.5)"``    point mass at ``v``
``Uniform(a,b)``   ``"U(0,1)"``                    density ``1/(b-a)`` on ``[a, b]``
``LogUniform``     ``"LogU(0.01,1)"``              ``log x`` uniform on ``[log a, log b]``
``LinearDist``     ``"L(0,3,0.33)"``               density linear on ``[a, b]``, height
                                                   ``hb`` at ``b``
``Grid(values)``   ``"{0,1,2}"`` / ``"Grid(0,1,2)"``  finite set, uniform or given ``probs``
=================  ==============================  =========================================

Conventions shared by every distribution:

* ``support -> (low, high)`` as Python floats; parameters are stored as Python floats.
* ``sample(n, generator)`` returns a float32 CPU tensor of shape ``[n]`` drawn *only* from
  ``generator`` (the global torch RNG is used only when ``generator is None``). Continuous laws are
  sampled in float64 and rounded to float32 *inside* the support (the float32 value, read back as
  float64, is always within ``[low, high]``).
* ``pdf(x)`` / ``cdf(x)`` accept floats, sequences, numpy arrays or tensors and return float64
  tensors of the same shape (on the input tensor's device). For ``Fixed``/``Grid`` ``pdf`` is the
  probability *mass* at ``x``.
* ``contains(x)`` returns a bool tensor. Continuous laws test ``low - tol <= x <= high + tol`` with
  ``tol = 1e-9 * max(|low|, |high|)`` for float64/Python inputs and ``tol = eps(dtype) * max(...)``
  for lower-precision tensors (so ``float32(0.3)`` is inside ``[0, 0.3]``). Discrete laws match a
  value ``v`` within ``1e-6 * |v| + 1e-12``.
* ``spec()`` is the canonical text form; ``parse_distribution(d.spec()) == d``.
* Invalid parameters raise ``ValueError`` naming the parameter and its valid range.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from lossdial.checks import finite_number

__all__ = ["Distribution", "Fixed", "Uniform", "LogUniform", "LinearDist", "Grid"]

_CONT_REL_TOL = 1e-9  # relative tolerance for support checks on float64 / Python values
_DISC_REL_TOL = 1e-6  # relative tolerance when matching a value of a discrete law
_DISC_ABS_TOL = 1e-12


# --------------------------------------------------------------------------------------- helpers
def _fmt(x: float) -> str:
    """Shortest text that round-trips through ``float``; integers without a trailing ``.0``."""
    x = float(x)
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _finite(cls: str, name: str, value: Any) -> float:
    """Convert a parameter to float, rejecting bools, non-numbers, NaN and infinities."""
    return finite_number(value, f"{cls}: {name}")


def _as_f64(x: Any) -> tuple[Tensor, torch.dtype]:
    """Return ``(x as a float64 tensor, the input's floating dtype or float64)``."""
    if isinstance(x, Tensor):
        dtype = x.dtype if x.dtype.is_floating_point else torch.float64
        return x.detach().to(torch.float64), dtype
    return torch.as_tensor(x, dtype=torch.float64), torch.float64


def _cont_tol(lo: float, hi: float, dtype: torch.dtype) -> float:
    scale = max(abs(lo), abs(hi))
    if scale == 0.0:
        scale = 1.0
    rel = _CONT_REL_TOL if dtype == torch.float64 else float(torch.finfo(dtype).eps)
    return rel * scale


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sample: n must be a non-negative int, got {n!r}")
    return n


def _rand64(n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` uniform draws in [0, 1), float64, CPU, taken only from ``generator`` (if given)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, dtype=torch.float64, device=device).cpu()


def _to_f32_inside(x64: Tensor, lo: float, hi: float) -> Tensor:
    """Clamp to [lo, hi] in float64, cast to float32 and nudge any value that rounding pushed
    outside the support back inside by one float32 ulp."""
    x64 = x64.clamp(lo, hi)
    x32 = x64.to(torch.float32)
    back = x32.to(torch.float64)
    if lo < hi:
        x32 = torch.where(back > hi, torch.nextafter(x32, torch.full_like(x32, -math.inf)), x32)
        x32 = torch.where(back < lo, torch.nextafter(x32, torch.full_like(x32, math.inf)), x32)
    return x32


# ------------------------------------------------------------------------------------ base class
class Distribution(abc.ABC):
    """Base class of the lambda-component distributions.

    Subclasses define ``support``, ``sample``, ``pdf``, ``cdf``, ``mean``, ``spec`` and
    ``_params`` (the tuple used by ``__eq__``/``__hash__``).

    Example:
        >>> import torch
        >>> d = LinearDist(0, 3, 0.33)
        >>> d.support
        (0.0, 3.0)
        >>> d.sample(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4])
        >>> d.spec()
        'L(0,3,0.33)'
    """

    #: True for laws with a probability mass function (Fixed, Grid).
    discrete: bool = False

    @property
    @abc.abstractmethod
    def support(self) -> tuple[float, float]:
        """``(low, high)``: the smallest interval holding all the probability."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` independent draws: float32 CPU tensor of shape ``[n]``."""

    @abc.abstractmethod
    def pdf(self, x: Any) -> Tensor:
        """Density at ``x`` (probability mass for discrete laws); float64 tensor."""

    @abc.abstractmethod
    def cdf(self, x: Any) -> Tensor:
        """``P(X <= x)``; float64 tensor."""

    @property
    @abc.abstractmethod
    def mean(self) -> float:
        """``E[X]``."""

    @abc.abstractmethod
    def spec(self) -> str:
        """Canonical text form; ``parse_distribution(self.spec()) == self``."""

    @abc.abstractmethod
    def _params(self) -> tuple:
        """Parameters that define the law (for equality and hashing)."""

    def contains(self, x: Any) -> Tensor:
        """Bool tensor: is ``x`` in the support (with a tiny tolerance, see module docstring)?

        >>> Uniform(0, 1).contains(1.0 + 1e-12).item(), Uniform(0, 1).contains(1.01).item()
        (True, False)
        """
        t, dtype = _as_f64(x)
        lo, hi = self.support
        tol = _cont_tol(lo, hi, dtype)
        return (t >= lo - tol) & (t <= hi + tol)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return self._params() == other._params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._params()))


class _Continuous(Distribution):
    """Shared pieces of the continuous laws on a closed interval ``[a, b]``."""

    a: float
    b: float

    @property
    def support(self) -> tuple[float, float]:
        return (self.a, self.b)

    def _params(self) -> tuple:
        return (self.a, self.b)


# ----------------------------------------------------------------------------------------- Fixed
class Fixed(Distribution):
    """Point mass at ``value`` (a hyperparameter held constant during training).

    ``pdf(x) = 1`` if ``x == value`` else ``0`` (probability mass); ``cdf(x) = 1[x >= value]``;
    support ``(value, value)``.

    >>> Fixed(1.5).sample(3)
    tensor([1.5000, 1.5000, 1.5000])
    >>> Fixed(1.5).spec()
    '1.5'
    """

    discrete = True

    def __init__(self, value: float) -> None:
        self.value = _finite("Fixed", "value", value)

    @property
    def support(self) -> tuple[float, float]:
        return (self.value, self.value)

    @property
    def mean(self) -> float:
        return self.value

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.full((_check_n(n),), self.value, dtype=torch.float32)

    def _match(self, t: Tensor) -> Tensor:
        return (t - self.value).abs() <= _DISC_REL_TOL * abs(self.value) + _DISC_ABS_TOL

    def pdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        return self._match(t).to(torch.float64)

    def cdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        return ((t >= self.value) | self._match(t)).to(torch.float64)

    def contains(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        return self._match(t)

    def spec(self) -> str:
        return _fmt(self.value)

    def _params(self) -> tuple:
        return (self.value,)

    def __repr__(self) -> str:
        return f"Fixed({_fmt(self.value)})"


# --------------------------------------------------------------------------------------- Uniform
class Uniform(_Continuous):
    """Uniform law on ``[a, b]``, ``a < b``.

    ``pdf(x) = 1/(b-a)`` on ``[a, b]``; ``cdf(x) = (x-a)/(b-a)`` clipped to ``[0, 1]``;
    ``mean = (a+b)/2``.

    >>> Uniform(0, 0.3).spec()
    'U(0,0.3)'
    >>> float(Uniform(0, 2).cdf(0.5))
    0.25
    """

    def __init__(self, a: float, b: float) -> None:
        self.a = _finite("Uniform", "a", a)
        self.b = _finite("Uniform", "b", b)
        if not self.a < self.b:
            raise ValueError(f"{self!r}: a must be < b (use Fixed(value) for a constant)")

    @property
    def mean(self) -> float:
        return 0.5 * (self.a + self.b)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        p = _rand64(_check_n(n), generator)
        return _to_f32_inside(self.a + (self.b - self.a) * p, self.a, self.b)

    def pdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        inside = (t >= self.a) & (t <= self.b)
        return torch.where(inside, torch.full_like(t, 1.0 / (self.b - self.a)), torch.zeros_like(t))

    def cdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        return ((t - self.a) / (self.b - self.a)).clamp(0.0, 1.0)

    def spec(self) -> str:
        return f"U({_fmt(self.a)},{_fmt(self.b)})"

    def __repr__(self) -> str:
        return f"Uniform(a={_fmt(self.a)}, b={_fmt(self.b)})"


# ------------------------------------------------------------------------------------ LogUniform
class LogUniform(_Continuous):
    """Log-uniform (reciprocal) law on ``[a, b]``, ``0 < a < b``: ``log X ~ U(log a, log b)``.

    ``pdf(x) = 1 / (x log(b/a))`` on ``[a, b]``; ``cdf(x) = log(x/a) / log(b/a)``;
    ``mean = (b - a) / log(b/a)``.

    >>> LogUniform(0.01, 1).spec()
    'LogU(0.01,1)'
    >>> round(float(LogUniform(0.01, 1).cdf(0.1)), 6)
    0.5
    """

    def __init__(self, a: float, b: float) -> None:
        self.a = _finite("LogUniform", "a", a)
        self.b = _finite("LogUniform", "b", b)
        if not self.a > 0:
            raise ValueError(f"{self!r}: a must be > 0 (the law is uniform in log x)")
        if not self.a < self.b:
            raise ValueError(f"{self!r}: a must be < b (use Fixed(value) for a constant)")
        self._la, self._lb = math.log(self.a), math.log(self.b)

    @property
    def mean(self) -> float:
        return (self.b - self.a) / (self._lb - self._la)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        p = _rand64(_check_n(n), generator)
        return _to_f32_inside(torch.exp(self._la + (self._lb - self._la) * p), self.a, self.b)

    def pdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        inside = (t >= self.a) & (t <= self.b)
        safe = torch.where(inside, t, torch.ones_like(t))
        return torch.where(inside, 1.0 / (safe * (self._lb - self._la)), torch.zeros_like(t))

    def cdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        safe = t.clamp(self.a, self.b)
        return ((torch.log(safe) - self._la) / (self._lb - self._la)).clamp(0.0, 1.0)

    def spec(self) -> str:
        return f"LogU({_fmt(self.a)},{_fmt(self.b)})"

    def __repr__(self) -> str:
        return f"LogUniform(a={_fmt(self.a)}, b={_fmt(self.b)})"


# ------------------------------------------------------------------------------------ LinearDist
class LinearDist(_Continuous):
    """Linear-density law ``L(a, b, hb)`` of LCT (Lieberman et al.).

    The density is linear on ``[a, b]`` with height ``hb`` at ``b``; normalisation fixes the height
    at ``a`` to ``h_a = 2/(b-a) - hb``. With slope ``k = (hb - h_a)/(b - a)``::

        pdf(x)  = h_a + k (x - a)                         on [a, b]
        cdf(x)  = h_a (x - a) + k (x - a)^2 / 2
        mean    = a + h_a (b-a)^2 / 2 + k (b-a)^3 / 3

    Valid only for ``0 <= hb <= 2/(b-a)`` (so that ``h_a >= 0``); ``hb = 1/(b-a)`` is uniform,
    ``hb = 0`` puts all the weight toward ``a``, ``hb = 2/(b-a)`` toward ``b``. The LCT reference
    code silently samples a distorted law for an invalid ``hb``; this class rejects it.

    Sampling uses the numerically stable inverse CDF (no special case for ``k = 0``)::

        x = a + 2 p / (h_a + sqrt(h_a^2 + 2 k p)),   p ~ U(0, 1)

    computed in float64, clamped to ``[a, b]``, then rounded to float32.

    >>> d = LinearDist(0, 3, 0.33)
    >>> round(d.ha, 6), round(d.k, 6)
    (0.336667, -0.002222)
    >>> d.spec()
    'L(0,3,0.33)'
    """

    def __init__(self, a: float, b: float, hb: float) -> None:
        self.a = _finite("LinearDist", "a", a)
        self.b = _finite("LinearDist", "b", b)
        self.hb = _finite("LinearDist", "hb", hb)
        if not self.a < self.b:
            raise ValueError(f"{self!r}: a must be < b (use Fixed(value) for a constant)")
        hmax = 2.0 / (self.b - self.a)
        tol = 1e-9 * hmax
        if not (-tol <= self.hb <= hmax + tol):
            raise ValueError(
                f"{self!r}: hb must be in [0, {hmax:.4g}] so that the density at a, "
                f"h_a = 2/(b-a) - hb, is >= 0"
            )
        self.ha = max(hmax - self.hb, 0.0)
        self.k = (self.hb - self.ha) / (self.b - self.a)

    @property
    def mean(self) -> float:
        w = self.b - self.a
        return self.a + self.ha * w * w / 2.0 + self.k * w ** 3 / 3.0

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        p = _rand64(_check_n(n), generator)
        disc = (self.ha * self.ha + 2.0 * self.k * p).clamp_min(0.0)
        den = self.ha + torch.sqrt(disc)
        # den == 0 only when h_a == 0 and p == 0, where the limit of 2p/den is 0.
        safe = torch.where(den > 0, den, torch.ones_like(den))
        step = torch.where(den > 0, 2.0 * p / safe, torch.zeros_like(p))
        return _to_f32_inside(self.a + step, self.a, self.b)

    def pdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        inside = (t >= self.a) & (t <= self.b)
        return torch.where(inside, self.ha + self.k * (t - self.a), torch.zeros_like(t))

    def cdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        u = t.clamp(self.a, self.b) - self.a
        f = (self.ha * u + 0.5 * self.k * u * u).clamp(0.0, 1.0)
        return torch.where(t >= self.b, torch.ones_like(f), f)  # exactly 1 at and above b

    def spec(self) -> str:
        return f"L({_fmt(self.a)},{_fmt(self.b)},{_fmt(self.hb)})"

    def _params(self) -> tuple:
        return (self.a, self.b, self.hb)

    def __repr__(self) -> str:
        return f"LinearDist(a={_fmt(self.a)}, b={_fmt(self.b)}, hb={_fmt(self.hb)})"


# ------------------------------------------------------------------------------------------ Grid
class Grid(Distribution):
    """Discrete law on a finite set of values.

    The distinct values are kept sorted. Without ``probs`` every distinct value has mass
    ``1/len(values)``; with ``probs`` (one per given value, non-negative, summing to 1 within 1e-6;
    masses of repeated values add up) the masses are renormalised to sum exactly to 1.

    ``pdf(x)`` = mass at ``x`` (0 off the grid); ``cdf(x) = sum of masses of values <= x``;
    support ``(min(values), max(values))``. Spec ``"{0,1,2}"``, or ``"{0:0.2,1:0.8}"`` with
    non-uniform masses.

    >>> Grid([2, 0, 1]).spec()
    '{0,1,2}'
    >>> Grid([0, 1], probs=[0.2, 0.8]).spec()
    '{0:0.2,1:0.8}'
    >>> float(Grid([0, 1, 2]).pdf(1.0))
    0.3333333333333333
    """

    discrete = True

    def __init__(self, values: Iterable[float], probs: Sequence[float] | None = None) -> None:
        if isinstance(values, Tensor):
            values = values.detach().cpu().reshape(-1).tolist()
        vals = [_finite("Grid", f"values[{i}]", v) for i, v in enumerate(values)]
        if not vals:
            raise ValueError("Grid: values must be a non-empty collection of finite numbers")
        if probs is None:
            distinct = sorted(set(vals))
            masses = [1.0 / len(distinct)] * len(distinct)
        else:
            if isinstance(probs, Tensor):
                probs = probs.detach().cpu().reshape(-1).tolist()
            ps = [_finite("Grid", f"probs[{i}]", p) for i, p in enumerate(probs)]
            if len(ps) != len(vals):
                raise ValueError(f"Grid: probs must have one entry per value "
                                 f"({len(vals)}), got {len(ps)}")
            if any(p < 0 for p in ps):
                raise ValueError(f"Grid: probs must be >= 0, got {ps}")
            total = math.fsum(ps)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"Grid: probs must sum to 1 (within 1e-6), got sum {total:.8g}")
            acc: dict[float, float] = {}
            for v, p in zip(vals, ps):
                acc[v] = acc.get(v, 0.0) + p
            distinct = sorted(acc)
            masses = [acc[v] / total for v in distinct]
        self.values: tuple[float, ...] = tuple(distinct)
        self.probs: tuple[float, ...] = tuple(masses)
        self._v = torch.tensor(self.values, dtype=torch.float64)
        self._p = torch.tensor(self.probs, dtype=torch.float64)
        self._cum = torch.cumsum(self._p, 0)

    @property
    def uniform(self) -> bool:
        """True when every value has the same mass."""
        return all(abs(p - self.probs[0]) <= 1e-12 for p in self.probs)

    @property
    def support(self) -> tuple[float, float]:
        return (self.values[0], self.values[-1])

    @property
    def mean(self) -> float:
        return math.fsum(v * p for v, p in zip(self.values, self.probs))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = _rand64(_check_n(n), generator)
        idx = torch.searchsorted(self._cum, u, right=True).clamp_max(len(self.values) - 1)
        return self._v[idx].to(torch.float32)

    def _match_index(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Index of the nearest grid value and whether ``t`` matches it."""
        v = self._v.to(t.device)
        hi = torch.searchsorted(v, t.contiguous()).clamp(0, len(self.values) - 1)
        lo = (hi - 1).clamp_min(0)
        pick = torch.where((t - v[lo]).abs() <= (t - v[hi]).abs(), lo, hi)
        near = v[pick]
        ok = (t - near).abs() <= _DISC_REL_TOL * near.abs() + _DISC_ABS_TOL
        return pick, ok

    def pdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        pick, ok = self._match_index(t)
        return torch.where(ok, self._p.to(t.device)[pick], torch.zeros_like(t))

    def cdf(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        pick, ok = self._match_index(t)
        # tolerant: a value that matches a grid point counts that point as <= x
        below = torch.searchsorted(self._v.to(t.device), t.contiguous(), right=True)
        count = torch.where(ok, torch.maximum(below, pick + 1), below)
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), self._cum]).to(t.device)
        return cum[count].clamp(0.0, 1.0)

    def contains(self, x: Any) -> Tensor:
        t, _ = _as_f64(x)
        return self._match_index(t)[1]

    def spec(self) -> str:
        if self.uniform:
            return "{" + ",".join(_fmt(v) for v in self.values) + "}"
        return "{" + ",".join(f"{_fmt(v)}:{_fmt(p)}" for v, p in zip(self.values, self.probs)) + "}"

    def _params(self) -> tuple:
        # masses rounded so that a spec round trip (which renormalises) compares equal
        return (self.values, tuple(round(p, 12) for p in self.probs))

    def __repr__(self) -> str:
        vals = ", ".join(_fmt(v) for v in self.values)
        if self.uniform:
            return f"Grid([{vals}])"
        return f"Grid([{vals}], probs=[{', '.join(_fmt(p) for p in self.probs)}])"
