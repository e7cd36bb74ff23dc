"""The training side of the Simplifying recipe (issue 13): SAM and its imbalance forms, Joint-SSL's NT-Xent,
class-conditional label smoothing on every CE-type family, linear lr scaling. Each checked against a hand
computation (NumPy / plain Python), not against the library itself."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lossdial.config import ConfigError, load_config, packaged_config_path
from lossdial.losses import build_loss
from lossdial.losses.ssl import nt_xent
from lossdial.optim.sam import Objective, SharpnessAware, split_objective
from lossdial.train import train
from lossdial.train.factory import build_optimizer
from conftest import assert_same_run_weights

DEMO = packaged_config_path("demo_digits")


def _cfg(overrides):
    return load_config(DEMO, overrides)


# ------------------------------------------------------------------------------------------------------
# SAM: one step against the formula, by hand
# ------------------------------------------------------------------------------------------------------
X = np.array([[1.0, 2.0], [0.5, -1.0], [-1.5, 0.3], [2.0, 1.0]])
Y = np.array([1.0, -0.5, 0.2, 2.0])


def _mse_grad(w):
    """d/dw mean((X w - Y)^2) = 2/N X^T (X w - Y)."""
    return 2.0 / len(X) * X.T @ (X @ w - Y)


def _linear_sam(rho, adaptive=False, eta=0.01):
    w0 = np.array([0.3, -0.2])
    lin = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w0)[None])
    xt, yt = torch.tensor(X), torch.tensor(Y)
    sam = SharpnessAware(list(lin.parameters()), lin, rho=rho, adaptive=adaptive, eta=eta)
    loss = sam.gradients(lambda: Objective(((lin(xt)[:, 0] - yt) ** 2).mean()))
    return w0, lin, loss


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_sam_step_equals_the_formula(adaptive):
    rho, lr = 0.1, 0.05
    w0, lin, loss = _linear_sam(rho, adaptive)
    torch.optim.SGD(lin.parameters(), lr=lr).step()
    g = _mse_grad(w0)
    if adaptive:  # ASAM: e = rho T^2 g / ||T g||, T = |w| + eta
        t = np.abs(w0) + 0.01
        e = rho * t * t * g / np.linalg.norm(t * g)
    else:  # SAM: e = rho g / ||g||
        e = rho * g / np.linalg.norm(g)
    expected = w0 - lr * _mse_grad(w0 + e)
    np.testing.assert_allclose(lin.weight.detach().numpy()[0], expected, rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(np.mean((X @ w0 - Y) ** 2), rel=1e-12)  # the loss at w is reported


def test_sam_with_vanishing_rho_is_the_plain_gradient():
    w0, lin, _ = _linear_sam(1e-9)
    np.testing.assert_allclose(lin.weight.grad.numpy()[0], _mse_grad(w0), rtol=1e-7)
    np.testing.assert_array_equal(lin.weight.detach().numpy()[0], w0)  # the weights are restored exactly


def _softmax_ce_grad(W, x, y, sample_weights):
    """Gradient of sum_i s_i * CE(W x_i, y_i) w.r.t. W (no bias), by hand: sum_i s_i (p_i - onehot_i) x_i^T."""
    z = x @ W.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(W.shape[0])[y]
    return ((p - onehot) * sample_weights[:, None]).T @ x


XC = np.array([[1.0, 0.5], [0.2, -1.0], [-0.7, 0.4], [1.2, 1.1], [0.3, -0.2], [-1.0, -0.5]])
YC = np.array([0, 0, 0, 0, 1, 1])
COUNTS = [40, 10]  # n_max / n_c = [1, 4]


def _classifier(mode, **kw):
    w0 = np.array([[0.2, -0.1], [-0.3, 0.4]])
    lin = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w0))
    loss_fn = build_loss("weighted_ce", COUNTS, weighting="none").double()
    xt, yt = torch.tensor(XC), torch.tensor(YC)
    seen = []

    def closure():
        seen.append(lin.weight.detach().clone().numpy())
        terms = loss_fn.sample_terms(lin(xt), yt)
        return split_objective(mode, terms, yt, class_weights=torch.tensor([1.0, 4.0], dtype=torch.float64),
                               minority=torch.tensor([False, True]))

    sam = SharpnessAware(list(lin.parameters()), lin, mode=mode, **kw)
    sam.gradients(closure)
    return w0, lin, seen


def test_asymmetric_sam_ascends_the_class_weighted_loss_and_descends_the_plain_one():
    rho = 0.2
    w0, lin, seen = _classifier("asymmetric", rho=rho)
    n = len(YC)
    c = np.array([1.0, 4.0])[YC]  # (n_max / n_c)^1
    g_asc = _softmax_ce_grad(w0, XC, YC, c / n)
    e = rho * g_asc / np.linalg.norm(g_asc)
    np.testing.assert_allclose(seen[1], w0 + e, rtol=1e-10)  # the second pass runs at w + e(weighted)
    g_plain_e = _softmax_ce_grad(w0 + e, XC, YC, np.full(n, 1.0 / n))
    np.testing.assert_allclose(lin.weight.grad.numpy(), g_plain_e, rtol=1e-10)
    # and the weighted ascent is not the plain one (the test would not tell them apart otherwise)
    g_plain = _softmax_ce_grad(w0, XC, YC, np.full(n, 1.0 / n))
    assert np.abs(e - rho * g_plain / np.linalg.norm(g_plain)).max() > 1e-3


def test_group_sam_with_unperturbed_majority_is_imbsam():
    rho = 0.3
    w0, lin, seen = _classifier("groups", rho=rho, rho_min=rho, rho_maj=0.0)
    n = len(YC)
    is_min = (YC == 1).astype(float)
    g_min = _softmax_ce_grad(w0, XC, YC, is_min / n)
    g_maj = _softmax_ce_grad(w0, XC, YC, (1 - is_min) / n)
    e_min = rho * g_min / np.linalg.norm(g_min)
    assert len(seen) == 2  # one extra pass: only the minority group is perturbed
    np.testing.assert_allclose(seen[1], w0 + e_min, rtol=1e-10)
    expected = _softmax_ce_grad(w0 + e_min, XC, YC, is_min / n) + g_maj
    np.testing.assert_allclose(lin.weight.grad.numpy(), expected, rtol=1e-10)


def test_group_sam_with_two_radii_perturbs_each_group_on_its_own():
    w0, lin, seen = _classifier("groups", rho=0.3, rho_min=0.3, rho_maj=0.1)
    n = len(YC)
    is_min = (YC == 1).astype(float)
    parts = []
    for mask, rho in ((is_min, 0.3), (1 - is_min, 0.1)):
        g = _softmax_ce_grad(w0, XC, YC, mask / n)
        parts.append(_softmax_ce_grad(w0 + rho * g / np.linalg.norm(g), XC, YC, mask / n))
    assert len(seen) == 3
    np.testing.assert_allclose(lin.weight.grad.numpy(), parts[0] + parts[1], rtol=1e-10)


def test_batchnorm_running_stats_are_updated_once_per_sam_step():
    """A Linear before the BatchNorm makes its input differ between w and the perturbed w + e: the running stats
    must come from the pass at w (the perturbed pass must not update them)."""
    torch.manual_seed(0)
    lin, bn = nn.Linear(3, 3), nn.BatchNorm1d(3)
    net = nn.Sequential(lin, bn, nn.Linear(3, 1))
    x = torch.randn(8, 3)
    with torch.no_grad():
        h = x @ lin.weight.T + lin.bias  # the BatchNorm's input at w, by hand
    sam = SharpnessAware(list(net.parameters()), net, rho=0.5)
    sam.gradients(lambda: Objective((net(x) ** 2).mean()))
    # by hand: one update with momentum 0.1 from (0, 1), on the BatchNorm's input seen at w
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * h.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * h.var(0, unbiased=True).numpy(), rtol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    assert bn.track_running_stats  # restored after the perturbed pass


def test_training_with_vanishing_rho_matches_plain_training(tmp_path, tiny_overrides):
    """Through the loop (BatchNorm, clipping, EMA, LCT): SAM with rho -> 0 trains the plain run's weights."""
    ov = tiny_overrides + ["train.epochs=1"]
    train(_cfg(ov), tmp_path / "plain", device="cpu")
    train(_cfg(ov + ["optim.sam.rho=1e-9"]), tmp_path / "sam", device="cpu")
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "sam" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-6), k
    assert any("running_mean" in k for k in a) and any("num_batches_tracked" in k for k in a)
    for k in (k for k in a if "num_batches_tracked" in k):
        assert torch.equal(a[k], b[k]), k  # one BatchNorm update per step, not two


