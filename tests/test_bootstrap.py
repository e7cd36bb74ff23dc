"""Bootstrap intervals of the test-split metrics (lossdial.evaluate.select.bootstrap_metrics) on cases whose
answer is known: stratification (class counts kept in every resample), the binomial law of a resampled
recall, and coverage over simulated data sets."""

import numpy as np
import pytest
from scipy.stats import binom

from lossdial.evaluate.select import bootstrap_metrics


def test_every_resample_keeps_the_class_counts():
    """2 positives in 200: an unstratified resample has no positive about 13% of the time ((198/200)^200)
    and exactly two only 27% of the time.

    Both positives score below the threshold, so with a false-negative cost of 1 and a false-positive cost
    of 0 the cost of a resample is (positives drawn) / 200: exactly 2/200 in every stratified resample, and
    the whole interval is [0.01, 0.01].
    """
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(2, int), np.zeros(198, int)]
    s = np.r_[0.3, 0.2, rng.random(198)]
    ci = bootstrap_metrics(y, s, 0.5, prevalence=None, costs=(0.0, 1.0), n_boot=200, seed=0)
    assert ci["cost"] == pytest.approx([0.01, 0.01], abs=1e-15)
    assert ci["recall"] == pytest.approx([0.0, 0.0], abs=1e-15)


def test_interval_is_the_binomial_quantiles_of_a_resampled_recall():
    """Stratified resampling of 60 positives of which 48 are caught: resampled recall ~ Binomial(60, 0.8) / 60,
    so the 95% percentile interval is (up to the Monte Carlo error of 400 draws: 1.5 counts) its 2.5% and 97.5%
    quantiles; likewise false positives ~ Binomial(140, 0.1) among 140 resampled negatives."""
    y = np.r_[np.ones(60, int), np.zeros(140, int)]
    s = np.r_[np.full(48, 0.9), np.full(12, 0.1), np.full(14, 0.8), np.full(126, 0.2)]
    ci = bootstrap_metrics(y, s, 0.5, prevalence=None, costs=(1.0, 0.0), n_boot=400, seed=0)
    want = binom.ppf([0.025, 0.975], 60, 0.8) / 60
    assert ci["recall"] == pytest.approx(want, abs=1.5 / 60)
    assert ci["recall"][0] < 0.8 < ci["recall"][1]
    want_fp = binom.ppf([0.025, 0.975], 140, 0.1) / 200  # cost = fp / n with these costs
    assert ci["cost"] == pytest.approx(want_fp, abs=1.5 / 200)


@pytest.mark.slow
def test_recall_interval_covers_the_true_recall_95_percent_of_the_time():
    """A fixed classifier with true recall 0.75 on 100 simulated data sets (50 positives, 50 negatives each):
    the 95% interval (100 resamples each) should cover 0.75 in about 95% of them (sd of the rate: 2.2%)."""
    rng = np.random.default_rng(123)
    y = np.r_[np.ones(50, int), np.zeros(50, int)]
    hits = 0
    sims = 100
    for k in range(sims):
        caught = rng.random(50) < 0.75
        false_alarm = rng.random(50) < 0.2
        s = np.r_[np.where(caught, 0.9, 0.1), np.where(false_alarm, 0.8, 0.2)]
        lo, hi = bootstrap_metrics(y, s, 0.5, prevalence=None, costs=(1.0, 1.0), n_boot=100, seed=k)["recall"]
        hits += lo <= 0.75 <= hi
    assert 0.87 <= hits / sims <= 0.995, hits / sims
