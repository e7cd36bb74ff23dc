"""Score new inputs with a finished run at a named point (or an explicit lambda and threshold/adjustment).

An operating point (:class:`OperatingPoint`, resolved once by :func:`operating_point`) is lambda (LCT runs;
None for a baseline) plus the task's dial: a ``threshold`` on P(positive) for a binary run, the post-hoc
logit-adjustment strength ``adjustment`` t for a multi-class run. A binary run predicts a score and a decision
(:func:`predict`); a multi-class run predicts its top-k classes with their probabilities
``softmax(z_c - t log pi_c)`` at lambda (:func:`predict_topk`), pi the training class frequencies.

Model-card keys read for a point (``model_card.json`` ``points.NAME``): ``lambda`` (LCT runs; a baseline's
entry is ignored), and ``threshold`` (binary) or ``adjustment`` (multi-class; a multi-class entry without it is
refused, naming the fix).

:func:`read_inputs` reads an image folder/file, an ``.npz`` or a CSV/Parquet table into the run's raw input
format and checks it against the format recorded at training time (``data.json`` ``raw_input``, see
:func:`lossdial.data.task.raw_input_record`): shape, channels, integer vs float kind and value range. A
mismatch stops with :class:`PredictInputError` naming the problem and the fix; nothing is resized unless the
run itself resized its training images (``data.image_size``), and then the returned notes say so.
:func:`array_inputs` and :func:`column_inputs` are those checks for arrays and table columns already in memory
(``lossdial serve`` reads its JSON inputs with them); :func:`point_scores` scores several points with one backbone
pass.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from lossdial.checks import finite_number
from lossdial.data.task import dtype_kind

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class PredictInputError(ValueError):
    """The input to predict cannot be read or does not match the run; the message says why."""


class PredictInputs(NamedTuple):
    """What :func:`read_inputs` returns: ids, raw inputs in the run's format, and notes on what was done to
    them that the user should know (e.g. images resized as in training)."""

    ids: list[str]
    x: torch.Tensor
    notes: list[str]


NO_RECORD = ("this run's data.json has no raw_input record (the run was trained before lossdial recorded its "
             "input format), so predict cannot check that {path} matches the training inputs' shape, channels, "
             "dtype and value range; check them yourself, or retrain the run to get the check")


# --------------------------------------------------------------------------------------------------------
# The value checks (one place for every input kind)

def image_value_bounds(rec: Mapping[str, Any]) -> tuple[float, float]:
    """The values an image input may take for a run whose raw images were ``rec`` (the raw_input record).

    The pixel scale the training range implies: [0, 255] for integer pixels inside it; [0, 1] widened by 0.05
    for floats inside [0, 1]; otherwise the training range widened by 10% of its span on each side.
    """
    lo, hi = rec["value_range"]
    if rec["dtype_kind"] == "integer" and lo >= 0 and hi <= 255:
        return 0.0, 255.0
    if lo >= 0 and hi <= 1:
        return -0.05, 1.05
    tol = 0.1 * ((hi - lo) or max(abs(hi), 1.0))
    return lo - tol, hi + tol


def table_value_bounds(lo: float, hi: float) -> tuple[float, float]:
    """The values a table feature (or numeric column) with training range [lo, hi] may take at predict time:
    the training range widened by its own span on each side (a constant column: by max(|value|, 1))."""
    span = (hi - lo) or max(abs(lo), abs(hi), 1.0)
    return lo - span, hi + span


_FAR = ("Values more than one training span beyond the training range are refused (the model never saw "
        "anything near them):")


#: a batch of >= 8 images whose values span less than this fraction of the training range gets a warning
SCALE_WARN_FRACTION = 0.25


def _g(v: float) -> str:
    return f"{v:.4g}"


def _values_text(dtype_name: str | None, kind: str, lo: float, hi: float) -> str:
    """"uint8 0-255", "float32 in [0, 1]", or "floats in [0, 1]" without a dtype name."""
    if kind == "integer":
        return f"{dtype_name or 'integers'} {_g(lo)}-{_g(hi)}"
    return f"{dtype_name or 'floats'} in [{_g(lo)}, {_g(hi)}]"


def _image_fix(kind: str, lo: float, hi: float, rec: Mapping[str, Any]) -> str:
    """How to bring image values (kind, range) to the run's raw scale."""
    rlo, rhi = rec["value_range"]
    if rec["dtype_kind"] == "integer":
        if kind == "float" and hi <= 1.0:
            return f"multiply by 255 and round to integers ((x * 255).round().astype(np.{rec['dtype']}))"
        if kind == "float":
            return f"round to integers (x.round().astype(np.{rec['dtype']}))"
        return f"rescale x to the training range {_g(rlo)}-{_g(rhi)}"
    if rlo >= 0 and rhi <= 1 and lo >= 0 and 1 < hi <= 16:
        return ("rescale to [0, 1] by the largest value your pixels can take (x / 16.0 for 0-16 levels such as "
                "scikit-learn's digits)")
    if rlo >= 0 and rhi <= 1 and lo >= 0 and 1 < hi <= 255 * 1.05:
        return ("divide by 255 (x / 255.0) if these are 8-bit pixels; in general rescale to [0, 1] by the largest "
                "value your pixels can take")
    if rlo >= 0 and 1 < rhi <= 255 * 1.05 and lo >= 0 and hi <= 1:
        return "multiply by 255 (x * 255.0)"
    if kind == "integer" and image_value_bounds(rec)[0] <= lo and hi <= image_value_bounds(rec)[1]:
        return "convert to floats (x.astype(np.float32))"
    return f"rescale x to the training range [{_g(rlo)}, {_g(rhi)}]"


