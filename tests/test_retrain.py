"""Last-layer retraining (issue 14): omega*, the estimator, and its checks against independent truths.

Truths used: the closed form of METHODS.md section 4 evaluated by hand; the exact class errors of a linear
rule on two Gaussian classes (Phi of the margin over the norm, no test sample); numpy's lstsq on the same
weighted, centred system; the theory that once the data are interpolated (d >= n) the minimum-norm fit
does not depend on the weights; scikit-learn's own estimator checks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.utils.estimator_checks import parametrize_with_checks

from lossdial.retrain import (InfeasibleWeightWarning, LastLayerClassifier, effective_dimension, group_weights,
                              omega_star, within_class_eigenvalues)


# ---------------------------------------------------------------------------------------------- omega*
def test_omega_star_hand_values():
    assert omega_star(800, 200, 300) == pytest.approx(1300 / 100)   # (1600 - 300) / (400 - 300)
    assert omega_star(50, 10, 4) == pytest.approx(96 / 16)


def test_omega_star_tends_to_prior_ratio_and_grows_with_d_eff():
    assert omega_star(800, 200, 1e-9) == pytest.approx(4.0)
    vals = [omega_star(800, 200, d) for d in np.linspace(0, 399, 50)]
    assert vals[0] == pytest.approx(4.0)
    assert np.all(np.diff(vals) > 0)
    assert vals[-1] > 1000  # blows up as d_eff -> 2 n_min


def test_group_weights_two_groups_is_omega_star_and_G_form():
    w = group_weights([800, 200], 300)
    assert w[1] / w[0] == pytest.approx(omega_star(800, 200, 300))
    # three groups, hand values: 1 / (n_g - 30 / 3)
    w3 = group_weights([100, 40, 20], 30)
    expect = np.array([1 / 90, 1 / 30, 1 / 10])
    np.testing.assert_allclose(w3, expect / expect[0])


@pytest.mark.parametrize("args, msg", [((800, 200, 400), "2 n_min = 400"), ((800, 0, 1), "positive"),
                                       ((800, 200, -1), ">= 0"), ((800, 200, float("nan")), "finite")])
def test_omega_star_refuses(args, msg):
    with pytest.raises(ValueError, match=msg):
        omega_star(*args)


def test_group_weights_refuses_group_below_d_eff_over_G():
    with pytest.raises(ValueError, match="d_eff / G = 30 / 3 = 10"):
        group_weights([100, 40, 10], 30)


def test_effective_dimension_ridge_formula_by_hand():
    # class 0 deviates by (+-2, 0, 0), class 1 by (0, +-1, 0): pooled scatter diag(8, 2, 0) / 4 samples
    z = np.array([[2, 0, 0], [-2, 0, 0], [10, 1, 5], [10, -1, 5]], dtype=float)
    y = np.array([0, 0, 1, 1])
    s = within_class_eigenvalues(z, y)
    np.testing.assert_allclose(s, [2.0, 0.5, 0.0], atol=1e-12)
    assert effective_dimension(s, 0.0) == 2
    assert effective_dimension(s, 1.0) == pytest.approx(2 / 3 + 0.5 / 1.5)


# ---------------------------------------------------------------------------------------------- simulation
def _gaussian(seed, n=1000, d=300, pi=0.2):
    rng = np.random.default_rng(seed)
    n1 = int(round(pi * n))
    y = np.r_[np.ones(n1, int), np.zeros(n - n1, int)]
    mu = np.zeros(d)
    mu[0] = 1.0
    x = rng.normal(size=(n, d)) + np.where(y[:, None] == 1, mu, -mu)
    return x, y, mu


def _class_errors(clf, mu):
    """Exact errors of the rule f(x) = w.x + b > 0 on N(+mu, I) (class 1) and N(-mu, I) (class 0)."""
    w, b = clf.coef_[0], clf.intercept_[0]
    nw = np.linalg.norm(w)
    return norm.cdf(-(w @ mu + b) / nw), norm.cdf((-w @ mu + b) / nw)


def test_gaussian_simulation_omega_star_equalises_prior_does_not():
    res = {"omega_star": [], "prior": []}
    for seed in range(4):
        x, y, mu = _gaussian(seed)
        for wt in res:
            clf = LastLayerClassifier(weighting=wt, selection_fraction=0).fit(x, y)
            res[wt].append(_class_errors(clf, mu))
    star = np.mean(res["omega_star"], axis=0)
    prior = np.mean(res["prior"], axis=0)
    assert abs(star[0] - star[1]) < 0.045, star
    assert abs(prior[0] - prior[1]) > 0.08, prior
    assert star == pytest.approx([0.275, 0.269], abs=0.02)  # METHODS.md section 4
    assert prior == pytest.approx([0.317, 0.195], abs=0.02)


def test_interpolation_makes_weights_irrelevant():
    x, y, _ = _gaussian(0, n=60, d=80)
    x_new = _gaussian(1, n=50, d=80)[0]  # on the training points every fit is exactly +-1: use fresh ones
    fs = [LastLayerClassifier(weighting=wt, selection_fraction=0).fit(x, y).decision_function(x_new)
          for wt in ("none", "prior", 13.0, 1000.0, {0: 5.0, 1: 1.0})]
    for f in fs[1:]:
        np.testing.assert_allclose(f, fs[0], rtol=1e-7, atol=1e-9)
    # and the weights do matter below the interpolation threshold
    x, y, _ = _gaussian(0, n=200, d=20)
    x_new = _gaussian(1, n=50, d=20)[0]
    a = LastLayerClassifier(weighting="none", selection_fraction=0).fit(x, y).decision_function(x_new)
    b = LastLayerClassifier(weighting=13.0, selection_fraction=0).fit(x, y).decision_function(x_new)
    assert np.abs(a - b).max() > 0.1


# ---------------------------------------------------------------------------------------------- the fit
def test_head_is_independent_weighted_lstsq_with_unpenalised_intercept():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 6)) * [1, 2, 3, 4, 5, 100] + 7
    y = (rng.random(120) < 0.25).astype(int)
    clf = LastLayerClassifier(weighting="prior", selection_fraction=0).fit(x, y)
    n1, n0 = (y == 1).sum(), (y == 0).sum()
    w = np.where(y == 1, n0 / n1, 1.0)
    a = np.sqrt(w)[:, None] * np.c_[x, np.ones(len(x))]  # raw features + intercept column
    sol = np.linalg.lstsq(a, np.sqrt(w) * (2.0 * y - 1), rcond=None)[0]
    np.testing.assert_allclose(clf.coef_[0], sol[:-1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(clf.intercept_[0], sol[-1], rtol=1e-8, atol=1e-10)


def test_ridge_leaves_intercept_unpenalised_and_penalises_standardised_coefficients():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 3)) * [1, 10, 0.1] + [50, -3, 2]
    y = np.r_[np.zeros(60, int), np.ones(20, int)]
    alpha = 0.3
    clf = LastLayerClassifier(weighting="none", alpha=alpha, selection_fraction=0).fit(x, y)
    # closed form: z standardised, centred (unweighted), (Z^T Z / n + alpha I) B = Z^T t / n
    z = (x - x.mean(0)) / x.std(0)
    t = 2.0 * y - 1
    beta = np.linalg.solve(z.T @ z / 80 + alpha * np.eye(3), z.T @ (t - t.mean()) / 80)
    f = z @ beta + t.mean()
    np.testing.assert_allclose(clf.decision_function(x), f, rtol=1e-9, atol=1e-12)


def test_d_eff_auto_ridge_uses_within_class_covariance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 5)) * [3, 1, 1, 0.5, 0.1]
    y = np.r_[np.zeros(150, int), np.ones(50, int)]
    x[y == 1] += 2.0
    clf = LastLayerClassifier(alpha=0.2, selection_fraction=0).fit(x, y)
    z = (x - x.mean(0)) / x.std(0)
    zc = z.copy()
    for c in (0, 1):
        zc[y == c] -= z[y == c].mean(0)
    s = np.linalg.eigvalsh(zc.T @ zc / 200)
    assert clf.d_eff_ == pytest.approx(np.sum(s / (s + 0.2)))
    assert clf.class_weight_[1] == pytest.approx((300 - clf.d_eff_) / (100 - clf.d_eff_))
    assert clf.omega_star_ == pytest.approx(clf.class_weight_[1])


def test_infeasible_dimension_announces_pca_fallback():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 64))
    y = np.r_[np.zeros(133, int), np.ones(17, int)]
    with pytest.warns(InfeasibleWeightWarning, match="PCA to 33 components"):
        clf = LastLayerClassifier(selection_fraction=0).fit(x, y)
    assert (clf.feasible_, clf.n_components_, clf.d_eff_) == (False, 33, 33)
    assert clf.class_weight_[1] == pytest.approx((2 * 133 - 33) / (2 * 17 - 33))
    # the user's pca is honoured when feasible (no warning) ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = LastLayerClassifier(pca=10, selection_fraction=0).fit(x, y)
    assert (clf.feasible_, clf.n_components_, clf.d_eff_) == (True, 10, 10)
    # ... and falls back the same way when it is not
    with pytest.warns(InfeasibleWeightWarning, match="pca=40"):
        clf = LastLayerClassifier(pca=40, selection_fraction=0).fit(x, y)
    assert (clf.feasible_, clf.n_components_) == (False, 33)
    # a ridge that brings d_eff below 2 n_min is feasible at the full dimension
    clf = LastLayerClassifier(alpha=20.0, selection_fraction=0).fit(x, y)
    assert clf.feasible_ and clf.n_components_ is None and clf.d_eff_ < 34
    # baselines do not reduce the dimension; they report feasibility
    clf = LastLayerClassifier(weighting="prior", selection_fraction=0).fit(x, y)
    assert (clf.feasible_, clf.n_components_, clf.d_eff_) == (False, None, 64)


def test_groups_weight_each_group():
    rng = np.random.default_rng(7)
    y = np.r_[np.zeros(100, int), np.ones(60, int)]
    g = np.r_[np.zeros(80, int), np.ones(20, int), np.full(50, 2), np.full(10, 3)]
    x = rng.normal(size=(160, 8)) + y[:, None]
    clf = LastLayerClassifier(selection_fraction=0).fit(x, y, groups=g)
    expect = 1 / (np.array([80, 20, 50, 10]) - 8 / 4)
    got = np.array([clf.group_weight_[k] for k in range(4)])
    np.testing.assert_allclose(got, expect / expect[0])
    with pytest.raises(ValueError, match="d_eff=45 leaves no finite"):
        LastLayerClassifier(d_eff=45, selection_fraction=0).fit(x, y, groups=g)


def test_probabilities_are_logistic_on_selection_part_and_keep_ranking():
    x, y, _ = _gaussian(1, n=400, d=10)
    xs, ys, _ = _gaussian(2, n=400, d=10)
    clf = LastLayerClassifier(selection_fraction=0).fit(x, y, X_select=xs, y_select=ys)
    f, p = clf.decision_function(xs), clf.predict_proba(xs)[:, 1]
    assert np.all(np.diff(p[np.argsort(f)]) >= 0)
    np.testing.assert_array_equal(p > 0.5, clf.predict(xs) == 1)
    # independent: the maximum-likelihood condition of a logistic regression of ys on f alone: sum (y - p) f = 0
    assert abs(((ys - p) * f).mean()) < 1e-6
    # with an intercept (the run directory's scores): sum (y - p) = 0 and sum (y - p) f = 0
    W, b = clf.logit_layer(prevalence=True)
    logit = xs @ W.T + b
    q = np.exp(logit[:, 1]) / np.exp(logit).sum(1)
    assert abs((ys - q).mean()) < 1e-6 and abs(((ys - q) * f).mean()) < 1e-6
    assert q.min() < 0.1 and q.max() > 0.9  # not the trivial a -> 0
    # the decision f > 0 is q >= sigmoid(c)
    np.testing.assert_array_equal(q >= clf.decision_probability(), f > 0)


def test_tuned_chooses_on_selection_part():
    x, y, _ = _gaussian(3, n=600, d=50)
    xs, ys, _ = _gaussian(4, n=2000, d=50)
    clf = LastLayerClassifier(weighting="tuned").fit(x, y, X_select=xs, y_select=ys)
    assert clf.weight_power_ is not None
    pred = clf.predict(xs)
    worst = min(np.mean(pred[ys == c] == c) for c in (0, 1))
    for p_other in (0.0, 2.0):  # at least as good on the selection part as the extremes of the grid
        w = {0: 1.0, 1: clf.omega_star_ ** p_other}
        o = LastLayerClassifier(weighting=w).fit(x, y, X_select=xs, y_select=ys).predict(xs)
        assert worst >= min(np.mean(o[ys == c] == c) for c in (0, 1)) - 1e-12


@pytest.mark.parametrize("kw, fit_kw, msg", [
    ({}, {"x_nan": True}, "NaN"),
    ({"weighting": "balanced"}, {}, "weighting must be one of"),
    ({"alpha": -1.0}, {}, "alpha"),
    ({"d_eff": "full"}, {}, "d_eff must be"),
    ({"pca": 0}, {}, "pca must be"),
    ({"pca": 99}, {}, "exceeds the feature dimension"),
    ({"weighting": "tuned", "selection_fraction": 0}, {}, "selection part"),
    ({}, {"one_class": True}, "at least 2 classes"),
])
def test_bad_input(kw, fit_kw, msg):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = np.r_[np.zeros(30, int), np.ones(10, int)]
    if fit_kw.get("x_nan"):
        x[3, 2] = np.nan
    if fit_kw.get("one_class"):
        y[:] = 0
    with pytest.raises(ValueError, match=msg):
        LastLayerClassifier(**kw).fit(x, y)


@parametrize_with_checks([LastLayerClassifier(), LastLayerClassifier(weighting="tuned", alpha=0.1),
                          LastLayerClassifier(weighting="downsample", pca=2, selection_fraction=0)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfeasibleWeightWarning)
        check(estimator)


@pytest.mark.parametrize("alpha", [0.2, 0.5])  # answers 31 and 39: between the search's probe points
def test_ridge_fallback_picks_largest_feasible_components_by_brute_force(alpha):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(150, 64)) * np.linspace(3, 0.2, 64)
    y = np.r_[np.zeros(136, int), np.ones(14, int)]
    with pytest.warns(InfeasibleWeightWarning):
        clf = LastLayerClassifier(alpha=alpha, selection_fraction=0).fit(x, y)
    z = (x - x.mean(0)) / x.std(0)
    vt = np.linalg.svd(z, full_matrices=False)[2]

    def d_eff(k):  # by hand: eigenvalues of the pooled within-class covariance of the k projections
        zk = z @ vt[:k].T
        c = np.vstack([zk[y == j] - zk[y == j].mean(0) for j in (0, 1)])
        s = np.linalg.eigvalsh(c.T @ c / len(z))
        return np.sum(np.clip(s, 0, None) / (np.clip(s, 0, None) + alpha))

    best = max(k for k in range(1, 65) if d_eff(k) < 28)
    assert clf.n_components_ == best > 27
    assert clf.d_eff_ == pytest.approx(d_eff(best))
