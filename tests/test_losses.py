"""lossdial.losses: every family against its formula computed by hand with NumPy / math (not the library's
code path), the per-sample lambda contract, the reduction contract, input validation, dtype/device."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossdial.losses import (
    LOSSES,
    ClassConditionalSmoothingLoss,
    FocalLoss,
    ImbalanceLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    VSLoss,
    WeightedCrossEntropy,
    build_loss,
    effective_number_weights,
    inverse_frequency_weights,
    posthoc_logit_adjust,
)

# small fixed problems (float64 so hand-computed values can be compared tightly)
Z2 = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-1.2, 2.0], [0.0, 0.1], [2.5, -1.0], [-0.7, -0.2]], dtype=torch.float64)
Y2 = torch.tensor([0, 1, 1, 0, 1, 0])
N2 = [5000, 50]

Z3 = torch.tensor(
    [[1.0, -0.5, 0.2], [0.3, 0.8, -1.1], [-1.2, 2.0, 0.4], [0.0, 0.1, 0.9], [2.5, -1.0, -0.3]], dtype=torch.float64
)
Y3 = torch.tensor([0, 1, 2, 2, 1])
N3 = [1000, 100, 10]


# ---- hand-computation helpers (NumPy, independent of the library) ---------------------------------------
def np_log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


def vs_by_hand(z, y, counts, gamma, tau, class_w):
    """Per-sample (w_i, l_i) of VS: CE on (n_c/n_max)^gamma z_c + tau log pi_c, weights class_w[y]."""
    z, y, n = np.asarray(z, float), np.asarray(y), np.asarray(counts, float)
    zp = (n / n.max()) ** gamma * z + tau * np.log(n / n.sum())
    l = -np_log_softmax(zp)[np.arange(len(y)), y]
    return np.asarray(class_w, float)[y], l


def inverse_frequency_weights_by_hand(counts):
    """w_c = (1 / n_c) normalised to mean 1."""
    inv = 1.0 / np.asarray(counts, float)
    return inv / inv.mean()


def reduce_by_hand(w, l):
    return {"none": w * l, "sum": (w * l).sum(), "mean": (w * l).sum() / w.sum()}


def focal_reduce_by_hand(w, l):
    """Focal's reductions: "mean" is the plain mean over samples, "weighted_mean" divides by sum alpha_t."""
    return {"none": w * l, "sum": (w * l).sum(), "mean": (w * l).sum() / len(l),
            "weighted_mean": (w * l).sum() / w.sum()}


def assert_close(got, want, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(torch.as_tensor(got).detach(), dtype=float), want, rtol=rtol, atol=atol)


# ---- VS -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("omega,gamma,tau", [(0.5, 0.0, 0.0), (0.7, 0.2, 2.0), (0.3, 0.3, 1.0), (0.9, -0.1, 0.5)])
def test_vs_binary_closed_form(omega, gamma, tau):
    n0, n1 = N2
    beta = n0 / n1
    w, l = [], []
    for (z0, z1), y in zip(Z2.tolist(), Y2.tolist()):
        s = z1 * beta ** (-gamma) - z0 - tau * math.log(beta)
        l.append(softplus(-s) if y == 1 else softplus(s))
        w.append(omega if y == 1 else 1 - omega)
    w, l = np.array(w), np.array(l)
    for reduction, want in reduce_by_hand(w, l).items():
        got = VSLoss(N2, omega=omega, gamma=gamma, tau=tau, reduction=reduction)(Z2, Y2)
        assert_close(got, want)


def test_vs_positive_index_zero_puts_omega_on_class_zero():
    counts = [50, 5000]  # class 0 is the minority
    w_hand, l_hand = vs_by_hand(Z2, Y2, counts, 0.2, 1.5, [0.8, 0.2])
    got = VSLoss(counts, omega=0.8, gamma=0.2, tau=1.5, positive_index=0, reduction="none")(Z2, Y2)
    assert_close(got, w_hand * l_hand)


def test_vs_plain_ce_and_logit_adjust_special_cases():
    ce = VSLoss(N2)(Z2, Y2)  # omega defaults to 0.5, gamma = tau = 0
    assert_close(ce, float(F.cross_entropy(Z2, Y2)), rtol=1e-14)
    assert VSLoss(N2).omega == 0.5
    for reduction in ("mean", "sum", "none"):
        la = LogitAdjustedLoss(N3, tau=1.3, reduction=reduction)(Z3, Y3)
        vs = VSLoss(N3, gamma=0.0, tau=1.3, class_weights=[1, 1, 1], reduction=reduction)(Z3, Y3)
        assert_close(la, vs.detach().numpy(), rtol=1e-13)
    # binary: LA (unweighted) = VS(gamma=0, omega=0.5) under the mean (weights 1/2 cancel)
    assert_close(LogitAdjustedLoss(N2, tau=1.3)(Z2, Y2), float(VSLoss(N2, tau=1.3)(Z2, Y2)), rtol=1e-13)


