"""Operating-point selection on hand-made score vectors: min_tp, conservative bounds, curves files,
undefined precision. Every expected number is computed by hand (or from scipy's beta quantiles)."""

import csv
import math

import numpy as np
import pytest
from scipy.stats import beta

from lossdial.evaluate import NoFeasiblePoint, SweepResult, binary_metrics
from lossdial.evaluate.select import bootstrap_metrics
from lossdial.evaluate.sweep import conservative_precision_lower, thin_curve


def _one(scores, labels, prevalence=None, lam=None):
    return SweepResult(lambdas=[lam or {"tau": 0.0}], scores=np.array([scores], dtype=float),
                       labels=np.array(labels), prevalence=prevalence)


# scores (descending) and labels: one positive on top, then a negative, then 4 positives, ... 20 low negatives
_S = [0.99, 0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.60] + [0.01 * i for i in range(1, 21)]
_Y = [1, 0, 1, 1, 1, 1, 0, 1] + [0] * 20


def test_min_tp_refuses_a_point_on_one_positive():
    res = _one(_S, _Y)
    # only threshold 0.99 (tp 1, fp 0) has precision >= 0.99: one positive is not enough by default
    with pytest.raises(NoFeasiblePoint) as e:
        res.pick("precision>=0.99", "recall")
    msg = str(e.value)
    assert "fewer than 5" in msg and "min-tp" in msg
    # the closest point among thresholds with >= 5 true positives: threshold 0.75, tp 5, fp 1 (precision 5/6)
    c = e.value.closest
    assert c.threshold == 0.75 and c.counts == {"tp": 5, "fp": 1, "fn": 1, "tn": 21, "positives": 6,
                                                 "negatives": 22}
    assert c.metrics["precision"] == pytest.approx(5 / 6)
    # asking for fewer true positives gives the one-positive point back
    p = res.pick("precision>=0.99", "recall", min_tp=1)
    assert p.threshold == 0.99 and p.counts["tp"] == 1
    # precision >= 0.8 at most recall: threshold 0.75 (tp 5, fp 1); with min_tp 6 none qualifies
    assert res.pick("precision>=0.8", "recall").threshold == 0.75
    with pytest.raises(NoFeasiblePoint):
        res.pick("precision>=0.8", "recall", min_tp=6)
    # an unconstrained threshold objective respects it too: best F1 is at 0.6 (tp 6, fp 2): 12/14
    assert res.pick(None, "f1").threshold == 0.6
    with pytest.raises(ValueError, match="fewer than min_tp=7"):
        res.pick(None, "f1", min_tp=7)


def test_conservative_precision_bound_by_hand():
    # 20 positives, 100 negatives; deployment prevalence 0.01
    s = [0.9] * 18 + [0.9] * 3 + [0.1] * 2 + [0.05] * 97
    y = [1] * 18 + [0] * 3 + [1] * 2 + [0] * 97
    res = _one(s, y, prevalence=0.01)
    pi, a2 = 0.01, 0.025  # alpha = 0.05 split in two

    def by_hand(tp, fp):
        tpr_lo = beta.ppf(a2, tp, 20 - tp + 1)  # one-sided Clopper-Pearson lower bound on TPR
        fpr_hi = beta.ppf(1 - a2, fp + 1, 100 - fp)  # one-sided upper bound on FPR
        return pi * tpr_lo / (pi * tpr_lo + (1 - pi) * fpr_hi)

    lo = conservative_precision_lower(np.array([18, 20]), 20, np.array([3, 3]), 100, pi, 0.95)
    assert lo == pytest.approx([by_hand(18, 3), by_hand(20, 3)], rel=1e-10)
    # threshold 0.1 (tp 20, fp 3) has the highest bound; pick checks the constraint on it
    target = by_hand(20, 3)
    p = res.pick(f"precision>={target - 1e-6:.8f}", "recall", conservative=True)
    assert p.threshold == 0.1 and p.bound == pytest.approx(target, rel=1e-10)
    # the point estimate at prevalence 0.01 is far higher: a raw-precision bound would pass much more
    assert p.metrics["precision"] == pytest.approx(0.01 * 1.0 / (0.01 * 1.0 + 0.99 * 0.03))
    with pytest.raises(NoFeasiblePoint) as e:
        res.pick(f"precision>={target + 1e-4:.8f}", "recall", conservative=True)
    assert e.value.closest.threshold == 0.1 and f"{target:.4f}" in str(e.value)


