"""Multi-class long-tail metrics and the post-hoc dial (lossdial.evaluate.multiclass) against hand computations.

The known case used throughout: 3 classes trained on 150 / 40 / 10 samples (training prior 0.75 / 0.2 / 0.05;
many-shot {0}, medium {1}, few {2} at the default thresholds 100 / 20) and 8 evaluation samples:

    i  y  probs                pred  conf  correct  ECE bin (15 bins of 1/15)
    0  0  [0.70, 0.20, 0.10]   0     0.70  1        10  [0.667, 0.733)
    1  0  [0.50, 0.30, 0.20]   0     0.50  1         7  [0.467, 0.533)
    2  0  [0.25, 0.65, 0.10]   1     0.65  0         9  [0.600, 0.667)
    3  0  [0.85, 0.10, 0.05]   0     0.85  1        12  [0.800, 0.867)
    4  1  [0.20, 0.70, 0.10]   1     0.70  1        10
    5  1  [0.50, 0.30, 0.20]   0     0.50  0         7
    6  2  [0.10, 0.25, 0.65]   2     0.65  1         9
    7  2  [0.45, 0.35, 0.20]   0     0.45  0         6  [0.400, 0.467)

Recall: class 0 3/4, class 1 1/2, class 2 1/2.
Per-sample Brier sum_c (p_c - onehot_c)^2:
    0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14      4: 0.2^2 + 0.3^2 + 0.1^2 = 0.14
    1: 0.5^2 + 0.3^2 + 0.2^2 = 0.38      5: 0.5^2 + 0.7^2 + 0.2^2 = 0.78
    2: 0.75^2 + 0.65^2 + 0.1^2 = 0.995   6: 0.1^2 + 0.25^2 + 0.35^2 = 0.195
    3: 0.15^2 + 0.1^2 + 0.05^2 = 0.035   7: 0.45^2 + 0.35^2 + 0.8^2 = 0.965
At a prior q, each class-c sample weighs q_c / n_c with n = (4, 2, 2): written a, b, c below.
"""

import json
import math

import numpy as np
import pytest
import torch

from lossdial.evaluate import (
    DEFAULT_T_GRID,
    MULTICLASS_MAXIMIZE,
    MULTICLASS_MINIMIZE,
    SHOT_THRESHOLDS,
    adjust_logits,
    bootstrap_multiclass,
    class_prior,
    dial_table,
    multiclass_metrics,
)
from lossdial.rundir import dumps_json

COUNTS = [150, 40, 10]
Y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
P = np.array([[0.70, 0.20, 0.10], [0.50, 0.30, 0.20], [0.25, 0.65, 0.10], [0.85, 0.10, 0.05],
              [0.20, 0.70, 0.10], [0.50, 0.30, 0.20], [0.10, 0.25, 0.65], [0.45, 0.35, 0.20]])
KEYS = {"accuracy", "balanced_accuracy", "worst_class_accuracy", "many_shot_accuracy", "medium_shot_accuracy",
        "few_shot_accuracy", "macro_f1", "nll", "ece", "brier", "per_class_recall", "per_class_precision", "n",
        "prior", "prior_source", "shot_groups", "shot_thresholds"}
ln = math.log


def hand_weighted(a, b, c):
    """The prior-dependent metrics by hand for class weights a (class 0 samples), b (class 1), c (class 2)."""
    q0, q1, q2 = 4 * a, 2 * b, 2 * c
    accuracy = 3 * a + 1 * b + 1 * c  # correct: samples 0, 1, 3 (a), 4 (b), 6 (c)
    # predicted 0: samples 0, 1, 3 (class 0, right), 5 (class 1), 7 (class 2); predicted 1: 2 (class 0), 4 (right);
    # predicted 2: 6 (right)
    prec = [3 * a / (3 * a + b + c), b / (a + b), 1.0]
    rec = [3 / 4, 1 / 2, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(prec, rec)]
    nll = (a * (-ln(0.70) - ln(0.50) - ln(0.25) - ln(0.85)) + b * (-ln(0.70) - ln(0.30))
           + c * (-ln(0.65) - ln(0.20)))
    brier = a * (0.14 + 0.38 + 0.995 + 0.035) + b * (0.14 + 0.78) + c * (0.195 + 0.965)
    ece = (abs(c * (0 - 0.45))                        # bin 6: sample 7
           + abs(a * (1 - 0.50) + b * (0 - 0.50))     # bin 7: samples 1, 5
           + abs(a * (0 - 0.65) + c * (1 - 0.65))     # bin 9: samples 2, 6
           + abs(a * (1 - 0.70) + b * (1 - 0.70))     # bin 10: samples 0, 4
           + abs(a * (1 - 0.85)))                     # bin 12: sample 3
    total = q0 + q1 + q2
    assert total == pytest.approx(1.0)
    return {"accuracy": accuracy, "per_class_precision": prec, "macro_f1": sum(f1) / 3, "nll": nll,
            "brier": brier, "ece": ece, "prior": [q0, q1, q2]}


