"""SDD's 224-px CUB-200-2011 variants of the CIFAR zoo (its ``modify_*_for_cub200``), as a build option.

>>> create_model("resnet32x4", num_classes=200, cub=True)      # conv1 → 7×7 stride 2; map 28×28 at 224 px

``reference/sdd.md`` §5.3 and ``reference/models.md`` §4.2. The variant is the registered architecture with its stem
replaced; every replaced module keeps its name, so the state_dict keys are the original's (only the stem's weight
shapes differ from the CIFAR checkpoints: CUB teachers come from SDD's ``cub200`` folder). Per architecture:

=============================  ======================================================  ==========================
architecture                   change                                                  map before pooling, 224 px
=============================  ======================================================  ==========================
resnet8x4, resnet32x4          ``conv1`` → Conv7×7 stride 2 pad 3                       256 × 28 × 28
resnet50 (CIFAR ``ResNet50``)  ``conv1`` → Conv7×7 stride 2 pad 3                       2048 × 14 × 14
shufflenetv1                   ``conv1`` → Conv7×7 stride 2 pad 3 (24 channels)         960 × 14 × 14
mobilenetv2                    ``conv1`` → [Conv7×7 s2 pad 3, BN, ReLU, MaxPool 2×2]    1280 × 7 × 7
vgg8 … vgg19                   none (the head's class count only)                      512 × 28 × 28
=============================  ======================================================  ==========================

The originals' fixed pools (``AvgPool2d(28)`` / ``(14)``, MobileNetV2's ``AvgPool2d(8, ceil_mode=True)`` on its 7×7
map) cover the whole map at 224 px, so they equal the zoo's adaptive global pooling there; the final-feature-map
metadata of :mod:`kdvision.core.taps` (SDD's tap point) stays valid. VGG skips ``pool3`` below 64 px and at 224 px
alike, so block 4 runs at 28×28, as in SDD.

ShuffleV2 has no variant: SDD's class hard-codes ``avg_pool2d(·, 4)``, which does not fit a 224-px input, and SDD
reports no ShuffleV2 result on CUB. Other architectures have no ``modify_*_for_cub200`` in SDD. Both are a
:class:`~kdvision.core.errors.ConfigError`.

New stem modules get PyTorch's default initialisation (as modules replaced after construction do in the original).
The built model is tagged ``kd_variant = "cub200"``; its registry name (``kd_name``) is the architecture's.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import ConfigError

#: the input size the variants are made for: SDD's CUB pipeline crops 224 px (``data.cub200``)
CUB200_INPUT_SIZE = (3, 224, 224)


def _stem_7x7(conv: nn.Conv2d) -> nn.Conv2d:
    return nn.Conv2d(conv.in_channels, conv.out_channels, 7, stride=2, padding=3, bias=conv.bias is not None)


def _replace_conv1(model: nn.Module) -> None:
    model.conv1 = _stem_7x7(model.conv1)


def _mobilenetv2_stem(model: nn.Module) -> None:
    conv = model.conv1[0]
    model.conv1 = nn.Sequential(  # keys conv1.0 (conv) and conv1.1 (BN), as the CIFAR stem's
        _stem_7x7(conv),
        nn.BatchNorm2d(conv.out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
    )


def _head_only(model: nn.Module) -> None:
    """Nothing to change: the class count is the builder's ``num_classes``."""


#: canonical registry name → in-place adapter
CUB200_ADAPTERS: dict[str, Callable[[nn.Module], None]] = {
    "resnet8x4": _replace_conv1,
    "resnet32x4": _replace_conv1,
    "resnet50": _replace_conv1,
    "shufflenetv1": _replace_conv1,
    "mobilenetv2": _mobilenetv2_stem,
    **{name: _head_only for name in ("vgg8", "vgg11", "vgg13", "vgg16", "vgg19")},
}

_REFUSED = {
    "shufflenetv2": "SDD's ShuffleV2 hard-codes avg_pool2d(., 4), which does not fit 224-px CUB-200 inputs, and SDD "
                    "reports no ShuffleV2 result on CUB",
}


def cub200_models() -> list[str]:
    """Canonical names of the architectures with a CUB-200 variant."""
    return sorted(CUB200_ADAPTERS)


def check_cub200(name: str) -> str:
    """The canonical name of ``name`` when it has a CUB-200 variant; else a one-line :class:`ConfigError`."""
    from . import MODELS

    key = MODELS.resolve(name)
    if key in CUB200_ADAPTERS:
        return key
    why = _REFUSED.get(key, "SDD defines no CUB-200 (224 px) variant of it")
    raise ConfigError(f"model {name} has no CUB-200 variant: {why}; models with one: {', '.join(cub200_models())}")


def to_cub200(model: nn.Module, name: str | None = None) -> nn.Module:
    """Turn a freshly built zoo model into SDD's CUB-200 variant, in place (and return it).

    ``name``: its registry name (default: the ``kd_name`` tag ``create_model`` sets)."""
    name = name or getattr(model, "kd_name", None)
    if name is None:
        raise ConfigError(f"{type(model).__name__} has no registry name; pass the name of the architecture")
    CUB200_ADAPTERS[check_cub200(name)](model)
    model.kd_variant = "cub200"
    return model
