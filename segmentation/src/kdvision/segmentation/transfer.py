"""KDEP's semantic-segmentation transfer (``reference/kdep.md`` §6.2): ``segmentation/transfer_pspnet.py``.

A PSPNet (:mod:`.pspnet`: segmentation_models_pytorch's, dilated to output stride 8, auxiliary head 0.4) whose
encoder starts from ``--init PATH`` — a KDEP export or anything :func:`kdvision.core.backbones.read_backbone` reads —
loaded strictly except the classifier (the report is logged and recorded in ``summary.json`` under ``init``), or
from random weights with ``--init none`` (the from-scratch baseline, said in one line). Nothing is downloaded.

Training follows the KDEP semseg scripts: SGD momentum 0.9, wd 1e-4, poly LR (power 0.9, per iteration), base LR
0.01 (ResNet) / 0.006 (MobileNetV2) with the decoder and heads at 10x, batch 16, 512 crops, cross-entropy with
ignore label 255, semseg's augmentation (:func:`.transfer_data.semseg_transform`: VOC scales [0.5, 1.5], others
[0.5, 2.0]), ImageNet mean/std; epochs per dataset in the presets ``configs/transfer_{voc,cityscapes,ade20k,camvid}
.yaml`` (the preset is picked by ``--dataset``). Evaluation: single-scale mIoU on the full images of the ``val``
split (the segmentation task's evaluator). The run directory, checkpoints, ``--resume``, ``--dry-run``, torchrun
and the one-line errors are the engine's (:class:`~kdvision.core.recipes.supervised.SupervisedRecipe`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.data import dataset_spec, find_split, get_dataset, labelled_subset
from kdvision.core.engine.config import load_yaml, param, user_values
from kdvision.core.engine.method import unwrap
from kdvision.core.engine.optim import LRSchedule, OptimizerSpec, lr_multiplier_groups
from kdvision.core.engine.runner import param_count
from kdvision.core.errors import ConfigError, DataError
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.supervised import Supervised, SupervisedConfig, SupervisedRecipe, subset_note
from kdvision.core.recipes.task import data_root_of, test_split_evaluator

from .data import IGNORE_INDEX, SegmentationDataset
from .dfad import CONFIG_DIR
from .task import segmentation_task

ENCODERS = ("resnet18", "resnet50", "mobilenet_v2")  # = pspnet.ENCODERS (not imported: smp loads lazily)
#: Preset per dataset (``--dataset``); other segmentation datasets start from the common base preset.
PRESET_FILES = {"voc2012": "transfer_voc.yaml", "voc": "transfer_voc.yaml", "cityscapes": "transfer_cityscapes.yaml",
                "ade20k": "transfer_ade20k.yaml", "ade": "transfer_ade20k.yaml", "camvid": "transfer_camvid.yaml"}
BASE_PRESET = "transfer_base.yaml"
DEFAULT_DATASET = "voc2012"
TRANSFER_FLAGS = {"crop_size": ["--crop-size"], "test_only": ["--test_only", "--test-only"],
                  "head_lr_mult": ["--head-lr-mult"], "aux_weight": ["--aux-weight"]}


def default_lr(encoder: str) -> float:
    """KDEP's base LR: 0.01 for ResNets, 0.006 for MobileNetV2."""
    return 0.006 if encoder == "mobilenet_v2" else 0.01


