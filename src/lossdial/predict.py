"""Score new inputs with a finished run at a named point (or an explicit lambda and threshold)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class PredictInputError(ValueError):
    """The input to predict cannot be read or does not match the run; the message says why."""


def _read_npz(path: Path, input_shape: list[int]) -> tuple[list[str], torch.Tensor]:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise PredictInputError(f"{path} is not a readable .npz file ({exc})") from exc
    if "x" not in z:
        raise PredictInputError(f"{path} has arrays {list(z.keys())}; predict needs an array named 'x'")
    x = z["x"]
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise PredictInputError(f"{path}: x has per-sample shape {list(x.shape[1:])}, but the run was trained on "
                                f"{list(input_shape)}")
    ids = [str(i) for i in z["ids"]] if "ids" in z else [str(i) for i in range(len(x))]
    return ids, torch.from_numpy(np.ascontiguousarray(x))


def _read_images(path: Path, input_shape: list[int], data: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PredictInputError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    c, h, w = input_shape
    scale = float(data.get("source", {}).get("pixel_max", 255.0)) / 255.0
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise PredictInputError(f"cannot read image {f}: {exc}") from exc
        arrays.append(a[None] if c == 1 else a.transpose(2, 0, 1))
    x = np.stack(arrays) * scale
    ids = [str(f.relative_to(path)) if path.is_dir() else f.name for f in files]
    return ids, torch.from_numpy(x.astype(np.float32))


def read_inputs(path: str | Path, data: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
    """Read a folder/file of images, an NPZ (x [, ids]) or a CSV table into RAW inputs for the run."""
    path = Path(path)
    if not path.exists():
        raise PredictInputError(f"input {path} does not exist")
    shape = data["input_shape"]
    if path.suffix.lower() == ".npz":
        return _read_npz(path, shape)
    if path.suffix.lower() in (".csv", ".parquet"):
        if data.get("kind") != "table":
            raise PredictInputError(f"{path} is a table but the run was trained on {data.get('kind')} data")
        try:
            from lossdial.data.tabular import read_predict_table  # provided with the tabular sources
        except ImportError as exc:
            raise PredictInputError("this lossdial cannot read tables for predict yet; pass an .npz") from exc
        return read_predict_table(path, data)
    if data.get("kind") != "image":
        raise PredictInputError(f"{path}: a {data.get('kind')} run predicts from .npz or .csv inputs")
    return _read_images(path, shape, data)


def predict(loaded, inputs: torch.Tensor, lam: Mapping[str, float] | None, threshold: float,
            batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, decisions) for raw `inputs` at lambda `lam` and `threshold`."""
    from lossdial.data.task import Normalizer
    from lossdial.evaluate.scoring import score_lambdas

    if loaded.is_lct:
        if lam is None:
            raise ValueError("an LCT run needs a lambda (--at NAME or --lambda ...)")
        loaded.space.check_support(lam)
    norm = Normalizer.from_dict(loaded.data["normalization"])
    s = score_lambdas(loaded.model, inputs, [lam] if loaded.is_lct else None, loaded.space, device=loaded.device,
                      batch_size=batch_size or loaded.config.evaluate.batch_size, transform=norm)[0]
    return s, (s >= threshold).astype(int)


def write_predictions(path: str | Path, ids: list[str], scores: np.ndarray, decisions: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "score", "decision"])
        for i, s, d in zip(ids, scores, decisions):
            w.writerow([i, f"{s:.8g}", int(d)])
