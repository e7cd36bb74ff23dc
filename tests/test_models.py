"""Tests for lossdial.models: FiLM, ConditionedClassifier, backbones, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossdial.models import (
    BACKBONES,
    CifarResNet,
    ConditionedClassifier,
    FiLM,
    MLPBackbone,
    SmallCNN,
    build_backbone,
    build_model,
    count_parameters,
    torchvision_backbone,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- FiLM
@pytest.mark.parametrize("z_shape", [(5, 3), (1, 3), (3,)])
def test_identity_film_is_identity_at_init(z_shape):
    torch.manual_seed(0)
    film = FiLM(3, 8, mode="identity")
    h = torch.randn(5, 8, generator=_gen())
    for seed in range(3):
        z = torch.randn(*z_shape, generator=_gen(seed)) * 10
        assert torch.equal(film(h, z), h)


def test_reference_film_depends_on_z_at_init():
    torch.manual_seed(0)
    film = FiLM(2, 8, mode="reference")
    h = torch.randn(4, 8, generator=_gen())
    z1, z2 = torch.tensor([0.0, 0.0]), torch.tensor([3.0, -1.0])
    assert not torch.allclose(film(h, z1), film(h, z2))
    sigma, _ = film.sigma_mu(z2)
    assert not torch.allclose(sigma, torch.ones_like(sigma))


def _set_film_weights(film: FiLM, seed: int = 1) -> None:
    g = _gen(seed)
    with torch.no_grad():
        for p in film.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _np(t):
    return t.detach().double().numpy()


def _hand_mlp(net, z):
    """Linear -> ReLU -> Linear from the layers' weights, in float64 NumPy."""
    w1, b1, w2, b2 = (_np(t) for t in (net[0].weight, net[0].bias, net[2].weight, net[2].bias))
    return np.maximum(z @ w1.T + b1, 0.0) @ w2.T + b2


def _hand_film(film, h, z):
    """sigma * h + mu (reference) or h * (1 + sigma) + mu (identity), by hand."""
    sigma, mu = _hand_mlp(film.sigma_net, z), _hand_mlp(film.mu_net, z)
    return (sigma if film.mode == "reference" else 1.0 + sigma) * h + mu


@pytest.mark.parametrize("mode", ["identity", "reference"])
def test_film_formula(mode):
    film = FiLM(2, 6, hidden=16, mode=mode)
    _set_film_weights(film)
    h = torch.randn(4, 6, generator=_gen(2))
    z = torch.randn(4, 2, generator=_gen(3))
    want = _hand_film(film, _np(h), _np(z))
    with torch.no_grad():
        out = film(h, z)
        scale, shift = film.scale_shift(z)
        sigma, mu = film.sigma_mu(z)
    np.testing.assert_allclose(_np(out), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(sigma), _hand_mlp(film.sigma_net, _np(z)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(mu), _hand_mlp(film.mu_net, _np(z)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(scale * h + shift), want, rtol=1e-5, atol=1e-5)
    # one z row broadcasts over the batch
    with torch.no_grad():
        one = film(h, z[1])
    np.testing.assert_allclose(_np(one), _hand_film(film, _np(h), _np(z[1:2])), rtol=1e-5, atol=1e-5)


def test_film_validation():
    with pytest.raises(ValueError, match="identity, reference"):
        FiLM(1, 4, mode="bogus")
    film = FiLM(2, 4)
    with pytest.raises(ValueError, match="lambda_dim=2"):
        film(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="batch size"):
        film(torch.randn(3, 4), torch.randn(2, 2))


# ------------------------------------------------------------------------------ ConditionedClassifier
_BACKBONE_CASES = {
    "resnet20": dict(input_shape=(3, 8, 8)),
    "small_cnn": dict(input_shape=(1, 8, 8), width=8),
    "mlp": dict(input_shape=(1, 8, 8), hidden=(32, 16)),
}


def _hand_head(model, feats, z):
    """The classifier head by hand (float64): Linear(F, C) with FiLM before it ("features") or after ("logits")."""
    w, bias = _np(model.fc.weight), _np(model.fc.bias)
    if model.film is None:
        return feats @ w.T + bias
    if model.placement == "features":
        return _hand_film(model.film, feats, z) @ w.T + bias
    return _hand_film(model.film, feats @ w.T + bias, z)


@pytest.mark.parametrize("name", list(_BACKBONE_CASES))
@pytest.mark.parametrize("placement", ["features", "logits"])
def test_identity_film_model_starts_as_the_plain_model(name, placement):
    """Identity FiLM: at initialisation the conditioned model's logits equal, bit for bit, those of the
    unconditioned model with the same backbone and linear layer, for every z; once FiLM's weights move,
    lambda changes the logits."""
    kw = _BACKBONE_CASES[name]
    plain = build_model(name, num_classes=3, lambda_dim=0, seed=0, **kw).eval()
    cond = build_model(name, num_classes=3, lambda_dim=2, film="identity", placement=placement, seed=1,
                       **kw).eval()
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("film.") for k in missing)
    x = torch.randn(4, *kw["input_shape"], generator=_gen())
    with torch.no_grad():
        ref = plain(x)
        for z in (torch.zeros(2), torch.randn(4, 2, generator=_gen(1)) * 10, torch.tensor([[3.0, -7.0]])):
            assert torch.equal(cond(x, z), ref)
        _set_film_weights(cond.film)
        z1, z2 = torch.tensor([0.0, 1.0]), torch.tensor([1.0, -1.0])
        assert (cond(x, z1) - cond(x, z2)).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(_BACKBONE_CASES))
