"""Backbone registry and model factory.

``BACKBONES`` maps a name to a builder ``builder(*, in_channels, input_shape, **kw) -> (module, feature_dim)``.
Register a new backbone by adding an entry; :func:`build_backbone` and :func:`build_model` pick it up.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial

import torch
from torch import nn

from .cifar_resnet import CifarResNet
from .classifier import ConditionedClassifier
from .mlp import MLPBackbone
from .small_cnn import SmallCNN
from .torchvision_backbones import TORCHVISION_BACKBONES, torchvision_backbone

__all__ = ["BACKBONES", "build_backbone", "build_model", "count_parameters"]

Builder = Callable[..., tuple[nn.Module, int]]


def _build_cifar_resnet(depth: int, *, in_channels: int, input_shape, width: int = 16):
    net = CifarResNet(depth, in_channels=in_channels, width=width)
    return net, net.feature_dim


def _build_small_cnn(*, in_channels: int, input_shape, width: int = 32):
    net = SmallCNN(in_channels=in_channels, width=width)
    return net, net.feature_dim


def _build_mlp(*, in_channels: int, input_shape, in_features: int | None = None,
               hidden: Sequence[int] = (256, 256), dropout: float = 0.0, batchnorm: bool = False):
    if input_shape is not None:
        from_shape = math.prod(int(s) for s in input_shape)
        if in_features is not None and in_features != from_shape:
            raise ValueError(f"mlp: in_features={in_features} disagrees with input_shape={tuple(input_shape)} "
                             f"({from_shape} features)")
        in_features = from_shape
    if in_features is None:
        raise ValueError("backbone 'mlp' needs the input size: pass input_shape=(n_features,) "
                         "(or (C, H, W)) or in_features=n")
    net = MLPBackbone(in_features, hidden=hidden, dropout=dropout, batchnorm=batchnorm)
    return net, net.feature_dim


def _build_torchvision(name: str, *, in_channels: int, input_shape, weights_path=None):
    return torchvision_backbone(name, in_channels=in_channels, weights_path=weights_path)


#: name -> builder(*, in_channels, input_shape, **kw) -> (module, feature_dim).
BACKBONES: dict[str, Builder] = {
    "resnet20": partial(_build_cifar_resnet, 20),
    "resnet32": partial(_build_cifar_resnet, 32),
    "resnet56": partial(_build_cifar_resnet, 56),
    "mlp": _build_mlp,
    "small_cnn": _build_small_cnn,
    **{name: partial(_build_torchvision, name) for name in TORCHVISION_BACKBONES},
}


def _resolve_name(name: str) -> str:
    key = name.strip().lower()
    if key.startswith("tv:"):
        key = key[3:]
        if key not in TORCHVISION_BACKBONES:
            raise ValueError(f"unknown torchvision backbone {name!r}; supported: "
                             + ", ".join(f"tv:{n}" for n in TORCHVISION_BACKBONES))
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)} "
                         "(torchvision names may be prefixed with 'tv:')")
    return key


def _check_kwargs(name: str, builder: Builder, kwargs: dict) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p, v in params.items()
               if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in ("in_channels", "input_shape")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"backbone {name!r} got unknown argument(s) {', '.join(unknown)}; "
                        f"it accepts: {', '.join(allowed) or '(none)'}")


def _resolve_in_channels(in_channels: int | None, input_shape) -> int:
    if input_shape is not None:
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) == 3:
            if in_channels is not None and in_channels != input_shape[0]:
                raise ValueError(f"in_channels={in_channels} disagrees with input_shape={input_shape} "
                                 f"(channels first: {input_shape[0]})")
            return input_shape[0]
    return 3 if in_channels is None else in_channels


def build_backbone(name: str, *, in_channels: int | None = None, input_shape: Sequence[int] | None = None,
                   **kw) -> tuple[nn.Module, int]:
    """Build a registered backbone; returns ``(module, feature_dim)``.

    Args:
        name: a key of :data:`BACKBONES` -- ``"resnet20"``, ``"resnet32"``, ``"resnet56"`` (CIFAR ResNets),
            ``"small_cnn"``, ``"mlp"``, or a torchvision name (``"resnet50"``, ``"tv:resnet50"``,
            ``"convnext_tiny"``, ...).
        in_channels: input channels; defaults to ``input_shape[0]`` for a ``(C, H, W)`` shape, else 3.
        input_shape: shape of one sample without the batch dimension; required by ``"mlp"`` unless
            ``in_features`` is given.
        **kw: backbone options (``width``, ``hidden``, ``dropout``, ``batchnorm``, ``weights_path``, ...);
            unknown ones raise ``ValueError`` naming them and the valid ones.

    Example:
        >>> net, dim = build_backbone("mlp", input_shape=(1, 8, 8), hidden=(32,))
        >>> dim
        32
    """
    key = _resolve_name(name)
    builder = BACKBONES[key]
    _check_kwargs(key, builder, kw)
    channels = _resolve_in_channels(in_channels, input_shape)
    return builder(in_channels=channels, input_shape=None if input_shape is None else tuple(input_shape), **kw)


def build_model(
    backbone: str,
    num_classes: int,
    lambda_dim: int = 0,
    film: str | None = "identity",
    film_hidden: int = 128,
    placement: str = "features",
    in_channels: int | None = None,
    input_shape: Sequence[int] | None = None,
    *,
    seed: int | None = None,
    head: str = "linear",
    head_scale: float | None = None,
    **backbone_kwargs,
) -> ConditionedClassifier:
    """Build ``backbone -> [FiLM(lambda)] -> linear or cosine head`` as a :class:`ConditionedClassifier`.

    Args:
        backbone: backbone name (see :func:`build_backbone`).
        num_classes: number of logits (2 for binary tasks).
        lambda_dim: size of the encoded lambda (``LambdaSpace.dim``); 0 builds an unconditioned model.
        film: ``"identity"``, ``"reference"`` or ``None``.
        film_hidden: hidden width of the FiLM MLPs.
        placement: ``"features"`` (FiLM before the linear layer) or ``"logits"`` (after it).
        in_channels, input_shape: as in :func:`build_backbone`.
        head: ``"linear"`` or ``"cosine"`` (normalised features and weights, logits = ``head_scale`` * cosine).
        head_scale: the cosine head's scale.
        seed: if given, parameters are initialised from ``torch.manual_seed(seed)`` inside a forked RNG
            state, so the global RNG is left untouched and the same seed gives the same weights.
        **backbone_kwargs: forwarded to the backbone builder.

    Example:
        >>> model = build_model("small_cnn", num_classes=2, lambda_dim=1, input_shape=(1, 8, 8), width=8)
        >>> model(torch.randn(4, 1, 8, 8), z=torch.tensor([0.0])).shape
        torch.Size([4, 2])
    """
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        net, feature_dim = build_backbone(backbone, in_channels=in_channels, input_shape=input_shape,
                                          **backbone_kwargs)
        return ConditionedClassifier(net, feature_dim, num_classes, lambda_dim=lambda_dim, film=film,
                                     film_hidden=film_hidden, placement=placement, head=head,
                                     head_scale=head_scale)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``).

    Example:
        >>> count_parameters(nn.Linear(64, 10))
        650
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
