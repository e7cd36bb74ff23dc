"""The run directory: the only hand-off between commands (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

RUN_FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it is flushed, fsynced and renamed onto `path`.

    Readers never see a half-written file; on any error the temporary file is removed. The file gets the
    usual umask-derived permissions (mkstemp alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def jsonable(obj: Any) -> Any:
    """``obj`` with every undefined number (NaN, +-inf; Python, NumPy or 0-d tensor) as None, NumPy scalars and
    arrays as Python numbers and lists, tuples as lists: what :func:`dumps_json` writes."""
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)) or type(obj).__module__.startswith("torch"):
        if hasattr(obj, "tolist"):
            return jsonable(obj.tolist())
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (RFC 8259): an undefined number is ``null``, never ``NaN``/``Infinity``.

    The one JSON writer of lossdial: run directories, sweeps, model cards, compare and the CLI's ``--json``.
    Readers treat ``null`` as undefined (the CLI's tables print it as ``-``).
    """
    return json.dumps(jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)


def is_undefined(v: Any) -> bool:
    """None (an undefined value read back from JSON) or a non-finite float (one computed in memory)."""
    return v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v))


def fmt_value(v: Any, spec: str = ".3f") -> str:
    """A number for a table cell; an undefined one (:func:`is_undefined`) is ``-``."""
    return "-" if is_undefined(v) else format(v, spec)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj) + "\n")


class RunError(RuntimeError):
    """A run directory is missing, incomplete or inconsistent; the message says what to do."""


class RunDir:
    """Paths and small helpers for one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    data = property(lambda self: self.path / "data.json")
    splits = property(lambda self: self.path / "splits.npz")
    lambda_space = property(lambda self: self.path / "lambda_space.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    weights = property(lambda self: self.path / "model.safetensors")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    complete_marker = property(lambda self: self.path / "COMPLETE")

    @property
    def is_complete(self) -> bool:
        return self.complete_marker.is_file()

    def read_json(self, path: Path) -> Any:
        if not path.is_file():
            raise RunError(f"{path} is missing; is {self.path} a lossdial run directory?")
        return json.loads(path.read_text())

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (flushed, so a killed run keeps its log)."""
        with open(self.metrics, "a") as f:
            f.write(dumps_json(record, indent=None) + "\n")
            f.flush()

    def read_log(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def require_complete(self) -> None:
        if not self.path.is_dir():
            raise RunError(f"run directory {self.path} does not exist")
        if not self.is_complete:
            raise RunError(
                f"{self.path} is not a finished run (no COMPLETE marker); finish it with "
                f"`lossdial train {self.config} --out {self.path} --resume`"
            )
