"""CIFAR ResNet-18/34/50 in the DAFL / DFAD / CMI / RepDistiller ``resnetv2`` layout.

``resnet18`` = DFAD ``ResNet18_8x`` = RepDistiller / mdistiller CIFAR ``ResNet18``; ``resnet34`` = ``ResNet34_8x``;
``resnet50`` = RepDistiller / mdistiller CIFAR ``ResNet50`` (the ``res50`` teacher of SDD's tables).

A 3×3 stride-1 stem without max-pool, post-activation residual blocks in four stages (64/128/256/512 planes, strides
1/2/2/2), a projection ``shortcut`` (1×1 conv without bias + BN) where the shape changes, global average pooling and a
``linear`` head. ResNet-18/34 use basic blocks (``conv1``, ``conv2``); ResNet-50 uses bottlenecks (``conv1`` 1×1,
``conv2`` 3×3 carrying the stride, ``conv3`` 1×1 to 4× the planes, ``bn1..3``). Pooling is adaptive, which equals DFAD's
fixed ``avg_pool2d(·, 4)`` on 32×32 inputs and also accepts other sizes (SDD's 224-px CUB-200 variant of ResNet50,
:mod:`.cub200`).

The capitalised aliases (``ResNet18``, ``ResNet50``) are the names of RepDistiller's / mdistiller's CIFAR model table;
in mdistiller's and SDD's *ImageNet* table the same names mean torchvision's ResNets (``resnet18_imagenet`` …, see
:data:`kdvision.core.models.mobilenetv1.SDD_IMAGENET_MODELS`).
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


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 (× ``expansion``) with a projection ``shortcut`` where the shape changes."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a CIFAR stem; ``num_blocks`` per stage, e.g. (2, 2, 2, 2) for ResNet-18; ``block``: the residual
    block class (:class:`BasicBlock` or :class:`Bottleneck`)."""

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3,
                 block: type[BasicBlock] | type[Bottleneck] = BasicBlock) -> None:
        super().__init__()
        self.block = block
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        he_init_(self, zero_linear_bias=False)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(self.block(self.in_planes, planes, s))
            self.in_planes = planes * self.block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


_META = dict(input_size=(3, 32, 32), family="cifar_resnet", blocks=("layer1", "layer2", "layer3", "layer4"),
             feature_map=("avgpool", "input"))
# pre_relu (taps.py): the final feature before its ReLU is bn2 + shortcut of layer4's last block


@MODELS.register("resnet18", aliases=("resnet18_8x", "ResNet18"), pre_relu=("layer4.1.bn2", "layer4.1.shortcut"),
                 **_META)
def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


@MODELS.register("resnet34", aliases=("resnet34_8x",), pre_relu=("layer4.2.bn2", "layer4.2.shortcut"), **_META)
def resnet34(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels)


# pre_relu: bn3 + shortcut of layer4's last bottleneck (an empty Sequential there: its output is the block input)
@MODELS.register("resnet50", aliases=("ResNet50", "resnet50_cifar"), pre_relu=("layer4.2.bn3", "layer4.2.shortcut"),
                 **_META)
def resnet50(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """RepDistiller / mdistiller CIFAR ResNet-50 (``resnetv2``): bottlenecks 3/4/6/3, ``linear`` 2048 → K."""
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels, block=Bottleneck)
