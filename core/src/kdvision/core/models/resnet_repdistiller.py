"""CIFAR ResNets of the RepDistiller / mdistiller zoo: ``resnet8`` … ``resnet110``, ``resnet8x4``, ``resnet32x4``.

A 3×3 stride-1 stem (``conv1``, ``bn1``), three stages of n = (depth − 2) / 6 post-activation basic blocks, a
projection ``downsample`` (1×1 conv without bias + BN, keys ``downsample.{0,1}``) wherever a block changes shape,
global average pooling (8×8 at 32 px) and an ``fc`` head. Widths [16, 16, 32, 64] (stem, stage 1–3), or
[32, 64, 128, 256] for the ×4 variants (whose ``layer1.0`` therefore has a ``downsample`` too).

Not to be confused with ``resnet20_a`` … (He et al. option-A shortcuts, ``linear`` head).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._init import he_init_
import torch.nn.functional as F

from . import MODELS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class RepDistillerResNet(nn.Module):
    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[1], n, 1)
        self.layer2 = self._make_layer(widths[2], n, 2)
        self.layer3 = self._make_layer(widths[3], n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        he_init_(self, zero_linear_bias=False)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


_SPECS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


def _register(name: str) -> None:
    depth, widths = _SPECS[name]

    def build(num_classes: int = 10, in_channels: int = 3) -> RepDistillerResNet:
        return RepDistillerResNet(depth, widths, num_classes, in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"RepDistiller CIFAR ResNet-{depth}, widths {widths}."
    # taps.py: pre-ReLU final feature = bn2 of the last block + its identity, which is the ``downsample`` output
    # where the block has one (n = 1) and else the block's input, i.e. the previous block's output
    n = (depth - 2) // 6
    identity = "layer3.0.downsample" if n == 1 else f"layer3.{n - 2}"
    MODELS.add(name, build, input_size=(3, 32, 32), family="repdistiller_resnet",
               blocks=("layer1", "layer2", "layer3"), feature_map=("avgpool", "input"),
               pre_relu=(f"layer3.{n - 1}.bn2", identity))
    globals()[name] = build


for _name in _SPECS:
    _register(_name)
