"""Binary task construction, holdouts and tail subsampling.

Order matters (METHODS.md section 2, issue 3): holdouts are carved, stratified, from the full pool
*first*, so validation and test keep the natural class balance; only then is the training positive
class subsampled to floor(n_neg / beta).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def binary_labels(y: np.ndarray, class_names: list[str], positive_class: str,
                  negative_classes: list[str] | None = None) -> np.ndarray:
    """Map class indices to 1 (positive), 0 (negative) or -1 (not in the task)."""
    names = [str(c) for c in class_names]
    if str(positive_class) not in names:
        raise ValueError(f"positive_class {positive_class!r} is not a class of this data; classes: {names}")
    pos = names.index(str(positive_class))
    if negative_classes is None:
        neg = [i for i in range(len(names)) if i != pos]
    else:
        bad = [c for c in negative_classes if str(c) not in names]
        if bad:
            raise ValueError(f"negative_classes {bad} are not classes of this data; classes: {names}")
        neg = [names.index(str(c)) for c in negative_classes]
        if pos in neg:
            raise ValueError(f"class {positive_class!r} is both the positive class and a negative class")
    out = np.full(len(y), -1, dtype=np.int64)
    out[y == pos] = 1
    out[np.isin(y, neg)] = 0
    return out


def _stratified_take(idx_by_class: dict[int, np.ndarray], fraction: float, min_pos: int,
                     full_sizes: dict[int, int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Take `fraction` of each class's full size (>= min_pos positives) from shuffled per-class pools."""
    taken, rest = [], {}
    for c, idx in idx_by_class.items():
        k = int(round(fraction * full_sizes[c]))
        if c == 1:
            k = max(k, min_pos)
        if k >= len(idx):
            raise ValueError(
                f"a holdout needs {k} samples of class {c} but only {len(idx)} remain; lower "
                f"data.min_holdout_positives or the holdout fractions"
            )
        taken.append(idx[:k])
        rest[c] = idx[k:]
    return np.sort(np.concatenate(taken)), rest


def make_splits(labels: np.ndarray, *, val_fraction: float, test_fraction: float | None,
                min_holdout_positives: int, beta: float | None, seed: int,
                n_test_external: int = 0) -> SplitIndices:
    """Holdouts first (stratified, natural balance), then subsample the training positives.

    ``test_fraction=None`` means the source has its own test split (returned ``test`` is empty here).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5911]))
    in_task = np.flatnonzero(labels >= 0)
    by_class = {}
    for c in (0, 1):
        idx = in_task[labels[in_task] == c]
        if len(idx) == 0:
            raise ValueError(f"the task has no {'positive' if c else 'negative'} samples")
        by_class[c] = idx[rng.permutation(len(idx))]
    full = {c: len(v) for c, v in by_class.items()}
    test = np.zeros(0, dtype=np.int64)
    if test_fraction is not None:
        test, by_class = _stratified_take(by_class, test_fraction, min_holdout_positives, full)
    val, by_class = _stratified_take(by_class, val_fraction, min_holdout_positives, full)
    neg, pos = by_class[0], by_class[1]
    if beta is not None:
        n_pos = int(np.floor(len(neg) / beta))
        if n_pos < 1:
            raise ValueError(
                f"beta={beta} leaves floor({len(neg)} / {beta}) = 0 training positives; lower beta "
                f"to at most {len(neg)}"
            )
        if n_pos > len(pos):
            raise ValueError(
                f"beta={beta} asks for {n_pos} training positives but only {len(pos)} remain after the "
                f"holdouts; raise beta to at least {len(neg) / len(pos):.2f} or use beta: null"
            )
        pos = pos[:n_pos]  # already shuffled with the data seed
    train = np.sort(np.concatenate([neg, pos]))
    s = SplitIndices(train=train, val=val, test=test)
    s.check_disjoint()
    return s
