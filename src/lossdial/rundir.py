"""The run directory: the only hand-off between commands (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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
            f.write(json.dumps(record) + "\n")
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
