"""Supervised training (teachers, scratch baselines), shared by the classification and segmentation scripts.

SGD with momentum; LR schedule ``lr_schedule="step"`` (constant unless ``scheduler``: StepLR(``step_size``,
``lr_decay_gamma``) stepped at the start of each epoch, i.e. decayed LR from epoch ``step_size``, 1-based) or
``"cosine"`` (per iteration). The method is a :class:`~kdvision.core.engine.method.LossDictMethod`: one named loss
per batch, the engine's update (optional gradient clipping with ``clip_grad_norm``). The best test metric is tracked and, besides the run directory, the best weights are written as a raw
state_dict ``<output>/{dataset}-{model}.pt``: the format DFAD's ``--ckpt`` expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_atomic
from ..data import dataset_spec, find_split, get_dataset, labelled_subset
from ..engine.config import RunConfig, param
from ..engine.distributed import DistInfo
from ..engine.method import LossDictMethod, unwrap
from ..engine.optim import LRSchedule, OptimizerSpec
from ..engine.runner import param_count
from ..engine.trainer import Hook, Trainer
from ..errors import ConfigError, DataError
from ..models import build_model, check_model_fits
from .base import RECIPES, Recipe, register_method
from .task import data_root_of, test_split_evaluator

SCHEDULES = ("step", "cosine")


@dataclass
class SupervisedConfig(RunConfig):
    dataset: str = param("mnist", "dataset")
    model: str = param("lenet5", "architecture", flags=("--arch",))
    num_classes: int | None = param(None, "classes (default: the dataset's)", flags=("--num-classes",), min=1)
    normalize: str | None = param(None, "normalisation constants key (default: the dataset's)")
    batch_size: int = param(256, "batch size (global)", flags=("--batch-size",), min=1)
    test_batch_size: int = param(128, "evaluation batch", flags=("--test-batch-size",), min=1)
    lr: float = param(0.1, "SGD learning rate", min=0)
    momentum: float = param(0.9, "SGD momentum", min=0)
    weight_decay: float = param(5e-4, "weight decay", flags=("--weight-decay",), min=0)
    lr_schedule: str = param("step", "step: StepLR(--step_size) at epoch start, only with --scheduler; cosine: per "
                             "iteration", choices=SCHEDULES)
    scheduler: bool = param(False, "StepLR(--step_size) (the original --scheduler; step schedule only)")
    step_size: int = param(50, "StepLR period in epochs", min=1)
    lr_decay_gamma: float = param(0.1, "StepLR factor", min=0)
    clip_grad_norm: float | None = param(None, "clip gradients to this global norm", min=0)
    augment: bool = param(True, "training augmentation")
    train_subset: int | None = param(None, "train on this many images of the training split (a fixed subset, "
                                     "chosen by --subset_seed)", min=1)
    subset_seed: int = param(0, "seed of the --train_subset choice (independent of --seed)", min=0)
    workers: int = param(0, "data-loading workers", min=0)
    test_only: bool = param(False, "evaluate (a --resume'd model) and exit", flags=("--test-only",))
    download: bool = param(False, "download the dataset (MNIST, CIFAR, SVHN) into --data_root when missing")

    def lr_schedule_of(self, steps_per_epoch: int) -> LRSchedule:
        if self.lr_schedule == "cosine":  # per iteration, as MosaicKD's train_scratch.py
            return LRSchedule("cosine", unit="iter", total=self.epochs * steps_per_epoch)
        if not self.scheduler:
            return LRSchedule("constant")
        return LRSchedule("step", timing="start", step_size=self.step_size, gamma=self.lr_decay_gamma)


def subset_note(cfg) -> str:
    """The plan's words for a ``--train_subset`` (empty without one)."""
    return "" if cfg.train_subset is None else f": the seed-{cfg.subset_seed} subset"