# the per-class weights of N3 = [1000, 100, 10], written out by hand
INV_N3 = np.array([1.0, 10.0, 100.0]) / 37.0  # (1/n_c) / mean_c(1/n_c) = [1, 10, 100] * 3 / 111
_EFF = np.array([1 / (1 - 0.9999**1000), 1 / (1 - 0.9999**100), 1 / (1 - 0.9999**10)])
EFF_N3 = _EFF * 3 / _EFF.sum()  # Cui et al.: w_c ∝ (1 - beta) / (1 - beta^n_c), beta = 0.9999, mean 1


def test_vs_multiclass_weightings_on_a_closed_form_batch():
    """Zero logits, gamma = 0, tau = 1: z' = log pi, so l_i = -log pi_{y_i} exactly (sum_c pi_c = 1)."""
    pi = np.array([1000, 100, 10]) / 1110
    y = torch.tensor([0, 1, 2, 2])
    z = torch.zeros(4, 3, dtype=torch.float64)
    l = -np.log(pi[[0, 1, 2, 2]])  # [0.1044, 2.4069, 4.7095, 4.7095]
    cases = {"none": np.ones(3), "inverse_frequency": INV_N3, "effective_number": EFF_N3,
             "explicit": np.array([2.0, 1.0, 0.5])}
    for name, cw in cases.items():
        spec = [2.0, 1.0, 0.5] if name == "explicit" else name
        loss = VSLoss(N3, gamma=0.0, tau=1.0, class_weights=spec).double()
        w = cw[[0, 1, 2, 2]]
        assert_close(loss(z, y), (w * l).sum() / w.sum(), rtol=1e-12)
    # by the numbers: no weights is the plain mean; inverse frequency pulls it towards the rare class's loss
    assert_close(VSLoss(N3, tau=1.0).double()(z, y), (0.1044 + 2.4069 + 4.7095 * 2) / 4, rtol=1e-4)
    assert_close(VSLoss(N3, tau=1.0, class_weights="inverse_frequency").double()(z, y),
                 (1 * 0.1044 + 10 * 2.4069 + 200 * 4.7095) / 211, rtol=1e-4)


@pytest.mark.parametrize("spec,want", [(None, np.ones(3)), ("none", np.ones(3)), ("inverse_frequency", INV_N3),
                                       ("effective_number", EFF_N3), ([1.0, 2.0, 0.5], np.array([1.0, 2.0, 0.5]))])
def test_vs_multiclass_class_weights_by_hand(spec, want):
    loss = VSLoss(N3, gamma=0.25, tau=0.7, class_weights=spec).double()
    if spec not in (None, "none"):
        assert_close(loss.class_weights, want, rtol=1e-12)
    w, l = vs_by_hand(Z3, Y3, N3, 0.25, 0.7, want)
    for reduction, value in reduce_by_hand(w, l).items():
        loss.reduction = reduction
        assert_close(loss(Z3, Y3), value, rtol=1e-10)
    assert_close(inverse_frequency_weights(N3), INV_N3, rtol=1e-14)
    assert_close(effective_number_weights(N3, 0.9999), EFF_N3, rtol=1e-10)


def test_vs_class_weight_options_validate():
    beta = 0.99
    eff = np.array([1 / (1 - beta**1000), 1 / (1 - beta**100), 1 / (1 - beta**10)])
    loss = VSLoss(N3, class_weights="effective_number", beta_eff=beta).double()
    assert_close(loss.class_weights, eff * 3 / eff.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="beta_eff applies only to class_weights: effective_number"):
        VSLoss(N3, class_weights="inverse_frequency", beta_eff=0.99)
    with pytest.raises(ValueError, match="one of.*none.*inverse_frequency.*effective_number"):
        VSLoss(N3, class_weights="inverse")
    with pytest.raises(ValueError, match="positive"):
        VSLoss(N3, class_weights=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="2 entries but there are 3 classes"):
        VSLoss(N3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="binary VSLoss is weighted by omega"):
        VSLoss(N2, class_weights="inverse_frequency")
    assert VSLoss(N2, class_weights="none").omega == 0.5  # binary keeps Omega


def test_vs_multiclass_explicit_class_weights():
    cw = [1.0, 2.0, 0.5]
    w, l = vs_by_hand(Z3, Y3, N3, 0.1, 2.0, cw)
    for reduction, want in reduce_by_hand(w, l).items():
        got = VSLoss(N3, gamma=0.1, tau=2.0, class_weights=cw, reduction=reduction).double()(Z3, Y3)
        assert_close(got, want, rtol=1e-12)


def test_vs_adjusted_logits_training_only_helper():
    loss = VSLoss(N2, gamma=0.2, tau=1.0).double()
    n = np.array(N2, float)
    want = (n / n.max()) ** 0.2 * Z2.numpy() + np.log(n / n.sum())
    assert_close(loss.adjusted_logits(Z2), want, rtol=1e-12)


