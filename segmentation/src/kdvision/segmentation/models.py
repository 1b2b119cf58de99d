"""Segmentation models: DFAD's DeepLabV3 teacher and student, and smp DeepLabV3+ models.

Registered in core's ``MODELS`` with ``task="segmentation"`` (``list_models(task="segmentation")``):

``deeplabv3_resnet50``
    DFAD's teacher (``models.md`` §5.4). Built from torchvision parts (ResNet-50 with
    ``replace_stride_with_dilation=[False, True, True]``, ``IntermediateLayerGetter`` up to ``layer4``, ``DeepLabHead``)
    because torchvision's key layout *is* DFAD's: the released ``camvid-`` / ``nyuv2-deeplabv3_resnet50.pt`` load
    with ``strict=True`` and no key map. The one difference from torchvision's ``deeplabv3_resnet50`` is the ASPP:
    DFAD's ``DeepLabHead`` uses rates (12, 24, 32), torchvision's default is (12, 24, 36). Both load the same
    checkpoint without error, but only (12, 24, 32) reproduces the teacher, so the head is built with
    ``atrous_rates=DFAD_ASPP_RATES`` (the third dilated branch has dilation = padding = 32). No auxiliary head.
``deeplabv3_mobilenetv2``
    DFAD's student (``models.md`` §5.5): a MobileNetV2 of output stride 8 without the final 1280-channel conv
    (320-channel features) and the same ``DeepLabHead`` (rates 12/24/32, as in the original, which uses one head
    class for both models). torchvision's MobileNetV2 cannot be reused: its blocks nest ``Conv2dNormActivation``
    (keys ``conv.0.0.weight``) where DFAD's are flat (``conv.0.weight`` ... ``conv.7.*``), and DFAD pads
    differently ("fixed padding", see :class:`FixedPaddingInvertedResidual`).
``deeplabv3plus_resnet50``, ``deeplabv3plus_mobilenetv2``
    segmentation-models-pytorch ``DeepLabV3Plus`` (``encoder_weights=None``, ``encoder_output_stride=8``, which smp
    supports for both encoders) for users who train their own teachers and students with other architectures.
    smp is imported inside the builders only, so importing ``kdvision.segmentation`` stays fast.

Common contract: ``forward(x)`` returns a plain logits tensor ``(B, K, H, W)`` at the input size (bilinear,
``align_corners=False``), never torchvision's ``{"out": ...}`` dict; ``dropout`` is the ASPP projection dropout
(0.5 while training a teacher and for DFAD's student; the KD scripts rebuild the teacher with 0). Inputs are
normalised with mean = std = 0.5 (DFAD's segmentation checkpoints, ``models.md`` §11). Nothing is ever downloaded:
``pretrained_backbone`` takes a local file, and :func:`find_local_imagenet_resnet50` finds torchvision's ResNet-50
weights when torch's hub cache already holds them.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.checkpoint import (
    check_state_dict,
    extract_state_dict,
    read_checkpoint,
)
from kdvision.core.errors import CheckpointError, ConfigError
from kdvision.core.models import MODELS
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.deeplabv3 import DeepLabV3 as _TVDeepLabV3

__all__ = [
    "DFAD_ASPP_RATES",
    "IMAGENET_RESNET50_FILES",
    "DeepLabV3",
    "FixedPaddingInvertedResidual",
    "MobileNetV2OS8",
    "deeplabv3_mobilenetv2",
    "deeplabv3_resnet50",
    "deeplabv3plus_mobilenetv2",
    "deeplabv3plus_resnet50",
    "find_local_imagenet_resnet50",
    "load_imagenet_resnet50_backbone",
]

DFAD_ASPP_RATES = (12, 24, 32)
# torchvision's ImageNet ResNet-50 (IMAGENET1K_V1) files, as named in torch's hub cache; the original's teachers
# start from these weights (``pretrained=True`` in torchvision < 0.13).
IMAGENET_RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth")

_META = {"task": "segmentation", "input_size": (3, 128, 128), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class DeepLabV3(_TVDeepLabV3):
    """torchvision's DeepLabV3 (same modules and keys) whose ``forward`` returns the logits tensor upsampled to the
    input size, as DFAD's ``_SimpleSegmentationModel`` does; there is never an auxiliary classifier."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__(backbone, classifier, aux_classifier=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        logits = self.classifier(self.backbone(x)["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


