"""Every data source on small data written here (no downloads), and each bad input's error."""

import json
import pickle

import numpy as np
import pytest
import torch

from lossdial.config import ConfigError, config_from_dict
from lossdial.data import DataSourceError, build_task, load_source
from lossdial.data.cifar_jpeg import CLASSES as CIFAR10_CLASSES
from lossdial.data.images import load_image_folder
from lossdial.data.sources import load_cifar_pickles, load_npz
from lossdial.data.tabular import TableColumnsError, TablePreprocessor, load_table, read_predict_table

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Caches go to the test's own folder, never to ~/.cache."""
    monkeypatch.setenv("LOSSDIAL_CACHE", str(tmp_path / "cache"))


def _data_cfg(**kw):
    return config_from_dict({"data": kw}).data


# --------------------------------------------------------------------------------------------------------
# image folders

def _write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path)


def _image_tree(root, counts, size=(6, 5), seed=0):
    """root/<class>/<i>.png with random RGB pixels; returns {relative path: HWC array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for cls, n in counts.items():
        for i in range(n):
            a = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
            _write_png(root / cls / f"{i:03d}.png", a)
            written[f"{cls}/{i:03d}.png"] = a
    return written


def test_image_folder_decodes_exact_pixels_and_caches(tmp_path):
    written = _image_tree(tmp_path / "imgs", {"dog": 3, "cat": 2})
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")  # ignored, like torchvision
    pool = load_image_folder(tmp_path / "imgs")
    assert pool.class_names == ["cat", "dog"]  # sorted folder names
    assert pool.x.dtype == np.uint8 and pool.x.shape == (5, 3, 6, 5)
    assert pool.y.tolist() == [0, 0, 1, 1, 1]
    assert np.array_equal(pool.x[0], written["cat/000.png"].transpose(2, 0, 1))
    assert np.array_equal(pool.x[4], written["dog/002.png"].transpose(2, 0, 1))
    assert pool.meta["cache_hit"] is False and str(tmp_path / "cache") in pool.meta["cache"]
    again = load_image_folder(tmp_path / "imgs")
    assert again.meta["cache_hit"] is True and np.array_equal(again.x, pool.x)
    # a changed file invalidates the cache key
    _write_png(tmp_path / "imgs" / "cat" / "000.png", np.zeros((6, 5, 3), np.uint8))
    third = load_image_folder(tmp_path / "imgs")
    assert third.meta["cache_hit"] is False and third.x[0].max() == 0


def test_image_folder_resize_grayscale_and_size_mismatch(tmp_path):
    _image_tree(tmp_path / "a", {"x": 2}, size=(6, 6))
    _image_tree(tmp_path / "a", {"y": 2}, size=(9, 7), seed=1)
    with pytest.raises(DataSourceError, match="image_size"):
        load_image_folder(tmp_path / "a", cache=False)
    pool = load_image_folder(tmp_path / "a", image_size=4, channels=1, cache=False)
    assert pool.x.shape == (4, 1, 4, 4) and pool.meta["resize"] == "bilinear"
    pool = load_image_folder(tmp_path / "a", image_size=(3, 5), cache=False)
    assert pool.x.shape == (4, 3, 3, 5)


def test_image_folder_bad_inputs(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    _write_png(tmp_path / "flat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataSourceError, match="no class folders"):
        load_image_folder(tmp_path / "flat")
    _image_tree(tmp_path / "e", {"cat": 2})
    (tmp_path / "e" / "dog").mkdir()
    with pytest.raises(DataSourceError, match=r"class folder .*dog holds no images"):
        load_image_folder(tmp_path / "e")


def test_unreadable_image_names_the_file_or_is_skipped(tmp_path):
    _image_tree(tmp_path / "b", {"cat": 3, "dog": 2})
    (tmp_path / "b" / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataSourceError, match=r"broken\.jpg.*skip_bad_images"):
        load_image_folder(tmp_path / "b")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        pool = load_image_folder(tmp_path / "b", skip_bad_images=True)
    assert len(pool) == 5 and pool.meta["skipped_images"] == 1
    assert pool.meta["skipped_examples"] == ["dog/broken.jpg"]


def test_image_folder_task_with_test_path_and_positive_lists(tmp_path):
    _image_tree(tmp_path / "train", {"cat": 40, "dog": 40, "frog": 40}, size=(4, 4))
    _image_tree(tmp_path / "test", {"cat": 5, "dog": 6, "frog": 7}, size=(4, 4), seed=3)
    cfg = _data_cfg(source="image_folder", path=str(tmp_path / "train"), test_path=str(tmp_path / "test"),
                    positive_classes=["dog", "frog"], negative_classes=["cat"], beta=4, val_fraction=0.25,
                    min_holdout_positives=5)
    task = build_task(cfg)
    c = task.describe()["counts"]
    # val: 25% of each task class of the training pool (cat 10, dog+frog 20); test: the source's own split
    assert c["val"] == [10, 20] and c["test"] == [5, 13]
    assert c["train"] == [30, 30 // 4]
    assert task.class_names == ["cat", "dog+frog"] and task.train.x.dtype == torch.uint8
    n_pool = 120
    assert task.indices.test.min() >= n_pool and task.indices.train.max() < n_pool
    assert task.describe()["source"]["test"]["path"].endswith("test")


# --------------------------------------------------------------------------------------------------------
# CIFAR python pickles

def _cifar10_tree(root, n_per_batch=20, n_test=30, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, f)
        batches.append((data, labels))
    tdata = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    tlabels = [int(v) for v in rng.integers(0, 10, n_test)]
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": tdata, b"labels": tlabels}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f)
    return batches, (tdata, tlabels)


def test_cifar10_pickles_layout(tmp_path):
    batches, (tdata, tlabels) = _cifar10_tree(tmp_path)
    pool = load_cifar_pickles(tmp_path, "cifar10")  # the parent folder works as well as the batch folder
    assert pool.class_names == CIFAR10_CLASSES and pool.x.dtype == np.uint8
    assert pool.x.shape == (130, 3, 32, 32) and pool.n_test == 30
    data0, labels0 = batches[0]
    # row-major 3072 = 3 x 32 x 32 (R plane, G plane, B plane)
    assert pool.x[0, 1, 2, 3] == data0[0, 1024 + 2 * 32 + 3]
    assert pool.y[:20].tolist() == labels0 and pool.y[100:].tolist() == tlabels
    assert np.array_equal(pool.x[100:].reshape(30, -1), tdata)
    assert np.array_equal(load_cifar_pickles(tmp_path / "cifar-10-batches-py").x, pool.x)


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        with open(d / split, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [i % 3 for i in range(n)], b"coarse_labels": [i % 2 for i in range(n)]}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [b"apple", b"bee", b"cup"], b"coarse_label_names": [b"food", b"bug"]}, f)
    fine = load_cifar_pickles(tmp_path, "cifar100")
    assert fine.class_names == ["apple", "bee", "cup"] and fine.n_test == 4 and fine.y[:3].tolist() == [0, 1, 2]
    coarse = load_source(_data_cfg(source="cifar100", path=str(tmp_path), coarse_labels=True,
                                   positive_class="bug"))
    assert coarse.class_names == ["food", "bug"] and coarse.y[:3].tolist() == [0, 1, 0]


def test_cifar_pickles_missing_file_and_unsafe_pickle(tmp_path):
    _cifar10_tree(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataSourceError, match="missing CIFAR file .*data_batch_3"):
        load_cifar_pickles(tmp_path)

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataSourceError, match="refusing to load"):
        load_cifar_pickles(tmp_path)


def test_cifar_pickle_task_counts_both_val_modes(tmp_path):
    """Binary cat vs dog from the pickle layout: holdouts first, own test split kept or split in two."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    per_class_train, per_class_test = 100, 20
    for i in range(1, 6):  # 20 of each class per batch
        labels = [c for c in range(10) for _ in range(per_class_train // 5)]
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": np.zeros((len(labels), 3072), np.uint8), b"labels": labels}, f)
    tl = [c for c in range(10) for _ in range(per_class_test)]
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((len(tl), 3072), np.uint8), b"labels": tl}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f)
    base = dict(source="cifar10", path=str(tmp_path), positive_classes=["dog"], negative_classes=["cat"], beta=10,
                min_holdout_positives=5)
    t = build_task(_data_cfg(**base))  # val = 10% of each class of the 100-image training pool
    assert t.describe()["counts"] == {"train": [90, 9], "val": [10, 10], "test": [20, 20]}
    t = build_task(_data_cfg(**base, val_from="test"))  # val = half of the test split
    assert t.describe()["counts"] == {"train": [100, 10], "val": [10, 10], "test": [10, 10]}
    assert t.indices.val.min() >= 1000 and t.indices.train.max() < 1000  # 10 classes x 100 training images
    assert t.describe()["task"]["val_fraction"] == 0.5


