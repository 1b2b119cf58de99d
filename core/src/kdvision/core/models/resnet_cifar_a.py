"""He et al. (2016) CIFAR-10 ResNets with option-A shortcuts: ``resnet20_a`` … ``resnet110_a``.

Architecture facts (He et al., "Deep Residual Learning for Image Recognition", §4.2; the layout of the widely used
BSD-2 weights of ``akamaster/pytorch_resnet_cifar10``): a 3×3 stem with 16 channels, three stages of n basic blocks
with 16/32/64 channels (depth = 6n + 2), and a ``linear`` head on globally pooled features. Where a block halves the
resolution and doubles the width, the shortcut is parameter-free ("option A"): the input is subsampled with stride 2
and the new channels are zeros, half padded before and half after the existing ones.

The released weights predate BatchNorm's ``num_batches_tracked`` counter, so this family's BN layers keep that
counter out of the state_dict: the model's keys equal the files' keys (after ``module.`` is stripped) and the files
load strictly. Those weights expect ImageNet normalisation (mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import MODELS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BatchNorm2dNoCounter(nn.BatchNorm2d):
    """BatchNorm2d whose ``num_batches_tracked`` is not saved or loaded.

    The counter only matters with ``momentum=None``; it is still kept (non-persistent) so that case works.
    """

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        counter = self.num_batches_tracked
        self.register_buffer("num_batches_tracked", counter, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # BatchNorm inserts a missing counter for state_dicts without version metadata; there is none to load here.
        local_metadata = dict(local_metadata or {})
        local_metadata["version"] = self._version
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class PadShortcut(nn.Module):
    """Option-A shortcut: stride-``stride`` subsampling and zero channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlockA(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2dNoCounter(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm2dNoCounter(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetA(nn.Module):
    """CIFAR ResNet of depth 6n + 2 with option-A shortcuts and a ``linear`` head."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"option-A CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2dNoCounter(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlockA(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def _register(depth: int) -> None:
    def build(num_classes: int = 10, in_channels: int = 3) -> CifarResNetA:
        return CifarResNetA(depth, num_classes, in_channels)

    build.__name__ = build.__qualname__ = f"resnet{depth}_a"
    build.__doc__ = f"He et al. CIFAR ResNet-{depth} with option-A (parameter-free) shortcuts."
    last = f"layer3.{(depth - 2) // 6 - 1}"  # taps.py: pre-ReLU final feature = bn2 + shortcut of the last block
    MODELS.add(f"resnet{depth}_a", build, input_size=(3, 32, 32), family="cifar_resnet_optiona",
               mean=IMAGENET_MEAN, std=IMAGENET_STD, blocks=("layer1", "layer2", "layer3"),
               feature_map=("avgpool", "input"), pre_relu=(f"{last}.bn2", f"{last}.shortcut"))
    globals()[build.__name__] = build


for _depth in (20, 32, 44, 56, 110):
    _register(_depth)
