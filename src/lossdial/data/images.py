"""Image folders (``root/<class>/<image>``, any PIL-readable format), decoded once into a uint8 array.

Every image is converted to RGB (``channels: 3``) or grayscale (``channels: 1``) and, when ``image_size`` is
set, resized with PIL's bilinear filter (antialiased when shrinking) -- the same resize ``lossdial predict``
applies to new images. Without ``image_size`` all images must share one size. The decoded uint8
[N, C, H, W] array is cached (see :mod:`lossdial.data.cache`), keyed by the file list, sizes, modification
times and decode options, so later runs load it in well under a second.

This in-memory path suits CIFAR-scale data (tens of thousands of small images). For large photo folders set
``data.in_memory: false``: the pool then holds an :class:`ImageFiles` list, images are decoded per batch, and
training streams them through DataLoader workers with torchvision transforms (:mod:`lossdial.data.streaming`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lossdial.data.cache import cache_root, cached_arrays, map_chunked
from lossdial.data.sources import DataSourceError, Pool, require_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CACHE_VERSION = 1


class ImageReadError(DataSourceError):
    """An image file cannot be decoded; the message names the file."""


def _size_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = (int(v) for v in image_size)
    return (h, w)


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(file, class index)]) of ``root/<class>/**/<image>``, sorted; errors on empty classes."""
    if not root.is_dir():
        raise DataSourceError(f"image folder {root} is not a directory; expected root/<class>/<image>")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataSourceError(f"image folder {root} has no class folders; expected root/<class>/<image> (e.g. "
                              f"{root}/cat/001.png)")
    files: list[tuple[Path, int]] = []
    for ci, c in enumerate(classes):
        found = sorted(p for p in (root / c).rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not found:
            raise DataSourceError(f"class folder {root / c} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                                  f"images or remove the folder")
        files.extend((p, ci) for p in found)
    return classes, files


def decode_image(path: Path, channels: int, size_hw: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 [C, H, W]; raises :class:`ImageReadError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return convert_image(im, channels, size_hw)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def convert_image(im, channels: int, size_hw: tuple[int, int] | None) -> np.ndarray:
    """An open PIL image as uint8 [C, H, W]: converted to grayscale (``channels`` 1) or RGB (3), resized with
    the bilinear filter when ``size_hw`` is set and differs. Training and ``lossdial predict`` both decode
    image files with this function."""
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    if size_hw is not None and im.size != (size_hw[1], size_hw[0]):
        im = im.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if channels == 1 else np.ascontiguousarray(a.transpose(2, 0, 1))


def size_mismatch(name, wh: tuple[int, int], ref_name, ref_wh: tuple[int, int]) -> str:
    """The one message for images of different sizes (width x height) without data.image_size."""
    return (f"images differ in size: {name} is {wh[0]}x{wh[1]} but {ref_name} is {ref_wh[0]}x{ref_wh[1]} "
            f"(width x height); set data.image_size (e.g. 64) to resize every image")


def is_lazy(x) -> bool:
    """True for a lazy :class:`ImageFiles` split (``data.in_memory: false``), False for in-memory arrays."""
    return isinstance(x, ImageFiles)


class ImageFiles:
    """A lazy uint8 image array: a list of files decoded on access (``data.in_memory: false``).

    It indexes like the NumPy array it stands for: an integer gives one decoded [C, H, W] array, an index
    array or slice gives another (still lazy) :class:`ImageFiles`. :meth:`load` decodes a selection into a
    uint8 tensor [n, C, H, W] with a thread pool, and ``x[a:b].to(device)`` decodes a batch (what evaluation
    does), so the rest of lossdial treats it like an in-memory split. Every image must decode to ``shape``
    (set ``image_size`` to resize), else :class:`ImageReadError` names the file.
    """

    dtype = torch.uint8

    def __init__(self, files: Sequence[str | Path], channels: int, size_hw: tuple[int, int] | None,
                 item_shape: tuple[int, int, int] | None = None, workers: int | None = None):
        self.files = [str(f) for f in files]
        self.channels = channels
        self.size_hw = size_hw
        self.workers = workers or min(8, os.cpu_count() or 1)
        if item_shape is None:
            if not self.files:
                raise DataSourceError("an empty image list has no shape")
            item_shape = tuple(decode_image(Path(self.files[0]), channels, size_hw).shape)
        self.item_shape = tuple(int(v) for v in item_shape)

    def _like(self, files: Sequence[str]) -> "ImageFiles":
        return ImageFiles(files, self.channels, self.size_hw, self.item_shape, self.workers)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.item_shape)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.files)

    def decode(self, i: int) -> np.ndarray:
        a = decode_image(Path(self.files[i]), self.channels, self.size_hw)
        if a.shape != self.item_shape:
            raise ImageReadError(size_mismatch(self.files[i], (a.shape[2], a.shape[1]), "the others",
                                               (self.item_shape[2], self.item_shape[1])))
        return a

    def __getitem__(self, ix):
        if isinstance(ix, (int, np.integer)):
            return self.decode(int(ix))
        if isinstance(ix, slice):
            return self._like(self.files[ix])
        ix = np.asarray(ix.cpu() if isinstance(ix, torch.Tensor) else ix)
        if ix.dtype == bool:
            ix = np.flatnonzero(ix)
        return self._like([self.files[int(i)] for i in ix])

    def load(self) -> torch.Tensor:
        """Decode every image of this list into one uint8 tensor [n, C, H, W]."""
        if not self.files:
            return torch.empty((0, *self.item_shape), dtype=torch.uint8)
        arrays = map_chunked(self.decode, list(range(len(self.files))), self.workers)
        return torch.from_numpy(np.stack(arrays))

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        return self.load().to(device, non_blocking=non_blocking)

    def astype(self, dtype, copy: bool = False) -> "ImageFiles":
        if np.dtype(dtype) != np.uint8:
            raise TypeError(f"ImageFiles are uint8 images; cannot view them as {dtype}")
        return self

    def concat(self, other: "ImageFiles") -> "ImageFiles":
        if other.item_shape != self.item_shape:
            raise DataSourceError(f"the test folder's images are {list(other.item_shape)} but the training folder's "
                                  f"are {list(self.item_shape)}; set data.image_size to resize both")
        return self._like(self.files + other.files)

    def __repr__(self) -> str:
        return f"ImageFiles(n={len(self)}, shape={list(self.item_shape)})"


def _decode_all(files: list[tuple[Path, int]], channels: int, size_hw, skip_bad: bool, root: Path,
                workers: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    def one(item):
        try:
            return decode_image(item[0], channels, size_hw)
        except ImageReadError as exc:
            if skip_bad:
                return None
            raise ImageReadError(f"{exc}; fix or delete the file, or set data.skip_bad_images: true to skip "
                                 f"unreadable images with a warning") from None

    arrays = map_chunked(one, files, workers or min(8, os.cpu_count() or 1))
    bad = [str(f.relative_to(root)) for (f, _), a in zip(files, arrays) if a is None]
    kept = [(a, c, f) for (f, c), a in zip(files, arrays) if a is not None]
    if not kept:
        raise DataSourceError(f"no readable images in {root}")
    shapes = {a.shape for a, _, _ in kept}
    if len(shapes) > 1:
        first = kept[0]
        other = next(k for k in kept if k[0].shape != first[0].shape)
        raise DataSourceError(size_mismatch(other[2], (other[0].shape[2], other[0].shape[1]), first[2],
                                            (first[0].shape[2], first[0].shape[1])))
    x = np.stack([a for a, _, _ in kept])
    y = np.array([c for _, c, _ in kept], dtype=np.int64)
    return x, y, bad


def _check_sizes(files: list[Path], root: Path, workers: int | None) -> None:
    """All images share one size (from the file headers only), else the in-memory path's error."""
    from PIL import Image, UnidentifiedImageError

    def size(f):
        try:
            with Image.open(f) as im:
                return im.size
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageReadError(f"cannot read image {f}: {exc}; fix or delete the file") from None

    sizes = map_chunked(size, files, workers or min(8, os.cpu_count() or 1))
    first = sizes[0]
    for f, sz in zip(files, sizes):
        if sz != first:
            raise DataSourceError(size_mismatch(f.relative_to(root), sz, files[0].relative_to(root), first))


def _cache_key(files: list[tuple[Path, int]], classes: list[str], channels: int, size_hw, skip_bad: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "classes": classes, "channels": channels,
                         "size": list(size_hw) if size_hw else None, "skip": skip_bad}).encode())
    for f, c in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{c}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _load_one_root(root: Path, *, classes: list[str] | None, channels: int, size_hw, skip_bad: bool, cache: bool,
                   cache_dir, workers: int | None, in_memory: bool = True,
                   item_shape: tuple[int, int, int] | None = None) -> tuple[Pool, dict]:
    found_classes, files = list_image_folder(root)
    if classes is not None:
        extra = sorted(set(found_classes) - set(classes))
        if extra:
            raise DataSourceError(f"the test folder {root} has class folders {extra} that the training folder "
                                  f"lacks; class folders must match")
        files = [(f, classes.index(found_classes[c])) for f, c in files]
    else:
        classes = found_classes
    if not in_memory:
        if skip_bad:
            raise DataSourceError("data.skip_bad_images needs data.in_memory: true (streamed images are decoded "
                                  "during training, too late to skip); fix or delete unreadable files instead")
        if size_hw is None:  # read the headers now (no decoding) so a stray size fails here, not mid-training
            _check_sizes([f for f, _ in files], root, workers)
        lazy = ImageFiles([f for f, _ in files], channels, size_hw, item_shape, workers)
        y = np.array([c for _, c in files], dtype=np.int64)
        return Pool(x=lazy, y=y, class_names=classes, kind="image"), {
            "in_memory": False, "n": int(len(y)), "skipped_images": 0}

    def build():
        x, y, bad = _decode_all(files, channels, size_hw, skip_bad, root, workers)
        return {"x": x, "y": y}, {"root": str(root.resolve()), "classes": classes, "n": int(len(y)),
                                  "skipped": bad}

    info: dict = {}
    if cache:
        folder = cache_root(cache_dir) / "image_folder" / _cache_key(files, classes, channels, size_hw, skip_bad)
        arrays, meta, hit = cached_arrays(folder, ["x", "y"], build)
        info.update({"cache": str(folder), "cache_hit": hit})
    else:
        arrays, meta = build()
    bad = meta["skipped"]
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {root} (data.skip_bad_images is true), e.g. "
                      f"{bad[:3]}", stacklevel=3)
    info.update({"skipped_images": len(bad), "skipped_examples": bad[:10]})
    return Pool(x=arrays["x"], y=arrays["y"], class_names=classes, kind="image"), info


def load_image_folder(root: str | Path, *, test_path: str | Path | None = None,
                      image_size: int | Sequence[int] | None = None, channels: int = 3,
                      skip_bad_images: bool = False, cache: bool = True, cache_dir: str | Path | None = None,
                      workers: int | None = None, in_memory: bool = True) -> Pool:
    """Images under ``root/<class>/`` (class = folder name, sorted) as a uint8 [N, C, H, W] pool.

    ``test_path``: another folder with the same class folders, used as the source's own test split.
    ``image_size``: an int (square) or [height, width] to resize to; ``None`` requires equal sizes.
    ``skip_bad_images``: skip unreadable files with a warning (their count lands in data.json) instead of
    stopping at the first one. ``cache``: keep the decoded array under ``cache_dir`` (default
    ``$LOSSDIAL_CACHE`` or ``~/.cache/lossdial``). ``in_memory=False``: keep the file list
    (:class:`ImageFiles`) and decode images only when a batch needs them (no cache; for folders too large to
    hold decoded in memory); training then streams them through DataLoader workers.
    """
    if channels not in (1, 3):
        raise DataSourceError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    size_hw = _size_hw(image_size)
    r = require_path(root, "path", "image folder root/<class>/<image>")
    train, info = _load_one_root(r, classes=None, channels=channels, size_hw=size_hw, skip_bad=skip_bad_images,
                                 cache=cache, cache_dir=cache_dir, workers=workers, in_memory=in_memory)
    meta = {"name": "image_folder", "path": str(r.resolve()), "shape": list(train.x.shape[1:]),
            "pixel_max": 255.0, "resize": "bilinear" if size_hw else None,
            "image_size": list(size_hw) if size_hw else None, "decoded_as": "L" if channels == 1 else "RGB", **info}
    if test_path is None:
        train.meta = meta
        return train
    t = require_path(test_path, "test_path", "image folder of the test split, same class folders as data.path")
    test, tinfo = _load_one_root(t, classes=train.class_names, channels=channels, size_hw=size_hw,
                                 skip_bad=skip_bad_images, cache=cache, cache_dir=cache_dir, workers=workers,
                                 in_memory=in_memory, item_shape=None if in_memory else train.x.item_shape)
    meta["test"] = {"path": str(t.resolve()), **tinfo}
    return Pool.concat(train, test, meta)
