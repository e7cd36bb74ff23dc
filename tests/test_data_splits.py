"""Imbalance builders (binary from class lists, step and exponential long tails), holdouts and seeds."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lossdial.config import ConfigError, config_from_dict, load_config, packaged_config_path
from lossdial.data import binary_labels, build_task, longtail_counts, make_splits
from lossdial.data.splits import multiclass_labels


def _pool_labels(per_class, n_test_per_class=0):
    """Class-index labels: a training pool with per_class[c] of class c, then a test split."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    if n_test_per_class:
        y = np.concatenate([y, np.repeat(np.arange(len(per_class)), n_test_per_class)])
    return y


def _counts(lab, ix, k):
    return np.bincount(lab[ix], minlength=k).tolist()


def test_binary_from_class_lists_exact_counts():
    names = ["airplane", "cat", "dog", "truck", "ship"]
    y = _pool_labels([100, 100, 100, 100, 100], n_test_per_class=20)
    lab = binary_labels(y, names, ["truck", "ship", "airplane"], ["cat", "dog"])
    assert set(lab[y == 0]) == {1} and set(lab[y == 1]) == {0}
    s = make_splits(lab, val_fraction=0.1, test_fraction=None, min_holdout_positives=30, beta=20, seed=0,
                    n_test_external=100)
    assert _counts(lab, s.val, 2) == [20, 30] and _counts(lab, s.test, 2) == [40, 60]
    assert _counts(lab, s.train, 2) == [180, 180 // 20]
    assert s.train.max() < 500 and s.val.max() < 500 and s.test.min() >= 500
    s.check_disjoint()
    # classes in neither list are out of the task
    assert not set(s.train) & set(np.flatnonzero(lab < 0))


def test_val_from_test_splits_the_source_test_set():
    lab = binary_labels(_pool_labels([5000, 5000], 1000), ["cat", "dog"], "dog", ["cat"])
    s = make_splits(lab, val_fraction=0.5, test_fraction=None, min_holdout_positives=30, beta=100, seed=0,
                    n_test_external=2000, val_from="test")
    assert _counts(lab, s.train, 2) == [5000, 50]  # the paper's 5000 vs 50
    assert _counts(lab, s.val, 2) == [500, 500] and _counts(lab, s.test, 2) == [500, 500]
    assert s.val.min() >= 10000 and s.test.min() >= 10000
    s = make_splits(lab, val_fraction=0.1, test_fraction=None, min_holdout_positives=30, beta=100, seed=0,
                    n_test_external=2000)
    assert _counts(lab, s.train, 2) == [4500, 45]
    assert _counts(lab, s.val, 2) == [500, 500] and _counts(lab, s.test, 2) == [1000, 1000]
    with pytest.raises(ValueError, match="val_from: test needs a source with its own test split"):
        make_splits(lab[:10000], val_fraction=0.5, test_fraction=0.2, min_holdout_positives=30, beta=100,
                    seed=0, val_from="test")


def test_longtail_profiles_exact():
    assert longtail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT
    assert longtail_counts(4500, 10, 100) == [4500, 2697, 1617, 969, 581, 348, 208, 125, 75, 45]
    assert longtail_counts(500, 100, 100)[-1] == 5 and longtail_counts(500, 100, 100)[0] == 500
    assert longtail_counts(1000, 10, 10, "step") == [1000] * 5 + [100] * 5
    assert longtail_counts(1000, 5, 10, "step", step_fraction=0.4) == [1000] * 3 + [100] * 2
    assert longtail_counts(1000, 3, 4, "step", step_fraction=0.9) == [1000, 250, 250]  # at least one head
    with pytest.raises(ValueError, match="profile"):
        longtail_counts(10, 3, 2, "linear")


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_multiclass_splits_exact_counts(profile):
    lab = _pool_labels([400, 420, 410, 405, 450])
    s = make_splits(lab, val_fraction=0.1, test_fraction=0.1, min_holdout_positives=30, beta=10, seed=1,
                    num_classes=5, profile=profile)
    full = [400, 420, 410, 405, 450]
    assert _counts(lab, s.val, 5) == [max(30, round(0.1 * n)) for n in full]
    assert _counts(lab, s.test, 5) == _counts(lab, s.val, 5)
    remaining = [n - 2 * max(30, round(0.1 * n)) for n in full]
    assert _counts(lab, s.train, 5) == longtail_counts(min(remaining), 5, 10, profile)
    s.check_disjoint()


def test_multiclass_zero_samples_and_holdout_errors():
    lab = _pool_labels([100, 100, 100])
    with pytest.raises(ValueError, match=r"beta=1000 leaves class 'c' with floor\(60 / 1000\) = 0"):
        make_splits(lab, val_fraction=0.2, test_fraction=0.2, min_holdout_positives=5, beta=1000, seed=0,
                    num_classes=3, profile="exp", class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="validation holdout needs 120 class 'a' samples but only 80 remain"):
        make_splits(_pool_labels([200, 100]), val_fraction=0.6, test_fraction=0.6, min_holdout_positives=5,
                    beta=None, seed=0, num_classes=2, profile="exp", class_names=["a", "b"])
    with pytest.raises(ValueError, match="no class 'c' samples"):
        make_splits(_pool_labels([50, 50]), val_fraction=0.1, test_fraction=0.1, min_holdout_positives=1,
                    beta=None, seed=0, num_classes=3, profile="exp", class_names=["a", "b", "c"])


def test_class_lists_errors():
    names = ["cat", "dog", "frog"]
    with pytest.raises(ValueError, match=r"positive_classes \['horse'\] is not a class"):
        binary_labels(np.array([0, 1]), names, ["dog", "horse"])
    with pytest.raises(ValueError, match=r"negative_classes \['cow', 'pig'\] are not classes"):
        binary_labels(np.array([0, 1]), names, ["dog"], ["cow", "pig"])
    with pytest.raises(ValueError, match="both"):
        binary_labels(np.array([0, 1]), names, ["dog", "cat"], ["cat"])
    lab, order = multiclass_labels(np.array([0, 1, 2, 2]), names, ["frog", "cat"])
    assert lab.tolist() == [1, -1, 0, 0] and order == ["frog", "cat"]
    with pytest.raises(ValueError, match="not a class"):
        multiclass_labels(np.array([0]), names, ["dog", "emu"])
    with pytest.raises(ConfigError, match="both positive and negative"):
        config_from_dict({"data": {"positive_classes": ["a"], "negative_classes": ["a", "b"]}})
    with pytest.raises(ConfigError, match="positive_class or positive_classes, not both"):
        config_from_dict({"data": {"positive_class": "a", "positive_classes": ["b"]}})


@pytest.mark.parametrize("kw", [
    dict(),
    dict(n_test_external=300),
    dict(n_test_external=300, val_from="test", val_fraction=0.5),
    dict(num_classes=3, profile="exp"),
])
def test_splits_disjoint_reproducible_and_seed_dependent(kw):
    k = kw.get("num_classes", 2)
    lab = _pool_labels([600, 300, 200][:k] if k == 3 else [700, 300], 100 if kw.get("n_test_external") else 0)
    if k == 2 and kw.get("n_test_external"):
        lab = np.concatenate([_pool_labels([700, 300]), np.repeat([0, 1], [200, 100])])
    base = dict(val_fraction=0.1, test_fraction=0.2, min_holdout_positives=10, beta=5)
    base.update(kw)
    a, b, c = (make_splits(lab, seed=sd, **base) for sd in (3, 3, 4))
    for s in (a, c):
        s.check_disjoint()
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("train", "val", "test"))
    assert not np.array_equal(a.train, c.train)


