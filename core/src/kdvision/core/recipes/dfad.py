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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import dataset_normalization, dataset_spec, get_dataset
from ..data.folder import UnlabeledImages
from ..engine.cli import ArgumentParser
from ..engine.config import RunConfig
from ..engine.runner import RunContext, describe_plan, param_count
from ..engine.trainer import sample_renderer
from ..errors import ConfigError, DataError
from ..generators import create_generator
from ..methods.dfad import DFAD, LOSSES
from ..methods.kd_data import DataKD
from ..models import build_model, check_model_fits
from .task import TaskAdapter, data_root_of, test_split_evaluator

BASELINES = ("dfad", "random_generator", "kd_ori", "kd_rel", "kd_unr")


@dataclass
class DFADConfig(RunConfig):
    dataset: str = "mnist"
    teacher: str = "lenet5"
    student: str = "lenet5_half"
    ckpt: str | None = None  # teacher checkpoint
    num_classes: int | None = None  # None: from the dataset
    normalize: str | None = None  # normalisation the teacher expects (None: the dataset's)
    generator: str = "dfad_a"
    nz: int = 100
    ngf: int = 64
    img_size: int = 32  # generated (and KD-baseline crop) size
    resize: int | None = None  # short side of real images before cropping/evaluation (None: the dataset's default)
    batch_size: int = 512
    test_batch_size: int = 256
    lr_S: float = 0.01
    lr_G: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: bool = False  # the original --scheduler: LR decay only when set
    step_size: int | None = 100  # StepLR period of the original scripts (used with --scheduler)
    milestones: list[int] = field(default_factory=list)  # MultiStepLR milestones (CIFAR: 100, 200)
    scheduler_timing: str = "start"  # original stepped the scheduler at the epoch's "start" or "end"
    lr_decay_gamma: float = 0.1
    loss: str = "l1"  # generator loss: "l1" = -L1, "log_l1" = -log(L1 + 1)
    student_steps: int = 5
    student_bn_update_in_g_step: bool = True  # original: S in train mode during the G step
    batched_generation: bool = False  # one G forward for all student steps (changes G's BN batch statistics)
    baseline: str = "dfad"  # dfad | random_generator | kd_ori | kd_rel | kd_unr
    kd_data: str | None = None  # image folder of the kd_rel / kd_unr baselines
    workers: int = 0
    test_only: bool = False
    stu_ckpt: str | None = None  # start from these student weights (segmentation scripts' --stu_ckpt)
    channels_last: bool = True  # measured faster for the generator's convolutions (docs/benchmarks.md)


def lr_decay_epochs(cfg: DFADConfig) -> list[int]:
    """First (1-based) epochs trained at each decayed LR, reproducing where the original stepped its scheduler.

    Stepped at the start of an epoch (MNIST, CIFAR, Caltech101), StepLR(100) decays from epoch 100 on; stepped at
    the end (segmentation) it decays from epoch 101 on.
    """
    if not cfg.scheduler:
        return []
    shift = {"start": 0, "end": 1}.get(cfg.scheduler_timing)
    if shift is None:
        raise ConfigError(f"scheduler_timing must be 'start' or 'end', got {cfg.scheduler_timing!r}")
    if cfg.milestones:
        epochs = [m + shift for m in cfg.milestones]
    elif not cfg.step_size or cfg.step_size < 1:
        raise ConfigError("--scheduler needs --step_size >= 1 or milestones")
    else:
        epochs = [k + shift for k in range(cfg.step_size, cfg.epochs + 1, cfg.step_size)]
    return [e for e in epochs if e <= cfg.epochs]  # a decay after the last epoch never takes effect