# --------------------------------------------------------------------------------------------------------
# NPZ

def test_npz_table_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(50, 4)), y=np.array([0, 1] * 25),
             class_names=np.array(["good", "bad"]))
    pool = load_npz(tmp_path / "t.npz")
    assert pool.kind == "table" and pool.class_names == ["good", "bad"] and pool.x.dtype == np.float32
    nhwc = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "i.npz", x=nhwc, y=np.array(["cat", "dog", "cat", "dog", "cat", "cat"]),
             x_test=nhwc[:2], y_test=np.array(["dog", "cat"]))
    pool = load_npz(tmp_path / "i.npz")
    assert pool.kind == "image" and pool.x.shape == (8, 3, 5, 4) and pool.x.dtype == np.uint8
    assert np.array_equal(pool.x[0], nhwc[0].transpose(2, 0, 1)) and pool.meta["transposed_from"] == "NHWC"
    assert pool.class_names == ["cat", "dog"] and pool.n_test == 2 and pool.y[-2:].tolist() == [1, 0]
    assert pool.meta["pixel_max"] == 255.0


def test_npz_bad_inputs(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 2, 5]), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataSourceError, match=r"labels \[5\] fall outside class_names"):
        load_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 2)), y=np.array(["a", "z"]), class_names=np.array(["a", "b"]))
    with pytest.raises(DataSourceError, match=r"labels \['z'\] are not in class_names"):
        load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", inputs=np.zeros((2, 2)))
    with pytest.raises(DataSourceError, match="needs 'x'"):
        load_npz(tmp_path / "c.npz")
    with pytest.raises(DataSourceError, match="does not exist"):
        load_npz(tmp_path / "none.npz")
    with pytest.raises(DataSourceError, match="data.path is required"):
        load_source(_data_cfg(source="npz"))


