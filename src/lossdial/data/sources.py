"""Data sources: each reads one kind of input into a :class:`Pool` of samples with named classes.

Every source is a plain Python function with explicit arguments (usable without a config) and an entry in
:data:`SOURCES`, which maps the config's ``data.source`` name to an adapter reading the
:class:`~lossdial.config.DataConfig` fields that source uses (see ``docs/DATA.md``):

================  ======================================================  ==================================
``data.source``   function                                                config fields
================  ======================================================  ==================================
``digits``        :func:`load_sklearn` ("digits")                          --
``breast_cancer`` :func:`load_sklearn` ("breast_cancer")                   --
``image_folder``  :func:`lossdial.data.images.load_image_folder`           path, test_path, image_size,
                                                                          channels, skip_bad_images, cache,
                                                                          cache_dir, in_memory
``cifar10``       :func:`load_cifar_pickles` (``cifar-10-batches-py/``)     path
``cifar100``      :func:`load_cifar_pickles` (``cifar-100-python/``)        path, coarse_labels
``cifar10_jpeg``  :func:`lossdial.data.cifar_jpeg.load_cifar10_jpeg`       archive, verify_sha256, cache,
                                                                          cache_dir
``npz``           :func:`load_npz`                                         path
``csv``           :func:`lossdial.data.tabular.load_table`                 path, test_path, target, features,
``parquet``                                                               categorical, id_column
================  ======================================================  ==================================

A pool holds the training pool first and, when the source has its own test split (CIFAR, an image folder
or table with ``test_path``, an NPZ with ``x_test``), that split in its last ``n_test`` rows: the indices in
``splits.npz`` index this concatenation.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


class DataSourceError(ValueError):
    """A data source cannot be read as configured; the message names the file or field and the fix."""


@dataclass
class Pool:
    """All samples of a source.

    ``x`` is uint8 or float32 images [N, C, H, W], or float32 tables [N, F]; it is ``None`` for raw tables
    (CSV/Parquet), whose ``columns`` are preprocessed only after the split (fitted on the training rows).
    """

    x: np.ndarray | None
    y: np.ndarray  # int64 class indices into class_names
    class_names: list[str]
    kind: str  # "image" or "table"
    n_test: int = 0  # the last n_test rows are the source's own test split
    columns: dict[str, np.ndarray] | None = None  # raw table columns (object arrays, None = missing)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.x) if self.x is not None else (len(next(iter(self.columns.values()))) if self.columns else 0)
        if n != len(self.y):
            raise ValueError(f"x has {n} rows but y has {len(self.y)}")
        if not 0 <= self.n_test <= len(self.y):
            raise ValueError(f"n_test={self.n_test} outside [0, {len(self.y)}]")
        self.y = np.asarray(self.y, dtype=np.int64)
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            bad = sorted(set(int(v) for v in self.y[(self.y < 0) | (self.y >= len(self.class_names))]))[:5]
            raise DataSourceError(f"labels {bad} fall outside the class list ({len(self.class_names)} classes: "
                                  f"{self.class_names}); fix the labels or the class names")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def has_test(self) -> bool:
        return self.n_test > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:]) if self.x is not None else ()

    @staticmethod
    def concat(train: "Pool", test: "Pool | None", meta: dict[str, Any] | None = None) -> "Pool":
        """One pool from a training pool and the source's own test pool (test rows last)."""
        if test is None:
            return train
        if test.class_names != train.class_names:
            missing = sorted(set(test.class_names) - set(train.class_names))
            if missing:
                raise DataSourceError(f"the test split has classes {missing} that the training split lacks")
            remap = np.array([train.class_names.index(c) for c in test.class_names], dtype=np.int64)
            test = Pool(x=test.x, y=remap[test.y], class_names=train.class_names, kind=test.kind,
                        columns=test.columns, meta=test.meta)
        if train.x is not None:
            if train.x.shape[1:] != test.x.shape[1:]:
                raise DataSourceError(f"the test split has per-sample shape {list(test.x.shape[1:])} but the "
                                      f"training split has {list(train.x.shape[1:])}")
            from lossdial.data.images import is_lazy

            x = (train.x.concat(test.x) if is_lazy(train.x)
                 else np.concatenate([train.x, test.x.astype(train.x.dtype, copy=False)]))
            cols = None
        else:
            x = None
            cols = {k: np.concatenate([v, test.columns[k]]) for k, v in train.columns.items()
                    if k in test.columns}
        return Pool(x=x, y=np.concatenate([train.y, test.y]), class_names=train.class_names, kind=train.kind,
                    n_test=len(test), columns=cols, meta=meta if meta is not None else train.meta)


