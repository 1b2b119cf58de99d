"""Supervised teacher training: the recipes of DFAD's ``train_teacher.py`` and MosaicKD's ``train_scratch.py``.

- ``dfad``: SGD (momentum 0.9), constant LR unless ``--scheduler`` is given, then StepLR(``--step_size``, x0.1)
  stepped at the start of each epoch (decayed LR from epoch ``step_size``, 1-based); defaults batch 256, 30 epochs,
  lr 0.1, wd 5e-4. The original ignores ``--step_size`` without ``--scheduler``; so do we, with a warning.
- ``mosaickd``: SGD lr 0.1, momentum 0.9, wd 1e-4, batch 256, 200 epochs, cosine annealing per iteration.

Both select the best test accuracy and, besides the run directory, write the best weights as a raw state_dict
``<output>/{dataset}-{model}.pt`` — the format the DFAD scripts' ``--ckpt`` expects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.checkpoint import save_atomic
from kdvision.core.data import dataset_spec, find_split, get_dataset
from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import RunConfig, resolve_config
from kdvision.core.engine.distributed import DistInfo
from kdvision.core.engine.method import Method, unwrap
from kdvision.core.engine.runner import RunContext
from kdvision.core.engine.trainer import Hook, Trainer
from kdvision.core.errors import ConfigError, DataError
from kdvision.core.methods.dfad import lr_factor
from kdvision.core.models import MODELS, create_model, model_info
from torch.utils.data import DataLoader, DistributedSampler

from .common import (
    check_model_fits,
    data_root_of,
    describe_plan,
    load_preset,
    make_evaluator,
    param_count,
)

RECIPES: dict[str, dict[str, Any]] = {name: load_preset(f"teacher_{name}") for name in ("dfad", "mosaickd")}


@dataclass
class TeacherConfig(RunConfig):
    recipe: str = "dfad"
    dataset: str = "mnist"
    model: str = "lenet5"
    num_classes: int | None = None
    normalize: str | None = None
    batch_size: int = 256
    test_batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: bool = False
    step_size: int = 50
    lr_decay_gamma: float = 0.1
    augment: bool = True
    pretrained: bool = False
    workers: int = 0
    test_only: bool = False


def resolve_model_name(name: str, dataset: str) -> str:
    """DFAD's ``--model resnet34`` means torchvision's ImageNet ResNet-34 for 128-px Caltech101."""
    spec = dataset_spec(dataset)
    size = model_info(name).get("input_size")
    alt = f"{name}_imagenet"
    if size is not None and size[1] <= 32 < min(spec.image_size) and alt in MODELS:
        return alt
    return name


class Supervised(Method):
    """Cross-entropy training on labelled data; one epoch = one pass over the (rank's shard of the) train split."""

    name = "supervised"

    def __init__(self, model: nn.Module, dataset: torch.utils.data.Dataset, *, batch_size: int, lr: float,
                 momentum: float, weight_decay: float, schedule: str, decay_epochs: list[int], gamma: float,
                 epochs: int, seed: int, device: torch.device, dist: DistInfo, workers: int = 0,
                 amp: bool = False, channels_last: bool = False) -> None:
        super().__init__(device, amp)
        self.model = model
        self.sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                          seed=seed)
        self.loader = DataLoader(dataset, batch_size=batch_size // dist.world_size, sampler=self.sampler,
                                 num_workers=workers, pin_memory=device.type == "cuda", drop_last=False,
                                 persistent_workers=workers > 0)
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                                   foreach=True)
        self.base_lr, self.schedule, self.decay_epochs, self.gamma = lr, schedule, decay_epochs, gamma
        self.total_steps = epochs * len(self.loader)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._iter = None
        self._step = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.opt}

    def eval_model(self) -> nn.Module:
        return unwrap(self.model)

    def on_epoch_start(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self._iter = iter(self.loader)
        self._step = epoch * len(self.loader)
        if self.schedule == "step":
            self._set_lr(self.base_lr * lr_factor(epoch, self.decay_epochs, self.gamma))

    def _set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train_step(self) -> dict[str, torch.Tensor]:
        if self.schedule == "cosine":  # per iteration, as MosaicKD's train_scratch.py
            self._set_lr(self.base_lr * 0.5 * (1 + math.cos(math.pi * self._step / self.total_steps)))
        try:
            x, y = next(self._iter)
        except StopIteration:  # --iters-per-epoch longer than one pass: start another pass
            self._iter = iter(self.loader)
            x, y = next(self._iter)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        self.model.train()
        with self.autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._step += 1
        return {"loss": loss.detach(), "train_acc": (logits.argmax(1) == y).float().mean()}


class ExportBestHook(Hook):
    """On every new best, also write the model's raw state_dict (DFAD teacher format)."""

    priority = 35

    def __init__(self, path) -> None:
        self.path = path

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.state.is_best and trainer.dist.is_main:
            save_atomic(unwrap(trainer.method.eval_model()).state_dict(), self.path)


def build_parser(recipe: str):
    p = base_parser(f"Supervised teacher training (recipe {recipe}); flags of DFAD's train_teacher.py and "
                    "MosaicKD's train_scratch.py")
    g = p.add_argument_group("teacher (original flags)")
    g.add_argument("--recipe", choices=sorted(RECIPES))
    g.add_argument("--dataset")
    g.add_argument("--model", "--arch", dest="model")
    g.add_argument("--num_classes", "--num-classes", dest="num_classes", type=int)
    g.add_argument("--batch_size", "--batch-size", "-b", dest="batch_size", type=int)
    g.add_argument("--test_batch_size", "--test-batch-size", dest="test_batch_size", type=int)
    g.add_argument("--epoch", dest="epochs", type=int, help="alias of --epochs (MosaicKD)")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight_decay", "--weight-decay", "--wd", dest="weight_decay", type=float)
    g.add_argument("--scheduler", action="store_true", help="StepLR(--step_size) (dfad recipe)")
    g.add_argument("--step_size", type=int)
    g.add_argument("--pretrained", action="store_true", help="ImageNet-pretrained torchvision weights")
    g.add_argument("--workers", "-j", dest="workers", type=int)
    g.add_argument("--gpu", type=int, help="GPU index (MosaicKD)")
    g.add_argument("--print-freq", "--print_freq", dest="log_interval", type=int, help="alias of --log-interval")
    g.add_argument("--test-only", "--test_only", "--evaluate", dest="test_only", action="store_true")
    g.add_argument("--verbose", action="store_true")
    g.add_argument("--no-cuda", "--no_cuda", dest="device", action="store_const", const="cpu")
    g.add_argument("--normalize", help="normalisation constants key (default: the dataset's)")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no training augmentation")
    return p


def run(cfg: TeacherConfig, *, given: set[str], dry_run: bool = False) -> dict:
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}; valid: {', '.join(RECIPES)}")
    if "step_size" in given and not cfg.scheduler and cfg.recipe == "dfad":
        print("warning: --step_size has no effect without --scheduler (as in the original train_teacher.py); "
              "the learning rate stays constant")
    if cfg.pretrained:
        raise ConfigError("--pretrained needs ImageNet weights, which kdvision never downloads; train from "
                          "scratch or load weights with --resume")
    spec = dataset_spec(cfg.dataset)
    model_name = resolve_model_name(cfg.model, cfg.dataset)
    check_model_fits(model_name, cfg.dataset)
    num_classes = cfg.num_classes or spec.num_classes
    if spec.num_classes and num_classes != spec.num_classes:
        raise ConfigError(f"--num_classes {num_classes} does not match {cfg.dataset} ({spec.num_classes} classes)")
    root = data_root_of(cfg.dataset, cfg.data_root)
    if root is not None and not Path(root).exists():
        raise DataError(f"data root not found: {root}")
    if not find_split(cfg.dataset, root, "train"):
        raise DataError(f"no {cfg.dataset} training split under {root!r}")
    ctx = RunContext(cfg, dry_run=dry_run)
    try:
        train_set = get_dataset(cfg.dataset, root, split="train", train_transform=cfg.augment,
                                normalize=cfg.normalize)
        model = ctx.prepare(create_model(model_name, num_classes))
        evaluator = make_evaluator(ctx, cfg, dataset=cfg.dataset, normalize=cfg.normalize,
                                   batch_size=cfg.test_batch_size, workers=cfg.workers, explicit_root=True,
                                   warn_if_missing="no evaluation; the last weights are exported")
        decay = list(range(cfg.step_size, cfg.epochs + 1, cfg.step_size)) if cfg.scheduler else []
        schedule = "cosine" if cfg.recipe == "mosaickd" else "step"
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model)
        method = Supervised(model, train_set, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay, schedule=schedule, decay_epochs=decay,
                            gamma=cfg.lr_decay_gamma, epochs=cfg.epochs, seed=cfg.seed, device=ctx.device,
                            dist=ctx.dist, workers=cfg.workers, amp=cfg.amp, channels_last=cfg.channels_last)
        if "iters_per_epoch" not in given:
            cfg.iters_per_epoch = len(method.loader)
        if dry_run:
            print(describe_plan("teacher training plan", {
                "dataset": f"{cfg.dataset} ({len(train_set)} training images, {num_classes} classes)",
                "model": f"{model_name} {param_count(unwrap(model))} params",
                "recipe": f"{cfg.recipe}: {cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, "
                          f"lr {cfg.lr} ({schedule}{', decay at ' + str(decay) if decay else ''}), "
                          f"wd {cfg.weight_decay}",
                "evaluation": "test split" if evaluator else "none",
                "output": cfg.output,
            }))
            return {}
        if cfg.test_only:
            if cfg.resume:
                from kdvision.core.checkpoint import load_weights

                load_weights(unwrap(model), ctx.run.last_ckpt if cfg.resume == "auto" else cfg.resume)
            result = evaluator(unwrap(model)) if evaluator else {}
            print(f"test acc {result.get('acc', float('nan')):.4f}")
            return result
        export = ctx.run.path / f"{cfg.dataset}-{cfg.model}.pt"
        hooks = [ExportBestHook(export)]
        summary = ctx.train(method, task="classification", metric="acc", batch_size=cfg.batch_size,
                            evaluator=evaluator, teacher_metric=None, extra_hooks=hooks)
        if evaluator is None and ctx.dist.is_main:
            save_atomic(unwrap(model).state_dict(), export)
        ctx.log.info(f"teacher weights: {export}")
        summary["export"] = str(export)
        return summary
    finally:
        ctx.close()


def main(recipe: str = "dfad", argv: list[str] | None = None) -> None:
    def _main(args_list: list[str]) -> int:
        args = build_parser(recipe).parse_args(args_list)
        preset = RECIPES[getattr(args, "recipe", recipe)]
        ns = vars(args)
        if "gpu" in ns:
            args.device = f"cuda:{ns.pop('gpu')}"
        cfg = resolve_config(TeacherConfig, preset, args)
        run(cfg, given=set(vars(args)), dry_run=getattr(args, "dry_run", False))
        return 0

    run_cli(_main, argv)
