"""KDEP pre-training and its SVD basis as recipes (``pretraining/kdep.py``, ``pretraining/gen_svd_weights.py``).

``reference/kdep.md``. The pre-training recipe builds the frozen teacher (any zoo classifier with a pre-ReLU tap;
torchvision ResNet-50 for the published runs), wraps it with the basis (:class:`~kdvision.core.methods.kdep.
KDEPTeacher`), builds the student (ResNet-18 / MobileNetV2, or any zoo model narrower than the teacher) and trains
it on an unlabelled image set with the engine's SGD, StepLR, checkpoints and logging. There is no classification
validation during pre-training (the student's head is never trained; the original's "best" checkpoint was chosen on
it, bug 13); the run exports the student's weights as a torchvision-format state_dict, ``<output>/student.pt``.

The basis recipe streams the teacher's features over the same images (one augmented view each, as the original),
sharded over ranks, into float64 moments, and writes one basis file recording the teacher checkpoint's SHA-256 and
the image list's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..checkpoint import save_atomic
from ..data.imagelist import UnlabelledImages, resolve_images, robustness_train_transform
from ..data.ood import file_sha256
from ..engine.config import RunConfig, param, to_dict
from ..engine.method import freeze_unreached, unwrap
from ..engine.optim import LRSchedule, OptimizerSpec
from ..engine.rundir import warn
from ..engine.runner import param_count
from ..errors import ConfigError
from ..methods.kdep import KDEP, KDEPTeacher, StreamingMoments, SVDBasis, feature_dim
from ..models import build_model, model_info
from ..taps import PreReLUTap, pre_relu_point
from .base import RECIPES, Recipe, register_method

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: the original's architecture names (``--arch``, ``--teacher_arch``) → zoo names; ``resnet50_feat_pca`` is the name
#: two of the original scripts pass although only ``resnet50_feat_svd`` existed (bug 2): both mean the SVD teacher
ARCH_ALIASES = {"resnet18_feat_pre_relu": "resnet18_imagenet", "resnet18": "resnet18_imagenet",
                "mobilenet_pre_relu": "mobilenetv2_imagenet", "mobilenet": "mobilenetv2_imagenet",
                "resnet50_feat_svd": "resnet50_imagenet", "resnet50_feat_pca": "resnet50_imagenet",
                "resnet50_feat_svd_pre_relu": "resnet50_imagenet", "resnet50": "resnet50_imagenet"}


def zoo_name(name: str) -> str:
    return ARCH_ALIASES.get(name, name)


@dataclass
class KDEPImagesConfig(RunConfig):
    """The image set and the teacher: shared by pre-training and the basis computation."""

    dataset: str = param("imgnet_128k", "pre-training images: a folder (searched recursively), a list file of "
                         "make_imagenet_subset.py, or imgnet_128k (<data_root>/imgnet_128k/train.txt) / imgnet_full "
                         "(<data_root>/train)")
    exp_name: str | None = param(None, "run name: the run directory is <out_dir>/<exp_name> unless --output is given",
                                 flags=("--exp-name",))
    out_dir: str = param("outdir", "parent of <exp_name> (the original's --out-dir)", flags=("--out-dir",))
    teacher: str = param("resnet50_imagenet", "teacher architecture (a zoo name; the original's resnet50_feat_svd "
                         "and resnet50_feat_pca mean resnet50_imagenet)", flags=("--teacher_arch", "--teacher-arch"))
    teacher_weights: str | None = param(None, "teacher checkpoint (torchvision, kdvision or robustness format)",
                                        flags=("--teacher_path", "--teacher-weights"))
    teacher_num_classes: int = param(1000, "the teacher checkpoint's class count", min=1)
    image_size: int = param(224, "training crop size", min=8)
    batch_size: int = param(512, "batch size (global)", flags=("--batch-size",), min=1)
    workers: int = param(8, "data-loading workers", flags=("--num_workers", "--workers"), min=0)
    cache_images: bool = param(False, "decode every image once into memory (small image sets: CPU runs, tests)")

    def resolved_output(self) -> None:
        if self.output is None and self.exp_name:
            self.output = str(Path(self.out_dir) / self.exp_name)


@dataclass
class KDEPConfig(KDEPImagesConfig):
    arch: str = param("resnet18_imagenet", "student architecture (zoo name; resnet18_feat_pre_relu and "
                      "mobilenet_pre_relu are accepted)", flags=("--student",))
    fc_classes: int = param(1000, "classes of the student's (untrained) head", flags=("--fc-classes",), min=1)
    basis: str | None = param(None, "SVD basis file of gen_svd_weights.py for this teacher checkpoint")
    legacy_ms_basis_for_sp: bool = param(False, "accept a basis computed for another teacher checkpoint (the "
                                         "original's SP-R50 scripts projected onto the MS-R50 basis, bug 3)")
    tau: float = param(0.1, "PTS temperature", min=0)
    power: float = param(3.0, "PTS power p: |target| = (|u| / tau)^(1/p)", min=0)
    loss_w: float = param(3.0, "MSE weight (3 for the MS-R50 teacher, 20 for SP-R50)", flags=("--loss-w",), min=0)
    lr: float = param(0.3, "SGD learning rate", min=0)
    momentum: float = param(0.9, "SGD momentum", min=0)
    weight_decay: float = param(5e-4, "weight decay", flags=("--weight-decay", "--wd"), min=0)
    step_lr: int = param(30, "StepLR period in epochs (x --step_lr_gamma)", flags=("--step-lr",), min=1)
    step_lr_gamma: float = param(0.1, "StepLR factor", flags=("--step-lr-gamma",), min=0)
    augment: bool = param(True, "robustness' training augmentation (else resize + centre crop)")

    def validate(self) -> None:
        super().validate()
        if self.power == 0 or self.tau == 0:
            raise ConfigError("--tau and --power must be > 0")


# ----------------------------------------------------------------------------------------------------- helpers
def image_set(cfg: KDEPImagesConfig, mean, std, *, augment: bool = True) -> tuple[UnlabelledImages, str]:
    root, files, sha = resolve_images(cfg.dataset, cfg.data_root)
    return UnlabelledImages(root, files, robustness_train_transform(cfg.image_size, mean, std, augment=augment),
                            cache=cfg.cache_images), sha


def input_normalization(teacher: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """KDEP feeds both networks the same normalised images: the teacher entry's statistics, else ImageNet's."""
    info = model_info(teacher)
    return tuple(info.get("mean", IMAGENET_MEAN)), tuple(info.get("std", IMAGENET_STD))


def load_teacher(cfg: KDEPImagesConfig, device: torch.device) -> nn.Module:
    """The teacher with its checkpoint, loaded strictly (torchvision, kdvision or robustness/KDEP format)."""
    from ..backbones import read_backbone
    from ..checkpoint import load_state_dict

    model = build_model(zoo_name(cfg.teacher), cfg.teacher_num_classes)
    if cfg.teacher_weights is None:
        raise ConfigError("KDEP needs a trained teacher: pass --teacher_weights PATH")
    load_state_dict(model, read_backbone(cfg.teacher_weights), source=f"teacher checkpoint {cfg.teacher_weights}")
    return model.to(device).eval().requires_grad_(False)


def freeze_unused(model: nn.Module, input_size: tuple[int, ...]) -> list[str]:
    """Freeze the student's parameters no gradient of its pre-ReLU pooled feature reaches (its head), by one backward
    of a zero batch of two (:func:`~kdvision.core.engine.method.freeze_unreached`); returns their names."""
    tap = PreReLUTap(model)
    p = next(model.parameters())

    def probe() -> torch.Tensor:
        with tap.active():
            model(torch.zeros(2, *input_size, device=p.device, dtype=p.dtype))
        return tap.pooled.sum()

    try:
        return freeze_unreached(model, probe)
    finally:
        tap.remove()


def _prefixes(names: list[str]) -> str:
    heads = sorted({n.rsplit(".", 1)[0] for n in names})
    return ", ".join(heads) if heads else "none"


# ----------------------------------------------------------------------------------------------- pre-training
@RECIPES.register("kdep")
class KDEPRecipe(Recipe):
    name = "kdep"
    config_class = KDEPConfig
    plan_title = "KDEP pre-training plan"

    def check(self) -> None:
        cfg = self.cfg
        cfg.teacher, cfg.arch = zoo_name(cfg.teacher), zoo_name(cfg.arch)
        for name in (cfg.teacher, cfg.arch):
            pre_relu_point(name)  # a model without a pre-ReLU tap: one line naming it
        if cfg.basis is None:
            raise ConfigError("KDEP needs the teacher's SVD basis: pass --basis FILE (pretraining/gen_svd_weights.py "
                              "writes it)")
        if not Path(cfg.basis).expanduser().is_file():
            raise ConfigError(f"basis file not found: {cfg.basis} (pretraining/gen_svd_weights.py writes it)")
        if cfg.teacher_weights is None or not Path(cfg.teacher_weights).expanduser().is_file():
            raise ConfigError(f"teacher checkpoint not found: {cfg.teacher_weights} (pass --teacher_weights PATH)")
        self.norm = input_normalization(cfg.teacher)

    def build_players(self) -> dict[str, nn.Module]:
        cfg, ctx = self.cfg, self.ctx
        self.train_set, self.images_sha = image_set(cfg, *self.norm, augment=cfg.augment)
        size = (3, cfg.image_size, cfg.image_size)
        student = ctx.prepare(build_model(cfg.arch, cfg.fc_classes))
        self.frozen = freeze_unused(student, size)
        teacher_model = ctx.prepare(load_teacher(cfg, ctx.device))
        t_dim, s_dim = feature_dim(teacher_model, size), feature_dim(student, size)
        basis, teacher_sha = SVDBasis.load(cfg.basis), file_sha256(cfg.teacher_weights)
        basis.check(teacher_dim=t_dim, student_dim=s_dim, teacher_sha256=teacher_sha,
                    allow_other_teacher=cfg.legacy_ms_basis_for_sp, where=f"basis {cfg.basis}")
        if basis.teacher_sha256 not in (None, teacher_sha):  # only reachable with the legacy flag
            warn("--legacy_ms_basis_for_sp: projecting onto a basis computed for another teacher checkpoint, as the "
                 "original SP-R50 scripts did")
        self.basis, self.dims = basis, (t_dim, s_dim)
        teacher = KDEPTeacher(teacher_model, basis, s_dim, tau=cfg.tau, power=cfg.power).to(ctx.device)
        return {"student": student, "teacher": teacher}

    def build_method(self) -> KDEP:
        cfg, ctx = self.cfg, self.ctx
        method = KDEP(self.players["student"], self.players["teacher"], self.train_set, loss_weight=cfg.loss_w,
                      batch_size=cfg.batch_size,
                      optimizer=OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
                      # robustness steps its StepLR after each epoch: epoch e (0-based) runs at gamma^(e // step_lr)
                      schedule=lambda n: LRSchedule("step", timing="end", step_size=cfg.step_lr,
                                                    gamma=cfg.step_lr_gamma),
                      clip_grad_norm=None, seed=cfg.seed, device=ctx.device, dist=ctx.dist, workers=cfg.workers,
                      amp=cfg.amp, channels_last=cfg.channels_last)
        if cfg.iters_per_epoch is None:
            cfg.iters_per_epoch = len(method.loader)
        return method

    def measure_teacher(self) -> None:
        return None

    def plan(self) -> dict[str, str]:
        cfg = self.cfg
        t_dim, s_dim = self.dims
        return {
            "images": f"{cfg.dataset}: {len(self.train_set)} images (list sha256 {self.images_sha[:12]}), "
                      f"{cfg.image_size} px crops",
            "teacher": f"{cfg.teacher} {param_count(unwrap(self.players['teacher']).model)} params, frozen; "
                       f"pre-ReLU pooled feature {t_dim}-d",
            "basis": f"{cfg.basis} ({self.basis.images} images) -> first {s_dim} of {self.basis.V.shape[1]} "
                     f"components; PTS tau {cfg.tau}, power 1/{cfg.power:g}",
            "student": f"{cfg.arch} {param_count(unwrap(self.players['student']))} params, feature {s_dim}-d; never "
                       f"trained: {_prefixes(self.frozen)}",
            "loss": f"{cfg.loss_w:g} x MSE(f_S, f_T)",
            "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, batch {cfg.batch_size}, SGD lr {cfg.lr} "
                        f"(x{cfg.step_lr_gamma:g} every {cfg.step_lr} epochs), momentum {cfg.momentum}, "
                        f"wd {cfg.weight_decay}",
            "export": f"{self.export_path} (torchvision format)",
        }

    @property
    def export_path(self) -> Path:
        return self.ctx.output / "student.pt"

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        if self.ctx.dist.is_main:
            save_atomic(unwrap(self.players["student"]).state_dict(), self.export_path)
        self.ctx.log.info(f"student weights: {self.export_path} (tools/convert_kdep.py exports them to Detectron2 "
                          "and semseg)")
        summary.update(export=str(self.export_path), images=len(self.train_set), images_sha256=self.images_sha,
                       basis=str(self.cfg.basis), feature_dims=list(self.dims))
        return summary


register_method("kdep", "kdep")


# ------------------------------------------------------------------------------------------------- SVD basis
@dataclass
class SVDConfig(KDEPImagesConfig):
    save: str | None = param(None, "basis file to write (default: <output>/basis.pt)")
    views: int = param(1, "augmented views of every image (the original: 1; more for small image sets)", min=1)


def compute_basis(teacher: nn.Module, dataset, *, batch_size: int, device: torch.device, rank: int = 0,
                  world_size: int = 1, workers: int = 0, progress: bool = False) -> tuple[StreamingMoments, int]:
    """Stream the teacher's pre-ReLU pooled features over ``dataset`` (this rank's contiguous shard, no padding:
    every image once over all ranks) into float64 moments, merged over ranks. Returns the moments and the feature
    width."""
    from torch.utils.data import Subset

    n = len(dataset)
    lo, hi = n * rank // world_size, n * (rank + 1) // world_size
    loader = DataLoader(Subset(dataset, range(lo, hi)), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    tap = PreReLUTap(teacher)
    moments: StreamingMoments | None = None
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="teacher features", unit="batch")
    with torch.inference_mode():
        for x, _ in batches:
            with tap.active():
                teacher(x.to(device, non_blocking=True))
            h = tap.pooled
            if moments is None:
                moments = StreamingMoments(h.shape[1], device)
            moments.update(h)
    if moments is None:  # an empty shard (more ranks than images): the width from one forward
        moments = StreamingMoments(feature_dim(teacher, tuple(dataset[0][0].shape)), device)
    tap.remove()
    moments.all_reduce()
    return moments, int(moments.sum.numel())


class SVDRecipe(Recipe):
    """Not a training recipe (so not in :data:`RECIPES`): ``run`` computes and writes the basis (one pass, no
    optimiser)."""

    name = "kdep_svd"
    config_class = SVDConfig
    plan_title = "KDEP SVD basis plan"

    def run(self) -> dict[str, Any]:
        import time

        from ..engine.runner import RunContext, describe_plan

        cfg = self.cfg
        cfg.teacher = zoo_name(cfg.teacher)
        cfg.validate()
        pre_relu_point(cfg.teacher)
        if cfg.teacher_weights is None or not Path(cfg.teacher_weights).expanduser().is_file():
            raise ConfigError(f"teacher checkpoint not found: {cfg.teacher_weights} (pass --teacher_weights PATH)")
        self.ctx = ctx = RunContext(cfg, script=self.script, dry_run=self.dry_run, overwrite=self.overwrite)
        try:
            norm = input_normalization(cfg.teacher)
            dataset, sha = image_set(cfg, *norm, augment=True)  # one augmented view per image, as the original
            if cfg.views > 1:
                from torch.utils.data import ConcatDataset

                dataset = ConcatDataset([dataset] * cfg.views)
            teacher = load_teacher(cfg, ctx.device)
            save = Path(cfg.save) if cfg.save else ctx.output / "basis.pt"
            if self.dry_run:
                print(describe_plan(self.plan_title, {
                    "images": f"{cfg.dataset}: {len(dataset) // cfg.views} images x {cfg.views} view(s) (list sha256 {sha[:12]}), {cfg.image_size} px",
                    "teacher": f"{cfg.teacher} {param_count(teacher)} params ({cfg.teacher_weights})",
                    "features": f"pre-ReLU pooled, {feature_dim(teacher, (3, cfg.image_size, cfg.image_size))}-d, "
                                f"float64 moments, batch {cfg.batch_size}, {ctx.dist.world_size} rank(s)",
                    "output": str(save)}))
                return {}
            run = ctx.open_run()
            run.write_config(ctx.resolved_config(to_dict(cfg)))
            t0 = time.perf_counter()
            moments, dim = compute_basis(teacher, dataset, batch_size=max(1, cfg.batch_size // ctx.dist.world_size),
                                         device=ctx.device, rank=ctx.dist.rank, world_size=ctx.dist.world_size,
                                         workers=cfg.workers, progress=bool(cfg.progress))
            mean, V, S = moments.basis()
            basis = SVDBasis(mean=mean, V=V, S=S, teacher=cfg.teacher, teacher_sha256=file_sha256(cfg.teacher_weights),
                             images=moments.n, subset_sha256=sha,
                             meta={"dataset": cfg.dataset, "image_size": cfg.image_size, "views": cfg.views,
                                   "seed": cfg.seed})
            wall = time.perf_counter() - t0
            summary = {"method": "kdep_svd", "task": "pretraining", "metric": None, "teacher_metric": None,
                       "student_best": None, "student_last": None, "iterations": 0, "batch_size": cfg.batch_size,
                       "train_iters_per_s": None, "images_per_s": moments.n / wall if wall > 0 else None,
                       "basis": str(save), "images": moments.n, "dim": dim,
                       "teacher_sha256": basis.teacher_sha256, "images_sha256": sha,
                       "top_singular_values": [round(float(s), 6) for s in S[:5]],
                       "wall_time_s": wall, "world_size": ctx.dist.world_size,
                       "device": str(ctx.device), "seed": cfg.seed}
            if ctx.dist.is_main:
                basis.save(save)
                run.write_summary(summary)
            ctx.log.info(f"basis of {cfg.teacher} over {moments.n} images ({dim}-d) written to {save}")
            return summary
        finally:
            ctx.close()
