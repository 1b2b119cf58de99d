"""The data-free engine as a runnable recipe: DAFL, ZSKT, DFQ, DFAD, DeepInversion, CMI, Fast, Fast-Meta and RGAL.

One config (:class:`DataFreeConfig`, the CMI / Fast-Datafree / RGAL flags), one method (:class:`DataFreeKD`), one
synthesizer per ``--method``. Method presets (the published scripts' hyper-parameters) live in the task's config
files; ``--T`` is honoured by every method: the generative baselines' presets distil at τ = 1 because the originals
silently did so whatever ``--T`` said, and ``legacy_generative_kd_T1`` restores that behaviour for a given ``--T``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_weights
from ..data import dataset_spec
from ..data.base import open_image
from ..data.normalization import normalization
from ..engine.cli import ArgumentParser
from ..engine.config import RunConfig
from ..engine.runner import RunContext, describe_plan, param_count
from ..engine.trainer import Hook
from ..errors import ConfigError, DataError
from ..generators import create_generator
from ..methods.datafree import DataFreeKD
from ..methods.rgal import RGALStudentTerms
from ..models import build_model, check_model_fits, model_info
from ..synthesis import (AdvTripletSynthesizer, CMISynthesizer, DeepInversionSynthesizer, FastMetaSynthesizer,
                         FastSynthesizer, GenerativeSynthesizer)
from .task import TaskAdapter, test_split_evaluator

GENERATIVE = ("dafl", "zskt", "dfq", "dfad")
METHODS = GENERATIVE + ("deepinv", "cmi", "fast", "fast_meta", "rgal")
SAVE_SAMPLES = ("none", "grid", "pool")


@dataclass
class DataFreeConfig(RunConfig):
    method: str = "cmi"
    dataset: str = "cifar10"  # in-domain dataset: classes, image size, normalisation, evaluation
    eval_dataset: str | None = None  # evaluate on this dataset's test split instead (e.g. cifar10_test_subset)
    teacher: str = "wrn40_2"
    student: str = "wrn16_1"
    teacher_weights: str | None = None  # None: checkpoints/pretrained/{dataset}_{teacher}.pth (CMI layout)
    num_classes: int | None = None
    normalize: str | None = None  # None: the teacher's expected normalisation, else the dataset's
    # -- KD (student) -------------------------------------------------------------------------------------------
    batch_size: int = 128  # KD batch (global; x2 images with pair_sample)
    test_batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    T: float | None = None  # KD temperature (None: the method's preset)
    kd_loss: str = "kl"  # kl | l1 (DFAD)
    legacy_generative_kd_T1: bool = False  # DAFL/ZSKT/DFQ/DFAD: ignore --T, KL at T=1 (L1 for DFAD), as the original
    scheduler: str = "cosine"  # cosine | multistep | constant
    lr_min: float = 0.0  # cosine floor (Fast: 2e-4)
    lr_decay_milestones: list[int] = field(default_factory=list)  # multistep only
    kd_steps: int = 400
    ep_steps: int = 400
    warmup: int = 0  # synthesis-only epochs before KD (Fast); counted in --epochs as in the original
    # -- synthesis ------------------------------------------------------------------------------------------------
    synthesis_batch_size: int | None = None  # None: batch_size
    g_steps: int = 1
    lr_g: float = 1e-3
    lr_z: float = 1e-3
    generator: str = "cmi"
    nz: int = 256
    ngf: int = 64
    adv: float = 0.0
    bn: float = 0.0
    oh: float = 0.0
    act: float = 0.0
    balance: float = 0.0
    balance_base: str = "e"
    tv: float = 0.0
    l2: float = 0.0
    best_of_steps: bool = False  # DeepInversion: pool gets the true best iterate (original: the last one)
    cr: float = 1.0
    cr_T: float = 0.5
    bank_size: int = 40960
    n_neg: int = 4096
    head_dim: int = 256
    bn_mmt: float = 0.0
    is_maml: int = 1
    reset_l0: int = 0
    reset_bn: int = 0
    pool_dtype: str = "uint8"
    cmi_init: str | None = None  # a folder of pre-synthesized images that starts the pool
    save_dir: str | None = None  # also write every pooled image as a PNG here (the originals' pool folder)
    save_samples: str = "grid"  # none | grid (each epoch's synthetic batch under <output>/samples) | pool (+ PNGs)
    # -- RGAL -----------------------------------------------------------------------------------------------------
    triplet: float = 0.0
    striplet: float = 0.0
    triplet_target: str = "teacher"
    striplet_feature: str = "features"
    start_layer: int = 0
    end_layer: int = 4
    balanced_sampling: bool = False
    balanced_sampling_student: bool = False
    synthesis_triplet_sign: str = "code"  # code (released code, default) | paper
    pair_sample: bool = False
    cd_loss: float = 0.0
    gram_loss: float = 0.0
    custom_steps: float = 1.0
    # -- misc -----------------------------------------------------------------------------------------------------
    workers: int = 0
    evaluate_only: bool = False
    log_tag: str = ""


def add_datafree_arguments(p: ArgumentParser, methods: tuple[str, ...] = METHODS) -> None:
    """The CMI / Fast-Datafree ``datafree_kd.py`` flags (same meaning) and kdvision's extensions."""
    g = p.add_argument_group("data-free engine (CMI / Fast-Datafree flags)")
    g.add_argument("--method", choices=methods)
    g.add_argument("--dataset")
    g.add_argument("--teacher")
    g.add_argument("--student")
    g.add_argument("--teacher_weights", "--teacher-weights", "--ckpt", dest="teacher_weights", metavar="PATH",
                   help="teacher checkpoint (default: checkpoints/pretrained/{dataset}_{teacher}.pth)")
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, help="KD batch (global)")
    g.add_argument("--synthesis_batch_size", type=int, help="images synthesized per round (default: --batch_size)")
    g.add_argument("--lr", type=float, help="student SGD learning rate")
    g.add_argument("--momentum", type=float)
    g.add_argument("--wd", "--weight_decay", dest="weight_decay", type=float)
    g.add_argument("--T", type=float, help="KD temperature (honoured by every method)")
    g.add_argument("--kd_steps", type=int, help="KD steps per synthesis round")
    g.add_argument("--ep_steps", type=int, help="KD steps per epoch")
    g.add_argument("--g_steps", type=int, help="inner synthesis steps per round")
    g.add_argument("--lr_g", type=float, help="generator / pixel Adam learning rate")
    g.add_argument("--lr_z", type=float, help="latent-code learning rate (Fast)")
    for name, what in (("adv", "adversarial"), ("bn", "BN-statistics"), ("oh", "one-hot / target CE"),
                       ("act", "DAFL activation"), ("balance", "class-balance"), ("cr", "contrastive (CMI)")):
        g.add_argument(f"--{name}", type=float, help=f"{what} loss weight")
    g.add_argument("--cr_T", type=float, help="contrastive temperature (CMI)")
    g.add_argument("--cmi_init", metavar="DIR", help="folder of pre-inverted images that starts the pool")
    g.add_argument("--warmup", type=int, help="synthesis-only epochs before KD starts (Fast)")
    g.add_argument("--bn_mmt", type=float, help="momentum of the BN-statistics EMA (Fast)")
    g.add_argument("--is_maml", type=int, choices=(0, 1), help="Fast-Meta: 1 = FOMAML, 0 = Reptile")
    g.add_argument("--reset_l0", type=int, choices=(0, 1), help="Fast: re-initialise the generator's first layers "
                   "once, at epoch 120 + warmup")
    g.add_argument("--reset_bn", type=int, choices=(0, 1), help="accepted; unused by the original too")
    g.add_argument("--save_dir", metavar="DIR", help="also write the pool as PNG files here (for inspection)")
    g.add_argument("--lr_decay_milestones", type=lambda s: [int(v) for v in s.split(",") if v],
                   help="epochs of x0.1 decay (only with --scheduler multistep)")
    g.add_argument("--evaluate_only", action="store_true", help="evaluate the teacher (and --resume'd student)")
    g.add_argument("--gpu", type=int, help="GPU index (= --device cuda:N)")
    g.add_argument("--print_freq", "-p", dest="log_interval", type=int, help="steps between log lines")
    g.add_argument("--log_tag", help="recorded in the config (the run directory replaces the log file names)")
    g.add_argument("-j", "--workers", type=int, help="data-loading workers for evaluation")
    g.add_argument("--start_epoch", type=int, help="accepted; use --resume (exact) instead")
    g.add_argument("--fp16", dest="amp", action="store_true", help="= --amp (bf16 autocast)")
    for flag in ("--world_size", "--rank", "--dist_url", "--dist_backend"):
        g.add_argument(flag, help="accepted; launch with torchrun for multi-GPU")
    g.add_argument("--multiprocessing_distributed", action="store_true", help="accepted; use torchrun")
    g.add_argument("--pretrained", action="store_true", help="accepted; the teacher comes from --teacher_weights")
    k = p.add_argument_group("kdvision extensions")
    k.add_argument("--eval_dataset", "--eval-dataset", dest="eval_dataset",
                   help="evaluate on this dataset's test split (e.g. cifar10_test_subset)")
    k.add_argument("--legacy_generative_kd_T1", "--legacy-generative-kd-T1", dest="legacy_generative_kd_T1",
                   action="store_true", help="DAFL/ZSKT/DFQ/DFAD: distil at T=1 (L1 for DFAD) whatever --T says, "
                   "as the original engine did")
    k.add_argument("--scheduler", choices=("cosine", "multistep", "constant"), help="student LR schedule")
    k.add_argument("--best_of_steps", action="store_true", help="DeepInversion: pool the lowest-loss iterate "
                   "(the original's selection was a no-op: the last iterate)")
    k.add_argument("--generator", help="generator name (cmi, cmi_large, ...)")
    k.add_argument("--nz", type=int, help="latent size")
    k.add_argument("--ngf", type=int, help="generator width")
    k.add_argument("--bank_size", type=int, help="CMI memory-bank rows")
    k.add_argument("--n_neg", type=int, help="CMI negatives drawn from the bank per step")
    k.add_argument("--head_dim", type=int, help="CMI projection size")
    k.add_argument("--tv", type=float, help="DeepInversion total-variation weight")
    k.add_argument("--l2", type=float, help="DeepInversion L2 prior weight")
    k.add_argument("--lr_min", type=float, help="floor of the cosine schedule")
    k.add_argument("--pool_dtype", choices=("uint8", "float16"), help="pool storage (uint8 = the PNG quantisation)")
    k.add_argument("--save-samples", "--save_samples", dest="save_samples", choices=SAVE_SAMPLES,
                   help="grid: image grids of each round's batch in <output>/samples; pool: also every pooled image "
                   "as a PNG in <output>/pool (or --save_dir); none: neither")
    k.add_argument("--no-save-samples", dest="save_samples", action="store_const", const="none",
                   help="= --save-samples none")
    k.add_argument("--num_classes", type=int, help="classes (default: the dataset's)")
    k.add_argument("--normalize", help="normalisation key the teacher expects (default: the teacher's, else the "
                   "dataset's)")