def test_both_sam_passes_of_an_lct_step_use_the_same_lambda(tmp_path, tiny_overrides, monkeypatch):
    from lossdial.losses import VSLoss
    from lossdial.models import ConditionedClassifier

    seen = []
    orig_loss, orig_net = VSLoss.forward, ConditionedClassifier.forward

    def spy_loss(self, logits, targets, lam=None):
        seen.append(("loss", lam["tau"].clone()))
        return orig_loss(self, logits, targets, lam)

    def spy_net(self, x, z=None):
        if self.training:
            seen.append(("net", z.clone()))
        return orig_net(self, x, z)

    monkeypatch.setattr(VSLoss, "forward", spy_loss)
    monkeypatch.setattr(ConditionedClassifier, "forward", spy_net)
    train(_cfg(tiny_overrides + ["train.epochs=1", "train.eval_every=0", "optim.sam.rho=0.05"]), tmp_path / "r",
          device="cpu")
    kinds = [k for k, _ in seen]
    assert kinds == ["net", "loss", "net", "loss"] * (len(seen) // 4) and len(seen) >= 16  # two passes per step
    steps = [seen[i:i + 4] for i in range(0, len(seen), 4)]
    for (_, z1), (_, t1), (_, z2), (_, t2) in steps:
        assert torch.equal(z1, z2) and torch.equal(t1, t2)
    assert len({float(s[1][1].reshape(-1)[0]) for s in steps}) > 1  # a new draw each step


def test_killed_and_resumed_sam_ssl_run_equals_uninterrupted(tmp_path, tiny_overrides, kill_at):
    ov = tiny_overrides + ["train.batch_size=64", "train.checkpoint_every=5", "optim.sam.rho=0.05",
                           "optim.sam.mode=asymmetric", "ssl.weight=0.5", "ssl.projector_hidden=32",
                           "ssl.projector_dim=8", "loss.smoothing={a_max: 0.2}",
                           "lct.lambda={tau: 'L(0,3,0.33)', a_max: 'U(0,0.3)'}",  # LCT dials the smoothing too
                           "evaluate.lambda=tau=0:3:3 a_max=0:0.3:2"]
    cfg = _cfg(ov)
    train(cfg, tmp_path / "full", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", device="cpu", callback=kill_at(23))
    train(cfg, tmp_path / "killed", device="cpu", resume=True)
    assert_same_run_weights(tmp_path / "full", tmp_path / "killed", checkpoint_parts=("projector",))


# ------------------------------------------------------------------------------------------------------
# Joint-SSL
# ------------------------------------------------------------------------------------------------------
def test_nt_xent_on_a_known_pair_by_hand():
    a = [[1.0, 0.0], [1.0, 1.0]]
    b = [[2.0, 0.0], [0.0, 3.0]]
    t = 0.5

    def unit(v):
        r = math.hypot(*v)
        return [v[0] / r, v[1] / r]

    u = [unit(v) for v in a + b]
    total = 0.0
    for i in range(4):
        pos = (i + 2) % 4
        sims = {j: (u[i][0] * u[j][0] + u[i][1] * u[j][1]) / t for j in range(4) if j != i}
        total += -sims[pos] + math.log(sum(math.exp(s) for s in sims.values()))
    got = nt_xent(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), t)
    assert got.item() == pytest.approx(total / 4, rel=1e-12)


def test_ssl_changes_training_and_keeps_the_exported_model_plain(tmp_path, tiny_overrides):
    ov = tiny_overrides + ["train.epochs=1"]
    train(_cfg(ov), tmp_path / "plain", device="cpu")
    train(_cfg(ov + ["ssl.weight=1.0", "ssl.projector_hidden=32", "ssl.projector_dim=8"]), tmp_path / "ssl",
          device="cpu")
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "ssl" / "model.safetensors"))
    assert a.keys() == b.keys()  # the projector is not part of the model that predict/export load
    assert any(not torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------
# class-conditional label smoothing on the CE-type families, by hand
# ------------------------------------------------------------------------------------------------------
COUNTS3 = [1000, 100, 10]
LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-0.5, 1.0, 2.5]]
LABELS = [0, 1, 2]


