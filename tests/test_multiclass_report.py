"""`lossdial report` on multi-class runs (issue 12): the confusion matrix, per-class recall and the dial curve.

Truth is computed here with NumPy from the saved weights' own logits (inputs normalised and lambda encoded by
hand): scores z - t log pi, argmax, a confusion matrix counted by hand and row-normalised, recalls per class and
the shot-group means written out."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.evaluate import load_run
from lossdial.report.html import build_report
from lossdial.report.multiclass import read_report_data
from lossdial.train import train

runner = CliRunner()
SMALL = ["train.epochs=4", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
         "train.batch_size=32", "train.ema_decay=0.5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A multi-class LCT run (VS over tau) and a baseline, both tiny, on long-tailed digits."""
    root = tmp_path_factory.mktemp("mcreport")
    path = packaged_config_path("demo_digits_lt")
    lct = load_config(path, SMALL)
    base = load_config(path, SMALL + ["lct.enabled=false"])
    train(lct, root / "lct", device="cpu")
    train(base, root / "base", device="cpu")
    return {"lct": (lct, root / "lct"), "base": (base, root / "base")}


def _logits_by_hand(cfg, run_dir, split, tau=None):
    """Logits of the saved weights on `split` (at lambda tau for an LCT run), normalisation written out."""
    from lossdial.data import build_task
    from lossdial.train.factory import build_model_from_config

    data = json.loads((run_dir / "data.json").read_text())
    part = getattr(build_task(cfg.data), split)
    model = build_model_from_config(cfg, data["input_shape"], 1 if tau is not None else 0, data["num_classes"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    model.eval()
    mean = torch.tensor(data["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["normalization"]["std"]).view(1, -1, 1, 1)
    x = (part.x.float() - mean) / std
    with torch.no_grad():
        if tau is None:
            z = model(x)
        else:
            lo, hi = json.loads((run_dir / "lambda_space.json").read_text())["supports"]["tau"]
            z = model(x, torch.full((len(x), 1), 2 * (tau - lo) / (hi - lo) - 1))
    return z.double().numpy(), part.y.numpy(), np.array(data["counts"]["train"], dtype=float)


def _pred(z, counts, t):
    s = z - t * np.log(counts / counts.sum())
    p = np.exp(s - s.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).argmax(1)


def _confusion_by_hand(y, pred, C):
    m = np.zeros((C, C))
    for a, b in zip(y, pred):
        m[a, b] += 1
    return m / m.sum(1, keepdims=True)


def _dial_by_hand(z, y, counts, t):
    pred = _pred(z, counts, t)
    recall = np.array([np.mean(pred[y == c] == c) for c in range(len(counts))])
    pi = counts / counts.sum()
    return {"recall": recall, "accuracy": float(pi @ recall), "balanced_accuracy": recall.mean(),
            "worst_class_accuracy": recall.min(), "many_shot_accuracy": recall[counts > 100].mean(),
            "medium_shot_accuracy": recall[(counts >= 20) & (counts <= 100)].mean(),
            "few_shot_accuracy": recall[counts < 20].mean()}


def _strict(text):
    def no_nan(c):
        raise AssertionError(f"{c} in the embedded JSON")
    return json.loads(text, parse_constant=no_nan)


def test_report_numbers_equal_a_hand_computation(runs, tmp_path):
    cfg_l, lct = runs["lct"]
    cfg_b, base = runs["base"]
    # a model card point at (tau=0.5, t=1) on the LCT run: the confusion matrix is drawn there
    r = runner.invoke(app, ["pick", str(lct), "--name", "p", "--lambda", "tau=0.5", "--adjustment", "1",
                            "--n-boot", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", str(lct), str(base), "--out", str(tmp_path / "rep"), "--adjustment", "0,1.5",
                            "--lambda", "tau=0,2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "report.html").read_text()
    start = page.index('id="report-data">') + len('id="report-data">')
    data = _strict(page[start:page.index("</script>", start)])
    assert data == read_report_data(tmp_path / "rep" / "report.html")
    p_lct, p_base = data["runs"]

    # (1) confusion matrix at the card point, by hand
    assert (p_lct["lambda"], p_lct["adjustment"]) == ({"tau": 0.5}, 1.0)
    assert "model card point 'p'" in p_lct["point_source"]
    z, y, counts = _logits_by_hand(cfg_l, lct, "val", tau=0.5)
    want = _confusion_by_hand(y, _pred(z, counts, 1.0), len(counts))
    assert np.array(p_lct["confusion"]) == pytest.approx(want, abs=1e-12)
    assert np.diag(want) == pytest.approx(_dial_by_hand(z, y, counts, 1.0)["recall"], abs=1e-12)
    assert p_lct["per_class_recall"] == pytest.approx(np.diag(want).tolist(), abs=1e-12)
    # the baseline has no card point: drawn at t = 0
    zb, yb, _ = _logits_by_hand(cfg_b, base, "val")
    assert p_base["lambda"] is None and p_base["adjustment"] == 0.0
    assert p_base["per_class_recall"] == pytest.approx(_dial_by_hand(zb, yb, counts, 0.0)["recall"].tolist(),
                                                       abs=1e-12)

    # (3) the dial over lambda and t: the baseline against t (two values), the LCT run at every (tau, t), by hand
    keys = ("accuracy", "balanced_accuracy", "worst_class_accuracy", "many_shot_accuracy", "medium_shot_accuracy",
            "few_shot_accuracy")
    assert p_base["dial_xs"] == [0.0, 1.5] and [r["adjustment"] for r in p_base["dial"]] == [0.0, 1.5]
    for row, t in zip(p_base["dial"], (0.0, 1.5)):
        truth = _dial_by_hand(zb, yb, counts, t)
        for k in keys:
            assert row[k] == pytest.approx(truth[k], abs=1e-12), (t, k)
    assert p_base["dial"][0]["few_shot_accuracy"] != p_base["dial"][1]["few_shot_accuracy"]  # t moved it
    assert p_lct["dial_xs"] == [0.0, 1.5]
    assert [(r["lambda"], r["adjustment"]) for r in p_lct["dial"]] == [({"tau": tau}, t) for tau in (0.0, 2.0)
                                                                       for t in (0.0, 1.5)]
    for row in p_lct["dial"]:
        zt, yt, _ = _logits_by_hand(cfg_l, lct, "val", tau=row["lambda"]["tau"])
        truth = _dial_by_hand(zt, yt, counts, row["adjustment"])
        for k in keys:
            assert row[k] == pytest.approx(truth[k], abs=1e-12), (row["lambda"], row["adjustment"], k)
    # the table shows the same rows; the PNGs are written beside the page
    assert f"{p_base['dial'][1]['balanced_accuracy']:.4f}" in page
    # the confusion matrix of every run given (the baseline's too), the dial and the learning curves
    assert {f.name for f in (tmp_path / "rep").iterdir()} >= {"confusion_normalised.png", "confusion_normalised_1.png",
                                                              "per_class_recall.png", "dial_curve.png",
                                                              "learning_curves.png"}
    assert f"Confusion matrix of {base} (baseline)" in page


def test_report_test_split_without_card_uses_the_reference_lambda(runs, tmp_path):
    cfg_l, lct = runs["lct"]
    (lct / "model_card.json").unlink(missing_ok=True)
    loaded = load_run(lct, device="cpu")
    page = build_report([loaded], tmp_path / "r", split="test", prior="uniform", lambdas=[{"tau": 1.0}])
    p = read_report_data(page)["runs"][0]
    assert read_report_data(page)["split"] == "test"
    mean = float(loaded.space.distributions["tau"].mean)
    assert p["lambda"] == {"tau": pytest.approx(mean)} and p["adjustment"] == 0.0
    assert "reference lambda" in p["point_source"]
    z, y, counts = _logits_by_hand(cfg_l, lct, "test", tau=mean)
    assert np.array(p["confusion"]) == pytest.approx(_confusion_by_hand(y, _pred(z, counts, 0.0), 10), abs=1e-12)
    zt, yt, _ = _logits_by_hand(cfg_l, lct, "test", tau=1.0)
    assert p["dial"][0]["accuracy"] == pytest.approx(_dial_by_hand(zt, yt, counts, 0.0)["recall"].mean(), abs=1e-12)


def test_mixing_task_types_and_binary_options_are_refused(runs, tmp_path):
    _, lct = runs["lct"]
    loaded = load_run(lct, device="cpu")
    binary = SimpleNamespace(path=tmp_path / "bin", task_type=SimpleNamespace(name="binary"),
                             data={"class_names": ["neg", "pos"]})
    with pytest.raises(ValueError, match="mix binary and multi-class") as exc:
        build_report([loaded, binary], tmp_path / "mixed")
    assert str(tmp_path / "bin") in str(exc.value) and "(binary)" in str(exc.value)
    assert not (tmp_path / "mixed").exists()
    r = runner.invoke(app, ["report", str(lct), "--prevalence", "0.1", "--out", str(tmp_path / "p"),
                            "--device", "cpu"])
    assert r.exit_code != 0 and "--prior" in r.output and not (tmp_path / "p").exists()


def test_an_empty_shot_group_is_null_in_the_data_dash_in_the_table_and_not_drawn(tmp_path):
    """beta 3: training counts 104 ... 34, so no class has < 20 samples (the few-shot group is empty)."""
    cfg = load_config(packaged_config_path("demo_digits_lt"), SMALL + ["train.epochs=1", "lct.enabled=false",
                                                                       "data.beta=3"])
    train(cfg, tmp_path / "run", device="cpu")
    page = build_report([load_run(tmp_path / "run", device="cpu")], tmp_path / "rep", adjustments="0,1")
    text = page.read_text()
    start = text.index('id="report-data">') + len('id="report-data">')
    p = _strict(text[start:text.index("</script>", start)])["runs"][0]
    assert min(p["train_counts"]) >= 20 and p["shot_groups"]["few"] == []
    assert [r["few_shot_accuracy"] for r in p["dial"]] == [None, None]
    assert all(r["many_shot_accuracy"] is not None for r in p["dial"])
    assert text.count("<td>-</td>") == 2  # the few-shot cell of each row
    assert "No class has few-shot training counts, so that group is not drawn." in text
