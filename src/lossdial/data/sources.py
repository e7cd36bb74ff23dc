"""Data sources: each returns a :class:`Pool` of samples with named classes.

Issue-2 scope: scikit-learn's bundled sets (no download). Image folders, CIFAR, NPZ and CSV sources
plug in through the same :data:`SOURCES` registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Pool:
    """All samples of a source. ``x`` is float32 ([N, C, H, W] images or [N, F] tables)."""

    x: np.ndarray
    y: np.ndarray  # int64 class indices into class_names
    class_names: list[str]
    kind: str  # "image" or "table"
    test: "Pool | None" = None  # the source's own test split, if it has one
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")


def _digits() -> Pool:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N, 1, 8, 8] in [0, 1]
    return Pool(x=x, y=d.target.astype(np.int64), class_names=[str(c) for c in d.target_names], kind="image",
                meta={"name": "sklearn digits", "shape": [1, 8, 8]})


def _breast_cancer() -> Pool:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return Pool(x=d.data.astype(np.float32), y=d.target.astype(np.int64),
                class_names=[str(c) for c in d.target_names], kind="table",
                meta={"name": "sklearn breast_cancer", "features": [str(f) for f in d.feature_names]})


SOURCES: dict[str, Callable[[], Pool]] = {"digits": _digits, "breast_cancer": _breast_cancer}


def load_source(name: str) -> Pool:
    try:
        fn = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown data source {name!r}; available: {sorted(SOURCES)}") from None
    return fn()