def array_problems(x: np.ndarray, rec: Mapping[str, Any], what: str) -> list[str]:
    """Why the raw array ``x`` ([N, ...], as given, before any cast) does not match the run's raw input
    record ``rec``: dtype kind (images), non-finite values, value range. Empty when it matches."""
    kind = dtype_kind(x.dtype)
    if kind == "other":
        return [f"{what} has dtype {x.dtype}; predict needs numbers"]
    problems = []
    if kind == "float":
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
            problems.append(f"{what} holds {int(bad.sum())} NaN or infinite value(s) (the first in sample "
                            f"{first}); predict needs finite numbers")
            return problems
    if x.size == 0 or rec.get("value_range") is None:
        return problems
    if rec["kind"] == "image":
        lo, hi = float(x.min()), float(x.max())
        rlo, rhi = rec["value_range"]
        trained = _values_text(rec["dtype"] if rec["dtype_kind"] == "integer" else None, rec["dtype_kind"], rlo, rhi)
        given = _values_text(str(x.dtype), kind, lo, hi)
        blo, bhi = image_value_bounds(rec)
        reversed_scale = kind == "float" and rlo >= 0 and rhi > 2 and hi <= 1  # [0, 1] on a 0-255 run
        if kind != rec["dtype_kind"] or lo < blo or hi > bhi or reversed_scale:
            problems.append(f"{what} is {given} but the run was trained on {trained}: "
                            f"{_image_fix(kind, lo, hi, rec)}")
        elif rhi > rlo and len(x) >= 8 and hi - lo < SCALE_WARN_FRACTION * (rhi - rlo):
            warnings.warn(f"{what} spans only [{_g(lo)}, {_g(hi)}] across {len(x)} inputs, while the training "
                          f"inputs span [{_g(rlo)}, {_g(rhi)}]: if they were rescaled by the wrong factor (e.g. "
                          f"divided by 255 when the pixels were not 8-bit), the scores are wrong; rescale them the "
                          f"way the training data was", stacklevel=2)
        return problems
    out = []
    cols = x.reshape(len(x), -1)
    for j, r in enumerate(rec.get("feature_ranges") or []):
        if r is None:
            continue
        blo, bhi = table_value_bounds(*r)
        lo, hi = float(cols[:, j].min()), float(cols[:, j].max())
        if lo < blo or hi > bhi:
            out.append(f"feature {j} spans [{_g(lo)}, {_g(hi)}] (trained on [{_g(r[0])}, {_g(r[1])}])")
    if out:
        problems.append(f"{what} lies far outside the training range in {len(out)} feature(s): "
                        f"{'; '.join(out[:5])}{'; ...' if len(out) > 5 else ''}. {_FAR} check the features' order "
                        f"and units")
    return problems


