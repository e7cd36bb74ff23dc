"""`lossdial predict` and `lossdial export` on multi-class runs (issue 12): the operating point is (lambda,
adjustment t), probabilities softmax(z_c - t log pi_c).

The truth is computed here by hand: the logits of the saved weights (inputs normalised with data.json's
statistics, lambda encoded to [-1, 1] over its support, both written out here), then softmax(z - t log pi) in
NumPy with pi the training counts of data.json. The runs use six digit classes in a shuffled order, so a class's
name ("7") differs from its label (0) and a CSV that wrote labels for names would fail."""

from __future__ import annotations

import csv
import json
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.train import train

runner = CliRunner()

NAMES = ["7", "3", "9", "0", "5", "2"]  # label c = position c, head first
TINY = ["train.epochs=3", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "train.batch_size=64", "data.beta=10", "data.classes=[" + ",".join(f"'{n}'" for n in NAMES) + "]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four finished multi-class runs (linear-head LCT over tau, linear-head baseline, cosine-head LCT, LDAM-DRW
    baseline with its cosine head) and the validation inputs as an .npz."""
    root = tmp_path_factory.mktemp("mcpred")
    out = {}
    for name, extra in (("lct", []), ("base", ["lct.enabled=false"]), ("cos", ["model.head=cosine"]),
                        ("ldam", ["lct.enabled=false", "loss.family=ldam", "loss.params={drw_epoch: 2}"])):
        cfg = load_config(packaged_config_path("demo_digits_lt"), TINY + extra)
        train(cfg, root / name, device="cpu")
        out[name] = (cfg, root / name)
    from lossdial.data import build_task

    task = build_task(out["lct"][0].data)
    np.savez(root / "val.npz", x=task.val.x.numpy(), ids=np.array([f"s{i}" for i in range(len(task.val.x))]))
    out["npz"] = root / "val.npz"
    out["x"] = task.val.x
    return out


def _logits_by_hand(cfg, run_dir, x, lam):
    from lossdial.train.factory import build_model_from_config

    data = json.loads((run_dir / "data.json").read_text())
    model = build_model_from_config(cfg, data["input_shape"], len(lam or {}), data["num_classes"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    model.eval()
    mean = torch.tensor(data["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["normalization"]["std"]).view(1, -1, 1, 1)
    xn = (x.float() - mean) / std
    z = None
    if lam:
        space = json.loads((run_dir / "lambda_space.json").read_text())
        (name, value), = lam.items()
        lo, hi = space["supports"][name]
        z = torch.full((len(x), 1), 2 * (value - lo) / (hi - lo) - 1)
    with torch.no_grad():
        return model(xn, z).double().numpy(), np.array(data["counts"]["train"], dtype=float)


def _probs_by_hand(cfg, run_dir, x, lam, t):
    z, counts = _logits_by_hand(cfg, run_dir, x, lam)
    s = z - t * np.log(counts / counts.sum())
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _read_topk(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_predict_top_k_names_and_probabilities(runs, tmp_path):
    cfg, run = runs["lct"]
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", str(run), str(runs["npz"]), "--lambda", "tau=1.5", "--adjustment", "0.8",
                            "--top-k", "4", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    truth = _probs_by_hand(cfg, run, runs["x"], {"tau": 1.5}, 0.8)
    header, rows = _read_topk(out)
    assert header == ["id", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3", "class_4", "prob_4"]
    assert [row[0] for row in rows] == [f"s{i}" for i in range(len(truth))]
    order = np.argsort(-truth, axis=1)[:, :4]
    got_names = np.array([row[1::2] for row in rows])
    got_probs = np.array([[float(v) for v in row[2::2]] for row in rows])
    assert np.array_equal(got_names, np.array(NAMES)[order])
    assert np.allclose(got_probs, np.take_along_axis(truth, order, 1), atol=1e-6)
    # the adjustment matters here: at t = 0 the top-1 class differs for some inputs (the check is not vacuous)
    plain = _probs_by_hand(cfg, run, runs["x"], {"tau": 1.5}, 0.0)
    assert (plain.argmax(1) != truth.argmax(1)).sum() >= 3
    # the CLI line: inputs, the point, and the top-1 counts per class (by name)
    line = " ".join(r.output.split())
    assert f"{len(truth)} inputs scored at lambda tau=1.5, adjustment t=0.8" in line
    top1 = np.bincount(truth.argmax(1), minlength=6)
    counts = ", ".join(f"{NAMES[c]} {top1[c]}" for c in range(6) if top1[c])
    assert f"top-1 predictions per class: {counts}" in line
    # --top-k above the number of classes is capped at it; the default is 3
    r = runner.invoke(app, ["predict", str(run), str(runs["npz"]), "--lambda", "tau=1.5", "--adjustment", "0.8",
                            "--top-k", "50", "--out", str(tmp_path / "all.csv"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    header, rows = _read_topk(tmp_path / "all.csv")
    assert len(header) == 1 + 2 * 6
    assert np.allclose([sum(float(v) for v in row[2::2]) for row in rows], 1.0, atol=1e-6)
    r = runner.invoke(app, ["predict", str(run), str(runs["npz"]), "--lambda", "tau=0.5", "--adjustment", "0",
                            "--out", str(tmp_path / "d.csv"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    header, rows = _read_topk(tmp_path / "d.csv")
    assert len(header) == 7
    plain = _probs_by_hand(cfg, run, runs["x"], {"tau": 0.5}, 0.0)
    assert np.allclose([float(row[2]) for row in rows], plain.max(1), atol=1e-6)


def _write_card(run, points):
    """A model card as a multi-class `lossdial pick` writes it, by hand: points.NAME with lambda, adjustment,
    prior (the keys predict and export read: lambda and adjustment; prior is recorded by export)."""
    (run / "model_card.json").write_text(json.dumps({"points": points}))


def test_at_reads_a_hand_written_card_entry(runs, tmp_path):
    cfg, run = runs["lct"]
    _write_card(run, {"balanced": {"lambda": {"tau": 2.0}, "adjustment": 1.25, "prior": "uniform"},
                      "binary_like": {"lambda": {"tau": 1.0}, "threshold": 0.5}})
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", str(run), str(runs["npz"]), "--at", "balanced", "--top-k", "2",
                            "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "lambda tau=2, adjustment t=1.25" in " ".join(r.output.split())
    truth = _probs_by_hand(cfg, run, runs["x"], {"tau": 2.0}, 1.25)
    _, rows = _read_topk(out)
    assert [row[1] for row in rows] == [NAMES[c] for c in truth.argmax(1)]
    assert np.allclose([float(row[2]) for row in rows], truth.max(1), atol=1e-6)
    # an entry without an adjustment (e.g. a binary-style point) is refused, naming the fix; nothing written
    before = sorted(p.name for p in run.iterdir())
    for cmd in (["predict", str(run), str(runs["npz"])], ["export", str(run)]):
        r = runner.invoke(app, [*cmd, "--at", "binary_like", "--out", str(tmp_path / "nope")])
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and "model card point 'binary_like' has no 'adjustment'" in text, r.output
        assert "--adjustment T" in text
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "nope").exists()
    # export --at: the point's lambda, adjustment and prior go into export.json; its probabilities are the truth
    r = runner.invoke(app, ["export", str(run), "--at", "balanced", "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert meta["lambda"] == {"tau": 2.0} and meta["adjustment"] == 1.25 and meta["prior"] == "uniform"
    assert meta["class_names"] == NAMES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(tmp_path / "exp" / "model.ts"))
    with torch.no_grad():
        assert np.allclose(ts(runs["x"]).numpy(), truth, atol=1e-5)


@pytest.mark.parametrize("which,lam", [("lct", {"tau": 0.7}), ("base", None), ("cos", {"tau": 1.2}),
                                       ("ldam", None)])
def test_export_probabilities_equal_the_adjusted_model(runs, tmp_path, which, lam):
    """TorchScript, torch.export and the state dict of an exported point give softmax(z - t log pi) of the
    conditioned model at (lambda, t): linear head (FiLM and t folded into one layer), baseline (t folded into the
    plain head's bias), cosine head (fixed FiLM, cosine head, then the bias-only shift), LDAM baseline (cosine head
    without FiLM, then the shift)."""
    from lossdial.evaluate import load_run
    from lossdial.export import build_exported

    cfg, run = runs[which]
    assert cfg.model.head == ("cosine" if which in ("cos", "ldam") else "linear")
    t = 0.9
    args = ["export", str(run), "--adjustment", str(t), "--out", str(tmp_path / "e")]
    if lam:
        args += ["--lambda", ",".join(f"{k}={v}" for k, v in lam.items())]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    x = runs["x"]
    truth = _probs_by_hand(cfg, run, x, lam, t)
    assert (truth.argmax(1) != _probs_by_hand(cfg, run, x, lam, 0.0).argmax(1)).any()  # t moves some top-1
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    assert meta["adjustment"] == t and meta["lambda"] == (lam or None) and meta["class_names"] == NAMES
    counts = json.loads((run / "data.json").read_text())["counts"]["train"]
    assert meta["train_prior"] == pytest.approx([c / sum(counts) for c in counts], abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(tmp_path / "e" / "model.ts"))
    with torch.no_grad():
        assert np.allclose(ts(x).numpy(), truth, atol=1e-5)
        ep = torch.export.load(str(tmp_path / "e" / "model.pt2")).module()
        assert np.allclose(ep(x[:9]).numpy(), truth[:9], atol=1e-5)
    # the state dict: loaded into the same architecture built at another point, it gives this point's output
    loaded = load_run(run)
    other = build_exported(loaded, {"tau": 0.0} if lam else None, 0.0)
    other.load_state_dict(load_file(str(tmp_path / "e" / "weights.safetensors")))
    with torch.no_grad():
        assert np.allclose(other(x).numpy(), truth, atol=1e-5)


def test_point_option_errors(runs, tmp_path):
    _, run = runs["lct"]
    npz = str(runs["npz"])
    cases = [
        (["predict", str(run), npz, "--lambda", "tau=1", "--threshold", "0.5"],
         "--threshold (a threshold on P(positive)) applies to binary runs", "give --adjustment T"),
        (["export", str(run), "--lambda", "tau=1", "--threshold", "0.5"],
         "--threshold (a threshold on P(positive)) applies to binary runs", "give --adjustment T"),
        (["predict", str(run), npz, "--lambda", "tau=1"], "give --at NAME", "--adjustment T"),
        (["predict", str(run), npz, "--adjustment", "1"], "an LCT run needs a lambda", "--lambda"),
        (["predict", str(run), npz, "--lambda", "tau=1", "--adjustment", "1", "--top-k", "0"],
         "--top-k must be a whole number >= 1, got 0", ""),
        (["predict", str(run), npz, "--lambda", "tau=1", "--adjustment", "nan"],
         "--adjustment must be a finite number", ""),
        (["export", str(run), "--at", "balanced", "--adjustment", "0.5"],
         "--at balanced fixes the whole operating point; drop --adjustment", ""),
    ]
    for args, msg, fix in cases:
        r = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and msg in text and fix in text, (args, r.output)
        assert not (tmp_path / "out").exists()
    # a binary run: --adjustment is refused, naming --threshold
    cfg = load_config(packaged_config_path("demo_digits"), ["train.epochs=1", "train.eval_every=0",
                                                             "schedule.warmup_epochs=0", "lct.enabled=false",
                                                             "model.backbone_kwargs.width=8"])
    train(cfg, tmp_path / "bin", device="cpu")
    r = runner.invoke(app, ["predict", str(tmp_path / "bin"), npz, "--threshold", "0.5", "--top-k", "2",
                            "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "--top-k applies to multi-class runs" in " ".join(r.output.split()), r.output
    for args in (["predict", str(tmp_path / "bin"), npz], ["export", str(tmp_path / "bin")]):
        r = runner.invoke(app, [*args, "--adjustment", "1", "--out", str(tmp_path / "out")])
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and "--adjustment (the post-hoc logit adjustment t) applies to multi-class runs" \
            in text and "give --threshold instead" in text, r.output
        assert not (tmp_path / "out").exists()


def test_library_predict_topk_and_refusals(runs):
    from lossdial.evaluate import load_run
    from lossdial.predict import operating_point, predict, predict_topk, top_k

    cfg, run = runs["base"]
    loaded = load_run(run)
    x = runs["x"][:20]
    top = predict_topk(loaded, x, None, 0.5, k=2)
    truth = _probs_by_hand(cfg, run, x, None, 0.5)
    assert np.array_equal(top.classes, np.argsort(-truth, 1)[:, :2])
    assert np.allclose(top.probs, np.sort(truth, 1)[:, ::-1][:, :2], atol=1e-6)
    with pytest.raises(ValueError, match="predict_topk"):
        predict(loaded, x, None, 0.5)
    # ties: the lower label first; k capped at C
    t = top_k(np.array([[0.25, 0.5, 0.25]]), 5)
    assert t.classes.tolist() == [[1, 0, 2]] and t.probs.tolist() == [[0.5, 0.25, 0.25]]
    with pytest.raises(ValueError, match=re.escape("has no 'adjustment'")):
        operating_point(loaded, {"lambda": {}, "threshold": 0.5}, name="p")
    assert operating_point(loaded, {"lambda": {"tau": 0.0, "gamma": 0.2}, "adjustment": 2, "prior": [0.5] * 2},
                           name="p") == (None, None, 2.0)  # a baseline's fixed lambda is not a lambda to set