# ---- per-sample lambda: "none" equals the per-batch call sample by sample --------------------------------
PER_SAMPLE_CASES = [
    ("vs", N2, {"gamma": 0.1, "tau": 1.0}, "omega", [0.1, 0.5, 0.9, 0.3, 0.6, 0.75]),
    ("vs", N2, {"omega": 0.6}, "gamma", [0.0, 0.1, 0.2, 0.3, -0.1, 0.05]),
    ("vs", N2, {"omega": 0.6}, "tau", [0.0, 1.0, 2.0, 3.0, 0.5, 4.0]),
    ("vs", N3, {}, "tau", [0.0, 1.0, 2.0, 3.0, 0.5]),
    ("focal", N2, {"phi": 2.0}, "alpha", [0.25, 0.5, 0.75, 0.1, 1.0, 0.0]),
    ("focal", N2, {"alpha": 0.7}, "phi", [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]),
    ("focal", N3, {}, "phi", [0.0, 0.5, 1.0, 2.0, 3.0]),
    ("ldam", N2, {}, "max_margin", [0.0, 0.1, 0.5, 1.0, 0.3, 0.2]),
    ("ldam", N3, {}, "scale", [1.0, 5.0, 10.0, 30.0, 2.0]),
    ("smoothing", N2, {"a_min": 0.0}, "a_max", [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]),
    ("smoothing", N3, {"a_max": 0.5}, "a_min", [0.0, 0.1, 0.2, 0.3, 0.5]),
    ("logit_adjust", N3, {}, "tau", [0.0, 1.0, 2.0, -1.0, 0.5]),
]


@pytest.mark.parametrize("family,counts,fixed,name,values", PER_SAMPLE_CASES)
def test_per_sample_lambda_equals_per_batch_sample_by_sample(family, counts, fixed, name, values):
    z, y = (Z2, Y2) if len(counts) == 2 else (Z3, Y3)
    loss = build_loss(family, counts, reduction="none", **fixed).double()
    lam_vec = torch.tensor(values, dtype=torch.float32)  # CPU float32 values, float64 logits: cast inside
    per_sample = loss(z, y, lam={name: lam_vec})
    assert per_sample.shape == (len(y),) and per_sample.dtype == torch.float64
    for i, v in enumerate(values):
        one = loss(z, y, lam={name: float(np.float32(v))})
        assert_close(per_sample[i], float(one[i]), rtol=1e-12)


def test_vs_per_sample_mean_is_weighted_by_each_samples_own_omega():
    omegas = np.array([0.1, 0.5, 0.9, 0.3, 0.6, 0.75])
    taus = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 4.0])
    n0, n1 = N2
    w, l = [], []
    for (z0, z1), yi, om, ta in zip(Z2.tolist(), Y2.tolist(), omegas, taus):
        s = z1 * (n0 / n1) ** (-0.2) - z0 - ta * math.log(n0 / n1)
        l.append(softplus(-s) if yi == 1 else softplus(s))
        w.append(om if yi == 1 else 1 - om)
    w, l = np.array(w), np.array(l)
    lam = {"omega": torch.tensor(omegas), "tau": torch.tensor(taus)}
    for reduction, want in reduce_by_hand(w, l).items():
        got = VSLoss(N2, gamma=0.2, reduction=reduction)(Z2, Y2, lam=lam)
        assert_close(got, want, rtol=1e-12)


def test_lambda_scalar_forms_agree_and_override_only_for_the_call():
    loss = VSLoss(N2, gamma=0.2, tau=1.0)
    want = float(VSLoss(N2, gamma=0.2, tau=2.5)(Z2, Y2))
    forms = [2.5, 2, np.float64(2.5), torch.tensor(2.5), torch.tensor([2.5]), torch.tensor(2.5, dtype=torch.float16)]
    for tau in forms:
        t = 2.0 if isinstance(tau, int) else 2.5
        expect = want if t == 2.5 else float(VSLoss(N2, gamma=0.2, tau=2.0)(Z2, Y2))
        assert_close(loss(Z2, Y2, lam={"tau": tau}), expect, rtol=1e-12)
    assert loss.tau == 1.0  # fixed value untouched
    assert_close(loss(Z2, Y2, lam={}), float(loss(Z2, Y2)), rtol=0)


# ---- logit adjustment ------------------------------------------------------------------------------------
def test_logit_adjusted_loss_by_hand_and_posthoc():
    n = np.array(N3, float)
    zp = Z3.numpy() + 1.0 * np.log(n / n.sum())
    l = -np_log_softmax(zp)[np.arange(5), Y3.numpy()]
    assert_close(LogitAdjustedLoss(N3).double()(Z3, Y3), l.mean(), rtol=1e-12)
    assert_close(LogitAdjustedLoss(N3, reduction="sum").double()(Z3, Y3), l.sum(), rtol=1e-12)
    adj = posthoc_logit_adjust(Z3, N3, tau=0.5)
    assert adj.dtype == torch.float64 and adj.shape == Z3.shape
    assert_close(adj, Z3.numpy() - 0.5 * np.log(n / n.sum()), rtol=1e-14)
    # tau per sample as a column
    taus = torch.tensor([[0.0], [1.0], [2.0], [0.5], [1.5]], dtype=torch.float64)
    assert_close(posthoc_logit_adjust(Z3, N3, tau=taus), Z3.numpy() - taus.numpy() * np.log(n / n.sum()))
    with pytest.raises(ValueError, match="class"):
        posthoc_logit_adjust(Z3, N2)