def column_problems(cols: Mapping[str, np.ndarray], rec: Mapping[str, Any], what: str) -> list[str]:
    """Numeric table columns with values far outside their training range (see :func:`table_value_bounds`)."""
    from lossdial.data.tabular import numeric_values

    out = []
    for name, r in (rec.get("column_ranges") or {}).items():
        if r is None or name not in cols:
            continue  # a missing column is the preprocessor's error, with its own message
        v = numeric_values(cols[name])
        blo, bhi = table_value_bounds(*r)
        rows = np.flatnonzero(np.isfinite(v) & ((v < blo) | (v > bhi)))
        inf_rows = np.flatnonzero(np.isinf(v))
        rows = np.union1d(rows, inf_rows)
        if len(rows):
            out.append(f"column {name!r} has {len(rows)} value(s) far outside the training range "
                       f"[{_g(r[0])}, {_g(r[1])}], e.g. {cols[name][rows[0]]!r} in data row {int(rows[0]) + 1}")
    if not out:
        return []
    return [f"{what}: {'; '.join(out)}. {_FAR} check the units of those columns, or fix or drop those rows"]


def _raise(problems: list[str]) -> None:
    if problems:
        raise PredictInputError("; ".join(problems))


# --------------------------------------------------------------------------------------------------------
# Readers

def _shape_text(shape) -> str:
    if len(shape) == 3:
        c, h, w = shape
        return f"{w}x{h} {'grayscale' if c == 1 else 'RGB' if c == 3 else f'{c}-channel'} images ({list(shape)})"
    return f"a table of {shape[0]} features" if len(shape) == 1 else f"per-sample shape {list(shape)}"


def _read_npz(path: Path, data: Mapping[str, Any], rec: Mapping[str, Any] | None) -> PredictInputs:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise PredictInputError(f"{path} is not a readable .npz file ({exc})") from exc
    if "x" not in z:
        raise PredictInputError(f"{path} has arrays {list(z.keys())}; predict needs an array named 'x'")
    raw = z["x"]
    ids = [str(i) for i in z["ids"]] if "ids" in z else [str(i) for i in range(len(raw))]
    if len(ids) != len(raw):
        raise PredictInputError(f"{path}: ids has {len(ids)} entries but x has {len(raw)} samples")
    return array_inputs(raw, ids, data, rec, f"{path}: x")


def array_inputs(raw: np.ndarray, ids: list[str], data: Mapping[str, Any], rec: Mapping[str, Any] | None,
                 what: str) -> PredictInputs:
    """Raw inputs from an array ``raw`` [N, ...] (an .npz's ``x``, or ``lossdial serve``'s JSON arrays; named
    ``what`` in messages) for the run whose data.json is ``data``, checked against its raw input record ``rec``
    (None for a run from before the record: the shape check only)."""
    from lossdial.data.sources import DataSourceError, _npz_images

    if rec is None:  # a run from before the record: the old shape check only
        if tuple(raw.shape[1:]) != tuple(data["input_shape"]):
            raise PredictInputError(f"{what} has per-sample shape {list(raw.shape[1:])}, but the run was "
                                    f"trained on {list(data['input_shape'])}")
        return PredictInputs(ids, torch.from_numpy(np.ascontiguousarray(raw)), [])
    if rec.get("format") == "columns":
        raise PredictInputError(f"{what}: the run was trained on a CSV/Parquet table; predict from a table (.csv "
                                f"or .parquet) with the columns {rec['columns']}")
    if raw.ndim < 2:
        raise PredictInputError(f"{what} has shape {list(raw.shape)}; give one sample per row, [N, ...]")
    try:  # the source's own reading of an array: [N, H, W] -> one channel, NHWC -> NCHW, ints -> float32
        x, kind, _ = _npz_images(raw, what)
    except DataSourceError as exc:
        raise PredictInputError(str(exc)) from None
    shape = [int(v) for v in x.shape[1:]]
    problems = []
    if kind != rec["kind"] or shape != rec["shape"]:
        fix = ("resize and convert them to that shape first (predict resizes image files only, and only for "
               "runs trained with data.image_size)" if rec["kind"] == "image" else "give the same features in "
               "the same order")
        problems.append(f"{what} holds {_shape_text(shape)} but the run was trained on "
                        f"{_shape_text(rec['shape'])}: {fix}")
    if not problems or (kind == rec["kind"] == "image"):  # per-feature ranges need the same features
        problems += array_problems(raw, rec, what)
    _raise(problems)
    return PredictInputs(ids, torch.from_numpy(np.ascontiguousarray(x)), [])


