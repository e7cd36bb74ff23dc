"""The standard DataLoader path: images decoded and augmented per item in worker processes.

:class:`StreamingLoader` has the interface of :class:`~lossdial.data.loader.TensorLoader` (``len``,
``order(epoch)``, ``batches(epoch, start)``) and the same per-epoch sample order, but it augments each
image on its own with torchvision transforms v2 (:func:`build_transform`) inside ``torch.utils.data``
workers, collates uint8 batches in pinned memory (on CUDA), and copies them to the device asynchronously.
Use it for data that do not fit in device memory (an image folder of photos with ``data.in_memory: false``);
``lossdial train`` picks it with ``train.loader: stream`` (or ``auto`` for a lazy image folder). It is also
the "standard path" the speed benchmark compares the on-device path with (``to_pil=True``: PIL images
through the transforms, the way the reference implementations train).

Both paths draw from the same distribution: random crop (zero padding, offsets uniform in [0, 2p]), flip
with probability 1/2, TrivialAugment-Wide (14 operations, 31 bins, sign 1/2, nearest interpolation, zero
fill), AutoAugment (CIFAR-10 policy), RandAugment (N = 2, M = 9 of 31) and Random Erasing (fill 0).
``tests/test_streaming.py`` checks operation frequencies and per-operation outputs of the two.

Reproducibility: image ``i`` at position ``k`` of epoch ``e`` is augmented under the seed
``seeds(e)[k]`` (one vectorised draw per epoch), whatever worker handles it, so results do not depend on
``num_workers`` and a run resumed mid-epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lossdial.data.augment import (ERASING_RATIO, ERASING_SCALE, RAND_BINS, RAND_MAGNITUDE, RAND_NUM_OPS,
                                    augment_parts)
from lossdial.data.loader import EpochOrder, make_generator
from lossdial.data.sources import DataSourceError


def build_transform(mode: str, image_hw: Sequence[int], padding: int = 4, *, to_pil: bool = False,
                    erasing: float = 0.0):
    """The torchvision transforms v2 pipeline equal in distribution to :func:`~lossdial.data.augment.augment_batch`.

    Input: a uint8 (or float in [0, 1]) tensor [C, H, W], or a PIL image with ``to_pil=True``; output: a tensor
    [C, H, W] of the input's dtype (uint8 for PIL). ``erasing``: the Random Erasing probability (0: off).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2

    crop, flip, policy = augment_parts(mode)
    if not 0.0 <= erasing <= 1.0:
        raise ValueError(f"the random erasing probability must be in [0, 1], got {erasing}")
    nearest = InterpolationMode.NEAREST
    steps = []
    if crop and padding > 0:
        steps.append(v2.RandomCrop(tuple(int(v) for v in image_hw), padding=padding, fill=0,
                                   padding_mode="constant"))
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if policy == "trivial":
        steps.append(v2.TrivialAugmentWide(num_magnitude_bins=31, interpolation=nearest, fill=None))
    elif policy == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, interpolation=nearest, fill=None))
    elif policy == "randaugment":
        steps.append(v2.RandAugment(num_ops=RAND_NUM_OPS, magnitude=RAND_MAGNITUDE, num_magnitude_bins=RAND_BINS,
                                    interpolation=nearest, fill=None))
    if to_pil:
        steps.append(v2.PILToTensor())
    if erasing > 0:  # on the tensor (torchvision's erase does not take PIL images); fill 0 as the device path
        steps.append(v2.RandomErasing(p=erasing, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=0))
    return v2.Compose(steps) if steps else None


class AugmentedImages(Dataset):
    """Item ``(i, seed)``: image ``i`` (decoded from a file or read from a uint8 array) augmented under ``seed``.

    The seed is applied inside :func:`torch.random.fork_rng`, so with ``num_workers=0`` the caller's global
    RNG (dropout, resume) is left untouched.
    """

    def __init__(self, images, labels: torch.Tensor, transform, *, to_pil: bool = False):
        self.images = images
        self.labels = labels
        self.transform = transform
        self.to_pil = to_pil

    def __len__(self) -> int:
        return len(self.labels)

    def _image(self, i: int):
        a = self.images[i]
        if self.to_pil:
            from PIL import Image

            a = np.asarray(a)
            return Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        return torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = item
        img = self._image(int(i))
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                img = self.transform(img)
        if not isinstance(img, torch.Tensor):  # a PIL image without augmentation
            img = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
            img = img[None] if img.ndim == 2 else img.permute(2, 0, 1)
        return img.contiguous(), self.labels[int(i)]