def add_dfad_arguments(p: ArgumentParser, datasets: list[str]) -> None:
    """The flags of the original DFAD scripts (same meaning), and kdvision's extensions."""
    g = p.add_argument_group("DFAD (original flags)")
    g.add_argument("--dataset", choices=datasets)
    g.add_argument("--ckpt", help="teacher checkpoint (raw state_dict or a container)")
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, help="generated batch (global)")
    g.add_argument("--test_batch_size", "--test-batch-size", dest="test_batch_size", type=int)
    g.add_argument("--epoch_itrs", dest="iters_per_epoch", type=int, help="iterations per epoch")
    g.add_argument("--lr_S", type=float, help="student SGD learning rate")
    g.add_argument("--lr_G", type=float, help="generator Adam learning rate")
    g.add_argument("--weight_decay", "--weight-decay", dest="weight_decay", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--nz", type=int, help="noise dimension")
    g.add_argument("--step_size", type=int, help="StepLR period (only with --scheduler)")
    g.add_argument("--scheduler", action="store_true", help="decay the LR of S and G")
    g.add_argument("--num_classes", type=int, help="classes (default: the dataset's)")
    g.add_argument("--stu_ckpt", help="start from these student weights (segmentation scripts)")
    g.add_argument("--verbose", action="store_true", help="log every --log-interval steps")
    g.add_argument("--no-cuda", "--no_cuda", dest="device", action="store_const", const="cpu", help="use the CPU")
    g.add_argument("--test-only", "--test_only", dest="test_only", action="store_true",
                   help="evaluate the teacher (and a resumed student) and exit")
    g.add_argument("--save_img", action="store_true", help="accepted for compatibility: sample grids are always "
                   "written to <output>/samples")
    g.add_argument("--download", action="store_true", help="accepted for compatibility: kdvision never downloads "
                   "during a run")
    k = p.add_argument_group("kdvision extensions")
    k.add_argument("--teacher", help="teacher architecture")
    k.add_argument("--student", help="student architecture")
    k.add_argument("--generator", help="generator (dfad_a, dfad_b, ...)")
    k.add_argument("--loss", choices=LOSSES, help="generator loss")
    k.add_argument("--baseline", choices=BASELINES, help="the paper's baselines: random generator, KD on "
                   "original (kd_ori), related (kd_rel) or unrelated (kd_unr) data")
    k.add_argument("--kd_data", "--kd-data", dest="kd_data", metavar="DIR",
                   help="image folder (any layout) for --baseline kd_rel / kd_unr")
    k.add_argument("--batched-generation", "--batched_generation", dest="batched_generation",
                   action="store_true", help="one generator forward for the 5 student steps (changes BN stats)")
    k.add_argument("--workers", type=int, help="data-loading workers")


def _check(cfg: DFADConfig, given: set[str]) -> None:
    if cfg.baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {cfg.baseline!r}; valid: {', '.join(BASELINES)}")
    if cfg.baseline in ("kd_rel", "kd_unr") and not cfg.kd_data:
        raise ConfigError(f"--baseline {cfg.baseline} needs --kd_data DIR (a folder of images)")
    if cfg.kd_data and cfg.baseline not in ("kd_rel", "kd_unr"):
        raise ConfigError("--kd_data is only used by --baseline kd_rel or kd_unr")
    if cfg.ckpt is None:
        raise ConfigError("DFAD needs a teacher checkpoint: pass --ckpt PATH")
    if cfg.step_size is not None and "step_size" in given and cfg.milestones:
        print(f"warning: --step_size is ignored by the original {cfg.dataset} script (MultiStepLR at "
              f"{cfg.milestones}); kept for compatibility")


def _kd_images(cfg: DFADConfig, task: TaskAdapter, norm):
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


def run_dfad(cfg: DFADConfig, task: TaskAdapter, *, explicit_root: bool, dry_run: bool = False,
             given: set[str] = frozenset()) -> dict[str, Any]:
    """Build the players, evaluate the teacher, run the chosen method, write the run directory."""
    _check(cfg, given)
    spec = dataset_spec(cfg.dataset)
    num_classes = cfg.num_classes or spec.num_classes
    for name in (cfg.teacher, cfg.student):
        check_model_fits(name, cfg.dataset)
    decay = lr_decay_epochs(cfg)
    norm = dataset_normalization(cfg.dataset, cfg.normalize)
    ctx = RunContext(cfg, dry_run=dry_run)
    try:
        world = ctx.dist.world_size
        if cfg.batch_size % world:
            raise ConfigError(f"--batch_size {cfg.batch_size} is not divisible by the {world} processes")
        teacher = ctx.prepare(build_model(cfg.teacher, num_classes, checkpoint=cfg.ckpt, dataset=cfg.dataset,
                                          **task.teacher_options))
        student = ctx.prepare(build_model(cfg.student, num_classes, checkpoint=cfg.stu_ckpt, dataset=cfg.dataset))
        data_free = cfg.baseline in ("dfad", "random_generator")
        generator = None
        if data_free:
            generator = ctx.prepare(create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf, img_size=cfg.img_size,
                                                     nc=spec.in_channels))
        evaluator = test_split_evaluator(
            ctx, task, cfg, dataset=cfg.dataset, normalize=cfg.normalize, batch_size=cfg.test_batch_size,
            workers=cfg.workers, explicit_root=explicit_root,
            warn_if_missing="training anyway (data-free); no evaluation will happen" if data_free else
            "no evaluation will happen")
        kd_images = None if data_free else _kd_images(cfg, task, norm)
        if dry_run:
            source = {"dfad": f"{cfg.generator} nz={cfg.nz} {param_count(generator) if generator else ''} params",
                      "random_generator": f"{cfg.generator} (never trained)"}.get(
                cfg.baseline, f"{len(kd_images) if kd_images is not None else 0} real images "
                              f"({'training split' if cfg.baseline == 'kd_ori' else cfg.kd_data})")
            print(describe_plan(f"DFAD plan ({cfg.baseline})", {
                "dataset": f"{cfg.dataset} ({num_classes} classes, normalisation mean={norm[0]} std={norm[1]})",
                "teacher": f"{cfg.teacher} {param_count(teacher)} params, weights {cfg.ckpt}",
                "student": f"{cfg.student} {param_count(student)} params"
                           + (f", weights {cfg.stu_ckpt}" if cfg.stu_ckpt else ""),
                "generator" if data_free else "images": source,
                "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, lr_S {cfg.lr_S} "
                            f"(SGD m={cfg.momentum} wd={cfg.weight_decay}), lr_G {cfg.lr_G} (Adam), "
                            f"decay x{cfg.lr_decay_gamma} from epochs {decay or 'never'}",
                "evaluation": f"{cfg.dataset} test split under {cfg.data_root} ({task.metric})" if evaluator
                              else "none (data not found)",
                "device": f"{ctx.device} (world size {ctx.dist.world_size})",
                "output": cfg.output,
            }))
            return {}

        teacher_metric = evaluator(teacher)[task.metric] if evaluator else None
        if teacher_metric is not None:
            ctx.log.info(f"teacher {cfg.teacher} test {task.metric} {teacher_metric:.4f}")
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            student = DDP(student)
            generator = DDP(generator) if generator is not None else None
        if cfg.compile:
            import torch

            student = torch.compile(student)
            generator = torch.compile(generator) if generator is not None else None
        common = dict(batch_size=cfg.batch_size // world, lr_S=cfg.lr_S, weight_decay=cfg.weight_decay,
                      momentum=cfg.momentum, student_steps=cfg.student_steps, lr_decay_epochs=decay,
                      lr_decay_gamma=cfg.lr_decay_gamma, task=task.name, device=ctx.device, amp=cfg.amp,
                      channels_last=cfg.channels_last)
        if data_free:
            method = DFAD(teacher, student, generator, nz=cfg.nz, lr_G=cfg.lr_G, loss=cfg.loss,
                          student_bn_update_in_g_step=cfg.student_bn_update_in_g_step,
                          batched_generation=cfg.batched_generation,
                          train_generator=cfg.baseline == "dfad", **common)
        else:
            method = DataKD(teacher, student, kd_images, seed=cfg.seed, dist=ctx.dist, workers=cfg.workers,
                            **common)
        method.name = cfg.baseline if cfg.baseline != "dfad" else method.name
        if cfg.test_only:
            if cfg.resume:
                from ..checkpoint import load_weights

                load_weights(method.eval_model(), ctx.run.last_ckpt if cfg.resume == "auto" else cfg.resume)
                result = evaluator(method.eval_model()) if evaluator else {}
                ctx.log.info(f"student test {task.metric} {result.get(task.metric, float('nan')):.4f}")
            return {"teacher_metric": teacher_metric}
        render = None
        if task.render is not None:
            render = sample_renderer(*norm, show=lambda images, m: task.render(images, m.teacher, m.eval_model()))
        return ctx.train(method, task=task.name, metric=task.metric, batch_size=cfg.batch_size,
                         evaluator=evaluator, teacher_metric=teacher_metric, norm=norm, render=render,
                         nrow=task.render_nrow if render is not None else 8)
    finally:
        ctx.close()