def _is_colour(im) -> bool:
    """True when a PIL image holds colour (its R, G, B differ somewhere), not just grey values."""
    if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    a = np.asarray(im.convert("RGB"))
    return bool((a[..., 0] != a[..., 1]).any() or (a[..., 1] != a[..., 2]).any())


def _read_images(path: Path, data: Mapping[str, Any], rec: Mapping[str, Any] | None) -> PredictInputs:
    from PIL import Image, UnidentifiedImageError

    from lossdial.data.images import convert_image

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PredictInputError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    c, h, w = rec["shape"] if rec is not None else data["input_shape"]
    if rec is None:  # a run from before the record: every image converted and resized to the input shape
        size_hw, from_files, note = (h, w), True, "without checking the run's own image size"
        pixel_max = float(data.get("source", {}).get("pixel_max", 255.0))
        integer = False
    else:
        size_hw = tuple(rec["image_size"]) if rec.get("image_size") else None
        from_files = rec.get("decoded_as") is not None  # the run decoded (and converted) image files itself
        lo, hi = rec["value_range"] if rec.get("value_range") else (0.0, 255.0)
        pixel_max = float(rec.get("pixel_max") or 255.0)
        integer = rec["dtype_kind"] == "integer"
        note = "as the run's training images were (data.image_size)"
        if lo < 0 or hi > pixel_max * 1.05 or (integer and hi > 255):
            raise PredictInputError(f"the run was trained on arrays with values in [{_g(lo)}, {_g(hi)}], not on "
                                    f"{'0-255' if pixel_max > 1 else '[0, 1]'} pixels: image files cannot be "
                                    f"brought to that scale; predict from an .npz prepared like the training data")
    arrays, wrong_size, colour, resized = [], [], [], 0
    for f in files:
        try:
            with Image.open(f) as im:
                if size_hw is None and im.size != (w, h):
                    wrong_size.append((f, im.size, _is_colour(im)))
                    continue
                if c == 1 and not from_files and _is_colour(im):
                    colour.append((f, im.size))
                    continue
                resized += size_hw is not None and im.size != (size_hw[1], size_hw[0])
                arrays.append(convert_image(im, c, size_hw))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise PredictInputError(f"cannot read image {f}: {exc}") from exc

    def name(f: Path) -> str:
        return str(f.relative_to(path)) if path.is_dir() else f.name

    trained = _shape_text([c, h, w])
    problems = []
    if wrong_size:
        f, (fw, fh), col = wrong_size[0]
        kind = ("RGB" if col else "grayscale") if c == 1 else ""
        problems.append(f"{len(wrong_size)} of {len(files)} image(s) in {path} are not {w}x{h} (e.g. {name(f)} "
                        f"is {fw}x{fh}{' ' + kind if kind else ''}), but the run was trained on {trained} without "
                        f"data.image_size, so predict does not resize: resize them to {w}x{h}"
                        f"{' grayscale' if c == 1 and col and not from_files else ''} first")
    if colour:
        f, (fw, fh) = colour[0]
        problems.append(f"{len(colour)} of {len(files)} image(s) in {path} hold colour (e.g. {name(f)}), but the "
                        f"run was trained on grayscale arrays: convert them to grayscale first")
    _raise(problems)
    x = np.stack(arrays)
    if integer:
        t = torch.from_numpy(x)
    else:
        t = torch.from_numpy(x.astype(np.float32) * np.float32(pixel_max / 255.0))
    ids = [name(f) for f in files]
    notes = []
    if resized:
        notes.append(f"resized {resized} of {len(files)} image(s) to {size_hw[1]}x{size_hw[0]} (width x height, "
                     f"bilinear) {note}")
    return PredictInputs(ids, t, notes)


