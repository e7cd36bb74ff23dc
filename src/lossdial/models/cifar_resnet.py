"""CIFAR ResNet-20/32/56 (He et al. 2016, section 4.2), as in the LDAM-DRW and LCT code.

Three stages of ``width``, ``2*width``, ``4*width`` channels (16/32/64 by default), ``n = (depth - 2) / 6``
BasicBlocks per stage, option-A shortcuts (parameter-free: stride-2 subsampling plus zero-padded
channels), BatchNorm, ReLU, global average pooling, Kaiming-normal init of conv/linear weights. The
backbone returns the pooled ``4*width``-d feature; the classifier head lives in
:class:`~lossdial.models.classifier.ConditionedClassifier`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "CifarResNet"]


def _kaiming_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and zero-pad the extra channels."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a parameter-free (option A) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = _PadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet backbone returning the pooled feature ``[B, 4*width]``.

    Args:
        depth: 6n + 2 (20, 32, 56, 110, ...).
        in_channels: input image channels.
        width: channels of the first stage (16 in the paper); stages use width, 2*width, 4*width.

    Works for any input of at least 8x8 pixels (adaptive average pooling).

    Example:
        >>> import torch
        >>> net = CifarResNet(32)
        >>> net.feature_dim, net(torch.randn(2, 3, 32, 32)).shape
        (64, torch.Size([2, 64]))
    """

    def __init__(self, depth: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (e.g. 20, 32, 56, 110), got {depth!r}")
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be positive, got {in_channels} and {width}")
        n = (depth - 2) // 6
        self.depth = depth
        self.feature_dim = 4 * width
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self._in_planes = width
        self.layer1 = self._make_layer(width, n, stride=1)
        self.layer2 = self._make_layer(2 * width, n, stride=2)
        self.layer3 = self._make_layer(4 * width, n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.apply(_kaiming_init)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self._in_planes, planes, s))
            self._in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.pool(out).flatten(1)
