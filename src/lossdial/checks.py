"""One device-independent way to assert a condition on tensor values (no range check is skipped by device).

On the CPU the check is immediate and raises ``ValueError``. On CUDA it is :func:`torch._assert_async`: the
check runs on the device without a host sync and a failure surfaces as a ``RuntimeError`` at the next
synchronisation (it also ends the CUDA context, so it is the last line of defence: values a user writes are
validated once at the boundary, e.g. a config's lambda laws when it is loaded). Other accelerators (MPS, ...)
check synchronously.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["finite_number", "require"]


def require(ok: Tensor | bool, message: str, details: Callable[[], str] | None = None) -> None:
    """Fail with ``message`` unless ``ok`` is true (a bool, or a bool tensor whose entries must all be true).

    ``details()`` (e.g. the offending values) is appended to the message where reading the values costs no
    device sync, i.e. everywhere but CUDA.
    """
    if isinstance(ok, Tensor):
        if ok.device.type == "cuda":
            torch._assert_async(ok.all(), message)
            return
        ok = bool(ok.all())
    if not ok:
        raise ValueError(f"{message}, got {details()}" if details is not None else message)


def finite_number(value: Any, what: str) -> float:
    """``value`` as a float; bools, non-numbers, tensors of more than one element, NaN and infinities raise
    ``ValueError`` naming ``what`` (e.g. "L: hb" or "--adjustment")."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a finite number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{what} must be a finite number, got {out}")
    return out
