"""LossDialClassifier: scikit-learn's estimator checks, the dial after fit, pick, composition, bad input.

Every model here is tiny (a hidden layer of 8-16 units, a few epochs) so the file runs in seconds; quality is
not what is tested, behaviour is, against hand computations (softmax, standardisation, the lambda encoding,
brute-force threshold / adjustment searches) or scikit-learn's own tools.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import parametrize_with_checks

from lossdial.evaluate.sweep import MIN_TP, NoFeasiblePoint
from lossdial.sklearn import LossDialClassifier

TINY = dict(hidden=(16,), epochs=4, batch_size=32, learning_rate=1e-2, random_state=0)


def tiny(**kw) -> LossDialClassifier:
    return LossDialClassifier(**{**TINY, **kw})


def _expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data":
            "minibatch training: a weight of 2 and a repeated row put different rows in the same batches, so the "
            "two fits differ (the weighted loss is the same in expectation, not bit for bit)"}


@parametrize_with_checks([tiny(), tiny(lct="tau~L(0,3,0.33)", film_hidden=8),
                          tiny(ssl_weight=1.0, smoothing_a_max=0.2)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def binary_data():
    X, y = make_classification(n_samples=400, n_features=6, n_informative=4, weights=[0.8], random_state=1)
    return X, y


@pytest.fixture(scope="module")
def lct_model(binary_data):
    X, y = binary_data
    return tiny(lct="tau~L(0,3,0.33)", film_hidden=8, epochs=10).fit(X, y)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------- the dial
def test_threshold_dial_changes_predictions_without_refit(binary_data):
    X, y = binary_data
    labels = np.where(y == 1, "yes", "no")  # classes_ = ["no", "yes"]: the positive class is "yes" (rarer here)
    est = tiny().fit(X, labels)
    weights = [p.detach().clone() for p in est.model_.parameters()]
    proba = est.predict_proba(X)
    for t in (0.1, 0.5, 0.8):
        est.set_params(threshold=t)
        by_hand = np.where(proba[:, 1] >= t, "yes", "no")
        np.testing.assert_array_equal(est.predict(X), by_hand)
        np.testing.assert_array_equal(est.decision_function(X) > 0, proba[:, 1] > t)
        np.testing.assert_allclose(est.predict_proba(X), proba)  # the threshold does not touch probabilities
    assert (est.predict(X) == "yes").sum() < (est.set_params(threshold=0.1).predict(X) == "yes").sum()
    assert all(torch.equal(a, b) for a, b in zip(weights, est.model_.parameters()))


def test_positive_class_is_classes_1_even_when_it_is_the_majority(binary_data):
    X, y = binary_data
    labels = np.where(y == 1, "a_rare", "b_common")  # sorted: classes_[1] = "b_common", the majority
    est = tiny().fit(X, labels)
    assert list(est.classes_) == ["a_rare", "b_common"]
    proba = est.predict_proba(X)
    est.set_params(threshold=0.9)
    np.testing.assert_array_equal(est.predict(X), np.where(proba[:, 1] >= 0.9, "b_common", "a_rare"))
    # omega weighs classes_[1]: a larger omega moves probability mass towards "b_common"
    low = tiny(loss_params={"omega": 0.1, "gamma": 0.0, "tau": 0.0}).fit(X, labels).predict_proba(X)[:, 1]
    high = tiny(loss_params={"omega": 0.9, "gamma": 0.0, "tau": 0.0}).fit(X, labels).predict_proba(X)[:, 1]
    assert high.mean() > low.mean() + 0.1


def test_lam_matches_a_hand_computed_forward_pass(binary_data, lct_model):
    X, _ = binary_data
    est = clone(lct_model).fit(*binary_data)  # its own copy: the dial is set below
    mean, std = X.mean(axis=0), X.std(axis=0)
    xs = torch.tensor((X - mean) / std, dtype=torch.float32)
    outs = []
    for tau in (0.0, 1.5, 3.0):
        est.set_params(lam={"tau": tau})
        z = torch.tensor([[2 * tau / 3 - 1]], dtype=torch.float32)  # tau over its support [0, 3] -> [-1, 1]
        with torch.no_grad():
            logits = est.model_(xs, z.expand(len(xs), 1)).double().numpy()
        np.testing.assert_allclose(est.predict_proba(X), _softmax(logits), atol=1e-5)
        outs.append(est.predict_proba(X)[:, 1])
    assert np.abs(outs[0] - outs[2]).max() > 1e-3  # lambda moves the scores
    np.testing.assert_array_equal(est.set_params(lam="tau=3").predict_proba(X)[:, 1], outs[2])
    # None: the mean of the training law L(0,3,0.33), density h_a + (h_b - h_a) x / 3 with h_b = 0.33
    h_a, h_b = 2 / 3 - 0.33, 0.33
    mean_tau = 3 ** 2 * (h_a / 2 + (h_b - h_a) / 3)
    np.testing.assert_allclose(est.set_params(lam=None).predict_proba(X),
                               est.set_params(lam={"tau": mean_tau}).predict_proba(X), atol=1e-6)


def test_multiclass_adjustment_is_softmax_of_shifted_logits():
    X, y = make_classification(n_samples=450, n_features=6, n_informative=4, n_classes=3, weights=[0.6, 0.3, 0.1],
                               random_state=2)
    est = tiny().fit(X, y)
    counts = np.bincount(y)
    log_pi = np.log(counts / counts.sum())
    z = est.decision_function(X)  # adjustment None = 0: the model's own logits
    np.testing.assert_allclose(est.predict_proba(X), _softmax(z), atol=1e-12)
    for t in (0.5, 1.0, 2.0):
        est.set_params(adjustment=t)
        np.testing.assert_allclose(est.predict_proba(X), _softmax(z - t * log_pi), atol=1e-12)
        np.testing.assert_array_equal(est.predict(X), np.argmax(z - t * log_pi, axis=1))
    rare = lambda t: (est.set_params(adjustment=t).predict(X) == 2).sum()  # noqa: E731
    assert rare(2.0) > rare(0.0)


# ----------------------------------------------------------------------------------------------------- pick
def test_pick_binary_matches_a_brute_force_threshold_search(binary_data):
    X, y = binary_data
    est = tiny().fit(X[:300], y[:300])
    keep = np.flatnonzero((y == 1) | (np.arange(len(y)) % 3 == 0))  # validation prevalence far above training's
    Xv, yv = X[keep[keep >= 300]], y[keep[keep >= 300]]
    s = est.predict_proba(Xv)[:, 1]
    pi = y[:300].mean()  # precision is taken at the training prevalence, as lossdial pick does
    best = None
    for t in np.unique(s):
        pred = s >= t
        tp, fp = (pred & (yv == 1)).sum(), (pred & (yv == 0)).sum()
        tpr, fpr = tp / (yv == 1).sum(), fp / (yv == 0).sum()
        if tpr < 0.8 or tp < MIN_TP:
            continue
        precision = pi * tpr / (pi * tpr + (1 - pi) * fpr)
        key = (round(precision, 12), tpr)  # equal precisions (to rounding) go to the higher recall
        if best is None or key > best[0]:
            best = (key, t)
    est.pick(Xv, yv, at="recall>=0.8")  # default objective under a recall constraint: precision
    assert est.lam is None
    assert est.threshold == pytest.approx(best[1], abs=0)
    assert est.operating_point_["objective"] == "precision"
    assert est.operating_point_["metrics"]["precision"] == pytest.approx(best[0][0])
    np.testing.assert_array_equal(est.predict(Xv), (s >= best[1]).astype(int))


def test_pick_lct_matches_a_brute_force_search_over_lambda_and_threshold(binary_data, lct_model):
    """pick(at="recall>=0.7", maximize="balanced_accuracy") over a lambda grid: the best balanced accuracy among
    every (lambda, threshold) with recall >= 0.7 and at least 5 true positives (min_tp), searched here by hand."""
    X, y = binary_data
    est = clone(lct_model).fit(X[:300], y[:300])
    Xv, yv = X[300:], y[300:]
    taus = (0.0, 1.0, 2.0, 3.0)
    scores = {t: est.set_params(lam={"tau": t}).predict_proba(Xv)[:, 1] for t in taus}
    pos, neg = yv == 1, yv == 0

    def point(s, thr):  # predict positive when s >= thr: (recall, balanced accuracy, true positives)
        tp = int((s[pos] >= thr).sum())
        tnr = float((s[neg] < thr).mean())
        return tp / pos.sum(), (tp / pos.sum() + tnr) / 2, tp

    best = max(point(s, thr)[1] for s in scores.values() for thr in np.unique(s)
               if point(s, thr)[0] >= 0.7 and point(s, thr)[2] >= 5)
    est.pick(Xv, yv, at="recall>=0.7", maximize="balanced_accuracy", lambdas="tau=0,1,2,3")
    recall, bal, _ = point(scores[est.lam["tau"]], est.threshold)
    assert recall >= 0.7 and bal == pytest.approx(best, abs=1e-12)
    assert est.operating_point_["metrics"]["balanced_accuracy"] == pytest.approx(best, abs=1e-12)
    np.testing.assert_array_equal(est.predict(Xv) == est.classes_[1], scores[est.lam["tau"]] >= est.threshold)


def test_pick_multiclass_matches_a_brute_force_search_over_t():
    X, y = make_classification(n_samples=600, n_features=6, n_informative=4, n_classes=3, weights=[0.6, 0.3, 0.1],
                               random_state=3)
    est = tiny(adjustment=0.0).fit(X[:400], y[:400])
    Xv, yv = X[400:], y[400:]
    z = est.decision_function(Xv)
    counts = np.bincount(y[:400])
    log_pi = np.log(counts / counts.sum())
    ts = (0.0, 0.5, 1.0, 1.5, 2.0)
    bal = [np.mean([(np.argmax(z - t * log_pi, axis=1)[yv == c] == c).mean() for c in range(3)]) for t in ts]
    est.pick(Xv, yv, adjustments=list(ts))
    t = ts[int(np.argmax(bal))]
    assert sorted(bal)[-1] > sorted(bal)[-2] + 1e-9  # a unique best: the expectation does not rest on tie-breaking
    assert est.adjustment == t
    np.testing.assert_array_equal(est.predict(Xv), np.argmax(z - t * log_pi, axis=1))
    assert est.operating_point_["metrics"]["balanced_accuracy"] == pytest.approx(max(bal))


def test_pick_refuses_what_cannot_be_picked(binary_data, lct_model):
    X, y = binary_data
    with pytest.raises(ValueError, match="no samples of the positive class classes_\\[1\\] = 1"):
        lct_model.pick(X[y == 0], y[y == 0], at="recall>=0.9")
    with pytest.raises(ValueError, match="maximize 'nll'.*maximize takes precision"):
        lct_model.pick(X, y, maximize="nll")
    with pytest.raises(ValueError, match="outside the training support"):
        lct_model.pick(X, y, lambdas="tau=0,5")
    with pytest.raises(NoFeasiblePoint, match="closest"):
        lct_model.pick(X, y, at="recall>=1", conservative=True)
    with pytest.raises(ValueError, match="labels \\['7'\\] that fit never saw"):
        lct_model.pick(X, np.where(y == 1, 7, 0), at="recall>=0.9")


# ------------------------------------------------------------------------------------- determinism, pickling
def test_fit_is_deterministic_and_pickles_and_clones(binary_data, lct_model):
    X, y = binary_data
    again = clone(lct_model).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), lct_model.predict_proba(X))
    restored = pickle.loads(pickle.dumps(lct_model))
    np.testing.assert_array_equal(restored.predict_proba(X), lct_model.predict_proba(X))
    fresh = clone(lct_model)
    assert not hasattr(fresh, "model_") and fresh.get_params() == lct_model.get_params()
    other = clone(lct_model).set_params(random_state=1).fit(X, y)
    assert np.abs(other.predict_proba(X) - lct_model.predict_proba(X)).max() > 1e-4


def test_sample_weight_zero_matches_dropping_rows_in_the_loss(binary_data):
    X, y = binary_data
    w = np.ones(len(y))
    w[y == 1] = 3.0
    plain = tiny(loss_params={"omega": 0.5, "gamma": 0.0, "tau": 0.0}).fit(X, y).predict_proba(X)[:, 1].mean()
    weighted = tiny(loss_params={"omega": 0.5, "gamma": 0.0, "tau": 0.0}).fit(X, y, sample_weight=w)
    assert weighted.predict_proba(X)[:, 1].mean() > plain + 0.05  # up-weighting class 1 moves its probability up
    with pytest.raises(ValueError, match="zero for every sample of class"):
        tiny().fit(X, y, sample_weight=(y == 0).astype(float))


# ----------------------------------------------------------------------------------------- composition
@pytest.fixture(scope="module")
def frame():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(n_samples=300, n_features=4, n_informative=3, n_redundant=0, weights=[0.8], random_state=4)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    df["colour"] = np.where(X[:, 0] > 0, "red", "blue")
    return df, y


def test_pipeline_with_column_transformer_on_a_dataframe(frame):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df, y = frame
    pre = ColumnTransformer([("cat", OneHotEncoder(), ["colour"])], remainder="passthrough")
    pipe = make_pipeline(pre, tiny()).fit(df, y)
    direct = tiny().fit(pre.fit_transform(df), y)
    np.testing.assert_array_equal(pipe.predict_proba(df), direct.predict_proba(pre.transform(df)))
    numeric = df.drop(columns="colour")
    est = tiny().fit(numeric, y)
    assert list(est.feature_names_in_) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="feature names"):
        est.predict(numeric[["b", "a", "c", "d"]])


def test_cross_validate_equals_a_hand_written_fold_loop(binary_data):
    from sklearn.model_selection import StratifiedKFold, cross_validate

    X, y = binary_data
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    got = cross_validate(tiny(), X, y, cv=cv, scoring="roc_auc")["test_score"]
    from sklearn.metrics import roc_auc_score

    want = [roc_auc_score(y[te], tiny().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]) for tr, te in cv.split(X, y)]
    np.testing.assert_allclose(got, want)


def test_grid_search_over_the_dial_picks_the_best_mean_score(binary_data):
    from sklearn.model_selection import GridSearchCV

    X, y = binary_data
    grid = GridSearchCV(tiny(), {"threshold": [0.2, 0.5]}, cv=2, scoring="balanced_accuracy").fit(X, y)
    scores = grid.cv_results_["mean_test_score"]
    assert grid.best_params_["threshold"] == [0.2, 0.5][int(np.argmax(scores))]
    assert grid.best_estimator_.threshold == grid.best_params_["threshold"]


def test_tuned_threshold_classifier_cv_thresholds_our_probabilities(binary_data):
    from sklearn.model_selection import TunedThresholdClassifierCV

    X, y = binary_data
    tuned = TunedThresholdClassifierCV(tiny(), scoring="balanced_accuracy", cv=2, random_state=0).fit(X, y)
    s = tuned.estimator_.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(tuned.predict(X), (s >= tuned.best_threshold_).astype(int))


def test_calibrated_classifier_cv_averages_calibrated_folds(binary_data):
    from sklearn.calibration import CalibratedClassifierCV

    X, y = binary_data
    cal = CalibratedClassifierCV(tiny(), method="sigmoid", cv=2).fit(X, y)
    by_hand = np.mean([c.predict_proba(X) for c in cal.calibrated_classifiers_], axis=0)
    np.testing.assert_allclose(cal.predict_proba(X), by_hand)
    assert all(isinstance(c.estimator, LossDialClassifier) for c in cal.calibrated_classifiers_)


# ------------------------------------------------------------------------------------------- bad input
def test_non_numeric_columns_are_refused_naming_them(frame):
    df, y = frame
    with pytest.raises(ValueError, match=r"column\(s\) \['colour'\] are not numeric.*OneHotEncoder"):
        tiny().fit(df, y)
    fitted = tiny(epochs=1).fit(df.drop(columns="colour"), y)
    with pytest.raises(ValueError, match=r"column\(s\) \['a'\] are not numeric"):
        fitted.predict(df.drop(columns="colour").astype({"a": str}))
    with pytest.raises(ValueError, match="X is an array of strings"):
        tiny().fit(df.to_numpy().astype(str), y)


def test_bad_input_errors(binary_data, lct_model):
    X, y = binary_data
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        tiny().fit(Xn, y)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        lct_model.predict(Xn)
    with pytest.raises(ValueError, match="only one class: 0"):
        tiny().fit(X, np.zeros(len(y), dtype=int))
    with pytest.raises(ValueError, match=r"lam is outside the trained support: tau=4 is outside .*\[0, 3\]"):
        lct_model.set_params(lam={"tau": 4.0}).predict(X)
    with pytest.raises(ValueError, match=r"lam names \['gamma'\].*trained over \['tau'\]"):
        lct_model.set_params(lam={"gamma": 0.1}).predict(X)
    lct_model.set_params(lam=None)
    with pytest.raises(ValueError, match="lam=.*applies to a model trained with lct"):
        tiny(epochs=1).fit(X, y).set_params(lam={"tau": 1.0}).predict(X)
    with pytest.raises(ValueError, match="adjustment .* applies to multi-class tasks"):
        tiny(epochs=1, adjustment=1.0).fit(X, y).predict(X)
    with pytest.raises(ValueError, match=r"threshold is a probability of classes_\[1\] in \[0, 1\]"):
        tiny(epochs=1, threshold=1.5).fit(X, y).predict(X)
    with pytest.raises(ValueError, match="loss_params.omega: 1.5 is not allowed"):
        tiny(loss_params={"omega": 1.5}).fit(X, y)
    with pytest.raises(ValueError, match="lct.omega: .*reaches 1.5"):
        tiny(lct="omega~U(0,1.5)").fit(X, y)
    with pytest.raises(ValueError, match="learning_rate"):
        tiny(learning_rate=-1.0).fit(X, y)


def test_verbose_prints_progress_and_is_silent_by_default(binary_data, capsys):
    X, y = binary_data
    tiny(epochs=2).fit(X, y)
    assert capsys.readouterr().out == ""
    tiny(epochs=2, verbose=1).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[LossDialClassifier] epoch 1/2", "[LossDialClassifier] epoch 2/2"]


def test_loss_parts_sample_weight_is_a_weighted_mean_of_the_per_row_losses():
    """VS at omega 0.5, gamma = tau = 0 is plain cross-entropy: with row weights s it is sum s_i ce_i / sum s_i."""
    from lossdial.losses import build_loss
    from lossdial.train.distributed import loss_parts

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(9, 2, generator=g), torch.tensor([0, 1, 1, 0, 0, 1, 0, 0, 1])
    s = torch.tensor([1.0, 2.0, 0.0, 0.5, 3.0, 1.0, 1.0, 0.0, 4.0])
    ce = -torch.log_softmax(logits, 1)[torch.arange(9), y]
    num, den = loss_parts(build_loss("vs", [5, 4], omega=0.5, gamma=0.0, tau=0.0), logits, y, None, s)
    torch.testing.assert_close(num / den, (s * ce).sum() / s.sum())


def test_lam_names_left_out_take_their_law_mean(binary_data):
    X, y = binary_data
    est = tiny(epochs=1, lct="tau~U(0,3) gamma~U(0,0.3)", film_hidden=8).fit(X, y)
    np.testing.assert_array_equal(est.set_params(lam={"tau": 1.0}).predict_proba(X),
                                  est.set_params(lam={"tau": 1.0, "gamma": 0.15}).predict_proba(X))
    assert np.abs(est.predict_proba(X) - est.set_params(lam={"tau": 1.0, "gamma": 0.0}).predict_proba(X)).max() > 0


# ------------------------------------------------------------------------------ the Simplifying ingredients
def _nt_xent_np(a, b, t):
    """SimCLR's NT-Xent over the 2B rows of [a; b], by hand in NumPy (float64)."""
    u = np.concatenate([a, b])
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        s = {j: float(u[i] @ u[j]) / t for j in range(2 * n) if j != i}
        total += -s[(i + n) % (2 * n)] + np.log(sum(np.exp(v) for v in s.values()))
    return total / (2 * n)


