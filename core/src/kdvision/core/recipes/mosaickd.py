"""MosaicKD as a runnable recipe (``classification/kd_mosaic.py``; ``reference/mosaickd.md``).

The in-domain dataset gives the classes, the normalisation and the test split; the student never sees an in-domain
training image. The OOD training set (``--unlabeled``) is read once into one uint8 tensor that feeds both the
discriminator's real batches and the OOD half of every student batch (:class:`~kdvision.core.methods.mosaickd.
MosaicKD`). An epoch is one pass of the discriminator stream: ⌈|OOD| / batch⌉ iterations, as in the original.

Fixes of the original, each documented in ``docs/mosaickd.md``: the KD stream is normalised with the in-domain
statistics (``--ood_kd_normalization legacy``: the OOD set's own, as the original); the teacher is frozen; S and D
get no weight gradients in the G step; ``--ood_subset`` is an error where it does not apply (the original ignored
it silently for CIFAR-10 and SVHN) and its cache is keyed by the teacher checkpoint's hash; resume restores every
player, optimiser and stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..data import dataset_spec
from ..data.ood import load_ood, ood_normalization, ood_subset, subset_applies
from ..engine.config import RunConfig, param
from ..engine.optim import LRSchedule, OptimizerSpec
from ..engine.rundir import note, warn
from ..engine.runner import param_count
from ..engine.trainer import denormalize
from ..errors import ConfigError
from ..generators import create_discriminator, create_generator
from ..methods.mosaickd import BlindKD, MosaicDFQ, MosaicKD
from ..models import build_model, check_model_fits
from ..synthesis.augment import Augment
from .base import RECIPES, Recipe, register_method
from .task import teacher_checkpoint, teacher_normalization

KD_NORMALIZATIONS = ("in_domain", "legacy")
OOD_METHODS = ("mosaickd", "blind_kd", "dfq")
#: Fields of the OOD methods that MosaicKD's DFQ baseline does not use (its README line passes some of them).
DFQ_UNUSED = ("unlabeled", "ood_subset", "ood_subset_size", "ood_kd_normalization", "local", "align", "balance",
              "discriminator", "ndf", "T")

#: kd_mosaic.py's spellings of MosaicKDConfig fields.
MOSAICKD_FLAGS = {"batch_size": ["--batch-size"], "weight_decay": ["--wd"], "nz": ["--z_dim"],
                  "log_interval": ["--print-freq", "--print_freq", "-p"], "workers": ["-j"],
                  "evaluate_only": ["--evaluate"], "epochs": ["--epoch"], "teacher_weights": ["--ckpt"]}


@dataclass
class MosaicKDConfig(RunConfig):
    method: str = param("mosaickd", "mosaickd (kd_mosaic.py), blind_kd (kd_vanilla.py: KD on the OOD images "
                        "only) or dfq (MosaicKD's data-free baseline, its kd_datafree.py)", choices=OOD_METHODS)
    dataset: str = param("cifar100", "in-domain dataset: classes, normalisation, test split (MosaicKD's README: "
                         "cifar100)")
    eval_dataset: str | None = param(None, "evaluate on this dataset's test split (e.g. cifar10_test_subset)",
                                     flags=("--eval-dataset",))
    unlabeled: str = param("cifar10", "OOD training data: cifar10, cifar100, svhn, imagenet_32x32, "
                           "places365_32x32, or an image folder path")
    epochs: int = param(200, "epochs (the original's default)", min=1)
    ood_subset: bool = param(False, "keep the --ood_subset_size highest teacher-entropy OOD images (ImageNet-32, "
                             "Places365-32)", flags=("--ood-subset",))
    ood_subset_size: int = param(50000, "OOD images kept by --ood_subset (the original: the in-domain training set "
                                 "size, 50,000)", min=1)
    ood_kd_normalization: str = param("in_domain", "normalisation of the OOD half of student batches: in_domain "
                                      "(what T and S expect) or legacy (the OOD set's own, as the original)",
                                      choices=KD_NORMALIZATIONS)
    teacher: str = param("wrn40_2", "teacher architecture")
    student: str = param("wrn16_1", "student architecture")
    teacher_weights: str | None = param(None, "teacher checkpoint (default: checkpoints/pretrained/"
                                        "{dataset}_{teacher}.pth)", flags=("--teacher-weights",))
    num_classes: int | None = param(None, "classes (default: the dataset's)", min=1)
    normalize: str | None = param(None, "normalisation the teacher expects (default: the teacher's, else the "
                                  "dataset's)")
    batch_size: int = param(256, "batch of the D stream, of the synthetic and of the OOD half of a student batch",
                            min=1)
    test_batch_size: int = param(256, "evaluation batch", min=1)
    lr: float = param(0.1, "student SGD learning rate (cosine per iteration)", min=0)
    momentum: float = param(0.9, "student SGD momentum (the original parsed --momentum and used 0.9)", min=0)
    weight_decay: float = param(1e-4, "student weight decay", min=0)
    lr_g: float = param(1e-3, "Adam learning rate of G and D, betas (0.5, 0.999)", min=0)
    T: float = param(1.0, "KD temperature", min=0)
    nz: int = param(100, "noise dimension", min=1)
    generator: str = param("mosaickd", "generator")
    ngf: int = param(64, "generator width", min=1)
    discriminator: str = param("patch", "discriminator")
    ndf: int = param(128, "discriminator width", min=1)
    adv: float = param(1.0, "weight of -KL(T||S) on the mosaics (fool the student)", min=0)
    align: float = param(0.1, "weight of the teacher's entropy on the mosaics (label-space alignment)", min=0)
    local: float = param(0.1, "weight of the patch-GAN terms (D's loss and G's local authenticity)", min=0)
    balance: float = param(0.0, "weight of the class-balance term (log2)", min=0)
    oh: float = param(0.5, "DFQ: weight of the teacher's one-hot CE on the synthetic images", min=0)
    ie: float = param(20.0, "DFQ: weight of the class-balance term (log10)", min=0)
    bn: float = param(1.0, "DFQ: weight of the BN-statistics loss (global-norm form)", min=0)
    kd_steps: int = param(5, "student steps per iteration", min=1)
    student_bn_update_in_g_step: bool = param(True, "S in train mode in the G step (its BN statistics absorb the "
                                              "mosaics), as the original")
    generator_train_mode_sampling: bool = param(True, "G in train mode when sampling student batches, as the "
                                                "original")
    workers: int = param(4, "loader workers of the evaluation", min=0)
    evaluate_only: bool = param(False, "evaluate the teacher (and with --resume the student), then exit")

    def validate(self) -> None:
        super().validate()
        if self.method == "dfq" and not (self.adv or self.oh or self.ie or self.bn):
            raise ConfigError("every generator loss weight (--adv --oh --ie --bn) is 0: nothing would shape the "
                              "synthetic images")
        if self.method == "mosaickd" and not (self.adv or self.align or self.local or self.balance):
            raise ConfigError("every generator loss weight (--adv --align --local --balance) is 0: nothing would "
                              "shape the mosaics")


@RECIPES.register("mosaickd")
class MosaicKDRecipe(Recipe):
    name = "mosaickd"
    config_class = MosaicKDConfig
    eval_only_field = "evaluate_only"

    @property
    def plan_title(self) -> str:
        return f"OOD distillation plan ({self.cfg.method})"

    @property
    def data_free(self) -> bool:
        return self.cfg.method == "dfq"

    def check(self) -> None:
        cfg = self.cfg
        for name in (cfg.teacher, cfg.student):
            check_model_fits(name, cfg.dataset)
        if self.data_free:
            unused = [f"--{k}" for k in DFQ_UNUSED if k in self.given]
            if unused:
                note(f"DFQ (MosaicKD's kd_datafree.py) does not use {' '.join(unused)}")
            if cfg.lr > 0.01:
                warn(f"--lr {cfg.lr:g} is the DFQ student's Adam learning rate; MosaicKD's kd_datafree.py default "
                     f"is 1e-3 (its README line passes 0.1, 100x that)")
        if cfg.ood_subset and not self.data_free and not subset_applies(cfg.unlabeled):
            raise ConfigError(f"--ood_subset applies to imagenet_32x32 and places365_32x32 only, not --unlabeled "
                              f"{cfg.unlabeled} (the original ignored it silently: its README's subset command "
                              f"ran the CIFAR-10 experiment)")
        self.ckpt = teacher_checkpoint(cfg.teacher_weights, cfg.dataset, cfg.teacher)
        spec = dataset_spec(cfg.dataset)
        self.num_classes = cfg.num_classes or spec.num_classes
        self.shape = (spec.in_channels, *spec.image_size)
        self.norm = teacher_normalization(cfg.dataset, cfg.teacher, cfg.normalize)
        if self.data_free:
            self.ood = None
            return
        # legacy: the OOD set's own statistics (an image folder has none: a one-line error here, before any work)
        self.kd_norm = ood_normalization(cfg.unlabeled) if cfg.ood_kd_normalization == "legacy" else self.norm
        self.ood = load_ood(cfg.unlabeled, cfg.data_root, size=self.shape[1:], channels=self.shape[0])

    def build_players(self):
        cfg, ctx = self.cfg, self.ctx
        if cfg.batch_size % ctx.dist.world_size:
            raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {ctx.dist.world_size} "
                              f"processes")
        c, h, w = self.shape
        players = {
            "teacher": ctx.prepare(build_model(cfg.teacher, self.num_classes, checkpoint=self.ckpt,
                                               dataset=cfg.dataset)),
            "student": ctx.prepare(build_model(cfg.student, self.num_classes, dataset=cfg.dataset)),
        }
        if cfg.method in ("mosaickd", "dfq"):
            players["generator"] = ctx.prepare(create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf,
                                                                img_size=(h, w), nc=c))
        if cfg.method == "mosaickd":
            players["discriminator"] = ctx.prepare(create_discriminator(cfg.discriminator, nc=c, ndf=cfg.ndf))
        if cfg.ood_subset and not self.data_free:
            index = ood_subset(self.ood, players["teacher"], n=cfg.ood_subset_size, mean=self.norm[0],
                               std=self.norm[1], batch_size=cfg.batch_size, device=ctx.device,
                               cache_dir="checkpoints/ood_index", dataset=f"{cfg.dataset}-{cfg.unlabeled}",
                               teacher_checkpoint=self.ckpt, progress=cfg.progress)
            self.ood = self.ood[index]
        return players

    def build_evaluator(self):
        return self.teacher_domain_evaluator("training anyway; no evaluation will happen")

    def parallel_players(self) -> tuple[str, ...]:
        return ("student", "generator", "discriminator")

    @property
    def iters_per_epoch(self) -> int:
        """One pass of the discriminator stream over the OOD set (the original's ``len(train_loader)``)."""
        if self.ood is None:
            return self.cfg.iters_per_epoch or 200  # DFQ: hard-coded in MosaicKD's kd_datafree.py
        return self.cfg.iters_per_epoch or math.ceil(len(self.ood) / self.cfg.batch_size)

    def build_method(self):
        cfg, ctx, p = self.cfg, self.ctx, self.players
        total = cfg.epochs * self.iters_per_epoch
        cosine = LRSchedule("cosine", unit="iter", total=total)
        sgd = OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if cfg.method == "dfq":  # Adam for S and G (default betas), cosine per epoch for both
            return MosaicDFQ(p["teacher"], p["student"], p["generator"], nz=cfg.nz,
                             batch_size=cfg.batch_size // ctx.dist.world_size, mean=self.norm[0], std=self.norm[1],
                             opt_S=OptimizerSpec("adam", lr=cfg.lr, weight_decay=cfg.weight_decay),
                             opt_G=OptimizerSpec("adam", lr=cfg.lr_g), schedule=LRSchedule("cosine", total=cfg.epochs),
                             adv=cfg.adv, oh=cfg.oh, ie=cfg.ie, bn=cfg.bn, kd_steps=cfg.kd_steps, device=ctx.device,
                             amp=cfg.amp, channels_last=cfg.channels_last, sample_seed=cfg.seed)
        if cfg.method == "blind_kd":
            return BlindKD(p["teacher"], p["student"], self.ood, batch_size=cfg.batch_size // ctx.dist.world_size,
                           mean=self.norm[0], std=self.norm[1], augment=self.blind_kd_augment(),
                           opt_S=sgd, schedule_S=cosine, T=cfg.T, seed=cfg.seed, dist=ctx.dist, device=ctx.device,
                           amp=cfg.amp, channels_last=cfg.channels_last)
        adam = OptimizerSpec("adam", lr=cfg.lr_g, betas=(0.5, 0.999))
        kd_norm = self.kd_norm
        return MosaicKD(p["teacher"], p["student"], p["generator"], p["discriminator"], self.ood, nz=cfg.nz,
                        batch_size=cfg.batch_size // ctx.dist.world_size, mean=self.norm[0], std=self.norm[1],
                        kd_mean=kd_norm[0], kd_std=kd_norm[1], kd_augment=self.kd_augment(),
                        opt_S=sgd, opt_G=adam, opt_D=adam, schedule_S=cosine, schedule_G=cosine, schedule_D=cosine, T=cfg.T,
                        adv=cfg.adv, align=cfg.align, local=cfg.local, balance=cfg.balance, kd_steps=cfg.kd_steps,
                        student_bn_update_in_g_step=cfg.student_bn_update_in_g_step,
                        generator_train_mode_sampling=cfg.generator_train_mode_sampling, seed=cfg.seed,
                        dist=ctx.dist, device=ctx.device, amp=cfg.amp, channels_last=cfg.channels_last)

    def blind_kd_augment(self) -> Augment:
        """Blind KD: the in-domain training augmentation (kd_vanilla.py's transform)."""
        return Augment.from_spec(dataset_spec(self.cfg.dataset))

    def kd_augment(self) -> Augment:
        """The OOD set's own training augmentation (crop + flip; none for SVHN), as the original's KD stream."""
        name = self.cfg.unlabeled
        try:
            return Augment.from_spec(dataset_spec(name))
        except ConfigError:  # an image folder or a 32x32 release: CIFAR-style crop + flip, as the original
            return Augment(crop_padding=4, hflip=True)

    def plan(self) -> dict[str, str]:
        cfg, p = self.cfg, self.players
        dataset = f"{cfg.dataset} ({self.num_classes} classes, normalisation mean={self.norm[0]} std={self.norm[1]})"
        players = {"teacher": f"{cfg.teacher} {param_count(p['teacher'])} params, weights {self.ckpt}",
                   "student": f"{cfg.student} {param_count(p['student'])} params"}
        if "generator" in p:
            players["generator"] = f"{cfg.generator} nz={cfg.nz} {param_count(p['generator'])} params"
        if "discriminator" in p:
            players["discriminator"] = f"{cfg.discriminator} {param_count(p['discriminator'])} params"
        evaluation = {"evaluation": f"{self.eval_name} test split ({self.task.metric})" if self.evaluator
                      else "none (data not found)"}
        if cfg.method == "dfq":
            return {"dataset": f"{dataset}; no training image", **players,
                    "losses": f"G: adv {cfg.adv} oh {cfg.oh} ie {cfg.ie} (log10) bn {cfg.bn} (global norm); S: KL "
                              f"at T=1",
                    "schedule": f"{cfg.epochs} epochs x {self.iters_per_epoch} it (1 G, {cfg.kd_steps} S steps "
                                f"each), batch {cfg.batch_size}, S Adam lr {cfg.lr} wd {cfg.weight_decay}, G Adam lr "
                                f"{cfg.lr_g}, cosine per epoch", **evaluation}
        if cfg.method == "blind_kd":
            return {"dataset": dataset,
                    "OOD data": f"{cfg.unlabeled}: {len(self.ood)} images, augmented "
                                f"{self.blind_kd_augment().describe()}, normalised in-domain", **players,
                    "schedule": f"{cfg.epochs} epochs x {self.iters_per_epoch} it, batch {cfg.batch_size}, KL at "
                                f"T={cfg.T:g}, SGD lr {cfg.lr} m={cfg.momentum} wd={cfg.weight_decay}, cosine per "
                                f"iteration", **evaluation}
        kd_norm = "in-domain" if cfg.ood_kd_normalization == "in_domain" else \
            f"legacy: the OOD set's own mean={self.kd_norm[0]} std={self.kd_norm[1]}"
        return {"dataset": dataset,
                "OOD data": f"{cfg.unlabeled}: {len(self.ood)} images {tuple(self.ood.shape[1:])}"
                            + (f" (top-{cfg.ood_subset_size} teacher entropy)" if cfg.ood_subset else "")
                            + f"; KD half augmented {self.kd_augment().describe()}, normalised {kd_norm}", **players,
                "losses": f"G: adv {cfg.adv} align {cfg.align} local {cfg.local} balance {cfg.balance}; D: local x "
                          f"patch BCE; S: KL at T={cfg.T:g} on [{cfg.batch_size} mosaics; {cfg.batch_size} OOD]",
                "schedule": f"{cfg.epochs} epochs x {self.iters_per_epoch} it (1 D, 1 G, {cfg.kd_steps} S steps "
                            f"each), cosine per iteration: S SGD lr {cfg.lr} m={cfg.momentum} wd={cfg.weight_decay}, "
                            f"G and D Adam lr {cfg.lr_g} (0.5, 0.999)", **evaluation}

    def render(self):
        mean, std = self.norm
        if self.cfg.method in ("blind_kd", "dfq"):
            return lambda method: denormalize(method.sample_images().float().cpu(), mean, std)

        def show(method: MosaicKD) -> torch.Tensor:
            mosaics = denormalize(method.sample_images().float().cpu(), mean, std)
            real = method.ood_samples().cpu()
            return torch.cat([mosaics, real])  # top rows: mosaics; bottom rows: the real OOD images

        return show

    def train_settings(self) -> dict[str, Any]:
        return {"iters_per_epoch": self.iters_per_epoch, "nrow": 8}


for _name in OOD_METHODS:
    register_method(_name, "mosaickd", method=_name)


def run_mosaickd(cfg: MosaicKDConfig, task, *, script: str = "kd_mosaic", explicit_root: bool = True,
                 dry_run: bool = False, given: set[str] = frozenset(), overwrite: bool = False) -> dict[str, Any]:
    return MosaicKDRecipe(cfg, task, script=script, given=given, explicit_root=explicit_root, dry_run=dry_run,
                          overwrite=overwrite).run()
