"""Loss weights for last-layer retraining that account for overparameterization (METHODS.md section 4).

Stromberg, Thrampoulidis and Sankar (2025): when only the last layer is retrained, by weighted least squares
on ``n`` held-out samples of effective feature dimension ``d_eff``, the minority weight that equalises the
two class errors is not the inverse prior ``n_maj / n_min`` but

    omega* = (2 n_maj - d_eff) / (2 n_min - d_eff),   valid while d_eff < 2 n_min,

which tends to ``n_maj / n_min`` as ``d_eff / n -> 0`` and grows with ``d_eff`` (the closed form derived for
two Gaussian classes, team derivation; checked in simulation). For ``G`` classes or groups the heuristic form
is ``w_g`` proportional to ``1 / (n_g - d_eff / G)``, valid while ``d_eff < G * min n_g``; for ``G = 2`` its
ratio is exactly ``omega*``.

``d_eff`` is ``d`` (the rank) for a ridgeless fit, ``sum_j s_j / (s_j + alpha)`` with a ridge ``alpha``
(``s_j`` the eigenvalues of the unweighted pooled within-class covariance of the standardised features, on
the scale of the penalty), and the number of components after PCA.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lossdial.checks import finite_number

__all__ = ["effective_dimension", "group_weights", "max_feasible_d_eff", "omega_star", "within_class_eigenvalues"]


def _count(value, what: str) -> float:
    return finite_number(value, what)


def max_feasible_d_eff(counts: Sequence[float]) -> float:
    """The bound ``G * min n_g`` that ``d_eff`` must stay strictly below for a finite equalising weight."""
    counts = [float(c) for c in counts]
    return len(counts) * min(counts)


def omega_star(n_maj: float, n_min: float, d_eff: float) -> float:
    """The minority-class weight (majority weight 1) that equalises the two class errors of a weighted
    least-squares last layer: ``(2 n_maj - d_eff) / (2 n_min - d_eff)``.

    Raises ``ValueError`` when ``d_eff >= 2 n_min`` (no finite weight equalises: reduce ``d_eff`` by PCA or a
    ridge), or for counts that are not positive.

    Example:
        >>> omega_star(800, 200, 300)           # the Gaussian check of METHODS.md section 4
        13.0
        >>> omega_star(800, 200, 0)             # d_eff -> 0: the inverse prior ratio
        4.0
    """
    n_maj, n_min, d_eff = _count(n_maj, "n_maj"), _count(n_min, "n_min"), _count(d_eff, "d_eff")
    if n_min <= 0 or n_maj <= 0:
        raise ValueError(f"class counts must be positive, got n_maj={n_maj:g}, n_min={n_min:g}")
    if d_eff < 0:
        raise ValueError(f"d_eff must be >= 0, got {d_eff:g}")
    if d_eff >= 2 * n_min:
        raise ValueError(f"no finite weight equalises the class errors: d_eff = {d_eff:g} >= 2 n_min = "
                         f"{2 * n_min:g}; reduce d_eff below {2 * n_min:g} (PCA to fewer components, or a ridge)")
    return (2 * n_maj - d_eff) / (2 * n_min - d_eff)


def group_weights(counts: Sequence[float], d_eff: float) -> np.ndarray:
    """Per-group weights ``w_g`` proportional to ``1 / (n_g - d_eff / G)`` for ``G = len(counts)`` classes or
    groups, scaled so that the largest group has weight 1 (for two groups the other one then has ``omega*``).

    Raises ``ValueError`` when ``d_eff >= G * min n_g`` (a group with at most ``d_eff / G`` samples: no
    finite weight; reduce ``d_eff``), for fewer than two groups or non-positive counts.

    Example:
        >>> group_weights([800, 200], 300).tolist()
        [1.0, 13.0]
    """
    n = np.array([_count(c, "group count") for c in counts], dtype=np.float64)
    d_eff = _count(d_eff, "d_eff")
    if n.size < 2:
        raise ValueError(f"loss weights need at least two classes or groups, got {n.size}")
    if (n <= 0).any():
        raise ValueError(f"every class or group needs at least one sample, got counts {n.astype(int).tolist()}")
    if d_eff < 0:
        raise ValueError(f"d_eff must be >= 0, got {d_eff:g}")
    g = n.size
    if d_eff >= g * n.min():
        raise ValueError(f"no finite weight equalises the errors: the smallest class or group has {int(n.min())} "
                         f"samples, not more than d_eff / G = {d_eff:g} / {g} = {d_eff / g:g}; reduce d_eff below "
                         f"{g * n.min():g} (PCA to fewer components, or a ridge)")
    w = 1.0 / (n - d_eff / g)
    return w / w[int(np.argmax(n))]


def within_class_eigenvalues(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the unweighted pooled within-class covariance
    ``(1/n) sum_c sum_{i in c} (z_i - m_c)(z_i - m_c)^T`` of ``z`` [n, d]."""
    z = np.asarray(z, dtype=np.float64)
    centred = z.copy()
    for c in np.unique(y):
        m = y == c
        centred[m] -= z[m].mean(axis=0)
    # singular values of the centred data (no d x d matrix is formed when d > n); numerically zero ones
    # (below the usual rank tolerance max(n, d) * eps * s_max) are returned as exactly 0
    s = np.linalg.svd(centred, compute_uv=False)
    if s.size:
        s = np.where(s > s.max() * max(centred.shape) * np.finfo(np.float64).eps, s, 0.0)
    return np.sort(s ** 2 / len(z))[::-1]


def effective_dimension(eigenvalues: np.ndarray, alpha: float) -> float:
    """``sum_j s_j / (s_j + alpha)`` over the eigenvalues ``s_j`` (from :func:`within_class_eigenvalues`, whose
    numerically zero ones are exactly 0); with ``alpha = 0`` the rank, the number of positive ones."""
    s = np.asarray(eigenvalues, dtype=np.float64)
    if alpha == 0:
        return float((s > 0).sum())
    return float((s / (s + alpha)).sum())
