"""A backbone plus a (optionally lambda-conditioned) linear classification head.

The backbone runs once per input; FiLM and the linear layer form the *head*. Because FiLM sits after the
backbone, a sweep over K lambda values needs one ``features(x)`` pass and K cheap ``head(f, z)`` passes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .film import FILM_MODES, FiLM

__all__ = ["PLACEMENTS", "ConditionedClassifier"]

#: Valid values of ``ConditionedClassifier(placement=...)``.
PLACEMENTS: tuple[str, ...] = ("features", "logits")

_NEEDS_Z = "this model is conditioned on lambda; pass z = LambdaSpace.encode(...)"


class ConditionedClassifier(nn.Module):
    """``logits = head(features(x), z)`` with an optional FiLM layer conditioned on lambda.

    Args:
        backbone: any module mapping an input batch to ``[B, feature_dim]`` (or ``[B, ...]``, flattened).
        feature_dim: size of the backbone's (flattened) output.
        num_classes: number of logits (binary tasks use 2).
        lambda_dim: size of the encoded lambda ``z``; ``0`` means an unconditioned model.
        film: ``"identity"``, ``"reference"`` (see :class:`~lossdial.models.film.FiLM`) or ``None``.
            ``film=None`` or ``lambda_dim=0`` gives a plain linear head that ignores ``z``.
        film_hidden: hidden width of the FiLM MLPs.
        placement: ``"features"`` -- FiLM on the pooled feature, then ``Linear(F, C)`` (the ResNet-32
            reference); ``"logits"`` -- ``Linear(F, C)`` first, then FiLM on the ``C`` logits (the reference
            for ImageNet backbones).

    ``forward(x, z)`` is exactly ``head(features(x), z)``.

    Example:
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
        >>> model = ConditionedClassifier(backbone, feature_dim=8, num_classes=2, lambda_dim=1)
        >>> model(torch.randn(5, 3, 4), z=torch.tensor([0.3])).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        lambda_dim: int = 0,
        film: str | None = "identity",
        film_hidden: int = 128,
        placement: str = "features",
    ) -> None:
        super().__init__()
        if film is not None and film not in FILM_MODES:
            raise ValueError(f"unknown film {film!r}; valid values: {', '.join(FILM_MODES)} or None")
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; valid placements: {', '.join(PLACEMENTS)}")
        for name, value, low in (("feature_dim", feature_dim, 1), ("num_classes", num_classes, 1),
                                 ("lambda_dim", lambda_dim, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.placement = placement
        self.fc = nn.Linear(feature_dim, num_classes)
        if film is not None and lambda_dim > 0:
            film_dim = feature_dim if placement == "features" else num_classes
            self.film: FiLM | None = FiLM(lambda_dim, film_dim, hidden=film_hidden, mode=film)
            self.lambda_dim = lambda_dim
            self.film_mode: str | None = film
        else:
            self.film = None
            self.lambda_dim = 0
            self.film_mode = None

    @property
    def conditioned(self) -> bool:
        """``True`` if the head has a FiLM layer (then ``z`` is required)."""
        return self.film is not None

    def features(self, x: Tensor) -> Tensor:
        """Backbone output flattened to ``[B, feature_dim]`` (independent of lambda)."""
        return torch.flatten(self.backbone(x), 1)

    def _check_z(self, z: Tensor | None) -> Tensor:
        if z is None:
            raise ValueError(_NEEDS_Z)
        if not isinstance(z, Tensor):
            z = torch.as_tensor(z)
        if z.dim() not in (1, 2) or z.shape[-1] != self.lambda_dim:
            raise ValueError(
                f"z must have shape [B, {self.lambda_dim}], [1, {self.lambda_dim}] or [{self.lambda_dim}] "
                f"(expected lambda_dim={self.lambda_dim}), got shape {list(z.shape)}"
            )
        return z

    def head(self, features: Tensor, z: Tensor | None = None) -> Tensor:
        """Logits ``[B, num_classes]`` from backbone features; ``z`` is ignored by an unconditioned model.

        Example:
            >>> model = ConditionedClassifier(nn.Identity(), feature_dim=4, num_classes=2, lambda_dim=1)
            >>> f = torch.randn(3, 4)
            >>> [model.head(f, torch.tensor([t])).shape[0] for t in (0.0, 1.0)]   # cheap lambda sweep
            [3, 3]
        """
        if self.film is None:
            return self.fc(features)
        z = self._check_z(z)
        if self.placement == "features":
            return self.fc(self.film(features, z))
        return self.film(self.fc(features), z)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        return self.head(self.features(x), z)

    @torch.no_grad()
    def fold_head(self, z: Tensor | None = None) -> nn.Linear:
        """The head at one fixed lambda as a single ``nn.Linear(feature_dim, num_classes)`` (a new module).

        ``fold_head(z)(f)`` matches ``head(f, z)`` up to floating-point rounding. ``z`` must describe one
        lambda (shape ``[d]`` or ``[1, d]``); an unconditioned model returns a copy of its linear layer.

        Example:
            >>> model = ConditionedClassifier(nn.Identity(), 4, 2, lambda_dim=1, film="reference")
            >>> f, z = torch.randn(3, 4), torch.tensor([0.5])
            >>> torch.allclose(model.fold_head(z)(f), model.head(f, z), atol=1e-6)
            True
        """
        weight, bias = self.fc.weight, self.fc.bias
        if self.film is not None:
            z = self._check_z(z)
            if z.dim() == 2 and z.shape[0] != 1:
                raise ValueError(f"fold_head needs a single lambda (z of shape [{self.lambda_dim}] or "
                                 f"[1, {self.lambda_dim}]), got shape {list(z.shape)}")
            scale, shift = self.film.scale_shift(z)
            scale, shift = scale[0], shift[0]
            if self.placement == "features":
                # fc(scale * f + shift) = (W * scale) f + (W shift + b)
                weight, bias = weight * scale, weight @ shift + bias
            else:
                # scale * (W f + b) + shift
                weight, bias = scale[:, None] * weight, scale * bias + shift
        linear = nn.Linear(self.feature_dim, self.num_classes, device=weight.device, dtype=weight.dtype)
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
        return linear
