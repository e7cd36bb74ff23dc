"""Sweep, pick, model card, predict, export and report on a tiny trained demo run."""

import html.parser
import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.evaluate import NoFeasiblePoint, SweepResult, load_run, sweep
from lossdial.evaluate.select import SelectionSpec, select_point, sweep_split
from lossdial.evaluate.sweep import clopper_pearson_lower
from lossdial.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ov = ["train.epochs=3", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8"]
    train(load_config(packaged_config_path("demo_digits"), ov), root / "lct", device="cpu")
    train(load_config(packaged_config_path("demo_digits"), ov + ["lct.enabled=false"]), root / "base", device="cpu")
    return root


def _synthetic(k=3, n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    scores = np.stack([1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.2, n) + 0.5 * j))) for j in range(k)])
    return SweepResult(lambdas=[{"tau": float(j)} for j in range(k)], scores=scores, labels=y)


def _hand_auc(y, s):
    """Mann-Whitney: P(score of a positive > score of a negative), ties counting one half."""
    d = s[y == 1][:, None] - s[y == 0][None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def _all_thresholds(y, s):
    """Brute force over every distinct threshold t (predict s >= t): (thresholds, tp, fp) as arrays."""
    t = np.unique(s)
    pred = s[None, :] >= t[:, None]
    return t, (pred & (y == 1)).sum(1), (pred & (y == 0)).sum(1)


def test_sweep_auc_equals_pair_count(runs):
    loaded = load_run(runs / "lct")
    task = loaded.task()
    res = sweep(loaded.model, task.val, [{"tau": 0.0}, {"tau": 2.0}], loaded.space, transform=task.normalizer)
    assert res.scores.shape == (2, len(task.val))
    for row, s in zip(res.table, res.scores):
        assert row["metrics"]["auc"] == pytest.approx(_hand_auc(res.labels, s), abs=1e-12)
    # different lambdas give different operating points (the dial works)
    assert not np.allclose(res.scores[0], res.scores[1])


def test_pick_meets_recall_constraint_and_is_optimal():
    res = _synthetic()
    y = res.labels
    curves = [_all_thresholds(y, s) for s in res.scores]
    for r in (0.5, 0.8, 0.9, 0.95):
        p = res.pick(f"recall>={r}", "precision")
        pred = res.scores[p.index] >= p.threshold
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        assert tp / y.sum() >= r
        assert p.metrics["recall"] == pytest.approx(tp / y.sum()) and p.metrics["recall"] >= r
        assert p.metrics["precision"] == pytest.approx(tp / (tp + fp))
        # brute force: no (lambda, threshold) with recall >= r has higher precision
        best = max((ctp / (ctp + cfp))[ctp / y.sum() >= r].max() for _, ctp, cfp in curves)
        assert p.metrics["precision"] == pytest.approx(best)


def test_pick_other_objectives_and_infeasible():
    res = _synthetic()
    f1 = res.pick(None, "f1")
    assert f1.metrics["f1"] == pytest.approx(max(r["metrics"]["f1"] for r in res.table))
    brier = res.pick(None, "brier")
    assert brier.index == int(np.argmin([r["metrics"]["brier"] for r in res.table]))
    p = res.pick("precision>=0.8", "recall")
    assert p.metrics["precision"] >= 0.8
    cost = res.pick(None, "cost")
    assert cost.metrics["cost"] <= min(r["metrics"]["cost"] for r in res.table) + 1e-12
    with pytest.raises(NoFeasiblePoint) as e:
        res.pick("recall>=1.0", "precision", conservative=True, confidence=0.999)
    assert e.value.closest is not None and "closest" in str(e.value)


def test_infeasible_precision_constraint_reports_the_closest_point():
    """Every lambda's top score is a negative, so precision 1.0 is out of reach; the closest point is the
    highest precision anywhere: 10/11 at lambda 0, 20 positives under one negative at lambda 1 (20/21)."""
    rng = np.random.default_rng(0)
    rest_y = (rng.random(200) < 0.3).astype(int)
    y = np.r_[0, np.ones(20, int), 0, rest_y]
    s0 = np.r_[0.99, np.linspace(0.95, 0.90, 20), 0.85, rng.random(200) * 0.8]
    s1 = np.r_[0.99, np.linspace(0.95, 0.90, 10), np.linspace(0.85, 0.80, 10), 0.89, rng.random(200) * 0.8]
    res = SweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}], scores=np.stack([s1, s0]), labels=y)
    with pytest.raises(NoFeasiblePoint) as e:
        res.pick("precision>=1.0", "recall")
    closest = e.value.closest
    assert closest.index == 1 and closest.lam == {"tau": 1.0} and closest.threshold == pytest.approx(0.90)
    assert closest.metrics["precision"] == pytest.approx(20 / 21)
    assert closest.metrics["recall"] == pytest.approx(20 / y.sum())
    assert "precision" in str(e.value) and "closest" in str(e.value)
    # the same data with the constraint just below 20/21 is feasible, and picks exactly that point
    p = res.pick("precision>=0.95", "recall")
    assert (p.index, p.threshold) == (1, pytest.approx(0.90)) and p.metrics["precision"] == pytest.approx(20 / 21)