@dataclass
class TransferPSPNetConfig(SupervisedConfig):
    dataset: str = param(DEFAULT_DATASET, "segmentation dataset (voc2012, cityscapes, ade20k, camvid, ...); picks "
                         "the preset configs/transfer_<dataset>.yaml")
    model: str = param("resnet18", "PSPNet encoder", choices=ENCODERS, flags=("--arch", "--encoder"))
    init: str = param("none", "encoder initialisation: a backbone file (KDEP export, torchvision/kdvision/robustness "
                      "checkpoint), loaded strictly minus the classifier; none = random (the scratch baseline)")
    lr: float | None = param(None, "base (encoder) LR; default 0.01, 0.006 for mobilenet_v2", min=0)
    head_lr_mult: float = param(10.0, "LR multiplier of the decoder and heads", min=0)
    lr_schedule: str = param("poly", "poly: (1 - it/total)^lr_power per iteration; step; cosine",
                             choices=("poly", "step", "cosine"))
    lr_power: float = param(0.9, "poly LR power", min=0)
    encoder_depth: int = param(5, "encoder stages used (smp's encoder_depth; 5 = up to layer4)", choices=(3, 4, 5))
    output_stride: int = param(8, "encoder output stride (8: layer3/layer4 dilated 2/4)", choices=(8, 16, 32))
    psp_out_channels: int = param(512, "channels after the pyramid pooling fusion", min=1)
    psp_dropout: float = param(0.1, "dropout before the classifier", min=0, max=1)
    aux_weight: float = param(0.4, "weight of the auxiliary loss on the second-to-last encoder stage (0: no aux head)",
                              min=0)
    crop_size: int = param(512, "training crop", min=1)
    scale_min: float = param(0.5, "random scale, lower bound", min=0.01)
    scale_max: float = param(2.0, "random scale, upper bound", min=0.01)
    rotate: float = param(10.0, "random rotation range in degrees (+-; applied with probability 0.5)", min=0)
    blur: float = param(0.5, "probability of the 5x5 Gaussian blur", min=0, max=1)
    flip: bool = param(True, "random horizontal flip")
    train_split: str = param("train", "training split (voc2012: train_aug for the SBD-augmented set)")
    eval_split: str = param("val", "evaluation split")
    sync_bn: bool = param(True, "SyncBatchNorm under torchrun on CUDA (KDEP trains with SyncBN on 4 GPUs)")

    def validate(self) -> None:
        super().validate()
        spec = dataset_spec(self.dataset)  # unknown name: one line listing the valid ones
        if spec.task != "segmentation":
            raise ConfigError(f"--dataset {self.dataset} is not a segmentation dataset")
        if self.scale_min > self.scale_max:
            raise ConfigError(f"scale_min {self.scale_min} > scale_max {self.scale_max}")
        if self.lr_schedule == "poly" and not self.lr_power > 0:
            raise ConfigError(f"invalid lr_power: {self.lr_power} (must be > 0)")
        if self.lr is None:
            self.lr = default_lr(self.model)

    def lr_schedule_of(self, steps_per_epoch: int) -> LRSchedule:
        if self.lr_schedule == "poly":
            return LRSchedule("poly", unit="iter", total=self.epochs * steps_per_epoch, power=self.lr_power)
        return super().lr_schedule_of(steps_per_epoch)


def segmentation_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels (255 ignored); 0, not NaN, for a crop with none."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


def transfer_task(cfg: TransferPSPNetConfig):
    """The segmentation task adapter (mIoU evaluator, prediction grids) with semseg's cross-entropy loss."""
    return dataclasses.replace(segmentation_task(cfg.dataset, cfg.normalize), loss=segmentation_ce)


