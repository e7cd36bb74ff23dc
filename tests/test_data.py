import numpy as np
import pytest
import torch

from lossdial.config import config_from_dict
from lossdial.data import TensorLoader, augment_batch, binary_labels, build_task, make_splits
from lossdial.data.loader import make_generator


def _labels(n_neg=1000, n_pos=200):
    return np.array([0] * n_neg + [1] * n_pos)


def test_holdouts_first_then_subsample_exact_counts():
    lab = _labels()
    s = make_splits(lab, val_fraction=0.2, test_fraction=0.2, min_holdout_positives=30, beta=50, seed=0)
    # holdouts keep the natural balance: 20% of each class
    assert (lab[s.test] == 1).sum() == 40 and (lab[s.test] == 0).sum() == 200
    assert (lab[s.val] == 1).sum() == 40 and (lab[s.val] == 0).sum() == 200
    # training: all 600 remaining negatives, floor(600 / 50) = 12 positives
    assert (lab[s.train] == 0).sum() == 600 and (lab[s.train] == 1).sum() == 12
    s.check_disjoint()


def test_min_holdout_positives_enforced():
    lab = _labels(1000, 100)
    s = make_splits(lab, val_fraction=0.1, test_fraction=0.1, min_holdout_positives=30, beta=None, seed=0)
    assert (lab[s.val] == 1).sum() == 30 and (lab[s.test] == 1).sum() == 30
    assert (lab[s.train] == 1).sum() == 40


def test_splits_reproducible_and_seed_dependent():
    lab = _labels()
    a = make_splits(lab, val_fraction=0.2, test_fraction=0.2, min_holdout_positives=30, beta=10, seed=3)
    b = make_splits(lab, val_fraction=0.2, test_fraction=0.2, min_holdout_positives=30, beta=10, seed=3)
    c = make_splits(lab, val_fraction=0.2, test_fraction=0.2, min_holdout_positives=30, beta=10, seed=4)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "test"))
    assert not np.array_equal(a.train, c.train)


def test_bad_beta_errors():
    lab = _labels(100, 50)
    with pytest.raises(ValueError, match="0 training positives"):
        make_splits(lab, val_fraction=0.1, test_fraction=0.1, min_holdout_positives=5, beta=1000, seed=0)
    with pytest.raises(ValueError, match="only"):
        make_splits(lab, val_fraction=0.1, test_fraction=0.1, min_holdout_positives=5, beta=1, seed=0)


def test_binary_labels_by_name_and_errors():
    y = np.array([0, 1, 2, 3])
    names = ["cat", "dog", "frog", "ship"]
    assert binary_labels(y, names, "dog", ["cat"]).tolist() == [0, 1, -1, -1]
    assert binary_labels(y, names, "cat").tolist() == [1, 0, 0, 0]  # positive by name, not by folder order
    with pytest.raises(ValueError, match="not a class"):
        binary_labels(y, names, "horse")
    with pytest.raises(ValueError, match="both"):
        binary_labels(y, names, "cat", ["cat", "dog"])


def test_digits_task_counts_and_normalisation():
    cfg = config_from_dict({"data": {"source": "digits", "positive_class": "8", "beta": 50}})
    task = build_task(cfg.data)
    c = task.describe()["counts"]
    assert c["val"][1] >= 30 and c["test"][1] >= 30
    assert c["train"][1] == c["train"][0] // 50
    assert task.class_names == ["not_8", "8"]
    assert task.input_shape == (1, 8, 8)
    z = task.normalizer(task.train.x)  # standardised on the fly with training statistics
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3
    # every digit-8 image ends up labelled 1
    from sklearn.datasets import load_digits
    d = load_digits()
    assert set(task.indices.val) | set(task.indices.test) | set(task.indices.train) <= set(range(len(d.target)))
    assert (d.target[task.indices.val] == 8).sum() == c["val"][1]


def test_loader_order_is_a_function_of_seed_and_epoch():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    ld = TensorLoader(x, y, 4, seed=1)
    assert len(ld) == 3
    e0 = torch.cat([b for _, b in ld.batches(0)])
    assert sorted(e0.tolist()) == list(range(10))
    assert torch.equal(e0, torch.cat([b for _, b in ld.batches(0)]))
    assert not torch.equal(e0, torch.cat([b for _, b in ld.batches(1)]))
    # resuming at batch 1 replays the rest of the same epoch
    assert torch.equal(torch.cat([b for _, b in ld.batches(0, start=1)]), e0[4:])


def test_augment_crop_is_a_shift_and_flip_mirrors():
    x = torch.arange(2 * 1 * 5 * 5).float().reshape(2, 1, 5, 5) + 1
    out = augment_batch(x, "crop", make_generator(0), padding=1)
    assert out.shape == x.shape
    for i in range(2):  # every crop equals the padded image shifted by some (dy, dx) in [-1, 1]
        pad = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(out[i], pad[:, dy:dy + 5, dx:dx + 5]) for dy in range(3) for dx in range(3))
    flipped = augment_batch(x.repeat(64, 1, 1, 1), "flip", make_generator(0))
    is_flip = [torch.equal(f, x[i % 2].flip(-1)) for i, f in enumerate(flipped)]
    is_same = [torch.equal(f, x[i % 2]) for i, f in enumerate(flipped)]
    assert all(a or b for a, b in zip(is_flip, is_same))
    assert 32 < sum(is_flip) < 96  # about half of the 128 are flipped
