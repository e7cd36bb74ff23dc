"""The CIFAR-10 JPEG archive (``cifar10-jpeg.tar.gz``: ``train|test/<class>/NNNN.jpg``, 32x32 RGB).

First use: the archive's sha256 is checked against the known archive, its 60,000 JPEGs are read straight
from the gzip stream (no 60k-file unpack on disk) and decoded into one uint8 [60000, 3, 32, 32] array
(training images first, in CIFAR label order, then files sorted by name), saved as ``x.npy``/``y.npy`` in
``CACHE/cifar10_jpeg/<sha256[:16]>/``. Later loads read those two files (well under a second).

Where the archive is looked for, in order: ``data.archive`` (a file, or a folder holding
``cifar10-jpeg.tar.gz``), ``$LOSSDIAL_CIFAR10_JPEG``, ``../shared/data/`` relative to the working directory,
and ``shared/data/`` beside the source checkout. If none exists but the cache of the known archive does,
the cache is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np

from lossdial.data.cache import cache_root, cached_arrays, map_chunked
from lossdial.data.sources import DataSourceError, Pool

ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
KNOWN_SHA256 = "d34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965"
ENV_ARCHIVE = "LOSSDIAL_CIFAR10_JPEG"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def default_dirs() -> list[Path]:
    """The developer fallbacks: ../shared/data from the working directory and beside the source checkout."""
    dirs = [Path.cwd().parent / "shared" / "data"]
    here = Path(__file__).resolve().parents
    if len(here) > 4:
        dirs.append(here[4] / "shared" / "data")  # <checkout>/../shared/data for a source checkout
    return dirs


def _candidates(archive: str | Path | None) -> list[Path]:
    c: list[Path] = []
    if archive:
        c.append(Path(archive).expanduser())
    env = os.environ.get(ENV_ARCHIVE)
    if env:
        c.append(Path(env).expanduser())
    c.extend(default_dirs())
    out: list[Path] = []
    for p in c:
        p = p / ARCHIVE_NAME if p.is_dir() or p.suffix == "" else p
        if p not in out:
            out.append(p)
    return out


def find_archive(archive: str | Path | None = None) -> Path | None:
    """The first existing archive among the places searched (see the module doc), or None."""
    for p in _candidates(archive):
        if p.is_file():
            return p
    return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _decode_pil(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _decoder():
    """libjpeg-turbo through torchvision.io (about 4x faster than PIL here, identical pixels), else PIL
    (torchvision >= 0.29 deprecates torchvision.io's decoders; when they go, PIL takes over)."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return _decode_pil

    def dec(data: bytes) -> np.ndarray:
        if not data.startswith(b"\xff\xd8"):
            return _decode_pil(data)
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).numpy()

    return dec