@pytest.mark.parametrize("film,placement", [(None, "features"), ("identity", "features"),
                                            ("reference", "features"), ("reference", "logits"),
                                            ("identity", "logits")])
def test_head_is_the_film_formula_by_hand(name, film, placement):
    """logits = W (s(z) * f + mu(z)) + b ("features") or s(z) * (W f + b) + mu(z) ("logits"), with
    s = sigma (reference) or 1 + sigma (identity), computed from the weights in float64; a plain head
    ignores z; fold_head (one Linear) gives the same logits."""
    kw = _BACKBONE_CASES[name]
    lambda_dim = 0 if film is None else 2
    model = build_model(name, num_classes=3, lambda_dim=lambda_dim, film=film, placement=placement, seed=0,
                        **kw).eval()
    assert model.conditioned == (film is not None)
    if film is not None:
        _set_film_weights(model.film)
    x = torch.randn(4, *kw["input_shape"], generator=_gen())
    z = None if film is None else torch.randn(4, 2, generator=_gen(1))
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x, z)
    want = _hand_head(model, _np(feats), None if z is None else _np(z))
    np.testing.assert_allclose(_np(logits), want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        if film is None:  # a plain head ignores z
            assert torch.equal(model(x, torch.randn(4, 2)), logits)
        else:
            np.testing.assert_allclose(_np(model.fold_head(z[:1])(feats)), _hand_head(model, _np(feats), _np(z[:1])),
                                       rtol=1e-4, atol=1e-4)
            assert (model(x, z[:1]) - model(x, z[1:2])).abs().max() > 1e-2  # lambda changes the logits


def test_z_broadcasting_and_errors():
    model = build_model("mlp", num_classes=2, lambda_dim=3, film="reference", in_features=10, hidden=(8,),
                        seed=0).eval()
    x = torch.randn(5, 10, generator=_gen())
    z = torch.tensor([0.1, -0.5, 2.0])
    with torch.no_grad():
        full = model(x, z.expand(5, 3))
        torch.testing.assert_close(model(x, z), full)
        torch.testing.assert_close(model(x, z[None]), full)
    with pytest.raises(ValueError, match="pass z = LambdaSpace.encode"):
        model(x)
    with pytest.raises(ValueError, match="lambda_dim=3"):
        model(x, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="lambda_dim=3"):
        model(x, torch.zeros(2))


def test_plain_model_when_lambda_dim_zero_or_film_none():
    assert not build_model("mlp", 2, lambda_dim=0, in_features=4, hidden=(4,)).conditioned
    m = build_model("mlp", 2, lambda_dim=2, film=None, in_features=4, hidden=(4,), seed=0)
    assert not m.conditioned and m.film is None and not any("film" in k for k in m.state_dict())
    x = torch.randn(3, 4, generator=_gen())
    lin = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]  # hidden layer, then the head
    want = np.maximum(_np(x) @ _np(lin[0].weight).T + _np(lin[0].bias), 0) @ _np(lin[1].weight).T + _np(lin[1].bias)
    with torch.no_grad():
        np.testing.assert_allclose(_np(m(x)), want, rtol=1e-5, atol=1e-6)
        assert torch.equal(m(x, torch.randn(3, 2)), m(x))


