"""CIFAR ResNet-18/34 in the DAFL / DFAD / CMI layout (``resnet18`` = DFAD ``ResNet18_8x``, ``resnet34`` = ``ResNet34_8x``).

A 3×3 stride-1 stem without max-pool, post-activation basic blocks in four stages (64/128/256/512 channels, strides
1/2/2/2), a projection ``shortcut`` (1×1 conv without bias + BN) where the shape changes, global average pooling and a
``linear`` head. Pooling is adaptive, which equals DFAD's fixed ``avg_pool2d(·, 4)`` on 32×32 inputs and also accepts
other sizes. RepDistiller's CIFAR ``ResNet18`` (``resnetv2``) has the same keys.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._init import he_init_
import torch.nn.functional as F

from . import MODELS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a CIFAR stem; ``num_blocks`` per stage, e.g. (2, 2, 2, 2) for ResNet-18."""

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * BasicBlock.expansion, num_classes)
        he_init_(self, zero_linear_bias=False)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


_META = dict(input_size=(3, 32, 32), family="cifar_resnet", blocks=("layer1", "layer2", "layer3", "layer4"),
             feature_map=("avgpool", "input"))
# pre_relu (taps.py): the final feature before its ReLU is bn2 + shortcut of layer4's last block


@MODELS.register("resnet18", aliases=("resnet18_8x",), pre_relu=("layer4.1.bn2", "layer4.1.shortcut"), **_META)
def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


@MODELS.register("resnet34", aliases=("resnet34_8x",), pre_relu=("layer4.2.bn2", "layer4.2.shortcut"), **_META)
def resnet34(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels)