def decode_archive(path: Path, workers: int | None = None) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """(x uint8 [N, 3, 32, 32], y, n_train, info) decoded from the archive's JPEGs."""
    members: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    t0 = time.perf_counter()
    try:
        with tarfile.open(path, "r:gz") as tf:
            for m in tf:
                if not m.isfile() or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                    continue
                parts = Path(m.name).parts
                parts = parts[1:] if parts and parts[0] == "." else parts
                if len(parts) != 3 or parts[0] not in members:
                    raise DataSourceError(f"{path}: unexpected member {m.name!r}; expected train|test/<class>/<file>")
                if parts[1] not in CLASSES:
                    raise DataSourceError(f"{path}: member {m.name!r} is in class folder {parts[1]!r}, not a "
                                          f"CIFAR-10 class ({CLASSES})")
                members[parts[0]].append((parts[1], parts[2], tf.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataSourceError(f"cannot read the CIFAR-10 JPEG archive {path}: {exc}; re-copy it") from exc
    t_read = time.perf_counter() - t0
    xs, ys = [], []
    for split in ("train", "test"):
        items = sorted(members[split], key=lambda t: (CLASSES.index(t[0]), t[1]))
        if not items:
            raise DataSourceError(f"{path} holds no {split}/<class>/*.jpg images")
        dec = _decoder()
        n_workers = workers or 1  # threads do not pay off for 32x32 JPEGs (measured)
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its image decoders in favour of TorchCodec; PIL is the fallback
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
                imgs = map_chunked(dec, [t[2] for t in items], n_workers)
        except Exception as exc:  # noqa: BLE001
            raise DataSourceError(f"{path}: a JPEG failed to decode ({exc}); the archive is damaged, re-copy it") \
                from exc
        bad = next((i for i, a in enumerate(imgs) if a.shape != (3, 32, 32)), None)
        if bad is not None:
            raise DataSourceError(f"{path}: {split}/{items[bad][0]}/{items[bad][1]} has shape "
                                  f"{list(imgs[bad].shape)}, not 3x32x32")
        xs.append(np.stack(imgs))
        ys.append(np.array([CLASSES.index(t[0]) for t in items], dtype=np.int64))
    info = {"read_seconds": round(t_read, 3), "decode_seconds": round(time.perf_counter() - t0 - t_read, 3)}
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), len(ys[0]), info


def load_cifar10_jpeg(archive: str | Path | None = None, *, cache: bool = True, cache_dir: str | Path | None = None,
                      verify_sha256: bool = True, workers: int | None = None) -> Pool:
    """CIFAR-10 from the JPEG archive: uint8 [60000, 3, 32, 32], the last 10,000 rows its own test split."""
    path = find_archive(archive)
    root = cache_root(cache_dir) / "cifar10_jpeg"
    if path is None:
        known = root / KNOWN_SHA256[:16]
        if cache and (known / "meta.json").is_file():
            return _load(None, KNOWN_SHA256, known, cache=True, workers=workers)
        looked = "\n  ".join(str(p) for p in _candidates(archive))
        raise DataSourceError(
            f"the CIFAR-10 JPEG archive ({ARCHIVE_NAME}) was not found; looked in:\n  {looked}\nset data.archive "
            f"to its path or ${ENV_ARCHIVE}")
    digest = sha256_file(path)
    if verify_sha256 and digest != KNOWN_SHA256:
        raise DataSourceError(
            f"{path} has sha256 {digest}, but the CIFAR-10 JPEG archive has {KNOWN_SHA256}: the file is damaged "
            f"or a different archive. Re-copy it, or set data.verify_sha256: false to use it anyway")
    return _load(path, digest, root / digest[:16], cache=cache, workers=workers)


def _load(path: Path | None, digest: str, folder: Path, *, cache: bool, workers: int | None) -> Pool:
    def build():
        t0 = time.perf_counter()
        x, y, n_train, info = decode_archive(path, workers=workers)
        meta = {"archive": str(path.resolve()), "sha256": digest, "classes": CLASSES, "n_train": n_train,
                "n_test": int(len(y) - n_train), "build_seconds": round(time.perf_counter() - t0, 3), **info}
        return {"x": x, "y": y}, meta

    t0 = time.perf_counter()
    if cache:
        arrays, meta, hit = cached_arrays(folder, ["x", "y"], build)
    else:
        arrays, meta = build()
        hit = False
    n_train = int(meta["n_train"])
    info = {"name": "cifar10_jpeg", "archive": str(path.resolve()) if path else meta.get("archive"),
            "sha256": digest, "shape": [3, 32, 32], "pixel_max": 255.0, "decoded_as": "RGB", "n_train_pool": n_train,
            "n_test": int(meta["n_test"]), "cache": str(folder) if cache else None, "cache_hit": hit,
            "build_seconds": meta.get("build_seconds"), "load_seconds": round(time.perf_counter() - t0, 3)}
    x, y = arrays["x"], arrays["y"]
    return Pool(x=x, y=y, class_names=list(meta["classes"]), kind="image", n_test=int(meta["n_test"]), meta=info)
