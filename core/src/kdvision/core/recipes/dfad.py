"""DFAD as a runnable recipe, shared by the classification and segmentation entry scripts.

The five original scripts (``DFAD_{mnist,cifar,caltech101}.py``, ``DFAD_{camvid,nyu}_deeplab.py``) differ only in
their defaults, which live in each task's ``configs/dfad_*.yaml``; the task supplies a :class:`TaskAdapter`.

Baselines of the paper's tables are options of the same recipe (``--baseline``):

- ``dfad`` (default): the adversarial game of :class:`~kdvision.core.methods.dfad.DFAD`;
- ``random_generator``: the same student steps on a generator that is never trained;
- ``kd_ori``: the student imitates the teacher on the dataset's own training images (training augmentation);
- ``kd_rel`` / ``kd_unr``: the same on the images of any folder (``--kd_data DIR``: related or unrelated data).

The KD baselines use DFAD's discrepancy (L1 between raw logits), ``student_steps`` student steps per iteration and
the same optimiser and schedule, so that the only thing that changes between rows is where the images come from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import dataset_normalization, dataset_spec, get_dataset
from ..data.folder import UnlabeledImages
from ..engine.config import RunConfig, param
from ..engine.optim import LRSchedule
from ..engine.rundir import warn
from ..engine.runner import param_count
from ..engine.trainer import sample_renderer
from ..errors import ConfigError, DataError
from ..generators import create_generator
from ..methods.dfad import DFAD, LOSSES, dfad_optimizers
from ..methods.kd_data import DataKD
from ..models import build_model, check_model_fits
from .base import RECIPES, Recipe, register_method
from .task import data_root_of, test_split_evaluator

BASELINES = ("dfad", "random_generator", "kd_ori", "kd_rel", "kd_unr")

#: The original scripts' spellings of DFADConfig fields (``--epoch_itrs`` is DFAD's name for iterations per epoch).
DFAD_FLAGS = {"batch_size": ["--batch-size"], "test_batch_size": ["--test-batch-size"],
              "iters_per_epoch": ["--epoch_itrs"], "weight_decay": ["--weight-decay"], "test_only": ["--test-only"],
              "kd_data": ["--kd-data"], "batched_generation": ["--batched-generation"],
              "log_interval": ["--log_interval", "--log-interval"]}


@dataclass
class DFADConfig(RunConfig):
    iters_per_epoch: int | None = param(50, "iterations per epoch", flags=("--iters-per-epoch",), min=1)
    dataset: str = param("mnist", "dataset (classes, image size, normalisation, evaluation)")
    teacher: str = param("lenet5", "teacher architecture")
    student: str = param("lenet5_half", "student architecture")
    ckpt: str | None = param(None, "teacher checkpoint (raw state_dict or a container)")
    num_classes: int | None = param(None, "classes (default: the dataset's)", min=1)
    normalize: str | None = param(None, "normalisation the teacher expects (default: the dataset's)")
    generator: str = param("dfad_a", "generator (dfad_a, dfad_b, ...)")
    nz: int = param(100, "noise dimension", min=1)
    ngf: int = param(64, "generator width", min=1)
    img_size: int = param(32, "generated (and KD-baseline crop) size", min=1)
    resize: int | None = param(None, "short side of real images before cropping/evaluation (default: the dataset's)",
                               min=1)
    batch_size: int = param(512, "generated batch (global)", min=1)
    test_batch_size: int = param(256, "evaluation batch", min=1)
    lr_S: float = param(0.01, "student SGD learning rate", min=0)
    lr_G: float = param(1e-3, "generator Adam learning rate", min=0)
    weight_decay: float = param(1e-4, "student weight decay", min=0)
    momentum: float = param(0.9, "student SGD momentum", min=0)
    scheduler: bool = param(False, "decay the LR of S and G (the original --scheduler)")
    step_size: int | None = param(100, "StepLR period (only with --scheduler)", min=1)
    milestones: list[int] = param(factory=list, help="MultiStepLR milestones (CIFAR: 100,200), with --scheduler")
    scheduler_timing: str = param("start", "where the original stepped its scheduler: epoch start or end",
                                  choices=("start", "end"))
    lr_decay_gamma: float = param(0.1, "LR decay factor", min=0)
    loss: str = param("l1", "generator loss: l1 = -L1, log_l1 = -log(L1 + 1)", choices=LOSSES)
    student_steps: int = param(5, "student steps per iteration", min=1)
    student_bn_update_in_g_step: bool = param(True, "S in train mode during the G step (original)")
    batched_generation: bool = param(False, "one generator forward for the student steps (changes BN stats)")
    baseline: str = param("dfad", "the paper's baselines: random generator, KD on original (kd_ori), related "
                          "(kd_rel) or unrelated (kd_unr) data", choices=BASELINES)
    kd_data: str | None = param(None, "image folder (any layout) for --baseline kd_rel / kd_unr")
    workers: int = param(0, "data-loading workers", min=0)
    test_only: bool = param(False, "evaluate the teacher (and a resumed student) and exit")
    stu_ckpt: str | None = param(None, "start from these student weights (segmentation scripts)")
    channels_last: bool = param(True, "channels_last memory format (measured faster, docs/benchmarks.md)")
    download: bool = param(False, "download the dataset (MNIST, CIFAR, SVHN) into --data_root when missing")
    save_img: bool = param(False, "accepted for compatibility: sample grids are always written to <output>/samples")

    def validate(self) -> None:
        super().validate()
        if self.baseline in ("kd_rel", "kd_unr") and not self.kd_data:
            raise ConfigError(f"--baseline {self.baseline} needs --kd_data DIR (a folder of images)")
        if self.kd_data and self.baseline not in ("kd_rel", "kd_unr"):
            raise ConfigError("--kd_data is only used by --baseline kd_rel or kd_unr")
        if self.ckpt is None:
            raise ConfigError("DFAD needs a teacher checkpoint: pass --ckpt PATH")
        if self.scheduler and not self.milestones and not self.step_size:
            raise ConfigError("--scheduler needs --step_size >= 1 or milestones")

    def lr_schedule(self) -> LRSchedule:
        """The original's StepLR / MultiStepLR at the original's timing (constant without ``--scheduler``)."""
        if not self.scheduler:
            return LRSchedule("constant")
        if self.milestones:
            return LRSchedule("multistep", timing=self.scheduler_timing, milestones=tuple(self.milestones),
                              gamma=self.lr_decay_gamma)
        return LRSchedule("step", timing=self.scheduler_timing, step_size=self.step_size, gamma=self.lr_decay_gamma)


def lr_decay_epochs(cfg: DFADConfig) -> list[int]:
    """First (1-based) epochs trained at each decayed LR, reproducing where the original stepped its scheduler.

    Stepped at the start of an epoch (MNIST, CIFAR, Caltech101), StepLR(100) decays from epoch 100 on; stepped at
    the end (segmentation) it decays from epoch 101 on.
    """
    schedule = cfg.lr_schedule().validate()
    lrs = [schedule.lr(1.0, schedule.counter(e, 0)) for e in range(cfg.epochs)]
    return [e + 1 for e in range(1, cfg.epochs) if lrs[e] < lrs[e - 1]]


def _kd_images(cfg: DFADConfig, task, norm):
    """The real images of the KD baselines: the dataset's training split (kd_ori) or an image folder."""
    spec = dataset_spec(cfg.dataset)
    if cfg.baseline == "kd_ori":
        root = data_root_of(cfg.dataset, cfg.data_root)
        return get_dataset(cfg.dataset, root, split="train", train_transform=True, normalize=norm,
                           **task.dataset_options(cfg))
    path = Path(cfg.kd_data).expanduser()
    if not path.is_dir():
        raise DataError(f"--kd_data folder not found: {path}")
    return UnlabeledImages(path, size=cfg.img_size, resize=cfg.resize or cfg.img_size, channels=spec.in_channels,
                           mean=norm[0], std=norm[1])