def test_ssl_and_smoothing_objective_is_smoothed_ce_plus_mu_nt_xent_by_hand(monkeypatch):
    """Each step's loss equals the class-conditionally smoothed, logit-adjusted CE of the batch's rows plus
    mu * NT-Xent of the projected features of the rows and of their SCARF corruptions (values drawn from every
    training row, not only the batch's)."""
    import copy

    import lossdial.train.simplifying as simplifying

    X, y = make_classification(n_samples=24, n_features=5, n_informative=3, weights=[0.75], random_state=2)
    seen = []
    real = simplifying.joint_ssl_forward

    def spy(model, projector, x, x2, z, supervised="first"):
        seen.append(dict(model=copy.deepcopy(model.state_dict()), proj=copy.deepcopy(projector.state_dict()),
                         x=x.detach().numpy().astype(np.float64), x2=x2.detach().numpy().astype(np.float64)))
        return real(model, projector, x, x2, z, supervised)

    monkeypatch.setattr(simplifying, "joint_ssl_forward", spy)
    est = LossDialClassifier(hidden=(6,), loss="logit_adjust", loss_params={"tau": 1.0}, smoothing_a_max=0.2,
                             ssl_weight=0.7, ssl_temperature=0.3, ssl_corruption=0.4, epochs=1, batch_size=12,
                             random_state=0).fit(X, y)
    assert len(seen) == 2
    xs = (X - X.mean(axis=0)) / X.std(axis=0)  # the rows, standardised by hand
    counts = np.bincount(y)
    a = np.where(counts == counts.min(), 0.2, 0.0)  # two classes: the rarer a_max, the other a_min = 0
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    losses, outside = [], 0
    for step in seen:
        x, x2 = step["x"], step["x2"]
        order = [int(np.argmin(np.abs(xs - r).sum(axis=1))) for r in x]  # which rows the batch holds
        assert len(set(order)) == 12 and np.allclose(x, xs[order], atol=1e-5)
        # second view: round(0.4 * 5) = 2 features per row, each a value of the same column of a training row
        changed = ~np.isclose(x2, x)
        assert (changed.sum(axis=1) <= 2).all() and changed.sum() > 12
        assert all(np.isclose(x2[i, j], xs[:, j]).any() for i in range(12) for j in range(5))
        outside += sum(not np.isclose(x2[i, j], x[:, j]).any() for i in range(12) for j in range(5))
        w = {k: v.numpy().astype(np.float64) for k, v in step["model"].items()}
        p = {k: v.numpy().astype(np.float64) for k, v in step["proj"].items()}
        f1 = relu(x @ w["backbone.net.1.weight"].T + w["backbone.net.1.bias"])
        f2 = relu(x2 @ w["backbone.net.1.weight"].T + w["backbone.net.1.bias"])
        z = f1 @ w["fc.weight"].T + w["fc.bias"] + np.log(counts / counts.sum())  # logit adjustment, tau = 1
        logp = z - z.max(axis=1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
        yb = y[order]
        q = (1 - a[yb])[:, None] * np.eye(2)[yb] + a[yb][:, None] / 2
        sup = float(-(q * logp).sum(axis=1).mean())
        h = lambda f: relu(f @ p["net.0.weight"].T + p["net.0.bias"]) @ p["net.2.weight"].T + p["net.2.bias"]  # noqa
        assert p["net.0.weight"].shape == (256, 6) and p["net.2.weight"].shape == (128, 256)  # SCARF-sized head
        losses.append(sup + 0.7 * _nt_xent_np(h(f1), h(f2), 0.3))
    assert outside > 0  # donors come from the whole table, not just the batch
    assert est.loss_curve_[0] == pytest.approx(np.mean(losses), rel=1e-5)


def test_ssl_and_smoothing_parameters_are_validated_at_fit_naming_them(binary_data):
    X, y = binary_data
    for kw, text in ((dict(ssl_corruption=0.3), "ssl_corruption apply to Joint-SSL, which is off"),
                     (dict(ssl_temperature=0.1), "ssl_temperature apply to Joint-SSL"),
                     (dict(ssl_weight=1.0, ssl_corruption=1.0), r"ssl_corruption: must be a fraction in \(0, 1\)"),
                     (dict(ssl_weight=0.0), "ssl_weight: must be > 0"),
                     (dict(ssl_weight=1.0, ssl_temperature=0), "ssl_temperature"),
                     (dict(smoothing_a_min=0.1), "smoothing_a_min=0.1 applies with smoothing_a_max"),
                     (dict(smoothing_a_max=1.0), r"smoothing_a_max: must be in \[0, 1\)"),
                     (dict(smoothing_a_max=0.1, smoothing_a_min=0.2), r"smoothing_a_min: must be in \[0, a_max\]"),
                     (dict(smoothing_a_max=0.1, loss="smoothing"), "already is class-conditional smoothing")):
        est = tiny(**kw)
        assert est.get_params()[next(iter(kw))] == next(iter(kw.values()))  # stored untouched
        with pytest.raises(ValueError, match=text):
            est.fit(X, y)


def test_ssl_fit_is_deterministic_and_leaves_the_global_rng_alone(binary_data):
    X, y = binary_data
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    a = tiny(ssl_weight=1.0, smoothing_a_max=0.2).fit(X, y)
    after = torch.rand(3)
    b = tiny(ssl_weight=1.0, smoothing_a_max=0.2).fit(X, y)
    assert torch.equal(before, after)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), tiny().fit(X, y).predict_proba(X))