def require_path(value: str | Path | None, field_name: str, what: str) -> Path:
    """The configured path, or a clear error when it is unset or missing."""
    if value is None or str(value) == "":
        raise DataSourceError(f"data.{field_name} is required: the {what}")
    p = Path(value).expanduser()
    if not p.exists():
        raise DataSourceError(f"data.{field_name}: {p} does not exist (the {what}); check the path (relative "
                              f"paths are relative to the working directory {Path.cwd()})")
    return p


# --------------------------------------------------------------------------------------------------------
# scikit-learn bundled sets (no download)

def load_sklearn(name: str) -> Pool:
    """scikit-learn's bundled ``digits`` ([N, 1, 8, 8] floats in [0, 1]) or ``breast_cancer`` (30 features)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N, 1, 8, 8] in [0, 1]
        return Pool(x=x, y=d.target.astype(np.int64), class_names=[str(c) for c in d.target_names],
                    kind="image", meta={"name": "sklearn digits", "shape": [1, 8, 8], "pixel_max": 1.0})
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        return Pool(x=d.data.astype(np.float32), y=d.target.astype(np.int64),
                    class_names=[str(c) for c in d.target_names], kind="table",
                    meta={"name": "sklearn breast_cancer", "features": [str(f) for f in d.feature_names]})
    raise DataSourceError(f"unknown scikit-learn set {name!r}; bundled: digits, breast_cancer")


# --------------------------------------------------------------------------------------------------------
# NPZ arrays

def _labels_from_array(y: np.ndarray, class_names: list[str] | None, where: str, *,
                       by_value: bool = False) -> tuple[np.ndarray, list[str]]:
    """Map an integer or string label array to class indices and names, checking the class list.

    Without ``class_names`` the classes are the sorted distinct values of ``y`` (e.g. labels {1, 2} become
    classes "1", "2" with indices 0, 1). ``by_value=True`` maps ``y`` through ``class_names`` *by value*:
    the names were derived that way from the training labels, and the test labels must be mapped the same
    way (a value never seen in training is an error); otherwise integer labels index ``class_names``.
    """
    if y.ndim != 1:
        raise DataSourceError(f"{where}: y must be one label per sample (1-D), got shape {list(y.shape)}")
    if y.dtype.kind in "US":
        vals = np.array([str(v) for v in y])
        names = list(class_names) if class_names is not None else sorted(set(vals.tolist()))
        bad = sorted(set(vals.tolist()) - set(names))
        if bad:
            if by_value:
                raise DataSourceError(f"{where}: labels {bad[:5]} never occur in the training labels y (classes "
                                      f"{names}); every test label must be a training class")
            raise DataSourceError(f"{where}: labels {bad[:5]} are not in class_names {names}; fix the labels or "
                                  f"add them to class_names")
        lut = {n: i for i, n in enumerate(names)}
        return np.array([lut[v] for v in vals], dtype=np.int64), names
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataSourceError(f"{where}: y holds non-integer labels; use integer class indices or strings")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise DataSourceError(f"{where}: y has dtype {y.dtype}; use integer class indices or strings")
    y = y.astype(np.int64)
    if class_names is None:
        uniq = np.unique(y)
        return np.searchsorted(uniq, y).astype(np.int64), [str(int(v)) for v in uniq]
    if by_value:
        lut = {n: i for i, n in enumerate(class_names)}
        bad = sorted(int(v) for v in np.unique(y) if str(int(v)) not in lut)
        if bad:
            raise DataSourceError(f"{where}: labels {bad[:5]} never occur in the training labels y (classes "
                                  f"{list(class_names)}); every test label must be a training class")
        return np.array([lut[str(int(v))] for v in y], dtype=np.int64), list(class_names)
    bad = sorted(set(int(v) for v in np.unique(y) if v < 0 or v >= len(class_names)))
    if bad:
        raise DataSourceError(f"{where}: labels {bad[:5]} fall outside class_names ({len(class_names)} classes: "
                              f"{list(class_names)}); labels must be 0..{len(class_names) - 1}")
    return y, list(class_names)


def _npz_images(x: np.ndarray, where: str) -> tuple[np.ndarray, str, dict]:
    """(x in [N, C, H, W] or [N, F], kind, meta) from an NPZ array (``lossdial predict`` reads its .npz
    inputs with this same function). ``meta["raw_dtype"]``: x's dtype before any cast to float32."""
    meta: dict[str, Any] = {"raw_dtype": str(x.dtype)}
    if x.ndim == 2:
        if x.dtype.kind not in "fiub":
            raise DataSourceError(f"{where}: x has dtype {x.dtype}; a table must be numeric (use a CSV for "
                                  f"categorical columns)")
        return x.astype(np.float32), "table", meta
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        meta["transposed_from"] = "NHWC"
    elif x.ndim != 4:
        raise DataSourceError(f"{where}: x has shape {list(x.shape)}; expected [N, F] (table), [N, H, W], "
                              f"[N, C, H, W] or [N, H, W, C] (images)")
    if x.dtype == np.uint8:
        meta["pixel_max"] = 255.0
        return x, "image", meta
    if x.dtype.kind not in "fiu":
        raise DataSourceError(f"{where}: image array x has dtype {x.dtype}; use uint8 or float")
    x = x.astype(np.float32)
    meta["pixel_max"] = 1.0 if (x.size == 0 or float(x.max()) <= 1.0) else 255.0
    return x, "image", meta


