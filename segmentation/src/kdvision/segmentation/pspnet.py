"""PSPNet for KDEP's segmentation transfer: segmentation_models_pytorch's PSPNet with a dilated encoder, an auxiliary
head and an encoder initialised strictly from a backbone file.

What KDEP's semseg PSPNet is (``reference/kdep.md`` §6.2) and what this model does:

================================  ======================================  =============================================
part                              KDEP semseg                             here (smp 0.6 ``PSPNet`` + this module)
================================  ======================================  =============================================
encoder                           ResNet-18/50 (torchvision stem) or      smp's ``resnet18``/``resnet50``/
                                  MobileNetV2, layer3/layer4 dilated 2/4  ``mobilenet_v2`` encoders (torchvision key
                                  (output stride 8)                       names), ``encoder_depth=5`` and smp's
                                                                          ``output_stride=8`` (``make_dilated``: dilation
                                                                          2/4). smp dilates every 3×3 conv of the
                                                                          stage, the first block's included.
pyramid pooling                   bins 1/2/3/6, 1×1 conv to C/4 + BN +    the same bins and widths; smp's bin 1 has no
                                  ReLU per bin, concatenated with input   BN (a 1×1 map)
fusion + classifier               3×3 conv 2C → 512 + BN + ReLU,          smp: **1×1** conv 2C → ``psp_out_channels``
                                  Dropout 0.1, 1×1 conv → classes         (512) + BN + ReLU, Dropout2d
                                                                          (``psp_dropout`` 0.1), **3×3** conv → classes
upsampling                        bilinear to the input size              bilinear ×8 (``align_corners=True``); inputs
                                                                          not divisible by the stride are zero-padded
                                                                          (= the mean after normalisation) and the
                                                                          logits cropped back
auxiliary head (training only)    on layer3: 3×3 conv → 256 + BN + ReLU,  the same, added here (smp's ``aux_params`` is
                                  Dropout 0.1, 1×1 conv; loss × 0.4       an image-level classifier, not this head);
                                                                          ``aux_weight`` 0 removes it
================================  ======================================  =============================================

smp's own defaults (``encoder_depth=3``: no layer3/layer4, output stride 8 without dilation) are reachable with
``encoder_depth=3``; encoder stages a shallower depth leaves unused are frozen (they still load from the file, so the
strict check is the same).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.base import initialization

from kdvision.core.engine.method import freeze_unreached

ENCODERS = ("resnet18", "resnet50", "mobilenet_v2")
#: The torchvision architecture of each encoder, for read_backbone's check.
ENCODER_ARCH = {"resnet18": "R18", "resnet50": "R50", "mobilenet_v2": "mnv2"}
#: Keys of a backbone file that are not part of the encoder (the classifier, replaced by the segmentation heads).
HEAD_KEYS = ("fc.", "classifier.")


class TransferPSPNet(smp.PSPNet):
    """smp's PSPNet whose forward pads to the stride, crops back and adds the auxiliary logits in training."""

    stride: int = 8

    def forward(self, x: torch.Tensor) -> Any:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        features = self.encoder(x)
        logits = self.segmentation_head(self.decoder(features))[..., :h, :w]
        if self.training and self.aux_head is not None:
            aux = F.interpolate(self.aux_head(features[-2]), size=x.shape[-2:], mode="bilinear",
                                align_corners=True)[..., :h, :w]
            return logits, aux
        return logits


def _aux_head(in_channels: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(inplace=True), nn.Dropout2d(dropout), nn.Conv2d(256, classes, 1))


def build_pspnet(encoder: str, classes: int, *, encoder_depth: int = 5, output_stride: int = 8,
                 psp_out_channels: int = 512, psp_dropout: float = 0.1, aux: bool = True,
                 aux_dropout: float = 0.1) -> nn.Module:
    """smp's PSPNet (random weights; never downloads) with the additions of the module docstring.

    ``forward(x)`` returns logits at the input size; in training mode with the auxiliary head, ``(logits, aux)``.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; valid: {', '.join(ENCODERS)}")
    stride = min(output_stride, 2 ** encoder_depth)

    model = TransferPSPNet(encoder_name=encoder, encoder_weights=None, encoder_depth=encoder_depth,
                           psp_out_channels=psp_out_channels, psp_dropout=psp_dropout, classes=classes,
                           upsampling=stride, **({"output_stride": output_stride} if output_stride != 32 else {}))
    model.stride = stride
    model.aux_head = _aux_head(model.encoder.out_channels[-2], classes, aux_dropout) if aux else None
    if model.aux_head is not None:
        initialization.initialize_decoder(model.aux_head)
    if encoder_depth < 5:
        freeze_unused_encoder_stages(model)
    model.kd_name = f"pspnet_{encoder}"
    return model


def freeze_unused_encoder_stages(model: nn.Module) -> list[str]:
    """Stop gradients of encoder parameters a forward pass does not reach (the stages beyond ``encoder_depth``):
    DDP would otherwise wait for their gradients, and an optimizer would decay them for nothing. Returns their
    names."""
    def probe() -> torch.Tensor:
        out = model(torch.zeros(1, 3, 2 * model.stride, 2 * model.stride))
        return (out[0] if isinstance(out, tuple) else out).sum()

    return freeze_unreached(model, probe, within=model.encoder)


def init_encoder(model: nn.Module, path: str, *, encoder: str):
    """Load the backbone file ``path`` (any :func:`~kdvision.core.backbones.read_backbone` input) into the encoder
    strictly, the classifier keys skipped; returns the :class:`~kdvision.core.backbones.LoadReport`. A file for
    another architecture or with a wrong key is one :class:`~kdvision.core.errors.CheckpointError` line."""
    from kdvision.core.backbones import load_backbone, read_backbone

    state = read_backbone(path, arch=ENCODER_ARCH[encoder])
    return load_backbone(model.encoder, state, skip=HEAD_KEYS, what=f"encoder {encoder} from {path}")


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The modules trained at the heads' LR: the pyramid decoder, the segmentation head and the auxiliary head."""
    return [m for m in (model.decoder, model.segmentation_head, getattr(model, "aux_head", None)) if m is not None]