def _read_table(path: Path, data: Mapping[str, Any], rec: Mapping[str, Any] | None) -> PredictInputs:
    from lossdial.data.tabular import read_table

    if data.get("kind") != "table":
        raise PredictInputError(f"{path} is a table but the run was trained on {data.get('kind')} data")
    return column_inputs(read_table(path), data, rec, str(path))


def column_inputs(cols: Mapping[str, np.ndarray], data: Mapping[str, Any], rec: Mapping[str, Any] | None,
                  what: str) -> PredictInputs:
    """Raw inputs from table columns already read (object arrays, None for missing; a CSV/Parquet file's, or
    ``lossdial serve``'s JSON rows; named ``what`` in messages), checked against the run's raw input record
    ``rec`` and transformed with the run's fitted table preprocessing."""
    from lossdial.data.tabular import table_inputs

    if rec is not None:
        _raise(column_problems(cols, rec, what))
    ids, x = table_inputs(cols, data)
    return PredictInputs(ids, x, [])


def read_inputs(path: str | Path, data: Mapping[str, Any]) -> PredictInputs:
    """Read a folder/file of images, an NPZ (x [, ids]) or a CSV/Parquet table into RAW inputs for the run
    whose data.json is ``data``, checked against its recorded raw input format (``data["raw_input"]``).

    Raises :class:`PredictInputError` on a mismatch. A run without the record (trained before it existed)
    gets a ``UserWarning`` instead, and only the old checks.
    """
    path = Path(path)
    if not path.exists():
        raise PredictInputError(f"input {path} does not exist")
    rec = data.get("raw_input")
    if rec is None:
        warnings.warn(NO_RECORD.format(path=path), UserWarning, stacklevel=2)
    if path.suffix.lower() == ".npz":
        return _read_npz(path, data, rec)
    if path.suffix.lower() in (".csv", ".parquet"):
        return _read_table(path, data, rec)
    if data.get("kind") != "image":
        raise PredictInputError(f"{path}: a {data.get('kind')} run predicts from .npz or .csv inputs")
    return _read_images(path, data, rec)


class OperatingPoint(NamedTuple):
    """One operating point of a run: ``lam`` (None for a baseline run) and the task's dial setting --
    ``threshold`` on P(positive) for a binary run, ``adjustment`` t (logits z_c - t log pi_c) for a multi-class
    run; the other one is None."""

    lam: dict[str, float] | None
    threshold: float | None = None
    adjustment: float | None = None

    @property
    def value(self) -> float:
        """The dial setting of the point's task: the threshold or the adjustment."""
        return self.threshold if self.adjustment is None else self.adjustment


_ADJUSTMENT_ON_BINARY = ("--adjustment (the post-hoc logit adjustment t) applies to multi-class runs; a binary "
                         "run's operating point is a threshold on P(positive): give --threshold instead")
_THRESHOLD_ON_MULTICLASS = ("--threshold (a threshold on P(positive)) applies to binary runs; a multi-class run's "
                            "operating point is (lambda, adjustment t), scores softmax(z_c - t log pi_c): give "
                            "--adjustment T instead (0: the model's own probabilities, 1: full logit adjustment)")


