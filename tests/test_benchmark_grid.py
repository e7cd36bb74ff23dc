"""benchmarks/grid.py times "training steps exactly as lossdial train": its step applies train.random_erasing as
the loop does, and a config asking for what its step does not run (SAM, Joint-SSL) is refused."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from lossdial.config import load_config, packaged_config_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "lct.enabled=false"]


def _grid():
    spec = importlib.util.spec_from_file_location("bench_grid", ROOT / "benchmarks" / "grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_benchmark_step_erases_as_train_random_erasing_says():
    """With train.augment none and random_erasing 1, every image the model sees is the raw image except inside
    the erased rectangle, which holds 0 (before normalisation); some pixels must have been erased."""
    from lossdial.data.task import build_task

    grid = _grid()
    cfg = load_config(packaged_config_path("demo_digits"), TINY + ["train.augment=none", "train.random_erasing=1.0"])
    task = build_task(cfg.data)
    run = grid.SingleRun(cfg, task, None, torch.device("cpu"), 10)
    seen = []
    run.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    xb, yb = task.train.x[:32].float(), task.train.y[:32]
    run.step(xb, yb)
    plain, zero = task.normalizer(xb), task.normalizer(torch.zeros_like(xb))
    changed = ~torch.isclose(seen[0], plain)
    assert changed.any()  # erased somewhere (p = 1: every image has a rectangle, most cover ink)
    assert torch.allclose(seen[0][changed], zero[changed])  # what changed is the fill 0
    for i, img in enumerate(changed.any(dim=1)):  # per image: one erased rectangle, so the bounding box of the
        rows, cols = img.any(dim=1).nonzero(), img.any(dim=0).nonzero()  # changed pixels is all fill
        if len(rows):
            r, c = slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)
            assert torch.allclose(seen[0][i][:, r, c], zero[i][:, r, c])


def test_a_sam_or_ssl_config_is_refused_before_any_data_is_read(tmp_path):
    for ov, words in [("optim.sam.rho=0.05", "optim.sam"), ("ssl.weight=1", "ssl")]:
        cfg = load_config(packaged_config_path("demo_digits"), [ov, "train.augment=crop_flip"])
        path = tmp_path / "c.yaml"
        path.write_text(cfg.to_yaml())
        res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--device", "cpu", "--quick",
                              "--config", str(path), "--out", str(tmp_path / "r.md")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and words in res.stderr and "does not run" in res.stderr, res.stderr
