"""lossdial compare on multi-class runs: each method's (run, lambda, t) picked per metric on validation, test
scored once there; checked against a numpy recomputation from the saved models' logits."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import packaged_config_path
from lossdial.evaluate.multiclass import DEFAULT_T_GRID

# beta=2: training counts 104 ... 52, so class 0 is many-shot (> 100), the rest medium, and the few-shot
# group (< 20) is empty
TINY_MC = ["train.epochs=3", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
           "data.beta=2"]


def _np_softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _hand_metrics(z, y, counts, t):
    """balanced accuracy, accuracy at the training prior and NLL at the training prior, from logits z [N, C]."""
    counts = np.asarray(counts, dtype=float)
    pi = counts / counts.sum()
    p = _np_softmax(z - t * np.log(pi))
    pred = p.argmax(1)
    C = len(counts)
    recall = np.array([np.mean(pred[y == c] == c) for c in range(C)])
    nll_c = np.array([np.mean(-np.log(p[y == c, c])) for c in range(C)])
    return {"balanced_accuracy": recall.mean(), "accuracy": float(pi @ recall), "nll": float(pi @ nll_c)}


def _hand_pick(rows, objective, n_t):
    """The row pick chooses, by brute force: rows [(metrics, ...)] in (candidate, t) order, n_t values of t.

    The best objective (ties within 1e-9), then the higher balanced accuracy, then the lower NLL (each skipped when it
    is the objective), then the centre of the largest tied block on the (candidate, t) grid: blocks of rows whose
    grid positions differ by at most one step in each coordinate; equal sizes: the block with the earliest row;
    the row nearest the block's mean position, equal distances: the earlier row."""
    sign = {"nll": -1.0}.get(objective, 1.0)
    tied = list(range(len(rows)))
    for key, s in [(objective, sign)] + [(k, v) for k, v in (("balanced_accuracy", 1.0), ("nll", -1.0))
                                         if k != objective]:
        top = max(s * rows[i][0][key] for i in tied)
        tied = [i for i in tied if s * rows[i][0][key] >= top - 1e-9 * max(1.0, abs(top))]
    pos = {i: (i // n_t, i % n_t) for i in tied}
    blocks, seen = [], set()
    for i in tied:
        if i in seen:
            continue
        block, todo = [], [i]
        seen.add(i)
        while todo:
            a = todo.pop()
            block.append(a)
            for b in tied:
                if b not in seen and max(abs(pos[a][0] - pos[b][0]), abs(pos[a][1] - pos[b][1])) <= 1:
                    seen.add(b)
                    todo.append(b)
        blocks.append(sorted(block))
    block = max(blocks, key=lambda bl: (len(bl), -bl[0]))
    centre = np.mean([pos[i] for i in block], axis=0)
    return min(block, key=lambda i: (round(float(np.sum((np.array(pos[i]) - centre) ** 2)), 9), i))


def _logits(path, split, lam=None):
    """A run's logits on `split` (at lambda `lam` for an LCT run), by the model's own forward pass (no library
    scoring helper)."""
    from lossdial.evaluate import load_run

    lr = load_run(path)
    task = lr.task()
    data = getattr(task, split)
    x = task.normalizer(data.x)
    with torch.no_grad():
        z = lr.model(x) if lam is None else lr.model(x, lr.space.encode(lam, batch_size=len(x)))
    return z.double().numpy(), data.y.numpy(), lr.train_counts


def test_multiclass_compare_picks_on_val_and_scores_test_by_hand(tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(packaged_config_path("demo_digits_lt")), "--baseline-grid",
                                   "tau=0,1", "--lct", "tau~U(0,2)", "--seeds", "2", "--out", str(out), "-q"]
                             + [a for ov in TINY_MC for a in ("--set", ov)], terminal_width=250)
    assert res.exit_code == 0, res.output
    for head in ("BalAcc", "Acc@prior", "Worst", "Many", "Medium", "MacroF1", "NLL", "ECE", "baseline grid",
                 "LCT tau~U(0,2)"):
        assert head in res.output
    assert "Few" not in res.output
    d = json.loads((out / "compare.json").read_text())
    assert d["task"] == "multiclass" and d["adjustments"] == list(DEFAULT_T_GRID)
    keys = [m["key"] for m in d["metrics"]]
    # the few-shot group is empty: its metric is not reported and never picked; every other one is
    assert keys == ["balanced_accuracy", "accuracy", "worst_class_accuracy", "many_shot_accuracy",
                    "medium_shot_accuracy", "macro_f1", "nll", "ece"]
    assert all(p["metric"] != "few_shot_accuracy" for p in d["picks"])
    assert len(d["picks"]) == 2 * 2 * len(keys)
    md = (out / "compare.md").read_text()
    assert "| Few" not in md and "Not reported: Few" in md

    # hand truth for seed 0, baseline: the best of the (member, t) validation rows (ties: _hand_pick's rule, not
    # the first member), then that one choice scored on test
    members = ("baseline_tau0", "baseline_tau1")
    val = {m: _logits(out / m / "seed0", "val") for m in members}
    test = {m: _logits(out / m / "seed0", "test") for m in members}
    counts = val[members[0]][2]
    assert max(counts) > 100 and min(counts) >= 20  # many-shot non-empty, few-shot empty
    for metric, sign in (("balanced_accuracy", 1), ("accuracy", 1), ("nll", -1)):
        rows = [(_hand_metrics(val[m][0], val[m][1], counts, t), m, t) for m in members for t in DEFAULT_T_GRID]
        best = _hand_pick(rows, metric, len(DEFAULT_T_GRID))
        m_best, t_best, v_best = rows[best][1], rows[best][2], rows[best][0][metric]
        pick = next(p for p in d["picks"] if p["seed"] == 0 and p["method"] == "baseline" and p["metric"] == metric)
        assert (pick["member"], pick["adjustment"]) == (m_best, t_best), metric
        assert pick["lambda"] is None and pick["candidates"] == 2 * len(DEFAULT_T_GRID)
        assert pick["val"] == pytest.approx(v_best, abs=1e-9)
        hand_test = _hand_metrics(test[m_best][0], test[m_best][1], counts, t_best)[metric]
        assert pick["test"] == pytest.approx(hand_test, abs=1e-9), metric
    # the LCT model: argmax over (lambda on its evaluate.lambda grid tau=0:2:5, t) of the validation rows
    lams = [{"tau": v} for v in (0.0, 0.5, 1.0, 1.5, 2.0)]
    lct_val = [_logits(out / "lct" / "seed0", "val", lam) for lam in lams]
    rows = [(_hand_metrics(lct_val[k][0], lct_val[k][1], counts, t), k, t)
            for k in range(len(lams)) for t in DEFAULT_T_GRID]
    best = _hand_pick(rows, "balanced_accuracy", len(DEFAULT_T_GRID))
    k_best, t_best, v_best = rows[best][1], rows[best][2], rows[best][0]["balanced_accuracy"]
    pick = next(p for p in d["picks"] if p["seed"] == 0 and p["method"] == "lct" and p["metric"] == "balanced_accuracy")
    assert (pick["lambda"], pick["adjustment"]) == (lams[k_best], t_best)
    assert pick["val"] == pytest.approx(v_best, abs=1e-9) and pick["candidates"] == len(rows)
    z, y, _ = _logits(out / "lct" / "seed0", "test", lams[k_best])
    assert pick["test"] == pytest.approx(_hand_metrics(z, y, counts, t_best)["balanced_accuracy"], abs=1e-9)

    # the prior stated is the training prior
    assert d["prior"]["source"] == "train"
    assert d["prior"]["values"][0] == pytest.approx((np.asarray(counts) / sum(counts)).tolist())

    # summary: mean and sample std over the seeds' test values of the picks
    for method in ("baseline", "lct"):
        for k in keys:
            vals = [p["test"] for p in d["picks"] if p["method"] == method and p["metric"] == k]
            st = d["summary"][method][k]
            assert len(vals) == 2 and st["values"] == vals
            assert st["mean"] == pytest.approx(np.mean(vals)) and st["std"] == pytest.approx(np.std(vals, ddof=1))


def test_compare_task_options_refused_before_training(tmp_path):
    runner = CliRunner()
    binary = ["compare", str(packaged_config_path("demo_digits")), "--baseline-grid", "tau=0", "-q",
              "--out", str(tmp_path / "b")]
    res = runner.invoke(app, binary + ["--prior", "uniform"])
    assert res.exit_code != 0 and "--prior" in res.output and "--prevalence" in res.output
    res = runner.invoke(app, binary + ["--adjustment", "0:2:5"])
    assert res.exit_code != 0 and "--adjustment" in res.output and "multi-class" in res.output
    assert not (tmp_path / "b").exists()  # nothing trained

    mc = ["compare", str(packaged_config_path("demo_digits_lt")), "--baseline-grid", "tau=0", "-q",
          "--out", str(tmp_path / "m")]
    res = runner.invoke(app, mc + ["--prevalence", "0.1"])
    assert res.exit_code != 0 and "--prevalence" in res.output and "--prior" in res.output
    res = runner.invoke(app, mc + ["--prior", "0.5,0.5"])
    assert res.exit_code != 0 and "2 values" in res.output and "10 classes" in res.output
    res = runner.invoke(app, mc + ["--adjustment", "0:2:x"])
    assert res.exit_code != 0 and "--adjustment" in res.output
    assert not (tmp_path / "m").exists()
