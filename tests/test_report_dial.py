"""The data behind the report's live dial (issue 16), without a browser: thinned curves whose counts are exact,
a size bound for many lambdas, and the reliability bins reweighted to a prevalence, against hand computations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lossdial.evaluate import SweepResult
from lossdial.report.dial import DIAL_CURVE_POINTS, binary_dial_data, embed_json, reliability_at, reliability_bins


def _fake_run(path="/runs/x", lct=True):
    space = SimpleNamespace(names=["tau"]) if lct else None
    return SimpleNamespace(path=path, is_lct=lct, space=space)


def test_curves_are_thinned_with_exact_counts_and_the_page_data_stays_small(tmp_path):
    rng = np.random.default_rng(0)
    n, K = 5000, 25
    y = (rng.random(n) < 0.1).astype(int)
    scores = np.stack([1 / (1 + np.exp(-(2.5 * y - 1.2 + rng.normal(0, 1, n) + 0.1 * k))) for k in range(K)])
    sweep = SweepResult(lambdas=[{"tau": 0.125 * k} for k in range(K)], scores=scores, labels=y, prevalence=0.05)
    data = binary_dial_data([(_fake_run(), sweep)], prevalence=0.05, class_names=["neg", "pos"])
    run = data["runs"][0]
    assert (run["n_pos"], run["n_neg"]) == (int(y.sum()), int((y == 0).sum()))
    for k in (0, 12, 24):
        c = run["curves"][k]
        thr = np.array(c["threshold"])
        assert len(thr) <= DIAL_CURVE_POINTS < len(np.unique(scores[k]))
        assert np.all(np.diff(thr) < 0)  # highest first
        assert thr[0] == scores[k].max() and thr[-1] == scores[k].min()  # both ends kept
        for j in (0, 100, len(thr) // 2, len(thr) - 1):  # counts for "score >= threshold", counted directly
            pred = scores[k] >= thr[j]
            assert c["tp"][j] == int((pred & (y == 1)).sum()) and c["fp"][j] == int((pred & (y == 0)).sum())
        # the page's Brier at a prevalence pi: pi * sq_pos + (1 - pi) * sq_neg = the weighted mean of (s - y)^2
        cal, pi = run["calibration"][k], 0.3
        w = np.where(y == 1, pi / y.sum(), (1 - pi) / (y == 0).sum())
        assert pi * cal["sq_pos"] + (1 - pi) * cal["sq_neg"] == pytest.approx(float(np.sum(w * (scores[k] - y) ** 2)))
    text = embed_json(data)
    assert len(text) < 1_500_000 and "NaN" not in text and "</" not in text


def test_reliability_bins_reweighted_to_a_prevalence_by_hand():
    # 15 bins: 0.05 -> bin 0; 0.1 -> bin 1 (0.1 * 15 = 1.5); 0.9, 0.95 -> bin 13 and 14; 1.0 -> bin 14
    y = np.array([1, 0, 0, 1, 0, 1])
    s = np.array([0.05, 0.05, 0.1, 0.9, 0.95, 1.0])
    bins = reliability_bins(y, s)
    assert bins == [[0, 0.05, 1, 0.05, 1], [1, 0.0, 0, 0.1, 1], [13, 0.9, 1, 0.0, 0], [14, 1.0, 1, 0.95, 1]]
    pi = 0.2  # a positive weighs 0.2/3, a negative 0.8/3
    wp, wn = pi / 3, (1 - pi) / 3
    xs, ys, shares, ece = reliability_at(bins, pi, 3, 3)
    want_x = [0.05, 0.1, 0.9, (wp * 1.0 + wn * 0.95) / (wp + wn)]
    want_y = [wp / (wp + wn), 0.0, 1.0, wp / (wp + wn)]
    want_w = [wp + wn, wn, wp, wp + wn]
    assert xs == pytest.approx(want_x) and ys == pytest.approx(want_y)
    assert shares == pytest.approx(want_w)  # the weights sum to 1 already
    assert ece == pytest.approx(sum(w * abs(a - b) for w, a, b in zip(want_w, want_y, want_x)))
