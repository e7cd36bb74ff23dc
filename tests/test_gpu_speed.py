"""GPU checks of the fast path (marked gpu: run with `pytest -m gpu` on a machine with CUDA).

- the inner training loop issues no host synchronisation (torch.cuda.set_sync_debug_mode("error") between
  the first and the last step of an epoch: every draw is copied through pinned memory, nothing is read back);
- the CUDA run matches the CPU run of the same config (amp off, so only kernel rounding differs);
- the stacked grid matches sequential runs on CUDA.
"""

import pytest
import torch
from safetensors.torch import load_file

from lossdial.config import load_config, packaged_config_path
from lossdial.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class _NoSyncInsideEpoch:
    """Turns sync debugging to "error" for the steps of the first epoch (not the epoch-end bookkeeping)."""

    def __init__(self, steps_per_epoch):
        self.steps_per_epoch = steps_per_epoch
        self.checked = 0

    def on_start(self, total, start):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def on_step(self, step):
        self.checked = step
        if step >= self.steps_per_epoch:  # after the last step: the end-of-epoch loss read is allowed
            torch.cuda.set_sync_debug_mode("default")

    def on_epoch_end(self, epoch, record):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("augment", ["crop_flip", "crop_flip_trivial", "crop_flip_autoaugment", "crop_randaugment"])
@pytest.mark.parametrize("lct", [True, False])
def test_no_host_sync_inside_the_training_loop(tmp_path, tiny_overrides, augment, lct):
    cfg = load_config(packaged_config_path("demo_digits"),
                      tiny_overrides + ["train.epochs=1", "train.batch_size=64", f"train.augment={augment}",
                                        f"lct.enabled={str(lct).lower()}", "train.ema_decay=0.9"])
    cb = _NoSyncInsideEpoch(steps_per_epoch=16)
    try:
        train(cfg, tmp_path / "run", device="cuda", callback=cb)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert cb.checked >= 15


def test_cuda_run_matches_cpu_run(tmp_path, tiny_overrides):
    ov = tiny_overrides + ["train.epochs=2", "train.batch_size=64", "train.augment=crop_flip", "train.amp=false",
                           "optim.fused=false"]
    cfg = load_config(packaged_config_path("demo_digits"), ov)
    a = train(cfg, tmp_path / "cpu", device="cpu")
    b = train(cfg, tmp_path / "cuda", device="cuda")
    wa = load_file(str(a.run_dir / "model.safetensors"))
    wb = load_file(str(b.run_dir / "model.safetensors"))
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst < 1e-3, worst


def test_stacked_matches_sequential_on_cuda(tmp_path, tiny_overrides):
    from lossdial.train.stacked import train_stacked

    ov = tiny_overrides + ["train.epochs=1", "train.batch_size=64", "train.augment=crop", "train.amp=false"]
    cfgs = [load_config(packaged_config_path("demo_digits"), ov + [f"seed={s}", f"loss.params.tau={t}"])
            for s, t in ((0, 0.5), (1, 1.5))]
    train_stacked(cfgs, [tmp_path / f"s{i}" for i in range(2)], device="cuda")
    for i, c in enumerate(cfgs):
        train(c, tmp_path / f"q{i}", device="cuda")
        wa = load_file(str(tmp_path / f"s{i}" / "model.safetensors"))
        wb = load_file(str(tmp_path / f"q{i}" / "model.safetensors"))
        worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
        assert worst < 1e-3, worst
