import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lossdial.config import load_config, packaged_config_path
from lossdial.rundir import RunError
from lossdial.train import lr_factor, train


def _cfg(overrides):
    return load_config(packaged_config_path("demo_digits"), overrides)


@pytest.mark.parametrize("lct", [True, False])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, tiny_overrides, lct, kill_at):
    ov = tiny_overrides + ["train.epochs=2", "train.batch_size=64", "train.checkpoint_every=5",
                           f"lct.enabled={str(lct).lower()}", "lct.per_sample=true", "train.augment=crop"]
    cfg = _cfg(ov)
    full = train(cfg, tmp_path / "full", device="cpu")
    # 16 steps per epoch: kill at step 23 (mid-epoch 2, 3 steps after the checkpoint at step 20)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", device="cpu", callback=kill_at(23))
    assert not (tmp_path / "killed" / "COMPLETE").exists()
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "killed", device="cpu")
    resumed = train(cfg, tmp_path / "killed", device="cpu", resume=True)
    assert resumed.steps == full.steps
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


def test_run_directory_contents_and_protection(tmp_path, tiny_overrides):
    cfg = _cfg(tiny_overrides)
    out = tmp_path / "run"
    res = train(cfg, out, device="cpu")
    for f in ("config.yaml", "data.json", "splits.npz", "lambda_space.json", "checkpoint.pt",
              "model.safetensors", "metrics.jsonl", "COMPLETE"):
        assert (out / f).is_file(), f
    data = json.loads((out / "data.json").read_text())
    assert data["counts"]["train"] == [data["counts"]["train"][0], data["counts"]["train"][0] // 50]
    space = json.loads((out / "lambda_space.json").read_text())
    assert space["names"] == ["tau"] and space["supports"]["tau"] == [0.0, 3.0]
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["start", "epoch", "epoch", "final"]
    assert "val" in log[1]  # eval_every=1 logs validation metrics
    assert res.final["split"] == "val" and len(res.final["rows"]) == 7
    with pytest.raises(RunError, match="already holds a finished run"):
        train(cfg, out, device="cpu")
    again = train(cfg, out, device="cpu", force=True)
    assert again.steps == res.steps
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a lossdial run"):
        train(cfg, tmp_path / "other", device="cpu")
    with pytest.raises(RunError, match="not a lossdial run"):
        train(cfg, tmp_path / "other", device="cpu", force=True)


def test_resume_rejects_a_different_config(tmp_path, tiny_overrides, kill_at):
    cfg = _cfg(tiny_overrides)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", device="cpu", callback=kill_at(10))
    with pytest.raises(RunError, match="differs"):
        train(_cfg(tiny_overrides + ["optim.lr=0.01"]), tmp_path / "r", device="cpu", resume=True)


def test_same_seed_same_weights_different_seed_differs(tmp_path, tiny_overrides):
    a = train(_cfg(tiny_overrides), tmp_path / "a", device="cpu")
    b = train(_cfg(tiny_overrides), tmp_path / "b", device="cpu")
    c = train(_cfg(tiny_overrides + ["seed=1"]), tmp_path / "c", device="cpu")
    wa, wb, wc = (load_file(str(r.run_dir / "model.safetensors")) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    # seeds change training, not the data subsample
    assert (a.run_dir / "splits.npz").read_bytes() == (c.run_dir / "splits.npz").read_bytes()


def test_lr_schedule_warmup_step_cosine():
    cfg = _cfg(["schedule.kind=step", "schedule.warmup_epochs=1", "train.epochs=10"])
    f = [lr_factor(s, 100, 10, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[79] == 1.0 and f[80] == pytest.approx(0.1) and f[90] == pytest.approx(0.01)
    cos = _cfg(["schedule.kind=cosine", "schedule.warmup_epochs=0", "train.epochs=10"])
    g = [lr_factor(s, 100, 10, cos) for s in range(101)]
    assert g[0] == pytest.approx(1.0) and g[50] == pytest.approx(0.5) and g[100] == pytest.approx(0.0)


def test_lambda_fed_to_loss_equals_lambda_encoded_for_net(tmp_path, tiny_overrides, monkeypatch):
    """The same draw goes to the network (encoded) and to the loss (raw values)."""
    from lossdial.conditioning import LambdaSpace

    seen = []
    orig_encode = LambdaSpace.encode

    def spy_encode(self, lam, batch_size=None):
        z = orig_encode(self, lam, batch_size)
        seen.append(("net", {k: torch.as_tensor(v).clone() for k, v in lam.items()}))
        return z

    monkeypatch.setattr(LambdaSpace, "encode", spy_encode)
    from lossdial.losses import VSLoss

    orig_fwd = VSLoss.forward

    def spy_fwd(self, logits, targets, lam=None):
        seen.append(("loss", {k: v.clone() for k, v in lam.items()}))
        return orig_fwd(self, logits, targets, lam)

    monkeypatch.setattr(VSLoss, "forward", spy_fwd)
    train(_cfg(tiny_overrides + ["train.epochs=1", "train.eval_every=0", "lct.per_sample=true"]),
          tmp_path / "r", device="cpu")
    pairs = [(seen[i], seen[i + 1]) for i in range(0, len(seen) - 1) if seen[i][0] == "net" and seen[i + 1][0] == "loss"]
    assert len(pairs) >= 5
    for (_, a), (_, b) in pairs:
        assert torch.equal(a["tau"], b["tau"]) and a["tau"].ndim == 1


def test_sigkilled_cli_run_resumes_to_identical_weights(tmp_path, tiny_overrides):
    """A real `kill -9` of a `lossdial train` process mid-run, then `lossdial train --out RUN --resume`: the
    same weights as an uninterrupted run. (The uninterrupted run and the resume run in this process, both
    single-threaded like the killed one, so the arithmetic is the same: only the kill needs a process.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from lossdial.cli import app

    ov = tiny_overrides + ["train.epochs=3", "train.batch_size=64", "train.checkpoint_every=3", "train.eval_every=0"]
    assert torch.get_num_threads() == 1  # tests/conftest.py
    train(_cfg(ov), tmp_path / "full", device="cpu")
    sets = [a for o in ov for a in ("--set", o)]
    cmd = [sys.executable, "-m", "lossdial", "train", "configs/demo_digits.yaml", "-q", "--device", "cpu"] + sets
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.abspath("src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (not log.exists() or '"epoch"' not in log.read_text()):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # in epoch 2 of 3, a few steps after a mid-epoch checkpoint
    proc.wait()
    if (tmp_path / "killed" / "COMPLETE").exists():
        pytest.skip("the run finished before it could be killed (machine too fast for this test)")
    ck = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert 0 < ck["state"]["step"] < 3 * 16  # there is something left to resume
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "killed"), "--resume", "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert f"resumed at step {ck['state']['step']} of {3 * 16}" in r.output  # where it went on from, as saved
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_equals_torch_averaged_model_without_host_syncs():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from lossdial.models import build_model
    from lossdial.train.ema import EMA

    torch.manual_seed(0)
    model = build_model(backbone="small_cnn", num_classes=2, lambda_dim=1, film="identity", in_channels=1,
                        input_shape=(1, 8, 8), width=8)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ours = EMA(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        model(torch.randn(16, 1, 8, 8), torch.randn(16, 1)).sum().backward()  # BN stats move too
        opt.step()
        opt.zero_grad()
        ref.update_parameters(model)
        ours.update_parameters(model)
    a, b = ref.state_dict(), ours.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    again = EMA(model, 0.9)
    again.load_state_dict(b)  # resume: the update count comes back from the state dict
    assert again._n == 4


@pytest.mark.parametrize("switch", ["train.channels_last=true", "optim.fused=true", "train.checkpoint_epochs=2"])
def test_speed_switches_train_the_same_weights(tmp_path, tiny_overrides, switch):
    """Each fast-path switch against the plain path over a few epochs on CPU (same seeds, same batches)."""
    ov = tiny_overrides + ["train.epochs=2", "train.batch_size=64", "train.augment=crop_flip_trivial"]
    plain = train(_cfg(ov), tmp_path / "plain", device="cpu")
    fast = train(_cfg(ov + [switch]), tmp_path / "fast", device="cpu")
    a = load_file(str(plain.run_dir / "model.safetensors"))
    b = load_file(str(fast.run_dir / "model.safetensors"))
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, worst
    if switch.startswith("train.checkpoint"):
        assert worst == 0.0


def test_checkpoint_epochs_resume_from_latest_checkpoint(tmp_path, tiny_overrides, kill_at):
    ov = tiny_overrides + ["train.epochs=4", "train.batch_size=64", "train.checkpoint_epochs=2"]
    cfg = _cfg(ov)
    full = train(cfg, tmp_path / "full", device="cpu")
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 4: resumes from the checkpoint after epoch 2
        train(cfg, tmp_path / "killed", device="cpu", callback=kill_at(3 * 16 + 5))
    ck = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert ck["state"]["epoch"] == 2
    train(cfg, tmp_path / "killed", device="cpu", resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.steps == 4 * 16


@pytest.mark.slow
def test_compiled_forward_trains_like_eager(tmp_path, tiny_overrides):
    """train.compile (experimental) on CPU: a C++ compiler is needed; a few steps against eager."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    ov = tiny_overrides + ["train.epochs=1", "train.batch_size=64", "train.drop_last=true"]
    eager = train(_cfg(ov), tmp_path / "eager", device="cpu")
    comp = train(_cfg(ov + ["train.compile=default"]), tmp_path / "compiled", device="cpu")
    a = load_file(str(eager.run_dir / "model.safetensors"))
    b = load_file(str(comp.run_dir / "model.safetensors"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-3


def test_saved_weights_are_the_ema_of_the_trained_weights(tmp_path, tiny_overrides, monkeypatch):
    """model.safetensors is the exponential moving average of the weights after each optimizer step,
    e_1 = w_1, e_k = d e_{k-1} + (1 - d) w_k (float parameters and BatchNorm statistics), computed here in
    float64 from the weights seen at every step; it is not the raw final weights (checkpoint "model")."""
    import lossdial.train.loop as loop

    seen = []

    class Recording(loop.EMA):
        def update_parameters(self, model):
            seen.append({k: v.detach().double().clone() for k, v in model.state_dict().items()
                         if v.is_floating_point()})
            super().update_parameters(model)

    monkeypatch.setattr(loop, "EMA", Recording)
    decay = 0.8
    res = train(_cfg(tiny_overrides + ["train.epochs=1", "train.eval_every=0", f"train.ema_decay={decay}"]),
                tmp_path / "r", device="cpu")
    assert len(seen) == res.steps > 3
    ema = dict(seen[0])
    for w in seen[1:]:
        ema = {k: decay * ema[k] + (1 - decay) * w[k] for k in ema}
    saved = load_file(str(tmp_path / "r" / "model.safetensors"))
    raw = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["model"]
    assert set(ema) <= set(saved) and "fc.weight" in ema
    for k, v in ema.items():
        torch.testing.assert_close(saved[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(raw[k].double(), seen[-1][k], rtol=0, atol=0, msg=k)  # raw = last step
    assert max(float((saved[k].double() - raw[k].double()).abs().max()) for k in ema) > 1e-3


def test_ldam_drw_switches_to_effective_number_weights_at_drw_epoch(tmp_path, tiny_overrides, monkeypatch):
    """A 2-epoch LDAM-DRW run with drw_epoch=1: every loss value of epoch 1 is the plain mean of the LDAM
    per-sample losses and every one of epoch 2 the mean weighted by (1 - beta) / (1 - beta^n_c), beta=0.9999,
    both computed here by hand from the logits and labels the loss was given."""
    from lossdial.losses import LDAMLoss

    calls = []
    orig = LDAMLoss.forward

    def spy(self, logits, targets, lam=None):
        out = orig(self, logits, targets, lam)
        calls.append((logits.detach().double().numpy(), targets.numpy().copy(), float(out.detach())))
        return out

    monkeypatch.setattr(LDAMLoss, "forward", spy)
    ov = tiny_overrides + ["train.eval_every=0", "lct.enabled=false", "loss.family=ldam",
                           "loss.params={max_margin: 0.5, scale: 30.0, drw_epoch: 1}"]
    train(_cfg(ov), tmp_path / "r", device="cpu")
    start = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    per_epoch, n = start["steps_per_epoch"], np.asarray(start["train_counts"], float)
    assert len(calls) == 2 * per_epoch

    margin = 0.5 * n ** -0.25 / (n ** -0.25).max()
    beta = 0.9999
    class_w = (1 - beta) / (1 - beta ** n)
    weighted_differs = 0
    for i, (z, y, got) in enumerate(calls):
        # LDAM's default head is cosine (logits = 30 cos): the margin comes off the cosines z / 30
        zz = 30.0 * (z / 30.0 - np.eye(2)[y] * margin[y][:, None])
        m = zz.max(1)
        l_i = m + np.log(np.exp(zz - m[:, None]).sum(1)) - zz[np.arange(len(y)), y]
        plain, weighted = l_i.mean(), (class_w[y] * l_i).sum() / class_w[y].sum()
        assert got == pytest.approx(plain if i < per_epoch else weighted, rel=1e-5, abs=1e-8), (i, got, plain, weighted)
        weighted_differs += abs(weighted - plain) > 1e-3 * abs(plain)
    assert weighted_differs > per_epoch  # the two formulas really differ on these batches
