"""ShuffleNet V1 / V2 for CIFAR in the RepDistiller / mdistiller layout (``ShuffleV1``, ``ShuffleV2``).

Both use a 1×1 stride-1 stem conv (3 → 24, ``conv1`` + ``bn1``), three stages that each halve the resolution, global
average pooling (4×4 at 32 px) and a ``linear`` head.

V1 (groups 3, stages 240/480/960 with 4/8/4 bottlenecks): each bottleneck is a grouped 1×1 ``conv1`` (ungrouped when its
input is the 24-channel stem), channel shuffle, depthwise 3×3 ``conv2``, grouped 1×1 ``conv3``; a stride-2 bottleneck
concatenates a 3×3 average-pooled copy of its input (so it produces out − in new channels), the others add it.

V2 (net size 1: stages 116/232/464, then a 1×1 ``conv2`` to 1024): each stage starts with a down-sampling block with
two branches (``conv1`` dw s2 → ``conv2`` 1×1; ``conv3`` 1×1 → ``conv4`` dw s2 → ``conv5`` 1×1) followed by n basic
blocks that transform half of the channels (``conv1`` 1×1 → ``conv2`` dw → ``conv3`` 1×1); outputs are concatenated
and shuffled in two groups.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import MODELS


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBlock(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)


# ---------------------------------------------------------------------------------------------------------- V1
class ShuffleV1Bottleneck(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        g1 = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ShuffleBlock(g1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(out)


class ShuffleNetV1(nn.Module):
    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3,
                 num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            # the stride-2 block concatenates its (pooled) input, so it only makes out - in new channels
            new = out_planes - self.in_planes if i == 0 else out_planes
            layers.append(ShuffleV1Bottleneck(self.in_planes, new, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


# ---------------------------------------------------------------------------------------------------------- V2
class ShuffleV2Basic(nn.Module):
    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split = int(in_channels * split_ratio)
        c = in_channels - self.split
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class ShuffleV2Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


SHUFFLEV2_CONFIGS = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size: float = 1, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if net_size not in SHUFFLEV2_CONFIGS:
            raise ValueError(f"ShuffleNetV2 net_size must be one of {sorted(SHUFFLEV2_CONFIGS)}, got {net_size}")
        out_channels, num_blocks = SHUFFLEV2_CONFIGS[net_size]
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels: int, blocks: int) -> nn.Sequential:
        layers: list[nn.Module] = [ShuffleV2Down(self.in_channels, out_channels)]
        layers += [ShuffleV2Basic(out_channels) for _ in range(blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


@MODELS.register("shufflenetv1", aliases=("ShuffleV1",), input_size=(3, 32, 32), family="repdistiller_shufflenet",
                 blocks=("layer1", "layer2", "layer3"), feature_map=("avgpool", "input"),
                 pre_relu=("layer3.3.bn3", "layer3.3.shortcut"))
def shufflenetv1(num_classes: int = 10, in_channels: int = 3) -> ShuffleNetV1:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), groups=3, num_classes=num_classes, in_channels=in_channels)


@MODELS.register("shufflenetv2", aliases=("ShuffleV2",), input_size=(3, 32, 32), family="repdistiller_shufflenet",
                 blocks=("layer1", "layer2", "layer3"), feature_map=("avgpool", "input"), pre_relu=("bn2",))
def shufflenetv2(num_classes: int = 10, net_size: float = 1, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(net_size, num_classes=num_classes, in_channels=in_channels)
