"""torchvision ImageNet classifiers under toolkit names (``resnet18_imagenet`` …, ``mobilenetv2_imagenet``).

The classes are torchvision's own, built with ``weights=None``: nothing is ever downloaded. Published torchvision
weights (and mdistiller / SDD / DFAD-Caltech checkpoints in torchvision format) load with ``load_weights``; they
expect ImageNet normalisation. ``num_classes`` replaces the head (e.g. 101 for DFAD's Caltech-101 ResNets).
"""
from __future__ import annotations

import torch.nn as nn

from . import MODELS

# torchvision is imported when one of these models is built, not when the zoo is: importing it costs ~1.5 s (its ops
# pull in torch._dynamo), which every entry script would pay at start-up for models most runs never build.

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_META = dict(input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)


_LAYER4_BLOCKS = {18: 2, 34: 3, 50: 3, 101: 3}


def _register_resnet(depth: int) -> None:
    def build(num_classes: int = 1000, **kwargs) -> nn.Module:
        from torchvision import models as tvm

        return getattr(tvm, f"resnet{depth}")(weights=None, num_classes=num_classes, **kwargs)

    name = f"resnet{depth}_imagenet"
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"torchvision ResNet-{depth} (``fc`` head, ``downsample`` shortcuts), random init."
    # taps.py: pre-ReLU final feature = last BN of layer4's last block + its identity (the previous block's output;
    # layer4's last block has no downsample). torchvision adds in place (``out += identity``), taps.py copes.
    last, bn = _LAYER4_BLOCKS[depth] - 1, "bn2" if depth < 50 else "bn3"
    MODELS.add(name, build, family="torchvision_resnet", blocks=("layer1", "layer2", "layer3", "layer4"),
               feature_map=("avgpool", "input"), pre_relu=(f"layer4.{last}.{bn}", f"layer4.{last - 1}"), **_META)
    globals()[name] = build


for _depth in (18, 34, 50, 101):
    _register_resnet(_depth)


@MODELS.register("mobilenetv2_imagenet", family="torchvision_mobilenetv2",
                 blocks=("features.3", "features.6", "features.13", "features.17"),
                 # forward pools F.adaptive_avg_pool2d(features(x)); the last 1×1 conv's BN precedes a ReLU6 (KDEP)
                 feature_map=("features", "output"), pre_relu=("features.18.1",), pre_relu_activation="relu6",
                 **_META)
def mobilenetv2_imagenet(num_classes: int = 1000, **kwargs) -> nn.Module:
    """torchvision MobileNetV2 (``features.*``, ``classifier.1``), random init; CMI's ``mobilenetv2`` entry."""
    from torchvision import models as tvm

    return tvm.mobilenet_v2(weights=None, num_classes=num_classes, **kwargs)