def test_conservative_cap_message_and_one_closest_point():
    # 7 positives, all above every negative: recall 1 is reachable, but its 95% lower bound is 0.05^(1/7)
    s = [0.9] * 7 + [0.1] * 30
    y = [1] * 7 + [0] * 30
    res = _one(s, y)
    cap = 0.05 ** (1 / 7)
    with pytest.raises(NoFeasiblePoint) as e:
        res.pick("recall>=0.95", "precision", conservative=True)
    msg = str(e.value)
    assert f"{cap:.4f}" in msg and "7 positives" in msg and "cannot be certified" in msg
    assert msg.count("closest") == 1
    c = e.value.closest
    assert c.threshold == 0.9 and c.bound == pytest.approx(cap) and c.metrics["recall"] == 1.0
    assert "recall 1.0000" in msg and f"on recall {cap:.4f}" in msg
    # a target under the cap is certified at the same point
    assert res.pick("recall>=0.6", "precision", conservative=True).threshold == 0.9


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_curves_csv_by_hand(tmp_path):
    y = [1, 0, 1, 0, 0]
    res = SweepResult(lambdas=[{"tau": 0.0}, {"tau": 2.0}],
                      scores=np.array([[0.9, 0.8, 0.8, 0.3, 0.1], [0.2, 0.7, 0.6, 0.5, 0.4]]),
                      labels=np.array(y), prevalence=0.1)
    n = res.to_curves_csv(tmp_path / "val_curves.csv")
    rows = _read_csv(tmp_path / "val_curves.csv")
    assert n == len(rows) == 4 + 5
    assert list(rows[0]) == ["lambda.tau", "threshold", "tp", "fp", "fn", "tn", "tpr", "fpr", "precision"]

    def prec(tpr, fpr):  # precision at prevalence 0.1
        return 0.1 * tpr / (0.1 * tpr + 0.9 * fpr)

    expect = [  # tau, threshold, tp, fp, fn, tn, tpr, fpr
        (0.0, 0.9, 1, 0, 1, 3, 0.5, 0.0), (0.0, 0.8, 2, 1, 0, 2, 1.0, 1 / 3),
        (0.0, 0.3, 2, 2, 0, 1, 1.0, 2 / 3), (0.0, 0.1, 2, 3, 0, 0, 1.0, 1.0),
        (2.0, 0.7, 0, 1, 2, 2, 0.0, 1 / 3), (2.0, 0.6, 1, 1, 1, 2, 0.5, 1 / 3),
        (2.0, 0.5, 1, 2, 1, 1, 0.5, 2 / 3), (2.0, 0.4, 1, 3, 1, 0, 0.5, 1.0),
        (2.0, 0.2, 2, 3, 0, 0, 1.0, 1.0)]
    for r, (tau, thr, tp, fp, fn, tn, tpr, fpr) in zip(rows, expect):
        assert float(r["lambda.tau"]) == tau and float(r["threshold"]) == pytest.approx(thr)
        assert (int(r["tp"]), int(r["fp"]), int(r["fn"]), int(r["tn"])) == (tp, fp, fn, tn)
        assert float(r["tpr"]) == pytest.approx(tpr) and float(r["fpr"]) == pytest.approx(fpr)
        assert float(r["precision"]) == pytest.approx(prec(tpr, fpr))
    assert float(rows[2]["precision"]) == pytest.approx(1 / 7)


