"""From a data config to train/val/test tensors of an imbalanced binary task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossdial.data.sources import load_source
from lossdial.data.splits import SplitIndices, binary_labels, make_splits


@dataclass
class Split:
    x: torch.Tensor  # float32, already normalised
    y: torch.Tensor  # int64, 0/1

    def __len__(self) -> int:
        return len(self.y)

    @property
    def counts(self) -> list[int]:
        return [int((self.y == c).sum()) for c in (0, 1)]


@dataclass
class Task:
    train: Split
    val: Split
    test: Split
    class_names: list[str]  # [negative name, positive name]
    indices: SplitIndices
    input_shape: tuple[int, ...]
    kind: str
    normalization: dict[str, Any] = field(default_factory=dict)
    source_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def class_counts(self) -> list[int]:
        """Training counts [n_neg, n_pos]: what the losses are built with."""
        return self.train.counts

    def describe(self) -> dict[str, Any]:
        n0, n1 = self.class_counts
        return {
            "class_names": self.class_names,
            "labels": {"0": self.class_names[0], "1": self.class_names[1]},
            "input_shape": list(self.input_shape),
            "kind": self.kind,
            "counts": {s: getattr(self, s).counts for s in ("train", "val", "test")},
            "imbalance_ratio": n0 / n1,
            "train_prevalence": n1 / (n0 + n1),
            "normalization": self.normalization,
            "source": self.source_meta,
        }


def _normalizer(x_train: np.ndarray, kind: str) -> dict[str, Any]:
    if kind == "image":  # per-channel mean/std over the training split
        axes = (0, 2, 3)
        mean = x_train.mean(axis=axes)
        std = x_train.std(axis=axes)
    else:  # per-feature standardisation
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return {"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist(), "kind": kind}


def apply_normalization(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    if norm["kind"] == "image":
        mean, std = mean[None, :, None, None], std[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def build_task(data_cfg) -> Task:
    """Build the task a :class:`~lossdial.config.DataConfig` describes (deterministic in ``data_cfg.seed``)."""
    pool = load_source(data_cfg.source)
    neg = data_cfg.negative_classes
    labels = binary_labels(pool.y, pool.class_names, data_cfg.positive_class, neg)
    idx = make_splits(labels, val_fraction=data_cfg.val_fraction,
                      test_fraction=None if pool.test is not None else data_cfg.test_fraction,
                      min_holdout_positives=data_cfg.min_holdout_positives, beta=data_cfg.beta,
                      seed=data_cfg.seed)
    norm = _normalizer(pool.x[idx.train], pool.kind)

    def split(ix: np.ndarray) -> Split:
        return Split(x=torch.from_numpy(apply_normalization(pool.x[ix], norm)),
                     y=torch.from_numpy(labels[ix].copy()))

    neg_name = "not_" + str(data_cfg.positive_class) if neg is None else "+".join(map(str, neg))
    return Task(train=split(idx.train), val=split(idx.val), test=split(idx.test),
                class_names=[neg_name, str(data_cfg.positive_class)], indices=idx,
                input_shape=tuple(pool.x.shape[1:]), kind=pool.kind, normalization=norm,
                source_meta=pool.meta)
