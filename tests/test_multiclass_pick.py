"""`lossdial sweep` and `lossdial pick` on multi-class runs (issue 12, the dial): the operating point is
(lambda, t), t the post-hoc logit adjustment.

The truth is computed here with NumPy from the saved weights' own logits (inputs normalised and lambda encoded by
hand, as in test_multiclass_train.py): scores z_c - t log pi_c, their softmax, argmax predictions, recalls per
class and the prior-weighted metrics written out below; the pick is a brute-force search over those rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.train import train

runner = CliRunner()
TAUS = (0.0, 1.0, 2.0)
TS = (0.0, 0.5, 1.0, 1.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished multi-class LCT run (VS over tau) on long-tailed digits (train counts 104 ... 5)."""
    out = tmp_path_factory.mktemp("mcpick") / "lct"
    cfg = load_config(packaged_config_path("demo_digits_lt"), [
        "train.epochs=10", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "train.batch_size=32", "train.ema_decay=0.9", "evaluate.lambda=tau=0,1,2"])
    train(cfg, out, device="cpu")
    return cfg, out


def _logits_by_hand(cfg, run_dir, tau, split):
    """Logits of the saved weights on `split` at lambda tau (normalisation and lambda encoding written out)."""
    from lossdial.data import build_task
    from lossdial.train.factory import build_model_from_config

    data = json.loads((run_dir / "data.json").read_text())
    lo, hi = json.loads((run_dir / "lambda_space.json").read_text())["supports"]["tau"]
    part = getattr(build_task(cfg.data), split)
    model = build_model_from_config(cfg, data["input_shape"], 1, data["num_classes"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    model.eval()
    mean = torch.tensor(data["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["normalization"]["std"]).view(1, -1, 1, 1)
    x = (part.x.float() - mean) / std
    with torch.no_grad():
        z = model(x, torch.full((len(x), 1), 2 * (tau - lo) / (hi - lo) - 1)).double().numpy()
    return z, part.y.numpy(), np.array(data["counts"]["train"], dtype=float)


def _by_hand(z, y, counts, t):
    """The metrics at adjustment t and the training prior, written out: s = z - t log pi, p = softmax(s)."""
    pi = counts / counts.sum()
    s = z - t * np.log(pi)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)
    C = len(counts)
    recall = np.array([np.mean(pred[y == c] == c) for c in range(C)])
    n_c = np.bincount(y, minlength=C)
    w = (pi / n_c)[y]  # each class carries its training-prior share
    return {"recall": recall, "balanced_accuracy": recall.mean(), "worst_class_accuracy": recall.min(),
            "accuracy": float(pi @ recall), "few_shot_accuracy": recall[counts < 20].mean(),
            "medium_shot_accuracy": recall[(counts >= 20) & (counts <= 100)].mean(),
            "many_shot_accuracy": recall[counts > 100].mean(),
            "nll": float(np.sum(w * -np.log(p[np.arange(len(y)), y])))}


@pytest.fixture(scope="module")
def val_grid(run):
    """Every (tau, t) of the sweep with its hand-computed validation metrics, in the sweep's row order."""
    cfg, out = run
    rows = []
    for tau in TAUS:
        z, y, counts = _logits_by_hand(cfg, out, tau, "val")
        rows += [((tau, t), _by_hand(z, y, counts, t)) for t in TS]
    return rows


def _unique_best(rows, key="balanced_accuracy"):
    """The row with the highest `key`, checked to beat every other by more than pick's tie tolerance (so the
    expectation does not depend on how ties are broken: test_pick_ties.py covers that)."""
    ranked = sorted(rows, key=lambda kv: kv[1][key], reverse=True)
    assert ranked[0][1][key] > ranked[1][1][key] + 1e-9, "the brute-force best is tied: choose another case"
    return ranked[0]


def _check(m, truth):
    assert m["per_class_recall"] == pytest.approx(truth["recall"].tolist(), abs=1e-12)
    for k in ("balanced_accuracy", "worst_class_accuracy", "accuracy", "few_shot_accuracy", "medium_shot_accuracy",
              "many_shot_accuracy", "nll"):
        assert m[k] == pytest.approx(truth[k], abs=1e-9), k


def test_sweep_rows_equal_the_adjusted_softmax_by_hand(run, val_grid):
    _, out = run
    r = runner.invoke(app, ["sweep", str(out), "--adjustment", "0:1.5:4", "--device", "cpu"], terminal_width=80)
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80
    assert "acc at the training class prior" in " ".join(r.output.split())
    d = json.loads((out / "sweeps" / "val.json").read_text())
    assert d["prior_source"] == "train" and d["adjustments"] == list(TS)
    assert [(r["lambda"]["tau"], r["adjustment"]) for r in d["rows"]] == [k for k, _ in val_grid]
    for row, (_, truth) in zip(d["rows"], val_grid):
        _check(row["metrics"], truth)
    with open(out / "sweeps" / "val.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:3] == ["lambda.tau", "adjustment", "balanced_accuracy"]
    assert "per_class_recall" not in table[0]  # lists are in the JSON only
    for row, (_, truth) in zip(table, val_grid):
        assert float(row["balanced_accuracy"]) == pytest.approx(truth["balanced_accuracy"], abs=1e-12)
        assert float(row["few_shot_accuracy"]) == pytest.approx(truth["few_shot_accuracy"], abs=1e-12)
    # the dial is not vacuous here: t moves the few-shot accuracy
    assert len({round(t["few_shot_accuracy"], 9) for _, t in val_grid}) > 3


def test_sweep_at_the_uniform_prior_on_the_test_split(run):
    """--prior uniform: accuracy is the mean recall (= balanced accuracy); rows by hand on the test split."""
    cfg, out = run
    r = runner.invoke(app, ["sweep", str(out), "--split", "test", "--prior", "uniform", "--adjustment", "1",
                            "--lambda", "tau=1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    d = json.loads((out / "sweeps" / "test.json").read_text())
    assert d["prior_source"] == "uniform" and d["prior"] == [0.1] * 10 and len(d["rows"]) == 1
    z, y, counts = _logits_by_hand(cfg, out, 1.0, "test")
    truth = _by_hand(z, y, counts, 1.0)
    m = d["rows"][0]["metrics"]
    assert m["accuracy"] == pytest.approx(truth["recall"].mean(), abs=1e-12)
    assert m["per_class_recall"] == pytest.approx(truth["recall"].tolist(), abs=1e-12)
    assert d["counts"] == np.bincount(y, minlength=10).tolist()


def test_pick_maximises_on_validation_under_a_few_shot_constraint_then_scores_test_once(run, val_grid):
    cfg, out = run
    best = max(val_grid, key=lambda kv: kv[1]["balanced_accuracy"])  # one of the best (only its level is used)
    # a level the unconstrained best misses but some row meets: the constraint decides
    level = float(min(t["few_shot_accuracy"] for _, t in val_grid
                      if t["few_shot_accuracy"] > best[1]["few_shot_accuracy"]))
    feasible = [kv for kv in val_grid if kv[1]["few_shot_accuracy"] >= level - 1e-12]
    want = _unique_best(feasible)
    assert want[0] != best[0]
    r = runner.invoke(app, ["pick", str(out), "--at", f"few_shot_accuracy>={level!r}", "--name", "tail",
                            "--adjustment", "0,0.5,1,1.5", "--n-boot", "50", "--device", "cpu"], terminal_width=80)
    assert r.exit_code == 0, r.output
    p = json.loads((out / "model_card.json").read_text())["points"]["tail"]
    assert (p["lambda"]["tau"], p["adjustment"]) == want[0]
    assert p["chosen_on"] == "val" and p["objective"] == "balanced_accuracy"
    assert p["constraint"] == f"few_shot_accuracy>={level!r}"
    _check(p["val"], want[1])
    # test: scored at the chosen (tau, t), computed here from the test split's logits
    z, y, counts = _logits_by_hand(cfg, out, want[0][0], "test")
    _check(p["test"], _by_hand(z, y, counts, want[0][1]))
    assert p["prior"] == pytest.approx((counts / counts.sum()).tolist(), abs=1e-12) and p["prior_source"] == "train"
    assert p["counts"]["train"] == counts.astype(int).tolist()
    assert p["counts"]["test"] == np.bincount(y, minlength=10).tolist()
    assert len(p["test"]["per_class_precision"]) == 10
    lo, hi = p["test_ci95"]["balanced_accuracy"]
    assert lo <= p["test"]["balanced_accuracy"] <= hi and hi - lo > 0
    md = (out / "model_card.md").read_text()
    assert f"adjustment t = {want[0][1]:g}" in md and "| class | training count | validation recall |" in md
    # without a constraint, on the grid without t = 0: the brute-force best of those rows, and test at its t
    best = _unique_best([kv for kv in val_grid if kv[0][1] != 0])
    r = runner.invoke(app, ["pick", str(out), "--name", "bal", "--adjustment", "0.5:1.5:3", "--n-boot", "20",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    p = json.loads((out / "model_card.json").read_text())["points"]["bal"]
    assert (p["lambda"]["tau"], p["adjustment"]) == best[0]
    z, y, counts = _logits_by_hand(cfg, out, best[0][0], "test")
    _check(p["test"], _by_hand(z, y, counts, best[0][1]))


def test_pick_infeasible_and_wrong_task_metrics_fail_with_the_fix(run, val_grid, tmp_path):
    _, out = run
    top = max(t["few_shot_accuracy"] for _, t in val_grid)
    r = runner.invoke(app, ["pick", str(out), "--at", "few_shot_accuracy>=1", "--adjustment", "0,0.5,1,1.5",
                            "--device", "cpu"])
    assert top < 1
    assert r.exit_code == 1 and "no (lambda, t) on the val split meets few_shot_accuracy>=1" in r.output
    assert f"few_shot_accuracy {top:.4f}" in r.output  # the closest point
    for args, msg in ((["--at", "recall>=0.9"], "recall is a binary metric; a multi-class run's constraint is one "
                                                "of balanced_accuracy>=v"),
                      (["--maximize", "precision"], "--maximize takes balanced_accuracy"),
                      (["--at", "nll>=0.5"], "its constraint is 'nll<=v'"),
                      (["--prevalence", "0.1"], "a multi-class run takes --prior"),
                      (["--cost", "fp=1,fn=5"], "--cost (false-positive / false-negative costs) applies to binary")):
        r = runner.invoke(app, ["pick", str(out), "--device", "cpu", *args])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), (args, r.output)
    # a multi-class metric on a binary run (the constraint is read before the run: a missing run reads as binary)
    r = runner.invoke(app, ["pick", str(tmp_path / "binary_run"), "--at", "few_shot_accuracy>=0.7"])
    assert r.exit_code == 2 and "few_shot_accuracy is a multi-class metric" in r.output, r.output


def test_picking_on_an_empty_shot_group_names_it():
    """Training counts 60/30/10: no class has more than 100, so the many-shot group is empty."""
    from lossdial.evaluate.sweep import MultiClassSweepResult

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    logits = rng.normal(size=(2, 30, 3)) + 3 * np.eye(3)[y]
    res = MultiClassSweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}], logits=logits, labels=y,
                                train_counts=[60, 30, 10], adjustments=(0.0, 1.0))
    for constraint, objective in ((None, "many_shot_accuracy"), ("many_shot_accuracy>=0.5", "balanced_accuracy")):
        with pytest.raises(ValueError, match="the many-shot group .* is empty in this run"):
            res.pick(constraint, objective)
    point = res.pick("few_shot_accuracy>=0.5", "medium_shot_accuracy")  # defined groups work
    assert point.adjustment in (0.0, 1.0) and point.threshold is None
    # three lambdas with the same logits tie on everything: the centre of the tied run wins, not the first
    tied = MultiClassSweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}, {"tau": 2.0}],
                                 logits=np.stack([logits[0]] * 3), labels=y, train_counts=[60, 30, 10],
                                 adjustments=(0.0,))
    assert tied.pick(None, "balanced_accuracy").lam == {"tau": 1.0}


def test_shot_thresholds_come_from_the_config_and_move_the_groups():
    """evaluate.shot_thresholds is checked at load and decides the groups: with [30, 8] the demo's long tail
    (104 ... 5 training images) has many = counts > 30, few = counts < 8, by hand from the counts."""
    from lossdial.config import ConfigError, load_config, packaged_config_path
    from lossdial.evaluate.tasktype import task_type

    path = packaged_config_path("demo_digits_lt")
    with pytest.raises(ConfigError, match="evaluate.shot_thresholds"):
        load_config(path, ["evaluate.shot_thresholds=[20, 100]"])
    cfg = load_config(path, ["evaluate.shot_thresholds=[30, 8]"])
    counts = [104, 74, 53, 38, 27, 19, 14, 10, 7, 5]
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 4)
    logits = rng.normal(size=(40, 10))
    m = task_type("multiclass").metrics(y, logits, train_counts=counts, config=cfg)
    pred = logits.argmax(1)
    recall = np.array([(pred[y == c] == c).mean() for c in range(10)])
    assert m["shot_groups"] == {"many": [0, 1, 2, 3], "medium": [4, 5, 6, 7], "few": [8, 9]}
    assert m["many_shot_accuracy"] == pytest.approx(recall[:4].mean())
    assert m["few_shot_accuracy"] == pytest.approx(recall[8:].mean())
