"""A backbone plus a (optionally lambda-conditioned) classification head: linear or cosine.

The backbone runs once per input; FiLM and the last layer form the *head*. Because FiLM sits after the
backbone, a sweep over K lambda values needs one ``features(x)`` pass and K cheap ``head(f, z)`` passes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .film import FILM_MODES, FiLM

__all__ = ["HEADS", "PLACEMENTS", "ConditionedClassifier", "CosineLinear", "FixedAffine"]

#: Valid values of ``ConditionedClassifier(placement=...)``.
PLACEMENTS: tuple[str, ...] = ("features", "logits")
#: Valid values of ``ConditionedClassifier(head=...)``.
HEADS: tuple[str, ...] = ("linear", "cosine")


class CosineLinear(nn.Module):
    """Normalised classifier: ``logits_c = scale * <f / ||f||, w_c / ||w_c||>`` (no bias).

    The last layer of LDAM (Cao et al. 2019, their ``NormedLinear`` with the loss's ``s`` moved into the
    head): the logits are ``scale`` times cosines in [-1, 1], so ``softmax(logits)`` is a calibrated score
    at temperature ``1/scale``. ``scale`` is a buffer (saved with the weights; stacked per member).

    Example:
        >>> head = CosineLinear(2, 2, scale=30.0)
        >>> with torch.no_grad():
        ...     _ = head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))
        >>> head(torch.tensor([[3.0, 4.0]])).tolist()          # 30 * [0.6, 0.8]
        [[18.0, 24.0]]
    """

    scale: Tensor

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__()
        scale = float(scale)
        if not (0 < scale < float("inf")):
            raise ValueError(f"the cosine head's scale must be a finite number > 0, got {scale}")
        self.in_features, self.out_features = in_features, out_features
        # the reference's init (uniform rows, renormalised); only the direction of each row matters
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1).renorm_(2, 0, 1e-5)
                                   .mul_(1e5))
        self.register_buffer("scale", torch.tensor(scale))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={float(self.scale):g}"

    def forward(self, f: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(f, dim=1), F.normalize(self.weight, dim=1))


class FixedAffine(nn.Module):
    """``h -> scale * h + shift`` with constant per-feature ``scale`` and ``shift`` (FiLM at one lambda)."""

    scale: Tensor
    shift: Tensor

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, h: Tensor) -> Tensor:
        return h * self.scale + self.shift

_NEEDS_Z = "this model is conditioned on lambda; pass z = LambdaSpace.encode(...)"


class ConditionedClassifier(nn.Module):
    """``logits = head(features(x), z)`` with an optional FiLM layer conditioned on lambda.

    The last layer ``fc`` is ``nn.Linear(F, C)`` (``head="linear"``) or :class:`CosineLinear`
    (``head="cosine"``: unit-norm features and weight rows, logits = ``head_scale`` * cosine). With FiLM and a
    cosine head, FiLM modulates the features and the head normalises the modulated features.

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
            for ImageNet backbones; linear head only).
        head: ``"linear"`` (default) or ``"cosine"``.
        head_scale: the cosine head's scale ``s`` (required for ``head="cosine"``, unused otherwise).

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
        head: str = "linear",
        head_scale: float | None = None,
    ) -> None:
        super().__init__()
        if film is not None and film not in FILM_MODES:
            raise ValueError(f"unknown film {film!r}; valid values: {', '.join(FILM_MODES)} or None")
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; valid placements: {', '.join(PLACEMENTS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
        if head == "cosine" and head_scale is None:
            raise ValueError("head='cosine' needs head_scale (the scale s of logits = s * cosine)")
        if head == "cosine" and placement == "logits" and film is not None and lambda_dim > 0:
            raise ValueError("a cosine head takes FiLM on the features (placement='features'): FiLM on its "
                             "logits would rescale the cosines it normalises")
        for name, value, low in (("feature_dim", feature_dim, 1), ("num_classes", num_classes, 1),
                                 ("lambda_dim", lambda_dim, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.placement = placement
        self.head_kind = head
        self.fc: nn.Module = (nn.Linear(feature_dim, num_classes) if head == "linear"
                              else CosineLinear(feature_dim, num_classes, head_scale))
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
        A cosine head does not fold (the normalisation sits between FiLM and the weights): use
        :meth:`fixed_head`.

        Example:
            >>> model = ConditionedClassifier(nn.Identity(), 4, 2, lambda_dim=1, film="reference")
            >>> f, z = torch.randn(3, 4), torch.tensor([0.5])
            >>> torch.allclose(model.fold_head(z)(f), model.head(f, z), atol=1e-6)
            True
        """
        if self.head_kind != "linear":
            raise ValueError(f"a {self.head_kind} head does not fold into one linear layer; use fixed_head(z)")
        weight, bias = self.fc.weight, self.fc.bias
        if self.film is not None:
            scale, shift = self._film_at(z)
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

    def _film_at(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM's ``(scale, shift)``, each ``[F]``, at one lambda ``z`` (shape ``[d]`` or ``[1, d]``)."""
        z = self._check_z(z)
        if z.dim() == 2 and z.shape[0] != 1:
            raise ValueError(f"the head at one lambda needs a single lambda (z of shape [{self.lambda_dim}] or "
                             f"[1, {self.lambda_dim}]), got shape {list(z.shape)}")
        scale, shift = self.film.scale_shift(z)
        return scale[0], shift[0]

    @torch.no_grad()
    def fixed_head(self, z: Tensor | None = None) -> nn.Module:
        """The head at one fixed lambda as a plain module with no lambda input (what ``export`` ships).

        Linear head: :meth:`fold_head` (one ``nn.Linear``). Cosine head: FiLM at that lambda as a
        :class:`FixedAffine` followed by a copy of the :class:`CosineLinear` head (just the copy for an
        unconditioned model). ``fixed_head(z)(f)`` matches ``head(f, z)`` up to floating-point rounding.

        Example:
            >>> model = ConditionedClassifier(nn.Identity(), 4, 2, lambda_dim=1, film="reference",
            ...                               head="cosine", head_scale=16.0)
            >>> f, z = torch.randn(3, 4), torch.tensor([0.5])
            >>> torch.allclose(model.fixed_head(z)(f), model.head(f, z), atol=1e-5)
            True
        """
        if self.head_kind == "linear":
            return self.fold_head(z)
        head = copy.deepcopy(self.fc)
        if self.film is None:
            return head
        scale, shift = self._film_at(z)
        return nn.Sequential(FixedAffine(scale, shift), head)