def _smoothed_ce_by_hand(z, y, a, k=3):
    m = max(z)
    logp = [v - m - math.log(sum(math.exp(u - m) for u in z)) for v in z]
    q = [(1 - a) * (c == y) + a / k for c in range(k)]
    return -sum(qc * lp for qc, lp in zip(q, logp)), math.exp(logp[y])


def test_smoothing_per_class_interpolates_in_log_count():
    loss = build_loss("logit_adjust", COUNTS3, tau=0.0, smoothing={"a_max": 0.3, "a_min": 0.06})
    # log-counts 3, 2, 1 (base 10): rarity 0, 1/2, 1 -> a = 0.06, 0.18, 0.3
    a = [0.06 + (0.3 - 0.06) * r for r in (0.0, 0.5, 1.0)]
    expected = sum(_smoothed_ce_by_hand(z, y, a[y])[0] for z, y in zip(LOGITS, LABELS)) / 3
    got = loss(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS))
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("family", ["vs", "logit_adjust", "ldam", "weighted_ce", "focal"])
def test_smoothing_replaces_the_one_hot_target_of_each_family(family):
    a_rare = 0.2
    a = [0.0, 0.1, 0.2]
    pi = [c / sum(COUNTS3) for c in COUNTS3]
    if family == "vs":  # z' = (n_c / n_max)^gamma z + tau log pi
        kw = dict(gamma=0.5, tau=1.0)
        adj = lambda z: [(n / 1000) ** 0.5 * v + math.log(p) for v, n, p in zip(z, COUNTS3, pi)]  # noqa: E731
        w = [1.0, 1.0, 1.0]
    elif family == "logit_adjust":
        kw = dict(tau=1.0)
        adj = lambda z: [v + math.log(p) for v, p in zip(z, pi)]  # noqa: E731
        w = [1.0, 1.0, 1.0]
    elif family == "ldam":  # s * (z - m_y onehot), m_c = 0.5 n_c^-1/4 / n_min^-1/4
        kw = dict(max_margin=0.5, scale=2.0)
        m = [0.5 * (n / 10) ** -0.25 for n in COUNTS3]
        adj = None
        w = [1.0, 1.0, 1.0]
    elif family == "weighted_ce":  # inverse frequency, mean 1
        kw = dict(weighting="inverse")
        inv = [1 / n for n in COUNTS3]
        w = [3 * v / sum(inv) for v in inv]
        adj = lambda z: z  # noqa: E731
    else:  # focal: (1 - p_y)^phi * CE(q, p), plain mean
        kw = dict(phi=2.0, reduction="mean")
        adj = lambda z: z  # noqa: E731
        w = [1.0, 1.0, 1.0]
    num = den = 0.0
    for z, y in zip(LOGITS, LABELS):
        if family == "ldam":
            zz = [2.0 * (v - (m[y] if c == y else 0.0)) for c, v in enumerate(z)]
        else:
            zz = adj(z)
        ce, p_y = _smoothed_ce_by_hand(zz, y, a[y])
        if family == "focal":
            ce *= (1 - p_y) ** 2  # focusing on the labelled class (raw logits)
        num += w[y] * ce
        den += w[y] if family != "focal" else 1.0
    loss = build_loss(family, COUNTS3, smoothing={"a_max": a_rare, "a_min": 0.0}, **kw)
    got = loss(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS))
    assert got.item() == pytest.approx(num / den, rel=1e-10)