def test_classifier_validation():
    with pytest.raises(ValueError, match="placement"):
        ConditionedClassifier(nn.Identity(), 4, 2, lambda_dim=1, placement="middle")
    with pytest.raises(ValueError, match="identity, reference"):
        ConditionedClassifier(nn.Identity(), 4, 2, lambda_dim=1, film="foo")


def test_film_dims_follow_placement():
    m = build_model("resnet32", 2, lambda_dim=3, placement="features")
    assert m.film.feature_dim == 64 and m.film.lambda_dim == 3 and m.film.hidden == 128
    m = build_model("resnet32", 2, lambda_dim=3, placement="logits")
    assert m.film.feature_dim == 2


@pytest.mark.parametrize("mode", ["identity", "reference"])
@pytest.mark.parametrize("placement", ["features", "logits"])
def test_gradient_reaches_film(mode, placement):
    model = build_model("small_cnn", 2, lambda_dim=2, film=mode, placement=placement, input_shape=(1, 8, 8),
                        width=4, seed=0)
    x = torch.randn(6, 1, 8, 8, generator=_gen())
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    z = torch.rand(6, 2, generator=_gen(1))
    nn.functional.cross_entropy(model(x, z), y).backward()
    film = model.film
    if mode == "reference":
        grads = [p.grad for p in film.parameters()]
    else:  # zero-initialised last layers still get gradients at init
        grads = [film.sigma_net[-1].weight.grad, film.sigma_net[-1].bias.grad,
                 film.mu_net[-1].weight.grad, film.mu_net[-1].bias.grad]
    for g in grads:
        assert g is not None and g.abs().sum() > 0


