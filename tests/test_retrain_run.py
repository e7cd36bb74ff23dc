"""`lossdial retrain` (issue 14): a finished run's backbone with a retrained last layer, as an ordinary run.

Truths: numpy's lstsq on the frozen features of the retraining half with hand-computed omega* weights; FiLM
at a fixed lambda being a per-feature affine map (retraining after it gives the same decision values).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.evaluate import load_run
from lossdial.retrain import LastLayerClassifier
from lossdial.retrain.run import backbone_features, retrain_run
from lossdial.rundir import RunError

runner = CliRunner()
DEMO = "configs/demo_digits.yaml"
TINY = ["train.epochs=1", "train.eval_every=0", "schedule.warmup_epochs=0", "train.batch_size=256"]


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def _train(out, *extra):
    args = ["train", DEMO, "--out", str(out), "-q"]
    for ov in TINY + list(extra):
        args += ["--set", ov]
    _ok(runner.invoke(app, args))
    return out


@pytest.fixture(scope="module")
def tiny_baseline(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("llr") / "base", "lct.enabled=false", "model.backbone_kwargs.width=8")


@pytest.fixture(scope="module")
def demo_lct(tmp_path_factory):
    """The demo's LCT model (feature dimension 64), one epoch."""
    return _train(tmp_path_factory.mktemp("llr") / "lct")


def test_head_equals_independent_weighted_lstsq(tiny_baseline, tmp_path):
    res = retrain_run(tiny_baseline, tmp_path / "llr", weighting="omega_star")
    src = load_run(tiny_baseline)
    task = src.task()
    splits = np.load(tmp_path / "llr" / "splits.npz")
    pos = np.flatnonzero(np.isin(task.indices.val, splits["retrain_fit"]))
    with torch.no_grad():
        x = src.model.backbone(task.normalizer(task.val.x[torch.from_numpy(pos)])).flatten(1).double().numpy()
    y = task.val.y.numpy()[pos]
    n0, n1 = (y == 0).sum(), (y == 1).sum()
    d = np.linalg.matrix_rank(x - np.where(y[:, None] == 1, x[y == 1].mean(0), x[y == 0].mean(0)))
    omega = (2 * n0 - d) / (2 * n1 - d)  # METHODS.md section 4, by hand
    assert res.record["omega_star"] == pytest.approx(omega)
    assert (res.record["n_retrain"], res.record["d_eff"]) == ([n0, n1], d)
    w = np.where(y == 1, omega, 1.0)
    sol = np.linalg.lstsq(np.sqrt(w)[:, None] * np.c_[x, np.ones(len(x))], np.sqrt(w) * (2.0 * y - 1),
                          rcond=None)[0]
    new = load_run(tmp_path / "llr")
    fc_w = new.model.fc.weight.detach().double().numpy()
    fc_b = new.model.fc.bias.detach().double().numpy()
    pm = res.record["probability_map"]
    # logits [0, a f + c] with f the least-squares decision value
    np.testing.assert_allclose(fc_w[0], 0.0)
    np.testing.assert_allclose(fc_w[1] / pm["a"], sol[:-1], rtol=1e-4, atol=1e-5)
    assert (fc_b[1] - pm["c"]) / pm["a"] == pytest.approx(sol[-1], rel=1e-4, abs=1e-5)
    # the backbone is the source's, untouched
    for k, v in src.model.backbone.state_dict().items():
        torch.testing.assert_close(new.model.backbone.state_dict()[k], v)
    # the new run's validation split is the selection half; the default threshold is the decision f = 0
    assert len(new.task().val) == len(splits["retrain_select"])
    assert new.config.evaluate.threshold == pytest.approx(1 / (1 + np.exp(-pm["c"])))


def test_demo_retrain_through_pca_default_then_pick(demo_lct, tmp_path):
    out = tmp_path / "llr"
    text = _ok(runner.invoke(app, ["retrain", str(demo_lct), "--out", str(out), "--weighting", "omega_star"]))
    assert "Reducing by PCA to 35 components" in text
    _ok(runner.invoke(app, ["pick", str(out), "--at", "recall>=0.9", "--n-boot", "50"]))
    card = (out / "model_card.md").read_text()
    assert "d = 64, d_eff = 35 (35 PCA components)" in card and "feasible at the requested dimension: no" in card
    import json

    r = json.loads((out / "data.json").read_text())["retrain"]
    n0, n1 = r["n_retrain"]
    assert r["omega_star"] == pytest.approx((2 * n0 - 35) / (2 * n1 - 35))
    assert (r["source_lct"], r["feasible"], r["n_components"]) == (True, False, 35)
    # the new run is a baseline run (no lambda) every command takes
    _ok(runner.invoke(app, ["sweep", str(out)]))


