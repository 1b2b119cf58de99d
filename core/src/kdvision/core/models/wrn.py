"""Wide ResNets (Zagoruyko & Komodakis) in the ZSKT / CMI / RepDistiller layout: ``wrn16_1`` … ``wrn40_2``.

depth = 6n + 4, widths [16, 16k, 32k, 64k], pre-activation blocks (BN → ReLU → conv1 → BN → ReLU → conv2). When a
block changes width, the pre-activated input feeds both ``conv1`` and a 1×1 ``convShortcut``; otherwise the raw input
is the identity shortcut. So ``convShortcut`` exists only where the width changes: ``block1.layer.0`` only for k > 1,
and always ``block2.layer.0`` / ``block3.layer.0``. Final ``bn1`` + ReLU, global average pooling, ``fc``.
"""
from __future__ import annotations


import torch
import torch.nn as nn

from ._init import he_init_
import torch.nn.functional as F

from . import MODELS


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of blocks, kept as ``.layer`` (the key level of the original checkpoints)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(nb_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, drop_rate: float = 0.0,
                 in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        he_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


def _register(depth: int, k: int) -> None:
    def build(num_classes: int = 10, drop_rate: float = 0.0, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, k, num_classes, drop_rate, in_channels)

    build.__name__ = build.__qualname__ = f"wrn{depth}_{k}"
    build.__doc__ = f"WRN-{depth}-{k} (CIFAR)."
    MODELS.add(f"wrn{depth}_{k}", build, aliases=(f"wrn_{depth}_{k}",),
               input_size=(3, 32, 32), family="wrn", blocks=("block1", "block2", "block3"),
               feature_map=("avgpool", "input"), pre_relu=("bn1",))
    globals()[build.__name__] = build


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _k)