@RECIPES.register("dfad")
class DFADRecipe(Recipe):
    """Build the players, evaluate the teacher, run the chosen DFAD row, write the run directory."""

    name = "dfad"
    config_class = DFADConfig
    eval_only_field = "test_only"

    @property
    def plan_title(self) -> str:
        return f"DFAD plan ({self.cfg.baseline})"

    @property
    def data_free(self) -> bool:
        return self.cfg.baseline in ("dfad", "random_generator")

    def check(self) -> None:
        cfg = self.cfg
        for name in (cfg.teacher, cfg.student):
            check_model_fits(name, cfg.dataset)
        if "step_size" in self.given and cfg.milestones:
            warn(f"--step_size is ignored by the original {cfg.dataset} script (MultiStepLR at {cfg.milestones}); "
                 f"kept for compatibility")
        if cfg.save_img:
            warn("--save_img is accepted for compatibility: sample grids are always written to <output>/samples")
        if cfg.download:
            from ..data import download_dataset

            download_dataset(cfg.dataset, cfg.data_root)

    def build_players(self):
        cfg, ctx, spec = self.cfg, self.ctx, dataset_spec(self.cfg.dataset)
        if cfg.batch_size % ctx.dist.world_size:
            raise ConfigError(f"--batch_size {cfg.batch_size} is not divisible by the {ctx.dist.world_size} "
                              f"processes")
        num_classes = cfg.num_classes or spec.num_classes
        players = {
            "teacher": ctx.prepare(build_model(cfg.teacher, num_classes, checkpoint=cfg.ckpt, dataset=cfg.dataset,
                                               **self.task.teacher_options)),
            "student": ctx.prepare(build_model(cfg.student, num_classes, checkpoint=cfg.stu_ckpt,
                                               dataset=cfg.dataset)),
        }
        if self.data_free:
            players["generator"] = ctx.prepare(create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf,
                                                                img_size=cfg.img_size, nc=spec.in_channels))
        self.norm = dataset_normalization(cfg.dataset, cfg.normalize)
        self.kd_images = None if self.data_free else _kd_images(cfg, self.task, self.norm)
        return players

    def build_evaluator(self):
        cfg = self.cfg
        return test_split_evaluator(
            self.ctx, self.task, cfg, dataset=cfg.dataset, normalize=cfg.normalize, batch_size=cfg.test_batch_size,
            workers=cfg.workers, explicit_root=self.explicit_root,
            warn_if_missing="training anyway (data-free); no evaluation will happen" if self.data_free else
            "no evaluation will happen")

    def parallel_players(self) -> tuple[str, ...]:
        return ("student", "generator")

    def build_method(self):
        cfg, ctx, p = self.cfg, self.ctx, self.players
        opt_S, opt_G = dfad_optimizers(cfg.lr_S, cfg.lr_G, cfg.weight_decay, cfg.momentum)
        common = dict(batch_size=cfg.batch_size // ctx.dist.world_size, opt_S=opt_S, schedule=cfg.lr_schedule(),
                      student_steps=cfg.student_steps, task=self.task.name, device=ctx.device, amp=cfg.amp,
                      channels_last=cfg.channels_last)
        if self.data_free:
            method = DFAD(p["teacher"], p["student"], p["generator"], nz=cfg.nz, opt_G=opt_G, loss=cfg.loss,
                          student_bn_update_in_g_step=cfg.student_bn_update_in_g_step,
                          batched_generation=cfg.batched_generation, train_generator=cfg.baseline == "dfad",
                          **common)
        else:
            method = DataKD(p["teacher"], p["student"], self.kd_images, seed=cfg.seed, dist=ctx.dist,
                            workers=cfg.workers, **common)
        method.name = cfg.baseline if cfg.baseline != "dfad" else method.name
        return method

    def plan(self) -> dict[str, str]:
        cfg, p = self.cfg, self.players
        spec = dataset_spec(cfg.dataset)
        generator = p.get("generator")
        source = {"dfad": f"{cfg.generator} nz={cfg.nz} {param_count(generator) if generator else ''} params",
                  "random_generator": f"{cfg.generator} (never trained)"}.get(
            cfg.baseline, f"{len(self.kd_images) if self.kd_images is not None else 0} real images "
                          f"({'training split' if cfg.baseline == 'kd_ori' else cfg.kd_data})")
        decay = lr_decay_epochs(cfg)
        return {
            "dataset": f"{cfg.dataset} ({cfg.num_classes or spec.num_classes} classes, normalisation "
                       f"mean={self.norm[0]} std={self.norm[1]})",
            "teacher": f"{cfg.teacher} {param_count(p['teacher'])} params, weights {cfg.ckpt}",
            "student": f"{cfg.student} {param_count(p['student'])} params"
                       + (f", weights {cfg.stu_ckpt}" if cfg.stu_ckpt else ""),
            "generator" if self.data_free else "images": source,
            "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, lr_S {cfg.lr_S} "
                        f"(SGD m={cfg.momentum} wd={cfg.weight_decay}), lr_G {cfg.lr_G} (Adam), "
                        f"decay x{cfg.lr_decay_gamma} from epochs {decay or 'never'}",
            "evaluation": f"{cfg.dataset} test split under {cfg.data_root} ({self.task.metric})" if self.evaluator
                          else "none (data not found)",
        }

    def render(self):
        task = self.task
        if task.render is None:
            return None
        return sample_renderer(*self.norm, show=lambda images, m: task.render(images, m.teacher, m.eval_model()))

    def train_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"norm": self.norm}
        if self.task.render is not None:
            settings["nrow"] = self.task.render_nrow
        return settings


for _name in BASELINES:
    register_method(_name, "dfad", baseline=_name)


def run_dfad(cfg: DFADConfig, task, *, script: str = "dfad", explicit_root: bool = True, dry_run: bool = False,
             given: set[str] = frozenset(), overwrite: bool = False) -> dict[str, Any]:
    return DFADRecipe(cfg, task, script=script, given=given, explicit_root=explicit_root, dry_run=dry_run,
                      overwrite=overwrite).run()