def test_lct_draws_the_smoothing_strength_per_batch():
    loss = build_loss("logit_adjust", COUNTS3, tau=0.0, smoothing={"a_max": 0.2})
    z, y = torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS)
    expected = sum(_smoothed_ce_by_hand(zz, yy, [0.0, 0.25, 0.5][yy])[0] for zz, yy in zip(LOGITS, LABELS)) / 3
    assert loss(z, y, lam={"a_max": 0.5}).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="a_min <= a_max"):
        loss(z, y, lam={"a_min": 0.3})


# ------------------------------------------------------------------------------------------------------
# knobs and refusals
# ------------------------------------------------------------------------------------------------------
def test_smoothing_a_max_is_open_at_one_in_the_library_and_the_config_alike():
    """a_max = 1 replaces the rarest class's label by the uniform distribution: refused by the loss itself (as a
    setting and as a per-sample lambda), by loss.smoothing and by an LCT law reaching 1, all saying [0, 1)."""
    with pytest.raises(ValueError, match=r"a_max must be finite and in \[0, 1\)"):
        build_loss("vs", [90, 10], smoothing={"a_max": 1.0})
    loss = build_loss("vs", [90, 10], smoothing={"a_max": 0.999})  # just below 1 is allowed
    z, y = torch.zeros(2, 2), torch.tensor([0, 1])
    loss(z, y, lam={"a_max": 0.999})
    with pytest.raises(ValueError, match=r"a_max must be finite and in \[0, 1\)"):
        loss(z, y, lam={"a_max": torch.tensor([0.5, 1.0])})
    with pytest.raises(ConfigError, match=r"loss.smoothing.a_max: must be in \[0, 1\)"):
        _cfg(["loss.smoothing={a_max: 1.0}"])
    with pytest.raises(ConfigError, match=r"lct.lambda.a_max: U\(0.1,1\) reaches 1.*\[0, 1\)"):
        _cfg(["loss.smoothing={a_max: 0.2}", "lct.lambda={a_max: 'U(0.1,1)'}", "evaluate.lambda=a_max=0.1:0.9:3"])