# ---- weighted cross-entropy ------------------------------------------------------------------------------
def test_weighted_ce_inverse_and_effective_weights():
    n = np.array(N3, float)
    inv = (1 / n) / (1 / n).mean()
    beta = 0.99
    eff = (1 - beta) / (1 - beta**n)
    eff = eff / eff.mean()
    assert_close(WeightedCrossEntropy(N3).class_weights, inv, rtol=1e-6)
    assert_close(WeightedCrossEntropy(N3, weighting="effective", beta_eff=beta).class_weights, eff, rtol=1e-6)
    assert_close(effective_number_weights(N3, beta), eff, rtol=1e-12)
    assert_close(WeightedCrossEntropy(N3, weighting="none").class_weights, np.ones(3), rtol=0)
    assert_close(effective_number_weights(N3, 0.0), np.ones(3), rtol=0)

    l = -np_log_softmax(Z3.numpy())[np.arange(5), Y3.numpy()]
    for weighting, cw in (("inverse", inv), ("effective", eff), ("none", np.ones(3))):
        for reduction, want in reduce_by_hand(cw[Y3.numpy()], l).items():
            loss = WeightedCrossEntropy(N3, weighting=weighting, beta_eff=beta, reduction=reduction).double()
            assert_close(loss(Z3, Y3), want, rtol=1e-12)
    # PyTorch weight= semantics under the mean
    loss = WeightedCrossEntropy(N3).double()
    assert_close(loss(Z3, Y3), float(F.cross_entropy(Z3, Y3, weight=loss.class_weights)), rtol=1e-13)
    assert WeightedCrossEntropy.hparam_names == ()
    with pytest.raises(KeyError, match="takes no lambda"):
        loss(Z3, Y3, lam={"tau": 1.0})
    with pytest.raises(ValueError, match="weighting"):
        WeightedCrossEntropy(N3, weighting="sqrt")
    with pytest.raises(ValueError, match="beta_eff"):
        WeightedCrossEntropy(N3, weighting="effective", beta_eff=1.0)


# ---- focal -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha,phi", [(0.5, 2.0), (0.25, 2.0), (0.75, 0.5), (0.9, 3.0)])
def test_focal_binary_by_hand(alpha, phi):
    logp = np_log_softmax(Z2.numpy())[np.arange(6), Y2.numpy()]
    l = (1 - np.exp(logp)) ** phi * (-logp)
    w = np.where(Y2.numpy() == 1, alpha, 1 - alpha)
    for reduction, want in focal_reduce_by_hand(w, l).items():
        assert_close(FocalLoss(N2, alpha=alpha, phi=phi, reduction=reduction)(Z2, Y2), want, rtol=1e-10)


def test_focal_multiclass_by_hand():
    logp = np_log_softmax(Z3.numpy())[np.arange(5), Y3.numpy()]
    l = (1 - np.exp(logp)) ** 1.5 * (-logp)
    a = np.array([0.2, 1.0, 3.0])
    for reduction, want in focal_reduce_by_hand(a[Y3.numpy()], l).items():
        got = FocalLoss(N3, alpha=a.tolist(), phi=1.5, reduction=reduction).double()(Z3, Y3)
        assert_close(got, want, rtol=1e-10)
    assert_close(FocalLoss(N3, phi=1.5).double()(Z3, Y3), l.mean(), rtol=1e-10)  # alpha None: all 1


def test_focal_phi_zero_is_weighted_ce_exactly():
    for reduction in ("weighted_mean", "sum", "none"):
        focal = FocalLoss(N2, alpha=0.8, phi=0.0, reduction=reduction)(Z2, Y2)
        wce = VSLoss(N2, omega=0.8, reduction="mean" if reduction == "weighted_mean" else reduction)(Z2, Y2)
        torch.testing.assert_close(focal, wce, rtol=1e-15, atol=0)
        # phi = 0 given as a tensor through lam takes the pow path: still exact
        via_lam = FocalLoss(N2, alpha=0.8, reduction=reduction)(Z2, Y2, lam={"phi": torch.zeros(6)})
        torch.testing.assert_close(via_lam, wce, rtol=1e-15, atol=0)
    w = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    assert_close(
        FocalLoss(N3, alpha=w.tolist(), phi=0.0, reduction="weighted_mean").double()(Z3, Y3),
        float(F.cross_entropy(Z3, Y3, weight=w)),
        rtol=1e-14,
    )