def load_npz(path: str | Path) -> Pool:
    """An ``.npz`` with arrays ``x`` and ``y`` and optionally ``class_names`` (strings, indexed by integer ``y``)
    and ``x_test``/``y_test`` (the source's own test split).

    ``x``: [N, F] -> a table; [N, H, W], [N, C, H, W] or [N, H, W, C] -> images (uint8 kept as uint8).
    ``y``: integer class indices (into ``class_names`` when given) or strings (the class names themselves).
    """
    p = require_path(path, "path", ".npz file with arrays x and y")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a user-facing data error
        raise DataSourceError(f"data.path: cannot read {p} as .npz ({exc})") from exc
    keys = list(z.keys())
    for k in ("x", "y"):
        if k not in keys:
            raise DataSourceError(f"{p} has arrays {keys}; a lossdial .npz needs 'x' (inputs) and 'y' (labels)")
    names = [str(c) for c in z["class_names"].tolist()] if "class_names" in keys else None
    x, kind, meta = _npz_images(z["x"], str(p))
    y, names = _labels_from_array(z["y"], names, f"{p} (y)")
    if len(x) != len(y):
        raise DataSourceError(f"{p}: x has {len(x)} samples but y has {len(y)}")
    pool = Pool(x=x, y=y, class_names=names, kind=kind)
    test = None
    if "x_test" in keys or "y_test" in keys:
        if not ("x_test" in keys and "y_test" in keys):
            raise DataSourceError(f"{p}: give both x_test and y_test (or neither)")
        xt, _, _ = _npz_images(z["x_test"], f"{p} (x_test)")
        if xt.dtype != x.dtype:
            xt = xt.astype(x.dtype)
        # without a class_names array the classes are y's values: map y_test by value too, not as indices
        yt, names_t = _labels_from_array(z["y_test"], names, f"{p} (y_test)", by_value="class_names" not in keys)
        test = Pool(x=xt, y=yt, class_names=names_t, kind=kind)
    meta.update({"name": "npz", "path": str(p.resolve()), "shape": list(x.shape[1:])})
    return Pool.concat(pool, test, meta) if test is not None else Pool(x=x, y=y, class_names=names, kind=kind,
                                                                      meta=meta)


# --------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python pickles

class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch dictionaries only: builtins and numpy arrays, nothing that runs code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_cifar_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataSourceError(f"missing CIFAR file {path}; the folder must hold the python-pickle layout "
                              f"(data_batch_1..5, test_batch, batches.meta for CIFAR-10; train, test, meta for "
                              f"CIFAR-100) as unpacked from cifar-*-python.tar.gz")
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001
        raise DataSourceError(f"cannot read CIFAR batch {path}: {exc}") from exc
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_images(d: dict, path: Path) -> np.ndarray:
    data = np.asarray(d.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataSourceError(f"{path}: 'data' has shape {list(data.shape)}, expected [N, 3072] (32x32 RGB)")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)


