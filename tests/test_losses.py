"""Each loss against its formula computed by hand (plain math, not the library's code path)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossdial.losses import (
    LOSSES,
    ClassConditionalSmoothingLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    VSLoss,
    WeightedCrossEntropy,
    build_loss,
    posthoc_logit_adjust,
)

Z = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-1.2, 2.0], [0.0, 0.1], [2.5, -1.0]], dtype=torch.float64)
Y = torch.tensor([0, 1, 1, 0, 1])


def softplus(x):
    return math.log1p(math.exp(x))


def log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


@pytest.mark.parametrize("omega,gamma,tau", [(0.5, 0.0, 0.0), (0.7, 0.2, 2.0), (0.3, 0.3, 1.0)])
def test_vs_binary_closed_form(omega, gamma, tau):
    n0, n1 = 5000, 50
    beta = n0 / n1
    loss = VSLoss([n0, n1], omega=omega, gamma=gamma, tau=tau, reduction="none")
    got = loss(Z, Y)
    want, weights = [], []
    for (z0, z1), y in zip(Z.tolist(), Y.tolist()):
        s = z1 * beta ** (-gamma) - z0 - tau * math.log(beta)
        w = omega if y == 1 else 1 - omega
        want.append(w * (softplus(-s) if y == 1 else softplus(s)))
        weights.append(w)
    assert got.tolist() == pytest.approx(want, rel=1e-10)
    mean = VSLoss([n0, n1], omega=omega, gamma=gamma, tau=tau)(Z, Y)
    assert float(mean) == pytest.approx(sum(want) / sum(weights), rel=1e-10)


def test_vs_special_cases():
    ce = VSLoss([900, 100], omega=0.5)(Z, Y)
    assert float(ce) == pytest.approx(float(F.cross_entropy(Z, Y)), rel=1e-12)
    la = LogitAdjustedLoss([900, 100], tau=1.3)(Z, Y)
    vs = VSLoss([900, 100], omega=0.5, gamma=0.0, tau=1.3)(Z, Y)
    assert float(la) == pytest.approx(float(vs), rel=1e-12)


def test_vs_multiclass_formula_and_default_weights():
    counts = [100, 30, 10]
    z = torch.tensor([[0.2, -0.1, 0.4], [1.0, 0.0, -1.0], [-0.3, 0.5, 0.1]], dtype=torch.float64)
    y = torch.tensor([2, 0, 1])
    gamma, tau = 0.25, 1.5
    loss = VSLoss(counts, gamma=gamma, tau=tau, reduction="none")
    inv = [1 / c for c in counts]
    w = [v / (sum(inv) / 3) for v in inv]
    assert loss.class_weights.tolist() == pytest.approx(w, rel=1e-6)
    assert sum(loss.class_weights.tolist()) / 3 == pytest.approx(1.0)
    total = sum(counts)
    for i, (row, t) in enumerate(zip(z.tolist(), y.tolist())):
        adj = [(c / 100) ** gamma * v + tau * math.log(c / total) for v, c in zip(row, counts)]
        assert float(loss(z, y)[i]) == pytest.approx(-w[t] * log_softmax_row(adj)[t], rel=1e-5)
    with pytest.raises(ValueError, match="only applies to binary"):
        VSLoss(counts, omega=0.5)


@pytest.mark.parametrize("make,key,vals", [
    (lambda: VSLoss([900, 100], omega=0.5, gamma=0.1, tau=1.0, reduction="none"), "tau", [0.0, 1.0, 2.0, 3.0, 0.5]),
    (lambda: VSLoss([900, 100], omega=0.5, gamma=0.1, tau=1.0, reduction="none"), "gamma", [0.0, 0.1, 0.2, 0.3, 0.05]),
    (lambda: VSLoss([900, 100], omega=0.5, gamma=0.1, tau=1.0, reduction="none"), "omega", [0.1, 0.5, 0.9, 0.7, 0.2]),
    (lambda: FocalLoss([900, 100], alpha=0.5, phi=2.0, reduction="none"), "alpha", [0.25, 0.5, 0.75, 0.6, 0.3]),
    (lambda: FocalLoss([900, 100], alpha=0.5, phi=2.0, reduction="none"), "phi", [0.0, 1.0, 2.0, 3.0, 0.5]),
    (lambda: LDAMLoss([900, 100], reduction="none"), "max_margin", [0.1, 0.5, 0.3, 0.0, 0.2]),
    (lambda: ClassConditionalSmoothingLoss([900, 100], reduction="none"), "a_max", [0.0, 0.1, 0.2, 0.3, 0.4]),
    (lambda: LogitAdjustedLoss([900, 100], reduction="none"), "tau", [0.0, 1.0, 2.0, 3.0, 0.5]),
])
def test_per_sample_lambda_equals_per_batch_calls(make, key, vals):
    loss = make()
    per_sample = loss(Z, Y, lam={key: torch.tensor(vals)})
    for i, v in enumerate(vals):
        one = loss(Z, Y, lam={key: torch.tensor(v)})[i]
        assert float(per_sample[i]) == pytest.approx(float(one), rel=1e-6, abs=1e-12)


def test_per_sample_mean_is_weighted_by_class_weights():
    omegas = torch.tensor([0.1, 0.5, 0.9, 0.7, 0.2])
    none = VSLoss([900, 100], reduction="none")(Z, Y, lam={"omega": omegas})
    w = torch.where(Y == 1, omegas.double(), 1 - omegas.double())
    mean = VSLoss([900, 100])(Z, Y, lam={"omega": omegas})
    assert float(mean) == pytest.approx(float(none.sum() / w.sum()), rel=1e-10)


def test_focal_by_hand_and_phi0_is_weighted_ce():
    alpha, phi = 0.7, 2.0
    got = FocalLoss([900, 100], alpha=alpha, phi=phi, reduction="none")(Z, Y)
    for i, (row, t) in enumerate(zip(Z.tolist(), Y.tolist())):
        lp = log_softmax_row(row)[t]
        a = alpha if t == 1 else 1 - alpha
        assert float(got[i]) == pytest.approx(-a * (1 - math.exp(lp)) ** phi * lp, rel=1e-10)
    fl0 = FocalLoss([900, 100], alpha=alpha, phi=0.0)(Z, Y)
    wce = F.cross_entropy(Z, Y, weight=torch.tensor([1 - alpha, alpha], dtype=torch.float64))
    assert float(fl0) == pytest.approx(float(wce), rel=1e-10)


def test_focal_gradient_finite_when_confident():
    z = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
    FocalLoss([10, 1], phi=0.0)(z, torch.tensor([0, 1])).backward()
    assert torch.isfinite(z.grad).all()


def test_ldam_margins_and_formula_and_drw():
    counts = [5000, 500, 50]
    loss = LDAMLoss(counts, reduction="none", drw_epoch=3)
    m = [c ** -0.25 for c in counts]
    m = [0.5 * v / max(m) for v in m]
    assert loss.margins.tolist() == pytest.approx(m, rel=1e-6)
    z = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.5, 0.1]], dtype=torch.float64)
    y = torch.tensor([2, 1])
    for i in range(2):
        row = [30 * (v - (m[y[i]] if k == y[i] else 0)) for k, v in enumerate(z[i].tolist())]
        assert float(loss(z, y)[i]) == pytest.approx(-log_softmax_row(row)[y[i]], rel=1e-6)
    assert loss.class_weights.tolist() == [1.0, 1.0, 1.0]
    loss.set_epoch(3)
    eff = [(1 - 0.9999) / (1 - 0.9999 ** c) for c in counts]
    eff = [v / (sum(eff) / 3) for v in eff]
    assert loss.class_weights.tolist() == pytest.approx(eff, rel=1e-5)


def test_smoothing_levels_and_soft_target_ce():
    counts = [1000, 100, 10]
    loss = ClassConditionalSmoothingLoss(counts, a_max=0.3, a_min=0.05, reduction="none")
    a = loss.smoothing().tolist()
    assert a[2] == pytest.approx(0.3) and a[0] == pytest.approx(0.05) and a[1] == pytest.approx(0.175)
    z = torch.tensor([[0.2, 0.1, -0.3], [1.0, -0.5, 0.1]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    for i, t in enumerate(y.tolist()):
        ay = a[t]
        q = [(1 - ay) * (k == t) + ay / 3 for k in range(3)]
        lp = log_softmax_row(z[i].tolist())
        assert float(loss(z, y)[i]) == pytest.approx(-sum(qk * l for qk, l in zip(q, lp)), rel=1e-6)
    eq = ClassConditionalSmoothingLoss([50, 50], a_max=0.2)
    assert eq.smoothing().tolist() == pytest.approx([0.2, 0.2])


def test_weighted_ce_inverse_and_effective():
    counts = [900, 100]
    inv = WeightedCrossEntropy(counts, weighting="inverse")
    assert inv.class_weights.tolist() == pytest.approx([0.2, 1.8])
    got = inv(Z, Y)
    want = F.cross_entropy(Z, Y, weight=torch.tensor([0.2, 1.8], dtype=torch.float64))
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    eff = WeightedCrossEntropy(counts, weighting="effective", beta_eff=0.99)
    e = [(1 - 0.99) / (1 - 0.99 ** c) for c in counts]
    assert eff.class_weights.tolist() == pytest.approx([v / (sum(e) / 2) for v in e], rel=1e-5)


def test_posthoc_logit_adjust():
    z = torch.zeros(1, 2)
    adj = posthoc_logit_adjust(z, [900, 100], tau=1.0)
    assert adj.tolist()[0] == pytest.approx([-math.log(0.9), -math.log(0.1)], rel=1e-6)


def test_bad_inputs_are_clear():
    with pytest.raises(KeyError, match="may carry"):
        VSLoss([9, 1])(Z, Y, lam={"alpha": 0.1})
    with pytest.raises(ValueError, match="batch has 5"):
        VSLoss([9, 1])(Z, Y, lam={"tau": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"omega must be in \[0, 1\]"):
        VSLoss([9, 1], omega=1.5)
    with pytest.raises(ValueError, match="positive"):
        VSLoss([9, 0])
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        VSLoss([9, 1, 3])(Z, Y)
    with pytest.raises(ValueError, match="class indices"):
        VSLoss([9, 1])(Z, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="unknown loss family"):
        build_loss("hinge", [9, 1])
    with pytest.raises(ValueError, match="does not take"):
        build_loss("vs", [9, 1], alpha=0.2)


def test_buffers_move_with_module_and_float64_works():
    for name, cls in LOSSES.items():
        loss = cls([90, 10])
        assert "class_counts" in dict(loss.named_buffers()), name
        loss = loss.to(torch.float64)
        out = loss(Z, Y)
        assert out.dtype == torch.float64 and torch.isfinite(out), name
        z = Z.clone().requires_grad_(True)
        loss(z, Y).backward()
        assert z.grad is not None and z.grad.abs().sum() > 0, name


def test_vs_lam_from_cpu_generator_on_module_device():
    loss = VSLoss([900, 100], gamma=0.2)
    out = loss(Z.float(), Y, lam={"tau": torch.tensor(1.5), "gamma": np.float32(0.1)})
    assert torch.isfinite(out)
