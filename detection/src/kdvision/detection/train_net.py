"""Detection transfer of a KDEP backbone: ``detection/train_net.py`` (Detectron2's ``train_net.py`` in spirit).

Model: torchvision Faster R-CNN on a ResNet-FPN backbone (``BackboneWithFPN`` over a torchvision ResNet: layer1..4
→ P2..P5 + max-pool P6, 256 channels; or MobileNetV2 with features 3, 6, 13, 17, as KDEP's ``build_mnv2_fpn_backbone``),
random initialisation (``weights=None``), every layer trainable, ``BatchNorm2d`` (``--norm BN``, default: KDEP fine-tunes
with SyncBN) or ``FrozenBatchNorm2d`` (``--norm FrozenBN``). ``--init PATH`` loads a backbone through
:func:`kdvision.core.backbones.read_backbone` / :func:`load_backbone` — a kdvision pre-training run, a KDEP
robustness checkpoint, a torchvision file — strictly except the classifier head; the load report is printed (and in
``--dry-run``'s plan). The FPN, RPN and box head start random, as in Detectron2.

Why not Detectron2's C4 model (KDEP's R18 runs): ``Res5ROIHeads`` builds Bottleneck blocks for res5, which a ResNet-18
cannot fill (``reference/kdep.md`` §5.5.1); FPN uses every pre-trained layer. Input: RGB in [0, 1], normalised by the
model with torchvision's ImageNet mean/std (the pre-training's), resized by the model (shorter side from
``--min_size_train`` at random while training, ``--min_size_test`` for evaluation, longer side at most
``--max_size``); random horizontal flips.

Schedule (``reference/kdep.md`` §6.3, VOC07+12): SGD momentum 0.9, weight decay 1e-4, base LR 0.02 for 16 images per
batch (scaled linearly with ``--batch_size`` unless ``--no-scale_lr``), ``--iters`` 18000 iterations, ×0.1 at
``--steps`` 12000, 16000, 100-iteration linear warm-up; evaluation every ``--eval_period`` iterations (0: at the end)
on ``--test_set``: VOC AP50 (the summary metric ``ap50``; 11-point for VOC2007 as Detectron2), AP75, AP, and COCO AP
through torchmetrics + pycocotools for COCO sets or with ``--coco_eval``.

Datasets: Detectron2's names and folder layouts under ``--data_root`` / ``$DETECTRON2_DATASETS`` / ``datasets``
(:mod:`.data`). ``--config-file`` reads a Detectron2 YAML (the keys of :data:`D2_KEYS`; ``_BASE_`` followed), and
``KEY VALUE`` pairs after the flags override it, as in Detectron2; ``--num-gpus`` is accepted (use torchrun for
several GPUs). The run directory, checkpoints, ``--resume`` and ``--eval-only`` come from the engine.
"""
from __future__ import annotations

import argparse
import ast
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from kdvision.core.backbones import LoadReport, canonical_arch, load_backbone, read_backbone
from kdvision.core.engine.config import RunConfig, key_value_pairs, param
from kdvision.core.engine.distributed import DistInfo
from kdvision.core.engine.method import LossDictMethod, unwrap
from kdvision.core.engine.optim import LRSchedule, OptimizerSpec
from kdvision.core.engine.rundir import warn
from kdvision.core.engine.runner import param_count
from kdvision.core.errors import ConfigError, DataError
from kdvision.core.recipes.base import Entry, Recipe
from kdvision.core.recipes.task import TaskAdapter

from .data import DATASETS, ENV, HFlip, build_dataset, classes_of, collate, default_root, is_present, spec_of
from .evaluation import DetectionEvaluator, coco_backend

ARCHS = ("R18", "R34", "R50", "R101", "mnv2")
NORMS = ("BN", "FrozenBN")
PIXEL_MEAN, PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]  # torchvision's, ×255 (Detectron2 units)
REFERENCE_BATCH = 16  # Detectron2's IMS_PER_BATCH for BASE_LR 0.02