# --------------------------------------------------------------------------------------------------------
# CSV / Parquet

CSV = """id,age,city,income,label
r0,30,paris,100,no
r1,,london,200,yes
r2,50,,150,no
r3,40,paris,NA,no
r4,35,berlin,120,yes
"""


def _big_csv(path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = ["id,age,city,income,label"]
    for i in range(n):
        age = "" if i % 17 == 0 else f"{rng.normal(40, 10):.1f}"
        city = "" if i % 23 == 0 else ["paris", "london", "berlin"][i % 3]
        label = "fraud" if i % 4 == 0 else "ok"
        rows.append(f"r{i},{age},{city},{rng.normal(100, 20):.2f},{label}")
    path.write_text("\n".join(rows) + "\n")


def test_table_preprocessor_fit_transform_roundtrip():
    cols = {"age": np.array(["30", None, "50", "40"], dtype=object),
            "city": np.array(["paris", "london", None, "paris"], dtype=object)}
    pre = TablePreprocessor().fit(cols)
    assert pre.feature_names_out_ == ["age", "city=london", "city=paris"]
    x = pre.transform(cols)
    # age: median 40 imputed, then standardised with the imputed training mean/std
    filled = np.array([30, 40, 50, 40.0])
    assert np.allclose(x[:, 0], (filled - filled.mean()) / filled.std())
    # city: missing -> most frequent training category (paris)
    assert x[:, 1:].tolist() == [[0, 1], [1, 0], [0, 1], [0, 1]]
    again = TablePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert np.array_equal(again.transform(cols), x)
    unseen = again.transform({"age": np.array(["x1"], dtype=object)[:0], "city": np.array([], dtype=object)})
    assert unseen.shape == (0, 3)
    out = again.transform({"age": np.array(["1"], dtype=object), "city": np.array(["rome"], dtype=object)})
    assert out[0, 1:].tolist() == [0, 0] and again.last_unknown == {"city": 1}
    with pytest.raises(TableColumnsError, match=r"lacks columns \['city'\]"):
        again.transform({"age": np.array(["1"], dtype=object)})
    with pytest.raises(TableColumnsError, match=r"has columns \['zip'\]"):
        again.transform({"age": np.array(["1"], dtype=object), "city": np.array(["a"], dtype=object),
                         "zip": np.array(["1"], dtype=object)})
    with pytest.raises(DataSourceError, match="numeric in training"):
        again.transform({"age": np.array(["old"], dtype=object), "city": np.array(["a"], dtype=object)})


def test_csv_task_fits_on_train_only_and_predict_applies_same_transform(tmp_path):
    _big_csv(tmp_path / "t.csv")
    cfg = _data_cfg(source="csv", path=str(tmp_path / "t.csv"), target="label", id_column="id",
                    positive_class="fraud", beta=5, min_holdout_positives=5)
    task = build_task(cfg)
    d = task.describe()
    assert task.kind == "table" and task.class_names == ["not_fraud", "fraud"]
    assert d["counts"]["test"] == [30, 10] and d["counts"]["val"] == [30, 10]
    assert d["counts"]["train"] == [90, 18]
    pre = d["preprocessing"]
    assert [c["name"] for c in pre["columns"]] == ["age", "city", "income"]
    assert pre["feature_names_out"] == ["age", "city=berlin", "city=london", "city=paris", "income"]
    assert d["normalization"]["mean"] == [0.0] * 5  # already standardised by the preprocessor
    # the statistics come from the training rows only
    raw = np.genfromtxt(tmp_path / "t.csv", delimiter=",", skip_header=1, usecols=3)
    assert pre["columns"][2]["mean"] == pytest.approx(raw[task.indices.train].mean())
    assert pre["columns"][2]["mean"] != pytest.approx(raw.mean())
    # predict on the same rows (without the target column) reproduces the training inputs exactly
    lines = (tmp_path / "t.csv").read_text().splitlines()
    keep = [lines[0]] + [lines[1 + i] for i in task.indices.val]
    (tmp_path / "p.csv").write_text("\n".join(",".join(r.split(",")[:4]) for r in keep) + "\n")
    data = json.loads(json.dumps(d))  # as read back from data.json
    ids, x = read_predict_table(tmp_path / "p.csv", data)
    assert ids == [f"r{i}" for i in task.indices.val]
    assert torch.equal(x, task.val.x)
    (tmp_path / "q.csv").write_text("id,age,town,income\nr1,3,paris,4\n")
    with pytest.raises(TableColumnsError, match=r"lacks columns \['city'\] and has columns \['town'\]"):
        read_predict_table(tmp_path / "q.csv", data)


def test_csv_bad_inputs(tmp_path):
    (tmp_path / "t.csv").write_text(CSV)
    with pytest.raises(DataSourceError, match=r"target column 'lbl' does not exist; columns: \['id', 'age'"):
        load_table(tmp_path / "t.csv", target="lbl")
    with pytest.raises(DataSourceError, match="data.target is required"):
        load_table(tmp_path / "t.csv", target=None)
    (tmp_path / "one.csv").write_text("a,y\n1,x\n2,x\n")
    with pytest.raises(DataSourceError, match="single class"):
        load_table(tmp_path / "one.csv", target="y")
    (tmp_path / "gap.csv").write_text("a,y\n1,x\n2,\n3,z\n")
    with pytest.raises(DataSourceError, match=r"missing in 1 row\(s\) \(data rows \[2\]\)"):
        load_table(tmp_path / "gap.csv", target="y")
    (tmp_path / "ragged.csv").write_text("a,y\n1,x,9\n")
    with pytest.raises(DataSourceError, match="data row 1 has 3 fields"):
        load_table(tmp_path / "ragged.csv", target="y")
    pool = load_table(tmp_path / "t.csv", target="label", id_column="id")
    assert pool.class_names == ["no", "yes"] and pool.x is None and pool.columns["age"][1] is None
    with pytest.raises(ConfigError, match="target not used by source 'npz'"):
        config_from_dict({"data": {"source": "npz", "path": "a.npz", "target": "y"}})


def test_parquet_matches_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "t.csv").write_text(CSV)
    table = pa.table({"id": ["r0", "r1", "r2", "r3", "r4"], "age": [30, None, 50, 40, 35],
                      "city": ["paris", "london", None, "paris", "berlin"], "income": [100, 200, 150, None, 120],
                      "label": ["no", "yes", "no", "no", "yes"]})
    pq.write_table(table, tmp_path / "t.parquet")
    a = load_table(tmp_path / "t.csv", target="label", id_column="id")
    b = load_table(tmp_path / "t.parquet", target="label", id_column="id")
    assert a.class_names == b.class_names and a.y.tolist() == b.y.tolist()
    pa_, pb = (TablePreprocessor(ignore=["label", "id"]).fit(p.columns) for p in (a, b))
    assert np.allclose(pa_.transform(a.columns), pb.transform(b.columns))