def test_build_model_seed_is_reproducible_and_leaves_global_rng():
    state = torch.get_rng_state()
    a = build_model("resnet20", 2, lambda_dim=1, seed=3)
    b = build_model("resnet20", 2, lambda_dim=1, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# ----------------------------------------------------------------------------------------- backbones
def _cifar_resnet_params(depth, classes, in_ch=3, w=16):
    """Conv weights (no bias) + BatchNorm (2 per channel) + the Linear head, block by block."""
    n = (depth - 2) // 6
    total = in_ch * w * 9 + 2 * w  # stem conv + BN
    c_in = w
    for c in (w, 2 * w, 4 * w):
        for _ in range(n):
            total += c_in * c * 9 + 2 * c + c * c * 9 + 2 * c  # two 3x3 conv-BN; option-A shortcut is free
            c_in = c
    return total + 4 * w * classes + classes


@pytest.mark.parametrize("depth,expected", [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_cifar_resnet_parameter_count(depth, expected):
    # the paper's 0.27M / 0.46M / 0.85M for 10 classes, and the count by hand for others
    model = build_model(f"resnet{depth}", num_classes=10)
    assert count_parameters(model) == expected == _cifar_resnet_params(depth, 10)
    assert model.feature_dim == 64
    assert count_parameters(build_model(f"resnet{depth}", num_classes=2)) == _cifar_resnet_params(depth, 2)
    assert count_parameters(build_model(f"resnet{depth}", num_classes=2, in_channels=1, width=8)) == \
        _cifar_resnet_params(depth, 2, in_ch=1, w=8)
    # FiLM on the 64-d feature: two MLPs d -> hidden -> 64
    film = build_model(f"resnet{depth}", 2, lambda_dim=3, film="reference", film_hidden=128)
    assert count_parameters(film) - _cifar_resnet_params(depth, 2) == 2 * (3 * 128 + 128 + 128 * 64 + 64)


def test_option_a_shortcut_subsamples_and_zero_pads():
    """With the residual branch switched off (last BN scale and shift 0) a stride-2 16->32 block is
    relu(shortcut(x)): x[:, :, ::2, ::2] in channels 8..23 and zeros in the 8 channels either side."""
    from lossdial.models.cifar_resnet import BasicBlock

    block = BasicBlock(16, 32, stride=2).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        x = torch.randn(2, 16, 7, 9, generator=_gen())
        out = block(x)
    want = torch.zeros(2, 32, 4, 5)
    want[:, 8:24] = torch.relu(x[:, :, ::2, ::2])
    assert torch.equal(out, want)


def test_cifar_resnet_features_and_depth_validation():
    net = CifarResNet(32)
    assert net.feature_dim == 64
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    small = CifarResNet(20, in_channels=1)
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 64)
    assert small(torch.randn(2, 1, 9, 11)).shape == (2, 64)  # odd sizes: option-A shortcut matches conv
    for bad in (33, 2, 19):
        with pytest.raises(ValueError, match="6n \\+ 2"):
            CifarResNet(bad)
    # option-A shortcuts are parameter-free: no 1x1 conv anywhere
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())


def _randomise_batchnorm(net):
    g = _gen(9)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _bn(x, m, dims):
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = (m.weight / torch.sqrt(m.running_var + m.eps)).reshape(shape)
    return (x - m.running_mean.reshape(shape)) * scale + m.bias.reshape(shape)


def test_mlp_by_hand():
    """Flatten -> [Linear -> BatchNorm1d -> ReLU] x 2 in eval mode, layer by layer in float64."""
    mlp = MLPBackbone(64, hidden=(32, 16), dropout=0.1, batchnorm=True).double()
    assert mlp.feature_dim == 16 and MLPBackbone(5, hidden=()).feature_dim == 5
    _randomise_batchnorm(mlp)
    lin = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    bns = [m for m in mlp.modules() if isinstance(m, nn.BatchNorm1d)]
    x = torch.randn(4, 1, 8, 8, generator=_gen(), dtype=torch.float64)
    h = x.reshape(4, 64)
    for li, bn in zip(lin, bns):
        h = torch.relu(_bn(h @ li.weight.T + li.bias, bn, 1))
    with torch.no_grad():
        torch.testing.assert_close(mlp.eval()(x), h.detach(), rtol=1e-12, atol=1e-12)
        mlp.train()  # dropout 0.1 is on in training mode
        assert not torch.equal(mlp(x), h.detach())


def test_small_cnn_by_hand():
    """conv3x3(w)-BN-ReLU, conv3x3(w)-BN-ReLU, maxpool 2, conv3x3(2w)-BN-ReLU, global average pool."""
    cnn = SmallCNN(in_channels=1, width=4).double().eval()
    assert cnn.feature_dim == 8
    _randomise_batchnorm(cnn)
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8] and all(c.bias is None for c in convs)
    x = torch.randn(3, 1, 8, 8, generator=_gen(), dtype=torch.float64)
    with torch.no_grad():
        h = torch.relu(_bn(F.conv2d(x, convs[0].weight, padding=1), bns[0], 2))
        h = torch.relu(_bn(F.conv2d(h, convs[1].weight, padding=1), bns[1], 2))
        h = h.reshape(3, 4, 4, 2, 4, 2).amax(dim=(3, 5))  # 2x2 max pool
        h = torch.relu(_bn(F.conv2d(h, convs[2].weight, padding=1), bns[2], 2)).mean(dim=(2, 3))
        torch.testing.assert_close(cnn(x), h, rtol=1e-12, atol=1e-12)


def test_registry_names_and_errors():
    for name in ("resnet20", "resnet32", "resnet56", "mlp", "small_cnn", "resnet18", "resnet50",
                 "resnext50_32x4d", "convnext_tiny"):
        assert name in BACKBONES
    with pytest.raises(ValueError, match="resnet32.*small_cnn"):
        build_backbone("nope")
    with pytest.raises(ValueError, match="resnet50"):
        build_backbone("tv:resnet20")  # tv: prefix is for torchvision names only
    with pytest.raises(ValueError, match="bogus.*accepts: width"):
        build_backbone("resnet20", bogus=1)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", 2, in_features=4, hiden=(4,))
    with pytest.raises(ValueError, match="input_shape"):
        build_backbone("mlp")
    with pytest.raises(ValueError, match="disagrees"):
        build_backbone("small_cnn", in_channels=3, input_shape=(1, 8, 8))
    net, dim = build_backbone("small_cnn", input_shape=(1, 8, 8), width=4)
    assert dim == 8 and net(torch.randn(2, 1, 8, 8)).shape == (2, 8)
    net, dim = build_backbone("mlp", input_shape=(7,), hidden=(5,))
    assert dim == 5


def test_count_parameters_trainable_only():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    m[0].weight.requires_grad_(False)
    assert count_parameters(m) == 16 + 10
    assert count_parameters(m, trainable_only=True) == 4 + 10