@dataclass
class DetectionConfig(RunConfig):
    arch: str = param("R18", "backbone (torchvision ResNet or MobileNetV2)", choices=ARCHS)
    init: str | None = param(None, "backbone weights: kdvision run, KDEP robustness checkpoint, torchvision file "
                             "(default: random initialisation)", flags=("--weights",))
    norm: str = param("BN", "backbone normalisation: BN (trained, batch statistics) or FrozenBN", choices=NORMS)
    train_sets: list[str] = param(None, "training datasets (Detectron2 names)", choices=tuple(DATASETS),
                                  factory=lambda: ["voc_2007_trainval", "voc_2012_trainval"])
    test_set: str = param("voc_2007_test", "evaluation dataset (Detectron2 name)", choices=tuple(DATASETS))
    batch_size: int = param(16, "images per iteration (global; SOLVER.IMS_PER_BATCH)", flags=("--batch-size",),
                            min=1)
    test_batch_size: int = param(4, "images per evaluation batch", flags=("--test-batch-size",), min=1)
    lr: float = param(0.02, "SGD learning rate for 16 images per batch (SOLVER.BASE_LR)", flags=("--base-lr",),
                      min=0)
    scale_lr: bool = param(True, "scale --lr linearly with --batch_size / 16")
    momentum: float = param(0.9, "SGD momentum", min=0)
    weight_decay: float = param(1e-4, "weight decay", flags=("--weight-decay",), min=0)
    iters: int = param(18000, "training iterations (SOLVER.MAX_ITER)", flags=("--max-iter",), min=1)
    steps: list[int] = param(None, "iterations at which the LR is multiplied by --gamma (SOLVER.STEPS)",
                             factory=lambda: [12000, 16000])
    gamma: float = param(0.1, "LR factor at each step", min=0)
    warmup_iters: int = param(100, "linear LR warm-up iterations", flags=("--warmup-iters",), min=0)
    eval_period: int = param(0, "iterations between evaluations (0: once, at the end; TEST.EVAL_PERIOD)",
                             flags=("--eval-period",), min=0)
    min_size_train: list[int] = param(None, "shorter side while training, one drawn per batch",
                                      factory=lambda: list(range(480, 801, 32)))
    min_size_test: int = param(800, "shorter side for evaluation", min=1)
    max_size: int = param(1333, "longer side at most", min=1)
    roi_batch_size_per_image: int = param(512, "sampled proposals per image for the box head "
                                          "(MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE)", min=1)
    rpn_pre_nms_topk_train: int = param(2000, "RPN proposals per level before NMS, training "
                                        "(MODEL.RPN.PRE_NMS_TOPK_TRAIN)", min=1)
    rpn_post_nms_topk_train: int = param(1000, "RPN proposals kept after NMS, training "
                                         "(MODEL.RPN.POST_NMS_TOPK_TRAIN)", min=1)
    rpn_pre_nms_topk_test: int = param(1000, "RPN proposals per level before NMS, testing", min=1)
    rpn_post_nms_topk_test: int = param(1000, "RPN proposals kept after NMS, testing", min=1)
    coco_eval: bool = param(False, "also compute COCO AP (torchmetrics + pycocotools) on a VOC test set")
    workers: int = param(2, "data-loading workers", min=0)
    eval_only: bool = param(False, "evaluate (the --resume'd model) and exit", flags=("--eval-only",))

    def validate(self) -> None:
        super().validate()
        if not self.train_sets:
            raise ConfigError("train_sets is empty")
        kinds = {spec_of(n).kind for n in [*self.train_sets, self.test_set]}
        if len(kinds) > 1:
            raise ConfigError(f"train_sets {self.train_sets} and test_set {self.test_set} mix VOC and COCO")
        if not self.min_size_train or min(self.min_size_train) < 1:
            raise ConfigError(f"invalid min_size_train: {self.min_size_train!r} (positive sizes)")
        if any(s < 1 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise ConfigError(f"invalid steps: {self.steps!r} (increasing positive iterations)")


# -- Detectron2 config keys ---------------------------------------------------------------------------------------
D2_KEYS = {"MODEL.WEIGHTS": "init", "MODEL.RESNETS.NORM": "norm", "MODEL.DEVICE": "device",
           "DATASETS.TRAIN": "train_sets", "DATASETS.TEST": "test_set", "SOLVER.IMS_PER_BATCH": "batch_size",
           "SOLVER.BASE_LR": "lr", "SOLVER.MOMENTUM": "momentum", "SOLVER.WEIGHT_DECAY": "weight_decay",
           "SOLVER.MAX_ITER": "iters", "SOLVER.STEPS": "steps", "SOLVER.GAMMA": "gamma",
           "SOLVER.WARMUP_ITERS": "warmup_iters", "TEST.EVAL_PERIOD": "eval_period",
           "INPUT.MIN_SIZE_TRAIN": "min_size_train", "INPUT.MIN_SIZE_TEST": "min_size_test",
           "INPUT.MAX_SIZE_TRAIN": "max_size", "OUTPUT_DIR": "output", "SEED": "seed",
           "DATALOADER.NUM_WORKERS": "workers", "MODEL.RESNETS.DEPTH": "arch",
           "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "roi_batch_size_per_image",
           "MODEL.RPN.PRE_NMS_TOPK_TRAIN": "rpn_pre_nms_topk_train",
           "MODEL.RPN.POST_NMS_TOPK_TRAIN": "rpn_post_nms_topk_train",
           "MODEL.RPN.PRE_NMS_TOPK_TEST": "rpn_pre_nms_topk_test",
           "MODEL.RPN.POST_NMS_TOPK_TEST": "rpn_post_nms_topk_test"}
#: keys whose only value here is fixed by the model (a different value is a warning, not applied)
D2_FIXED = {"MODEL.PIXEL_MEAN": PIXEL_MEAN, "MODEL.PIXEL_STD": PIXEL_STD, "INPUT.FORMAT": "RGB",
            "MODEL.RESNETS.STRIDE_IN_1X1": False}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_d2_yaml(path: str | Path, _seen: tuple = ()) -> dict[str, Any]:
    """Flat keys of a Detectron2 YAML, ``_BASE_`` files first."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: _BASE_ cycle")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a Detectron2 config is a mapping of nodes (MODEL, SOLVER, ...)")
    base = tree.pop("_BASE_", None)
    flat = read_d2_yaml(path.parent / base, (*_seen, path.resolve())) if base else {}
    flat.update(_flatten(tree))
    return flat


def d2_values(flat: dict[str, Any], source: str) -> dict[str, Any]:
    """DetectionConfig values of flat Detectron2 keys; keys without a counterpart are named in one warning."""
    values, ignored = {}, []
    for key, value in flat.items():
        if isinstance(value, str) and value.strip()[:1] in "([":  # yacs reads tuples written as text
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        if key in D2_FIXED:
            if value != D2_FIXED[key] and not (isinstance(value, (list, tuple)) and
                                               [round(float(v), 3) for v in value] ==
                                               [round(float(v), 3) for v in D2_FIXED[key]]):
                warn(f"{source}: {key} {value!r} is not applied: the model uses torchvision's RGB input "
                     f"normalisation and stride-in-3x3 ResNets ({key} {D2_FIXED[key]!r})")
            continue
        if key == "MODEL.MASK_ON" and value:
            raise ConfigError(f"{source}: MODEL.MASK_ON True: masks are not trained here (KDEP's COCO R18 config "
                              "sets it; kdep.md §5.5.4) — set it False")
        if key not in D2_KEYS:
            ignored.append(key)
            continue
        name = D2_KEYS[key]
        if name == "arch":
            value = f"R{value}"
        elif name == "norm":
            value = {"SyncBN": "BN", "BN": "BN", "FrozenBN": "FrozenBN"}.get(str(value), value)
        elif name == "test_set":
            value = value[0] if isinstance(value, (list, tuple)) and value else value
            if isinstance(value, (list, tuple)):
                raise ConfigError(f"{source}: DATASETS.TEST is empty")
        elif name in ("train_sets", "steps", "min_size_train"):
            value = [value] if isinstance(value, (int, str)) else list(value)
        elif name == "init" and str(value).endswith(".pkl"):
            raise ConfigError(f"{source}: MODEL.WEIGHTS {value} is a Detectron2 .pkl; pass the torchvision / KDEP "
                              "checkpoint it was converted from (MODEL.WEIGHTS or --init)")
        elif name == "init" and (value == "" or str(value).startswith(("detectron2://", "catalog://", "http"))):
            warn(f"{source}: MODEL.WEIGHTS {value!r} is not a local backbone file; ignored (nothing is downloaded)")
            continue
        values[name] = value
    if ignored:
        warn(f"{source}: {len(ignored)} Detectron2 keys have no counterpart here and are ignored: "
             + ", ".join(ignored[:6]) + (" ..." if len(ignored) > 6 else ""))
    return values


def d2_overrides(opts: list[str]) -> dict[str, Any]:
    return d2_values(key_value_pairs(opts), "the command-line overrides")


# -- the model ----------------------------------------------------------------------------------------------------
_RETURN = {"resnet": ({"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}),
           "mnv2": {"3": "0", "6": "1", "13": "2", "17": "3"}}


def build_detector(arch: str, num_classes: int, *, norm: str = "BN", state: dict | None = None,
                   min_size: tuple[int, ...] = (800,), max_size: int = 1333, **options: Any
                   ) -> tuple[nn.Module, LoadReport | None]:
    """Faster R-CNN + FPN on torchvision's ``arch`` (random weights; ``state`` loaded into the backbone strictly
    minus its classifier head); ``num_classes`` foreground classes; ``options``: FasterRCNN's keywords
    (``box_batch_size_per_image``, ``rpn_post_nms_top_n_train``, ...)."""
    from torchvision import models as tvm
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    arch = canonical_arch(arch)
    norm_layer = FrozenBatchNorm2d if norm == "FrozenBN" else nn.BatchNorm2d
    if arch == "mnv2":
        net = tvm.mobilenet_v2(weights=None, norm_layer=norm_layer)
        channels = [net.features[i].out_channels for i in (3, 6, 13, 17)]
    else:
        net = getattr(tvm, {"R18": "resnet18", "R34": "resnet34", "R50": "resnet50", "R101": "resnet101",
                            "R152": "resnet152"}[arch])(weights=None, norm_layer=norm_layer)
        width = net.layer1[0].conv1.in_channels * (4 if hasattr(net.layer1[0], "conv3") else 1)
        channels = [width * 2 ** i for i in range(4)]
    report = load_backbone(net, state, what=f"backbone {arch}") if state is not None else None
    body = net.features if arch == "mnv2" else net
    backbone = BackboneWithFPN(body, _RETURN["mnv2" if arch == "mnv2" else "resnet"], channels, 256,
                               extra_blocks=LastLevelMaxPool())
    model = FasterRCNN(backbone, num_classes=num_classes + 1, min_size=tuple(min_size), max_size=max_size,
                       image_mean=[m / 255 for m in PIXEL_MEAN], image_std=[s / 255 for s in PIXEL_STD], **options)
    return model, report


# -- the method ---------------------------------------------------------------------------------------------------
class DetectionTraining(LossDictMethod):
    """One iteration: a batch of images and boxes, torchvision's loss dict (RPN objectness and box regression, ROI
    classification and box regression), summed and stepped by the engine."""

    name = "detection"
    task = "detection"
    player = "model"

    def __init__(self, model: nn.Module, dataset, *, batch_size: int, optimizer: OptimizerSpec,
                 schedule: LRSchedule, seed: int, device: torch.device, dist: DistInfo, workers: int = 0,
                 amp: bool = False) -> None:
        super().__init__(device, amp)
        if batch_size % dist.world_size:
            raise ConfigError(f"batch_size {batch_size} is not divisible by the {dist.world_size} processes")
        self.model = model
        self.sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                          seed=seed, drop_last=len(dataset) >= dist.world_size)
        self.loader = DataLoader(dataset, batch_size=batch_size // dist.world_size, sampler=self.sampler,
                                 num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                                 drop_last=len(dataset) >= batch_size, persistent_workers=workers > 0)
        params = [p for p in model.parameters() if p.requires_grad]
        self.add_optimizer("model", params, optimizer, schedule)
        self._iter = None
        self._pass = 0
        self.extra_summary: dict[str, Any] = {}

    def summary(self) -> dict[str, Any]:
        return dict(self.extra_summary)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.model}

    def on_epoch_start(self, epoch: int) -> None:
        if self._iter is None:
            self.sampler.set_epoch(self._pass)
            self._iter = iter(self.loader)

    def next_batch(self):
        try:
            images, targets = next(self._iter)
        except StopIteration:  # the iteration count is the schedule's unit: start another pass over the data
            self._pass += 1
            self.sampler.set_epoch(self._pass)
            self._iter = iter(self.loader)
            images, targets = next(self._iter)
        d = self.device
        images = [im.to(d, non_blocking=True) for im in images]
        targets = [{"boxes": t["boxes"].to(d), "labels": t["labels"].to(d)} for t in targets]
        return images, targets

    def losses(self):
        images, targets = self.next_batch()
        self.model.train()
        with self.autocast():
            loss_dict = self.model(images, targets)
        return {k: v.float() for k, v in loss_dict.items()}, {}


# -- the recipe ---------------------------------------------------------------------------------------------------
def _no_task_evaluator(*args, **kwargs):  # the recipe builds its own evaluator
    raise NotImplementedError


DETECTION = TaskAdapter(name="detection", metric="ap50", make_evaluator=_no_task_evaluator)


class DetectionRecipe(Recipe):
    name = "detection"
    config_class = DetectionConfig
    plan_title = "detection transfer plan"
    eval_only_field = "eval_only"

    def check(self) -> None:
        cfg = self.cfg
        self.root = default_root(cfg.data_root)
        named = cfg.data_root is not None or ENV in __import__("os").environ
        if named and not Path(self.root).is_dir():
            source = "--data_root" if cfg.data_root is not None else f"${ENV}"
            raise DataError(f"data root not found: {self.root} ({source})")
        self.missing = [n for n in cfg.train_sets if not is_present(n, self.root)]
        if self.missing and not (self.dry_run or cfg.eval_only):
            n = self.missing[0]
            raise DataError(f"no {n} under {self.root}: expected {spec_of(n).describe(self.root)} (set --data_root "
                            f"or ${ENV})")
        self.state = read_backbone(cfg.init, arch=cfg.arch) if cfg.init else None
        if not self.dry_run and self.state is None and not cfg.eval_only:
            warn("no --init: the backbone starts from random weights")
        if cfg.eval_only and not is_present(cfg.test_set, self.root):
            raise DataError(f"--eval-only: no {cfg.test_set} under {self.root}: expected "
                            f"{spec_of(cfg.test_set).describe(self.root)}")

    def build_players(self):
        cfg = self.cfg
        present = [n for n in cfg.train_sets if n not in self.missing]
        self.classes = classes_of(present or [cfg.test_set], self.root) if (present or is_present(
            cfg.test_set, self.root)) or spec_of(cfg.test_set).kind == "voc" else ()
        sets = [build_dataset(n, self.root, train=True) for n in present] if not cfg.eval_only else []
        self.train_set = HFlip(ConcatDataset(sets)) if sets else None
        model, self.report = build_detector(cfg.arch, len(self.classes), norm=cfg.norm, state=self.state,
                                            min_size=tuple(cfg.min_size_train), max_size=cfg.max_size,
                                            box_batch_size_per_image=cfg.roi_batch_size_per_image,
                                            rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_topk_train,
                                            rpn_post_nms_top_n_train=cfg.rpn_post_nms_topk_train,
                                            rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_topk_test,
                                            rpn_post_nms_top_n_test=cfg.rpn_post_nms_topk_test)
        if self.report is not None:
            self.ctx.log.info(f"init {cfg.init}: {self.report}")
        return {"student": self.ctx.prepare(model)}

    def build_evaluator(self):
        cfg = self.cfg
        if not is_present(cfg.test_set, self.root):
            self.ctx.log.warning(f"warning: no {cfg.test_set} under {self.root} "
                                 f"({spec_of(cfg.test_set).describe(self.root)}); no evaluation")
            return None
        coco = spec_of(cfg.test_set).kind == "coco" or cfg.coco_eval
        if coco and coco_backend() is None:
            self.ctx.log.warning("warning: COCO AP needs pycocotools (pip install pycocotools); VOC AP only")
        return DetectionEvaluator(build_dataset(cfg.test_set, self.root), num_classes=len(self.classes),
                                  device=self.ctx.device, batch_size=cfg.test_batch_size, workers=cfg.workers,
                                  use_07=cfg.test_set.startswith("voc_2007"), min_size=cfg.min_size_test,
                                  coco=coco, amp=cfg.amp)

    @property
    def lr(self) -> float:
        cfg = self.cfg
        return cfg.lr * cfg.batch_size / REFERENCE_BATCH if cfg.scale_lr else cfg.lr

    def period(self) -> tuple[int, int]:
        """(epochs, iterations per epoch): an engine epoch is one evaluation period."""
        cfg = self.cfg
        per = min(cfg.eval_period or cfg.iters, cfg.iters)
        return math.ceil(cfg.iters / per), per

    def build_method(self):
        cfg, ctx = self.cfg, self.ctx
        schedule = LRSchedule("multistep", unit="iter", milestones=tuple(cfg.steps), gamma=cfg.gamma,
                              warmup=cfg.warmup_iters).validate()
        self.schedule = schedule
        if self.train_set is None:  # --eval-only or a dry run without training data
            return _EvalOnly(self.players["student"], ctx.device)
        method = DetectionTraining(self.players["student"], self.train_set, batch_size=cfg.batch_size,
                                   optimizer=OptimizerSpec("sgd", lr=self.lr, momentum=cfg.momentum,
                                                           weight_decay=cfg.weight_decay),
                                   schedule=schedule, seed=cfg.seed, device=ctx.device, dist=ctx.dist,
                                   workers=cfg.workers, amp=cfg.amp)
        method.extra_summary = {"init": cfg.init, "init_report": str(self.report) if self.report else None,
                                "train_images": len(self.train_set)}
        return method

    def plan(self) -> dict[str, str]:
        cfg = self.cfg
        epochs, per = self.period()
        found = [n for n in cfg.train_sets if n not in self.missing]
        parts = [f"{n} ({len(d.records)} images)"
                 for n, d in zip(found, self.train_set.base.datasets if self.train_set else [])]
        parts += [f"{n} (not found: {spec_of(n).describe(self.root)})" for n in self.missing]
        data = ", ".join(parts)
        model = unwrap(self.players["student"])
        schedule = self.schedule.describe()
        return {
            "data": f"{data} under {self.root}; {len(self.classes)} classes",
            "model": f"Faster R-CNN {cfg.arch}-FPN, {cfg.norm}, {param_count(model)} params",
            "init": f"{cfg.init}: {self.report}" if self.report else "random (no --init)",
            "input": f"shorter side {cfg.min_size_train} (train) / {cfg.min_size_test} (test), longer <= "
                     f"{cfg.max_size}, RGB, torchvision mean/std, random flip",
            "schedule": f"{cfg.iters} iterations, batch {cfg.batch_size}, SGD lr {self.lr:g}"
                        f"{' (= ' + format(cfg.lr, 'g') + ' x ' + str(cfg.batch_size) + '/16)' if cfg.scale_lr else ''}"
                        f" m={cfg.momentum:g} wd={cfg.weight_decay:g}, {schedule}",
            "evaluation": (f"{cfg.test_set} ({'every ' + str(per) + ' iterations and ' if epochs > 1 else ''}at the "
                           f"end): AP50 (summary), AP75, AP" if self.evaluator else "none"),
        }

    def evaluate_only(self) -> dict[str, Any]:
        out = super().evaluate_only()
        if self.ctx.resume_path() is None and self.evaluator is not None:
            warn("--eval-only without --resume CKPT evaluates the initialised model")
            out.update(self.evaluator(unwrap(self.players["student"])))
        print("test " + ", ".join(f"{k} {v:.4f}" for k, v in out.items() if isinstance(v, float)))
        return out

    def train_settings(self) -> dict[str, Any]:
        epochs, per = self.period()
        return {"epochs": epochs, "iters_per_epoch": per}



class _EvalOnly(LossDictMethod):
    """The method of a run that only evaluates (``--eval-only``, or a dry run without training data)."""

    name = "detection"
    task = "detection"

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__(device)
        self.model = model

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.model}


# -- the entry ----------------------------------------------------------------------------------------------------
def _extend(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Detectron2's train_net.py")
    g.add_argument("--config-file", "--config_file", dest="config_file", metavar="FILE",
                   help="a Detectron2 YAML config (keys mapped onto the flags; _BASE_ followed)")
    g.add_argument("--num-gpus", "--num_gpus", dest="num_gpus", type=int, metavar="N",
                   help="accepted; several GPUs: torchrun --nproc_per_node N detection/train_net.py ...")
    g.add_argument("opts", nargs="*", metavar="KEY VALUE", help="Detectron2 config overrides, e.g. SOLVER.MAX_ITER 90")


def _preset(args: argparse.Namespace) -> dict[str, Any]:
    values = d2_values(read_d2_yaml(args.config_file), args.config_file) if getattr(args, "config_file", None) else {}
    return {**values, **d2_overrides(list(getattr(args, "opts", None) or []))}


def _adjust(cfg: DetectionConfig, given: set[str], args: argparse.Namespace) -> None:
    n = getattr(args, "num_gpus", None)
    if n is not None and n > 1:
        warn(f"--num-gpus {n}: this process uses one device; run torchrun --nproc_per_node {n} "
             "detection/train_net.py ... for all of them")


ENTRY = Entry(DetectionRecipe, DETECTION, script="train_net", preset=_preset, help_preset={},
              compat=dict(gpu=False, no_cuda=False, fp16=False), extend_parser=_extend, adjust=_adjust,
              description="Fine-tune a (KDEP) backbone for detection: torchvision Faster R-CNN + FPN on VOC / COCO "
                          "in Detectron2's layouts; the flags of Detectron2's train_net.py")


def main(argv: list[str] | None = None) -> None:
    ENTRY.main(argv)
