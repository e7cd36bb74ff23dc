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
    """Raw inputs (uint8 or float images [N, C, H, W], float tables [N, F]) and 0/1 labels.

    Inputs are *not* normalised: :class:`Normalizer` runs on the fly, on the device, after augmentation.
    """

    x: torch.Tensor
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
    normalizer: Normalizer | None = None
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
            "normalization": self.normalizer.to_dict() if self.normalizer is not None else None,
            "source": self.source_meta,
        }


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
        x = torch.as_tensor(x_train).double()
        axes = (0, 2, 3) if kind == "image" else (0,)
        mean = x.mean(dim=axes)
        std = x.std(dim=axes, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        return cls(mean.tolist(), std.tolist(), kind)

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


def build_task(data_cfg) -> Task:
    """Build the task a :class:`~lossdial.config.DataConfig` describes (deterministic in ``data_cfg.seed``)."""
    pool = load_source(data_cfg.source)
    neg = data_cfg.negative_classes
    labels = binary_labels(pool.y, pool.class_names, data_cfg.positive_class, neg)
    idx = make_splits(labels, val_fraction=data_cfg.val_fraction,
                      test_fraction=None if pool.test is not None else data_cfg.test_fraction,
                      min_holdout_positives=data_cfg.min_holdout_positives, beta=data_cfg.beta,
                      seed=data_cfg.seed)
    norm = Normalizer.fit(pool.x[idx.train], pool.kind)

    def split(ix: np.ndarray) -> Split:
        return Split(x=torch.from_numpy(pool.x[ix].copy()), y=torch.from_numpy(labels[ix].copy()))

    neg_name = "not_" + str(data_cfg.positive_class) if neg is None else "+".join(map(str, neg))
    return Task(train=split(idx.train), val=split(idx.val), test=split(idx.test),
                class_names=[neg_name, str(data_cfg.positive_class)], indices=idx,
                input_shape=tuple(pool.x.shape[1:]), kind=pool.kind, normalizer=norm,
                source_meta=pool.meta)