def test_focal_plain_mean_on_a_known_batch():
    """alpha = 0.25, phi = 2; p_t chosen as 1/2 and 3/4: FL_i = alpha_t (1 - p_t)^2 (-ln p_t)."""
    ln3 = math.log(3.0)
    z = torch.tensor([[0.0, 0.0], [0.0, ln3], [ln3, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0])
    # sample 0: negative, p_t = 1/2, alpha_t = 0.75; sample 1: positive, p_t = 3/4, alpha_t = 0.25;
    # sample 2: negative, p_t = 3/4, alpha_t = 0.75
    fl = [0.75 * 0.5**2 * math.log(2.0), 0.25 * 0.25**2 * math.log(4 / 3), 0.75 * 0.25**2 * math.log(4 / 3)]
    assert fl[0] == pytest.approx(0.129965, abs=1e-6)
    loss = FocalLoss(N2, alpha=0.25, phi=2.0).double()  # default reduction: the plain mean
    assert loss.reduction == "mean"
    assert_close(loss(z, y), sum(fl) / 3, rtol=1e-12)
    assert_close(loss(z, y), 0.0493150, rtol=1e-5)
    weighted = FocalLoss(N2, alpha=0.25, phi=2.0, reduction="weighted_mean").double()
    assert_close(weighted(z, y), sum(fl) / (0.75 + 0.25 + 0.75), rtol=1e-12)
    # a batch without positives: the plain mean still scales with 1 - alpha; the weighted mean drops alpha
    neg = [0, 2]
    for alpha in (0.25, 0.6):
        want = (1 - alpha) * (0.5**2 * math.log(2.0) + 0.25**2 * math.log(4 / 3)) / 2
        assert_close(FocalLoss(N2, alpha=alpha).double()(z[neg], y[neg]), want, rtol=1e-12)
        assert_close(FocalLoss(N2, alpha=alpha, reduction="weighted_mean").double()(z[neg], y[neg]),
                     (0.5**2 * math.log(2.0) + 0.25**2 * math.log(4 / 3)) / 2, rtol=1e-12)
    # per-sample alpha (LCT): the plain mean divides by B whatever the draws
    lam = {"alpha": torch.tensor([0.1, 0.9, 0.5], dtype=torch.float64)}
    want = (0.9 * 0.5**2 * math.log(2.0) + 0.9 * 0.25**2 * math.log(4 / 3) + 0.5 * 0.25**2 * math.log(4 / 3)) / 3
    assert_close(loss(z, y, lam=lam), want, rtol=1e-12)
    # multi-class softmax form: zero logits give p_t = 1/3, so FL_i = alpha_{y_i} (2/3)^phi ln 3
    z3, y3 = torch.zeros(3, 3, dtype=torch.float64), torch.tensor([0, 2, 2])
    a = [0.5, 1.0, 2.0]
    got = FocalLoss(N3, alpha=a, phi=2.0).double()(z3, y3)
    assert_close(got, (0.5 + 2.0 + 2.0) * (4 / 9) * ln3 / 3, rtol=1e-12)
    got = FocalLoss(N3, alpha=a, phi=2.0, reduction="weighted_mean").double()(z3, y3)
    assert_close(got, (4 / 9) * ln3, rtol=1e-12)
    with pytest.raises(ValueError, match="weighted_mean"):
        FocalLoss(N2, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        VSLoss(N2, reduction="weighted_mean")  # only focal has two means


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("phi", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_finite_when_p_t_is_one(dtype, phi):
    z = torch.tensor([[80.0, -80.0], [-80.0, 80.0], [0.2, 0.1]], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 0])
    loss = FocalLoss(N2, alpha=0.6).to(dtype)(z, y, lam={"phi": torch.full((3,), phi)})
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert z.grad[:2].abs().max() < 1e-20  # confident rows contribute (essentially) nothing
    assert z.grad[2].abs().sum() > 0


# ---- LDAM ------------------------------------------------------------------------------------------------
def test_ldam_margins():
    counts = [5000, 2000, 500, 50]
    loss = LDAMLoss(counts)
    m = loss.margins().double().numpy()
    assert m.max() == pytest.approx(0.5)
    assert m.argmax() == 3
    assert_close(m * np.array(counts, float) ** 0.25, np.full(4, 0.5 * 50**0.25), rtol=1e-6)
    assert_close(LDAMLoss(counts, max_margin=1.2).margins().max(), 1.2, rtol=1e-6)


def ldam_by_hand(z, y, counts, max_margin, scale):
    n = np.asarray(counts, float)
    m = n**-0.25
    m = max_margin * m / m.max()
    zz = np.array(z, float)
    zz[np.arange(len(y)), y] -= m[y]
    return -np_log_softmax(scale * zz)[np.arange(len(y)), y]


def test_ldam_by_hand_and_drw_switch():
    l = ldam_by_hand(Z3.numpy(), Y3.numpy(), N3, 0.5, 30.0)
    loss = LDAMLoss(N3, drw_epoch=3, drw_beta=0.999).double()
    assert_close(loss(Z3, Y3), l.mean(), rtol=1e-10)
    for epoch in (0, 1, 2):
        loss.set_epoch(epoch)
        assert not loss.drw_active
        assert_close(loss.current_class_weights(), np.ones(3), rtol=0)
        assert_close(loss(Z3, Y3), l.mean(), rtol=1e-10)
    n = np.array(N3, float)
    eff = (1 - 0.999) / (1 - 0.999**n)
    eff = eff / eff.mean()
    for epoch in (3, 10):
        loss.set_epoch(epoch)
        assert loss.drw_active
        assert_close(loss.current_class_weights(), eff, rtol=1e-12)
        w = eff[Y3.numpy()]
        assert_close(loss(Z3, Y3), (w * l).sum() / w.sum(), rtol=1e-10)
    # never switches without drw_epoch; class_weights apply before DRW
    plain = LDAMLoss(N3, class_weights=[1.0, 2.0, 4.0]).double()
    plain.set_epoch(1000)
    w = np.array([1.0, 2.0, 4.0])[Y3.numpy()]
    assert_close(plain(Z3, Y3), (w * l).sum() / w.sum(), rtol=1e-10)
    with pytest.raises(ValueError, match="epoch"):
        loss.set_epoch(-1)


def test_ldam_on_a_cosine_head_by_hand():
    """Cao et al.'s LDAM: s * (cos - m onehot) with unit-norm features and weight rows; here by hand."""
    from lossdial.models import ConditionedClassifier

    counts = [10000, 625]  # margins: 0.5 * (n_c / 625)^(-1/4) = [0.25, 0.5]
    model = ConditionedClassifier(torch.nn.Identity(), 2, 2, head="cosine", head_scale=30.0).double()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))  # rows normalise to e_0, e_1
    f = torch.tensor([[3.0, 4.0], [-5.0, 12.0]], dtype=torch.float64)  # unit: [0.6, 0.8], [-5/13, 12/13]
    y = torch.tensor([1, 0])
    logits = model(f)
    assert_close(logits, [[18.0, 24.0], [-150 / 13, 360 / 13]], rtol=1e-12)  # 30 * cosines
    loss = LDAMLoss(counts, max_margin=0.5, scale=30.0, logit_scale=30.0, reduction="none").double()
    # sample 0 (y = 1): 30 * (0.6, 0.8 - 0.5) = (18, 9) -> -log softmax[1] = log(1 + e^9)
    # sample 1 (y = 0): 30 * (-5/13 - 0.25, 12/13) -> log(1 + e^(30 * (12/13 + 5/13 + 0.25)))
    want = [math.log1p(math.exp(9.0)), math.log1p(math.exp(30 * (17 / 13 + 0.25)))]
    assert_close(loss(logits, y), want, rtol=1e-12)
    assert want[0] == pytest.approx(9.0001234, abs=1e-7)
    # a lambda over scale acts on the cosines too: s' (cos - m onehot)
    got = loss(logits, y, lam={"scale": 10.0})
    assert_close(got, [math.log1p(math.exp(10 * (0.6 - 0.3))), math.log1p(math.exp(10 * (17 / 13 + 0.25)))],
                 rtol=1e-12)
    # the raw-logit form (linear head, logit_scale 1) on the same logits sees a gap of 30 * (24 - 18 - 0.5)
    raw = LDAMLoss(counts, reduction="none").double()(logits, y)
    assert_close(raw[0], math.log1p(math.exp(-30 * 5.5)), rtol=1e-6)
    with pytest.raises(ValueError, match="logit_scale"):
        LDAMLoss(counts, logit_scale=0.0)


