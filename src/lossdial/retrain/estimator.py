"""``LastLayerClassifier``: weighted least-squares last-layer retraining on frozen features (scikit-learn API).

The fit (METHODS.md section 4): standardise the features (mean and standard deviation of the retraining
part, unweighted), optionally project them on their first ``pca`` principal components, and solve

    min_{b, B}  (1/n) sum_i w_i || t_i - b - z_i B ||^2  +  alpha || B ||_F^2          (w scaled to mean 1)

with an unpenalised intercept ``b`` and targets ``t_i`` = +-1 (binary) or one-hot (multi-class); ridgeless
(``alpha = 0``) it is the minimum-norm solution, so once the retraining set is interpolated (``d >= n``) the
weights have no effect at all. The weights ``w_i`` depend on the sample's class, or its group when ``groups``
are given at fit time, through ``weighting``.

Scores: the least-squares decision values ``f`` are mapped to probabilities by a logistic fit on the held-out
selection part, ``a > 0`` so the ranking is unchanged. ``predict`` is the least-squares decision itself:
``f > 0`` (binary; the class of ``classes_[1]``), ``argmax f`` (multi-class); ``predict_proba`` is
``softmax(a f)`` (binary ``sigmoid(a f)``), which agrees with it. A binary fit also keeps the logistic fit
with an intercept, ``sigmoid(a f + c)``, calibrated at the selection part's prevalence: what a retrained run
directory scores with (``lossdial retrain``), with its default threshold at ``sigmoid(c)``, the same decision.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .weights import effective_dimension, group_weights, max_feasible_d_eff, within_class_eigenvalues

__all__ = ["WEIGHTINGS", "InfeasibleWeightWarning", "LastLayerClassifier", "TUNED_POWERS",
           "weighted_least_squares"]

#: Valid string values of ``LastLayerClassifier(weighting=...)``.
WEIGHTINGS = ("omega_star", "prior", "none", "downsample", "tuned")
#: ``weighting="tuned"``: candidate weights ``w_g ∝ (w*_g)^p`` (binary: omega = omega*^p, a log-grid of factors
#: omega*^(p-1) around omega*), chosen by worst-class (worst-group) accuracy on the selection part.
TUNED_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


class InfeasibleWeightWarning(UserWarning):
    """No finite weight equalises the errors at the requested dimension; PCA reduced it (announced)."""


def weighted_least_squares(z: np.ndarray, t: np.ndarray, w: np.ndarray, alpha: float
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(B, b)`` minimising ``(1/n) sum_i w_i ||t_i - b - z_i B||^2 + alpha ||B||^2`` (``w`` scaled to mean 1,
    the intercept ``b`` unpenalised); ``alpha = 0``: the minimum-norm ``B`` among the minimisers.

    The intercept is profiled out by centring ``z`` and ``t`` on their ``w``-weighted means; the rest is one
    SVD of ``sqrt(w) * (z - mean)``.
    """
    z = np.asarray(z, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    w = w / w.mean()
    mz, mt = w @ z / w.sum(), w @ t / w.sum()
    sw = np.sqrt(w)[:, None]
    a, r = sw * (z - mz), sw * (t - mt)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    if alpha == 0:
        tol = (s.max() if s.size else 0.0) * max(a.shape) * np.finfo(np.float64).eps
        f = np.divide(1.0, s, out=np.zeros_like(s), where=s > tol)
    else:
        f = s / (s ** 2 + len(z) * alpha)
    coef = vt.T @ (f[:, None] * (u.T @ r))
    return coef, mt - mz @ coef


def _check_param(est: "LastLayerClassifier") -> None:
    wt = est.weighting
    if isinstance(wt, str):
        if wt not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, a number (binary: the minority "
                             f"class weight) or a dict class -> weight; got {wt!r}")
    elif isinstance(wt, dict):
        for k, v in wt.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 < v < math.inf):
                raise ValueError(f"weighting[{k!r}] must be a positive finite number, got {v!r}")
    elif isinstance(wt, bool) or not isinstance(wt, numbers.Real) or not (0 < wt < math.inf):
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, a positive number or a dict; "
                         f"got {wt!r}")
    a = est.alpha
    if isinstance(a, bool) or not isinstance(a, numbers.Real) or not (0 <= a < math.inf):
        raise ValueError(f"alpha (the ridge strength) must be a finite number >= 0, got {a!r}")
    d = est.d_eff
    if not (d == "auto" if isinstance(d, str) else
            (not isinstance(d, bool) and isinstance(d, numbers.Real) and 0 <= d < math.inf)):
        raise ValueError(f"d_eff must be 'auto' or a finite number >= 0, got {d!r}")
    p = est.pca
    if p is not None and (isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1):
        raise ValueError(f"pca must be None or a number of components >= 1, got {p!r}")
    f = est.selection_fraction
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not (0 <= f < 1):
        raise ValueError(f"selection_fraction must be in [0, 1), got {f!r}")


