"""Supervised training (teachers, scratch baselines), shared by the classification and segmentation scripts.

SGD with momentum; LR schedule ``step`` (constant unless ``scheduler``: StepLR(``step_size``, ``lr_decay_gamma``)
stepped at the start of each epoch, i.e. decayed LR from epoch ``step_size``, 1-based) or ``cosine`` (per
iteration). The best test metric is tracked and, besides the run directory, the best weights are written as a raw
state_dict ``<output>/{dataset}-{model}.pt``: the format DFAD's ``--ckpt`` expects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import load_weights, save_atomic
from ..data import dataset_spec, find_split, get_dataset
from ..engine.config import RunConfig
from ..engine.distributed import DistInfo
from ..engine.method import Method, unwrap
from ..engine.runner import RunContext, describe_plan, param_count
from ..engine.trainer import Hook, Trainer
from ..errors import ConfigError, DataError
from ..methods.dfad import lr_factor
from ..models import build_model, check_model_fits
from .task import TaskAdapter, data_root_of, test_split_evaluator


@dataclass
class SupervisedConfig(RunConfig):
    dataset: str = "mnist"
    model: str = "lenet5"
    num_classes: int | None = None
    normalize: str | None = None
    batch_size: int = 256
    test_batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"  # "step" (StepLR only with scheduler=True) or "cosine" (per iteration)
    scheduler: bool = False
    step_size: int = 50
    lr_decay_gamma: float = 0.1
    augment: bool = True
    workers: int = 0
    test_only: bool = False


class Supervised(Method):
    """``loss(model(x), y)`` on labelled data; one epoch = one pass over the (rank's shard of the) train split."""

    name = "supervised"

    def __init__(self, model: nn.Module, dataset: torch.utils.data.Dataset, *, loss: Callable, batch_size: int,
                 lr: float, momentum: float, weight_decay: float, schedule: str, decay_epochs: list[int],
                 gamma: float, epochs: int, seed: int, device: torch.device, dist: DistInfo, workers: int = 0,
                 amp: bool = False, channels_last: bool = False,
                 train_metrics: Callable[[torch.Tensor, torch.Tensor], dict] | None = None,
                 task: str = "classification") -> None:
        super().__init__(device, amp)
        if schedule not in ("step", "cosine"):
            raise ConfigError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
        self.task = task
        self.model, self.loss, self.train_metrics = model, loss, train_metrics
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
        loss = self.loss(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._step += 1
        extra = self.train_metrics(logits.detach(), y) if self.train_metrics else {}
        return {"loss": loss.detach(), **extra}


class ExportBestHook(Hook):
    """On every new best, also write the model's raw state_dict (DFAD teacher format)."""

    priority = 35

    def __init__(self, path) -> None:
        self.path = path

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.state.is_best and trainer.dist.is_main:
            save_atomic(unwrap(trainer.method.eval_model()).state_dict(), self.path)


def run_supervised(cfg: SupervisedConfig, task: TaskAdapter, *, model_name: str, given: set[str],
                   dry_run: bool = False, model_options: dict[str, Any] | None = None,
                   plan: dict[str, str] | None = None) -> dict[str, Any]:
    """Train ``model_name`` on ``cfg.dataset`` with the task's loss; evaluate and export the best weights."""
    spec = dataset_spec(cfg.dataset)
    check_model_fits(model_name, cfg.dataset)
    num_classes = cfg.num_classes or spec.num_classes
    if spec.num_classes and num_classes != spec.num_classes:
        raise ConfigError(f"--num_classes {num_classes} does not match {cfg.dataset} ({spec.num_classes} classes)")
    if task.loss is None:
        raise ConfigError(f"task {task.name} has no supervised loss")
    root = data_root_of(cfg.dataset, cfg.data_root)
    if root is not None and not Path(root).exists():
        raise DataError(f"data root not found: {root}")
    if not find_split(cfg.dataset, root, "train"):
        raise DataError(f"no {cfg.dataset} training split under {root!r}")
    ctx = RunContext(cfg, dry_run=dry_run)
    try:
        train_set = get_dataset(cfg.dataset, root, split="train", train_transform=cfg.augment,
                                normalize=cfg.normalize, **task.dataset_options(cfg))
        model = ctx.prepare(build_model(model_name, num_classes, dataset=cfg.dataset, **(model_options or {})))
        evaluator = test_split_evaluator(ctx, task, cfg, dataset=cfg.dataset, normalize=cfg.normalize,
                                         batch_size=cfg.test_batch_size, workers=cfg.workers, explicit_root=True,
                                         warn_if_missing="no evaluation; the last weights are exported")
        decay = list(range(cfg.step_size, cfg.epochs + 1, cfg.step_size)) if cfg.scheduler else []
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model)
        method = Supervised(model, train_set, loss=task.loss, train_metrics=task.train_metrics,
                            batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay, schedule=cfg.schedule, decay_epochs=decay,
                            gamma=cfg.lr_decay_gamma, epochs=cfg.epochs, seed=cfg.seed, device=ctx.device,
                            dist=ctx.dist, workers=cfg.workers, amp=cfg.amp, channels_last=cfg.channels_last,
                            task=task.name)
        if "iters_per_epoch" not in given:
            cfg.iters_per_epoch = len(method.loader)
        if dry_run:
            print(describe_plan("supervised training plan", {
                "dataset": f"{cfg.dataset} ({len(train_set)} training images, {num_classes} classes)",
                "model": f"{model_name} {param_count(unwrap(model))} params",
                **(plan or {}),
                "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, lr {cfg.lr} "
                            f"({cfg.schedule}{', decay at ' + str(decay) if decay else ''}), wd {cfg.weight_decay}",
                "evaluation": f"test split ({task.metric})" if evaluator else "none",
                "output": cfg.output,
            }))
            return {}
        if cfg.test_only:
            if cfg.resume:
                load_weights(unwrap(model), ctx.run.last_ckpt if cfg.resume == "auto" else cfg.resume)
            result = evaluator(unwrap(model)) if evaluator else {}
            print(f"test {task.metric} {result.get(task.metric, float('nan')):.4f}")
            return result
        export = ctx.run.path / f"{cfg.dataset}-{cfg.model}.pt"
        render = None
        if task.render is not None and evaluator is not None and hasattr(evaluator, "sample_batch"):
            images, targets = evaluator.sample_batch()  # fixed test images with their ground truth
            render = lambda m: task.render(images, targets, m.eval_model())  # noqa: E731
        summary = ctx.train(method, task=task.name, metric=task.metric, batch_size=cfg.batch_size,
                            evaluator=evaluator, teacher_metric=None, extra_hooks=[ExportBestHook(export)],
                            render=render, nrow=task.render_nrow)
        if evaluator is None and ctx.dist.is_main:
            save_atomic(unwrap(model).state_dict(), export)
        ctx.log.info(f"weights: {export}")
        summary["export"] = str(export)
        return summary
    finally:
        ctx.close()
