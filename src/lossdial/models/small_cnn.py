"""A compact convolutional backbone for tiny images (e.g. 8x8 digits); fast on CPU."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SmallCNN"]


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    """conv3x3(w)-BN-ReLU, conv3x3(w)-BN-ReLU, maxpool 2, conv3x3(2w)-BN-ReLU, global average pool.

    Args:
        in_channels: input image channels.
        width: channels ``w`` of the first two convolutions; ``feature_dim = 2 * width``.

    Example:
        >>> import torch
        >>> net = SmallCNN(in_channels=1, width=8)
        >>> net.feature_dim, net(torch.randn(4, 1, 8, 8)).shape
        (16, torch.Size([4, 16]))
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be positive, got {in_channels} and {width}")
        self.feature_dim = 2 * width
        self.net = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