class Supervised(LossDictMethod):
    """``loss(model(x), y)`` on labelled data; one epoch = one pass over the (rank's shard of the) train split."""

    name = "supervised"
    player = "model"

    def __init__(self, model: nn.Module, dataset: torch.utils.data.Dataset, *, loss: Callable, batch_size: int,
                 optimizer: OptimizerSpec, schedule: Callable[[int], LRSchedule], clip_grad_norm: float | None,
                 seed: int, device: torch.device, dist: DistInfo, workers: int = 0, amp: bool = False,
                 channels_last: bool = False,
                 train_metrics: Callable[[torch.Tensor, torch.Tensor], dict] | None = None,
                 task: str = "classification", params: Any = None) -> None:
        super().__init__(device, amp)
        self.task = task
        self.model, self.loss, self.train_metrics = model, loss, train_metrics
        self.sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                          seed=seed)
        self.loader = DataLoader(dataset, batch_size=batch_size // dist.world_size, sampler=self.sampler,
                                 num_workers=workers, pin_memory=device.type == "cuda", drop_last=False,
                                 persistent_workers=workers > 0)
        # ``params``: parameter groups (e.g. heads at a multiple of the LR, optim.lr_multiplier_groups); default all
        self.add_optimizer("model", model.parameters() if params is None else params, optimizer,
                           schedule(len(self.loader)),
                           clip_grad_norm=clip_grad_norm)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._iter = None

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.model}

    def on_epoch_start(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self._iter = iter(self.loader)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next labelled training batch, on the device."""
        try:
            x, y = next(self._iter)
        except StopIteration:  # --iters-per-epoch longer than one pass: start another pass
            self._iter = iter(self.loader)
            x, y = next(self._iter)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def losses(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x, y = self.next_batch()
        self.model.train()
        with self.autocast():
            logits = self.model(x)
        metrics = self.train_metrics(logits.detach(), y) if self.train_metrics else {}
        return {"loss": self.loss(logits.float(), y)}, metrics


class ExportBestHook(Hook):
    """On every new best, also write the model's raw state_dict (DFAD teacher format)."""

    priority = 35

    def __init__(self, path) -> None:
        self.path = path

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.state.is_best and trainer.dist.is_main:
            save_atomic(unwrap(trainer.method.eval_model()).state_dict(), self.path)


@RECIPES.register("supervised")
class SupervisedRecipe(Recipe):
    """Train ``model_name`` on ``cfg.dataset`` with the task's loss; evaluate and export the best weights."""

    name = "supervised"
    config_class = SupervisedConfig
    plan_title = "supervised training plan"
    eval_only_field = "test_only"

    def __init__(self, cfg, task, *, model_name: str | None = None, model_options: dict[str, Any] | None = None,
                 extra_plan: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(cfg, task, **kwargs)
        self.model_name = model_name or cfg.model
        self.model_options = model_options or {}
        self.extra_plan = extra_plan or {}

    def check(self) -> None:
        cfg, task = self.cfg, self.task
        spec = dataset_spec(cfg.dataset)
        check_model_fits(self.model_name, cfg.dataset)
        self.num_classes = cfg.num_classes or spec.num_classes
        if spec.num_classes and self.num_classes != spec.num_classes:
            raise ConfigError(f"--num_classes {self.num_classes} does not match {cfg.dataset} ({spec.num_classes} "
                              f"classes)")
        if task.loss is None:
            raise ConfigError(f"task {task.name} has no supervised loss")
        root = data_root_of(cfg.dataset, cfg.data_root)
        if cfg.download and root is not None:
            from ..data import download_dataset

            download_dataset(cfg.dataset, root)
        if root is not None and not Path(root).exists():
            raise DataError(f"data root not found: {root}")
        if not find_split(cfg.dataset, root, "train"):
            raise DataError(f"no {cfg.dataset} training split under {root!r}")

    def load_train_set(self) -> torch.utils.data.Dataset:
        cfg = self.cfg
        full = get_dataset(cfg.dataset, data_root_of(cfg.dataset, cfg.data_root), split="train",
                           train_transform=cfg.augment, normalize=cfg.normalize, **self.task.dataset_options(cfg))
        return labelled_subset(full, cfg.train_subset, cfg.subset_seed)

    def build_players(self):
        cfg = self.cfg
        self.train_set = self.load_train_set()
        return {"student": self.ctx.prepare(build_model(self.model_name, self.num_classes, dataset=cfg.dataset,
                                                        **self.model_options))}

    def test_view(self, dataset: torch.utils.data.Dataset) -> torch.utils.data.Dataset:
        """The test split as evaluated (the split itself; a recipe may resize it)."""
        return dataset

    def build_evaluator(self):
        cfg = self.cfg
        return test_split_evaluator(self.ctx, self.task, cfg, dataset=cfg.dataset, normalize=cfg.normalize,
                                    batch_size=cfg.test_batch_size, workers=cfg.workers, explicit_root=True,
                                    warn_if_missing="no evaluation; the last weights are exported",
                                    wrap=self.test_view)

    def build_method(self):
        cfg, ctx, task = self.cfg, self.ctx, self.task
        method = Supervised(self.players["student"], self.train_set, loss=task.loss,
                            train_metrics=task.train_metrics, batch_size=cfg.batch_size,
                            optimizer=OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum,
                                                    weight_decay=cfg.weight_decay),
                            schedule=lambda n: cfg.lr_schedule_of(cfg.iters_per_epoch or n),
                            clip_grad_norm=cfg.clip_grad_norm, seed=cfg.seed,
                            device=ctx.device, dist=ctx.dist, workers=cfg.workers, amp=cfg.amp,
                            channels_last=cfg.channels_last, task=task.name)
        if cfg.iters_per_epoch is None:
            cfg.iters_per_epoch = len(method.loader)  # one pass over the data per epoch
        return method

    def plan(self) -> dict[str, str]:
        cfg = self.cfg
        schedule = self.method.schedules.describe()["model"]
        return {
            "dataset": f"{cfg.dataset} ({len(self.train_set)} training images{subset_note(cfg)}, {self.num_classes} "
                       f"classes)",
            "model": f"{self.model_name} {param_count(unwrap(self.players['student']))} params",
            **self.extra_plan,
            "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, lr {cfg.lr} "
                        f"({schedule}), wd {cfg.weight_decay}",
            "evaluation": f"test split ({self.task.metric})" if self.evaluator else "none",
        }

    def evaluate_only(self) -> dict[str, Any]:
        out = super().evaluate_only()
        value = out.get(self.task.metric, float("nan"))
        print(f"test {self.task.metric} {value:.4f}")
        return out

    @property
    def export_path(self) -> Path:
        return self.ctx.output / f"{self.cfg.dataset}-{self.cfg.model}.pt"

    def hooks(self) -> list[Hook]:
        return [ExportBestHook(self.export_path)]

    def render(self):
        task, evaluator = self.task, self.evaluator
        if task.render is None or evaluator is None or not hasattr(evaluator, "sample_batch"):
            return None
        images, targets = evaluator.sample_batch()  # fixed test images with their ground truth
        return lambda m: task.render(images, targets, m.eval_model())

    def train_settings(self) -> dict[str, Any]:
        return {"nrow": self.task.render_nrow}

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        if self.evaluator is None and self.ctx.dist.is_main:
            save_atomic(unwrap(self.players["student"]).state_dict(), self.export_path)
        self.ctx.log.info(f"weights: {self.export_path}")
        summary["export"] = str(self.export_path)
        summary["train_images"] = len(self.train_set)  # labelled images seen (a --train_subset's size)
        return summary


register_method("supervised", "supervised")


def run_supervised(cfg: SupervisedConfig, task, *, model_name: str, given: set[str] = frozenset(),
                   dry_run: bool = False, model_options: dict[str, Any] | None = None,
                   plan: dict[str, str] | None = None, script: str = "train", overwrite: bool = False
                   ) -> dict[str, Any]:
    return SupervisedRecipe(cfg, task, model_name=model_name, model_options=model_options, extra_plan=plan,
                            script=script, given=given, dry_run=dry_run, overwrite=overwrite).run()
