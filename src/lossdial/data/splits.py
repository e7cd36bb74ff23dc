"""Task labels, holdouts and imbalance construction.

Order matters (METHODS.md section 2, issue 3): holdouts are carved, stratified, from the full pool
*first*, so validation and test keep the natural class balance; only then is the training pool made
imbalanced:

- binary: keep every training negative (head), subsample the positives (tail) to floor(n_neg / beta);
- multi-class long tail: class c (head first) keeps n_c = floor(n_max * beta^(-c/(C-1))) samples
  (``exp``), or n_max for the head classes and floor(n_max / beta) for the last ``step_fraction`` of the
  classes (``step``), where n_max is the smallest class's training count after the holdouts (so every
  class can meet its target; 4500 on CIFAR-10, 5000 with ``val_from="test"``).

The pool's index space is the source's training pool followed by its own test split (the last
``n_test`` rows); the source's own test split is never used for training. All draws come from one
generator seeded by the data seed, so the same seed gives the same indices on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SplitIndices:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def check_disjoint(self) -> None:
        a, b, c = (set(map(int, s)) for s in (self.train, self.val, self.test))
        if a & b or a & c or b & c:
            raise AssertionError("train/val/test indices overlap")


def _check_names(requested: Sequence[str], names: list[str], field: str) -> None:
    bad = [str(c) for c in requested if str(c) not in names]
    if bad:
        raise ValueError(f"{field} {bad} {'is' if len(bad) == 1 else 'are'} not {'a class' if len(bad) == 1 else 'classes'} "
                         f"of this data; classes: {names}")


def binary_labels(y: np.ndarray, class_names: list[str], positive_class: str | Sequence[str],
                  negative_classes: Sequence[str] | None = None) -> np.ndarray:
    """Map class indices to 1 (positive), 0 (negative) or -1 (not in the task).

    ``positive_class`` is one class name or a list of names (e.g. vehicles vs animals); the negatives
    default to every other class.
    """
    names = [str(c) for c in class_names]
    positives = [positive_class] if isinstance(positive_class, str) else list(positive_class)
    field = "positive_class" if isinstance(positive_class, str) else "positive_classes"
    if isinstance(positive_class, str) and str(positive_class) not in names:
        raise ValueError(f"positive_class {positive_class!r} is not a class of this data; classes: {names}")
    _check_names(positives, names, field)
    pos = [names.index(str(c)) for c in positives]
    if negative_classes is None:
        neg = [i for i in range(len(names)) if i not in pos]
    else:
        _check_names(negative_classes, names, "negative_classes")
        neg = [names.index(str(c)) for c in negative_classes]
        both = sorted(names[i] for i in set(pos) & set(neg))
        if both:
            raise ValueError(f"class {both[0]!r} is both the positive class and a negative class")
    out = np.full(len(y), -1, dtype=np.int64)
    out[np.isin(y, pos)] = 1
    out[np.isin(y, neg)] = 0
    return out


def multiclass_labels(y: np.ndarray, class_names: list[str], classes: Sequence[str] | None = None
                      ) -> tuple[np.ndarray, list[str]]:
    """(labels 0..C-1 in the order of ``classes`` -- head first -- or -1, the task's class names)."""
    names = [str(c) for c in class_names]
    if classes is None:
        return np.asarray(y, dtype=np.int64).copy(), names
    _check_names(classes, names, "classes")
    if len(set(map(str, classes))) != len(classes):
        raise ValueError(f"classes {list(classes)} names a class twice")
    lut = np.full(len(names), -1, dtype=np.int64)
    for i, c in enumerate(classes):
        lut[names.index(str(c))] = i
    return lut[np.asarray(y, dtype=np.int64)], [str(c) for c in classes]


def longtail_counts(n_max: int, num_classes: int, beta: float, profile: str = "exp",
                    step_fraction: float = 0.5) -> list[int]:
    """Per-class training counts of a long-tailed profile, head (class 0) first.

    ``exp``: floor(n_max * beta^(-c/(C-1))); ``step``: n_max for the first C - round(step_fraction * C)
    classes (at least one tail class), floor(n_max / beta) for the rest.
    """
    if num_classes < 2:
        raise ValueError("a long-tailed task needs at least two classes")
    if profile == "exp":
        return [int(math.floor(n_max * beta ** (-c / (num_classes - 1)) * (1 + 1e-12)))
                for c in range(num_classes)]
    if profile == "step":
        n_tail = min(num_classes - 1, max(1, int(round(step_fraction * num_classes))))
        tail = int(math.floor(n_max / beta * (1 + 1e-12)))
        return [n_max] * (num_classes - n_tail) + [tail] * n_tail
    raise ValueError(f"unknown long-tail profile {profile!r}; use 'exp' or 'step'")


def _class_word(c: int, class_names: Sequence[str] | None, binary: bool) -> str:
    if binary:
        return "positive" if c == 1 else "negative"
    return f"class {class_names[c]!r}" if class_names is not None else f"class {c}"


def _stratified_take(idx_by_class: dict[int, np.ndarray], fraction: float, min_count: int,
                     full_sizes: dict[int, int], min_classes: set[int], what: str,
                     names) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Take `fraction` of each class's full size (>= min_count for `min_classes`) from shuffled pools."""
    taken, rest = [], {}
    for c, idx in idx_by_class.items():
        k = int(round(fraction * full_sizes[c]))
        if c in min_classes:
            k = max(k, min_count)
        if k >= len(idx):
            raise ValueError(
                f"the {what} holdout needs {k} {names(c)} samples but only {len(idx)} remain; lower "
                f"data.min_holdout_positives or the holdout fractions, or add data")
        taken.append(idx[:k])
        rest[c] = idx[k:]
    return np.sort(np.concatenate(taken)).astype(np.int64), rest


def make_splits(labels: np.ndarray, *, val_fraction: float, test_fraction: float | None,
                min_holdout_positives: int, beta: float | None, seed: int, n_test_external: int = 0,
                val_from: str = "train", num_classes: int = 2, profile: str = "binary",
                step_fraction: float = 0.5, class_names: Sequence[str] | None = None) -> SplitIndices:
    """Holdouts first (stratified, natural balance), then the imbalance of the training split.

    ``labels``: task labels (0..num_classes-1, -1 = not in the task) over the whole pool, whose last
    ``n_test_external`` rows are the source's own test split. Without one, a test holdout of
    ``test_fraction`` is carved from the pool; with one, it is the test split (``val_from="train"``) or is
    split into validation (``val_fraction`` of it) and test (``val_from="test"``).
    ``profile``: ``"binary"`` (subsample the positives to floor(n_neg / beta)), ``"exp"`` or ``"step"``
    (multi-class long tail, see :func:`longtail_counts`). ``beta=None`` keeps the natural balance.
    """
    labels = np.asarray(labels, dtype=np.int64)
    binary = profile == "binary"
    classes = list(range(2 if binary else num_classes))
    names = lambda c: _class_word(c, class_names, binary)  # noqa: E731
    min_classes = {1} if binary else set(classes)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5911]))
    n_pool = len(labels) - n_test_external
    if val_from not in ("train", "test"):
        raise ValueError(f"val_from must be 'train' or 'test', got {val_from!r}")
    if val_from == "test" and n_test_external == 0:
        raise ValueError("val_from: test needs a source with its own test split (CIFAR, an image folder or "
                         "table with test_path, an .npz with x_test); this source has none: use val_from: train")
    pool_idx = np.flatnonzero(labels[:n_pool] >= 0)
    by_class = {}
    for c in classes:
        idx = pool_idx[labels[pool_idx] == c]
        if len(idx) == 0:
            raise ValueError(f"the task has no {names(c)} samples in the training pool")
        by_class[c] = idx[rng.permutation(len(idx))]
    full = {c: len(v) for c, v in by_class.items()}

    if n_test_external:
        test_idx = n_pool + np.flatnonzero(labels[n_pool:] >= 0)
        for c in classes:
            if not np.any(labels[test_idx] == c):
                raise ValueError(f"the source's test split has no {names(c)} samples; the test metrics would be "
                                 f"undefined")
        if val_from == "test":
            test_by = {}
            for c in classes:
                idx = test_idx[labels[test_idx] == c]
                test_by[c] = idx[rng.permutation(len(idx))]
            val, rest = _stratified_take(test_by, val_fraction, min_holdout_positives,
                                         {c: len(v) for c, v in test_by.items()}, min_classes, "validation", names)
            test = np.sort(np.concatenate(list(rest.values()))).astype(np.int64)
        else:
            test = np.sort(test_idx).astype(np.int64)
            val, by_class = _stratified_take(by_class, val_fraction, min_holdout_positives, full, min_classes,
                                             "validation", names)
    else:
        if test_fraction is None:
            raise ValueError("a source without its own test split needs test_fraction")
        test, by_class = _stratified_take(by_class, test_fraction, min_holdout_positives, full, min_classes,
                                          "test", names)
        val, by_class = _stratified_take(by_class, val_fraction, min_holdout_positives, full, min_classes,
                                         "validation", names)

    if beta is not None:
        if binary:
            neg, pos = by_class[0], by_class[1]
            n_pos = int(np.floor(len(neg) / beta))
            if n_pos < 1:
                raise ValueError(
                    f"beta={beta} leaves floor({len(neg)} / {beta}) = 0 training positives; lower beta "
                    f"to at most {len(neg)}")
            if n_pos > len(pos):
                raise ValueError(
                    f"beta={beta} asks for {n_pos} training positives but only {len(pos)} remain after the "
                    f"holdouts; raise beta to at least {len(neg) / len(pos):.2f} or use beta: null")
            by_class[1] = pos[:n_pos]  # already shuffled with the data seed
        else:
            n_max = min(len(v) for v in by_class.values())
            target = longtail_counts(n_max, len(classes), beta, profile, step_fraction)
            zero = [c for c in classes if target[c] < 1]
            if zero:
                more = f" (and {len(zero) - 1} more class{'es' if len(zero) > 2 else ''} with 0)" if len(zero) > 1 else ""
                raise ValueError(  # the rarest class (the last) gets floor(n_max / beta) under both profiles
                    f"beta={beta:g} leaves {names(zero[-1])} with floor({n_max} / {beta:g}) = 0 training samples"
                    f"{more} (n_max = {n_max} after the holdouts); lower data.beta to at most {n_max}, or "
                    f"lower the holdouts (data.val_fraction, data.test_fraction, data.min_holdout_positives)")
            by_class = {c: by_class[c][:target[c]] for c in classes}
    train = np.sort(np.concatenate(list(by_class.values()))).astype(np.int64)
    s = SplitIndices(train=train, val=val, test=test)
    s.check_disjoint()
    return s
