"""An in-memory batch loader (augmentation lives in :mod:`lossdial.data.augment`).

The whole split lives in one tensor (on the training device for CIFAR-scale data); each epoch's order
is a permutation drawn from a generator seeded by (seed, epoch), so a run resumed mid-epoch replays
exactly the same batches without saving the permutation.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from lossdial.data.augment import augment_batch, to_device  # noqa: F401  (re-exported for the loop)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers via NumPy's SeedSequence (stable across machines and versions).

    Every bit of every part counts: SeedSequence takes each int whole (as many 32-bit words as it needs), so
    seeds 0 and 2**32 give different streams. Parts below 2**32 give the same seed as before this was fixed.
    """
    ints = [int(p) for p in parts]
    if any(p < 0 for p in ints):
        raise ValueError(f"seeds are non-negative integers, got {ints}")
    a, b = np.random.SeedSequence(ints).generate_state(2)
    return ((int(a) << 32) | int(b)) & ((1 << 63) - 1)


def make_generator(*parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


class EpochOrder:
    """The sample order of each epoch: a permutation seeded by (seed, epoch), shared by every loader."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if n == 0:
            raise ValueError("cannot build a loader over an empty split")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and n >= batch_size

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=make_generator(self.seed, 0x10AD, epoch))


class TensorLoader(EpochOrder):
    """Batches of (x, y) from tensors, shuffled per epoch by a seed-derived permutation.

    Batches come out raw: the training loop augments them on their device (``augments_batches``).
    """

    augments_batches = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows, y has {len(y)}")
        super().__init__(len(x), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.x, self.y = x, y

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of `epoch`, skipping the first `start` (used by resume)."""
        perm = to_device(self.order(epoch), self.x.device)
        for b in range(start, len(self)):
            ix = perm[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[ix], self.y[ix]
