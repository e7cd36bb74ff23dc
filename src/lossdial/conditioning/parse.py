"""The one parser for lambda written by a user (CLI flags, YAML config values, Python strings).

Three entry points:

* ``parse_distribution("L(0,3,0.33)")`` -> one :class:`Distribution`.
* ``parse_lct("tau~L(0,3,0.33) gamma~U(0,0.3)")`` -> ``{name: Distribution}`` (training law).
* ``parse_lambda_grid("tau=0:4:33 gamma=0.1,0.2")`` -> ``[{name: float}, ...]`` (evaluation points,
  cartesian product, first key slowest).

and a default evaluation grid, ``grid_points_from_space(space, k)``.

Every malformed input raises ``ValueError`` quoting the offending text and showing an accepted form.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .distributions import Distribution, Fixed, Grid, LinearDist, LogUniform, Uniform

if TYPE_CHECKING:  # pragma: no cover
    from .space import LambdaSpace

__all__ = ["parse_distribution", "parse_lct", "parse_lambda_grid", "grid_points_from_space"]

DISTRIBUTION_FORMS = (
    "L(a,b,hb) or Linear(a,b,hb) [linear density, height hb at b, 0 <= hb <= 2/(b-a)]; "
    "U(a,b) or Uniform(a,b); LogU(a,b) or LogUniform(a,b) [0 < a < b]; "
    "{v1,v2,...} or Grid(v1,v2,...) [finite set; {v1:p1,v2:p2} for unequal masses]; "
    "a number such as 1.5 or Fixed(1.5)"
)
LCT_EXAMPLE = '"tau~L(0,3,0.33) gamma~U(0,0.3)" (entries separated by spaces or ";")'
GRID_EXAMPLE = ('"tau=0:4:33" (33 evenly spaced points from 0 to 4), "tau=0,1,2" or "tau=1"; '
                'several keys separated by spaces or ";", e.g. "tau=0:4:33 gamma=0.1,0.2"')

_CALL_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)$", re.DOTALL)
_INT_RE = re.compile(r"^\+?[0-9]+$")
_NAMES: dict[str, tuple[type[Distribution], int]] = {
    "l": (LinearDist, 3), "linear": (LinearDist, 3), "lineardist": (LinearDist, 3),
    "u": (Uniform, 2), "uniform": (Uniform, 2),
    "logu": (LogUniform, 2), "loguniform": (LogUniform, 2),
    "fixed": (Fixed, 1),
    "grid": (Grid, -1),
}


# ------------------------------------------------------------------------------------ tokenising
def _split_top(text: str, seps: str, *, what: str) -> list[str]:
    """Split ``text`` at characters in ``seps`` that are outside () and {} brackets."""
    out, buf, depth = [], [], 0
    for ch in text:
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"could not parse {what} {text!r}: unbalanced brackets")
        if depth == 0 and ch in seps:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if depth != 0:
        raise ValueError(f"could not parse {what} {text!r}: unbalanced brackets")
    out.append("".join(buf))
    return out


def _entries(text: str, hard: str, joiners_end: str, joiners_start: str, *, what: str) -> list[str]:
    """Split ``text`` into entries at top-level ``hard`` separators and whitespace, re-joining
    whitespace-separated words around ``joiners`` (so ``"tau ~ L(0, 3, 0.33)"`` is one entry)."""
    entries: list[str] = []
    for chunk in _split_top(text, hard, what=what):
        words = [w for w in _split_top(chunk, " \t\r\n", what=what) if w]
        merged: list[str] = []
        for w in words:
            if merged and (merged[-1][-1] in joiners_end or w[0] in joiners_start):
                merged[-1] += w
            else:
                merged.append(w)
        entries.extend(merged)
    return entries


def _number(token: str, *, what: str, text: str, hint: str) -> float:
    tok = token.strip()
    try:
        value = float(tok)
    except ValueError:
        raise ValueError(f"could not parse {what} {text!r}: {tok!r} is not a number. {hint}") from None
    if not math.isfinite(value):
        raise ValueError(f"could not parse {what} {text!r}: {tok!r} is not a finite number. {hint}")
    return value


def _check_name(name: Any, *, what: str, text: Any, hint: str, dotted: bool = False) -> str:
    parts = name.split(".") if dotted and isinstance(name, str) else [name]
    if not isinstance(name, str) or not all(isinstance(p, str) and p.isidentifier() for p in parts):
        kind = "a valid name (identifiers joined by dots; " if dotted else "a valid identifier ("
        raise ValueError(f"could not parse {what} {text!r}: name {name!r} is not {kind}"
                         f"letters, digits and _, not starting with a digit). Example: {hint}")
    return name


# ---------------------------------------------------------------------------- parse_distribution
def parse_distribution(text: str | float | Distribution) -> Distribution:
    """Parse one distribution.

    Accepted forms (names case-insensitive, whitespace ignored):

    * ``"L(a,b,hb)"`` / ``"Linear(a,b,hb)"`` -> :class:`LinearDist`
    * ``"U(a,b)"`` / ``"Uniform(a,b)"`` -> :class:`Uniform`
    * ``"LogU(a,b)"`` / ``"LogUniform(a,b)"`` -> :class:`LogUniform`
    * ``"{0,1,2}"`` / ``"Grid(0,1,2)"`` -> :class:`Grid`; ``"{0:0.2,1:0.8}"`` gives masses
    * ``"1.5"`` / ``"Fixed(1.5)"`` -> :class:`Fixed`

    A :class:`Distribution` is returned unchanged and a plain number gives :class:`Fixed`
    (convenient for YAML values). Malformed text raises ``ValueError`` quoting it and listing the
    accepted forms; invalid parameters raise the distribution's own ``ValueError``, prefixed by
    the text.

    >>> parse_distribution("L(0, 3, 0.33)")
    LinearDist(a=0, b=3, hb=0.33)
    >>> parse_distribution("logu(1e-3,1)")
    LogUniform(a=0.001, b=1)
    >>> parse_distribution("{0,1,2}"), parse_distribution("1.5")
    (Grid([0, 1, 2]), Fixed(1.5))
    """
    if isinstance(text, Distribution):
        return text
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        return Fixed(float(text))
    if not isinstance(text, str):
        raise ValueError(f"could not parse distribution {text!r}: expected a string. "
                         f"Accepted forms: {DISTRIBUTION_FORMS}")
    s = text.strip()
    hint = f"Accepted forms: {DISTRIBUTION_FORMS}"

    def bad(reason: str) -> ValueError:
        return ValueError(f"could not parse distribution {text!r}: {reason}. {hint}")

    if not s:
        raise bad("empty text")

    def build(fn, *args, **kw) -> Distribution:
        try:
            return fn(*args, **kw)
        except ValueError as e:
            raise ValueError(f"invalid distribution {text!r}: {e}") from None

    def grid_from(inner: str) -> Distribution:
        items = [t.strip() for t in inner.split(",")] if inner.strip() else []
        if any(not t for t in items):
            raise bad("empty entry in the list of values")
        if not items:
            raise bad("a grid needs at least one value")
        if any(":" in t for t in items):
            vals, probs = [], []
            for t in items:
                parts = t.split(":")
                if len(parts) != 2:
                    raise bad(f"grid entry {t!r} must be VALUE or VALUE:MASS")
                vals.append(_number(parts[0], what="distribution", text=text, hint=hint))
                probs.append(_number(parts[1], what="distribution", text=text, hint=hint))
            return build(Grid, vals, probs=probs)
        return build(Grid, [_number(t, what="distribution", text=text, hint=hint) for t in items])

    if s.startswith("{"):
        if not s.endswith("}"):
            raise bad("a grid must be written {v1,v2,...}")
        return grid_from(s[1:-1])

    m = _CALL_RE.match(s)
    if m:
        name, inner = m.group(1).lower(), m.group(2)
        if name not in _NAMES:
            raise bad(f"unknown distribution name {m.group(1)!r}")
        cls, nargs = _NAMES[name]
        if cls is Grid:
            return grid_from(inner)
        args = [t.strip() for t in inner.split(",")] if inner.strip() else []
        if len(args) != nargs:
            raise bad(f"{m.group(1)}(...) takes {nargs} argument(s), got {len(args)}")
        return build(cls, *[_number(t, what="distribution", text=text, hint=hint) for t in args])

    try:
        value = float(s)
    except ValueError:
        raise bad("not a recognised form") from None
    return build(Fixed, value)


# ------------------------------------------------------------------------------------- parse_lct
def parse_lct(text_or_mapping: str | Mapping[str, Any], *, dotted: bool = False,
              what: str = "LCT specification", example: str = LCT_EXAMPLE) -> dict[str, Distribution]:
    """Parse the LCT training law: one distribution per conditioned hyperparameter.

    Text: ``"NAME~DIST"`` entries separated by whitespace, ``;`` or top-level ``,``, e.g.
    ``"tau~L(0,3,0.33) gamma~U(0,0.3)"``. Mapping (e.g. from YAML): ``{name: "L(0,3,0.33)"}``,
    ``{name: 0.5}`` or ``{name: Distribution}``. Order is preserved; names must be identifiers and
    unique; an empty specification is an error. ``dotted=True`` also takes dotted names such as
    ``optim.lr`` (a hyperparameter search space, :mod:`lossdial.experiments.tune`); ``what`` and
    ``example`` name the input in error messages.

    >>> parse_lct("tau~L(0,3,0.33); gamma ~ U(0, 0.3)")
    {'tau': LinearDist(a=0, b=3, hb=0.33), 'gamma': Uniform(a=0, b=0.3)}
    >>> parse_lct({"tau": "L(1,4,0)", "omega": 0.5})
    {'tau': LinearDist(a=1, b=4, hb=0), 'omega': Fixed(0.5)}
    """
    out: dict[str, Distribution] = {}
    if isinstance(text_or_mapping, Mapping):
        if not text_or_mapping:
            raise ValueError(f"empty {what}: give at least one entry, e.g. {example}")
        for name, value in text_or_mapping.items():
            _check_name(name, what=what, text=dict(text_or_mapping), hint=example, dotted=dotted)
            if isinstance(value, bool) or not isinstance(value, (str, numbers.Real, Distribution)):
                raise ValueError(f"could not parse {what}: value for {name!r} must be a "
                                 f"distribution string or a number, got {value!r}. "
                                 f"Accepted forms: {DISTRIBUTION_FORMS}")
            out[name] = parse_distribution(value)
        return out
    if not isinstance(text_or_mapping, str):
        raise ValueError(f"could not parse {what} {text_or_mapping!r}: expected a string or a "
                         f"mapping, e.g. {example}")
    text = text_or_mapping
    entries = _entries(text, ";,", "~", "~({", what=what)
    if not entries:
        raise ValueError(f"empty {what}: give at least one entry, e.g. {example}")
    for entry in entries:
        if "~" not in entry:
            raise ValueError(f"could not parse {what} {text!r}: entry {entry!r} must be NAME~DIST, "
                             f"e.g. {example}")
        name, dist = entry.split("~", 1)
        _check_name(name, what=what, text=text, hint=example, dotted=dotted)
        if name in out:
            raise ValueError(f"could not parse {what} {text!r}: duplicate name {name!r}")
        out[name] = parse_distribution(dist)
    return out


# ----------------------------------------------------------------------------- parse_lambda_grid
def _values_from_text(name: str, spec: str, text: Any) -> list[float]:
    what = "lambda grid"
    hint = f"Example: {GRID_EXAMPLE}"
    s = spec.strip()
    if not s:
        raise ValueError(f"could not parse {what} {text!r}: no values for {name!r}. {hint}")
    if ":" in s:
        parts = s.split(":")
        if len(parts) != 3:
            raise ValueError(f"could not parse {what} {text!r}: {name}={s!r} must be "
                             f"START:STOP:COUNT. {hint}")
        start = _number(parts[0], what=what, text=text, hint=hint)
        stop = _number(parts[1], what=what, text=text, hint=hint)
        c = parts[2].strip()
        if not _INT_RE.match(c) or int(c) < 1:
            raise ValueError(f"could not parse {what} {text!r}: in {name}={s!r} the count {c!r} "
                             f"must be an integer >= 1. {hint}")
        count = int(c)
        if count == 1:
            return [start]
        pts = [start + (stop - start) * i / (count - 1) for i in range(count)]
        pts[-1] = stop
        return pts
    items = [t.strip() for t in s.split(",")]
    if any(not t for t in items):
        raise ValueError(f"could not parse {what} {text!r}: empty value in {name}={s!r}. {hint}")
    return [_number(t, what=what, text=text, hint=hint) for t in items]


def _values_from_any(name: str, value: Any, text: Any) -> list[float]:
    hint = f"Example: {GRID_EXAMPLE}"
    if isinstance(value, str):
        return _values_from_text(name, value, text)
    if isinstance(value, bool):
        raise ValueError(f"could not parse lambda grid: value for {name!r} must be a number, a "
                         f"list or a string, got {value!r}. {hint}")
    if isinstance(value, numbers.Real):
        return [_number(str(float(value)), what="lambda grid", text=text, hint=hint)]
    if hasattr(value, "tolist"):  # numpy arrays, tensors
        value = value.tolist()
        if not isinstance(value, list):
            value = [value]
    if isinstance(value, Iterable):
        vals = list(value)
        if not vals:
            raise ValueError(f"could not parse lambda grid: empty list for {name!r}. {hint}")
        out = []
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, str)):
                raise ValueError(f"could not parse lambda grid: {name!r} holds {v!r}, which is "
                                 f"not a number. {hint}")
            out.append(_number(str(v), what="lambda grid", text=text, hint=hint))
        return out
    raise ValueError(f"could not parse lambda grid: value for {name!r} must be a number, a list "
                     f"or a string, got {value!r}. {hint}")


def parse_lambda_grid(text_or_mapping: str | Mapping[str, Any], *,
                      max_points: int = 1_000_000) -> list[dict[str, float]]:
    """Parse evaluation lambda values into a list of points (cartesian product over keys).

    Per key: ``"START:STOP:COUNT"`` (``COUNT >= 1`` evenly spaced points, both ends included,
    ``COUNT = 1`` gives ``START``), ``"v1,v2,..."`` or a single ``"v"``. Keys are separated by
    whitespace or ``;``; the product is in key order with the first key varying slowest.
    A mapping ``{name: [values]}``, ``{name: "0:4:33"}`` or ``{name: number}`` is also accepted.
    More than ``max_points`` points raises ``ValueError`` (guards against typos).

    >>> [p["tau"] for p in parse_lambda_grid("tau=0:4:5")]
    [0.0, 1.0, 2.0, 3.0, 4.0]
    >>> parse_lambda_grid("tau=0,1 gamma=0.1")
    [{'tau': 0.0, 'gamma': 0.1}, {'tau': 1.0, 'gamma': 0.1}]
    >>> len(parse_lambda_grid({"tau": "0:4:33", "gamma": [0.0, 0.2]}))
    66
    """
    what = "lambda grid"
    hint = f"Example: {GRID_EXAMPLE}"
    axes: dict[str, list[float]] = {}
    if isinstance(text_or_mapping, Mapping):
        if not text_or_mapping:
            raise ValueError(f"empty {what}. {hint}")
        for name, value in text_or_mapping.items():
            _check_name(name, what=what, text=dict(text_or_mapping), hint=GRID_EXAMPLE)
            axes[name] = _values_from_any(name, value, dict(text_or_mapping))
    elif isinstance(text_or_mapping, str):
        text = text_or_mapping
        if any(ch in text for ch in "(){}"):
            raise ValueError(f"could not parse {what} {text!r}: brackets are not allowed. {hint}")
        entries = _entries(text, ";", "=,:", "=,:", what=what)
        if not entries:
            raise ValueError(f"empty {what}. {hint}")
        for entry in entries:
            if entry.count("=") != 1:
                raise ValueError(f"could not parse {what} {text!r}: token {entry!r} must be "
                                 f"NAME=VALUES. {hint}")
            name, spec = entry.split("=")
            _check_name(name, what=what, text=text, hint=GRID_EXAMPLE)
            if name in axes:
                raise ValueError(f"could not parse {what} {text!r}: duplicate name {name!r}")
            axes[name] = _values_from_text(name, spec, text)
    else:
        raise ValueError(f"could not parse {what} {text_or_mapping!r}: expected a string or a "
                         f"mapping. {hint}")
    total = math.prod(len(v) for v in axes.values())
    if total > max_points:
        raise ValueError(f"lambda grid {text_or_mapping!r} has {total} points, more than "
                         f"max_points={max_points}")
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]


# ------------------------------------------------------------------------- grid_points_from_space
def grid_points_from_space(space: LambdaSpace, k: int, *,
                           max_points: int = 4096) -> list[dict[str, float]]:
    """A default evaluation grid over a :class:`LambdaSpace`: the cartesian product (first name
    slowest) of ``k`` points per name.

    Per distribution: ``Fixed`` -> its value; ``Grid`` -> its values (points between grid values
    were never trained); ``LogUniform`` -> ``k`` points evenly spaced in log space; any other
    continuous law -> ``k`` evenly spaced points over the support, ends included. ``k = 1`` gives
    the midpoint of the support (geometric midpoint for ``LogUniform``). More than ``max_points``
    points raises ``ValueError``.

    >>> from lossdial.conditioning import LambdaSpace, parse_lct
    >>> space = LambdaSpace(parse_lct("tau~L(0,3,0.33) omega~0.5"))
    >>> grid_points_from_space(space, 4)
    [{'tau': 0.0, 'omega': 0.5}, {'tau': 1.0, 'omega': 0.5}, {'tau': 2.0, 'omega': 0.5}, \
{'tau': 3.0, 'omega': 0.5}]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"grid_points_from_space: k must be an integer >= 1, got {k!r}")
    axes: list[list[float]] = []
    for name in space.names:
        d = space.distributions[name]
        lo, hi = d.support
        if isinstance(d, Fixed):
            axes.append([d.value])
        elif isinstance(d, Grid):
            axes.append(list(d.values))
        elif isinstance(d, LogUniform):
            la, lb = math.log(lo), math.log(hi)
            if k == 1:
                axes.append([math.exp(0.5 * (la + lb))])
            else:
                pts = [math.exp(la + (lb - la) * i / (k - 1)) for i in range(k)]
                pts[0], pts[-1] = lo, hi
                axes.append(pts)
        else:
            if k == 1:
                axes.append([0.5 * (lo + hi)])
            else:
                pts = [lo + (hi - lo) * i / (k - 1) for i in range(k)]
                pts[-1] = hi
                axes.append(pts)
    total = math.prod(len(a) for a in axes)
    if total > max_points:
        raise ValueError(f"grid_points_from_space: {len(axes)} names x k={k} gives {total} points, "
                         f"more than max_points={max_points}; lower k or raise max_points")
    return [dict(zip(space.names, combo)) for combo in itertools.product(*axes)]