def operating_point(loaded, point: Mapping[str, Any] | None = None, *, name: str | None = None,
                    lam: Mapping[str, float] | None = None, threshold: float | None = None,
                    adjustment: float | None = None) -> OperatingPoint:
    """The run's operating point from a model-card entry ``point`` (named ``name``, for messages) or from
    explicit values, checked against the run's task type (binary: threshold; multi-class: adjustment).

    A card entry supplies ``lambda`` (used for LCT runs only) and ``threshold`` or ``adjustment``; the explicit
    values are ignored when ``point`` is given. An LCT run needs a lambda; a baseline run's lambda is None.
    """
    multiclass = loaded.task_type.name == "multiclass"
    if point is not None:
        where = f"model card point {name!r}" if name else "the model card point"
        lam = point.get("lambda")
        if multiclass:
            if point.get("adjustment") is None:
                raise ValueError(f"{where} has no 'adjustment' (the post-hoc logit-adjustment strength t of a "
                                 f"multi-class point; keys: {sorted(point)}): it was not written by a multi-class "
                                 f"`lossdial pick`. Pick the point again on this run, or give it explicitly: "
                                 f"--lambda ... --adjustment T")
            adjustment, threshold = finite_number(point["adjustment"], f"{where}: adjustment"), None
        else:
            if point.get("threshold") is None:
                raise ValueError(f"{where} has no 'threshold' (keys: {sorted(point)}); a binary run's point is a "
                                 f"threshold on P(positive)")
            threshold, adjustment = finite_number(point["threshold"], f"{where}: threshold"), None
    elif multiclass:
        if threshold is not None:
            raise ValueError(_THRESHOLD_ON_MULTICLASS)
        if adjustment is None:
            raise ValueError("give --at NAME (a point from `lossdial pick`) or --adjustment T (and --lambda for an "
                             "LCT run)")
        adjustment = finite_number(adjustment, "--adjustment")
    else:
        if adjustment is not None:
            raise ValueError(_ADJUSTMENT_ON_BINARY)
        if threshold is None:
            raise ValueError("give --at NAME (a point from `lossdial pick`) or --threshold (and --lambda for an "
                             "LCT run)")
        threshold = finite_number(threshold, "--threshold")
    if not loaded.is_lct:
        return OperatingPoint(None, threshold, adjustment)
    if not lam:
        raise ValueError("an LCT run needs a lambda (--at NAME or --lambda ..., e.g. --lambda tau=1.5)")
    return OperatingPoint(dict(lam), threshold, adjustment)


def predict(loaded, inputs: torch.Tensor, lam: Mapping[str, float] | None, threshold: float,
            batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, decisions) for raw `inputs` of a binary run at lambda `lam` and `threshold` (a multi-class
    run: :func:`predict_topk`)."""
    if loaded.task_type.name != "binary":
        raise ValueError("predict() thresholds P(positive) of a binary run; for a multi-class run use "
                         "predict_topk(loaded, inputs, lam, adjustment, k)")
    s = _scores(loaded, inputs, lam, "positive", batch_size)
    return s, decide(s, threshold)


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """A binary run's decisions at ``threshold``: 1 where P(positive) >= threshold, else 0."""
    return (scores >= threshold).astype(int)


def _scores(loaded, inputs: torch.Tensor, lam: Mapping[str, float] | None, output: str,
            batch_size: int | None) -> np.ndarray:
    return _scores_at(loaded, inputs, [lam], output, batch_size)[0]


def _scores_at(loaded, inputs: torch.Tensor, lams: list[Mapping[str, float] | None], output: str,
               batch_size: int | None) -> np.ndarray:
    """``output`` scores of raw ``inputs`` at each lambda of ``lams``, [K, N, ...]: one backbone pass, K heads
    (a baseline run: one pass, repeated K times)."""
    from lossdial.data.task import Normalizer
    from lossdial.evaluate.scoring import score_lambdas

    if loaded.is_lct:
        for lam in lams:
            if lam is None:
                raise ValueError("an LCT run needs a lambda (--at NAME or --lambda ...)")
            loaded.space.check_support(lam)
    norm = Normalizer.from_dict(loaded.data["normalization"])
    s = score_lambdas(loaded.model, inputs, list(lams) if loaded.is_lct else None, loaded.space,
                      device=loaded.device, batch_size=batch_size or loaded.config.evaluate.batch_size,
                      transform=norm, output=output)
    return s if loaded.is_lct else np.repeat(s, len(lams), axis=0)


