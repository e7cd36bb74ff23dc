"""Data-parallel training under torchrun: sharding, the global weighted-mean loss, and a 2-process gloo run
whose weights match a single-process run with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lossdial.losses import LOSSES, build_loss
from lossdial.train.distributed import DistContext, loss_parts

SRC = Path(__file__).resolve().parents[1] / "src"


def _ctx(rank, world):
    return DistContext(rank=rank, world_size=world, local_rank=rank, backend="gloo", owns_group=False)


def test_shards_cover_the_global_batch_once():
    for n in (1, 7, 64, 65):
        for world in (1, 2, 3, 4):
            parts = [_ctx(r, world).bounds(n) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # contiguous, in rank order
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    lam = {"tau": torch.linspace(0, 3, 10), "gamma": torch.tensor(0.2)}  # per-sample and per-batch
    z = torch.arange(20.0).reshape(10, 2)
    xs, ys, ls, zs = _ctx(1, 2).shard(x, y, lam, z)
    assert ys.tolist() == [5, 6, 7, 8, 9] and xs[:, 0].tolist() == [5, 6, 7, 8, 9]
    assert torch.equal(ls["tau"], lam["tau"][5:]) and ls["gamma"] is lam["gamma"] and torch.equal(zs, z[5:])
    with pytest.raises(ValueError, match="divisible"):
        _ctx(0, 3).check_batch_size(64)


@pytest.mark.parametrize("family", sorted(LOSSES))
def test_loss_parts_ratio_is_the_loss(family):
    """(sum w l, sum w) from the loss's own per-sample hook reproduce its reduction='mean' value."""
    torch.manual_seed(0)
    loss = build_loss(family, [900, 100])
    logits, y = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 2, (16,))
    lam = {loss.hparam_names[0]: 0.3} if loss.hparam_names else None
    num, den = loss_parts(loss, logits, y, lam)
    assert torch.allclose(num / den, loss(logits, y, lam=lam))


def test_rank_terms_average_to_the_global_weighted_mean_gradient():
    """Ranks with different class mixes: averaging per-rank weighted means is wrong; the rank terms
    num_r * W / sum_all(w) average (as DDP averages gradients) to the global weighted mean exactly."""
    torch.manual_seed(0)
    loss = build_loss("vs", [900, 100], omega=0.9, gamma=0.2, tau=1.0)
    w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(12, 2, dtype=torch.float64)
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    (g_global,) = torch.autograd.grad(loss(x @ w, y), w)
    world, shards = 2, [slice(0, 6), slice(6, 12)]
    parts = [loss_parts(loss, x[s] @ w, y[s], None) for s in shards]
    total = sum(d.detach() for _, d in parts)
    g_ddp = sum(torch.autograd.grad(n * world / total, w)[0] for n, _ in parts) / world
    g_naive = sum(torch.autograd.grad(loss(x[s] @ w, y[s]), w)[0] for s in shards) / world
    assert torch.allclose(g_ddp, g_global, atol=1e-12)
    assert not torch.allclose(g_naive, g_global, atol=1e-4)


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean"])
def test_focal_rank_terms_average_to_the_global_mean_of_its_reduction(reduction):
    """Focal's plain mean divides by the global batch size, its weighted mean by the global sum of alpha_t."""
    torch.manual_seed(0)
    loss = build_loss("focal", [900, 100], alpha=0.8, phi=2.0, reduction=reduction)
    w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(12, 2, dtype=torch.float64)
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    (g_global,) = torch.autograd.grad(loss(x @ w, y), w)
    parts = [loss_parts(loss, x[s] @ w, y[s], None) for s in (slice(0, 6), slice(6, 12))]
    total = sum(d.detach() for _, d in parts)
    assert float(total) == pytest.approx(12.0 if reduction == "mean" else 4 * 0.8 + 8 * 0.2)
    g_ddp = sum(torch.autograd.grad(n * 2 / total, w)[0] for n, _ in parts) / 2
    assert torch.allclose(g_ddp, g_global, atol=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SETS = ["model.backbone=mlp", "model.backbone_kwargs={hidden: [32, 16]}", "train.augment=none",
            "train.ema_decay=null", "train.grad_clip=null", "train.epochs=2", "train.eval_every=0",
            "train.batch_size=64", "loss.params.omega=0.9", "lct.per_sample=true", "train.device=cpu",
            "schedule.warmup_epochs=1"]


def test_torchrun_two_processes_match_one_process(tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU): the run finishes, only rank 0 writes, and the weights equal
    those of one process with the same global batch (per-sample lambda, omega = 0.9, odd last batch)."""
    from safetensors.torch import load_file

    from lossdial.config import load_config, packaged_config_path
    from lossdial.rundir import RunDir
    from lossdial.train import train

    cfg_path = packaged_config_path("demo_digits")
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "lossdial", "train", str(cfg_path), "--out", str(out), "-q"]
    cmd += [a for s in DDP_SETS for a in ("--set", s)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 reports, rank 1 stays quiet
    run = RunDir(out)
    assert run.is_complete
    assert [r["event"] for r in run.read_log()] == ["start", "epoch", "epoch", "final"]  # logged once

    single = train(load_config(cfg_path, DDP_SETS), tmp_path / "single")
    a, b = load_file(run.weights), load_file(single.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    loss_ddp = [r["train_loss"] for r in run.read_log() if r["event"] == "epoch"]
    loss_one = [r["train_loss"] for r in RunDir(single.run_dir).read_log() if r["event"] == "epoch"]
    assert loss_ddp == pytest.approx(loss_one, rel=1e-5)  # the reduced epoch loss is the global one


@pytest.mark.slow
def test_torchrun_errors_reach_every_rank(tmp_path):
    """Rank 0's run-directory check fails (a finished run, no --force): every rank exits with the error."""
    from lossdial.config import load_config, packaged_config_path
    from lossdial.train import train

    cfg_path = packaged_config_path("demo_digits")
    train(load_config(cfg_path, DDP_SETS), tmp_path / "done")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "lossdial", "train", str(cfg_path), "--out",
           str(tmp_path / "done"), "-q"] + [a for s in DDP_SETS for a in ("--set", s)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("already holds a finished run") == 2