PRIOR_CASES = [
    # (prior spec, class weights a, b, c, prior_source)
    ("train", 0.75 / 4, 0.2 / 2, 0.05 / 2, "train"),
    ("uniform", 1 / 12, 1 / 6, 1 / 6, "uniform"),
    ([0.2, 0.3, 0.5], 0.2 / 4, 0.3 / 2, 0.5 / 2, "given"),
    ("0.2, 0.3,0.5", 0.2 / 4, 0.3 / 2, 0.5 / 2, "given"),
]


@pytest.mark.parametrize("spec,a,b,c,source", PRIOR_CASES)
def test_every_metric_matches_the_hand_computation(spec, a, b, c, source):
    m = multiclass_metrics(Y, P, train_counts=COUNTS, prior=spec)
    assert set(m) == KEYS
    want = hand_weighted(a, b, c)
    # prior-free: recall 3/4, 1/2, 1/2
    assert m["per_class_recall"] == pytest.approx([0.75, 0.5, 0.5])
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert m["worst_class_accuracy"] == pytest.approx(0.5)
    assert m["many_shot_accuracy"] == pytest.approx(0.75)
    assert m["medium_shot_accuracy"] == pytest.approx(0.5)
    assert m["few_shot_accuracy"] == pytest.approx(0.5)
    for k in ("accuracy", "macro_f1", "nll", "brier", "ece"):
        assert m[k] == pytest.approx(want[k], rel=1e-12), k
    assert m["per_class_precision"] == pytest.approx(want["per_class_precision"], rel=1e-12)
    assert m["prior"] == pytest.approx(want["prior"])
    assert m["prior_source"] == source
    assert m["n"] == 8
    assert m["shot_groups"] == {"many": [0], "medium": [1], "few": [2]}
    assert m["shot_thresholds"] == [100, 20]


def test_hand_numbers_at_the_training_prior():
    """The same case with the arithmetic carried to numbers (guards hand_weighted itself)."""
    m = multiclass_metrics(Y, P, train_counts=COUNTS)
    assert m["accuracy"] == pytest.approx(0.75 * 0.75 + 0.2 * 0.5 + 0.05 * 0.5)  # 0.6875 = sum_c q_c recall_c
    # precision 0 = 0.5625 / (0.5625 + 0.1 + 0.025) = 9/11; precision 1 = 0.1 / (0.1 + 0.1875) = 8/23
    assert m["per_class_precision"] == pytest.approx([9 / 11, 8 / 23, 1.0])
    # F1: 2 (9/11)(3/4) / (9/11 + 3/4) = 18/23; 2 (8/23)(1/2) / (8/23 + 1/2) = 16/39; 2 (1)(1/2) / (3/2) = 2/3
    assert m["macro_f1"] == pytest.approx((18 / 23 + 16 / 39 + 2 / 3) / 3)
    # ECE: 0.025*0.45 + 0.5*(0.1875-0.1) + |-0.65*0.1875 + 0.35*0.025| + 0.3*0.2875 + 0.15*0.1875
    assert m["ece"] == pytest.approx(0.01125 + 0.04375 + 0.113125 + 0.08625 + 0.028125)
    assert m["brier"] == pytest.approx(0.1875 * 1.55 + 0.1 * 0.92 + 0.025 * 1.16)
    # uniform prior: accuracy = balanced accuracy, precision 0 = (3/12) / (3/12 + 1/6 + 1/6) = 3/7
    u = multiclass_metrics(Y, P, train_counts=COUNTS, prior="uniform")
    assert u["accuracy"] == pytest.approx(u["balanced_accuracy"])
    assert u["per_class_precision"] == pytest.approx([3 / 7, 2 / 3, 1.0])