def test_curve_thinning_keeps_ends_and_shape():
    rng = np.random.default_rng(0)
    n = 6000
    y = (rng.random(n) < 0.1).astype(int)
    s = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.3, n))))
    res = SweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}], scores=np.stack([s, s ** 2]), labels=y)
    rows = res.curve_rows()
    for tau, sk in ((0.0, s), (1.0, s ** 2)):
        mine = [r for r in rows if r["lambda"]["tau"] == tau]
        assert len(mine) <= 1024
        thr = np.array([r["threshold"] for r in mine])
        assert thr[0] == sk.max() and thr[-1] == sk.min()  # first and last thresholds kept
        assert np.all(np.diff(thr) < 0)
        # the shape is kept: the area under the kept ROC points is the AUC (ties: none, scores are continuous)
        fpr = np.r_[0.0, [r["fpr"] for r in mine]]
        tpr = np.r_[0.0, [r["tpr"] for r in mine]]
        pos, neg = sk[y == 1], sk[y == 0]
        auc = (pos[:, None] > neg[None, :]).mean()  # Mann-Whitney, by hand
        assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=2e-3)
        # the best Youden point (on the ROC convex hull) survives thinning
        t_all = np.unique(sk)
        sp, sn = np.sort(pos), np.sort(neg)
        j = (len(sp) - np.searchsorted(sp, t_all)) / len(sp) - (len(sn) - np.searchsorted(sn, t_all)) / len(sn)
        kept_j = max(r["tpr"] - r["fpr"] for r in mine)
        assert kept_j == pytest.approx(j.max(), abs=1e-12)
    # a short curve is kept whole; a tiny budget still keeps both ends
    assert list(thin_curve(np.linspace(0, 1, 10), np.linspace(0, 1, 10), 1024)) == list(range(10))
    fpr = np.linspace(0, 1, 500)
    tpr = np.sqrt(fpr)  # strictly concave: every point is a hull vertex
    keep = thin_curve(fpr, tpr, 10)
    assert len(keep) <= 10 and keep[0] == 0 and keep[-1] == 499


def test_undefined_precision_is_nan():
    y = np.array([0, 1, 1, 0, 0])
    s = np.array([0.1, 0.2, 0.3, 0.05, 0.4])
    m = binary_metrics(y, s, threshold=0.5)  # nothing predicted positive
    assert math.isnan(m["precision"]) and m["recall"] == 0.0
    assert m["f1_at_threshold"] == 0.0  # 2 tp / (2 tp + fp + fn) = 0, defined
    m = binary_metrics(y, s, threshold=0.25)  # tp 1 (0.3), fp 1 (0.4), fn 1
    assert m["precision"] == 0.5 and m["f1_at_threshold"] == pytest.approx(2 / 4)
    # bootstrap: a precision interval from the resamples where it is defined only, never 0 for undefined
    ci = bootstrap_metrics(y, s, 0.5, prevalence=None, costs=(1.0, 1.0), n_boot=20)
    assert all(math.isnan(v) for v in ci["precision"]) and ci["recall"] == [0.0, 0.0]
    y2 = np.array([1] * 10 + [0] * 10)
    s2 = np.r_[np.linspace(0.55, 0.95, 10), np.linspace(0.0, 0.45, 10)]
    ci = bootstrap_metrics(y2, s2, 0.5, prevalence=None, costs=(1.0, 1.0), n_boot=50)
    assert ci["precision"] == [1.0, 1.0]


def test_summary_csv_writes_undefined_as_an_empty_cell_with_unix_line_ends(tmp_path):
    """Nothing scores >= 0.5, so precision at the threshold is undefined: an empty cell (pandas reads it as
    missing), never the text 'nan'; lines end in \\n only (awk/cut on '1\\r' found nothing)."""
    import csv as _csv

    res = SweepResult(lambdas=[{"tau": 1.0}], scores=np.array([[0.1, 0.2, 0.3, 0.4]]), labels=np.array([0, 1, 0, 1]))
    res.to_csv(tmp_path / "val.csv")
    raw = (tmp_path / "val.csv").read_bytes()
    assert b"\r" not in raw and b"nan" not in raw.lower()
    row = next(_csv.DictReader(open(tmp_path / "val.csv")))
    assert row["precision"] == "" and float(row["recall"]) == 0.0 and float(row["auc"]) == 0.75  # 3 of 4 pairs ordered


