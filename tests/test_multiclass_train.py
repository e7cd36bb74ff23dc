"""Multi-class training end to end (issue 12, training side): the loop, resume, the stacked trainer, every loss
family on a C > 2 task, `lossdial evaluate --prior` on a multi-class run, and the commands that refuse one.

Metrics are checked against recalls computed here with NumPy from the saved weights' own predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import config_from_dict, load_config, packaged_config_path
from lossdial.losses import LOSSES
from lossdial.rundir import RunError, dumps_json
from lossdial.train import train

runner = CliRunner()

# long-tailed digits (10 classes, ratio 20: 104 ... 5 training samples), small_cnn width 8, 6 steps per epoch
TINY = ["train.epochs=2", "train.eval_every=1", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "train.batch_size=64"]


def _cfg(overrides=()):
    return load_config(packaged_config_path("demo_digits_lt"), TINY + list(overrides))


@pytest.fixture(scope="module")
def lct_run(tmp_path_factory):
    """A finished multi-class LCT run (VS over tau), trained once for the tests of this module."""
    out = tmp_path_factory.mktemp("mc") / "lct"
    # 4 epochs x 11 steps: enough for the predictions to spread over most classes (the checks below are not vacuous)
    cfg = _cfg(["evaluate.lambda=tau=0,1,2", "train.batch_size=32", "train.epochs=4", "train.ema_decay=0.9"])
    result = train(cfg, out, device="cpu")
    return cfg, out, result


def _val_logits_by_hand(cfg, run_dir, lam):
    """Logits of the saved weights on the validation split at lambda `lam`: the inputs normalised with
    data.json's statistics and lambda encoded to [-1, 1] over its support, both written out here."""
    from lossdial.data import build_task
    from lossdial.train.factory import build_model_from_config

    data = json.loads((run_dir / "data.json").read_text())
    space = json.loads((run_dir / "lambda_space.json").read_text())
    task = build_task(cfg.data)
    model = build_model_from_config(cfg, data["input_shape"], len(lam), data["num_classes"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    model.eval()
    mean = torch.tensor(data["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["normalization"]["std"]).view(1, -1, 1, 1)
    x = (task.val.x.float() - mean) / std
    (name, value), = lam.items()
    lo, hi = space["supports"][name]
    z = torch.full((len(x), 1), 2 * (value - lo) / (hi - lo) - 1)
    with torch.no_grad():
        return model(x, z).double().numpy(), task.val.y.numpy(), data["counts"]["train"]


def _recalls(y, pred, c):
    return np.array([np.mean(pred[y == k] == k) for k in range(c)])


def test_multiclass_run_metrics_equal_recalls_of_its_saved_predictions(lct_run):
    cfg, out, result = lct_run
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["start"] + ["epoch"] * 4 + ["final"]
    assert log[0]["train_counts"] == [104, 74, 53, 38, 27, 19, 14, 10, 7, 5]
    assert log[1]["val"]["balanced_accuracy"] is not None  # periodic validation ran with multi-class metrics
    final = log[-1]
    assert final["task"] == "multiclass" and [r["lambda"] for r in final["rows"]] == [{"tau": v} for v in (0, 1, 2)]
    spread = 0
    for row in final["rows"]:
        logits, y, counts = _val_logits_by_hand(cfg, out, row["lambda"])
        recall = _recalls(y, logits.argmax(1), 10)
        spread = max(spread, int((recall > 0).sum()))
        m = row["metrics"]
        assert m["balanced_accuracy"] == pytest.approx(recall.mean(), abs=1e-12)
        assert m["worst_class_accuracy"] == pytest.approx(recall.min(), abs=1e-12)
        pi = np.array(counts) / sum(counts)
        assert m["accuracy"] == pytest.approx(float(pi @ recall), abs=1e-12)  # at the training prior
        assert m["per_class_recall"] == pytest.approx(recall.tolist(), abs=1e-12)
        assert m["many_shot_accuracy"] == pytest.approx(recall[0], abs=1e-12)  # 104 > 100: class 0 alone
        assert m["few_shot_accuracy"] == pytest.approx(recall[5:].mean(), abs=1e-12)  # 19 ... 5 < 20
    assert spread >= 5  # some row predicts at least five classes correctly at least once


def test_evaluate_json_prior_uniform_and_errors(lct_run):
    _, out, _ = lct_run
    r = runner.invoke(app, ["evaluate", str(out), "--json", "--prior", "uniform", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["task"] == "multiclass" and d["prior_source"] == "uniform" and d["prior"] == [0.1] * 10
    for row in d["rows"]:
        assert row["metrics"]["accuracy"] == pytest.approx(row["metrics"]["balanced_accuracy"], abs=1e-12)
    # a given prior: accuracy = sum_c q_c recall_c
    q = [0.5] + [0.5 / 9] * 9
    r = runner.invoke(app, ["evaluate", str(out), "--json", "--prior", ",".join(map(repr, q)), "--lambda", "tau=1",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)["rows"][0]["metrics"]
    assert m["accuracy"] == pytest.approx(float(np.dot(q, m["per_class_recall"])), abs=1e-12)
    r = runner.invoke(app, ["evaluate", str(out), "--lambda", "tau=1", "--device", "cpu"])  # the table
    assert r.exit_code == 0 and "training class prior" in r.output
    for args, msg in ((["--prior", "0.5,0.5"], "2 values but the task has 10 classes"),
                      (["--prior", ",".join(["0.2"] * 10)], "sums to 2"),
                      (["--threshold", "0.3"], "--threshold apply to binary runs"),
                      (["--prevalence", "0.1"], "a multi-class run takes --prior")):
        r = runner.invoke(app, ["evaluate", str(out), "--device", "cpu", *args])
        assert r.exit_code == 2 and msg in r.output, (args, r.output)


def test_cli_train_prints_the_multiclass_table_of_the_run(tmp_path):
    """`lossdial train` on a multi-class config (periodic validation on: the progress line reads the task's own
    keys): the table's row is the logged final row, and the title states the prior."""
    r = runner.invoke(app, ["train", "configs/demo_digits_lt.yaml", "--out", str(tmp_path / "r"), "-q",
                            "--set", "lct.enabled=false", *[a for s in TINY for a in ("--set", s)]],
                      terminal_width=200)
    assert r.exit_code == 0, r.output
    final = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()][-1]
    m = final["rows"][0]["metrics"]
    row = next(ln for ln in r.output.splitlines() if "gamma=0.2" in ln)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[1:4] == [f"{m[k]:.3f}" for k in ("accuracy", "balanced_accuracy", "worst_class_accuracy")]
    assert "acc at the training class prior" in " ".join(r.output.split())


def test_binary_run_refuses_a_class_prior(tmp_path):
    cfg = load_config(packaged_config_path("demo_digits"), TINY + ["lct.enabled=false", "train.epochs=1"])
    train(cfg, tmp_path / "b", device="cpu")
    r = runner.invoke(app, ["evaluate", str(tmp_path / "b"), "--prior", "uniform", "--device", "cpu"])
    assert r.exit_code == 2 and "--prior (a class prior) applies to multi-class runs" in r.output


def test_killed_and_resumed_multiclass_run_equals_uninterrupted(tmp_path, kill_at):
    cfg = _cfg(["train.checkpoint_every=4", "lct.per_sample=true", "train.eval_every=1"])
    full = train(cfg, tmp_path / "full", device="cpu")
    with pytest.raises(KeyboardInterrupt):  # 6 steps per epoch: killed at step 9, one after the checkpoint at 8
        train(cfg, tmp_path / "killed", device="cpu", callback=kill_at(9))
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "killed", device="cpu")
    resumed = train(cfg, tmp_path / "killed", device="cpu", resume=True)
    assert resumed.steps == full.steps == 12
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and a["fc.weight"].shape[0] == 10
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert dumps_json(resumed.final["rows"]) == dumps_json(full.final["rows"])  # NaN (never-predicted) as null


def test_stacked_multiclass_members_equal_sequential_runs(tmp_path):
    from lossdial.train.stacked import train_stacked

    cfgs = [_cfg(["lct.enabled=false", "train.epochs=1", f"seed={s}", f"loss.params.tau={t}"])
            for s, t in ((0, 0.0), (1, 1.0))]
    stacked = train_stacked(cfgs, [tmp_path / f"s{i}" for i in range(2)], device="cpu")
    for i, cfg in enumerate(cfgs):
        seq = train(cfg, tmp_path / f"q{i}", device="cpu")
        a = load_file(str(tmp_path / f"s{i}" / "model.safetensors"))
        b = load_file(str(tmp_path / f"q{i}" / "model.safetensors"))
        for k in a:
            assert torch.allclose(a[k].double(), b[k].double(), atol=1e-5, rtol=1e-4), k
        s_m, q_m = stacked[i].final["rows"][0]["metrics"], seq.final["rows"][0]["metrics"]
        assert stacked[i].final["task"] == "multiclass"
        assert s_m["balanced_accuracy"] == pytest.approx(q_m["balanced_accuracy"], abs=0.01)


# every loss family, in its multi-class form, trains a step (LCT over one of its knobs where it has one)
FAMILIES = {
    "vs": ({"gamma": 0.2, "tau": 1.0}, {"tau": "U(0,2)"}),
    "focal": ({}, {"phi": "U(0,2)"}),
    "ldam": ({"drw_epoch": 0}, {"max_margin": "U(0.1,0.5)"}),
    "logit_adjust": ({}, {"tau": "U(0,2)"}),
    "weighted_ce": ({}, None),
    "smoothing": ({}, {"a_max": "U(0.1,0.3)"}),
}


@pytest.mark.parametrize("family", sorted(LOSSES))  # a new family fails here until FAMILIES gives it a setting
def test_every_loss_family_trains_a_step_on_a_multiclass_task(family):
    from lossdial.conditioning import LambdaSpace, parse_lct
    from lossdial.train.factory import build_loss_fn, build_model_from_config

    params, law = FAMILIES[family]
    cfg = config_from_dict({"data": {"source": "digits", "task": "multiclass", "classes": ["0", "1", "2", "3"],
                                     "beta": 10, "min_holdout_positives": 10},
                            "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [16]}},
                            "loss": {"family": family, "params": params},
                            "lct": {"enabled": law is not None, "lambda": law or {}}})
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 64, generator=gen), torch.arange(32) % 4
    counts = [100, 40, 15, 10]
    space = LambdaSpace(parse_lct(law)) if law else None
    model = build_model_from_config(cfg, (64,), space.dim if space else 0, num_classes=4).double()
    assert (family == "ldam") == (cfg.model.head == "cosine")  # LDAM's normalised head
    loss_fn = build_loss_fn(cfg, counts)
    if hasattr(loss_fn, "set_epoch"):
        loss_fn.set_epoch(0)
    lam = space.sample(32, gen) if space else None
    z = space.encode(lam, batch_size=32).double() if space else None
    loss = loss_fn(model(x.double(), z), y, lam=lam)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["fc.weight"].shape[0] == 4 and grads["fc.weight"].abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient lowers the loss on this batch
        for p in model.parameters():
            p -= 1e-3 * p.grad
    assert loss_fn(model(x.double(), z), y, lam=lam) < loss


def test_bad_class_lists_fail_with_the_fix(tmp_path):
    for value, msg in (("[]", "data.classes: [] names 0 classes; a multi-class task needs at least two"),
                       ("['3']", "names 1 class"),
                       ("['1','1','2']", "names ['1'] more than once"),
                       ("['0','emu']", "classes ['emu'] is not a class of this data")):
        r = runner.invoke(app, ["train", "configs/demo_digits_lt.yaml", "--set", f"data.classes={value}",
                                "--out", str(tmp_path / "r"), "-q"])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), (value, r.output)
    r = runner.invoke(app, ["train", "configs/demo_digits_lt.yaml", "--set", "data.beta=1000", "--out",
                            str(tmp_path / "r"), "-q"])
    assert r.exit_code == 2 and "leaves class '9' with floor(104 / 1000) = 0 training samples" in r.output
    assert not (tmp_path / "r").exists()
    # a per-class loss parameter: its length is the class count at load (data.classes: null), and a length that
    # is not the data's class count stops before the run directory is written
    focal = ["--set", "loss.family=focal", "--set", "lct.enabled=false", "--set", "evaluate.lambda=null"]
    r = runner.invoke(app, ["train", "configs/demo_digits_lt.yaml", *focal, "--set", f"loss.params={{alpha: {[1] * 10}}}",
                            "--print-config"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "configs/demo_digits_lt.yaml", *focal, "--set", f"loss.params={{alpha: {[1] * 7}}}",
                            "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 2 and "alpha has 7 entries but there are 10 classes" in r.output, r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_torchrun_two_processes_train_a_multiclass_run_like_one(tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU) on the long-tailed digits: the weights equal one process's with
    the same global batch (MLP without BatchNorm, no augmentation, no EMA, per-sample lambda)."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    sets = ["model.backbone=mlp", "model.backbone_kwargs={hidden: [32, 16]}", "train.augment=none",
            "train.ema_decay=null", "train.grad_clip=null", "train.epochs=2", "train.eval_every=0",
            "train.batch_size=64", "lct.per_sample=true", "train.device=cpu", "schedule.warmup_epochs=1"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cfg_path = packaged_config_path("demo_digits_lt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "lossdial", "train", str(cfg_path), "--out", str(tmp_path / "ddp"), "-q"]
    proc = subprocess.run(cmd + [a for s in sets for a in ("--set", s)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = train(load_config(cfg_path, sets), tmp_path / "single")
    a, b = load_file(str(tmp_path / "ddp" / "model.safetensors")), load_file(str(single.run_dir / "model.safetensors"))
    assert a.keys() == b.keys() and a["fc.weight"].shape[0] == 10
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_demo_multiclass_quick_prints_the_dial_of_its_own_runs(tmp_path):
    """`lossdial demo --multiclass --quick`: the LCT rows printed are the run's final validation rows, the
    baseline rows are its post-hoc dial (balanced accuracy at t recomputed here from the saved weights), and
    the closing sentence quotes those numbers."""
    from lossdial.data import build_task
    from lossdial.demo import DEMO_T_GRID, demo_multiclass_configs
    from lossdial.train.factory import build_model_from_config

    r = runner.invoke(app, ["demo", "--multiclass", "--quick", "--out", str(tmp_path), "-q"], terminal_width=200)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    final = [json.loads(x) for x in (tmp_path / "lct" / "metrics.jsonl").read_text().splitlines()][-1]
    lct_lines = [ln for ln in lines if ln.lstrip("│ ").startswith("LCT")]
    assert len(lct_lines) == len(final["rows"]) == 5
    for ln, row in zip(lct_lines, final["rows"]):
        assert f"{row['metrics']['balanced_accuracy']:.3f}" in ln
    # the baseline's dial by hand: logits of the saved weights, minus t log(pi), argmax, mean recall
    base_cfg, _ = demo_multiclass_configs(quick=True)
    task = build_task(base_cfg.data)
    model = build_model_from_config(base_cfg, task.input_shape, 0, 10)
    model.load_state_dict(load_file(str(tmp_path / "baseline" / "model.safetensors")))
    model.eval()
    with torch.no_grad():
        logits = model(task.normalizer(task.val.x)).double().numpy()
    log_pi = np.log(np.array(task.class_counts) / sum(task.class_counts))
    y = task.val.y.numpy()
    base_lines = [ln for ln in lines if ln.lstrip("│ ").startswith("baseline")]
    assert len(base_lines) == len(DEMO_T_GRID)
    bal = []
    for ln, t in zip(base_lines, DEMO_T_GRID):
        bal.append(_recalls(y, (logits - t * log_pi).argmax(1), 10).mean())
        assert f"t={t:g}" in ln and f"{bal[-1]:.3f}" in ln, (t, ln)
    text = " ".join(r.output.split())
    assert f"Best balanced accuracy: baseline {max(bal):.3f} at t={DEMO_T_GRID[int(np.argmax(bal))]:g}" in text