# ------------------------------------------------------------------------------- torchvision backbones
def test_torchvision_resnet18_random_init_and_weights_roundtrip(tmp_path):
    torch.manual_seed(0)
    net, dim = build_backbone("resnet18")
    assert dim == 512
    net.eval()
    x = torch.randn(2, 3, 64, 64, generator=_gen())
    with torch.no_grad():
        ref = net(x)
    assert ref.shape == (2, 512)

    # a full torchvision state dict (with an fc classifier) as a user would have from ImageNet training
    full = {**net.state_dict(), "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "r18.pth"
    torch.save(full, path)
    loaded, dim2 = build_backbone("tv:resnet18", weights_path=path)
    assert dim2 == 512
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), ref)

    from safetensors.torch import save_file

    st = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    loaded_st, _ = torchvision_backbone("resnet18", weights_path=st)
    assert all(torch.equal(loaded_st.state_dict()[k], v) for k, v in net.state_dict().items())

    # DataParallel-style prefix and a wrapping checkpoint dict are unwrapped
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, wrapped)
    loaded_w, _ = torchvision_backbone("resnet18", weights_path=wrapped)
    assert all(torch.equal(loaded_w.state_dict()[k], v) for k, v in net.state_dict().items())

    # grayscale stem adaptation keeps the rest of the weights
    gray, _ = torchvision_backbone("resnet18", in_channels=1, weights_path=path)
    torch.testing.assert_close(gray.conv1.weight, net.conv1.weight.sum(1, keepdim=True))
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_torchvision_bad_weights_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="could not read weights file"):
        torchvision_backbone("resnet18", weights_path=garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="missing keys: .*unexpected keys: extra.weight"):
        torchvision_backbone("resnet18", weights_path=wrong)
    r34 = tmp_path / "r34.pth"
    net34, _ = torchvision_backbone("resnet34")
    torch.save(net34.state_dict(), r34)
    with pytest.raises(ValueError, match="unexpected keys: layer1.2"):
        torchvision_backbone("resnet18", weights_path=r34)
    with pytest.raises(FileNotFoundError):
        torchvision_backbone("resnet18", weights_path=tmp_path / "absent.pth")


def test_torchvision_unknown_name():
    with pytest.raises(ValueError, match="convnext_tiny"):
        torchvision_backbone("vgg16")


def test_torchvision_in_model_logits_placement():
    model = build_model("resnet18", num_classes=2, lambda_dim=1, film="reference", placement="logits",
                        in_channels=1, seed=0).eval()
    assert model.film.feature_dim == 2  # FiLM on the two logits
    x = torch.randn(2, 1, 32, 32, generator=_gen())
    z = torch.tensor([0.5])
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x, z)
    assert feats.shape == (2, 512)
    np.testing.assert_allclose(_np(logits), _hand_head(model, _np(feats), _np(z[None])), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name,dim", [("resnet50", 2048), ("resnext50_32x4d", 2048), ("convnext_tiny", 768),
                                      ("resnext101_32x8d", 2048), ("convnext_base", 1024)])
def test_torchvision_large_backbones(name, dim, tmp_path):
    net, d = build_backbone(f"tv:{name}", in_channels=1)
    assert d == dim
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 64, 64)).shape == (1, dim)
    full, _ = torchvision_backbone(name)
    path = tmp_path / "w.pth"
    torch.save(full.state_dict(), path)
    loaded, _ = torchvision_backbone(name, weights_path=path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in full.state_dict().items())


@pytest.mark.parametrize("backbone,input_shape,kw", [("mlp", (12,), {"hidden": (8,)}),
                                                     ("small_cnn", (1, 8, 8), {"width": 4}),
                                                     ("resnet20", (3, 8, 8), {})])
def test_build_model_accepts_factory_call(backbone, input_shape, kw):
    # the keyword set used by lossdial.train.factory.build_model_from_config
    for lambda_dim, film in ((0, None), (2, "identity")):
        model = build_model(backbone=backbone, num_classes=2, lambda_dim=lambda_dim, film=film, film_hidden=16,
                            placement="features", in_channels=input_shape[0] if len(input_shape) == 3 else 1,
                            input_shape=input_shape, **kw)
        z = None if film is None else torch.zeros(2)
        assert model.eval()(torch.randn(3, *input_shape), z).shape == (3, 2)
        if film is None:
            assert model.film is None and not model.conditioned
        else:  # the keywords reached the FiLM layer
            assert (model.film.mode, model.film.hidden, model.film.lambda_dim, model.film.feature_dim) == \
                ("identity", 16, 2, model.feature_dim)