def _warn(msg: str) -> None:
    print(f"warning: {msg}")


def resolve_temperature(cfg: DataFreeConfig, given: set[str]) -> None:
    """Fill ``cfg.T`` / ``cfg.kd_loss`` for the generative baselines' legacy behaviour and say what happens."""
    if cfg.method in GENERATIVE and cfg.legacy_generative_kd_T1:
        if "T" in given:
            _warn(f"--T {cfg.T:g} ignored: --legacy_generative_kd_T1 distils {cfg.method} at T=1"
                  + (" (L1 for dfad)" if cfg.method == "dfad" else ""))
        cfg.T = 1.0
        cfg.kd_loss = "l1" if cfg.method == "dfad" else "kl"
    elif cfg.T is None:
        cfg.T = 1.0
    elif cfg.method in GENERATIVE and "T" in given and cfg.kd_loss == "kl" and cfg.T != 1:
        print(f"note: --T {cfg.T:g} is honoured for {cfg.method}; the original engine distilled it at T=1 whatever "
              f"--T said (add --legacy_generative_kd_T1 to reproduce the published numbers)")


def _check(cfg: DataFreeConfig) -> None:
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; valid: {', '.join(METHODS)}")
    for key in ("batch_size", "kd_steps", "ep_steps", "g_steps"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.ep_steps < cfg.kd_steps:
        raise ConfigError(f"--ep_steps ({cfg.ep_steps}) must be >= --kd_steps ({cfg.kd_steps}): an epoch holds "
                          f"ep_steps // kd_steps synthesis rounds")
    if not 0 <= cfg.warmup < cfg.epochs:
        raise ConfigError(f"--warmup ({cfg.warmup}) must be in [0, --epochs={cfg.epochs})")
    if cfg.scheduler == "multistep" and not cfg.lr_decay_milestones:
        raise ConfigError("--scheduler multistep needs --lr_decay_milestones")
    if cfg.lr_decay_milestones and cfg.scheduler != "multistep":
        _warn("--lr_decay_milestones has no effect with the cosine schedule (as in the original); pass "
              "--scheduler multistep to use it")
    weights = {"adv": cfg.adv, "bn": cfg.bn, "oh": cfg.oh, "balance": cfg.balance,
               **({"act": cfg.act} if cfg.method in GENERATIVE else {}),
               **({"cr": cfg.cr} if cfg.method == "cmi" else {}),
               **({"tv": cfg.tv, "l2": cfg.l2} if cfg.method == "deepinv" else {}),
               **({"triplet": cfg.triplet} if cfg.method == "rgal" else {})}
    if not any(weights.values()):
        raise ConfigError(f"every synthesis loss weight ({' '.join('--' + k for k in weights)}) is 0: nothing would "
                          f"shape the synthetic images")
    if cfg.save_samples not in SAVE_SAMPLES:
        raise ConfigError(f"--save-samples must be one of {', '.join(SAVE_SAMPLES)}, got {cfg.save_samples!r}")
    if cfg.reset_bn:
        _warn("--reset_bn has no effect (the original parsed it and never used it)")
    if cfg.method == "fast" and cfg.is_maml != 1:
        _warn("--is_maml only affects --method fast_meta")


def expected_normalization(cfg: DataFreeConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Explicit ``--normalize`` > the teacher entry's own statistics > the dataset's."""
    spec = dataset_spec(cfg.dataset)
    if cfg.normalize:
        return normalization(cfg.normalize, channels=spec.in_channels)
    info = model_info(cfg.teacher)
    if "mean" in info and "std" in info:
        return normalization((info["mean"], info["std"]), channels=spec.in_channels)
    return normalization((spec.mean, spec.std), channels=spec.in_channels)


def teacher_checkpoint(cfg: DataFreeConfig) -> str:
    path = cfg.teacher_weights or f"checkpoints/pretrained/{cfg.dataset}_{cfg.teacher}.pth"
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"teacher checkpoint not found: {path} (pass --teacher_weights PATH; CMI's released "
                          f"teachers are named {{dataset}}_{{arch}}.pth)")
    return path


def load_image_folder(folder: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """Every image under ``folder`` as a [0, 1] batch (``--cmi_init``); sizes must match the synthesized ones."""
    import numpy as np

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"--cmi_init folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise DataError(f"--cmi_init folder {root} holds no images")
    mode = "L" if shape[0] == 1 else "RGB"
    arrays = []
    for f in files:
        img = open_image(f, mode)
        if (img.height, img.width) != tuple(shape[1:]):
            raise DataError(f"{f} is {img.width}x{img.height}, the synthesized images are {shape[2]}x{shape[1]}")
        arrays.append(np.asarray(img, dtype=np.uint8).reshape(img.height, img.width, -1))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)


def build_synthesizer(cfg: DataFreeConfig, teacher, student, *, num_classes: int, shape: tuple[int, int, int],
                      norm, device, world: int, generator=None):
    common = dict(num_classes=num_classes, image_shape=shape, mean=norm[0], std=norm[1],
                  batch_size=(cfg.synthesis_batch_size or cfg.batch_size) // world, g_steps=cfg.g_steps,
                  device=device, amp=cfg.amp, channels_last=cfg.channels_last, bn=cfg.bn)
    m = cfg.method
    if m in GENERATIVE:
        return GenerativeSynthesizer(teacher, student, generator, nz=cfg.nz, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh,
                                     act=cfg.act, balance=cfg.balance, balance_base=cfg.balance_base,
                                     adv_loss="l1" if m == "dfad" else "kl", **common)
    pool = dict(pool_dtype=cfg.pool_dtype, pair_sample=cfg.pair_sample)
    if m == "deepinv":
        return DeepInversionSynthesizer(teacher, student, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh, tv=cfg.tv,
                                        l2=cfg.l2, best_of_steps=cfg.best_of_steps, **pool, **common)
    gen = dict(nz=cfg.nz, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh, **pool, **common)
    if m == "cmi":
        layers = ["layer1", "layer2", "layer3", "layer4"] if cfg.teacher == "resnet34" else None
        return CMISynthesizer(teacher, student, generator, cr=cfg.cr, cr_T=cfg.cr_T, bank_size=cfg.bank_size,
                              n_neg=cfg.n_neg, head_dim=cfg.head_dim, feature_layers=layers, **gen)
    if m in ("fast", "fast_meta"):
        fast = dict(lr_z=cfg.lr_z, warmup=cfg.warmup, reset_l0=bool(cfg.reset_l0), bn_momentum=cfg.bn_mmt,
                    bn_mode="momentum" if cfg.bn_mmt else "deepinv")
        if m == "fast":
            return FastSynthesizer(teacher, student, generator, **fast, **gen)
        return FastMetaSynthesizer(teacher, student, generator, is_maml=bool(cfg.is_maml), **fast, **gen)
    return AdvTripletSynthesizer(teacher, student, generator, triplet=cfg.triplet, triplet_target=cfg.triplet_target,
                                 start_layer=cfg.start_layer, end_layer=cfg.end_layer,
                                 balanced_sampling=cfg.balanced_sampling, triplet_sign=cfg.synthesis_triplet_sign,
                                 balance=cfg.balance, **gen)


def run_datafree(cfg: DataFreeConfig, task: TaskAdapter, *, explicit_root: bool, dry_run: bool = False,
                 given: set[str] = frozenset()) -> dict[str, Any]:
    _check(cfg)
    resolve_temperature(cfg, given)
    spec = dataset_spec(cfg.dataset)
    num_classes = cfg.num_classes or spec.num_classes
    for name in (cfg.teacher, cfg.student):
        check_model_fits(name, cfg.dataset)
    norm = expected_normalization(cfg)
    shape = (spec.in_channels, *spec.image_size)
    ckpt = teacher_checkpoint(cfg)
    ctx = RunContext(cfg, dry_run=dry_run)
    try:
        world = ctx.dist.world_size
        for key in ("batch_size", "synthesis_batch_size"):
            if (getattr(cfg, key) or cfg.batch_size) % world:
                raise ConfigError(f"--{key} {getattr(cfg, key)} is not divisible by the {world} processes")
        teacher = ctx.prepare(build_model(cfg.teacher, num_classes, checkpoint=ckpt, dataset=cfg.dataset))
        student = ctx.prepare(build_model(cfg.student, num_classes, dataset=cfg.dataset))
        generator = None
        if cfg.method != "deepinv":
            generator = ctx.prepare(create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf, img_size=spec.image_size,
                                                     nc=spec.in_channels))
        eval_name = cfg.eval_dataset or cfg.dataset
        evaluator = test_split_evaluator(ctx, task, cfg, dataset=eval_name, normalize=norm,
                                         batch_size=cfg.test_batch_size, workers=cfg.workers,
                                         explicit_root=explicit_root,
                                         warn_if_missing="training anyway (data-free); no evaluation will happen")
        synthesizer = build_synthesizer(cfg, teacher, student, num_classes=num_classes, shape=shape, norm=norm,
                                        device=ctx.device, world=world, generator=generator)
        terms = None
        if cfg.method == "rgal" and (cfg.cd_loss > 0 or cfg.gram_loss > 0 or cfg.striplet > 0):
            terms = RGALStudentTerms(teacher, student, shape, epochs=cfg.epochs, cd=cfg.cd_loss, gram=cfg.gram_loss,
                                     striplet=cfg.striplet, striplet_feature=cfg.striplet_feature,
                                     start_layer=cfg.start_layer, end_layer=cfg.end_layer,
                                     custom_steps=cfg.custom_steps,
                                     balanced_sampling_student=cfg.balanced_sampling_student)
        rounds = cfg.ep_steps // cfg.kd_steps
        kd_epochs = cfg.epochs - cfg.warmup
        if dry_run:
            syn_batch = cfg.synthesis_batch_size or cfg.batch_size
            kd = "L1" if cfg.kd_loss == "l1" else f"KL at T={cfg.T:g}"
            items = {
                "dataset": f"{cfg.dataset} ({num_classes} classes, {shape[1]}x{shape[2]}), normalisation "
                           f"mean={norm[0]} std={norm[1]}",
                "teacher": f"{cfg.teacher} {param_count(teacher)} params, weights {ckpt}",
                "student": f"{cfg.student} {param_count(student)} params",
                "synthesizer": f"{type(synthesizer).__name__}: {cfg.g_steps} steps x {syn_batch} images per round, "
                               f"lr_g {cfg.lr_g}, weights adv {cfg.adv} bn {cfg.bn} oh {cfg.oh}"
                               + (f" act {cfg.act}" if cfg.act and cfg.method in GENERATIVE else "")
                               + (f" balance {cfg.balance}" if cfg.balance else ""),
                "generator": f"{cfg.generator} nz={cfg.nz} {param_count(generator)} params" if generator is not None
                             else "none (pixels are optimised)",
                **synthesizer.describe(),
                **(terms.describe() if terms is not None else {}),
                "schedule": f"{cfg.epochs} epochs ({cfg.warmup} warm-up) x {rounds} round(s) of {cfg.kd_steps} KD "
                            f"steps, batch {cfg.batch_size}{' x2 views' if cfg.pair_sample else ''}, {kd}, SGD lr "
                            f"{cfg.lr} {cfg.scheduler}",
                "data": "synthetic pool on the device" if synthesizer.uses_pool else "fresh generator batches",
                "evaluation": f"{eval_name} test split ({task.metric})" if evaluator else "none (data not found)",
                "device": f"{ctx.device} (world size {world})",
                "output": cfg.output,
            }
            print(describe_plan(f"data-free KD plan ({cfg.method})", items))
            return {}
        if cfg.cmi_init:
            if synthesizer.uses_pool:
                synthesizer.pool.add(load_image_folder(cfg.cmi_init, shape).to(ctx.device))
            else:
                _warn(f"--cmi_init is ignored by --method {cfg.method} (no image pool)")
        teacher_metric = evaluator(teacher)[task.metric] if evaluator else None
        if teacher_metric is not None:
            ctx.log.info(f"teacher {cfg.teacher} test {task.metric} {teacher_metric:.4f}")
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            student = DDP(student)
            if cfg.method in GENERATIVE:
                synthesizer.generator = DDP(generator)
        if cfg.compile:
            student = torch.compile(student)
        method = DataFreeKD(teacher, student, synthesizer, batch_size=cfg.batch_size // world, kd_steps=cfg.kd_steps,
                            lr=cfg.lr, epochs=kd_epochs, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                            T=cfg.T, kd_loss=cfg.kd_loss, schedule=cfg.scheduler, lr_min=cfg.lr_min,
                            milestones=cfg.lr_decay_milestones, warmup_rounds=cfg.warmup * rounds,
                            student_terms=terms, device=ctx.device, amp=cfg.amp)
        method.name = cfg.method
        if cfg.evaluate_only:
            if cfg.resume:
                load_weights(method.eval_model(), ctx.run.last_ckpt if cfg.resume == "auto" else cfg.resume)
                result = evaluator(method.eval_model()) if evaluator else {}
                ctx.log.info(f"student test {task.metric} {result.get(task.metric, float('nan')):.4f}")
            return {"teacher_metric": teacher_metric}
        hooks = []
        if synthesizer.uses_pool and (cfg.save_dir or cfg.save_samples == "pool"):
            hooks.append(PoolPNGHook(cfg.save_dir or str(ctx.run.path / "pool")))
        cfg.iters_per_epoch = rounds * cfg.kd_steps
        # the trainer counts KD epochs; the warm-up rounds run inside the method before the first KD step
        return ctx.train(method, task=task.name, metric=task.metric, batch_size=cfg.batch_size,
                         evaluator=evaluator, teacher_metric=teacher_metric, extra_hooks=hooks,
                         render=(lambda m: m.sample_images()) if cfg.save_samples != "none" else None, nrow=16,
                         epochs=kd_epochs)
    finally:
        ctx.close()


class PoolPNGHook(Hook):
    """``--save_dir``: after every epoch, write the pool's new images as PNG files (rank 0)."""

    priority = 45

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.written = 0

    def before_train(self, trainer) -> None:
        if trainer.dist.is_main and self.folder.exists() and any(self.folder.iterdir()):
            _warn(f"{self.folder} is not empty; kdvision never reads it back (the pool is in memory), the PNG files "
                  f"of this run are written next to the old ones")

    def after_epoch(self, trainer) -> None:
        if trainer.dist.is_main:
            pool = trainer.method.synthesizer.pool
            self.written += pool.save_png(self.folder, start=self.written)