def test_prior_only_moves_the_prior_dependent_metrics():
    """balanced accuracy, recall and the shot groups do not depend on the deployment prior."""
    a = multiclass_metrics(Y, P, train_counts=COUNTS, prior="train")
    b = multiclass_metrics(Y, P, train_counts=COUNTS, prior=[0.1, 0.1, 0.8])
    for k in ("balanced_accuracy", "worst_class_accuracy", "many_shot_accuracy", "medium_shot_accuracy",
              "few_shot_accuracy", "per_class_recall"):
        assert a[k] == b[k], k
    assert b["accuracy"] == pytest.approx(0.1 * 0.75 + 0.1 * 0.5 + 0.8 * 0.5)


def test_nll_clips_a_zero_probability_at_1e_12():
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    m = multiclass_metrics([0, 0], p, train_counts=[5, 5], prior="uniform")
    # class 1 absent: q renormalised to (1, 0); samples weigh 1/2 each: (-ln 1 - ln 1e-12) / 2
    assert m["nll"] == pytest.approx(-ln(1e-12) / 2)
    assert math.isfinite(m["nll"])


def test_ece_uses_15_equal_width_top_label_bins():
    """Confidences 0.61 (right) and 0.69 (wrong): bins 9 ([0.600, 0.667)) and 10 ([0.667, 0.733)) of 15, so they
    do not cancel: 0.5 |1 - 0.61| + 0.5 |0 - 0.69| = 0.54 (10 bins would put both in [0.6, 0.7): 0.15).
    Confidence is the top probability, not the true class's (0.21 for the second sample)."""
    p = np.array([[0.61, 0.30, 0.09], [0.69, 0.21, 0.10]])
    m = multiclass_metrics([0, 1], p, train_counts=[10, 10, 10], prior="uniform")
    assert m["ece"] == pytest.approx(0.5 * 0.39 + 0.5 * 0.69)


def test_never_predicted_class_has_nan_precision_and_zero_f1():
    """Everything predicted class 0: precision of 1 and 2 undefined, their F1 counts as 0 in the macro mean."""
    p = np.tile([0.6, 0.3, 0.1], (6, 1))
    y = np.array([0, 0, 0, 1, 1, 2])
    m = multiclass_metrics(y, p, train_counts=COUNTS, prior="uniform")
    assert m["per_class_recall"] == [1.0, 0.0, 0.0]
    assert m["per_class_precision"][0] == pytest.approx(1 / 3)  # uniform: 1/3 of the mass is class 0
    assert math.isnan(m["per_class_precision"][1]) and math.isnan(m["per_class_precision"][2])
    # F1_0 = 2 (1/3)(1) / (4/3) = 1/2; F1_1 = F1_2 = 0
    assert m["macro_f1"] == pytest.approx(0.5 / 3)
    assert m["worst_class_accuracy"] == 0.0


