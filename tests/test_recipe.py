"""Recipe choices made explicit (issue 11): the cosine head (LDAM's normalised classifier) with FiLM, stacking
and export; weight decay on 1-D parameters; the config keys that name each choice, resolved at load."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.config import ConfigError, config_from_dict, load_config, packaged_config_path
from lossdial.models import ConditionedClassifier
from lossdial.train.factory import build_model_from_config, build_optimizer

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "src/lossdial/configs").glob("*.yaml"))
LDAM = ["loss.family=ldam", "loss.params={}", "lct.enabled=false"]


# ---- the cosine head -------------------------------------------------------------------------------------
def test_cosine_head_normalises_the_film_modulated_features_by_hand():
    torch.manual_seed(0)
    model = ConditionedClassifier(torch.nn.Identity(), 3, 2, lambda_dim=1, film="reference", film_hidden=4,
                                  head="cosine", head_scale=16.0).double()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]]))  # row norms 3 and 5
    f = torch.tensor([[1.0, 0.5, -2.0], [0.3, 0.3, 0.3]], dtype=torch.float64)
    z = torch.tensor([0.4], dtype=torch.float64)
    a, b = (t[0].detach().numpy() for t in model.film.scale_shift(z))  # FiLM at this lambda: h' = a * h + b
    h = f.numpy() * a + b
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    w = np.array([[1, 2, 2], [0, -3, 4]]) / np.array([[3.0], [5.0]])
    want = 16.0 * u @ w.T  # FiLM first, then unit features against unit weight rows, times s
    np.testing.assert_allclose(model.head(f, z).detach().numpy(), want, rtol=1e-12)
    assert np.abs(want).max() <= 16.0
    # the head at one lambda as a plain module (what export ships) gives the same logits
    np.testing.assert_allclose(model.fixed_head(z)(f).detach().numpy(), want, rtol=1e-12)
    with pytest.raises(ValueError, match="does not fold"):
        model.fold_head(z)
    with pytest.raises(ValueError, match="FiLM on the features"):
        ConditionedClassifier(torch.nn.Identity(), 3, 2, lambda_dim=1, head="cosine", head_scale=16.0,
                              placement="logits")


def test_head_resolves_at_load_and_print_config_shows_it():
    demo = packaged_config_path("demo_digits")
    assert load_config(demo).model.head == "linear"  # VS
    cfg = load_config(demo, LDAM)
    assert cfg.model.head == "cosine" and cfg.model.head_scale is None
    assert load_config(demo, LDAM + ["model.head=linear"]).model.head == "linear"  # explicit wins
    focal = load_config(demo, ["loss.family=focal", "loss.params={alpha: 0.75}", "model.head=cosine", "lct.enabled=false"])
    assert focal.model.head_scale == 16.0 and focal.loss.params["reduction"] == "mean"
    again = config_from_dict(cfg.to_dict())
    assert again == cfg  # the resolved config round-trips (saved config.yaml, compare members)
    from lossdial.cli import app

    r = CliRunner().invoke(app, ["train", str(demo), "--set", "loss.family=ldam", "--set", "loss.params={}",
                                 "--set", "lct.enabled=false", "--print-config"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.output)["model"]["head"] == "cosine"
    with pytest.raises(ConfigError, match="leave model.head_scale null"):
        load_config(demo, LDAM + ["model.head_scale=10"])
    with pytest.raises(ConfigError, match="head_scale applies only to model.head: cosine"):
        load_config(demo, ["model.head_scale=10"])
    with pytest.raises(ConfigError, match="FiLM on the features"):
        load_config(demo, LDAM + ["model.placement=logits", "lct.enabled=true",
                                  "lct.lambda={max_margin: 'U(0,0.5)'}", "evaluate.lambda=null"])


def test_loss_settings_fail_at_load_naming_the_key():
    demo = packaged_config_path("demo_digits")
    with pytest.raises(ConfigError, match=r"loss.params.reduction: must be one of \['mean', 'weighted_mean'\]"):
        load_config(demo, ["loss.family=focal", "loss.params={reduction: sum}", "lct.enabled=false"])
    with pytest.raises(ConfigError, match="does not take"):  # only focal has two means
        load_config(demo, ["loss.params.reduction=weighted_mean"])
    with pytest.raises(ConfigError, match="loss.params.*binary VSLoss is weighted by omega"):
        load_config(demo, ["loss.params.class_weights=inverse_frequency"])
    mc = {"data": {"source": "cifar10", "task": "multiclass", "positive_class": None}}
    with pytest.raises(ConfigError, match="omega.*only applies to binary"):
        config_from_dict({**mc, "loss": {"family": "vs", "params": {"omega": 0.5, "tau": 1.0}}})
    with pytest.raises(ConfigError, match="beta_eff applies only to class_weights: effective_number"):
        config_from_dict({**mc, "loss": {"family": "vs", "params": {"tau": 1.0, "beta_eff": 0.99}}})
    ok = config_from_dict({**mc, "loss": {"family": "vs", "params": {"tau": 1.0, "class_weights": [1, 2, 3]}}})
    assert ok.loss.params["class_weights"] == [1, 2, 3]
    # the default loss.params (binary VS) drop Omega for a multi-class task and say which weights they use
    assert config_from_dict(mc).loss.params == {"gamma": 0.2, "tau": 1.0, "class_weights": "none"}


def test_every_shipped_config_states_its_recipe():
    for path in SHIPPED:
        raw = yaml.safe_load(path.read_text())
        text = path.read_text()
        assert "head" in raw["model"], f"{path.name}: model.head not stated"
        assert "decay_norm_and_bias" in raw["optim"], f"{path.name}: optim.decay_norm_and_bias not stated"
        for key in ("head:", "decay_norm_and_bias:"):
            line = next(ln for ln in text.splitlines() if ln.strip().startswith(key))
            assert "#" in line, f"{path.name}: {key} needs a comment citing its source"
        cfg = load_config(path)
        if cfg.data.task == "multiclass" and cfg.loss.family == "vs":
            assert "class_weights" in raw["loss"]["params"], f"{path.name}: loss.params.class_weights not stated"
        if cfg.loss.family == "focal":
            assert "reduction" in raw["loss"]["params"], f"{path.name}: loss.params.reduction not stated"
        paper = path.name.startswith("cifar10_")  # the LCT paper configs, compare configs and CIFAR-10-LT
        assert cfg.optim.decay_norm_and_bias is paper, path.name


# ---- weight decay on 1-D parameters ---------------------------------------------------------------------
MATRICES = ["backbone.net.1.weight", "fc.weight", "film.sigma_net.0.weight", "film.sigma_net.2.weight",
            "film.mu_net.0.weight", "film.mu_net.2.weight"]
ONE_D = ["backbone.net.1.bias", "backbone.net.2.weight", "backbone.net.2.bias",  # Linear bias, BatchNorm
         "fc.bias", "film.sigma_net.0.bias", "film.sigma_net.2.bias", "film.mu_net.0.bias", "film.mu_net.2.bias"]


def _tiny_cfg(decay_all: bool):
    return config_from_dict({
        "data": {"source": "breast_cancer", "positive_class": "malignant"},
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [4], "batchnorm": True}, "film_hidden": 3},
        "lct": {"enabled": True, "lambda": {"tau": "U(0,3)"}},
        "optim": {"weight_decay": 1e-3, "decay_norm_and_bias": decay_all}})


def _decay_by_name(named, optimizer):
    by_id = {id(p): n for n, p in named}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            out[by_id[id(p)]] = group["weight_decay"]
    return out


@pytest.mark.parametrize("decay_all", [False, True])
def test_parameter_groups_and_their_decay(decay_all):
    cfg = _tiny_cfg(decay_all)
    model = build_model_from_config(cfg, (5,), lambda_dim=1)
    got = _decay_by_name(model.named_parameters(), build_optimizer(cfg, model))
    want = {**{n: 1e-3 for n in MATRICES}, **{n: (1e-3 if decay_all else 0.0) for n in ONE_D}}
    assert got == want
    # the stacked trainer decides the groups by the same rule on the unstacked shapes
    from torch.func import stack_module_state

    from lossdial.train.stacked import _stacked_optimizer

    models = [build_model_from_config(cfg, (5,), lambda_dim=1) for _ in range(3)]
    params, _ = stack_module_state(models)
    ndim = {k: p.ndim for k, p in models[0].named_parameters()}
    assert _decay_by_name(params.items(), _stacked_optimizer(cfg, params, ndim)) == want


def test_decay_of_one_d_parameters_is_applied_by_the_step():
    """One SGD step with zero gradients: w <- w - lr * wd * w exactly where the group decays, unchanged where not."""
    for decay_all in (False, True):
        cfg = _tiny_cfg(decay_all)
        cfg.optim.momentum = 0.0
        model = build_model_from_config(cfg, (5,), lambda_dim=1)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)  # the identity FiLM's last layers start at zero, which no decay could move
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = build_optimizer(cfg, model)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for n, p in model.named_parameters():
            if decay_all or n in MATRICES:  # shrunk by lr * wd = 1e-4 (float32: to 1e-6 relative)
                torch.testing.assert_close(p.detach(), before[n] * (1 - 0.1 * 1e-3), rtol=1e-6, atol=0)
                assert not torch.equal(p.detach(), before[n]), n
            else:
                assert torch.equal(p.detach(), before[n]), n


# ---- a trained cosine-head run: export, stacking ---------------------------------------------------------
@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory):
    from lossdial.train import train

    root = tmp_path_factory.mktemp("cosine")
    ov = ["train.epochs=5", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
          "train.ema_decay=null",  # the live weights: a trained model, not the EMA's near-initial average
          "model.film=reference", *LDAM, "lct.enabled=true", "lct.lambda={max_margin: 'U(0,0.5)'}",
          "evaluate.lambda=max_margin=0:0.5:3"]
    cfg = load_config(packaged_config_path("demo_digits"), ov)
    assert cfg.model.head == "cosine"
    train(cfg, root / "run", device="cpu")
    return root / "run"


def test_export_of_a_cosine_head_scores_like_the_conditioned_model(cosine_run, tmp_path):
    from lossdial.evaluate import load_run
    from lossdial.evaluate.scoring import score_lambdas
    from lossdial.export import export_run

    loaded = load_run(cosine_run)
    task = loaded.task()
    lam = {"max_margin": 0.3}
    run_scores = score_lambdas(loaded.model, task.val.x, [lam], loaded.space, transform=task.normalizer)[0]
    assert run_scores.std() > 0.02  # a trained model with spread-out scores, not a constant one
    export_run(loaded, "p", {"lambda": lam, "threshold": 0.5}, tmp_path / "exp")
    x = task.val.x.float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(tmp_path / "exp" / "model.ts"))
    with torch.no_grad():
        np.testing.assert_allclose(ts(x).numpy(), run_scores, atol=1e-5)
        ep = torch.export.load(str(tmp_path / "exp" / "model.pt2")).module()
        np.testing.assert_allclose(ep(x[:9]).numpy(), run_scores[:9], atol=1e-5)
    # the exported state dict holds FiLM at that lambda (a fixed affine map) and the normalised head: apply it
    # by hand to the run's features
    sd = load_file(str(tmp_path / "exp" / "weights.safetensors"))
    assert {"head.0.scale", "head.0.shift", "head.1.weight", "head.1.scale"} <= set(sd)
    assert float(sd["head.1.scale"]) == 30.0  # LDAM's s
    with torch.no_grad():
        f = loaded.model.features(task.normalizer(task.val.x)).double().numpy()
    h = f * sd["head.0.scale"].double().numpy() + sd["head.0.shift"].double().numpy()
    w = sd["head.1.weight"].double().numpy()
    cos = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    logits = 30.0 * cos
    p1 = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))
    np.testing.assert_allclose(p1, run_scores, atol=1e-5)


def test_stacked_cosine_heads_keep_each_members_scale(tmp_path, tiny_overrides):
    from lossdial.train import train, train_stacked

    common = tiny_overrides + ["train.epochs=1", *LDAM]
    cfgs = [load_config(packaged_config_path("demo_digits"), common + m)
            for m in (["seed=0", "loss.params.scale=30"], ["seed=1", "loss.params.scale=10"])]
    train_stacked(cfgs, [tmp_path / "s0", tmp_path / "s1"], device="cpu")
    for i, (cfg, s) in enumerate(zip(cfgs, (30.0, 10.0))):
        train(cfg, tmp_path / f"q{i}", device="cpu")
        a = load_file(str(tmp_path / f"s{i}" / "model.safetensors"))
        b = load_file(str(tmp_path / f"q{i}" / "model.safetensors"))
        assert float(a["fc.scale"]) == float(b["fc.scale"]) == s
        for k in a:
            torch.testing.assert_close(a[k].double(), b[k].double(), atol=1e-5, rtol=1e-4)


def test_legacy_run_configs_keep_their_head():
    from lossdial.config import pin_legacy_defaults

    old = {"model": {"backbone": "small_cnn"}, "loss": {"family": "ldam", "params": {}}}
    assert config_from_dict(pin_legacy_defaults(old)).model.head == "linear"
    focal = {"loss": {"family": "focal", "params": {"alpha": 0.75}}}
    assert config_from_dict(pin_legacy_defaults(focal)).loss.params["reduction"] == "weighted_mean"
    new = load_config(packaged_config_path("demo_digits"), ["loss.family=focal", "loss.params={alpha: 0.75}",
                                                            "lct.enabled=false"])
    assert config_from_dict(pin_legacy_defaults(new.to_dict())) == new  # a new run's saved config is untouched