def test_exact_intervals_do_not_collapse_where_the_bootstrap_does():
    """21 of 21 test positives found and none of 300 negatives flagged: every bootstrap resample has precision
    and recall 1, so its interval is [1, 1]; the exact intervals, by hand (closed forms of the Clopper-Pearson
    quantiles at a count of 0 or n), are not."""
    from lossdial.evaluate.sweep import exact_intervals

    y = np.r_[np.ones(21), np.zeros(300)].astype(int)
    s = np.r_[np.full(21, 0.9), np.full(300, 0.1)]
    boot = bootstrap_metrics(y, s, 0.5, prevalence=0.05, costs=(1.0, 1.0), n_boot=200)
    assert boot["precision"] == [1.0, 1.0] and boot["recall"] == [1.0, 1.0]
    ex = exact_intervals({"tp": 21, "fp": 0, "positives": 21, "negatives": 300}, prevalence=0.05)
    assert ex["recall"] == pytest.approx([0.025 ** (1 / 21), 1.0])  # k = n: lower = (alpha/2)^(1/n)
    tpr_lo, fpr_hi = 0.0125 ** (1 / 21), 1 - 0.0125 ** (1 / 300)  # alpha/4 tails (Bonferroni over TPR and FPR)
    lo = 0.05 * tpr_lo / (0.05 * tpr_lo + 0.95 * fpr_hi)
    assert ex["precision"] == pytest.approx([lo, 1.0])
    assert 0.5 < lo < 0.9  # far from the bootstrap's certainty
    # an interior case against scipy's beta quantiles directly: recall 30 of 40
    ex = exact_intervals({"tp": 30, "fp": 5, "positives": 40, "negatives": 200}, prevalence=0.5)
    assert ex["recall"] == pytest.approx([beta.ppf(0.025, 30, 11), beta.ppf(0.975, 31, 10)])


def test_a_spec_with_a_recall_constraint_and_no_objective_picks_the_most_precise_point():
    """SelectionSpec's default objective follows resolve_objective (the rule of `lossdial pick`): under a recall
    constraint, the point of highest precision, found here by brute force over every threshold."""
    from lossdial.evaluate.select import SelectionSpec, choose_point

    # 36 positives interleaved with 36 negatives on top, then 3 negatives, then the last 4 positives, then 121
    # negatives: recall 0.9 is most precise at the 36th positive, F1 is best at recall 1 (precision lower)
    y = np.r_[np.tile([1, 0], 36), np.zeros(3), np.ones(4), np.zeros(121)].astype(int)
    s = np.linspace(1.0, 0.0, len(y))
    best_p, best_f1_p, best_f1 = -1.0, None, -1.0
    for t in np.unique(s):  # predict positive when s >= t
        tp = int(((s >= t) & (y == 1)).sum())
        fp = int(((s >= t) & (y == 0)).sum())
        if tp < 5 or tp / 40 < 0.9:
            continue
        p = tp / (tp + fp)
        best_p = max(best_p, p)
        f1 = 2 * p * (tp / 40) / (p + tp / 40)
        if f1 > best_f1:
            best_f1, best_f1_p = f1, p
    assert best_f1_p != pytest.approx(best_p)  # the data tell the two objectives apart
    val = SweepResult(lambdas=[{"tau": 0.0}], scores=s[None], labels=y, split="val")
    point = choose_point(val, SelectionSpec(name="x", constraint="recall>=0.9"))
    assert point.objective == "precision"
    assert point.metrics["precision"] == pytest.approx(best_p)
    assert point.metrics["recall"] >= 0.9
