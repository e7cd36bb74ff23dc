"""The on-disk array cache: decoded images as uint8 ``.npy`` files, written once, loaded in well under a second.

Where it lives: ``data.cache_dir`` when the config sets it, else ``$LOSSDIAL_CACHE``, else
``~/.cache/lossdial``. Each dataset gets its own folder named by a content key (e.g. the archive's sha256),
so a changed source never reuses a stale cache. Entries are written with temporary files and renames, and
``meta.json`` is written last: a folder without it is incomplete and is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from lossdial.rundir import atomic_file

ENV_CACHE = "LOSSDIAL_CACHE"
T = TypeVar("T")
R = TypeVar("R")


def map_chunked(fn: Callable[[T], R], items: Sequence[T], workers: int = 1) -> list[R]:
    """``[fn(x) for x in items]`` over ``workers`` threads, one contiguous chunk per thread (decoders release
    the GIL; one future per item would cost more than a 32x32 JPEG decode)."""
    workers = max(1, min(workers, len(items) // 256 or 1))
    if workers == 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(items) // workers)
    chunks = [items[i:i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(workers) as ex:
        parts = list(ex.map(lambda ch: [fn(x) for x in ch], chunks))
    return [r for part in parts for r in part]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache root: the explicit ``cache_dir``, else ``$LOSSDIAL_CACHE``, else ``~/.cache/lossdial``."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser().absolute()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser().absolute()
    return Path("~/.cache/lossdial").expanduser().absolute()


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_file(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _atomic_write_json(path: Path, obj: Any) -> None:
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=1)


class ArrayCache:
    """One cache entry: a folder with ``NAME.npy`` arrays and a ``meta.json`` completion marker."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def meta_path(self) -> Path:
        return self.folder / "meta.json"

    def is_complete(self) -> bool:
        return self.meta_path.is_file()

    def load(self, names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = json.loads(self.meta_path.read_text())
        arrays = {n: np.load(self.folder / f"{n}.npy", allow_pickle=False) for n in names}
        return arrays, meta

    def save(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create the data cache folder {self.folder} ({exc}); set data.cache_dir "
                          f"or ${ENV_CACHE} to a writable folder") from exc
        if self.meta_path.exists():
            self.meta_path.unlink()
        for name, arr in arrays.items():
            _atomic_save_npy(self.folder / f"{name}.npy", np.ascontiguousarray(arr))
        _atomic_write_json(self.meta_path, meta)

    def clear(self) -> None:
        if self.folder.is_dir():
            shutil.rmtree(self.folder)


def cached_arrays(folder: Path, names: list[str], build: Callable[[], tuple[dict[str, np.ndarray], dict]],
                  *, rebuild: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """Load the arrays ``names`` from ``folder``, building and saving them first if absent.

    Returns (arrays, meta, hit) where ``hit`` says whether the cache was already there.
    """
    cache = ArrayCache(folder)
    if cache.is_complete() and not rebuild:
        try:
            arrays, meta = cache.load(names)
            return arrays, meta, True
        except (OSError, ValueError, json.JSONDecodeError):
            pass  # a damaged entry: rebuild it below
    arrays, meta = build()
    cache.save(arrays, meta)
    return arrays, meta, False
