"""DFAD for classification: MNIST, CIFAR-10/100 and Caltech101 configs over the one DFAD implementation in core.

Entry points ``classification/dfad_{mnist,cifar,caltech101}.py`` call :func:`main` with their preset; they accept
the original scripts' flags (``--batch_size --test_batch_size --epochs --epoch_itrs --lr_S --lr_G --data_root
--dataset --ckpt --weight_decay --momentum --seed --nz --step_size --scheduler --verbose --no-cuda --log-interval
--test-only``) with the same meaning, plus the common kdvision flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdvision.core.data import dataset_spec
from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import RunConfig, resolve_config
from kdvision.core.engine.runner import RunContext
from kdvision.core.errors import ConfigError
from kdvision.core.generators import create_generator
from kdvision.core.methods.dfad import DFAD, LOSSES
from kdvision.core.models import build_model, create_model

from .common import (
    check_model_fits,
    describe_plan,
    load_preset,
    make_evaluator,
    normalization_of,
    param_count,
)


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
    img_size: int = 32
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
    workers: int = 0
    test_only: bool = False
    channels_last: bool = True  # measured faster for the generator's convolutions (docs/benchmarks.md)


# One home per preset: the YAML files in ``configs/`` (the original scripts' defaults, documented there).
PRESETS: dict[str, dict[str, Any]] = {name: load_preset(f"dfad_{name}") for name in ("mnist", "cifar", "caltech101",
                                                                                   "digits")}
DATASET_CHOICES = {"mnist": ["mnist", "digits"], "cifar": ["cifar10", "cifar100"], "caltech101": ["caltech101"],
                   "digits": ["digits", "mnist"]}


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
        return [m + shift for m in cfg.milestones]
    if not cfg.step_size or cfg.step_size < 1:
        raise ConfigError("--scheduler needs --step_size >= 1 or milestones")
    return [k + shift for k in range(cfg.step_size, cfg.epochs + 1, cfg.step_size)]


def build_parser(preset: str):
    p = base_parser(f"DFAD data-free adversarial distillation ({preset}); flags of the original DFAD_{preset}.py")
    g = p.add_argument_group("DFAD (original flags)")
    g.add_argument("--dataset", choices=DATASET_CHOICES[preset])
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
    g.add_argument("--verbose", action="store_true", help="log every --log-interval steps")
    g.add_argument("--no-cuda", "--no_cuda", dest="device", action="store_const", const="cpu", help="use the CPU")
    g.add_argument("--test-only", "--test_only", dest="test_only", action="store_true",
                   help="evaluate the teacher (and a resumed student) and exit")
    k = p.add_argument_group("kdvision extensions")
    k.add_argument("--teacher", help="teacher architecture")
    k.add_argument("--student", help="student architecture")
    k.add_argument("--generator", help="generator (dfad_a, dfad_b, ...)")
    k.add_argument("--loss", choices=LOSSES, help="generator loss")
    k.add_argument("--batched-generation", "--batched_generation", dest="batched_generation",
                   action="store_true", help="one generator forward for the 5 student steps (changes BN stats)")
    k.add_argument("--workers", type=int, help="data-loading workers for evaluation")
    return p


def run(cfg: DFADConfig, *, explicit_root: bool, dry_run: bool = False, given: set[str] = frozenset()) -> dict:
    if cfg.step_size is not None and "step_size" in given and cfg.milestones:
        print(f"warning: --step_size is ignored by the original {cfg.dataset} script (MultiStepLR at "
              f"{cfg.milestones}); kept for compatibility")
    if cfg.ckpt is None:
        raise ConfigError("DFAD needs a teacher checkpoint: pass --ckpt PATH")
    spec = dataset_spec(cfg.dataset)
    num_classes = cfg.num_classes or spec.num_classes
    for name in (cfg.teacher, cfg.student):
        check_model_fits(name, cfg.dataset)
    decay = lr_decay_epochs(cfg)
    ctx = RunContext(cfg, dry_run=dry_run)
    try:
        world = ctx.dist.world_size
        if cfg.batch_size % world:
            raise ConfigError(f"--batch_size {cfg.batch_size} is not divisible by the {world} processes")

        teacher = ctx.prepare(build_model(cfg.teacher, num_classes, checkpoint=cfg.ckpt))
        student = ctx.prepare(create_model(cfg.student, num_classes))
        generator = ctx.prepare(create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf, img_size=cfg.img_size,
                                                 nc=spec.in_channels))
        evaluator = make_evaluator(ctx, cfg, dataset=cfg.dataset, normalize=cfg.normalize,
                                   batch_size=cfg.test_batch_size, workers=cfg.workers, explicit_root=explicit_root,
                                   warn_if_missing="training anyway (data-free); no evaluation will happen")
        norm = normalization_of(cfg.dataset, cfg.normalize)
        if dry_run:
            print(describe_plan("DFAD plan", {
                "dataset": f"{cfg.dataset} ({num_classes} classes, normalisation mean={norm[0]} std={norm[1]})",
                "teacher": f"{cfg.teacher} {param_count(teacher)} params, weights {cfg.ckpt}",
                "student": f"{cfg.student} {param_count(student)} params",
                "generator": f"{cfg.generator} nz={cfg.nz} {param_count(generator)} params",
                "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, lr_S {cfg.lr_S} "
                            f"(SGD m={cfg.momentum} wd={cfg.weight_decay}), lr_G {cfg.lr_G} (Adam), "
                            f"decay x{cfg.lr_decay_gamma} from epochs {decay or 'never'}",
                "evaluation": f"{cfg.dataset} test split under {cfg.data_root}" if evaluator else "none (data not found)",
                "device": f"{ctx.device} (world size {ctx.dist.world_size})",
                "output": cfg.output,
            }))
            return {}

        teacher_acc = evaluator(teacher)["acc"] if evaluator else None
        if teacher_acc is not None:
            ctx.log.info(f"teacher {cfg.teacher} test acc {teacher_acc:.4f}")
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            student, generator = DDP(student), DDP(generator)
        if cfg.compile:
            import torch

            student, generator = torch.compile(student), torch.compile(generator)
        method = DFAD(teacher, student, generator, nz=cfg.nz, batch_size=cfg.batch_size // world, lr_S=cfg.lr_S,
                      lr_G=cfg.lr_G, weight_decay=cfg.weight_decay, momentum=cfg.momentum, loss=cfg.loss,
                      student_steps=cfg.student_steps, student_bn_update_in_g_step=cfg.student_bn_update_in_g_step,
                      batched_generation=cfg.batched_generation, lr_decay_epochs=decay,
                      lr_decay_gamma=cfg.lr_decay_gamma, device=ctx.device, amp=cfg.amp,
                      channels_last=cfg.channels_last)
        if cfg.test_only:
            if cfg.resume:
                from kdvision.core.checkpoint import load_weights

                load_weights(method.eval_model(), ctx.run.last_ckpt if cfg.resume == "auto" else cfg.resume)
                result = evaluator(method.eval_model()) if evaluator else {}
                ctx.log.info(f"student test acc {result.get('acc', float('nan')):.4f}")
            return {"teacher_metric": teacher_acc}
        return ctx.train(method, task="classification", metric="acc", batch_size=cfg.batch_size,
                         evaluator=evaluator, teacher_metric=teacher_acc, norm=norm)
    finally:
        ctx.close()


def main(preset: str, argv: list[str] | None = None) -> None:
    def _main(args_list: list[str]) -> int:
        args = build_parser(preset).parse_args(args_list)
        cfg = resolve_config(DFADConfig, PRESETS[preset], args)
        given = set(vars(args))
        if preset == "cifar" and "ckpt" not in given and not cfg.ckpt:
            cfg.ckpt = f"checkpoint/teacher/{cfg.dataset}-resnet34_8x.pt"
        explicit_root = "data_root" in given or cfg.data_root != PRESETS[preset].get("data_root")
        run(cfg, explicit_root=explicit_root, dry_run=getattr(args, "dry_run", False), given=given)
        return 0

    run_cli(_main, argv)

