"""The CIFAR-10 JPEG archive: a small fake archive for the pipeline, the shared one when it is present."""

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lossdial.config import load_config
from lossdial.data import DataSourceError, build_task
from lossdial.data import cifar_jpeg
from lossdial.data.cifar_jpeg import CLASSES, KNOWN_SHA256, find_archive, load_cifar10_jpeg, sha256_file

REPO = Path(__file__).resolve().parents[1]


def shared_archive() -> Path | None:
    """The shared archive: $LOSSDIAL_CIFAR10_JPEG, else ../shared/data beside the repository."""
    env = os.environ.get("LOSSDIAL_CIFAR10_JPEG")
    for p in ([Path(env)] if env else []) + [Path(__file__).parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"]:
        if p.is_file():
            return p
    return None


SHARED = shared_archive()
needs_archive = pytest.mark.skipif(SHARED is None, reason="the CIFAR-10 JPEG archive is absent (looked at "
                                   "$LOSSDIAL_CIFAR10_JPEG and ../shared/data/cifar10-jpeg.tar.gz)")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSDIAL_CACHE", str(tmp_path / "cache"))


def _fake_archive(path: Path, n_train: int = 3, n_test: int = 2) -> dict[str, np.ndarray]:
    """A tiny archive with the real layout: train|test/<class>/NNNN.jpg (PNG payloads decode exactly)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {}
    with tarfile.open(path, "w:gz") as tf:
        for split, n in (("train", n_train), ("test", n_test)):
            for c in CLASSES:
                for i in reversed(range(n)):  # stored out of order: the loader sorts
                    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(a).save(buf, format="PNG")
                    name = f"{split}/{c}/{i:04d}.jpg"
                    info = tarfile.TarInfo(name)
                    info.size = len(buf.getvalue())
                    tf.addfile(info, io.BytesIO(buf.getvalue()))
                    images[name] = a
    return images


def test_fake_archive_pipeline_cache_and_sha_check(tmp_path):
    arc = tmp_path / "cifar10-jpeg.tar.gz"
    images = _fake_archive(arc)
    with pytest.raises(DataSourceError, match="sha256 .*verify_sha256: false"):
        load_cifar10_jpeg(arc)
    pool = load_cifar10_jpeg(arc, verify_sha256=False)
    assert pool.x.shape == (50, 3, 32, 32) and pool.x.dtype == np.uint8 and pool.n_test == 20
    assert pool.class_names == CLASSES and pool.y[:6].tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(pool.x[0], images["train/airplane/0000.jpg"].transpose(2, 0, 1))
    assert np.array_equal(pool.x[-1], images["test/truck/0001.jpg"].transpose(2, 0, 1))
    assert pool.meta["cache_hit"] is False and pool.meta["cache"].startswith(str(tmp_path / "cache"))
    again = load_cifar10_jpeg(tmp_path, verify_sha256=False)  # a folder holding the archive works too
    assert again.meta["cache_hit"] is True and np.array_equal(again.x, pool.x)
    assert (Path(pool.meta["cache"]) / "meta.json").is_file()


def test_archive_search_order_and_missing_message(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_jpeg, "default_dirs", lambda: [tmp_path / "shared" / "data"])
    monkeypatch.delenv("LOSSDIAL_CIFAR10_JPEG", raising=False)
    with pytest.raises(DataSourceError, match=r"not found; looked in:\n  .*nowhere.tar.gz\n  .*shared/data/cifar10"):
        load_cifar10_jpeg(tmp_path / "nowhere.tar.gz")
    env_arc = tmp_path / "env" / "c.tar.gz"
    env_arc.parent.mkdir()
    env_arc.write_bytes(b"x")
    monkeypatch.setenv("LOSSDIAL_CIFAR10_JPEG", str(env_arc))
    assert find_archive(tmp_path / "nowhere.tar.gz") == env_arc  # the given path first, then the env variable
    (tmp_path / "shared" / "data").mkdir(parents=True)
    dev = tmp_path / "shared" / "data" / "cifar10-jpeg.tar.gz"
    dev.write_bytes(b"y")
    monkeypatch.delenv("LOSSDIAL_CIFAR10_JPEG")
    assert find_archive(None) == dev
    with pytest.raises(DataSourceError, match="damaged or a different archive"):
        load_cifar10_jpeg(None)


@needs_archive
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_shared_archive_checksum_and_layout():
    """Fast: the shared archive's sha256 and the first members decode like PIL."""
    from PIL import Image

    assert sha256_file(SHARED) == KNOWN_SHA256
    dec = cifar_jpeg._decoder()
    with tarfile.open(SHARED, "r:gz") as tf:
        n = 0
        for m in tf:
            if not m.isfile():
                continue
            split, cls, _ = m.name.split("/")
            assert split in ("train", "test") and cls in CLASSES
            data = tf.extractfile(m).read()
            ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
            assert np.array_equal(dec(data), ref)
            n += 1
            if n == 50:
                break


@needs_archive
def test_shared_archive_full_decode_counts_and_cached_load(tmp_path):
    """Decode all 60,000 images once, load the cache (the same pixels and labels, no decoding: its speed is
    measured by benchmarks/data_pipeline.py, not here), then the cat/dog beta = 100 counts of both validation
    modes."""
    pool = load_cifar10_jpeg(SHARED, cache_dir=tmp_path / "c")
    assert pool.x.shape == (60000, 3, 32, 32) and pool.n_test == 10000
    assert np.bincount(pool.y[:50000]).tolist() == [5000] * 10
    again = load_cifar10_jpeg(SHARED, cache_dir=tmp_path / "c")
    assert again.meta["cache_hit"]
    assert np.array_equal(again.x, pool.x) and np.array_equal(again.y, pool.y)
    cfg = REPO / "configs" / "cifar10_cat_dog_beta100.yaml"
    ov = [f"data.cache_dir={tmp_path / 'c'}", f"data.archive={SHARED}"]
    task = build_task(load_config(cfg, ov).data)
    assert task.describe()["counts"] == {"train": [4500, 45], "val": [500, 500], "test": [1000, 1000]}
    task = build_task(load_config(cfg, ov + ["data.val_from=test"]).data)
    assert task.describe()["counts"] == {"train": [5000, 50], "val": [500, 500], "test": [500, 500]}
