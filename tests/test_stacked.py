"""train_stacked: N runs trained as one vmapped model equal, weight for weight, N sequential train() runs."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.config import load_config, packaged_config_path
from lossdial.rundir import RunError
from lossdial.train import train
from lossdial.train.stacked import StackedConfigError, clip_grad_norm_per_member_, train_stacked

ATOL, RTOL = 1e-5, 1e-4

# three members: different seeds, loss parameters and LCT laws (same lambda name)
MEMBERS = [["seed=0", "loss.params.tau=1.0", "lct.lambda.tau=L(0,3,0.33)"],
           ["seed=1", "loss.params.tau=2.0", "loss.params.gamma=0.1", "lct.lambda.tau=U(0,2)"],
           ["seed=5", "loss.params.tau=0.5", "lct.lambda.tau=L(0,3,0.5)"]]


def _cfgs(common, members=MEMBERS):
    return [load_config(packaged_config_path("demo_digits"), common + m) for m in members]


def _max_diff(a_dir, b_dir):
    a = load_file(str(a_dir / "model.safetensors"))
    b = load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.allclose(a[k].double(), b[k].double(), atol=ATOL, rtol=RTOL), \
            (k, (a[k].double() - b[k].double()).abs().max().item())
        worst = max(worst, (a[k].double() - b[k].double()).abs().max().item())
    return worst


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lct", [True, False])
def test_stacked_equals_sequential_runs(tmp_path, tiny_overrides, lct):
    # demo config, small_cnn width 8 (BatchNorm), 2 epochs x 16 steps, crop augmentation, EMA and grad clip on
    common = tiny_overrides + ["train.batch_size=64", "train.augment=crop", "train.ema_decay=0.9",
                               "train.grad_clip=0.5", "lct.per_sample=true", f"lct.enabled={str(lct).lower()}"]
    cfgs = _cfgs(common)
    assert cfgs[0].train.ema_decay and cfgs[0].train.grad_clip and cfgs[0].model.backbone == "small_cnn"
    stacked = train_stacked(cfgs, [tmp_path / f"stacked{i}" for i in range(3)], device="cpu")
    for i, cfg in enumerate(cfgs):
        seq = train(cfg, tmp_path / f"seq{i}", device="cpu")
        assert stacked[i].steps == seq.steps == 32
        diff = _max_diff(tmp_path / f"stacked{i}", tmp_path / f"seq{i}")
        print(f"lct={lct} member {i}: max |stacked - sequential| = {diff:.3g}")
        s_log, q_log = _log(tmp_path / f"stacked{i}"), _log(tmp_path / f"seq{i}")
        assert [r["event"] for r in s_log] == [r["event"] for r in q_log] == ["start", "epoch", "epoch", "final"]
        for s, q in zip(s_log[1:3], q_log[1:3]):
            assert s["train_loss"] == pytest.approx(q["train_loss"], rel=1e-4)
            assert s["lr"] == q["lr"]
            assert ("val" in s) == ("val" in q)
            if "val" in q:
                assert s["val"]["auc"] == pytest.approx(q["val"]["auc"], abs=1e-3)
        assert [r["lambda"] for r in s_log[-1]["rows"]] == [r["lambda"] for r in q_log[-1]["rows"]]
        for f in ("config.yaml", "data.json", "lambda_space.json"):
            assert (tmp_path / f"stacked{i}" / f).is_file() == (tmp_path / f"seq{i}" / f).is_file()
            if (tmp_path / f"seq{i}" / f).is_file():
                assert (tmp_path / f"stacked{i}" / f).read_text() == (tmp_path / f"seq{i}" / f).read_text()
        assert (tmp_path / f"stacked{i}" / "COMPLETE").is_file()
    # the members really trained differently
    a = load_file(str(tmp_path / "stacked0" / "model.safetensors"))
    b = load_file(str(tmp_path / "stacked1" / "model.safetensors"))
    assert not torch.allclose(a["fc.weight"], b["fc.weight"])


def test_batchnorm_resnet_backbone_few_steps(tmp_path, tiny_overrides):
    # ResNet-20 (BatchNorm everywhere, option-A shortcuts) on 8x8 digits; no EMA, so the saved weights are
    # the live ones including every running mean / var and num_batches_tracked updated under vmap
    common = tiny_overrides + ["model.backbone=resnet20", "model.backbone_kwargs.width=4", "train.epochs=1",
                               "train.batch_size=256", "train.ema_decay=null", "train.augment=crop",
                               "train.eval_every=0"]
    cfgs = _cfgs(common)
    train_stacked(cfgs, [tmp_path / f"s{i}" for i in range(3)], device="cpu")
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"q{i}", device="cpu")
        diff = _max_diff(tmp_path / f"s{i}", tmp_path / f"q{i}")
        print(f"resnet20 member {i}: max |stacked - sequential| = {diff:.3g}")
        w = load_file(str(tmp_path / f"s{i}" / "model.safetensors"))
        steps = json.loads((tmp_path / f"s{i}" / "COMPLETE").read_text())["steps"]
        assert int(w["backbone.bn1.num_batches_tracked"]) == steps == 4
        assert not torch.equal(w["backbone.bn1.running_mean"], torch.zeros_like(w["backbone.bn1.running_mean"]))


def test_stacked_runs_work_with_sweep_and_pick(tmp_path, tiny_overrides):
    from lossdial.cli import app

    cfgs = _cfgs(tiny_overrides + ["train.epochs=1"], MEMBERS[:2])
    res = train_stacked(cfgs, [tmp_path / "a", tmp_path / "b"], device="cpu")
    done = json.loads((tmp_path / "a" / "COMPLETE").read_text())
    assert done["stack_members"] == 2 and done["seconds"] == pytest.approx(done["stack_seconds"] / 2)
    assert res[0].seconds == pytest.approx(done["seconds"])
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", str(tmp_path / "a"), "--lambda", "tau=0,1,2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["pick", str(tmp_path / "b"), "--maximize", "f1", "--name", "best", "--n-boot", "20",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    # an existing run directory is an error unless force
    with pytest.raises(RunError, match="force"):
        train_stacked(cfgs, [tmp_path / "a", tmp_path / "c"], device="cpu")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("override, field", [
    ("optim.lr=0.01", "optim.lr"),
    ("data.seed=3", "data.seed"),
    ("train.epochs=3", "train.epochs"),
    ("model.backbone_kwargs.width=4", "model.backbone_kwargs.width"),
    ("lct.enabled=false", "lct.enabled"),
])
def test_configs_that_differ_elsewhere_are_refused(tmp_path, tiny_overrides, override, field):
    cfgs = _cfgs(tiny_overrides, [[], ["seed=1", override]])
    with pytest.raises(StackedConfigError, match=field.replace(".", r"\.")) as e:
        train_stacked(cfgs, [tmp_path / "a", tmp_path / "b"], device="cpu")
    assert "may differ only in" in str(e.value)
    assert not (tmp_path / "a").exists()


def test_other_bad_inputs(tmp_path, tiny_overrides):
    cfgs = _cfgs(tiny_overrides + ["evaluate.lambda=null"], [["lct.lambda={tau: 'L(0,3,0.33)'}"],
                                                            ["seed=1", "lct.lambda={gamma: 'U(0,0.3)'}"]])
    with pytest.raises(StackedConfigError, match="names of lct.lambda"):
        train_stacked(cfgs, [tmp_path / "a", tmp_path / "b"], device="cpu")
    cfgs = _cfgs(tiny_overrides, MEMBERS[:2])
    with pytest.raises(StackedConfigError, match="output directories"):
        train_stacked(cfgs, [tmp_path / "a"], device="cpu")
    with pytest.raises(StackedConfigError, match="same output directory"):
        train_stacked(cfgs, [tmp_path / "a", tmp_path / "a"], device="cpu")
    with pytest.raises(StackedConfigError, match="at least one"):
        train_stacked([], [], device="cpu")
    drop = _cfgs(tiny_overrides + ["model.backbone=mlp", "model.backbone_kwargs={hidden: [16], dropout: 0.2}"],
                 MEMBERS[:2])
    with pytest.raises(StackedConfigError, match="dropout"):
        train_stacked(drop, [tmp_path / "d0", tmp_path / "d1"], device="cpu")
    for ov, msg in (("train.channels_last=true", "channels_last"), ("train.compile=default", "compile")):
        with pytest.raises(StackedConfigError, match=msg):
            train_stacked(_cfgs(tiny_overrides + [ov], MEMBERS[:2]), [tmp_path / "c0", tmp_path / "c1"], device="cpu")
    stream = _cfgs(tiny_overrides + ["train.loader=stream"], MEMBERS[:2])
    with pytest.raises(ValueError, match="stream"):
        train_stacked(stream, [tmp_path / "s0", tmp_path / "s1"], device="cpu")


def test_torchrun_is_refused(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(StackedConfigError, match="torchrun"):
        train_stacked(_cfgs(tiny_overrides, MEMBERS[:2]), [tmp_path / "a", tmp_path / "b"], device="cpu")


def test_per_member_clipping_matches_clip_grad_norm():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (2, 4)]
    grads = [torch.randn((3, *s), generator=g) * (k + 1) for k, s in enumerate(shapes)]
    stacked = [torch.zeros((3, *s), requires_grad=True) for s in shapes]
    for p, gr in zip(stacked, grads):
        p.grad = gr.clone()
    totals = clip_grad_norm_per_member_(stacked, 0.5)
    for n in range(3):
        ps = [torch.zeros(s, requires_grad=True) for s in shapes]
        for p, gr in zip(ps, grads):
            p.grad = gr[n].clone()
        total = torch.nn.utils.clip_grad_norm_(ps, 0.5)
        assert torch.allclose(totals[n], total)
        for p, s in zip(ps, stacked):
            assert torch.allclose(p.grad, s.grad[n], atol=1e-7)