def _old_binary_make_splits(labels, val_fraction, test_fraction, min_pos, beta, seed):
    """The binary algorithm as it was before multi-class support (issue 2), kept as a reference."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5911]))
    in_task = np.flatnonzero(labels >= 0)
    by = {c: in_task[labels[in_task] == c] for c in (0, 1)}
    by = {c: v[rng.permutation(len(v))] for c, v in by.items()}
    full = {c: len(v) for c, v in by.items()}
    out = []
    for frac in (test_fraction, val_fraction):
        take = {c: max(int(round(frac * full[c])), min_pos if c == 1 else 0) for c in (0, 1)}
        out.append(np.sort(np.concatenate([by[c][:take[c]] for c in (0, 1)])))
        by = {c: by[c][take[c]:] for c in (0, 1)}
    pos = by[1][:int(np.floor(len(by[0]) / beta))]
    return np.sort(np.concatenate([by[0], pos])), out[1], out[0]


def test_binary_digits_indices_unchanged_by_the_refactor():
    """The digits demo split is the same as before multi-class support (old run directories still resume)."""
    cfg = load_config(packaged_config_path("demo_digits")).data
    task = build_task(cfg)
    assert task.describe()["counts"] == {"train": [973, 19], "val": [325, 35], "test": [325, 35]}
    from sklearn.datasets import load_digits

    lab = (load_digits().target == 8).astype(np.int64)
    old = _old_binary_make_splits(lab, 0.2, 0.2, 30, 50, 0)
    for k, ref in zip(("train", "val", "test"), old):
        assert np.array_equal(getattr(task.indices, k), ref), k


def test_multiclass_task_on_digits():
    cfg = config_from_dict({"data": {"source": "digits", "task": "multiclass", "classes": ["0", "1", "2", "3"],
                                     "profile": "exp", "beta": 10, "min_holdout_positives": 10}})
    task = build_task(cfg.data)
    assert task.num_classes == 4 and not task.is_binary and task.class_names == ["0", "1", "2", "3"]
    counts = task.class_counts
    from sklearn.datasets import load_digits

    n = np.bincount(load_digits().target)[:4]  # 178, 182, 177, 183
    holdout = [max(10, round(0.2 * v)) for v in n]  # validation and test each take 20% (at least 10)
    assert counts == longtail_counts(min(v - 2 * h for v, h in zip(n, holdout)), 4, 10)
    assert task.val.counts == holdout and task.test.counts == holdout
    assert set(task.train.y.tolist()) == {0, 1, 2, 3}
    d = task.describe()
    assert d["num_classes"] == 4 and "train_prevalence" not in d and d["imbalance_ratio"] == max(counts) / min(counts)


def test_cli_data_command_table_and_json():
    from lossdial.cli import app

    cfg = str(packaged_config_path("demo_digits"))
    r = CliRunner().invoke(app, ["data", cfg, "--set", "data.beta=10"])
    assert r.exit_code == 0, r.output
    assert "not_8" in r.output and "imbalance ratio 10.03" in r.output and "stratified" in r.output
    r = CliRunner().invoke(app, ["data", cfg, "--json"])
    d = json.loads(r.output)
    assert d["counts"]["train"] == [973, 19] and d["task"]["val_fraction"] == 0.2
    r = CliRunner().invoke(app, ["data", cfg, "--set", "data.beta=100000"])
    assert r.exit_code == 2 and "0 training positives" in r.output
    r = CliRunner().invoke(app, ["data", cfg, "--set", "data.source=npz"])
    assert r.exit_code == 2 and "data.path is required" in r.output