def test_empty_shot_group_is_nan_and_its_key_is_present():
    """Counts 500/300/150: every class is many-shot; medium and few are NaN (JSON null), keys still there."""
    m = multiclass_metrics(Y, P, train_counts=[500, 300, 150])
    assert m["shot_groups"] == {"many": [0, 1, 2], "medium": [], "few": []}
    assert m["many_shot_accuracy"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert math.isnan(m["medium_shot_accuracy"]) and math.isnan(m["few_shot_accuracy"])
    back = json.loads(dumps_json(m))  # lossdial's one JSON writer
    assert back["medium_shot_accuracy"] is None and back["few_shot_accuracy"] is None
    assert back["shot_groups"]["few"] == []


def test_shot_thresholds_are_inclusive_for_medium_and_configurable():
    """many > hi, medium hi..lo inclusive, few < lo: 101 many, 100 and 20 medium, 19 few."""
    y = np.arange(4)
    p = np.eye(4) * 0.6 + 0.1
    m = multiclass_metrics(y, p, train_counts=[101, 100, 20, 19])
    assert m["shot_groups"] == {"many": [0], "medium": [1, 2], "few": [3]}
    m = multiclass_metrics(y, p, train_counts=[101, 100, 20, 19], shot_thresholds=(50, 10))
    assert m["shot_groups"] == {"many": [0, 1], "medium": [2, 3], "few": []}
    assert m["shot_thresholds"] == [50, 10]
    assert SHOT_THRESHOLDS == (100, 20)
    with pytest.raises(ValueError, match="few_below <= many_above"):
        multiclass_metrics(y, p, train_counts=[101, 100, 20, 19], shot_thresholds=(10, 50))


def test_class_absent_from_evaluation_is_nan_and_the_prior_renormalises():
    """Drop class 2's samples: its recall is NaN and it leaves every recall average; the training prior
    (0.75, 0.2, 0.05) is renormalised over classes 0 and 1 to (0.75, 0.2) / 0.95."""
    m = multiclass_metrics(Y[:6], P[:6], train_counts=COUNTS)
    assert m["per_class_recall"][:2] == pytest.approx([0.75, 0.5]) and math.isnan(m["per_class_recall"][2])
    assert m["prior"] == pytest.approx([0.75 / 0.95, 0.2 / 0.95, 0.0])
    assert m["accuracy"] == pytest.approx((0.75 * 0.75 + 0.2 * 0.5) / 0.95)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["worst_class_accuracy"] == pytest.approx(0.5)
    assert math.isnan(m["few_shot_accuracy"])  # its only class is absent
    # class weights a = 0.75/0.95/4, b = 0.2/0.95/2; predicted 0: samples 0, 1, 3 (a) and 5 (b)
    a, b = 0.75 / 0.95 / 4, 0.2 / 0.95 / 2
    p0, p1 = 3 * a / (3 * a + b), b / (a + b)
    assert m["per_class_precision"][:2] == pytest.approx([p0, p1]) and math.isnan(m["per_class_precision"][2])
    f1 = [2 * p0 * 0.75 / (p0 + 0.75), 2 * p1 * 0.5 / (p1 + 0.5)]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 2)
    with pytest.raises(ValueError, match="no mass on the classes present"):
        multiclass_metrics(Y[:6], P[:6], train_counts=COUNTS, prior="0,0,1")


def test_given_prior_with_a_zero_class_keeps_its_recall():
    """q_2 = 0: class 2's samples weigh nothing, but its recall (prior-free) is still 1/2."""
    m = multiclass_metrics(Y, P, train_counts=COUNTS, prior=[0.5, 0.5, 0.0])
    assert m["per_class_recall"] == pytest.approx([0.75, 0.5, 0.5])
    assert m["accuracy"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.5)
    assert m["balanced_accuracy"] == pytest.approx(1.75 / 3)


