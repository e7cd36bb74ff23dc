"""The live dial of `lossdial report` (issue 16), in a real browser: headless Chromium driven by Selenium.

The page computes everything in its own JavaScript; the truth here is computed in Python from files other
commands wrote: the sweep's curve file (`lossdial sweep` -> sweeps/val_curves.csv: unweighted tp, fp, fn, tn at
every threshold), the multi-class sweep's val.json (per-class recall per (lambda, t)), and the model card
(`lossdial pick`). Formulas written out here: precision at prevalence pi = pi TPR / (pi TPR + (1-pi) FPR),
counts per 10,000 = 10^4 pi TPR ..., cost per case = c_FP (1-pi) FPR + c_FN pi (1-TPR); multi-class accuracy
at the prior q_c ~ n_c^gamma = sum_c q_c recall_c.

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromedriver) and `selenium` (the `test` extra).
Without them the tests skip, saying what is missing - unless the environment variable CI is set, where they fail.
Screenshots of the page at two settings are written to the test's tmp dir and, when LOSSDIAL_SCREENSHOT_DIR is
set, copied there.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.train import train

pytestmark = pytest.mark.browser
runner = CliRunner()
CHROMEDRIVER = "/usr/bin/chromedriver"
BIN = ["train.epochs=3", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8"]
MC = ["train.epochs=4", "train.eval_every=2", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
      "train.batch_size=32", "train.ema_decay=0.5"]


def _browser_missing() -> list[str]:
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium (pip install -e '.[test]')")
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        missing.append("the chromium browser (Debian: apt-get install chromium)")
    if not Path(CHROMEDRIVER).exists():
        missing.append(f"{CHROMEDRIVER} (Debian: apt-get install chromium-driver)")
    return missing


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = _browser_missing()
    if missing:
        msg = "browser test needs " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set: .ci/run installs chromium and chromium-driver)")
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              "--window-size=1300,2200",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(a)
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    opts.binary_location = binary
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


class Page:
    def __init__(self, driver, path: Path):
        self.d = driver
        driver.get(path.resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors

    def set(self, id_: str, value) -> None:
        """Move a control as a person does: set its value, then fire the event the page listens to."""
        self.d.execute_script(
            "var e = document.getElementById(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input', {bubbles: true}));",
            id_, str(value))

    def text(self, id_: str) -> str:
        return self.d.find_element("id", id_).text

    def num(self, id_: str) -> float:
        t = self.text(id_)
        return float("nan") if t.strip() == "-" else float(t.split()[0].rstrip(","))

    def shot(self, path: Path) -> None:
        self.d.save_screenshot(str(path))
        target = os.environ.get("LOSSDIAL_SCREENSHOT_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)


def _check_offline_and_strict(page: Path) -> dict:
    text = page.read_text()
    assert len(text) < 3_000_000
    # nothing is fetched: no external script, stylesheet, image or font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text and "fetch(" not in text and "XMLHttpRequest" not in text
    start = text.index('id="dial-data">') + len('id="dial-data">')

    def no_nan(c):
        raise AssertionError(f"{c} in the embedded JSON")
    return json.loads(text[start:text.index("</script>", start)], parse_constant=no_nan)


# ------------------------------------------------------------------------------------------------- binary
@pytest.fixture(scope="module")
def binary_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("dial")
    train(load_config(packaged_config_path("demo_digits"), BIN), root / "lct", device="cpu")
    train(load_config(packaged_config_path("demo_digits"), BIN + ["lct.enabled=false"]), root / "base", device="cpu")
    for args in (["pick", str(root / "lct"), "--at", "recall>=0.8", "--name", "screening", "--n-boot", "30"],
                 ["sweep", str(root / "lct"), "--lambda", "tau=0:3:7", "--prevalence", "0.5"],
                 ["sweep", str(root / "lct"), "--lambda", "tau=0:3:7", "--prevalence", "0.05"],
                 ["sweep", str(root / "base"), "--prevalence", "0.05"],
                 ["report", str(root / "lct"), str(root / "base"), "--lambda", "tau=0:3:7", "--out",
                  str(root / "rep")]):
        r = runner.invoke(app, args + ["--device", "cpu"])
        assert r.exit_code == 0, (args, r.output)
        if args[:1] == ["sweep"] and args[-2:] == ["--prevalence", "0.5"]:  # the next sweep overwrites it
            shutil.copy(root / "lct" / "sweeps" / "val.json", root / "val_prev0.5.json")
    return root


def _curves(path: Path) -> dict[float, list[dict]]:
    """The curve file by lambda: rows with threshold, tp, fp, fn, tn (thresholds highest first)."""
    out: dict[float, list[dict]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            key = float(row.get("lambda.tau") or "nan")
            out.setdefault(key, []).append({k: float(row[k]) for k in ("threshold", "tp", "fp", "fn", "tn")})
    return out


def _at(rows, thr):
    """Counts for 'predict positive when score >= thr': the row with the lowest threshold >= thr."""
    ok = [r for r in rows if r["threshold"] >= thr]
    if not ok:
        return {"tp": 0.0, "fp": 0.0, "fn": rows[0]["tp"] + rows[0]["fn"], "tn": rows[0]["fp"] + rows[0]["tn"]}
    return min(ok, key=lambda r: r["threshold"])


def _measures(c, pi, cfp=1.0, cfn=1.0):
    P, N = c["tp"] + c["fn"], c["fp"] + c["tn"]
    tpr, fpr = c["tp"] / P, c["fp"] / N
    prec = pi * tpr / (pi * tpr + (1 - pi) * fpr) if tpr + fpr > 0 else math.nan
    f1 = 2 * prec * tpr / (prec + tpr) if prec + tpr > 0 else math.nan
    return {"precision": prec, "recall": tpr, "f1": f1, "fpr": fpr, "cost": cfp * (1 - pi) * fpr + cfn * pi * (1 - tpr),
            "tp10k": 1e4 * pi * tpr, "fp10k": 1e4 * (1 - pi) * fpr, "fn10k": 1e4 * pi * (1 - tpr),
            "tn10k": 1e4 * (1 - pi) * (1 - fpr)}


def _best(curves, target, pi, min_tp=5, metric="recall", calibration=None):
    """Best point with recall >= target (highest precision, then recall) or with precision >= target (highest
    recall, then precision), with >= min_tp true positives, over every lambda. Ties between lambdas (keys equal to
    1e-9), pick's rule: the higher AUC, then the lower Brier score at pi (``calibration``: tau -> (AUC, Brier at
    prevalence 1, Brier at prevalence 0)), then the median (the lower, for an even count) of the longest run of
    consecutive tied taus on the grid; within a lambda the first (highest threshold) of equal keys."""
    other = "precision" if metric == "recall" else "recall"
    per = {}
    for lam, rows in sorted(curves.items()):
        for r in rows:
            m = _measures(r, pi)
            if r["tp"] < min_tp or math.isnan(m["precision"]) or m[metric] < target - 1e-12:
                continue
            key = (m[other], m[metric])
            if lam not in per or key > per[lam][0]:
                per[lam] = (key, lam, r, m)
    if not per:
        return None

    def keep_best(lams, value):
        top = max(value(v) for v in lams)
        return [v for v in lams if value(v) >= top - 1e-9 * max(1.0, abs(top))]
    tied = keep_best(list(per), lambda v: per[v][0][0])
    tied = keep_best(tied, lambda v: per[v][0][1])
    if len(tied) > 1 and calibration is not None:
        tied = keep_best(tied, lambda v: calibration[v][0])
        tied = keep_best(tied, lambda v: -(pi * calibration[v][1] + (1 - pi) * calibration[v][2]))
    grid = sorted(curves)
    runs, cur = [], []
    for v in grid:
        if v in tied:
            cur.append(v)
        elif cur:
            runs.append(cur)
            cur = []
    runs.append(cur)
    longest = max((r for r in runs if r), key=len)
    return per[longest[(len(longest) - 1) // 2]]


def _calibration(root: Path) -> dict[float, tuple[float, float, float]]:
    """tau -> (AUC, Brier at prevalence 1, Brier at prevalence 0) of the LCT run, from its two sweep tables: the
    Brier score at prevalence pi is pi B1 + (1 - pi) B0 (the prevalence-weighted mean of squared errors), so the
    tables at 0.5 and 0.05 give B1 and B0."""
    t5 = json.loads((root / "val_prev0.5.json").read_text())["rows"]
    t05 = json.loads((root / "lct" / "sweeps" / "val.json").read_text())["rows"]
    out = {}
    for a, b in zip(t5, t05):
        assert a["lambda"] == b["lambda"]
        x, y = a["metrics"]["brier"], b["metrics"]["brier"]  # x = (B1 + B0)/2, y = 0.05 B1 + 0.95 B0
        b1 = (y - 0.95 * 2 * x) / (0.05 - 0.95)
        out[a["lambda"]["tau"]] = (a["metrics"]["auc"], b1, 2 * x - b1)
    return out


def test_binary_dial_matches_the_curve_file_and_the_model_card(browser, binary_report, tmp_path):
    root = binary_report
    page_path = root / "rep" / "report.html"
    data = _check_offline_and_strict(page_path)
    curves = _curves(root / "lct" / "sweeps" / "val_curves.csv")
    base_curves = _curves(root / "base" / "sweeps" / "val_curves.csv")
    card = json.loads((root / "lct" / "model_card.json").read_text())["points"]["screening"]
    taus = sorted(curves)
    assert taus == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3])
    page = Page(browser, page_path)

    # (1) a manual setting: tau = 1.5, a threshold between two validation scores in the middle of the curve
    # (it lands on the higher one), prevalence 0.05 (the curve file's), costs FP 2 / FN 10
    rows = curves[1.5]
    mid = len(rows) // 2
    thr = (rows[mid]["threshold"] + rows[mid + 1]["threshold"]) / 2
    page.set("lam-tau", taus.index(1.5))
    page.set("ctl-threshold", thr)
    page.set("ctl-prevalence", math.log10(0.05))
    page.set("ctl-cost-fp", 2)
    page.set("ctl-cost-fn", 10)
    c = _at(rows, thr)
    assert c is rows[mid] and 0 < c["tp"] < c["tp"] + c["fn"] and 0 < c["fp"]  # a point inside the curve
    m = _measures(c, 0.05, 2, 10)
    assert page.text("lam-tau-value") == "1.5"
    assert page.num("val-precision") == pytest.approx(m["precision"], abs=6e-4)
    assert page.num("val-recall") == pytest.approx(m["recall"], abs=6e-4)
    assert page.num("val-f1") == pytest.approx(m["f1"], abs=6e-4)
    assert page.num("val-fpr") == pytest.approx(m["fpr"], abs=6e-4)
    assert page.num("val-cost") == pytest.approx(m["cost"], abs=6e-5)
    for cell, key in (("cm-tp", "tp10k"), ("cm-fp", "fp10k"), ("cm-fn", "fn10k"), ("cm-tn", "tn10k")):
        assert page.num(cell) == pytest.approx(m[key], abs=0.51), cell
    assert page.text("val-counts").startswith(f"{int(c['tp'])}, {int(c['fp'])}, {int(c['fn'])}, {int(c['tn'])}")
    # the curve file's own precision column is at the prevalence it was swept at (0.05)
    with open(root / "lct" / "sweeps" / "val_curves.csv") as f:
        row = next(r for r in csv.DictReader(f) if float(r["lambda.tau"]) == 1.5
                   and float(r["threshold"]) == c["threshold"])
    assert page.num("val-precision") == pytest.approx(float(row["precision"]), abs=6e-4)
    # the Brier score at this lambda and prevalence equals the sweep table's (swept at prevalence 0.05)
    table = json.loads((root / "lct" / "sweeps" / "val.json").read_text())["rows"]
    brier = next(r["metrics"]["brier"] for r in table if r["lambda"]["tau"] == 1.5)
    ece = next(r["metrics"]["ece"] for r in table if r["lambda"]["tau"] == 1.5)
    cal = page.text("val-calibration").split(", ")
    assert float(cal[0]) == pytest.approx(brier, abs=6e-5) and float(cal[1]) == pytest.approx(ece, abs=6e-5)
    # other runs at the same recall: the baseline's best point with recall >= this recall
    b = _best(base_curves, m["recall"], 0.05)
    cmp_row = browser.find_element("id", "cmp-1")
    assert float(cmp_row.find_element("class name", "precision").text) == pytest.approx(b[3]["precision"], abs=6e-4)
    assert float(cmp_row.find_element("class name", "recall").text) == pytest.approx(b[3]["recall"], abs=6e-4)
    page.shot(tmp_path / "binary_manual_tau1.5_prev0.05.png")

    # (2) target recall 0.9 at prevalence 0.01: snaps to the best point over every lambda
    page.set("ctl-prevalence", math.log10(0.01))
    page.set("ctl-mode", "recall")
    page.set("ctl-target", 0.9)
    cal = _calibration(root)
    best = _best(curves, 0.9, 0.01, calibration=cal)
    assert page.num("val-recall") == pytest.approx(best[3]["recall"], abs=6e-4)
    assert page.num("val-precision") == pytest.approx(best[3]["precision"], abs=6e-4)
    assert page.text("lam-tau-value") == f"{best[1]:g}"
    assert "snapped to lambda tau=" in page.text("snap-status")
    b = _best(base_curves, 0.9, 0.01)
    cmp_row = browser.find_element("id", "cmp-1")
    assert float(cmp_row.find_element("class name", "precision").text) == pytest.approx(b[3]["precision"], abs=6e-4)
    page.shot(tmp_path / "binary_target_recall0.9_prev0.01.png")
    # target precision (the median precision at this prevalence over the eligible points, so that some points
    # meet it and some do not): the most recall with precision >= it
    precisions = [_measures(r, 0.01)["precision"] for rows_ in curves.values() for r in rows_ if r["tp"] >= 5]
    target = round(float(np.nanmedian(precisions)), 2)
    page.set("ctl-mode", "precision")
    page.set("ctl-target", target)
    best = _best(curves, target, 0.01, metric="precision", calibration=cal)
    assert best is not None and "snapped" in page.text("snap-status")
    assert page.num("val-recall") == pytest.approx(best[3]["recall"], abs=6e-4)
    assert page.num("val-precision") == pytest.approx(best[3]["precision"], abs=6e-4)
    page.set("ctl-mode", "manual")

    # (3) the model card: its test numbers and intervals are shown; 'show' puts the dial on its point, where
    # the validation numbers are the card's (pick chose it on the same split at the same prevalence)
    row = page.text("card-screening")
    ci = card["test_ci95"]["precision"]
    assert f"{card['test']['precision']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" in row
    assert f"{card['test']['recall']:.3f}" in row
    browser.find_element("css selector", "#card-screening button").click()
    assert page.num("val-recall") == pytest.approx(card["val"]["recall"], abs=6e-4)
    assert page.num("val-precision") == pytest.approx(card["val"]["precision"], abs=6e-4)
    # the same point found by the page's own target search (a second implementation of pick's rule)
    page.set("ctl-mode", "recall")
    page.set("ctl-target", 0.8)
    assert page.num("val-precision") == pytest.approx(card["val"]["precision"], abs=6e-4)
    assert page.text("lam-tau-value") == f"{card['lambda']['tau']:g}"
    assert data["runs"][0]["card"][0]["name"] == "screening"


def _synthetic_page(tmp_path, lambdas, scores, y, prevalence):
    """A dial page for a made-up LCT run: its validation sweep is ``scores`` [K, N] (no training; the run object
    carries only what the page data reads)."""
    from types import SimpleNamespace

    from lossdial.evaluate.sweep import SweepResult
    from lossdial.report.dial import binary_dial_data, dial_section
    from lossdial.report.html import page_head

    sweep = SweepResult(lambdas=lambdas, scores=scores, labels=y, prevalence=prevalence)
    run = SimpleNamespace(path=tmp_path / "synthetic", is_lct=True, space=SimpleNamespace(names=list(lambdas[0])))
    data = binary_dial_data([(run, sweep)], prevalence=prevalence, class_names=["neg", "pos"])
    page = tmp_path / "ties.html"
    page.write_text(page_head("ties") + dial_section(data) + "</body></html>")
    return page, sweep


def test_snap_breaks_ties_like_pick(browser, tmp_path):
    # every lambda ranks the samples alike (a shift of the logit), so the best precision at recall >= 0.8 and its
    # recall tie at every lambda, and so does AUC; the Brier score at the page's prevalence decides (written out
    # here: pi mean_pos (1-s)^2 + (1-pi) mean_neg s^2). Grid order would snap to tau=0
    rng = np.random.RandomState(0)
    y = (rng.rand(300) < 0.3).astype(int)
    z = 1.5 * (2 * y - 1) + rng.randn(300)
    shifts = np.linspace(-3, 1, 9)
    scores = np.stack([1 / (1 + np.exp(-(z + d))) for d in shifts])
    lambdas = [{"tau": float(k)} for k in range(9)]
    pi = 0.2
    page_path, sweep = _synthetic_page(tmp_path, lambdas, scores, y, pi)
    brier = [pi * np.mean((1 - s[y == 1]) ** 2) + (1 - pi) * np.mean(s[y == 0] ** 2) for s in scores]
    k_true = int(np.argmin(brier))
    assert k_true not in (0, 4)  # neither the first grid point nor the centre of the grid
    point = sweep.pick("recall>=0.8", "precision")
    assert point.index == k_true  # pick's own rule, the second implementation
    page = Page(browser, page_path)
    page.set("ctl-mode", "recall")
    page.set("ctl-target", 0.8)
    assert page.text("lam-tau-value") == f"{k_true:g}", page.text("snap-status")
    assert page.num("val-precision") == pytest.approx(point.metrics["precision"], abs=6e-4)

    # identical scores at tau 2..6 and 8, noise elsewhere: AUC and Brier tie too, so the centre of the longest
    # tied run, tau 4 (grid order: tau 2)
    good = scores[4]
    scores = np.stack([good if k in (2, 3, 4, 5, 6, 8) else rng.rand(300) for k in range(9)])
    page_path, sweep = _synthetic_page(tmp_path, lambdas, scores, y, pi)
    assert sweep.pick("recall>=0.8", "precision").index == 4
    page = Page(browser, page_path)
    page.set("ctl-mode", "recall")
    page.set("ctl-target", 0.8)
    assert page.text("lam-tau-value") == "4", page.text("snap-status")


def test_static_figures_and_tables(binary_report):
    rep = binary_report / "rep"
    text = (rep / "report.html").read_text()
    assert {"pr_curves.png", "roc_curves.png", "reliability.png", "metrics_vs_lambda.png", "learning_curves.png",
            "confusion_screening.png"} <= {p.name for p in rep.iterdir()}
    # the baseline is in the per-lambda table, and the prevalence is stated once
    assert "<td>baseline base</td>" in text
    assert text.count("Prevalence: ") == 1


# ------------------------------------------------------------------------------------------------- multi-class
@pytest.fixture(scope="module")
def mc_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("dialmc")
    path = packaged_config_path("demo_digits_lt")
    train(load_config(path, MC), root / "lct", device="cpu")
    train(load_config(path, MC + ["lct.enabled=false"]), root / "base", device="cpu")
    for args in (["pick", str(root / "lct"), "--name", "p", "--lambda", "tau=1", "--adjustment", "0.5",
                  "--n-boot", "5"],
                 ["sweep", str(root / "lct"), "--lambda", "tau=0,1,2", "--adjustment", "0:2:5"],
                 ["sweep", str(root / "base"), "--adjustment", "0:2:5"],
                 ["report", str(root / "lct"), str(root / "base"), "--lambda", "tau=0,1,2", "--adjustment", "0:2:5",
                  "--out", str(root / "rep")]):
        r = runner.invoke(app, args + ["--device", "cpu"])
        assert r.exit_code == 0, (args, r.output)
    return root


def test_multiclass_dial_matches_the_sweep(browser, mc_report, tmp_path):
    root = mc_report
    data = _check_offline_and_strict(root / "rep" / "report.html")
    sweep = json.loads((root / "lct" / "sweeps" / "val.json").read_text())
    base = json.loads((root / "base" / "sweeps" / "val.json").read_text())
    counts = np.array(sweep["train_counts"], float)
    page = Page(browser, root / "rep" / "report.html")
    ts = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert data["runs"][0]["adjustments"] == ts

    for tau, t, gamma in ((1.0, 1.0, 1.0), (2.0, 0.5, -1.0), (0.0, 2.0, 0.0)):
        page.set("lam-tau", [0.0, 1.0, 2.0].index(tau))
        page.set("ctl-adjustment", ts.index(t))
        page.set("ctl-prior", gamma)
        row = next(r for r in sweep["rows"] if r["lambda"]["tau"] == tau and r["adjustment"] == t)
        m = row["metrics"]
        recall = np.array(m["per_class_recall"], float)
        q = counts ** gamma / (counts ** gamma).sum()
        assert page.num("val-accuracy") == pytest.approx(float(q @ recall), abs=6e-4), (tau, t, gamma)
        for id_, key in (("val-balanced", "balanced_accuracy"), ("val-worst", "worst_class_accuracy"),
                         ("val-many", "many_shot_accuracy"), ("val-medium", "medium_shot_accuracy"),
                         ("val-few", "few_shot_accuracy")):
            assert page.num(id_) == pytest.approx(m[key], abs=6e-4), (tau, t, id_)
        if gamma == 1.0:  # the sweep's accuracy is at the training prior
            assert page.num("val-accuracy") == pytest.approx(m["accuracy"], abs=6e-4)
        # the confusion matrix's diagonal is the per-class recall; its cases per 10,000 follow the prior
        for c in range(len(counts)):
            cell = page.text(f"cm-{c}-{c}").split()
            assert float(cell[0]) == pytest.approx(recall[c], abs=6e-3)
            assert float(cell[1]) == pytest.approx(1e4 * q[c] * recall[c], abs=0.51)
        # the baseline at the same t
        brow = next(r for r in base["rows"] if r["adjustment"] == t)["metrics"]
        cmp_row = browser.find_element("id", "cmp-1")
        assert float(cmp_row.find_element("class name", "balanced").text) == pytest.approx(
            brow["balanced_accuracy"], abs=6e-4)
        assert float(cmp_row.find_element("class name", "few").text) == pytest.approx(brow["few_shot_accuracy"], abs=6e-4)
        if (tau, t) == (1.0, 1.0):
            page.shot(tmp_path / "multiclass_tau1_t1_train_prior.png")
        if (tau, t) == (2.0, 0.5):
            page.shot(tmp_path / "multiclass_tau2_t0.5_reversed_prior.png")

    # the card point: test numbers with intervals; 'show' moves the dial to (tau=1, t=0.5)
    card = json.loads((root / "lct" / "model_card.json").read_text())["points"]["p"]
    ci = card["test_ci95"]["balanced_accuracy"]
    assert f"{card['test']['balanced_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" in page.text("card-p")
    browser.find_element("css selector", "#card-p button").click()
    assert page.text("lam-tau-value") == "1" and page.text("ctl-adjustment-value") == "0.50"
    assert page.num("val-balanced") == pytest.approx(card["val"]["balanced_accuracy"], abs=6e-4)


def test_learning_curve_figure_plots_the_training_log(mc_report):
    """Loss, learning rate and the periodic validation metrics per epoch, read back from metrics.jsonl here."""
    from lossdial.evaluate import load_run
    from lossdial.report.html import _plt, learning_curve_figure

    runs = [load_run(mc_report / "lct", device="cpu"), load_run(mc_report / "base", device="cpu")]
    fig = learning_curve_figure(_plt(), runs)
    loss_ax, lr_ax, val_ax = fig.axes[:3]
    for i, name in enumerate(("lct", "base")):
        log = [json.loads(line) for line in (mc_report / name / "metrics.jsonl").read_text().splitlines()]
        epochs = [r for r in log if r.get("event") == "epoch"]
        assert list(loss_ax.lines[i].get_xdata()) == [r["epoch"] for r in epochs] == [1, 2, 3, 4]
        assert list(loss_ax.lines[i].get_ydata()) == pytest.approx([r["train_loss"] for r in epochs])
        assert list(lr_ax.lines[i].get_ydata()) == pytest.approx([r["lr"] for r in epochs])
        with_val = [r for r in epochs if "val" in r]
        assert [r["epoch"] for r in with_val] == [2]  # eval_every=2, and the last epoch has the final record
        lines = {ln.get_label(): ln for ln in val_ax.lines}
        for key, value in with_val[0]["val"].items():
            ln = lines[f"{name} {key}"]
            assert list(ln.get_xdata()) == [2] and list(ln.get_ydata()) == pytest.approx([value])
    assert loss_ax.get_ylabel() and lr_ax.get_ylabel() and val_ax.get_ylabel()
    legend = loss_ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().y0 < loss_ax.get_window_extent().y0  # below the axes


def test_many_classes_page_without_confusion_matrices(browser, tmp_path):
    """Above 30 classes the page embeds per-class correct counts only; the numbers still follow the sliders.
    A synthetic sweep (no training): the truth is argmax(z - t log pi) counted here."""
    from types import SimpleNamespace

    from lossdial.evaluate.sweep import MultiClassSweepResult
    from lossdial.report.dial import dial_section, multiclass_dial_data
    from lossdial.report.html import page_head

    rng = np.random.default_rng(1)
    C, N = 35, 700
    counts = np.round(200 * 0.9 ** np.arange(C)).astype(int) + 1
    y = rng.integers(0, C, N)
    logits = rng.normal(0, 1, (2, N, C))
    logits[:, np.arange(N), y] += 1.5
    sweep = MultiClassSweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}], logits=logits, labels=y,
                                  train_counts=counts.tolist(), adjustments=(0.0, 1.0))
    run = SimpleNamespace(path=tmp_path / "run", is_lct=True, space=SimpleNamespace(names=["tau"]))
    data = multiclass_dial_data([(run, sweep)], class_names=[f"c{i}" for i in range(C)], prior_source="train",
                                prior=(counts / counts.sum()).tolist())
    assert data["confusion"] is False and "confusion" not in data["runs"][0]["rows"][0]
    page = tmp_path / "report.html"
    page.write_text(page_head("synthetic") + dial_section(data) + "</body></html>")
    p = Page(browser, page)
    p.set("lam-tau", 1)
    p.set("ctl-adjustment", 1)
    p.set("ctl-prior", 0.5)
    pred = (logits[1] - 1.0 * np.log(counts / counts.sum())).argmax(1)
    n_c = np.bincount(y, minlength=C)
    recall = np.array([np.mean(pred[y == c] == c) if n_c[c] else np.nan for c in range(C)])
    q = np.where(n_c > 0, counts ** 0.5, 0.0)
    q /= q.sum()
    assert p.num("val-balanced") == pytest.approx(np.nanmean(recall), abs=6e-4)
    assert p.num("val-worst") == pytest.approx(np.nanmin(recall), abs=6e-4)
    assert p.num("val-accuracy") == pytest.approx(float(np.nansum(q * recall)), abs=6e-4)
    few = [c for c in range(C) if counts[c] < 20]
    assert p.num("val-few") == pytest.approx(np.nanmean(recall[few]), abs=6e-4)
    assert "per-class recall only" in p.text("cm")
