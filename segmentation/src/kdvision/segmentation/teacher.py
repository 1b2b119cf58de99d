"""Segmentation teacher training: DFAD's ``train_teacher_seg.py`` (``segmentation/train_teacher_seg.py``).

DeepLabV3-ResNet50 (output stride 8, ASPP rates 12/24/32, dropout 0.5), focal loss (gamma 2, ignore 255), SGD
momentum 0.9, wd 5e-4, batch 16, 200 epochs, StepLR(``--step_size`` 100, x0.1) at epoch start with
``--scheduler``; 128-px crops of 256-short-side images; best test mIoU selects the exported weights
``<output>/{dataset}-{model}.pt`` (raw state_dict: the format ``dfad_camvid.py --ckpt`` expects).

The original starts from an ImageNet-pretrained backbone downloaded by torchvision. kdvision never downloads:
``--pretrained_backbone auto`` (default) uses torchvision's ResNet-50 weights when they are already in torch's
hub cache, ``PATH`` names a file, ``none`` trains from scratch; a missing file is reported in one line.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from kdvision.core.engine.config import load_yaml, param
from kdvision.core.engine.rundir import get_logger
from kdvision.core.errors import ConfigError
from kdvision.core.models import MODELS
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.supervised import SupervisedConfig, SupervisedRecipe

from .dfad import CONFIG_DIR
from .models import find_local_imagenet_resnet50
from .task import segmentation_task

PRESET: dict[str, Any] = load_yaml(CONFIG_DIR / "teacher_seg.yaml")
SEG_TEACHER_FLAGS = {"lr_decay_gamma": ["--gamma"], "test_only": ["--test_only", "--test-only"],
                     "crop_size": ["--crop-size"], "pretrained_backbone": ["--pretrained-backbone"]}


@dataclass
class SegTeacherConfig(SupervisedConfig):
    resize: int = param(256, "short side before cropping and for testing", min=1)
    crop_size: int = param(128, "training crop", min=1)
    dropout: float = param(0.5, "ASPP dropout while training the teacher", min=0, max=1)
    pretrained_backbone: str = param("auto", "ImageNet ResNet-50 weights for the backbone (never downloaded): "
                                     "auto | none | PATH")

    def validate(self) -> None:
        super().validate()
        if self.dataset not in ("camvid", "nyuv2"):
            raise ConfigError(f"invalid dataset: {self.dataset!r} (valid: camvid, nyuv2)")


def backbone_weights(cfg: SegTeacherConfig) -> str | None:
    """The ImageNet backbone file to start from, or None (training from scratch, said in one log line)."""
    if "pretrained_backbone" not in inspect.signature(MODELS.get(cfg.model)).parameters:
        return None
    choice = str(cfg.pretrained_backbone)
    if choice.lower() == "none":
        return None
    if choice.lower() != "auto":
        return choice
    found = find_local_imagenet_resnet50()
    if found is None:
        get_logger().warning("note: no ImageNet ResNet-50 weights in torch's hub cache; training the backbone from "
                             "scratch (the paper's teachers start from ImageNet: put resnet50-0676ba61.pth in "
                             "$TORCH_HOME/hub/checkpoints or pass --pretrained_backbone PATH)")
        return None
    return str(found)


class SegTeacherRecipe(SupervisedRecipe):
    config_class = SegTeacherConfig

    def check(self) -> None:
        cfg = self.cfg
        weights = backbone_weights(cfg)
        self.model_options = {"dropout": cfg.dropout, **({"pretrained_backbone": weights} if weights else {})}
        self.extra_plan = {"backbone": weights or "random initialisation",
                           "data": f"resize {cfg.resize}, crops {cfg.crop_size}, focal loss gamma 2"}
        super().check()


ENTRY = Entry(SegTeacherRecipe, lambda cfg: segmentation_task(cfg.dataset, cfg.normalize),
              script="train_teacher_seg", preset=PRESET, aliases=SEG_TEACHER_FLAGS,
              compat=dict(gpu=False, no_cuda=True, fp16=False),
              description="Train a segmentation teacher (DeepLabV3); flags of DFAD's train_teacher_seg.py")


def main(argv: list[str] | None = None) -> None:
    ENTRY.main(argv)