def _adjusted_probabilities(loaded, logits: np.ndarray, adjustment: float) -> np.ndarray:
    from lossdial.evaluate.multiclass import adjust_logits, softmax

    return softmax(adjust_logits(logits, loaded.train_counts, finite_number(adjustment, "adjustment")))


def class_probabilities(loaded, inputs: torch.Tensor, lam: Mapping[str, float] | None, adjustment: float,
                        batch_size: int | None = None) -> np.ndarray:
    """Class probabilities ``[N, C]`` of raw ``inputs`` for a multi-class run at lambda ``lam`` and adjustment
    t: ``softmax(z_c - t log pi_c)``, z the logits at lambda, pi the training class frequencies."""
    if loaded.task_type.name != "multiclass":
        raise ValueError("class_probabilities() takes a multi-class run; for a binary run use predict(loaded, "
                         "inputs, lam, threshold)")
    return _adjusted_probabilities(loaded, _scores(loaded, inputs, lam, "logits", batch_size), adjustment)


def point_scores(loaded, inputs: torch.Tensor, points: list[OperatingPoint],
                 batch_size: int | None = None) -> list[np.ndarray]:
    """The scores of raw ``inputs`` at several operating points with ONE backbone pass (distinct lambdas share
    it, each runs the head once): per point P(positive) ``[N]`` (binary; the decisions are scores >= the
    point's threshold, as :func:`predict`) or the class probabilities ``[N, C]`` (multi-class, as
    :func:`class_probabilities`)."""
    if not points:
        return []
    multiclass = loaded.task_type.name == "multiclass"
    slot: dict[Any, int] = {}  # each distinct lambda's row in the scores
    lams: list[Mapping[str, float] | None] = []
    index = []
    for p in points:
        key = None if p.lam is None else tuple(sorted(p.lam.items()))
        if key not in slot:
            slot[key] = len(lams)
            lams.append(p.lam)
        index.append(slot[key])
    s = _scores_at(loaded, inputs, lams, "logits" if multiclass else "positive", batch_size)
    if not multiclass:
        return [s[i] for i in index]
    return [_adjusted_probabilities(loaded, s[i], p.adjustment) for i, p in zip(index, points)]


class TopK(NamedTuple):
    """The k most probable classes per input, most probable first: labels ``[N, k]`` and probabilities."""

    classes: np.ndarray
    probs: np.ndarray


def check_top_k(k: Any) -> int:
    """``k`` as an int: how many classes per input a multi-class predict writes; a whole number >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"--top-k must be a whole number >= 1, got {k!r}")
    return int(k)


def top_k(probs: np.ndarray, k: int) -> TopK:
    """The ``k`` largest probabilities per row of ``probs`` ``[N, C]`` with their labels (ties: the lower label
    first); ``k`` is capped at C and must be at least 1."""
    k = min(check_top_k(k), probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return TopK(order, np.take_along_axis(probs, order, axis=1))


def predict_topk(loaded, inputs: torch.Tensor, lam: Mapping[str, float] | None, adjustment: float, k: int = 3,
                 batch_size: int | None = None) -> TopK:
    """The top-``k`` classes of raw ``inputs`` for a multi-class run at (lambda, adjustment t), with their
    probabilities (:func:`class_probabilities`); ``k`` is capped at the number of classes."""
    check_top_k(k)  # before any scoring
    return top_k(class_probabilities(loaded, inputs, lam, adjustment, batch_size), k)


def write_predictions(path: str | Path, ids: list[str], scores: np.ndarray, decisions: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "score", "decision"])
        for i, s, d in zip(ids, scores, decisions):
            w.writerow([i, f"{s:.8g}", int(d)])


def write_topk_predictions(path: str | Path, ids: list[str], top: TopK, class_names: list[str]) -> None:
    """CSV ``id, class_1, prob_1, ..., class_k, prob_k`` (class names, most probable first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = top.classes.shape[1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id"] + [c for j in range(1, k + 1) for c in (f"class_{j}", f"prob_{j}")])
        for i, cls, pr in zip(ids, top.classes, top.probs):
            w.writerow([i] + [v for c, p in zip(cls, pr) for v in (class_names[int(c)], f"{p:.8g}")])