def test_linear_lr_scaling():
    cfg = _cfg(["optim.lr=0.2", "train.batch_size=32", "optim.lr_scaling=linear", "optim.reference_batch_size=128"])
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]  # 0.2 * 32 / 128
    assert build_optimizer(_cfg(["optim.lr=0.2"]), nn.Linear(2, 2)).param_groups[0]["lr"] == 0.2


@pytest.mark.parametrize("overrides, where", [
    (["optim.sam.rho=0"], "optim.sam.rho"),
    (["optim.sam.rho=-0.05"], "optim.sam.rho"),
    (["optim.sam.rho=0.05", "optim.sam.rho_maj=0.1"], "optim.sam.rho_maj"),  # groups-only key in mode sam
    (["optim.sam.rho=0.05", "optim.sam.mode=groups", "optim.sam.rho_min=-1"], "optim.sam.rho_min"),
    (["optim.sam.rho=0.05", "optim.sam.mode=groups", "optim.sam.rho_min=0"], "optim.sam.rho_min"),  # both 0
    (["ssl.weight=1", "train.augment=none"], "train.augment"),
    (["ssl.weight=0"], "ssl.weight"),
    (["loss.smoothing={a_max: 1.0}"], "loss.smoothing.a_max"),
    (["loss.smoothing={a_max: 0.1, a_min: 0.2}"], "loss.smoothing.a_min"),
    (["loss.smoothing={a_max: 0.2}", "lct.lambda={a_max: 'U(0.1,1)'}", "evaluate.lambda=a_max=0.1:0.9:3"],
     "lct.lambda.a_max"),
    (["lct.lambda={a_max: 'U(0,0.3)'}", "evaluate.lambda=a_max=0:0.3:3"], "lct.lambda.a_max"),  # no smoothing
])
def test_bad_settings_are_refused_at_load_with_the_dotted_path(overrides, where):
    with pytest.raises(ConfigError, match=rf"\n  {where}: "):
        _cfg(overrides)


def test_a_group_rho_may_be_zero_and_a_saved_config_reloads():
    cfg = _cfg(["optim.sam.rho=0.05", "optim.sam.mode=groups", "optim.sam.rho_maj=0", "ssl.weight=1",
                "loss.smoothing={a_max: 0.2}"])
    from lossdial.config import config_from_dict
    import yaml

    assert config_from_dict(yaml.safe_load(cfg.to_yaml())).to_dict() == cfg.to_dict()