class SegTransfer(Supervised):
    """Supervised segmentation with PSPNet's auxiliary loss: ``CE(main) + aux_weight * CE(aux)``."""

    name = "seg_transfer"

    def __init__(self, *args: Any, aux_weight: float, init_report: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aux_weight = aux_weight
        self.init_report = init_report

    def losses(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x, y = self.next_batch()
        self.model.train()
        with self.autocast():
            out = self.model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        losses = {"loss": self.loss(logits, y)}
        if aux is not None and self.aux_weight:
            losses["loss_aux"] = self.aux_weight * self.loss(aux, y)
        metrics = self.train_metrics(logits.detach(), y) if self.train_metrics else {}
        return losses, metrics

    def summary(self) -> dict[str, Any]:
        return {"init": self.init_report}


def report_record(report, path: str) -> dict[str, Any]:
    """What ``summary.json`` keeps of a :class:`~kdvision.core.backbones.LoadReport`."""
    return {"path": path, "matched": len(report.matched), "missing": list(report.missing),
            "unexpected": list(report.unexpected), "skipped": len(report.skipped),
            "skipped_keys": list(report.skipped), "report": str(report)}


class TransferPSPNetRecipe(SupervisedRecipe):
    config_class = TransferPSPNetConfig
    plan_title = "segmentation transfer plan (PSPNet)"

    def check(self) -> None:
        cfg = self.cfg
        spec = dataset_spec(cfg.dataset)
        self.num_classes = cfg.num_classes or spec.num_classes
        if spec.num_classes and self.num_classes != spec.num_classes:
            raise ConfigError(f"--num_classes {self.num_classes} does not match {cfg.dataset} ({spec.num_classes} "
                              f"classes)")
        if str(cfg.init).lower() != "none" and not Path(cfg.init).expanduser().is_file():
            raise ConfigError(f"--init: backbone file not found: {cfg.init} (or --init none for random weights)")
        root = data_root_of(cfg.dataset, cfg.data_root)
        if cfg.download:
            raise DataError(f"{cfg.dataset} is not downloaded by kdvision: put it under --data_root")
        if root is not None and not Path(root).expanduser().exists():
            raise DataError(f"data root not found: {root}")
        if not find_split(cfg.dataset, root, cfg.train_split):
            get_dataset(cfg.dataset, root, split=cfg.train_split)  # the reader's own line: what exactly is missing
            raise DataError(f"no {cfg.dataset} {cfg.train_split} split under {root!r} (see docs/segmentation.md "
                            f"for the layout)")

    def transform(self, train: bool, spec):
        from .transfer_data import semseg_transform

        cfg = self.cfg
        if train and not cfg.augment:  # crop only
            return semseg_transform(True, crop_size=cfg.crop_size, scale=(1.0, 1.0), rotate=0, blur=0, flip=False,
                                    mean=spec.mean, std=spec.std)
        return semseg_transform(train, crop_size=cfg.crop_size, scale=(cfg.scale_min, cfg.scale_max),
                                rotate=cfg.rotate, blur=cfg.blur, flip=cfg.flip, mean=spec.mean, std=spec.std)

    def _with_transform(self, ds, train: bool):
        if not isinstance(ds, SegmentationDataset):
            raise ConfigError(f"dataset {self.cfg.dataset} is not a segmentation image/mask reader")
        ds.transform = self.transform(train, ds.spec)  # semseg's pipeline for every reader (CamVid's is DFAD's)
        return ds

    def load_train_set(self) -> torch.utils.data.Dataset:
        cfg = self.cfg
        full = get_dataset(cfg.dataset, data_root_of(cfg.dataset, cfg.data_root), split=cfg.train_split,
                           train_transform=True, normalize=cfg.normalize)
        return labelled_subset(self._with_transform(full, True), cfg.train_subset, cfg.subset_seed)

    def build_players(self) -> dict[str, nn.Module]:
        from .pspnet import build_pspnet, init_encoder

        cfg, log = self.cfg, self.ctx.log
        self.train_set = self.load_train_set()
        model = build_pspnet(cfg.model, self.num_classes, encoder_depth=cfg.encoder_depth,
                             output_stride=cfg.output_stride, psp_out_channels=cfg.psp_out_channels,
                             psp_dropout=cfg.psp_dropout, aux=cfg.aux_weight > 0)
        if str(cfg.init).lower() == "none":
            self.init_report = {"path": None, "matched": 0, "skipped": 0, "report": "random initialisation"}
            log.info(f"encoder {cfg.model}: random initialisation (--init none: the from-scratch baseline)")
        else:
            report = init_encoder(model, cfg.init, encoder=cfg.model)
            self.init_report = report_record(report, str(cfg.init))
            log.info(f"init: {report}")
        if cfg.sync_bn and self.ctx.dist.enabled and self.ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return {"student": self.ctx.prepare(model)}

    def build_evaluator(self):
        cfg = self.cfg
        evaluator = test_split_evaluator(self.ctx, self.task, cfg, dataset=cfg.dataset, normalize=cfg.normalize,
                                         batch_size=cfg.test_batch_size, workers=cfg.workers, explicit_root=True,
                                         warn_if_missing="no evaluation; the last weights are exported",
                                         split=cfg.eval_split)
        if evaluator is not None:
            self._with_transform(evaluator.dataset, False)  # the full image, normalised (single scale)
        return evaluator

    def param_groups(self, model: nn.Module) -> list[dict]:
        from .pspnet import head_modules

        heads = [p for m in head_modules(model) for p in m.parameters()]
        return lr_multiplier_groups([("encoder", model.encoder.parameters(), 1.0),
                                     ("heads", heads, self.cfg.head_lr_mult)], lr=self.cfg.lr)

    def build_method(self):
        cfg, ctx, task = self.cfg, self.ctx, self.task
        model = self.players["student"]
        method = SegTransfer(model, self.train_set, loss=task.loss, train_metrics=task.train_metrics,
                             batch_size=cfg.batch_size,
                             optimizer=OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum,
                                                     weight_decay=cfg.weight_decay),
                             schedule=lambda n: cfg.lr_schedule_of(cfg.iters_per_epoch or n),
                             clip_grad_norm=cfg.clip_grad_norm, seed=cfg.seed, device=ctx.device, dist=ctx.dist,
                             workers=cfg.workers, amp=cfg.amp, channels_last=cfg.channels_last, task=task.name,
                             params=self.param_groups(unwrap(model)), aux_weight=cfg.aux_weight,
                             init_report=self.init_report)
        if cfg.iters_per_epoch is None:
            cfg.iters_per_epoch = len(method.loader)
        return method

    def plan(self) -> dict[str, str]:
        cfg = self.cfg
        model = unwrap(self.players["student"])
        schedule = self.method.schedules.describe()["model"]
        return {
            "dataset": f"{cfg.dataset} {cfg.train_split} ({len(self.train_set)} images{subset_note(cfg)}, "
                       f"{self.num_classes} classes), evaluation on {cfg.eval_split}",
            "model": f"PSPNet-{cfg.model} (smp; encoder depth {cfg.encoder_depth}, output stride "
                     f"{model.stride}, aux weight {cfg.aux_weight:g}) {param_count(model)} params",
            "init": self.init_report["report"],
            "data": f"crop {cfg.crop_size}, scale [{cfg.scale_min:g}, {cfg.scale_max:g}], rotate +-{cfg.rotate:g}, "
                    f"blur p {cfg.blur:g}, flip {cfg.flip}" + ("" if cfg.augment else " (augmentation off: crop)"),
            "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, SGD lr {cfg.lr:g} "
                        f"(heads x{cfg.head_lr_mult:g}; {schedule}), momentum {cfg.momentum:g}, wd "
                        f"{cfg.weight_decay:g}",
            "evaluation": f"{cfg.eval_split} split, single scale, full images ({self.task.metric})"
                          if self.evaluator else "none",
        }

    @property
    def export_path(self) -> Path:
        return self.ctx.output / f"{self.cfg.dataset}-pspnet_{self.cfg.model}.pt"


def preset_for(dataset: str | None) -> dict[str, Any]:
    """The preset of ``dataset`` (``configs/transfer_<dataset>.yaml``), else the common base preset."""
    name = PRESET_FILES.get(str(dataset or DEFAULT_DATASET).lower(), BASE_PRESET)
    return load_yaml(CONFIG_DIR / name)


def _pick(args) -> dict[str, Any]:
    return preset_for(user_values(args, ["dataset"]).get("dataset"))


ENTRY = Entry(TransferPSPNetRecipe, transfer_task, script="transfer_pspnet", preset=_pick,
              help_preset=preset_for(DEFAULT_DATASET), aliases=TRANSFER_FLAGS,
              compat=dict(gpu=False, no_cuda=True, fp16=False),
              description="KDEP segmentation transfer: PSPNet (segmentation_models_pytorch) with the encoder "
                          "initialised from --init (a KDEP export or any backbone file; none = random)")


def main(argv: list[str] | None = None) -> None:
    ENTRY.main(argv)
