"""VGG with BatchNorm for CIFAR, RepDistiller / mdistiller layout: ``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

Five blocks ``block0`` … ``block4``; each is a Sequential of [Conv3×3 (with bias), BN, ReLU] repeated, with the
block's final ReLU left out of the Sequential and applied in ``forward`` (so the keys are ``blockX.{0,1}``,
``blockX.{3,4}``, ``{6,7}``, ``{9,10}``). A 2×2 max-pool follows blocks 0–2 always and block 3 only for 64-px inputs, as
in the original (32-px inputs run block 4 at 4×4); then adaptive average pooling and ``classifier`` Linear(512 → K).
"""
from __future__ import annotations


import torch
import torch.nn as nn

from ._init import he_init_
import torch.nn.functional as F

from . import MODELS

CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    #: input heights at which the max-pool after block 3 is applied (the original applies it only at 64 px)
    pool3_heights = (64,)

    def __init__(self, cfg: list[list[int]], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.block0 = _make_block(cfg[0], in_channels)
        self.block1 = _make_block(cfg[1], cfg[0][-1])
        self.block2 = _make_block(cfg[2], cfg[1][-1])
        self.block3 = _make_block(cfg[3], cfg[2][-1])
        self.block4 = _make_block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        he_init_(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h in self.pool3_heights:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        x = torch.flatten(self.pool4(x), 1)
        return self.classifier(x)


def _register(name: str) -> None:
    def build(num_classes: int = 10, in_channels: int = 3) -> VGG:
        return VGG(CFGS[name], num_classes, in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name.upper()} with BatchNorm, CIFAR layout."
    MODELS.add(name, build, aliases=(f"{name}_bn",), input_size=(3, 32, 32), family="vgg_bn",
               blocks=("block0", "block1", "block2", "block3", "block4"), feature_map=("pool4", "input"),
               pre_relu=("block4",))
    globals()[name] = build


for _name in CFGS:
    _register(_name)