class _EpochBatches(Sampler):
    """Batches of (index, augmentation seed) of one epoch, from batch ``start`` on (set before iterating).

    It holds plain lists, not the loader: a reference cycle through the DataLoader would leave its worker
    shutdown to the garbage collector, which then waits out the join timeouts.
    """

    def __init__(self, batch_size: int, num_batches: int):
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.perm: list[int] = []
        self.seeds: list[int] = []
        self.start = 0

    def __len__(self) -> int:
        return self.num_batches - self.start

    def __iter__(self):
        bs, perm, seeds = self.batch_size, self.perm, self.seeds
        for b in range(self.start, self.num_batches):
            yield [(perm[k], seeds[k]) for k in range(b * bs, min((b + 1) * bs, len(perm)))]


class StreamingLoader(EpochOrder):
    """Augmented uint8 batches from a DataLoader with workers; same order as TensorLoader for the same seed.

    ``images``: a uint8 tensor/array [N, C, H, W] or a lazy :class:`~lossdial.data.images.ImageFiles`;
    ``augment``/``padding``/``erasing``: as ``train.augment``/``train.crop_padding``/``train.random_erasing``;
    ``aug_seed``: the augmentation stream; ``num_workers``: DataLoader worker processes (0: in this process); ``pin_memory``: collate into
    page-locked memory for asynchronous copies (default: when ``device`` is CUDA); ``to_pil``: run the
    transforms on PIL images (the reference implementations' way; slower, same distribution).
    """

    augments_batches = False  # batches arrive augmented: the training loop must not augment them again

    def __init__(self, images, y: torch.Tensor, batch_size: int, *, augment: str = "none", padding: int = 4,
                 erasing: float = 0.0, shuffle: bool = True, seed: int = 0, aug_seed: int = 0, drop_last: bool = False,
                 num_workers: int = 2, pin_memory: bool | None = None, device: torch.device | str = "cpu",
                 to_pil: bool = False, prefetch_factor: int = 4):
        super().__init__(len(y), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        if len(images) != len(y):
            raise ValueError(f"images has {len(images)} rows, y has {len(y)}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        shape = tuple(images.shape[1:])
        if len(shape) != 3:
            raise ValueError(f"the streaming loader takes images [N, C, H, W], got per-sample shape {list(shape)}")
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 and not (images.is_floating_point() and not to_pil):
                raise ValueError(f"the streaming loader takes uint8 images (or float images in [0, 1] without "
                                 f"to_pil), got {images.dtype}")
            images = images.cpu()
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.aug_seed = aug_seed
        self.y = y.cpu()
        self.dataset = AugmentedImages(images, self.y, build_transform(augment, shape[1:], padding, to_pil=to_pil,
                                                                       erasing=erasing),
                                       to_pil=to_pil)
        self.sampler = _EpochBatches(batch_size, len(self))
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        # its own generator: the DataLoader draws its workers' base seed from it, not from the global RNG
        kw = dict(num_workers=num_workers, pin_memory=pin and torch.cuda.is_available(),
                  generator=make_generator(aug_seed, 0xDA7A))
        if num_workers > 0:
            kw.update(persistent_workers=True, prefetch_factor=prefetch_factor)
        self._dl = DataLoader(self.dataset, batch_sampler=self.sampler, **kw)

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is garbage-collected)."""
        it = getattr(self._dl, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._dl._iterator = None

    def item_seeds(self, epoch: int) -> torch.Tensor:
        """One augmentation seed per position of epoch ``epoch`` (one vectorised draw)."""
        return torch.randint(0, 2 ** 62, (self.n,), generator=make_generator(self.aug_seed, 0x57EA, epoch))

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if start >= len(self):
            return
        self.sampler.perm = self.order(epoch).tolist()
        self.sampler.seeds = self.item_seeds(epoch).tolist()
        self.sampler.start = start
        nb = self.device.type == "cuda"
        try:
            for xb, yb in self._dl:
                yield xb.to(self.device, non_blocking=nb), yb.to(self.device, non_blocking=nb)
        except DataSourceError as exc:  # raised in a worker: keep the message, drop the worker traceback
            last = str(exc).strip().splitlines()[-1]
            raise type(exc)(last.split(": ", 1)[1] if last.startswith(type(exc).__module__) else last) from None
