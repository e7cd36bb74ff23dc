"""From a data config to the train/val/test tensors of an imbalanced task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossdial.data.images import is_lazy
from lossdial.data.sources import Pool, load_source
from lossdial.data.splits import SplitIndices, binary_labels, make_splits, multiclass_labels


class MultiClassNotSupported(ValueError):
    """A binary-only code path was given a multi-class run (``lossdial.evaluate.run.require_binary``)."""


@dataclass
class Split:
    """Raw inputs (uint8 or float images [N, C, H, W], preprocessed float tables [N, F]) and labels.

    Inputs are *not* normalised: :class:`Normalizer` runs on the fly, on the device, after augmentation.
    """

    x: torch.Tensor  # or a lazy ImageFiles list (data.in_memory: false), decoded per batch
    y: torch.Tensor  # int64, 0/1 (binary) or 0..C-1
    num_classes: int = 2

    def __len__(self) -> int:
        return len(self.y)

    @property
    def counts(self) -> list[int]:
        return torch.bincount(self.y, minlength=self.num_classes).tolist()[:self.num_classes] \
            if len(self.y) else [0] * self.num_classes


@dataclass
class Task:
    train: Split
    val: Split
    test: Split
    class_names: list[str]  # binary: [negative name, positive name]; multiclass: C names, head first
    indices: SplitIndices
    input_shape: tuple[int, ...]
    kind: str
    normalizer: Normalizer | None = None
    source_meta: dict[str, Any] = field(default_factory=dict)
    task_meta: dict[str, Any] = field(default_factory=dict)  # how the labels and splits were built
    preprocessor: Any = None  # TablePreprocessor for CSV/Parquet sources
    raw_input: dict[str, Any] | None = None  # the raw input format predict checks (raw_input_record)
    retrain: Split | None = None  # data.retrain_fraction: carved from the training split, never trained on
    retrain_indices: np.ndarray | None = None  # its pool indices (splits.npz's retrain)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_binary(self) -> bool:
        return self.task_meta.get("task", "binary") == "binary"

    @property
    def class_counts(self) -> list[int]:
        """Training counts per label ([n_neg, n_pos] for binary tasks): what the losses are built with."""
        return self.train.counts

    @property
    def imbalance_ratio(self) -> float:
        c = self.class_counts
        return (c[0] / c[1] if c[1] else float("inf")) if self.is_binary else max(c) / max(1, min(c))

    def describe(self) -> dict[str, Any]:
        """What data.json records: enough for evaluate/predict to rebuild or apply the same inputs."""
        d: dict[str, Any] = {
            "class_names": self.class_names,
            "labels": {str(i): n for i, n in enumerate(self.class_names)},
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "kind": self.kind,
            "dtype": str(self.train.x.dtype).removeprefix("torch."),
            "counts": {s: getattr(self, s).counts for s in ("train", "val", "test")}
            | ({"retrain": self.retrain.counts} if self.retrain is not None else {}),
            "imbalance_ratio": self.imbalance_ratio,
        }
        if self.is_binary:
            n0, n1 = self.class_counts
            d["train_prevalence"] = n1 / (n0 + n1)
        d["normalization"] = self.normalizer.to_dict() if self.normalizer is not None else None
        d["preprocessing"] = self.preprocessor.to_dict() if self.preprocessor is not None else None
        d["task"] = self.task_meta
        d["source"] = self.source_meta
        d["raw_input"] = self.raw_input
        return d


class Normalizer:
    """(x - mean) / std per channel (images) or per feature (tables), on any device, to float32.

    Statistics are fitted on the training split only and saved in the run directory (data.json), so
    evaluation and prediction apply exactly the same transform.
    """

    def __init__(self, mean, std, kind: str):
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.kind = kind
        self._cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, x_train: np.ndarray | torch.Tensor, kind: str) -> "Normalizer":
        x = torch.as_tensor(x_train)
        axes = (0, 2, 3) if kind == "image" else (0,)
        if x.dtype == torch.uint8 and kind == "image":
            # exact per-channel sums in int64, no float64 copy of the whole array
            n = x.shape[0] * x.shape[2] * x.shape[3]
            xs = x.transpose(0, 1).reshape(x.shape[1], -1)
            s1 = xs.sum(dim=1, dtype=torch.int64).double()
            s2 = torch.stack([(c.to(torch.int64) ** 2).sum() for c in xs]).double()
            mean = s1 / n
            std = (s2 / n - mean ** 2).clamp_min(0).sqrt()
        else:
            x = x.double()
            mean = x.mean(dim=axes)
            std = x.std(dim=axes, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        return cls(mean.tolist(), std.tolist(), kind)

    @classmethod
    def fit_sample(cls, images, kind: str, seed: int, max_images: int = 2048) -> "Normalizer":
        """Fit on a seeded random sample of at most ``max_images`` of a lazy image list (decoding a whole
        photo folder just for two statistics per channel would cost a full pass over the data)."""
        n = len(images)
        if n <= max_images:
            return cls.fit(images.load(), kind)
        rng = np.random.default_rng([seed, 0x4E0E])
        pick = np.sort(rng.choice(n, size=max_images, replace=False))
        return cls.fit(images[pick].load(), kind)

    @classmethod
    def identity(cls, n: int, kind: str) -> "Normalizer":
        return cls([0.0] * n, [1.0] * n, kind)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = x.device
        if key not in self._cache:
            shape = (1, -1, 1, 1) if self.kind == "image" else (1, -1)
            self._cache[key] = (torch.tensor(self.mean, device=x.device).view(shape),
                                torch.tensor(self.std, device=x.device).view(shape))
        mean, std = self._cache[key]
        return (x.float() - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(d["mean"], d["std"], d["kind"])


RAW_INPUT_VERSION = 1


def dtype_kind(dtype) -> str:
    """"integer" (bool, signed, unsigned), "float", or "other" (strings, objects) for a NumPy or torch dtype:
    what ``lossdial predict`` compares, the kind of number and not its width."""
    if isinstance(dtype, torch.dtype):
        return "float" if dtype.is_floating_point else "other" if dtype.is_complex else "integer"
    k = np.dtype(dtype).kind
    return "integer" if k in "iub" else "float" if k == "f" else "other"


def _finite_range(a, axis=None):
    """[min, max] over the finite values of ``a`` (a list of them per column with ``axis=0``); None where
    there are none. Works in ``a``'s own dtype (no float64 copy of a large uint8 image array)."""
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if axis is not None:
        return [_finite_range(a[:, j]) for j in range(a.shape[1])]
    if a.size == 0:
        return None
    if a.dtype.kind == "f":
        ok = np.isfinite(a)
        if not ok.all():
            if not ok.any():
                return None
            a = a[ok]
    return [float(a.min()), float(a.max())]