def test_clopper_pearson_matches_scipy_and_is_conservative():
    from scipy.stats import binomtest

    lo = clopper_pearson_lower(np.array([45]), 50, 0.95)[0]
    ref = binomtest(45, 50).proportion_ci(confidence_level=0.90, method="exact").low  # one-sided 95% = two-sided 90%
    assert lo == pytest.approx(ref, rel=1e-9)
    res = _synthetic(n=300)
    p = res.pick("recall>=0.8", "precision", conservative=True)
    n_pos = int(res.labels.sum())
    tp = int(((res.scores[p.index] >= p.threshold) & (res.labels == 1)).sum())
    assert clopper_pearson_lower(np.array([tp]), n_pos)[0] >= 0.8
    assert p.metrics["recall"] > 0.8


def test_prevalence_reweights_precision_not_recall():
    res = _synthetic()
    at_own = res.table[0]["metrics"]
    low = SweepResult(res.lambdas, res.scores, res.labels, prevalence=0.01).table[0]["metrics"]
    assert low["recall"] == at_own["recall"] and low["auc"] == pytest.approx(at_own["auc"])
    assert low["precision"] < at_own["precision"]
    # by hand: precision at prevalence p = TPR p / (TPR p + FPR (1 - p))
    s, y = res.scores[0], res.labels
    tpr = ((s >= 0.5) & (y == 1)).sum() / (y == 1).sum()
    fpr = ((s >= 0.5) & (y == 0)).sum() / (y == 0).sum()
    assert low["precision"] == pytest.approx(tpr * 0.01 / (tpr * 0.01 + fpr * 0.99))


def test_pick_never_reads_test_before_point_is_fixed(runs, monkeypatch):
    import lossdial.evaluate.select as sel

    loaded = load_run(runs / "lct")
    events = []

    class GuardedTask:
        def __init__(self, task):
            self._task = task

        def __getattr__(self, name):
            if name == "test":
                events.append("test read")
            return getattr(self._task, name)

    orig = sel.choose_point

    def spy(val, spec):
        events.append("chosen")
        return orig(val, spec)

    monkeypatch.setattr(sel, "choose_point", spy)
    entry = select_point(loaded, SelectionSpec(name="s", constraint="recall>=0.8", objective="precision"),
                         task=GuardedTask(loaded.task()), n_boot=50)
    assert events[0] == "chosen" and "test read" in events
    assert entry["val"]["recall"] >= 0.8 and entry["chosen_on"] == "val"