def test_ldam_lambda_scale_and_margin_by_hand():
    loss = LDAMLoss(N2, reduction="none").double()
    got = loss(Z2, Y2, lam={"max_margin": 0.2, "scale": 4.0})
    assert_close(got, ldam_by_hand(Z2.numpy(), Y2.numpy(), N2, 0.2, 4.0), rtol=1e-12)


# ---- class-conditional smoothing ------------------------------------------------------------------------
def test_smoothing_per_class_amounts():
    counts = [1000, 10, 100, 1000]
    loss = ClassConditionalSmoothingLoss(counts, a_max=0.3, a_min=0.05)
    a = loss.smoothing().double().numpy()
    assert a[1] == pytest.approx(0.3)  # rarest
    assert a[0] == pytest.approx(0.05) and a[3] == pytest.approx(0.05)  # most frequent
    frac = (math.log(1000) - math.log(100)) / (math.log(1000) - math.log(10))
    assert a[2] == pytest.approx(0.05 + 0.25 * frac)
    equal = ClassConditionalSmoothingLoss([7, 7, 7], a_max=0.2, a_min=0.0)
    assert_close(equal.smoothing(), np.full(3, 0.2), rtol=1e-7)


def smoothing_by_hand(z, y, counts, a_max, a_min):
    n = np.asarray(counts, float)
    a = a_min + (a_max - a_min) * (np.log(n.max()) - np.log(n)) / (np.log(n.max()) - np.log(n.min()))
    k = z.shape[1]
    q = np.tile((a[y] / k)[:, None], (1, k))
    q[np.arange(len(y)), y] += 1 - a[y]
    assert np.allclose(q.sum(1), 1)
    return -(q * np_log_softmax(z)).sum(1)


def test_smoothing_loss_is_ce_with_soft_targets():
    l = smoothing_by_hand(Z3.numpy(), Y3.numpy(), N3, 0.25, 0.02)
    loss = ClassConditionalSmoothingLoss(N3, a_max=0.25, a_min=0.02, reduction="none").double()
    assert_close(loss(Z3, Y3), l, rtol=1e-12)
    cw = np.array([1.0, 0.5, 2.0])
    weighted = ClassConditionalSmoothingLoss(N3, a_max=0.25, a_min=0.02, class_weights=cw.tolist()).double()
    w = cw[Y3.numpy()]
    assert_close(weighted(Z3, Y3), (w * l).sum() / w.sum(), rtol=1e-12)
    # a_max = a_min = 0 is plain cross-entropy
    assert_close(ClassConditionalSmoothingLoss(N3, a_max=0.0)(Z3, Y3), float(F.cross_entropy(Z3, Y3)), rtol=1e-14)