def _deeplab_head(in_channels: int, num_classes: int, dropout: float) -> DeepLabHead:
    """DFAD's DeepLabHead: ASPP (1x1, rates 12/24/32, image pooling; 256 channels) -> projection + dropout ->
    3x3 conv/BN/ReLU -> 1x1 classifier. PyTorch's default initialisation, as in the original."""
    head = DeepLabHead(in_channels, num_classes, atrous_rates=DFAD_ASPP_RATES)
    for m in head.modules():
        if isinstance(m, nn.Dropout):
            m.p = dropout
    return head


# ------------------------------------------------------------------------------------------------ ResNet-50 teacher

def find_local_imagenet_resnet50() -> Path | None:
    """torchvision's ImageNet ResNet-50 weights in torch's hub cache (``torch.hub.get_dir()/checkpoints``), or None.

    Looks for the file names of :data:`IMAGENET_RESNET50_FILES` only; never downloads."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in IMAGENET_RESNET50_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def load_imagenet_resnet50_backbone(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Load a torchvision-format ResNet-50 state_dict file into ``backbone`` (a ResNet-50 cut before ``fc``).

    ``fc.*`` is dropped; BatchNorm ``num_batches_tracked`` may be absent (torchvision's 2017 files predate it);
    anything else that does not match is one :class:`CheckpointError` line."""
    sd = extract_state_dict(read_checkpoint(path), source=str(path))
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value
    problems = check_state_dict(backbone, sd)
    if problems:
        raise CheckpointError(f"pretrained_backbone {path} is not a torchvision ImageNet ResNet-50 state_dict: "
                              + "; ".join(problems))
    backbone.load_state_dict(sd, strict=True)
    return backbone


@MODELS.register("deeplabv3_resnet50", family="dfad_deeplabv3_resnet", **_META)
def deeplabv3_resnet50(num_classes: int = 11, dropout: float = 0.5,
                       pretrained_backbone: str | Path | None = None) -> DeepLabV3:
    """DFAD's DeepLabV3-ResNet50 teacher: torchvision ResNet-50 backbone with output stride 8 (layers 3 and 4
    dilated), DeepLabHead with ASPP rates (12, 24, 32), no auxiliary head; logits upsampled to the input size.

    Keys are DFAD's (``backbone.*``, ``classifier.0.convs.*``, ``classifier.0.project.*``, ``classifier.{1,2,4}.*``),
    so DFAD's released teachers load strictly. ``dropout``: ASPP projection dropout (0.5 to train a teacher, 0 for
    KD). ``pretrained_backbone``: path of a local torchvision ImageNet ResNet-50 state_dict (e.g. the file
    :func:`find_local_imagenet_resnet50` returns) loaded into the backbone; None keeps torchvision's random init."""
    dropout = _check_dropout(dropout)
    resnet = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
    if pretrained_backbone is not None:
        load_imagenet_resnet50_backbone(backbone, pretrained_backbone)
    return DeepLabV3(backbone, _deeplab_head(2048, num_classes, dropout))


# ------------------------------------------------------------------------------------------- MobileNetV2 student

def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                   groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]