def raw_input_record(pool: Pool, x_train, preprocessor=None, train_columns=None) -> dict[str, Any]:
    """The raw input format of a task, recorded in ``data.json`` as ``raw_input``: what ``lossdial predict``
    checks new inputs against (``lossdial.predict.read_inputs``).

    Arrays (images, NPZ tables): ``kind``, per-sample ``shape``, the source's own ``dtype`` before any cast
    and its ``dtype_kind`` (integer/float), ``value_range`` [min, max] over the training split (for images
    decoded lazily: the uint8 scale, [0, 255]); images add ``channels``, ``pixel_max``, ``image_size`` (the
    [height, width] of ``data.image_size`` when the run resized its images, else null) and ``decoded_as``
    (``"L"``/``"RGB"`` when the source decoded image files itself); NPZ tables add ``feature_ranges``.
    CSV/Parquet tables (``x_train`` unused): ``columns`` and the [min, max] of each numeric column over the
    training rows (``column_ranges``; ``train_columns`` are those rows' raw columns).
    """
    rec: dict[str, Any] = {"version": RAW_INPUT_VERSION, "kind": pool.kind, "range_of": "training split"}
    if pool.x is None:
        from lossdial.data.tabular import numeric_values

        rec.update({"format": "columns", "columns": [c["name"] for c in preprocessor.columns_],
                    "column_ranges": {c["name"]: _finite_range(numeric_values(train_columns[c["name"]]))
                                      for c in preprocessor.columns_ if c["type"] == "numeric"}})
        return rec
    raw_dtype = pool.meta.get("raw_dtype", str(pool.x.dtype).removeprefix("torch."))
    rec.update({"format": "array", "shape": [int(v) for v in pool.x.shape[1:]], "dtype": raw_dtype,
                "dtype_kind": dtype_kind(raw_dtype)})
    if is_lazy(x_train):
        rec["value_range"], rec["range_of"] = [0.0, 255.0], "the uint8 pixel scale (images decoded lazily)"
    else:
        rec["value_range"] = _finite_range(x_train)
    if pool.kind == "image":
        rec.update({"channels": int(pool.x.shape[1]), "pixel_max": pool.meta.get("pixel_max"),
                    "image_size": pool.meta.get("image_size"), "decoded_as": pool.meta.get("decoded_as")})
    else:
        rec["feature_ranges"] = _finite_range(x_train, axis=0)
    return rec


