"""MobileNetV2 for CIFAR in the RepDistiller / mdistiller layout (their ``MobileNetV2`` = ``mobile_half``).

Width multiplier 0.5 and expansion 6 by default. Stem ``conv1`` = [Conv3×3 stride 2, BN, ReLU]; seven stages kept
in ``blocks`` (a ModuleList of Sequentials of inverted-residual blocks); every block's ``conv`` is
[pw Conv1×1, BN, ReLU, dw Conv3×3, BN, ReLU, pw-linear Conv1×1, BN] — keys ``conv.{0,1,3,4,6,7}``, also for the
expansion-1 first stage. Then ``conv2`` = [Conv1×1 → 1280, BN, ReLU], global average pooling (2×2 at 32 px) and
``classifier`` = Sequential(Linear(1280 → K)). Stage settings (t, c, n, s): (1,16,1,1), (t,24,2,1), (t,32,3,2),
(t,64,4,2), (t,96,3,1), (t,160,3,2), (t,320,1,1), channel counts scaled by the width multiplier (truncated).

This is not torchvision's ImageNet MobileNetV2 (that one is ``mobilenetv2_imagenet``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._init import he_init_

from . import MODELS


def _conv_bn(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2Cifar(nn.Module):
    def __init__(self, num_classes: int = 10, width_mult: float = 0.5, expansion: int = 6,
                 in_channels: int = 3) -> None:
        super().__init__()
        t = expansion
        settings = [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2),
                    (t, 320, 1, 1)]
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for ratio, c, n, s in settings:
            out = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(channels, out, s if i == 0 else 1, ratio))
                channels = out
            self.blocks.append(nn.Sequential(*stage))
        self.last_channel = _make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn(channels, self.last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        he_init_(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for stage in self.blocks:
            out = stage(out)
        out = self.conv2(out)
        out = torch.flatten(self.avgpool(out), 1)
        return self.classifier(out)


def _make_divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


@MODELS.register("mobilenetv2", aliases=("MobileNetV2", "mobile_half"), input_size=(3, 32, 32),
                 family="repdistiller_mobilenetv2", blocks=("blocks.1", "blocks.2", "blocks.4", "blocks.6"),
                 feature_map=("avgpool", "input"), pre_relu=("conv2.1",))
def mobilenetv2(num_classes: int = 10, width_mult: float = 0.5, in_channels: int = 3) -> MobileNetV2Cifar:
    return MobileNetV2Cifar(num_classes, width_mult=width_mult, expansion=6, in_channels=in_channels)
