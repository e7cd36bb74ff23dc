"""A multi-layer perceptron backbone for tabular (or tiny, flattened image) data."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLPBackbone"]


class MLPBackbone(nn.Module):
    """``Flatten -> [Linear -> (BatchNorm1d) -> ReLU -> (Dropout)] * len(hidden)``.

    Args:
        in_features: number of input features after flattening (e.g. 64 for 1x8x8 images).
        hidden: widths of the hidden layers; ``feature_dim = hidden[-1]`` (``in_features`` if empty).
        dropout: dropout probability after each hidden layer (uses the global RNG; default 0.0 = off).
        batchnorm: insert ``BatchNorm1d`` after each hidden linear layer.

    Example:
        >>> import torch
        >>> net = MLPBackbone(64, hidden=(32, 16))
        >>> net.feature_dim, net(torch.randn(5, 1, 8, 8)).shape
        (16, torch.Size([5, 16]))
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(in_features, int) or isinstance(in_features, bool) or in_features < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        if isinstance(hidden, int):
            hidden = (hidden,)
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_features = in_features
        self.hidden = hidden
        self.feature_dim = hidden[-1] if hidden else in_features
        layers: list[nn.Module] = [nn.Flatten(1)]
        prev = in_features
        for width in hidden:
            layers.append(nn.Linear(prev, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
