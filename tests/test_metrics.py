import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from lossdial.evaluate import binary_metrics, expected_calibration_error


def test_metrics_match_sklearn_and_hand_counts():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(int)
    s = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    m = binary_metrics(y, s, threshold=0.5)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["brier"] == pytest.approx(brier_score_loss(y, s))
    pred = s >= 0.5
    assert m["recall"] == pytest.approx((pred & (y == 1)).sum() / (y == 1).sum())
    assert m["precision"] == pytest.approx((pred & (y == 1)).sum() / pred.sum())
    # best F1 by brute force over every threshold
    best = max(2 * ((s >= t) & (y == 1)).sum() / ((s >= t).sum() + (y == 1).sum()) for t in np.unique(s))
    assert m["f1"] == pytest.approx(best)
    # precision at recall 0.9 by brute force
    cands = [((s >= t) & (y == 1)).sum() / (s >= t).sum() for t in np.unique(s)
             if ((s >= t) & (y == 1)).sum() / (y == 1).sum() >= 0.9]
    assert m["precision@recall=0.9"] == pytest.approx(max(cands))


def test_ece_by_hand():
    y = np.array([0, 1, 1, 0])
    s = np.array([0.1, 0.1, 0.9, 0.9])
    # two bins, each with mean score 0.1 / 0.9 and accuracy 0.5: |0.5-0.1|*0.5 + |0.5-0.9|*0.5
    assert expected_calibration_error(y, s, n_bins=10) == pytest.approx(0.4)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="equal-length"):
        binary_metrics([0, 1, 1], [0.1, 0.2])