class FixedPaddingInvertedResidual(nn.Module):
    """DFAD's MobileNetV2 block with "fixed padding".

    The block input is zero-padded by ``dilation`` on every side *before* the block, and all its convolutions use
    padding 0. For the expansion-free block (``expand_ratio == 1``: depthwise conv first) this equals ordinary
    ``padding=dilation``. For expanded blocks the padded ring passes through the 1x1 expansion conv, BN and ReLU6,
    so the depthwise conv sees ``ReLU6(BN(0))`` around the border instead of zeros: outputs within ``dilation``
    pixels of the border differ from ordinary padding (everywhere else they are equal). Keys: ``conv.{0,1,3,4}``
    (``expand_ratio`` 1) or ``conv.{0,1,3,4,6,7}``."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.dilation = dilation
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _conv_bn_relu6(cin, hidden, 1)  # pointwise expansion
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, 0, dilation, groups=hidden)  # depthwise
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]  # pointwise linear
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation  # kernel 3: effective size 2d + 1, total padding 2d, split evenly
        out = self.conv(F.pad(x, (d, d, d, d)))
        return x + out if self.use_residual else out


class MobileNetV2OS8(nn.Module):
    """DFAD's MobileNetV2 feature extractor: output stride 8, 320 output channels, only ``features`` (keys
    ``features.0.{0,1}``, ``features.1.conv.*`` ... ``features.17.conv.*``).

    The stem is a 3x3 stride-2 conv with ordinary padding 1 (BN, ReLU6). Stages (t, c, n, s) are MobileNetV2's;
    once the stride reaches 8 later strides become 1 and the dilation grows by the stride they would have had:
    the 64-channel stage keeps dilation 1, the 96- and 160-channel stages use 2, the 320-channel stage 4.
    Initialisation as the original: Kaiming-normal convolutions (fan-in, ReLU gain), BN weight 1 and bias 0."""

    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn_relu6(3, 32, 3, stride=2, padding=1))]
        cin, current_stride, rate = 32, 2, 1
        for t, c, n, s in self.STAGES:
            if current_stride == output_stride:
                stride, dilation, rate = 1, rate, rate * s
            else:
                stride, dilation, current_stride = s, 1, current_stride * s
            for i in range(n):
                layers.append(FixedPaddingInvertedResidual(cin, c, stride if i == 0 else 1, dilation, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@MODELS.register("deeplabv3_mobilenetv2", family="dfad_deeplabv3_mobilenetv2", **_META)
def deeplabv3_mobilenetv2(num_classes: int = 11, dropout: float = 0.5) -> DeepLabV3:
    """DFAD's DeepLabV3-MobileNetV2 student: :class:`MobileNetV2OS8` (output stride 8, fixed padding, 320-channel
    features) and the teacher's DeepLabHead (ASPP 12/24/32) on 320 channels; ASPP dropout 0.5 as in DFAD's
    scripts; random initialisation (the original's pretrained backbone URL is unusable, ``dfad.md`` §8 #15)."""
    dropout = _check_dropout(dropout)
    backbone = IntermediateLayerGetter(MobileNetV2OS8(output_stride=8), return_layers={"features": "out"})
    return DeepLabV3(backbone, _deeplab_head(320, num_classes, dropout))


# --------------------------------------------------------------------------------------- segmentation-models-pytorch

@functools.cache
def _smp_deeplabv3plus_class() -> type:
    """smp's ``DeepLabV3Plus`` with a forward that accepts any input size (defined on first use: smp is optional)."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:
        raise ConfigError("the deeplabv3plus_* models need segmentation-models-pytorch "
                          "(pip install segmentation-models-pytorch)") from exc

    class SMPDeepLabV3Plus(smp.DeepLabV3Plus):
        """smp DeepLabV3+ (same modules and keys). Inputs whose sides are not multiples of the encoder's output
        stride (e.g. 256x341 CamVid test images) are edge-padded at the bottom/right and the logits cropped back,
        so the output always has the input's size."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            stride = self.encoder.output_stride
            pad_h, pad_w = -h % stride, -w % stride
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            return super().forward(x)[..., :h, :w]

    return SMPDeepLabV3Plus


def _smp_deeplabv3plus(encoder: str, num_classes: int, dropout: float) -> nn.Module:
    cls = _smp_deeplabv3plus_class()
    return cls(encoder_name=encoder, encoder_weights=None, encoder_output_stride=8, classes=num_classes,
               decoder_aspp_dropout=_check_dropout(dropout))


@MODELS.register("deeplabv3plus_resnet50", family="smp", **_META)
def deeplabv3plus_resnet50(num_classes: int = 11, dropout: float = 0.5) -> nn.Module:
    """segmentation-models-pytorch DeepLabV3+ with a ResNet-50 encoder (output stride 8, random init, smp's keys
    ``encoder.*``, ``decoder.*``, ``segmentation_head.*``); logits at the input size. Not a DFAD model."""
    return _smp_deeplabv3plus("resnet50", num_classes, dropout)


@MODELS.register("deeplabv3plus_mobilenetv2", family="smp", **_META)
def deeplabv3plus_mobilenetv2(num_classes: int = 11, dropout: float = 0.5) -> nn.Module:
    """segmentation-models-pytorch DeepLabV3+ with a MobileNetV2 encoder (output stride 8, random init, smp's
    keys); logits at the input size. Not a DFAD model."""
    return _smp_deeplabv3plus("mobilenet_v2", num_classes, dropout)