def test_modes_needing_class_counts_are_refused_on_a_task_without_them(monkeypatch):
    import lossdial.config as config

    monkeypatch.setattr(config, "TASKS_WITH_CLASS_COUNTS", ("multiclass",))
    with pytest.raises(ConfigError, match=r"optim.sam.mode: asymmetric needs the training class counts"):
        _cfg(["optim.sam.rho=0.05", "optim.sam.mode=asymmetric"])
    _cfg(["optim.sam.rho=0.05"])  # plain SAM needs none


def test_stacked_trainer_refuses_sam_and_ssl():
    from lossdial.train.stacked import StackedConfigError, check_stackable

    with pytest.raises(StackedConfigError, match="optim.sam"):
        check_stackable([_cfg(["optim.sam.rho=0.05"])])
    with pytest.raises(StackedConfigError, match="ssl"):
        check_stackable([_cfg(["ssl.weight=1"])])


def test_run_time_refusals():
    from lossdial.train.simplifying import check_run

    with pytest.raises(ValueError, match="optim.sam is not supported under torchrun"):
        check_run(_cfg(["optim.sam.rho=0.05"]), "device", True, [500, 10])
    with pytest.raises(ValueError, match="train.loader: stream"):
        check_run(_cfg(["ssl.weight=1"]), "stream", False, [500, 10])
    with pytest.raises(ValueError, match="minority group .* is empty"):
        check_run(_cfg(["optim.sam.rho=0.05", "optim.sam.mode=groups"]), "device", False, [50, 50])
    with pytest.raises(ValueError, match="is every class"):
        check_run(_cfg(["optim.sam.rho=0.05", "optim.sam.mode=groups", "optim.sam.minority_below=1000"]),
                  "device", False, [500, 10])
    check_run(_cfg(["optim.sam.rho=0.05", "optim.sam.mode=groups"]), "device", False, [500, 10])


def test_group_rule_is_below_the_geometric_mean_of_the_extreme_counts():
    from lossdial.optim.sam import minority_classes

    # sqrt(1000 * 10) = 100: 100 itself is not below it
    assert minority_classes([1000, 300, 100, 99, 10]).tolist() == [False, False, False, True, True]
    assert minority_classes([1000, 300, 100, 99, 10], below=301).tolist() == [False, True, True, True, True]


def _nt_xent_by_hand(a, b, t):
    views = a + b
    n = len(a)
    unit = [[x / math.sqrt(sum(v * v for v in vec)) for x in vec] for vec in views]
    total = 0.0
    for i in range(2 * n):
        sims = {j: sum(p * q for p, q in zip(unit[i], unit[j])) / t for j in range(2 * n) if j != i}
        total += -sims[(i + n) % (2 * n)] + math.log(sum(math.exp(s) for s in sims.values()))
    return total / (2 * n)


def test_joint_ssl_objective_is_supervised_loss_on_view_one_plus_mu_nt_xent_of_pre_film_features():
    from lossdial.models import ConditionedClassifier
    from lossdial.train.simplifying import StepObjective

    torch.manual_seed(0)
    model = ConditionedClassifier(nn.Flatten(), feature_dim=3, num_classes=2, lambda_dim=1).double()
    cfg = _cfg(["ssl.weight=0.7", "ssl.temperature=0.3"])
    loss_fn = build_loss("vs", [50, 5], omega=0.5, gamma=0.0, tau=1.0).double()
    v1 = [[1.0, 0.2, -0.3], [0.1, 1.0, 0.4], [-0.5, 0.3, 1.0]]
    v2 = [[0.9, 0.1, -0.2], [0.3, 0.8, 0.1], [-0.4, 0.5, 0.7]]
    x1, x2 = torch.tensor(v1, dtype=torch.float64), torch.tensor(v2, dtype=torch.float64)
    y, z = torch.tensor([0, 1, 0]), torch.tensor([[0.5]] * 3, dtype=torch.float64)
    objective = StepObjective(cfg, model, model, loss_fn, nn.Identity(), [50, 5], torch.device("cpu"), False)
    got = objective(x1, x2, y, {"tau": 1.0}, z).loss
    sup = loss_fn(model(x1, z), y, lam={"tau": 1.0})
    assert (got - sup).item() == pytest.approx(0.7 * _nt_xent_by_hand(v1, v2, 0.3), rel=1e-10)
