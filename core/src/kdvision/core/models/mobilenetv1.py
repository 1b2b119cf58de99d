"""ImageNet MobileNet-V1 (Howard et al., 2017) in the mdistiller / SDD layout: ``mobilenet_v1``.

SDD's ImageNet student called "MobileNetV2" (``MobileNetV2`` / ``MobileNetV2_SDD`` in its ImageNet model table) is
this network, i.e. mdistiller's ``MobileNetV1`` (``reference/sdd.md`` §7, bug #6; ``reference/models.md`` §4.3). It is
registered under its correct name with the aliases ``MobileNetV1`` (mdistiller) and ``sdd_imagenet_mobilenetv2``
(SDD). SDD's own spelling ``MobileNetV2`` cannot be an alias: it already names RepDistiller's CIFAR MobileNetV2
(``mobilenetv2``, width 0.5) — the name SDD's CIFAR-100 configs use — so :data:`SDD_IMAGENET_MODELS` maps the names of
SDD's ImageNet configs to ours instead.

Layout: ``model`` is a Sequential of 14 stages. ``model.0`` = [Conv3×3 stride 2 (3 → 32), BN, ReLU] (keys
``model.0.{0,1}``); ``model.1`` … ``model.13`` are depthwise-separable blocks [depthwise Conv3×3, BN, ReLU, pointwise
Conv1×1, BN, ReLU] (keys ``model.N.{0,1,3,4}``) with widths 64, 128, 128, 256, 256, 512 × 6, 1024, 1024 and stride 2 at
blocks 2, 4, 6 and 12; then global average pooling (7×7 at 224 px; the original's ``AvgPool2d(7)``) and ``fc``
Linear(1024 → K). No convolution has a bias. 164 state_dict tensors. The originals differ from one another only in
where the ReLUs sit (no parameters); this class puts one after every BN, as the paper does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._init import he_init_
from . import MODELS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

#: Model names of mdistiller's / SDD's *ImageNet* model table → toolkit names. In those tables ``ResNet18`` …
#: ``ResNet50`` are torchvision's ResNets (in their CIFAR table the same names are the ``resnetv2`` CIFAR ResNets,
#: our ``resnet18`` / ``resnet50`` and their aliases), and SDD's ``MobileNetV2`` is MobileNet-V1.
SDD_IMAGENET_MODELS: dict[str, str] = {
    "ResNet18": "resnet18_imagenet",
    "ResNet34": "resnet34_imagenet",
    "ResNet50": "resnet50_imagenet",
    "ResNet101": "resnet101_imagenet",
    "MobileNetV1": "mobilenet_v1",
    "MobileNetV2": "mobilenet_v1",
    "MobileNetV2_SDD": "mobilenet_v1",
}


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers = [_conv_bn(in_channels, 32, 2)]
        channels = 32
        for out, stride in BLOCKS:
            layers.append(_conv_dw(channels, out, stride))
            channels = out
        self.model = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        he_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.flatten(self.avgpool(self.model(x)), 1)
        return self.fc(out)


# blocks: the last block of each resolution (56, 28, 14, 7 px at 224); pre_relu: the last pointwise BN (its ReLU is
# in place, the tap copies before it)
@MODELS.register("mobilenet_v1", aliases=("MobileNetV1", "sdd_imagenet_mobilenetv2"), input_size=(3, 224, 224),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, family="mobilenet_v1",
                 blocks=("model.3", "model.5", "model.11", "model.13"), feature_map=("avgpool", "input"),
                 pre_relu=("model.13.4",))
def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV1:
    """ImageNet MobileNet-V1 (SDD's ImageNet "MobileNetV2"), random init."""
    return MobileNetV1(num_classes, in_channels)
