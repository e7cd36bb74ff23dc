"""Checkpoints: ``torch.load(weights_only=True)``-compatible, atomic, versioned; weights as safetensors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from lossdial.rundir import RunError, atomic_write_bytes

CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write the training state atomically (temp file + rename), tagged with a format version."""
    buf = io.BytesIO()
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise RunError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); restart with --force") \
            from exc
    version = ck.get("format_version") if isinstance(ck, dict) else None
    if version != CHECKPOINT_FORMAT_VERSION:
        raise RunError(f"checkpoint {path} has format version {version!r}; this lossdial reads version "
                       f"{CHECKPOINT_FORMAT_VERSION}")
    return ck


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """The model's state dict as safetensors (contiguous CPU copies; written atomically)."""
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(sd, metadata={"format_version": str(CHECKPOINT_FORMAT_VERSION)}))


def load_weights(path: Path, model: torch.nn.Module) -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file {path} does not exist")
    sd = load_file(str(path))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RunError(f"{path} does not match the run's model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