def test_sklearn_sources_still_load():
    assert load_source("digits").x.shape[1:] == (1, 8, 8)
    assert load_source("breast_cancer").kind == "table"
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("imagenet")


def test_npz_labels_not_0_to_k_map_train_and_test_by_value(tmp_path):
    """Labels {1, 2} without class_names: classes "1", "2" (indices 0, 1) for y AND y_test alike."""
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    np.savez(tmp_path / "v.npz", x=x, y=np.array([1, 2, 2, 1, 2, 2]), x_test=x[:3], y_test=np.array([2, 1, 1]))
    pool = load_npz(tmp_path / "v.npz")
    assert pool.class_names == ["1", "2"] and pool.n_test == 3
    assert pool.y.tolist() == [0, 1, 1, 0, 1, 1] + [1, 0, 0]  # written out by hand: 1 -> 0, 2 -> 1
    # test labels that happen to be valid indices were the silent case: 1 must mean class "1", not index 1
    np.savez(tmp_path / "s.npz", x=x, y=np.array([1, 2, 2, 1, 2, 2]), x_test=x[:2], y_test=np.array([1, 1]))
    assert load_npz(tmp_path / "s.npz").y[-2:].tolist() == [0, 0]
    # through a task: the positive class "2" is label 1 in the source's own test split too
    rng = np.random.default_rng(0)
    y = rng.choice([1, 2], 200, p=[0.7, 0.3])
    y_test = np.array([2] * 15 + [1] * 25)
    np.savez(tmp_path / "w.npz", x=rng.normal(size=(200, 3)), y=y, x_test=rng.normal(size=(40, 3)), y_test=y_test)
    task = build_task(_data_cfg(source="npz", path=str(tmp_path / "w.npz"), positive_class="2", beta=None,
                                val_fraction=0.25, min_holdout_positives=5))
    test_rows = task.indices.test - 200  # the source's own test split follows the 200 training rows
    assert task.test.y.tolist() == (y_test[test_rows] == 2).astype(int).tolist()
    assert task.describe()["counts"]["test"] == [25, 15]
    # a test label never seen in training is refused, by name
    np.savez(tmp_path / "u.npz", x=x, y=np.array([1, 2, 2, 1, 2, 2]), x_test=x[:2], y_test=np.array([2, 3]))
    with pytest.raises(DataSourceError, match=r"y_test.*labels \[3\] never occur in the training labels"):
        load_npz(tmp_path / "u.npz")
    # with class_names, integer labels still index it (train and test alike)
    np.savez(tmp_path / "n.npz", x=x, y=np.array([0, 1, 1, 0, 1, 1]), x_test=x[:2], y_test=np.array([1, 0]),
             class_names=np.array(["neg", "pos"]))
    assert load_npz(tmp_path / "n.npz").y.tolist() == [0, 1, 1, 0, 1, 1, 1, 0]