def test_cli_pick_card_predict_export_report(runs, tmp_path):
    run = str(runs / "lct")
    r = runner.invoke(app, ["sweep", run, "--lambda", "tau=0:3:7"])
    assert r.exit_code == 0, r.output
    table = json.loads((runs / "lct" / "sweeps" / "val.json").read_text())
    assert len(table["rows"]) == 7 and "precision@recall=0.95" in table["rows"][0]["metrics"]
    r = runner.invoke(app, ["pick", run, "--at", "recall>=0.8", "--maximize", "precision", "--name",
                            "screening", "--n-boot", "50"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["pick", run, "--maximize", "f1", "--name", "best_f1", "--n-boot", "50"])
    assert r.exit_code == 0, r.output
    card = json.loads((runs / "lct" / "model_card.json").read_text())
    assert set(card["points"]) == {"screening", "best_f1"}
    pt = card["points"]["screening"]
    assert pt["val"]["recall"] >= 0.8 and set(pt["lambda"]) == {"tau"}
    assert {"recall", "precision", "auc", "ap", "brier"} <= set(pt["test"])
    assert (runs / "lct" / "model_card.md").read_text().count("### `") == 2
    # --at alone: precision is maximised under a recall constraint, and the point gets a shell-safe name
    r = runner.invoke(app, ["pick", run, "--at", "recall>=0.8", "--n-boot", "20"])
    assert r.exit_code == 0, r.output
    auto = json.loads((runs / "lct" / "model_card.json").read_text())["points"]["recall_ge_0.8_max_precision"]
    assert auto["lambda"] == pt["lambda"] and auto["threshold"] == pt["threshold"]

    # predict reproduces the sweep's scores for the same lambda
    loaded = load_run(run)
    task = loaded.task()
    x = task.val.x.numpy()
    np.savez(tmp_path / "val.npz", x=x, ids=np.arange(len(x)))
    out = tmp_path / "pred.csv"
    r = runner.invoke(app, ["predict", run, str(tmp_path / "val.npz"), "--at", "screening", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = np.genfromtxt(out, delimiter=",", names=True)
    res = sweep(loaded.model, task.val, [pt["lambda"]], loaded.space, transform=task.normalizer)
    assert np.allclose(rows["score"], res.scores[0], rtol=1e-6, atol=1e-9)
    clear = np.abs(res.scores[0] - pt["threshold"]) > 1e-6  # a threshold is a validation score: skip exact ties
    assert np.array_equal(rows["decision"].astype(int)[clear], (res.scores[0] >= pt["threshold"]).astype(int)[clear])
    r = runner.invoke(app, ["predict", run, str(tmp_path / "nope.npz"), "--at", "screening"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["predict", run, str(tmp_path / "val.npz"), "--at", "unknown"])
    assert r.exit_code == 2 and "no point named" in r.output

    # export: a plain TorchScript model whose scores equal the LCT model's at that lambda
    r = runner.invoke(app, ["export", run, "--at", "screening", "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():  # torch.jit is deprecated in recent torch; still what many deploy
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(tmp_path / "exp" / "model.ts"))
    with torch.no_grad():
        s = ts(torch.from_numpy(x)).numpy()
    assert np.allclose(s, res.scores[0], atol=1e-5)
    ep = torch.export.load(str(tmp_path / "exp" / "model.pt2")).module()
    with torch.no_grad():
        assert np.allclose(ep(torch.from_numpy(x[:7])).numpy(), res.scores[0][:7], atol=1e-5)

    # report: valid HTML, every referenced image exists
    r = runner.invoke(app, ["report", run, str(runs / "base"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "report.html").read_text()

    class Checker(html.parser.HTMLParser):
        void = {"meta", "img", "br", "hr", "link", "input"}

        def __init__(self):
            super().__init__()
            self.stack, self.links = [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "a":
                self.links.append(a["href"])
            if tag not in self.void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
            self.stack.pop()

    c = Checker()
    c.feed(page)
    assert c.stack == []
    assert {"pr_curves.png", "roc_curves.png", "reliability.png", "metrics_vs_lambda.png",
            "confusion_screening.png"} <= set(c.links)
    for link in c.links:
        assert (tmp_path / "rep" / link).stat().st_size > 1000


def test_baseline_sweeps_thresholds_only(runs):
    loaded = load_run(runs / "base")
    res = sweep_split(loaded, "val")
    assert len(res.lambdas) == 1 and res.lambdas[0]["tau"] == 1.0
    with pytest.raises(ValueError, match="thresholds only"):
        sweep_split(loaded, "val", [{"tau": 1.0}])


def _counts(y, s, t):
    """tp, fp, fn, tn at score >= t, counted directly."""
    pred = s >= t
    return {"tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum()),
            "fn": int((~pred & (y == 1)).sum()), "tn": int((~pred & (y == 0)).sum()),
            "positives": int((y == 1).sum()), "negatives": int((y == 0).sum())}


def test_cli_grid_text_curves_and_counts(runs):
    from lossdial.evaluate.scoring import score_lambdas
    from lossdial.evaluate.select import search_grid

    run = str(runs / "lct")
    r = runner.invoke(app, ["sweep", run])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "searched 7 values of tau from evaluate.lambda of the run's config" in out  # demo config: tau=0:3:7
    table = json.loads((runs / "lct" / "sweeps" / "val.json").read_text())
    assert [row["lambda"]["tau"] for row in table["rows"]] == pytest.approx(np.linspace(0, 3, 7))
    # the curves file: every lambda x threshold, counts as counted directly from the scores
    loaded = load_run(run)
    res = sweep_split(loaded, "val")
    y = res.labels
    pi = loaded.data["train_prevalence"]
    with open(runs / "lct" / "sweeps" / "val_curves.csv") as f:
        rows = list(__import__("csv").DictReader(f))
    for k, lam in enumerate(res.lambdas):
        mine = [row for row in rows if float(row["lambda.tau"]) == lam["tau"]]
        assert len(mine) == len(np.unique(res.scores[k])) <= 1024
        for row in mine[::37] + mine[-1:]:
            c = _counts(y, res.scores[k], float(row["threshold"]))
            assert {key: int(row[key]) for key in ("tp", "fp", "fn", "tn")} == \
                {key: c[key] for key in ("tp", "fp", "fn", "tn")}
            tpr, fpr = c["tp"] / c["positives"], c["fp"] / c["negatives"]
            assert float(row["precision"]) == pytest.approx(pi * tpr / (pi * tpr + (1 - pi) * fpr))
    r = runner.invoke(app, ["sweep", run, "--lambda", "tau=0:3:4"])
    assert "searched 4 values of tau from --lambda" in " ".join(r.output.split())
    # without evaluate.lambda: 33 points over the training support tau ~ L(0, 3, 0.33)
    loaded.config.evaluate.lambda_grid = None
    grid, text = search_grid(loaded)
    assert [g["tau"] for g in grid] == pytest.approx(np.linspace(0, 3, 33))
    assert text.startswith("33 values of tau over the training support (the default")

    # pick: the counts behind the point, on validation and on test, in the output and the card
    r = runner.invoke(app, ["pick", run, "--at", "recall>=0.8", "--name", "counted", "--n-boot", "20"])
    assert r.exit_code == 0, r.output
    assert "searched 7 values of tau from evaluate.lambda" in " ".join(r.output.split())
    pt = json.loads((runs / "lct" / "model_card.json").read_text())["points"]["counted"]
    k = [lam["tau"] for lam in res.lambdas].index(pt["lambda"]["tau"])
    cv = _counts(y, res.scores[k], pt["threshold"])
    assert pt["counts"]["val"] == cv and cv["tp"] >= 5 and pt["min_tp"] == 5
    task = loaded.task()
    st = score_lambdas(loaded.model, task.test.x, [pt["lambda"]], loaded.space, transform=task.normalizer)[0]
    ct = _counts(task.test.y.numpy(), st, pt["threshold"])
    assert pt["counts"]["test"] == ct
    md = (runs / "lct" / "model_card.md").read_text()
    assert "| validation | " + " | ".join(str(cv[key]) for key in ("tp", "fp", "fn", "tn", "positives",
                                                                      "negatives")) + " |" in md
    import re

    cells = r"\s*│\s*".join(str(cv[key]) for key in ("tp", "fp", "fn", "tn"))
    assert re.search(r"validation\s*│\s*" + cells, r.output)

    # --conservative beyond what the validation positives can certify: the cap, and one closest point
    n_pos = cv["positives"]
    r = runner.invoke(app, ["pick", run, "--at", "recall>=0.99", "--conservative", "--confidence", "0.999",
                            "--n-boot", "20"])
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert f"{0.001 ** (1 / n_pos):.4f} = 0.001^(1/{n_pos})" in out and out.count("closest") == 1
    r = runner.invoke(app, ["pick", run, "--at", "recall>=0.5", "--min-tp", "1000", "--n-boot", "20"])
    assert r.exit_code == 2 and "fewer than min_tp=1000" in " ".join(r.output.split())
