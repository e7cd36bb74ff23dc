"""torchvision ImageNet architectures as headless backbones; weights only ever come from a local file.

Models are built with ``torchvision.models.get_model(name, weights=None)`` (random init, no network). To
start from ImageNet weights, download them yourself and pass ``weights_path=`` a local state dict
(``.pth``/``.pt`` read with ``torch.load(weights_only=True)``, or ``.safetensors``). The file's classifier
weights (``fc.*`` / ``classifier.2.*``) are dropped; every other key must match exactly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["TORCHVISION_BACKBONES", "load_state_dict_file", "torchvision_backbone"]


@dataclass(frozen=True)
class _Spec:
    classifier_prefix: str  # state-dict prefix of the final linear layer (dropped from weight files)
    stem_key: str  # state-dict key of the stem convolution's weight


_RESNET = _Spec("fc.", "conv1.weight")
_CONVNEXT = _Spec("classifier.2.", "features.0.0.weight")

#: Supported torchvision architecture names.
TORCHVISION_BACKBONES: dict[str, _Spec] = {
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
    "resnet101": _RESNET,
    "resnext50_32x4d": _RESNET,
    "resnext101_32x8d": _RESNET,
    "convnext_tiny": _CONVNEXT,
    "convnext_small": _CONVNEXT,
    "convnext_base": _CONVNEXT,
}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    A checkpoint wrapping the weights under ``"state_dict"`` or ``"model"`` and a ``"module."`` prefix
    (DataParallel) are unwrapped. Raises ``FileNotFoundError`` or ``ValueError`` with the file name.

    Example:
        >>> sd = load_state_dict_file("resnet50_imagenet.pth")   # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / header errors have many types
        raise ValueError(
            f"could not read weights file {path}: {type(exc).__name__}: {exc}. Expected a state dict saved with "
            "torch.save(model.state_dict(), ...) (.pth/.pt) or safetensors (.safetensors)"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} does not hold a state dict (a non-empty mapping of name -> tensor)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _adapt_stem_weight(weight: Tensor, in_channels: int) -> Tensor:
    """Map an RGB stem kernel ``[out, 3, k, k]`` to ``in_channels`` inputs (sum for 1, tiled and rescaled else)."""
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _replace_stem(model: nn.Module, name: str, in_channels: int) -> None:
    if name.startswith("convnext"):
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                         old.padding, bias=old.bias is not None)
    else:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                bias=old.bias is not None)


def _strip_classifier(model: nn.Module, name: str) -> int:
    if name.startswith("convnext"):
        feature_dim = model.classifier[-1].in_features
        model.classifier[-1] = nn.Identity()
    else:
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
    return feature_dim


def _short_list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _load_weights(model: nn.Module, spec: _Spec, path: str | os.PathLike, in_channels: int) -> None:
    state = load_state_dict_file(path)
    state = {k: v for k, v in state.items() if not k.startswith(spec.classifier_prefix)}
    if spec.stem_key in state and state[spec.stem_key].dim() == 4:
        state[spec.stem_key] = _adapt_stem_weight(state[spec.stem_key], in_channels)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short_list(unexpected)}")
        if mismatched:
            parts.append("shape mismatches: " + _short_list(
                [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in mismatched]))
        raise ValueError(f"weights file {path} does not match the architecture; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def torchvision_backbone(
    name: str, *, in_channels: int = 3, weights_path: str | os.PathLike | None = None
) -> tuple[nn.Module, int]:
    """Build a headless torchvision model; returns ``(module, feature_dim)``.

    Args:
        name: one of :data:`TORCHVISION_BACKBONES` (``"resnet50"``, ``"resnext50_32x4d"``, ``"convnext_tiny"``...).
        in_channels: input channels; ``!= 3`` replaces the stem convolution (pretrained stem weights are
            summed over RGB for 1 channel, else tiled and rescaled).
        weights_path: optional local state-dict file (ImageNet weights you already have). Nothing downloads.

    Example:
        >>> net, dim = torchvision_backbone("resnet18")
        >>> dim, net(torch.randn(2, 3, 64, 64)).shape
        (512, torch.Size([2, 512]))
    """
    from torchvision.models import get_model

    key = name.lower()
    if key not in TORCHVISION_BACKBONES:
        raise ValueError(f"unknown torchvision backbone {name!r}; supported: {', '.join(TORCHVISION_BACKBONES)}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    spec = TORCHVISION_BACKBONES[key]
    model = get_model(key, weights=None)
    if in_channels != 3:
        _replace_stem(model, key, in_channels)
    feature_dim = _strip_classifier(model, key)
    if weights_path is not None:
        _load_weights(model, spec, weights_path, in_channels)
    return model, feature_dim
