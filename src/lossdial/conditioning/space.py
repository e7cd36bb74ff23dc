"""``LambdaSpace``: the named, ordered set of conditioned hyperparameters and their training laws.

It does three jobs:

* **sample** lambda for a training step from one ``torch.Generator`` (one draw per batch, as in
  the LCT reference code, or one per sample);
* **encode** lambda into the ``[B, dim]`` float32 input of the FiLM network, normalised so that
  each component's training support maps to ``[-1, 1]`` (in log space for ``LogUniform``);
* **describe** itself as JSON (``to_dict``/``from_dict``; written to ``RUN/lambda_space.json``) and
  **check** evaluation values against the training support.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lossdial.checks import require

from .distributions import Distribution, Fixed, Grid, LogUniform, _fmt

__all__ = ["LambdaSpace"]

FORMAT_VERSION = 1
_DICT_KEYS = ("names", "distributions", "supports", "normalize", "per_sample", "format_version")


def _g(x: float) -> str:
    return f"{float(x):.6g}"


class LambdaSpace:
    """Named, ordered lambda components, each with its own training distribution.

    Args:
        distributions: ``{name: Distribution}`` (insertion order is kept and defines the column
            order of :meth:`encode`). Values may also be spec strings or numbers, which go through
            :func:`~lossdial.conditioning.parse_distribution`. Names must be identifiers.
        normalize: if True, :meth:`encode` maps each support ``[low, high]`` linearly to
            ``[-1, 1]``: ``z = 2 (v - low) / (high - low) - 1`` (``LogUniform``:
            ``z = 2 (log v - log low) / (log high - log low) - 1``); a degenerate support
            (``Fixed``, one-value ``Grid``) encodes to 0. Values outside the support are
            extrapolated linearly, not clipped. If False, raw values are passed through.
        per_sample: if False, :meth:`sample` draws one value per name for the whole batch (0-d
            tensors); if True, one value per sample (shape ``[batch_size]``).

    Attributes:
        names: tuple of names; ``dim == len(names)``; ``supports``: ``{name: (low, high)}``;
        ``distributions``: ``{name: Distribution}`` (a copy).

    Example:
        >>> import torch
        >>> from lossdial.conditioning import LambdaSpace, parse_lct
        >>> space = LambdaSpace(parse_lct("tau~L(0,3,0.33) gamma~U(0,0.3)"))
        >>> lam = space.sample(128, torch.Generator().manual_seed(0))
        >>> sorted(lam), lam["tau"].shape
        (['gamma', 'tau'], torch.Size([]))
        >>> space.encode({"tau": 0.0, "gamma": 0.15}, batch_size=2)
        tensor([[-1.,  0.],
                [-1.,  0.]])
    """

    def __init__(self, distributions: Mapping[str, Distribution | str | float], *,
                 normalize: bool = True, per_sample: bool = False) -> None:
        from .parse import parse_distribution

        if not isinstance(distributions, Mapping):
            raise TypeError(f"LambdaSpace: distributions must be a mapping name -> Distribution, "
                            f"got {type(distributions).__name__}")
        if not distributions:
            raise ValueError("LambdaSpace: distributions must hold at least one name "
                             "(a run without lambda conditioning has no LambdaSpace)")
        if not isinstance(normalize, bool):
            raise TypeError(f"LambdaSpace: normalize must be a bool, got {normalize!r}")
        if not isinstance(per_sample, bool):
            raise TypeError(f"LambdaSpace: per_sample must be a bool, got {per_sample!r}")
        dists: dict[str, Distribution] = {}
        for name, d in distributions.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"LambdaSpace: name {name!r} is not a valid identifier")
            if isinstance(d, (str, numbers.Real)) and not isinstance(d, bool):
                d = parse_distribution(d)
            if not isinstance(d, Distribution):
                raise TypeError(f"LambdaSpace: distributions[{name!r}] must be a Distribution, "
                                f"got {type(d).__name__}")
            dists[name] = d
        self._dists = dists
        self.names: tuple[str, ...] = tuple(dists)
        self.dim: int = len(self.names)
        self.normalize = normalize
        self.per_sample = per_sample
        # (mode, low, scale) with z = (f(v) - f(low)) * scale - 1, f = log for mode "log"
        self._enc: dict[str, tuple[str, float, float]] = {}
        for name, d in dists.items():
            lo, hi = d.support
            if hi <= lo:
                self._enc[name] = ("zero", lo, 0.0)
            elif isinstance(d, LogUniform):
                self._enc[name] = ("log", math.log(lo), 2.0 / (math.log(hi) - math.log(lo)))
            else:
                self._enc[name] = ("lin", lo, 2.0 / (hi - lo))

    # ------------------------------------------------------------------------------ attributes
    @property
    def distributions(self) -> dict[str, Distribution]:
        """``{name: Distribution}`` in ``names`` order (a copy)."""
        return dict(self._dists)

    @property
    def supports(self) -> dict[str, tuple[float, float]]:
        """``{name: (low, high)}`` in ``names`` order."""
        return {n: d.support for n, d in self._dists.items()}

    def spec(self) -> str:
        """Text form accepted by :func:`~lossdial.conditioning.parse_lct`,
        e.g. ``"tau~L(0,3,0.33) gamma~U(0,0.3)"``."""
        return " ".join(f"{n}~{d.spec()}" for n, d in self._dists.items())

    # -------------------------------------------------------------------------------- sampling
    def sample(self, batch_size: int, generator: torch.Generator, *,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Draw lambda for one training batch.

        Names are drawn in ``names`` order from ``generator`` alone (the global RNG is never
        used). ``per_sample=False``: ``{name: 0-d float32 tensor}``; ``per_sample=True``:
        ``{name: float32 tensor [batch_size]}``. Tensors are on CPU unless ``device`` is given.

        >>> import torch
        >>> from lossdial.conditioning import Uniform
        >>> space = LambdaSpace({"tau": Uniform(0, 1)}, per_sample=True)
        >>> space.sample(5, torch.Generator().manual_seed(0))["tau"].shape
        torch.Size([5])
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError("LambdaSpace.sample: generator must be a torch.Generator "
                            f"(lossdial never uses the global RNG), got {type(generator).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"LambdaSpace.sample: batch_size must be an int >= 1, got {batch_size!r}")
        out: dict[str, Tensor] = {}
        for name in self.names:
            d = self._dists[name]
            v = d.sample(batch_size, generator) if self.per_sample else d.sample(1, generator)[0]
            out[name] = v if device is None else v.to(device)
        return out

    # -------------------------------------------------------------------------------- encoding
    def _check_keys(self, lam: Mapping[str, Any], *, exact: bool) -> None:
        if not isinstance(lam, Mapping):
            raise TypeError(f"lambda must be a mapping name -> value, got {type(lam).__name__}")
        keys = set(lam)
        extra = sorted(map(str, keys - set(self.names)))
        missing = [n for n in self.names if n not in keys] if exact else []
        if extra or missing:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            raise KeyError(f"lambda keys must be {list(self.names)} ({'; '.join(parts)})")

    def encode(self, lam: Mapping[str, Tensor | float], batch_size: int | None = None) -> Tensor:
        """Encode lambda as the FiLM input: float32 tensor ``[B, dim]``, columns in ``names`` order.

        Values may be floats, 0-d tensors (broadcast to ``B`` rows) or ``[B]`` tensors.
        ``B = batch_size`` if given, else the length of the ``[B]`` tensors, else 1. The keys must
        equal ``names`` (``KeyError`` otherwise). The result is on the device of the first tensor
        value (in ``names`` order), CPU if all values are floats. See the class docstring for the
        normalisation.

        >>> from lossdial.conditioning import LogUniform, Uniform
        >>> space = LambdaSpace({"tau": Uniform(0, 4), "lr": LogUniform(0.01, 1)})
        >>> space.encode({"tau": torch.tensor([0.0, 2.0, 4.0]), "lr": 0.1})
        tensor([[-1.,  0.],
                [ 0.,  0.],
                [ 1.,  0.]])
        """
        self._check_keys(lam, exact=True)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 0):
            raise ValueError(f"encode: batch_size must be an int >= 0, got {batch_size!r}")
        device = None
        B = batch_size
        B_from = "batch_size"
        for name in self.names:
            v = lam[name]
            if isinstance(v, Tensor):
                if device is None:
                    device = v.device
                if v.ndim == 1:
                    if B is None:
                        B, B_from = v.shape[0], f"lambda[{name!r}]"
                    elif v.shape[0] != B:
                        raise ValueError(f"encode: lambda[{name!r}] has {v.shape[0]} values but "
                                         f"{B_from} gives batch size {B}")
                elif v.ndim != 0:
                    raise ValueError(f"encode: lambda[{name!r}] must be a number, a 0-d tensor or "
                                     f"a 1-d [B] tensor, got shape {tuple(v.shape)}")
            elif isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"encode: lambda[{name!r}] must be a number or a tensor, "
                                f"got {type(v).__name__}")
        device = device if device is not None else torch.device("cpu")
        B = 1 if B is None else B
        work = torch.float32 if device.type == "mps" else torch.float64
        cols = []
        for name in self.names:
            v = lam[name]
            if isinstance(v, Tensor):
                t = v.to(device=device, dtype=work)
            else:
                t = torch.tensor(float(v), dtype=work, device=device)
            if self.normalize:
                mode, lo, scale = self._enc[name]
                if mode == "zero":
                    t = torch.zeros_like(t)
                else:
                    if mode == "log":
                        require(t > 0, f"encode: lambda[{name!r}] must be > 0 for its LogUniform law "
                                       f"(normalised in log space)")
                        t = torch.log(t)
                    t = (t - lo) * scale - 1.0
            cols.append(t.expand(B) if t.ndim == 0 else t)
        return torch.stack(cols, dim=1).to(torch.float32)

    # ------------------------------------------------------------------------------ validation
    def check_support(self, lam: Mapping[str, Tensor | float]) -> list[str]:
        """Messages for lambda values outside the training support, each also issued as a
        ``UserWarning``. ``lam`` may hold any subset of ``names`` (unknown names: ``KeyError``);
        values are floats or tensors of any shape. The tolerance is 1e-9 relative to the support
        (the dtype's epsilon for float32/16 tensors); ``Fixed``/``Grid`` values must match one of
        the training values (within 1e-6 relative).

        >>> import warnings
        >>> from lossdial.conditioning import LinearDist
        >>> space = LambdaSpace({"tau": LinearDist(0, 3, 0.33)})
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     space.check_support({"tau": 4.0})
        ['tau=4 is outside the training support [0, 3]; the model was never trained there']
        """
        self._check_keys(lam, exact=False)
        messages: list[str] = []
        for name in self.names:
            if name not in lam:
                continue
            d = self._dists[name]
            v = lam[name]
            t = v.detach().cpu() if isinstance(v, Tensor) else torch.as_tensor(v, dtype=torch.float64)
            inside = d.contains(t)
            if bool(inside.all()):
                continue
            bad = t.to(torch.float64)[~inside].reshape(-1)
            lo, hi = d.support
            if isinstance(d, Fixed):
                where = f"differs from the fixed training value {_g(d.value)}"
            elif isinstance(d, Grid):
                where = "is not one of the training values {" + ", ".join(_g(x) for x in d.values) + "}"
            else:
                where = f"is outside the training support [{_g(lo)}, {_g(hi)}]"
            if t.numel() == 1:
                msg = f"{name}={_g(bad[0])} {where}; the model was never trained there"
            else:
                where_pl = where.replace("differs", "differ").replace("is ", "are ", 1)
                msg = (f"{name}: {bad.numel()} of {t.numel()} values (from {_g(bad.min())} to "
                       f"{_g(bad.max())}) {where_pl}; the model was never trained there")
            messages.append(msg)
            warnings.warn(msg, UserWarning, stacklevel=2)
        return messages

    # --------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (``RUN/lambda_space.json``)::

            {"names": [...], "distributions": {name: spec}, "supports": {name: [low, high]},
             "normalize": bool, "per_sample": bool, "format_version": 1}
        """
        return {
            "names": list(self.names),
            "distributions": {n: d.spec() for n, d in self._dists.items()},
            "supports": {n: [float(lo), float(hi)] for n, (lo, hi) in self.supports.items()},
            "normalize": self.normalize,
            "per_sample": self.per_sample,
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LambdaSpace:
        """Inverse of :meth:`to_dict`; a malformed dict raises ``ValueError`` saying what is wrong.

        >>> from lossdial.conditioning import parse_lct
        >>> s = LambdaSpace(parse_lct("tau~L(0,3,0.33)"))
        >>> LambdaSpace.from_dict(s.to_dict()) == s
        True
        """
        from .parse import parse_distribution

        where = "lambda space description"
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(d).__name__}")
        unknown = sorted(map(str, set(d) - set(_DICT_KEYS)))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; expected {list(_DICT_KEYS)}")
        for key in ("format_version", "names", "distributions", "normalize", "per_sample"):
            if key not in d:
                raise ValueError(f"{where}: missing key {key!r}")
        version = d["format_version"]
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise ValueError(f"{where}: unsupported format_version {version!r} "
                             f"(this lossdial reads version {FORMAT_VERSION})")
        names = d["names"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: 'names' must be a list of strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: 'names' has duplicates: {list(names)}")
        specs = d["distributions"]
        if not isinstance(specs, Mapping):
            raise ValueError(f"{where}: 'distributions' must be a dict name -> spec string, "
                             f"got {specs!r}")
        if set(specs) != set(names):
            raise ValueError(f"{where}: 'distributions' keys {sorted(map(str, specs))} do not match "
                             f"'names' {list(names)}")
        dists: dict[str, Distribution] = {}
        for n in names:
            spec = specs[n]
            if not isinstance(spec, str):
                raise ValueError(f"{where}: distributions[{n!r}] must be a spec string such as "
                                 f"'L(0,3,0.33)', got {spec!r}")
            try:
                dists[n] = parse_distribution(spec)
            except ValueError as e:
                raise ValueError(f"{where}: distributions[{n!r}]: {e}") from None
        for key in ("normalize", "per_sample"):
            if not isinstance(d[key], bool):
                raise ValueError(f"{where}: {key!r} must be true or false, got {d[key]!r}")
        if "supports" in d:
            sups = d["supports"]
            if not isinstance(sups, Mapping) or set(sups) != set(names):
                raise ValueError(f"{where}: 'supports' must be a dict with keys {list(names)}, "
                                 f"got {sups!r}")
            for n in names:
                s = sups[n]
                lo, hi = dists[n].support
                ok = (isinstance(s, (list, tuple)) and len(s) == 2
                      and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in s)
                      and math.isclose(s[0], lo, rel_tol=1e-9, abs_tol=1e-12)
                      and math.isclose(s[1], hi, rel_tol=1e-9, abs_tol=1e-12))
                if not ok:
                    raise ValueError(f"{where}: supports[{n!r}] = {s!r} does not match the support "
                                     f"[{_fmt(lo)}, {_fmt(hi)}] of {dists[n].spec()}")
        try:
            return cls(dists, normalize=d["normalize"], per_sample=d["per_sample"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    # ---------------------------------------------------------------------------------- dunder
    def _key(self) -> tuple:
        return (self.names, tuple(self._dists[n] for n in self.names), self.normalize,
                self.per_sample)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LambdaSpace):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        body = ", ".join(f"{n}~{d.spec()}" for n, d in self._dists.items())
        return f"LambdaSpace({body}, normalize={self.normalize}, per_sample={self.per_sample})"