def test_retraining_after_film_at_any_lambda_gives_the_same_head(demo_lct):
    """Why the retrained layer sits before FiLM: FiLM at a fixed lambda is per-feature affine."""
    src = load_run(demo_lct)
    task = src.task()
    h = backbone_features(src.model, task.val.x, normalizer=task.normalizer)
    y = task.val.y.numpy()
    base = LastLayerClassifier(pca=8, selection_fraction=0).fit(h, y).decision_function(h)
    for tau in (0.0, 3.0):
        z = src.space.encode({"tau": tau}, batch_size=1)
        scale, shift = (t.detach().double().numpy()[0] for t in src.model.film.scale_shift(z))
        hf = h * scale + shift
        f = LastLayerClassifier(pca=8, selection_fraction=0).fit(hf, y).decision_function(hf)
        np.testing.assert_allclose(f, base, rtol=1e-6, atol=1e-6)


def test_bad_inputs(tiny_baseline, tmp_path):
    out = tmp_path / "llr"
    r = runner.invoke(app, ["retrain", str(tiny_baseline), "--out", str(out), "--weighting", "balanced"])
    assert r.exit_code == 2 and "--weighting 'balanced'" in r.output
    r = runner.invoke(app, ["retrain", str(tiny_baseline), "--out", str(out), "--groups", "site"])
    assert r.exit_code == 2 and "groups need a table source" in r.output
    _ok(runner.invoke(app, ["retrain", str(tiny_baseline), "--out", str(out)]))
    r = runner.invoke(app, ["retrain", str(tiny_baseline), "--out", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["retrain", str(out), "--out", str(tmp_path / "again")])
    assert r.exit_code == 2 and "itself a retrained run" in r.output


def test_overlap_with_backbone_training_is_refused(tiny_baseline, tmp_path, monkeypatch):
    import lossdial.evaluate.run as er

    real_task = er.LoadedRun.task
    train0 = int(real_task(load_run(tiny_baseline)).indices.train[0])

    def task_with_leak(self):  # validation indices that hold one of the backbone's training rows
        t = real_task(self)
        t.indices = type(t.indices)(train=t.indices.train, val=np.r_[t.indices.val[:-1], train0],
                                    test=t.indices.test)
        return t

    monkeypatch.setattr(er.LoadedRun, "task", task_with_leak)
    with pytest.raises(RunError, match="overlaps the backbone's training split"):
        retrain_run(tiny_baseline, tmp_path / "llr")


def test_groups_from_a_table_column(tmp_path):
    """--groups COLUMN: weights per group (class x site here) from the retraining half's group counts."""
    rng = np.random.default_rng(0)
    n = 800
    y = (rng.random(n) < 0.25).astype(int)
    site = np.where(rng.random(n) < np.where(y == 1, 0.8, 0.2), "a", "b")  # spuriously tied to the label
    x = rng.normal(size=(n, 4)) + y[:, None]
    lines = ["id,f1,f2,f3,f4,site,label"] + [f"r{i},{','.join(f'{v:.5f}' for v in x[i])},{site[i]},"
                                              f"{'pos' if y[i] else 'neg'}" for i in range(n)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""name: tab
data: {{source: csv, path: {tmp_path / 't.csv'}, target: label, id_column: id, features: [f1, f2, f3, f4, site],
        positive_class: pos, beta: 4, val_fraction: 0.4, test_fraction: 0.2}}
model: {{backbone: mlp, backbone_kwargs: {{hidden: [16]}}}}
loss: {{family: vs, params: {{omega: 0.5, gamma: 0.0, tau: 1.0}}}}
lct: {{enabled: false}}
train: {{epochs: 1, batch_size: 64, augment: none, eval_every: 0}}
schedule: {{warmup_epochs: 0}}
""")
    _ok(runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "-q"]))
    out = tmp_path / "llr"
    _ok(runner.invoke(app, ["retrain", str(tmp_path / "run"), "--out", str(out), "--groups", "site"]))
    import json

    r = json.loads((out / "data.json").read_text())["retrain"]
    fit_rows = np.load(out / "splits.npz")["retrain_fit"]
    counts = {}
    for i in fit_rows:  # hand count of the groups of the retraining half, from the CSV itself
        counts[site[i]] = counts.get(site[i], 0) + 1
    assert r["n_per_group"] == counts
    g, d_eff = len(counts), r["d_eff"]
    assert d_eff == 16  # the MLP's feature dimension, ridgeless
    raw = {k: 1 / (v - d_eff / g) for k, v in counts.items()}
    big = max(counts, key=counts.get)
    assert r["group_weight"] == pytest.approx({k: v / raw[big] for k, v in raw.items()})
    _ok(runner.invoke(app, ["pick", str(out), "--at", "recall>=0.5", "--n-boot", "20"]))
    r = runner.invoke(app, ["retrain", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--groups", "town"])
    assert r.exit_code == 2 and "has no column 'town'" in r.output


def test_multiclass_head_is_temperature_times_one_hot_lstsq_and_pick_accepts(tmp_path):
    src_dir = tmp_path / "lt"
    args = ["train", "configs/demo_digits_lt.yaml", "--out", str(src_dir), "-q"]
    for ov in TINY + ["lct.enabled=false", "model.backbone_kwargs.width=8"]:
        args += ["--set", ov]
    _ok(runner.invoke(app, args))
    res = retrain_run(src_dir, tmp_path / "llr", weighting="prior")
    src = load_run(src_dir)
    task = src.task()
    pos = np.flatnonzero(np.isin(task.indices.val, np.load(tmp_path / "llr" / "splits.npz")["retrain_fit"]))
    x = backbone_features(src.model, task.val.x[torch.from_numpy(pos)], normalizer=task.normalizer)
    y = task.val.y.numpy()[pos]
    n = np.bincount(y, minlength=10)
    w = (n.max() / n)[y]  # prior weighting by hand
    sol = np.linalg.lstsq(np.sqrt(w)[:, None] * np.c_[x, np.ones(len(x))], np.sqrt(w)[:, None] * np.eye(10)[y],
                          rcond=None)[0]
    new = load_run(tmp_path / "llr")
    a = res.record["probability_map"]["a"]
    np.testing.assert_allclose(new.model.fc.weight.detach().double().numpy().T / a, sol[:-1], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(new.model.fc.bias.detach().double().numpy() / a, sol[-1], rtol=1e-4, atol=1e-5)
    _ok(runner.invoke(app, ["pick", str(tmp_path / "llr"), "--maximize", "balanced_accuracy", "--n-boot", "20"]))


def test_split_train_uses_the_carved_retrain_split(tmp_path):
    """data.retrain_fraction holds part of the training split out of training; --split train fits on it."""
    src_dir = _train(tmp_path / "carved", "lct.enabled=false", "model.backbone_kwargs.width=8",
                     "data.retrain_fraction=0.3")
    import json

    from lossdial.config import load_config
    from lossdial.data import build_task

    saved = np.load(src_dir / "splits.npz")
    carved, train = saved["retrain"], saved["train"]
    plain = build_task(load_config(DEMO, ["data.retrain_fraction=0"]).data)
    # carved from the training split: disjoint from what was trained on, together the old training split
    assert not np.intersect1d(carved, train).size
    np.testing.assert_array_equal(np.sort(np.r_[carved, train]), np.sort(plain.indices.train))
    labels = plain.train.y.numpy()[np.searchsorted(plain.indices.train, carved)]
    expect = [int(np.floor(0.3 * c)) for c in plain.train.counts]
    assert np.bincount(labels, minlength=2).tolist() == expect
    assert json.loads((src_dir / "data.json").read_text())["counts"]["train"] == [
        c - e for c, e in zip(plain.train.counts, expect)]
    out = tmp_path / "llr"
    _ok(runner.invoke(app, ["retrain", str(src_dir), "--out", str(out), "--split", "train", "--weighting",
                            "prior"]))
    r = json.loads((out / "data.json").read_text())["retrain"]
    assert r["n_retrain"] == expect and r["n_select"] == plain.val.counts
    assert len(load_run(out).task().val) == len(plain.val)  # the whole validation split chooses
    _ok(runner.invoke(app, ["pick", str(out), "--at", "recall>=0.5", "--n-boot", "20"]))
    # a run without a carved split says which setting it needs
    base = _train(tmp_path / "plain", "lct.enabled=false", "model.backbone_kwargs.width=8")
    r3 = runner.invoke(app, ["retrain", str(base), "--out", str(tmp_path / "y"), "--split", "train"])
    assert r3.exit_code == 2 and "data.retrain_fraction" in r3.output
