"""LeNet-5 for 1×32×32 digits (DFAD / DAFL MNIST teacher and its half-width student).

Layout: three 5×5 convolutions without padding (``conv1``, ``conv2``, ``conv3``), each followed by ReLU, a 2×2
max-pool after ``conv1`` and ``conv2``, then ``fc1`` + ReLU and ``fc2``. On a 32×32 input ``conv3`` produces a 1×1 map,
so the flattened feature has exactly ``conv3``'s channel count.

Published MNIST LeNet-5 weights usually expect ``Normalize(0.1307, 0.3081)`` on an image padded or resized to 32×32.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import MODELS

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class LeNet5(nn.Module):
    """LeNet-5 with configurable widths; the defaults give the classic 61,706-parameter network."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 widths: tuple[int, int, int, int] = (6, 16, 120, 84)) -> None:
        super().__init__()
        c1, c2, c3, f1 = widths
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=5)
        self.fc1 = nn.Linear(c3, f1)
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


# feature_map / pre_relu (taps.py): none. LeNet does not pool globally (it flattens conv3's map into an MLP) and
# applies its ReLUs functionally, so no module's input or output is the final map.
_META = dict(input_size=(1, 32, 32), family="lenet", mean=MNIST_MEAN, std=MNIST_STD,
             blocks=("conv1", "conv2", "conv3"), feature_map=None, pre_relu=None)


@MODELS.register("lenet5", **_META)
def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    return LeNet5(num_classes, in_channels, widths=(6, 16, 120, 84))


@MODELS.register("lenet5_half", **_META)
def lenet5_half(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    return LeNet5(num_classes, in_channels, widths=(3, 8, 60, 42))


class LeNet5GAP(nn.Module):
    """LeNet-5's convolutions with a global-average-pooled head: the smallest zoo classifier with a final feature
    map (SDD's scale-decoupled regions, feature taps), cheap enough to distil on one CPU thread.

    ``conv1`` (5×5) → ReLU → 2×2 max-pool → ``conv2`` (5×5) → ReLU → 2×2 max-pool → ``conv3`` (3×3, padding 1) →
    ``relu`` → ``avgpool`` → ``fc``. On a 32×32 input the final map is ``widths[2]``×5×5.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int] = (6, 16, 120)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.avgpool(self.relu(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


_GAP_META = dict(input_size=(1, 32, 32), family="lenet_gap", mean=MNIST_MEAN, std=MNIST_STD,
                 blocks=("conv1", "conv2", "conv3"), feature_map=("avgpool", "input"), pre_relu=("conv3",),
                 head="fc")


@MODELS.register("lenet5_gap", **_GAP_META)
def lenet5_gap(num_classes: int = 10, in_channels: int = 1) -> LeNet5GAP:
    return LeNet5GAP(num_classes, in_channels, widths=(6, 16, 120))


@MODELS.register("lenet5_gap_half", **_GAP_META)
def lenet5_gap_half(num_classes: int = 10, in_channels: int = 1) -> LeNet5GAP:
    return LeNet5GAP(num_classes, in_channels, widths=(3, 8, 60))