def test_smoothing_validates_order_and_range():
    with pytest.raises(ValueError, match="a_min <= a_max"):
        ClassConditionalSmoothingLoss(N3, a_max=0.1, a_min=0.2)
    with pytest.raises(ValueError, match="a_max"):
        ClassConditionalSmoothingLoss(N3, a_max=1.5)
    loss = ClassConditionalSmoothingLoss(N3, a_max=0.2, a_min=0.1)
    with pytest.raises(ValueError, match="a_min <= a_max"):
        loss(Z3, Y3, lam={"a_max": torch.tensor([0.3, 0.3, 0.05, 0.3, 0.3])})


# ---- the reduction contract ----------------------------------------------------------------------------
def test_mean_with_zero_total_weight_is_zero_not_nan():
    z = Z2[[0, 3, 5]].clone().requires_grad_(True)
    y = torch.tensor([0, 0, 0])
    loss = VSLoss(N2, omega=1.0)(z, y)  # every sample has weight 1 - omega = 0
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


# ---- validation and error messages ---------------------------------------------------------------------
def test_bad_inputs_raise_helpful_errors():
    vs = VSLoss(N2, gamma=0.1)
    with pytest.raises(KeyError, match=r"'omega', 'gamma', 'tau'"):
        vs(Z2, Y2, lam={"beta": 1.0})
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        vs(Z2, Y2, lam={"tau": torch.ones(4)})
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        vs(Z2, Y2, lam={"tau": torch.ones(6, 1)})
    with pytest.raises(ValueError, match="omega .*binary"):
        VSLoss(N3, omega=0.5)
    with pytest.raises(ValueError, match="omega.*binary"):
        VSLoss(N3)(Z3, Y3, lam={"omega": 0.5})
    with pytest.raises(ValueError, match=r"omega must be finite and in \[0, 1\]"):
        VSLoss(N2, omega=1.5)
    with pytest.raises(ValueError, match="omega"):
        vs(Z2, Y2, lam={"omega": torch.tensor([0.5, 0.5, -0.1, 0.5, 0.5, 0.5])})
    with pytest.raises(ValueError, match="omega"):
        vs(Z2, Y2, lam={"omega": float("nan")})
    with pytest.raises(ValueError, match="class_weights"):
        VSLoss(N2, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"class_counts\[1\] = 0"):
        VSLoss([100, 0])
    with pytest.raises(ValueError, match="at least 2 classes"):
        FocalLoss([100])
    with pytest.raises(ValueError, match="whole number"):
        LDAMLoss([100, 2.5])
    with pytest.raises(ValueError, match="3 classes but VSLoss was built from 2"):
        vs(Z3, Y3)
    with pytest.raises(ValueError, match="shape"):
        vs(Z2[0], Y2[:1])
    with pytest.raises(ValueError, match="targets contain class 2"):
        vs(Z2, torch.tensor([0, 1, 2, 0, 1, 0]))
    with pytest.raises(ValueError, match="integer"):
        vs(Z2, Y2.double())
    with pytest.raises(ValueError, match="reduction"):
        VSLoss(N2, reduction="avg")
    with pytest.raises(ValueError, match="positive_index"):
        VSLoss(N2, positive_index=2)
    with pytest.raises(ValueError, match="alpha.*binary"):
        FocalLoss(N3)(Z3, Y3, lam={"alpha": 0.5})
    with pytest.raises(ValueError, match="one number"):
        FocalLoss(N2, alpha=[0.2, 0.8])
    with pytest.raises(ValueError, match="per-class"):
        FocalLoss(N3, alpha=0.25)
    with pytest.raises(ValueError, match="phi"):
        FocalLoss(N2, phi=-1.0)
    with pytest.raises(ValueError, match="scale"):
        LDAMLoss(N2, scale=0.0)
    with pytest.raises(ValueError, match="drw_beta"):
        LDAMLoss(N2, drw_beta=1.0)


def test_registry_and_build_loss():
    assert set(LOSSES) == {"vs", "focal", "ldam", "logit_adjust", "weighted_ce", "smoothing"}
    for family, cls in LOSSES.items():
        loss = build_loss(family, N3)
        assert isinstance(loss, cls) and isinstance(loss, ImbalanceLoss)
        assert torch.isfinite(loss(Z3.float(), Y3))
    vs = build_loss("vs", N2, omega=0.7, gamma=0.2, tau=1.0, reduction="sum")
    assert (vs.omega, vs.gamma, vs.tau, vs.reduction) == (0.7, 0.2, 1.0, "sum")
    with pytest.raises(ValueError, match="valid families.*'focal'.*'vs'"):
        build_loss("vs_loss", N2)
    with pytest.raises(TypeError, match="valid keywords.*'max_margin'"):
        build_loss("ldam", N2, margin=0.5)
    assert VSLoss.hparam_names == ("omega", "gamma", "tau")
    assert FocalLoss.hparam_names == ("alpha", "phi")
    assert LDAMLoss.hparam_names == ("max_margin", "scale")
    assert LogitAdjustedLoss.hparam_names == ("tau",)
    assert ClassConditionalSmoothingLoss.hparam_names == ("a_max", "a_min")


