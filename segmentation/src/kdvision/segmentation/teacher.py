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

from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import load_yaml, resolve_config
from kdvision.core.engine.rundir import get_logger
from kdvision.core.models import MODELS
from kdvision.core.recipes.supervised import SupervisedConfig, run_supervised

from .dfad import CONFIG_DIR
from .models import find_local_imagenet_resnet50
from .task import segmentation_task

PRESET: dict[str, Any] = load_yaml(CONFIG_DIR / "teacher_seg.yaml")


@dataclass
class SegTeacherConfig(SupervisedConfig):
    resize: int = 256
    crop_size: int = 128
    dropout: float = 0.5  # ASPP dropout while training the teacher
    pretrained_backbone: str = "auto"  # auto | none | PATH of a torchvision ImageNet ResNet-50 state_dict


def build_parser():
    p = base_parser("Train a segmentation teacher (DeepLabV3); flags of DFAD's train_teacher_seg.py")
    g = p.add_argument_group("teacher (original flags)")
    g.add_argument("--model")
    g.add_argument("--dataset", choices=["camvid", "nyuv2"])
    g.add_argument("--num_classes", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--scheduler", action="store_true", help="StepLR(--step_size, --gamma) at epoch start")
    g.add_argument("--step_size", type=int)
    g.add_argument("--gamma", dest="lr_decay_gamma", type=float)
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int)
    g.add_argument("--test_batch_size", "--test-batch-size", dest="test_batch_size", type=int)
    g.add_argument("--weight_decay", "--weight-decay", dest="weight_decay", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--no_cuda", "--no-cuda", dest="device", action="store_const", const="cpu")
    g.add_argument("--test_only", "--test-only", dest="test_only", action="store_true")
    g.add_argument("--download", action="store_true", help="accepted for compatibility; nothing is downloaded")
    k = p.add_argument_group("kdvision extensions")
    k.add_argument("--resize", type=int, help="short side before cropping and for testing")
    k.add_argument("--crop_size", "--crop-size", dest="crop_size", type=int, help="training crop")
    k.add_argument("--dropout", type=float, help="ASPP dropout")
    k.add_argument("--pretrained_backbone", "--pretrained-backbone", dest="pretrained_backbone",
                   metavar="auto|none|PATH", help="ImageNet ResNet-50 weights for the backbone (never downloaded)")
    k.add_argument("--workers", type=int)
    return p


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


def run(cfg: SegTeacherConfig, *, given: set[str], dry_run: bool = False) -> dict:
    weights = backbone_weights(cfg)
    options: dict[str, Any] = {"dropout": cfg.dropout}
    if weights is not None:
        options["pretrained_backbone"] = weights
    return run_supervised(cfg, segmentation_task(cfg.dataset, cfg.normalize), model_name=cfg.model, given=given,
                          dry_run=dry_run, model_options=options,
                          plan={"backbone": weights or "random initialisation",
                                "data": f"resize {cfg.resize}, crops {cfg.crop_size}, focal loss gamma 2"})


def main(argv: list[str] | None = None) -> None:
    def _main(args_list: list[str]) -> int:
        args = build_parser().parse_args(args_list)
        cfg = resolve_config(SegTeacherConfig, PRESET, args)
        run(cfg, given=set(vars(args)), dry_run=getattr(args, "dry_run", False))
        return 0

    run_cli(_main, argv)