def resolved_val_fraction(data_cfg, has_test: bool) -> float:
    """The validation share: explicit, else 0.5 of the test split (val_from: test), 0.1 of the training
    pool when the source has its own test split, 0.2 otherwise."""
    if data_cfg.val_fraction is not None:
        return float(data_cfg.val_fraction)
    if data_cfg.val_from == "test":
        return 0.5
    return 0.1 if has_test else 0.2


def task_labels(pool: Pool, data_cfg) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """(labels over the pool, the task's class names, task metadata) for a binary or multi-class task."""
    if data_cfg.task == "multiclass":
        labels, names = multiclass_labels(pool.y, pool.class_names, data_cfg.classes)
        meta = {"task": "multiclass", "classes": names, "profile": data_cfg.profile}
        if data_cfg.profile == "step":
            meta["step_fraction"] = data_cfg.step_fraction
        return labels, names, meta
    positives = data_cfg.positives
    neg = data_cfg.negative_classes
    shorthand = data_cfg.positive_classes is None
    labels = binary_labels(pool.y, pool.class_names, positives[0] if shorthand else positives, neg)
    pos_name = "+".join(positives)
    neg_name = ("not_" + pos_name) if neg is None else "+".join(map(str, neg))
    negatives = [c for c in pool.class_names if c not in positives] if neg is None else [str(c) for c in neg]
    meta = {"task": "binary", "positive_classes": positives, "negative_classes": negatives}
    return labels, [neg_name, pos_name], meta