# ---- dtype / device / gradients -------------------------------------------------------------------------
def test_buffers_move_with_module_and_float64_logits_work():
    loss = VSLoss(N3, gamma=0.2, tau=1.0, class_weights="inverse_frequency")
    buffers = dict(loss.named_buffers())
    assert {"class_counts", "class_weights", "log_prior", "log_count_ratio"} <= set(buffers)
    assert "class_counts" in loss.state_dict()
    assert all(b.dtype == torch.float32 for b in buffers.values())
    loss64 = loss.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in loss64.buffers())
    assert loss64.class_counts.tolist() == [1000.0, 100.0, 10.0]
    out = loss64(Z3, Y3)
    assert out.dtype == torch.float64
    # float32 module, float64 logits: computed in float64 from the exact (float64-derived) quantities
    assert_close(VSLoss(N3, gamma=0.2, tau=1.0, class_weights="inverse_frequency")(Z3, Y3), float(out), rtol=1e-14)
    # and back to float32
    assert loss64.float()(Z3.float(), Y3).dtype == torch.float32
    # buffers of every family exist and move
    for family in LOSSES:
        m = build_loss(family, N3).to(torch.float64)
        assert all(b.dtype == torch.float64 for b in m.buffers())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_upcast(dtype):
    """Half/bfloat16 logits: the loss is computed in float32, so it matches the float64 hand computation on
    the same (rounded) logit values to float32 precision; in bfloat16 it would be off by ~1e-2."""
    z = (Z3 * 7.3).to(dtype)
    got = VSLoss(N3, gamma=0.3, tau=1.0)(z, Y3)
    assert got.dtype == torch.float32
    w, l = vs_by_hand(z.double(), Y3, N3, 0.3, 1.0, np.ones(len(N3)))  # multi-class VS: no class weights by default
    assert_close(got, reduce_by_hand(w, l)["mean"], rtol=2e-6, atol=0)


@pytest.mark.parametrize("family", sorted(LOSSES))
def test_gradients_flow_to_logits(family):
    z = Z3.clone().float().requires_grad_(True)
    loss = build_loss(family, N3)
    loss(z, Y3).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_lambda_tensor_requiring_grad_is_accepted():
    tau = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], requires_grad=True)
    z = Z2.float().clone().requires_grad_(True)
    VSLoss(N2, gamma=0.2)(z, Y2, lam={"tau": tau}).backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_logits_with_cpu_lambda():
    dev = torch.device("cuda")
    for family, counts, fixed, name, values in PER_SAMPLE_CASES:
        z, y = (Z2, Y2) if len(counts) == 2 else (Z3, Y3)
        loss = build_loss(family, counts, **fixed).double()
        lam = {name: torch.tensor(values)}
        want = loss(z, y, lam=lam)
        got = loss.to(dev)(z.to(dev), y.to(dev), lam=lam)
        assert got.device.type == "cuda"
        assert_close(got.cpu(), float(want), rtol=1e-10)


# ---- range checks are never skipped by device (issue 10, item 3) -------------------------------------------
def test_range_checks_are_not_skipped_for_tensors_off_the_cpu():
    # a "meta" tensor stands for an accelerator tensor: the check must not wave it through (the old code returned
    # for every non-CPU tensor); on a meta tensor it cannot be evaluated, so it raises
    loss = VSLoss(N2, omega=0.5)
    with pytest.raises((ValueError, RuntimeError, NotImplementedError)):
        loss._check_range("omega", torch.tensor([-0.3, 0.4], device="meta"))
    smooth = ClassConditionalSmoothingLoss([100, 10], a_max=0.2, a_min=0.0)
    with pytest.raises((ValueError, RuntimeError, NotImplementedError)):
        smooth._check_order({"a_min": torch.tensor([0.3], device="meta"), "a_max": 0.2})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_lambda_out_of_range_fails_on_the_device():
    import subprocess
    import sys

    # a device-side assert ends the CUDA context: run it in its own process
    code = ("import torch\nfrom lossdial.losses import VSLoss\n"
            "loss = VSLoss([900, 100], omega=0.5).cuda()\n"
            "z, y = torch.zeros(4, 2, device='cuda'), torch.tensor([0, 1, 1, 0], device='cuda')\n"
            "ok = loss(z, y, lam={'omega': torch.tensor([0.2, 0.4, 0.6, 0.8], device='cuda')}).item()\n"
            "print('in range ok')\n"
            "loss(z, y, lam={'omega': torch.tensor([-0.3, 0.4, 0.6, 0.8], device='cuda')}).item()\n"
            "print('trained with a negative weight')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "in range ok" in r.stdout and "trained with a negative weight" not in r.stdout, r.stdout + r.stderr
    assert r.returncode != 0 and "assert" in r.stderr.lower(), r.stderr  # the device-side assert fired