def load_cifar_pickles(path: str | Path, dataset: str = "cifar10", *, coarse_labels: bool = False) -> Pool:
    """CIFAR-10 (``cifar-10-batches-py/``) or CIFAR-100 (``cifar-100-python/``) from the python pickles.

    ``path`` is that folder or its parent. Images stay uint8 [N, 3, 32, 32]; the test batch becomes the
    source's own test split. CIFAR-100 uses the 100 fine labels unless ``coarse_labels``.
    """
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[dataset]
    p = require_path(path, "path", f"folder holding {sub}/")
    root = p / sub if (p / sub).is_dir() else p
    if dataset == "cifar10":
        meta = _read_cifar_batch(root / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
        xs, ys = [], []
        for i in range(1, 6):
            d = _read_cifar_batch(root / f"data_batch_{i}")
            xs.append(_cifar_images(d, root / f"data_batch_{i}"))
            ys.append(np.asarray(d["labels"], dtype=np.int64))
        t = _read_cifar_batch(root / "test_batch")
        xt, yt = _cifar_images(t, root / "test_batch"), np.asarray(t["labels"], dtype=np.int64)
        x, y = np.concatenate(xs), np.concatenate(ys)
    else:
        meta = _read_cifar_batch(root / "meta")
        key = "coarse_label_names" if coarse_labels else "fine_label_names"
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
        lk = "coarse_labels" if coarse_labels else "fine_labels"
        d = _read_cifar_batch(root / "train")
        t = _read_cifar_batch(root / "test")
        x, y = _cifar_images(d, root / "train"), np.asarray(d[lk], dtype=np.int64)
        xt, yt = _cifar_images(t, root / "test"), np.asarray(t[lk], dtype=np.int64)
    info = {"name": dataset, "path": str(root.resolve()), "shape": [3, 32, 32], "pixel_max": 255.0,
            "n_train_pool": int(len(y)), "n_test": int(len(yt))}
    return Pool.concat(Pool(x=x, y=y, class_names=names, kind="image"),
                       Pool(x=xt, y=yt, class_names=names, kind="image"), info)


# --------------------------------------------------------------------------------------------------------
# The registry: config -> pool

def _from_cfg_image_folder(cfg) -> Pool:
    from lossdial.data.images import load_image_folder

    return load_image_folder(cfg.path, test_path=cfg.test_path, image_size=cfg.image_size, channels=cfg.channels,
                             skip_bad_images=cfg.skip_bad_images, cache=cfg.cache, cache_dir=cfg.cache_dir,
                             in_memory=cfg.in_memory)


def _from_cfg_cifar_jpeg(cfg) -> Pool:
    from lossdial.data.cifar_jpeg import load_cifar10_jpeg

    return load_cifar10_jpeg(cfg.archive, cache=cfg.cache, cache_dir=cfg.cache_dir, verify_sha256=cfg.verify_sha256)


def _from_cfg_table(cfg) -> Pool:
    from lossdial.data.tabular import load_table

    return load_table(cfg.path, target=cfg.target, test_path=cfg.test_path, features=cfg.features,
                      categorical=cfg.categorical, id_column=cfg.id_column, fmt=cfg.source)


SOURCES: dict[str, Callable[[Any], Pool]] = {
    "digits": lambda cfg: load_sklearn("digits"),
    "breast_cancer": lambda cfg: load_sklearn("breast_cancer"),
    "image_folder": _from_cfg_image_folder,
    "cifar10": lambda cfg: load_cifar_pickles(cfg.path, "cifar10"),
    "cifar100": lambda cfg: load_cifar_pickles(cfg.path, "cifar100", coarse_labels=cfg.coarse_labels),
    "cifar10_jpeg": _from_cfg_cifar_jpeg,
    "npz": lambda cfg: load_npz(cfg.path),
    "csv": _from_cfg_table,
    "parquet": _from_cfg_table,
}


def load_source(source) -> Pool:
    """The pool a :class:`~lossdial.config.DataConfig` (or a bare source name such as ``"digits"``) describes."""
    if isinstance(source, str):
        if source not in SOURCES:
            _unknown(source)
        from lossdial.config import DataConfig

        source = DataConfig(source=source)
    if source.source not in SOURCES:
        _unknown(source.source)
    return SOURCES[source.source](source)


def _unknown(name: str):
    raise ValueError(f"unknown data source {name!r}; available: {sorted(SOURCES)}")
