"""Ties in `pick` (SweepResult.pick, MultiClassSweepResult.pick): no longer the first grid point.

Truth is a brute-force search written here: every (lambda, threshold) point's confusion counts by direct
comparison `score >= threshold`, balanced accuracy / F1 from those counts at the prevalence (positives weighted
pi / n_pos, negatives (1 - pi) / n_neg), AUC as the fraction of (positive, negative) pairs ranked correctly (ties
count one half), the Brier score at the prevalence as pi * mean_pos (1 - s)^2 + (1 - pi) * mean_neg s^2, and the
centre of a tied run found by walking the grid by hand. The rule (docs/ARCHITECTURE.md, "Ties in pick"): the best
objective (then secondary key), then the higher AUC, then the lower Brier, then the centre of the widest tied run.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lossdial.conditioning.parse import parse_lambda_grid
from lossdial.evaluate.sweep import MultiClassSweepResult, SweepResult

TOL = 1e-9


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _brier(y, s, pi):
    return float(pi * np.mean((1 - s[y == 1]) ** 2) + (1 - pi) * np.mean(s[y == 0] ** 2))


def _best_points(y, s, pi, min_tp=5):
    """Per threshold (every distinct score, highest first): (balanced accuracy, F1) at prevalence pi."""
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    out = []
    for thr in sorted(set(s.tolist()), reverse=True):
        pred = s >= thr
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        if tp < min_tp:
            continue
        tpr, fpr = tp / n_pos, fp / n_neg
        prec = pi * tpr / (pi * tpr + (1 - pi) * fpr)
        ba = 0.5 * (tpr + 1 - fpr)
        f1 = 2 * prec * tpr / (prec + tpr)
        out.append((ba, f1, thr))
    return out


def _brute_binary(y, scores, pi):
    """The rule by brute force for objective balanced_accuracy (secondary F1): (lambda index, threshold)."""
    per_k = []
    for s in scores:
        pts = _best_points(y, s, pi)
        ba = max(p[0] for p in pts)
        f1 = max(p[1] for p in pts if p[0] >= ba - TOL)
        thr = max(p[2] for p in pts if p[0] >= ba - TOL and p[1] >= f1 - TOL)  # the highest tied threshold
        per_k.append((ba, f1, thr))
    top_ba = max(p[0] for p in per_k)
    tied = [k for k, p in enumerate(per_k) if p[0] >= top_ba - TOL]
    top_f1 = max(per_k[k][1] for k in tied)
    tied = [k for k in tied if per_k[k][1] >= top_f1 - TOL]
    aucs = {k: _auc(y, scores[k]) for k in tied}
    tied = [k for k in tied if aucs[k] >= max(aucs.values()) - TOL]
    briers = {k: _brier(y, scores[k], pi) for k in tied}
    tied = [k for k in tied if briers[k] <= min(briers.values()) + TOL]
    return tied, per_k


def _centre_1d(tied):
    """The median (lower, for an even count) of the longest run of consecutive indices (first such run)."""
    runs = [list(g) for _, g in itertools.groupby(sorted(tied), key=lambda i, c=itertools.count(): i - next(c))]
    run = max(runs, key=len)
    return run[(len(run) - 1) // 2]


def _data(seed=0, n=240):
    rng = np.random.RandomState(seed)
    y = (rng.rand(n) < 0.3).astype(int)
    y[:8] = 1
    base = 1.5 * (2 * y - 1) + rng.randn(n)
    return y, base


def test_monotone_shifts_tie_everywhere_and_brier_breaks_it_not_grid_order():
    # lambda = a shift of the logit (binary logit adjustment): every lambda ranks the samples identically, so the
    # best balanced accuracy and its F1 tie at all of them; AUC ties too; the Brier score at the prevalence does not
    y, base = _data()
    pi = 0.2
    shifts = np.linspace(-3.0, 1.0, 9)
    scores = np.stack([_sigmoid(base + d) for d in shifts])
    lambdas = [{"tau": float(t)} for t in range(9)]
    tied, per_k = _brute_binary(y, scores, pi)
    assert len({round(p[0], 12) for p in per_k}) == 1  # the objective really ties at every lambda
    assert len(tied) == 1 and tied[0] != 0
    point = SweepResult(lambdas=lambdas, scores=scores, labels=y, prevalence=pi).pick(None, "balanced_accuracy")
    assert point.index == tied[0]
    assert point.threshold == pytest.approx(per_k[tied[0]][2], abs=0)


def test_identical_lambdas_go_to_the_centre_of_the_widest_tied_run():
    # lambdas 2..6 and 8 give the same (good) scores, the others noise: everything ties among {2..6, 8};
    # the longest run is 2..6, its centre 4 (the old rule returned 2)
    y, base = _data(1)
    rng = np.random.RandomState(5)
    good = _sigmoid(base)
    scores = np.stack([good if k in (2, 3, 4, 5, 6, 8) else rng.rand(len(y)) for k in range(9)])
    lambdas = [{"tau": 0.5 * k} for k in range(9)]
    tied, per_k = _brute_binary(y, scores, 0.3)
    assert tied == [2, 3, 4, 5, 6, 8]
    assert _centre_1d(tied) == 4
    point = SweepResult(lambdas=lambdas, scores=scores, labels=y, prevalence=0.3).pick(None, "balanced_accuracy")
    assert point.index == 4 and point.lam == {"tau": 2.0}
    # an even run (2..5): the lower median, 3
    scores[6] = rng.rand(len(y))
    point = SweepResult(lambdas=lambdas, scores=scores, labels=y, prevalence=0.3).pick(None, "balanced_accuracy")
    assert _centre_1d(_brute_binary(y, scores, 0.3)[0]) == 3 and point.index == 3


def test_cartesian_grid_ties_go_to_the_centre_of_the_tied_block():
    # tau in 0..4 x gamma in 0..2 (first key slowest): the block tau in {2, 3, 4} x every gamma ties, and so does
    # the lone point (tau=0, gamma=0); the block is the widest run, its centre (tau=3, gamma=1)
    y, base = _data(2)
    rng = np.random.RandomState(7)
    grid = parse_lambda_grid("tau=0:4:5 gamma=0:2:3")
    good = _sigmoid(base)
    tied_set = [i for i, lam in enumerate(grid) if lam["tau"] >= 2 or (lam["tau"] == 0 and lam["gamma"] == 0)]
    scores = np.stack([good if i in tied_set else rng.rand(len(y)) for i in range(len(grid))])
    tied, _ = _brute_binary(y, scores, 0.3)
    assert tied == tied_set
    point = SweepResult(lambdas=grid, scores=scores, labels=y, prevalence=0.3).pick(None, "balanced_accuracy")
    assert point.lam == {"tau": 3.0, "gamma": 1.0}


def test_equal_best_f1_goes_to_the_higher_auc():
    # 20 positives, 80 negatives: 15 positives on top at every lambda (best F1 2*15/(15+20) there at all of
    # them); the other 5 positives lie below every negative at lambdas 0 and 1 but among the lower half of
    # the negatives at lambda 2, so lambda 2 has the higher AUC and wins (grid order gave 0, the centre 1)
    y = np.r_[np.ones(15), np.zeros(80), np.ones(5)].astype(int)
    top = np.linspace(0.99, 0.9, 15)
    negs = np.linspace(0.8, 0.1, 80)
    low = np.linspace(0.05, 0.01, 5)
    a = np.r_[top, negs, low]
    b = a.copy()
    b[95:] = negs[60:65] - 1e-3  # each just below one of the lowest 20 negatives: after >= 60 negatives
    scores = np.stack([a, a, b])
    per_k = []
    for s in scores:
        pts = _best_points(y, s, 0.2)
        per_k.append(max(p[1] for p in pts))
    assert per_k[0] == pytest.approx(2 * 0.75 / 1.75, abs=TOL) and per_k[2] == pytest.approx(2 * 0.75 / 1.75, abs=TOL)
    assert _auc(y, b) > _auc(y, a)
    point = SweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}, {"tau": 2.0}], scores=scores, labels=y,
                        prevalence=0.2).pick(None, "f1")
    assert point.index == 2
    # a constraint with its secondary key: precision at recall >= 0.75 ties at 1.0 (with recall 0.75) everywhere
    point = SweepResult(lambdas=[{"tau": 0.0}, {"tau": 1.0}, {"tau": 2.0}], scores=scores, labels=y,
                        prevalence=0.2).pick("recall>=0.75", "precision")
    assert point.index == 2 and point.metrics["precision"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ multi-class
def _mc_metrics(y, z, q):
    """Balanced accuracy, accuracy and NLL at class prior q, written out: recall_c, sum_c q_c recall_c and
    sum_c q_c mean_{i in c} -log softmax(z_i)_c (train prior = deployment prior, so t = 0 needs no adjustment)."""
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)
    classes = range(z.shape[1])
    recall = np.array([np.mean(pred[y == c] == c) for c in classes])
    nll = sum(q[c] * np.mean(-np.log(p[y == c, c])) for c in classes)
    return float(recall.mean()), float((q * recall).sum()), float(nll)


def test_multiclass_ties_go_to_the_lower_nll_then_the_centre_of_the_t_run():
    # equal training counts: t log pi_c is the same for every class, so every t gives the same probabilities and
    # all rows of one lambda tie on everything; lambda scales the logits (same argmax, so balanced accuracy ties
    # across lambdas too) and changes only the NLL. Truth: the lambda of the lowest NLL, at the centre of the
    # t grid (t = 1.0 of 0, 0.25, ..., 2), not (lambda 0, t 0)
    rng = np.random.RandomState(3)
    y = np.repeat(np.arange(3), 30)
    z0 = 2.0 * np.eye(3)[y] + rng.randn(90, 3)
    scales = [0.2, 0.6, 1.2, 3.0, 6.0]
    logits = np.stack([c * z0 for c in scales])
    q = np.full(3, 1 / 3)
    truth = [_mc_metrics(y, z, q) for z in logits]
    assert len({round(m[0], 12) for m in truth}) == 1
    k_best = int(np.argmin([m[2] for m in truth]))
    assert k_best not in (0, len(scales) - 1)
    sw = MultiClassSweepResult(lambdas=[{"tau": c} for c in scales], logits=logits, labels=y,
                               train_counts=[50, 50, 50])
    point = sw.pick(None, "balanced_accuracy")
    assert point.index == k_best and point.adjustment == 1.0
    # with NLL the objective, the same row wins on it alone
    assert sw.pick(None, "nll").index == k_best


def test_multiclass_equal_accuracy_goes_to_the_higher_balanced_accuracy():
    # deployment prior = train prior (600/200/200), t = 0 only; labels 10/10/20 per class. Accuracy at the prior is
    # sum_c q_c recall_c: lambda 0 misses 6 of class 2 (0.6 + 0.2 + 0.2 * 0.7 = 0.94, BA 0.9), lambda 1 misses 2 of
    # class 0 (0.88), lambda 2 misses 3 of class 1 (0.94, BA 0.9), lambda 3 misses 1 of class 0 (0.6 * 0.9 + 0.4 =
    # 0.94, BA 0.967). Accuracy ties at 0, 2, 3; the higher balanced accuracy picks 3 (grid order gave 0; the
    # centre of the widest run {2, 3}, 2)
    y = np.r_[np.zeros(10), np.ones(10), 2 * np.ones(20)].astype(int)
    q = np.array([0.6, 0.2, 0.2])
    preds = [y.copy() for _ in range(4)]
    preds[0][20:26] = 0
    preds[1][0:2] = 1
    preds[2][10:13] = 2
    preds[3][0:1] = 1
    logits = np.stack([4.0 * np.eye(3)[p] for p in preds])
    truth = [_mc_metrics(y, z, q) for z in logits]
    acc, ba = [m[1] for m in truth], [m[0] for m in truth]
    assert acc == pytest.approx([0.94, 0.88, 0.94, 0.94]) and ba == pytest.approx([0.9, 14 / 15, 0.9, 29 / 30])
    sw = MultiClassSweepResult(lambdas=[{"tau": float(k)} for k in range(4)], logits=logits, labels=y,
                               train_counts=[600, 200, 200], adjustments=(0.0,))
    point = sw.pick(None, "accuracy")
    assert point.index == 3 and point.metrics["accuracy"] == pytest.approx(0.94)
