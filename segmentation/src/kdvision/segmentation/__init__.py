"""kdvision segmentation: DFAD with DeepLabV3 on CamVid and NYUv2, transfer.

Importing the package registers its models (``deeplabv3_resnet50``, ``deeplabv3_mobilenetv2``, ...) in core's model
registry and its datasets (``camvid``, ``nyuv2``; ``voc2012``, ``cityscapes``, ``ade20k`` for the PSPNet transfer) in
core's dataset registry; core finds it through the
``kdvision.plugins`` entry point, so ``kdvision.core.models.create_model("deeplabv3_resnet50")`` works directly.
"""

__version__ = "0.1.0"

from . import data, models, transfer_data  # noqa: E402,F401  (registration)