def _stratified_split(keys: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, selection positions): ``floor(fraction * n_k)`` of each stratum ``k`` go to selection."""
    fit, sel = [], []
    for k in np.unique(keys):
        ix = np.flatnonzero(keys == k)
        ix = ix[rng.permutation(len(ix))]
        m = int(math.floor(fraction * len(ix)))
        sel.append(ix[:m])
        fit.append(ix[m:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(sel))


class LastLayerClassifier(ClassifierMixin, BaseEstimator):
    """Weighted least-squares last layer with overparameterization-aware loss weights (omega*).

    Parameters:
        weighting: ``"omega_star"`` (default: ``w_g ∝ 1 / (n_g - d_eff / G)``, G classes or groups; binary:
            omega* = (2 n_maj - d_eff) / (2 n_min - d_eff)), ``"prior"`` (``w_g ∝ 1 / n_g``), ``"none"``,
            ``"downsample"`` (every class/group subsampled to the smallest, unweighted), ``"tuned"``
            (``w_g ∝ (w*_g)^p`` for p in :data:`TUNED_POWERS`, chosen by worst-class/group accuracy on the
            selection part, as DFR does), a positive number (binary: the minority class weight, majority 1)
            or a dict class -> weight.
        alpha: ridge strength on the standardised (and PCA-projected) features; 0 = ridgeless, minimum norm.
        d_eff: ``"auto"`` -- the rank (ridgeless), the ridge degrees of freedom ``sum s_j / (s_j + alpha)``
            over the eigenvalues of the unweighted pooled within-class covariance of the standardised
            features, computed after PCA when ``pca`` is set -- or a number used as given.
        pca: ``None`` or the number of principal components (of the standardised retraining features) to
            retrain on.
        selection_fraction: the share of each class (class x group) held out from ``fit``'s data as the
            selection part (the logistic probability fit, and ``tuned``'s choice), unless ``X_select`` /
            ``y_select`` are given to ``fit``; 0: no selection part (probabilities fitted in-sample,
            ``tuned`` refused).
        random_state: seed of the selection split and of ``downsample`` (default 0; no global RNG).

    When ``weighting`` is ``omega_star`` or ``tuned`` and no finite weight can equalise at the dimension
    reached (``d_eff >= G * min n_g``), the dimension is reduced by PCA to the largest feasible number of
    components, with an :class:`InfeasibleWeightWarning` naming it, and ``feasible_`` is False (for the
    dimension requested); a ``d_eff`` given as a number cannot be reduced and raises ``ValueError``.

    Fitted attributes: ``classes_``, ``coef_`` ([1, d] binary, [C, d] multi-class) and ``intercept_`` on the raw
    features (``decision_function(X) = X coef_^T + intercept_``), ``class_weight_`` (per class, the most
    frequent class or group has weight 1; with groups the mean weight of the class's samples),
    ``group_weight_`` (dict group -> weight, or None), ``omega_star_`` (binary without groups: omega* at
    ``d_eff_``, None when infeasible), ``d_eff_``, ``feasible_``, ``n_components_`` (None without PCA),
    ``counts_`` (dict class or group -> samples in the retraining part), ``weight_power_`` (``tuned``: the
    chosen p), ``calibration_`` ((a, 0): :meth:`predict_proba`), ``prevalence_calibration_`` ((a, c), binary:
    with an intercept, see :meth:`logit_layer`), ``n_features_in_``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = (rng.random(400) < 0.2).astype(int)
        >>> X = rng.normal(size=(400, 20)) + (2 * y[:, None] - 1) * 0.5
        >>> clf = LastLayerClassifier().fit(X, y)
        >>> round(clf.d_eff_), clf.feasible_
        (20, True)
    """

    def __init__(self, weighting: Any = "omega_star", alpha: float = 0.0, d_eff: Any = "auto",
                 pca: int | None = None, selection_fraction: float = 0.5, random_state: Any = 0) -> None:
        self.weighting = weighting
        self.alpha = alpha
        self.d_eff = d_eff
        self.pca = pca
        self.selection_fraction = selection_fraction
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, groups=None, *, X_select=None, y_select=None, groups_select=None):
        """Fit on ``(X, y)`` [and ``groups``]; the selection part is ``(X_select, y_select[, groups_select])``
        when given, else a stratified ``selection_fraction`` of ``(X, y)``."""
        _check_param(self)
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"last-layer retraining needs samples of at least 2 classes; y has 1 class "
                             f"({self.classes_[0]!r})")
        gi, group_names = None, None
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (len(y),):
                raise ValueError(f"groups must have one entry per sample ({len(y)}), got shape {groups.shape}")
            group_names, gi = np.unique(groups, return_inverse=True)
        rng = check_random_state(self.random_state)
        if X_select is not None or y_select is not None:
            if X_select is None or y_select is None:
                raise ValueError("give both X_select and y_select (or neither)")
            Xs = validate_data(self, X_select, reset=False, dtype=np.float64)
            ys = np.asarray(y_select)
            if ys.shape != (len(Xs),):
                raise ValueError(f"y_select must have one label per row of X_select ({len(Xs)}), got shape "
                                 f"{ys.shape}")
            unknown = sorted(set(ys.tolist()) - set(self.classes_.tolist()))
            if unknown:
                raise ValueError(f"y_select has classes {unknown} that y does not have ({self.classes_.tolist()})")
            ysi = np.searchsorted(self.classes_, ys)
            gsi = None
            if groups is not None:
                if groups_select is None:
                    raise ValueError("groups were given for X; give groups_select for X_select too")
                gs = np.asarray(groups_select)
                if gs.shape != (len(ys),):
                    raise ValueError(f"groups_select must have one entry per row of X_select, got {gs.shape}")
                bad = sorted(set(gs.tolist()) - set(group_names.tolist()))
                if bad:
                    raise ValueError(f"groups_select has groups {bad} that groups does not have")
                gsi = np.searchsorted(group_names, gs)
            Xf, yf, gf = X, yi, gi
        elif self.selection_fraction > 0:
            keys = yi if gi is None else yi * (gi.max() + 1) + gi
            fit_ix, sel_ix = _stratified_split(keys, self.selection_fraction, rng)
            Xf, yf, gf = X[fit_ix], yi[fit_ix], None if gi is None else gi[fit_ix]
            Xs, ysi, gsi = X[sel_ix], yi[sel_ix], None if gi is None else gi[sel_ix]
        else:
            Xf, yf, gf = X, yi, gi
            Xs = ysi = gsi = None
        if len(np.unique(yf)) < len(self.classes_):
            raise ValueError("every class needs a sample in the retraining part; with selection_fraction="
                             f"{self.selection_fraction} some class has none (add samples or lower it)")
        if self.weighting == "tuned" and (Xs is None or len(Xs) == 0):
            raise ValueError("weighting='tuned' chooses the weight on a selection part: give X_select/y_select "
                             "or selection_fraction > 0")
        self._fit_core(Xf, yf, gf, group_names, Xs, ysi, gsi, rng)
        return self

    def _fit_core(self, Xf, yf, gf, group_names, Xs, ysi, gsi, rng) -> None:
        n, d = Xf.shape
        n_classes = len(self.classes_)
        units = yf if gf is None else gf
        unit_names = self.classes_ if gf is None else group_names
        n_units = len(unit_names)
        counts = np.bincount(units, minlength=n_units)
        if (counts == 0).any():
            missing = [unit_names[i] for i in np.flatnonzero(counts == 0)]
            raise ValueError(f"group(s) {missing} have no sample in the retraining part")
        self.counts_ = {_py(unit_names[i]): int(c) for i, c in enumerate(counts)}

        mu = Xf.mean(axis=0)
        sd = Xf.std(axis=0)
        sd = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mu)), sd, 1.0)
        z = (Xf - mu) / sd
        vt_cache: list[np.ndarray] = []

        def directions() -> np.ndarray:
            """Principal directions of the standardised retraining features (unweighted), computed once."""
            if not vt_cache:
                vt_cache.append(np.linalg.svd(z, full_matrices=True)[2])
            return vt_cache[0]

        if self.pca is not None and self.pca > d:
            raise ValueError(f"pca={self.pca} exceeds the feature dimension: X has {d} feature(s)")
        k = self.pca
        alpha = float(self.alpha)
        bound = max_feasible_d_eff(counts)

        def d_eff_at(k_: int | None) -> float:
            if not isinstance(self.d_eff, str):
                return float(self.d_eff)
            zk = z if k_ is None else z @ directions()[:k_].T
            return effective_dimension(within_class_eigenvalues(zk, yf), alpha)

        d_eff = d_eff_at(k)
        self.feasible_ = bool(d_eff < bound)
        equalising = self.weighting in ("omega_star", "tuned")
        if equalising and not self.feasible_:
            if not isinstance(self.d_eff, str):
                raise ValueError(f"d_eff={self.d_eff:g} leaves no finite equalising weight: the smallest class or "
                                 f"group has {int(counts.min())} samples, not more than d_eff / G = "
                                 f"{self.d_eff:g} / {n_units}; set d_eff below {bound:g} or d_eff='auto'")
            # the largest k with d_eff(k) < bound; d_eff grows with k (Cauchy interlacing) and d_eff(k) <= k, so
            # k = ceil(bound) - 1 is feasible: gallop up from there, then bisect
            top = k if k is not None else d
            lo = min(top, math.ceil(bound) - 1)
            step = 1
            while lo + step <= top and d_eff_at(lo + step) < bound:
                lo, step = lo + step, step * 2
            hi = min(top, lo + step - 1)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if d_eff_at(mid) < bound:
                    lo = mid
                else:
                    hi = mid - 1
            what = (f"d_eff = {d_eff:.4g} (" + ("ridgeless rank" if alpha == 0 else f"ridge alpha={alpha:g}")
                    + (f", pca={k}" if k is not None else f", d={d}") + ")")
            warnings.warn(
                f"no finite weight equalises the errors at {what}: the smallest class or group has "
                f"{int(counts.min())} retraining samples, so d_eff must stay below G * min n_g = {bound:g}. "
                f"Reducing by PCA to {lo} components (the largest feasible number); set pca or alpha to "
                f"choose otherwise", InfeasibleWeightWarning, stacklevel=3)
            k = lo
            d_eff = d_eff_at(k)
        self.n_components_ = k
        self.d_eff_ = float(d_eff)
        zk = z if k is None else z @ directions()[:k].T
        basis = np.eye(d) if k is None else directions()[:k].T  # [d, k]: raw standardised -> retrained coordinates

        targets = self._targets(yf)
        w_star = group_weights(counts, self.d_eff_) if self.d_eff_ < bound else None
        self.omega_star_ = (float(w_star.max() / w_star[int(np.argmax(counts))])
                            if w_star is not None and n_classes == 2 and gf is None else None)
        keep = np.arange(n)
        self.weight_power_ = None
        if self.weighting == "downsample":
            m = int(counts.min())
            keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(units == u), size=m, replace=False)
                                           for u in range(n_units)]))
            unit_w = np.ones(n_units)
        elif self.weighting == "tuned":
            unit_w = self._choose_power(zk, targets, units, w_star, basis, mu, sd, Xs, ysi, gsi, gf is not None)
        else:
            unit_w = self._unit_weights(counts, w_star, unit_names, gf is not None)
        coef_std, b = weighted_least_squares(zk[keep], targets[keep], unit_w[units[keep]], alpha)
        self.coef_, self.intercept_ = _raw_layer(coef_std, b, basis, mu, sd)
        w_norm = unit_w / unit_w[int(np.argmax(counts))]
        if gf is None:
            self.class_weight_ = w_norm.copy()
            self.group_weight_ = None
        else:
            self.group_weight_ = {_py(group_names[g]): float(w_norm[g]) for g in range(n_units)}
            self.class_weight_ = np.array([w_norm[units[yf == c]].mean() for c in range(n_classes)])
        # logistic maps of the decision values, on the selection part (in-sample without one)
        f_cal, y_cal = (self._decision(Xs), ysi) if Xs is not None and len(Xs) else (self._decision(Xf), yf)
        self.calibration_ = _fit_calibration(f_cal, y_cal, n_classes, intercept=False)
        self.prevalence_calibration_ = (_fit_calibration(f_cal, y_cal, n_classes, intercept=True)
                                        if n_classes == 2 else self.calibration_)

    def _targets(self, yi: np.ndarray) -> np.ndarray:
        if len(self.classes_) == 2:
            return (2.0 * yi - 1.0)[:, None]
        return np.eye(len(self.classes_))[yi]

    def _unit_weights(self, counts, w_star, unit_names, grouped: bool) -> np.ndarray:
        wt = self.weighting
        if wt == "omega_star":
            return w_star
        if wt == "prior":
            return counts.max() / counts.astype(np.float64)
        if wt == "none":
            return np.ones(len(counts))
        if isinstance(wt, dict):
            names = [_py(u) for u in unit_names]
            missing = [u for u in names if u not in wt]
            if missing:
                raise ValueError(f"weighting dict has no weight for {missing}; it needs one per "
                                 f"{'group' if grouped else 'class'}: {names}")
            return np.array([float(wt[u]) for u in names])
        # a number: the minority class weight (binary, no groups)
        if grouped or len(counts) != 2:
            raise ValueError("a numeric weighting is the minority class weight of a binary task without groups; "
                             "give a dict class -> weight instead")
        out = np.ones(2)
        out[int(np.argmin(counts))] = float(wt)
        return out

    def _choose_power(self, zk, targets, units, w_star, basis, mu, sd, Xs, ysi, gsi, grouped) -> np.ndarray:
        sel_units = gsi if grouped else ysi
        best = None
        for p in TUNED_POWERS:
            unit_w = w_star ** p
            coef_std, b = weighted_least_squares(zk, targets, unit_w[units], float(self.alpha))
            coef, icpt = _raw_layer(coef_std, b, basis, mu, sd)
            pred = _predict_index(Xs @ coef.T + icpt)
            acc = [np.mean(pred[sel_units == u] == ysi[sel_units == u]) for u in np.unique(sel_units)]
            key = (min(acc), -abs(p - 1.0))
            if best is None or key > best[0]:
                best = (key, p, unit_w)
        self.weight_power_ = best[1]
        return best[2]

    # ------------------------------------------------------------------ predict
    def _decision(self, X) -> np.ndarray:
        f = X @ self.coef_.T + self.intercept_
        return f[:, 0] if f.shape[1] == 1 else f

    def decision_function(self, X) -> np.ndarray:
        """Least-squares decision values: [n] (binary, > 0 means ``classes_[1]``) or [n, C]."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._decision(X)

    def predict(self, X) -> np.ndarray:
        f = self.decision_function(X)
        return self.classes_[_predict_index(f[:, None] if f.ndim == 1 else f)]

    def predict_proba(self, X) -> np.ndarray:
        """``softmax(a f)`` (binary: ``sigmoid(a f)``), ``a`` fitted by maximum likelihood on the selection part:
        the ranking and the decision of :meth:`predict` are unchanged (probability 0.5 at ``f = 0``)."""
        W, b = self.logit_layer()
        X = validate_data(self, X, reset=False, dtype=np.float64)
        logits = X @ W.T + b
        return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))

    def logit_layer(self, prevalence: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(W [C, d], b [C])`` of one linear layer whose softmax gives the probabilities: binary
        ``W = [0; a coef]``, ``b = [0, a intercept + c]``; multi-class ``a coef``, ``a intercept``.

        ``prevalence=False``: :meth:`predict_proba` (``calibration_``, c = 0). ``prevalence=True`` (binary):
        the logistic fit with an intercept (``prevalence_calibration_``), probabilities calibrated at the
        selection part's prevalence; the decision of :meth:`predict` is then ``p >= sigmoid(c)``
        (:meth:`decision_probability`)."""
        check_is_fitted(self)
        a, c = self.prevalence_calibration_ if prevalence else self.calibration_
        if len(self.classes_) == 2:
            W = np.vstack([np.zeros_like(self.coef_[0]), a * self.coef_[0]])
            return W, np.array([0.0, a * self.intercept_[0] + c])
        return a * self.coef_, a * self.intercept_

    def decision_probability(self) -> float:
        """The prevalence-calibrated probability at decision value 0 (binary): ``sigmoid(c)``."""
        check_is_fitted(self)
        return float(expit(self.prevalence_calibration_[1]))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = False
        return tags


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _predict_index(f: np.ndarray) -> np.ndarray:
    """Class index from decision values [n, 1] (binary: f > 0) or [n, C] (argmax)."""
    return (f[:, 0] > 0).astype(int) if f.shape[1] == 1 else np.argmax(f, axis=1)


def _raw_layer(coef_std, b, basis, mu, sd) -> tuple[np.ndarray, np.ndarray]:
    """The retrained layer on the raw features: ``f = ((x - mu) / sd) @ basis @ coef_std + b``."""
    w = (basis @ coef_std) / sd[:, None]  # [d, C']
    return w.T.copy(), b - mu @ w


def _fit_calibration(f: np.ndarray, yi: np.ndarray, n_classes: int, intercept: bool) -> tuple[float, float]:
    """``(a, c)`` minimising the mean log loss of ``sigmoid(a f + c)`` (binary; ``c = 0`` unless ``intercept``)
    or ``softmax(a f)`` (c = 0), with ``a`` in [e^-12, e^12] (> 0: ranking unchanged) and ``c`` in [-50, 50]
    (a separable or one-class selection part stops at the bounds)."""
    if n_classes == 2:
        s = 2.0 * (yi == 1) - 1.0

        def nll(p):
            a = math.exp(p[0])
            m = s * (a * f + p[1])
            g = -expit(-m) * s  # d loss_i / d (a f_i + c)
            return -np.mean(log_expit(m)), np.array([np.mean(g * a * f), np.mean(g)])

        res = minimize(nll, np.zeros(2), jac=True, method="L-BFGS-B",
                       bounds=[(-12, 12), (-50, 50) if intercept else (0, 0)],
                       options={"gtol": 1e-10, "ftol": 1e-14})
        return float(math.exp(res.x[0])), float(res.x[1])
    rows = np.arange(len(yi))

    def nll_m(p):
        a = math.exp(p[0])
        z = a * f
        lse = logsumexp(z, axis=1)
        soft = np.exp(z - lse[:, None])
        grad = a * np.mean((soft * f).sum(axis=1) - f[rows, yi])
        return np.mean(lse - z[rows, yi]), np.array([grad])

    res = minimize(nll_m, np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(-12, 12)],
                   options={"gtol": 1e-10, "ftol": 1e-14})
    return float(math.exp(res.x[0])), 0.0