def test_class_prior_specs_and_errors():
    assert class_prior("train", [150, 40, 10]) == pytest.approx([0.75, 0.2, 0.05])
    assert class_prior("Uniform", [150, 40, 10]) == pytest.approx([1 / 3] * 3)
    assert class_prior("0.1,0.2,0.7", [1, 1, 1]) == pytest.approx([0.1, 0.2, 0.7])
    assert class_prior((0.1, 0.2, 0.7000005), [1, 1, 1]).sum() == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="has 2 values but the task has 3 classes"):
        class_prior("0.5,0.5", [1, 1, 1])
    with pytest.raises(ValueError, match="negative"):
        class_prior([-0.1, 0.6, 0.5], [1, 1, 1])
    with pytest.raises(ValueError, match="sums to 0.9"):
        class_prior([0.1, 0.1, 0.7], [1, 1, 1])
    with pytest.raises(ValueError, match="sums to 1.00001"):
        class_prior([0.1, 0.2, 0.70001], [1, 1, 1])
    with pytest.raises(ValueError, match="neither 'train', 'uniform'"):
        class_prior("balanced", [1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        class_prior([float("nan"), 0.5, 0.5], [1, 1, 1])
    with pytest.raises(ValueError, match="no training samples"):
        class_prior("train", [5, 0, 3])
    for bad in ("balanced", "0.5,0.5"):
        with pytest.raises(ValueError, match="'train', 'uniform', or one probability per class"):
            class_prior(bad, [1, 1, 1])


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="train_counts has 2 entries but the scores have 3 classes"):
        multiclass_metrics(Y, P, train_counts=[1, 2])
    with pytest.raises(ValueError, match="class indices 0..2"):
        multiclass_metrics(np.r_[Y[:7], 3], P, train_counts=COUNTS)
    with pytest.raises(ValueError, match="softmax"):
        multiclass_metrics(Y, P * 2, train_counts=COUNTS)
    with pytest.raises(ValueError, match="do not match"):
        multiclass_metrics(Y[:5], P, train_counts=COUNTS)
    with pytest.raises(ValueError, match="empty"):
        multiclass_metrics(np.zeros(0, int), np.zeros((0, 3)), train_counts=COUNTS)


def test_adjust_logits_is_z_minus_t_log_prior():
    z = np.array([[1.0, 0.5, -2.0], [0.0, 0.0, 0.0]])
    s = adjust_logits(z, COUNTS, 0.5)
    want = z - 0.5 * np.array([ln(0.75), ln(0.2), ln(0.05)])
    assert s == pytest.approx(want)
    assert s[1] == pytest.approx([0.5 * 0.2876821, 0.5 * 1.6094379, 0.5 * 2.9957323])
    assert isinstance(s, np.ndarray) and s.dtype == np.float64
    s32 = adjust_logits(z.astype(np.float32), COUNTS, 0.5)
    assert s32.dtype == np.float32
    zt = torch.tensor(z, dtype=torch.float32)
    st = adjust_logits(zt, COUNTS, 0.5)
    assert isinstance(st, torch.Tensor) and st.dtype == torch.float32 and st.device == zt.device
    assert st.numpy() == pytest.approx(want, abs=1e-6)
    meta = adjust_logits(torch.empty(4, 3, device="meta", dtype=torch.float16), COUNTS, 1.0)
    assert meta.device.type == "meta" and meta.dtype == torch.float16 and meta.shape == (4, 3)
    assert adjust_logits(z, COUNTS, 0.0) == pytest.approx(z)
    with pytest.raises(ValueError, match="do not end in the 3 classes"):
        adjust_logits(np.zeros((2, 4)), COUNTS, 1.0)
    with pytest.raises(ValueError, match="no training samples"):
        adjust_logits(z, [10, 0, 3], 1.0)


def test_t_equal_1_turns_a_train_prior_posterior_into_the_balanced_one():
    """Logits log p with p the train-prior posterior: softmax(z - log pi) = (p / pi) / sum(p / pi)."""
    pi = np.array([0.75, 0.2, 0.05])
    got = np.exp(adjust_logits(np.log(P), COUNTS, 1.0))
    got /= got.sum(1, keepdims=True)
    want = (P / pi) / (P / pi).sum(1, keepdims=True)
    assert got == pytest.approx(want)


def test_dial_table_rows_at_t_0_and_1_match_hand_predictions():
    """t = 0 is the model itself (hand case above). At t = 1, p / pi with 1/pi = (4/3, 5, 20):
        0: (0.933, 1.0, 2.0) -> 2   1: (0.667, 1.5, 4.0) -> 2   2: (0.333, 3.25, 2.0) -> 1   3: (1.133, 0.5, 1.0) -> 0
        4: (0.267, 3.5, 2.0) -> 1   5: (0.667, 1.5, 4.0) -> 2   6: (0.133, 1.25, 13.) -> 2   7: (0.6, 1.75, 4.0) -> 2
    so recall is 1/4, 1/2, 2/2: the few-shot class gains, the head loses."""
    rows = dial_table(np.log(P), Y, COUNTS, ts=(0.0, 1.0))
    assert [r["t"] for r in rows] == [0.0, 1.0]
    m0, m1 = rows[0]["metrics"], rows[1]["metrics"]
    assert m0["per_class_recall"] == pytest.approx([0.75, 0.5, 0.5])
    assert m0["nll"] == pytest.approx(hand_weighted(0.75 / 4, 0.1, 0.025)["nll"])
    assert m1["per_class_recall"] == pytest.approx([0.25, 0.5, 1.0])
    assert m1["balanced_accuracy"] == pytest.approx(1.75 / 3)
    assert m1["accuracy"] == pytest.approx(0.75 * 0.25 + 0.2 * 0.5 + 0.05 * 1.0)
    assert DEFAULT_T_GRID == (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert len(dial_table(torch.tensor(np.log(P)), Y, COUNTS)) == len(DEFAULT_T_GRID)


@pytest.mark.parametrize("seed", range(5))
def test_raising_t_never_lowers_the_rarest_class_recall(seed):
    """s_rare - s_c = z_rare - z_c - t (log pi_rare - log pi_c) is non-decreasing in t (pi_rare is the smallest),
    so the set of samples predicted rare only grows: its recall never falls. The rarest class sits in the
    middle of the label order so both tie directions are exercised."""
    rng = np.random.default_rng(seed)
    counts = [1000, 300, 7, 100, 30]
    rare = 2
    z = rng.normal(size=(400, 5)) * 2 + np.log(np.array(counts) / sum(counts))  # a head-biased model
    y = rng.integers(0, 5, size=400)
    ts = np.linspace(-1.0, 3.0, 41)
    predicted_rare_before = np.zeros(400, bool)
    recall_before = -1.0
    for t in ts:
        pred_rare = adjust_logits(z, counts, t).argmax(1) == rare
        assert (pred_rare | ~predicted_rare_before).all()  # superset of the previous set
        predicted_rare_before = pred_rare
        recall = pred_rare[y == rare].mean()
        assert recall >= recall_before
        recall_before = recall
    rows = dial_table(z, y, counts, ts=ts)
    rec = [r["metrics"]["per_class_recall"][rare] for r in rows]
    assert np.all(np.diff(rec) >= 0) and rec[-1] > rec[0]


def test_bootstrap_keeps_every_class_count():
    """2 class-2 samples in 200, always misclassified; classes 0 and 1 always right. Every stratified resample
    has recall (1, 1, 0): balanced accuracy 2/3, worst-class 0 and accuracy at the training prior
    0.75 + 0.2 = 0.95 in every draw. (An unstratified resample lacks class 2 in ~13% of draws: worst-class 1.)"""
    y = np.r_[np.zeros(150, int), np.ones(48, int), np.full(2, 2)]
    p = np.tile([0.1, 0.1, 0.8], (200, 1))
    p[y == 0] = [0.8, 0.1, 0.1]
    p[y == 1] = [0.1, 0.8, 0.1]
    p[y == 2] = [0.8, 0.1, 0.1]
    ci = bootstrap_multiclass(y, p, train_counts=COUNTS, prior="train", n_boot=200, seed=0)
    assert set(ci) == set(MULTICLASS_MAXIMIZE + MULTICLASS_MINIMIZE)
    assert ci["balanced_accuracy"] == pytest.approx([2 / 3, 2 / 3], abs=1e-12)
    assert ci["worst_class_accuracy"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert ci["accuracy"] == pytest.approx([0.95, 0.95], abs=1e-12)
    assert ci["few_shot_accuracy"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_bootstrap_interval_is_the_binomial_quantiles_of_a_resampled_recall():
    """Class 0: 60 samples, 48 right; classes 1 and 2 always right. Resampled recall_0 ~ Binomial(60, 0.8)/60,
    so worst_class_accuracy's 95% interval is its 2.5% / 97.5% quantiles (Monte Carlo error of 400 draws:
    ~1.5 counts). An always-empty group (medium here) gives [NaN, NaN]."""
    from scipy.stats import binom

    y = np.r_[np.zeros(60, int), np.ones(30, int), np.full(10, 2)]
    p = np.zeros((100, 3))
    p[np.arange(100), y] = 0.9
    p[np.arange(100), (y + 1) % 3] = 0.1
    p[np.arange(12)] = [0.1, 0.9, 0.0]  # 12 of class 0 wrong
    ci = bootstrap_multiclass(y, p, train_counts=[500, 300, 5], prior="uniform", n_boot=400, seed=0,
                              keys=("worst_class_accuracy", "medium_shot_accuracy"))
    want = binom.ppf([0.025, 0.975], 60, 0.8) / 60
    assert ci["worst_class_accuracy"] == pytest.approx(want, abs=1.5 / 60)
    assert all(math.isnan(v) for v in ci["medium_shot_accuracy"])
    with pytest.raises(ValueError, match="no bootstrap interval for"):
        bootstrap_multiclass(y, p, train_counts=[500, 300, 5], keys=("auc",))


def test_objective_lists():
    assert MULTICLASS_MAXIMIZE == ("balanced_accuracy", "accuracy", "worst_class_accuracy", "many_shot_accuracy",
                                   "medium_shot_accuracy", "few_shot_accuracy", "macro_f1")
    assert MULTICLASS_MINIMIZE == ("nll", "ece", "brier")