def build_task(data_cfg) -> Task:
    """Build the task a :class:`~lossdial.config.DataConfig` describes (deterministic in ``data_cfg.seed``)."""
    pool = load_source(data_cfg)
    labels, names, tmeta = task_labels(pool, data_cfg)
    val_fraction = resolved_val_fraction(data_cfg, pool.has_test)
    multiclass = data_cfg.task == "multiclass"
    idx = make_splits(labels, val_fraction=val_fraction,
                      test_fraction=None if pool.has_test else data_cfg.test_fraction,
                      min_holdout_positives=data_cfg.min_holdout_positives, beta=data_cfg.beta,
                      seed=data_cfg.seed, n_test_external=pool.n_test, val_from=data_cfg.val_from,
                      num_classes=len(names), profile=data_cfg.profile if multiclass else "binary",
                      step_fraction=data_cfg.step_fraction, class_names=names)
    retrain_ix = None
    if data_cfg.retrain_fraction > 0:
        idx, retrain_ix = carve_retrain(idx, labels, data_cfg.retrain_fraction, data_cfg.seed, names)
    tmeta.update({"beta": data_cfg.beta, "val_from": data_cfg.val_from, "val_fraction": val_fraction,
                  "test_fraction": None if pool.has_test else data_cfg.test_fraction,
                  "min_holdout_positives": data_cfg.min_holdout_positives, "seed": data_cfg.seed,
                  "test_split": "the source's own" if pool.has_test and data_cfg.val_from == "train"
                  else "the source's own minus validation" if pool.has_test else "stratified holdout",
                  "index_space": (f"rows 0..{len(pool) - pool.n_test - 1} are the source's training pool, "
                                  f"rows {len(pool) - pool.n_test}..{len(pool) - 1} its own test split")
                  if pool.has_test else f"rows 0..{len(pool) - 1} of the source"})

    preprocessor = None
    if pool.x is None:  # a raw table: fit the preprocessing on the training rows only
        from lossdial.data.tabular import make_preprocessor

        preprocessor = make_preprocessor(pool)
        preprocessor.fit({k: v[idx.train] for k, v in pool.columns.items()})
        x_all = preprocessor.transform(pool.columns)
        norm = Normalizer.identity(x_all.shape[1], "table")  # already standardised by the preprocessor
        input_shape: tuple[int, ...] = (x_all.shape[1],)
    else:
        x_all = pool.x
        norm = (Normalizer.fit_sample(x_all[idx.train], pool.kind, data_cfg.seed) if is_lazy(x_all)
                else Normalizer.fit(x_all[idx.train], pool.kind))
        input_shape = tuple(pool.x.shape[1:])

    def split(ix: np.ndarray) -> Split:
        if is_lazy(x_all):  # ImageFiles (data.in_memory: false): decoded per batch
            return Split(x=x_all[ix], y=torch.from_numpy(labels[ix].copy()), num_classes=len(names))
        # .copy() gives canonical C strides even for size-1 dims (np.ascontiguousarray keeps e.g. a
        # channels-last-looking stride of a [N, 1, H, W] view, which sends convolutions down another kernel)
        return Split(x=torch.from_numpy(x_all[ix].copy()), y=torch.from_numpy(labels[ix].copy()),
                     num_classes=len(names))

    train = split(idx.train)
    raw = (raw_input_record(pool, None, preprocessor, {k: v[idx.train] for k, v in pool.columns.items()})
           if pool.x is None else raw_input_record(pool, train.x))
    if retrain_ix is not None:
        tmeta["retrain_fraction"] = data_cfg.retrain_fraction
    return Task(train=train, val=split(idx.val), test=split(idx.test), class_names=names,
                indices=idx, input_shape=input_shape, kind=pool.kind, normalizer=norm, source_meta=pool.meta,
                task_meta=tmeta, preprocessor=preprocessor, raw_input=raw,
                retrain=None if retrain_ix is None else split(retrain_ix), retrain_indices=retrain_ix)


def carve_retrain(idx: SplitIndices, labels: np.ndarray, fraction: float, seed: int, names: list[str]
                  ) -> tuple[SplitIndices, np.ndarray]:
    """(indices with a smaller training split, retraining indices): ``floor(fraction * n_c)`` of every class
    ``c`` of the training split, drawn with the data seed, held out from training (``data.retrain_fraction``)."""
    rng = np.random.default_rng([int(seed), 0x7E7A])
    keep, carved = [], []
    for c in range(len(names)):
        ix = idx.train[labels[idx.train] == c]
        ix = ix[rng.permutation(len(ix))]
        m = int(np.floor(fraction * len(ix)))
        if m == 0 or m == len(ix):
            raise ValueError(f"data.retrain_fraction={fraction:g} leaves class {names[c]!r} ({len(ix)} training "
                             f"samples) with no sample {'to retrain on' if m == 0 else 'to train on'}; choose a "
                             f"fraction between {1 / len(ix) if len(ix) else 0:.3g} and "
                             f"{(len(ix) - 1) / len(ix) if len(ix) else 0:.3g}")
        carved.append(ix[:m])
        keep.append(ix[m:])
    return (SplitIndices(train=np.sort(np.concatenate(keep)), val=idx.val, test=idx.test),
            np.sort(np.concatenate(carved)))
