"""KD / DKD / NKD and SDD's scale-decoupled versions on labelled data, as a recipe (``classification/sdd.py``;
``reference/sdd.md``).

Configs are mdistiller / SDD yacs files (``DISTILLER.TYPE``, ``SOLVER.*``, ``KD.*``, ``DKD.*``, ...) read as they
are: :func:`yacs_values` maps every known key to a field of :class:`SDDConfig` (unknown keys are a one-line error,
as in yacs). The fields' defaults are mdistiller's ``CFG`` defaults, so an original file means what it meant there;
the toolkit's own configs state every value. Differences from the originals, each a field:

- NKD has its own node (``NKD.T``, ``NKD.GAMMA``, ``NKD.CE_WEIGHT``, ``NKD.WARMUP``, ``NKD.LEGACY_MASK``). A file
  without it gets what SDD's code used: the NKD baseline τ = 1, γ = 1.5; SD-NKD τ = ``DKD.T``, γ = ``DKD.BETA``;
  both ``DKD.CE_WEIGHT``, ``DKD.WARMUP`` and the all-class mask (bugs #1, #2).
- ``SDD.SCALES`` (the original's ``--M``, which no file recorded), ``SDD.WARMUP`` (its ``--warmup``: SD-DKD's
  warm-up only, bug #12), ``SDD.WEIGHT_RULE``, ``SDD.LEGACY_POOLING`` (bug #4).
- ``SOLVER.CLIP_GRAD_NORM``: SDD's trainer clips at 40 (the default), mdistiller's does not (``null``; bug #13).
- ``SOLVER.BATCH_SIZE`` is the global batch; under torchrun each process takes its share (the original's ImageNet
  files gave a per-process batch, so its effective batch changed with the GPU count).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import dataset_spec
from ..engine.config import RunConfig, key_value_pairs, param
from ..engine.method import unwrap
from ..engine.optim import LRSchedule, OptimizerSpec
from ..engine.runner import param_count
from ..engine.rundir import warn
from ..errors import ConfigError, DataError
from ..losses.logit import WEIGHT_RULES, parse_scales
from ..methods.logit_kd import LabelledKD, LogitDistiller
from ..models import MODELS, build_model
from .base import RECIPES, register_method
from .supervised import SupervisedRecipe, subset_note

#: DISTILLER.TYPE -> the distillation term (mdistiller "NONE" = Vanilla: CE only)
DISTILLERS = {"NONE": "none", "KD": "kd", "DKD": "dkd", "NKD": "nkd", "SDD_KD": "sd_kd", "SDD_DKD": "sd_dkd",
              "SDD_NKD": "sd_nkd"}

#: yacs key -> SDDConfig field
YACS_KEYS = {
    "DISTILLER.TYPE": "distiller", "DISTILLER.TEACHER": "teacher", "DISTILLER.STUDENT": "student",
    "DATASET.TYPE": "dataset", "DATASET.NUM_WORKERS": "workers", "DATASET.TEST.BATCH_SIZE": "test_batch_size",
    "DATASET.TRAIN_SUBSET": "train_subset", "DATASET.SUBSET_SEED": "subset_seed",
    "SOLVER.BATCH_SIZE": "batch_size", "SOLVER.EPOCHS": "epochs", "SOLVER.LR": "lr",
    "SOLVER.LR_DECAY_STAGES": "lr_decay_stages", "SOLVER.LR_DECAY_RATE": "lr_decay_rate",
    "SOLVER.WEIGHT_DECAY": "weight_decay", "SOLVER.MOMENTUM": "momentum", "SOLVER.TYPE": "optimizer",
    "SOLVER.TRAINER": "trainer", "SOLVER.CLIP_GRAD_NORM": "clip_grad_norm",
    "KD.TEMPERATURE": "kd_t", "KD.LOSS.CE_WEIGHT": "kd_ce_weight", "KD.LOSS.KD_WEIGHT": "kd_weight",
    "DKD.CE_WEIGHT": "dkd_ce_weight", "DKD.ALPHA": "dkd_alpha", "DKD.BETA": "dkd_beta", "DKD.T": "dkd_t",
    "DKD.WARMUP": "dkd_warmup",
    "NKD.CE_WEIGHT": "nkd_ce_weight", "NKD.T": "nkd_t", "NKD.GAMMA": "nkd_gamma", "NKD.WARMUP": "nkd_warmup",
    "NKD.LEGACY_MASK": "nkd_legacy_mask",
    "SDD.SCALES": "scales", "SDD.WARMUP": "warmup", "SDD.WEIGHT_RULE": "sdd_weight_rule",
    "SDD.LEGACY_POOLING": "sdd_legacy_pooling",
    "TEACHER.WEIGHTS": "teacher_weights",
}
#: yacs nodes recorded but without effect here (logging of the originals: the run directory replaces them)
YACS_IGNORED = ("EXPERIMENT.", "LOG.")


def flatten_yacs(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_yacs(value, f"{name}."))
        else:
            out[name] = value
    return out


def yacs_values(flat: dict[str, Any], source: str) -> dict[str, Any]:
    """SDDConfig values for flat yacs keys (``{"SOLVER.LR": 0.05, ...}``); an unknown key is a one-line error."""
    values = {}
    for key, value in flat.items():
        if key.startswith(YACS_IGNORED):
            continue
        if key not in YACS_KEYS:
            nodes = sorted({k.rsplit(".", 1)[0] for k in YACS_KEYS})
            raise ConfigError(f"{source}: unknown config key {key} (known nodes: {', '.join(nodes)}, plus "
                              f"EXPERIMENT.* and LOG.*)")
        values[YACS_KEYS[key]] = value
    return values


def read_yacs(path: str | Path) -> dict[str, Any]:
    """The SDDConfig values of one yacs file (``_BASE_``-free, as SDD's and mdistiller's files are)."""
    import yaml

    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a yacs config is a mapping of nodes (DISTILLER, SOLVER, ...)")
    return yacs_values(flatten_yacs(tree), str(path))


def yacs_overrides(opts: list[str]) -> dict[str, Any]:
    """Trailing ``KEY VALUE`` pairs (yacs ``merge_from_list``): values parsed as Python literals where they are."""
    return yacs_values(key_value_pairs(opts), "the command-line overrides")


@dataclass
class SDDConfig(RunConfig):
    distiller: str = param("NONE", "DISTILLER.TYPE", choices=tuple(DISTILLERS))
    teacher: str = param("ResNet50", "DISTILLER.TEACHER (registry name; SDD's *_sdd suffix accepted)")
    student: str = param("resnet32", "DISTILLER.STUDENT")
    teacher_weights: str | None = param(None, "teacher checkpoint (default: checkpoints/teachers/<dataset>/"
                                        "<arch>_vanilla/ckpt_epoch_240.pth, SDD's save/models/..., mdistiller's "
                                        "download_ckpts/cifar_teachers/...)")
    dataset: str = param("cifar100", "DATASET.TYPE")
    num_classes: int | None = param(None, "classes (default: the dataset's)", min=1)
    eval_dataset: str | None = param(None, "evaluate on this dataset's test split (default: DATASET.TYPE)",
                                     flags=("--eval-dataset",))
    normalize: str | None = param(None, "normalisation constants key (default: the dataset's)")
    augment: bool = param(True, "training augmentation")
    train_subset: int | None = param(None, "DATASET.TRAIN_SUBSET: train on this many images of the training split "
                                     "(a fixed subset, chosen by --subset_seed)", min=1)
    subset_seed: int = param(0, "DATASET.SUBSET_SEED: seed of the --train_subset choice (independent of --seed)",
                             min=0)
    download: bool = param(False, "download the dataset when missing (CIFAR)")
    workers: int = param(2, "DATASET.NUM_WORKERS", min=0)
    test_batch_size: int = param(64, "DATASET.TEST.BATCH_SIZE", min=1)
    batch_size: int = param(64, "SOLVER.BATCH_SIZE (global: split between torchrun processes)", min=1)
    epochs: int = param(240, "SOLVER.EPOCHS", min=1)
    lr: float = param(0.05, "SOLVER.LR", min=0)
    lr_decay_stages: list[int] = param(factory=lambda: [150, 180, 210],
                                       help="SOLVER.LR_DECAY_STAGES: x LR_DECAY_RATE after these epochs")
    lr_decay_rate: float = param(0.1, "SOLVER.LR_DECAY_RATE", min=0)
    weight_decay: float = param(1e-4, "SOLVER.WEIGHT_DECAY (mdistiller's default; its CIFAR files set 5e-4)", min=0)
    momentum: float = param(0.9, "SOLVER.MOMENTUM", min=0)
    optimizer: str = param("SGD", "SOLVER.TYPE", choices=("SGD",), cli=False)
    trainer: str = param("base", "SOLVER.TRAINER", choices=("base",), cli=False)
    clip_grad_norm: float | None = param(40.0, "SOLVER.CLIP_GRAD_NORM: global gradient norm clip (SDD's trainer: "
                                         "40; mdistiller: none)", min=0)
    kd_t: float = param(4.0, "KD.TEMPERATURE", min=0)
    kd_ce_weight: float = param(0.1, "KD.LOSS.CE_WEIGHT", min=0)
    kd_weight: float = param(0.9, "KD.LOSS.KD_WEIGHT", min=0)
    dkd_ce_weight: float = param(1.0, "DKD.CE_WEIGHT", min=0)
    dkd_alpha: float = param(1.0, "DKD.ALPHA", min=0)
    dkd_beta: float = param(8.0, "DKD.BETA", min=0)
    dkd_t: float = param(4.0, "DKD.T", min=0)
    dkd_warmup: float = param(20.0, "DKD.WARMUP (epochs)", min=0)
    nkd_ce_weight: float | None = param(None, "NKD.CE_WEIGHT (default: DKD.CE_WEIGHT, as SDD)", min=0)
    nkd_t: float | None = param(None, "NKD.T (default: SDD's: 1 for NKD, DKD.T for SD-NKD)", min=0)
    nkd_gamma: float | None = param(None, "NKD.GAMMA (default: SDD's: 1.5 for NKD, DKD.BETA for SD-NKD)", min=0)
    nkd_warmup: float | None = param(None, "NKD.WARMUP (default: DKD.WARMUP, as SDD)", min=0)
    nkd_legacy_mask: bool | None = param(None, "NKD.LEGACY_MASK: SDD's all-class non-target mask (default: on for "
                                         "a file without an NKD node, i.e. SDD's own files)")
    scales: list[int] = param(factory=lambda: [1, 2, 4], help="SDD.SCALES: the scale set M", flags=("--M",))
    warmup: float = param(20.0, "SDD.WARMUP: SD-DKD's warm-up in epochs (the original --warmup)", min=0)
    sdd_weight_rule: str = param("correctness_xor", "SDD.WEIGHT_RULE: complementary regions by the teacher's "
                                 "correctness XOR (the code) or class agreement", choices=WEIGHT_RULES)
    sdd_legacy_pooling: bool = param(False, "SDD.LEGACY_POOLING: pool every scale from the 4x4 grid (the original)")

    def validate(self) -> None:
        super().validate()
        self.scales = list(parse_scales(self.scales))
        if sorted(self.lr_decay_stages) != list(self.lr_decay_stages):
            raise ConfigError(f"SOLVER.LR_DECAY_STAGES must be increasing, got {self.lr_decay_stages}")

    @property
    def kind(self) -> str:
        return DISTILLERS[self.distiller]

    def logit_distiller(self) -> LogitDistiller:
        """The loss of this config, each hyper-parameter from its own node (NKD's from SDD's borrowing when unset)."""
        kind = self.kind
        if kind in ("kd", "sd_kd"):
            return LogitDistiller(kind, ce_weight=self.kd_ce_weight, T=self.kd_t, kd_weight=self.kd_weight)
        if kind == "dkd":
            return LogitDistiller(kind, ce_weight=self.dkd_ce_weight, T=self.dkd_t, alpha=self.dkd_alpha,
                                  beta=self.dkd_beta, warmup=self.dkd_warmup)
        if kind == "sd_dkd":
            return LogitDistiller(kind, ce_weight=self.dkd_ce_weight, T=self.dkd_t, alpha=self.dkd_alpha,
                                  beta=self.dkd_beta, warmup=self.warmup, weight_rule=self.sdd_weight_rule)
        if kind in ("nkd", "sd_nkd"):
            sd = kind == "sd_nkd"
            pick = lambda v, default: default if v is None else v  # noqa: E731
            return LogitDistiller(kind, ce_weight=pick(self.nkd_ce_weight, self.dkd_ce_weight),
                                  T=pick(self.nkd_t, self.dkd_t if sd else 1.0),
                                  gamma=pick(self.nkd_gamma, self.dkd_beta if sd else 1.5),
                                  warmup=pick(self.nkd_warmup, self.dkd_warmup),
                                  legacy_mask=pick(self.nkd_legacy_mask, True), weight_rule=self.sdd_weight_rule)
        return LogitDistiller("none", ce_weight=1.0)


def model_name(name: str, dataset: str) -> str:
    """A registry name for a config's model name: SDD's ``*_sdd`` suffix dropped (the SPP is a wrapper here),
    ImageNet names through SDD's table (its ImageNet "MobileNetV2" is MobileNet-V1)."""
    base = name[:-4] if name.lower().endswith("_sdd") else name
    if dataset == "imagenet":
        from ..models.mobilenetv1 import SDD_IMAGENET_MODELS

        base = SDD_IMAGENET_MODELS.get(base, base)
    if base not in MODELS:
        from ..models import list_models

        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(list_models(include_aliases=True))}")
    return base


def find_teacher(path: str | None, dataset: str, arch: str) -> str:
    """The teacher checkpoint: ``path``, else the first existing of the toolkit's, SDD's and mdistiller's layouts
    (``tools/download_teachers.py`` writes the first)."""
    if path:
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"teacher checkpoint not found: {path}")
        return str(Path(path).expanduser())
    candidates = [f"checkpoints/teachers/{dataset}/{arch}_vanilla/ckpt_epoch_240.pth",
                  f"save/models/{arch}_vanilla/ckpt_epoch_240.pth",
                  f"download_ckpts/cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth",
                  f"save/{dataset}/{arch}_vanilla/{arch}_best.pth"]
    for c in candidates:
        if Path(c).is_file():
            return c
    hint = " (python tools/download_teachers.py --set repdistiller-cifar100)" if dataset == "cifar100" else ""
    raise ConfigError(f"teacher checkpoint for {arch} not found: looked for {candidates[0]}, {candidates[1]}, "
                      f"{candidates[2]}; pass --teacher_weights PATH{hint}")


@RECIPES.register("sdd")
class SDDRecipe(SupervisedRecipe):
    """Distil ``teacher`` into ``student`` on the labelled training split (KD, DKD, NKD, SD-*), evaluate each
    epoch, export the best student."""

    name = "sdd"
    config_class = SDDConfig
    plan_title = "logit distillation plan"
    eval_only_field = None

    def __init__(self, cfg, task, **kwargs: Any) -> None:
        super().__init__(cfg, task, model_name=cfg.student, **kwargs)

    def check(self) -> None:
        """Names, losses and files. A dry run validates the config without data or teacher weights (each missing
        one is a warning there): ``sdd.py --cfg X --dry-run`` checks a config before anything is downloaded."""
        cfg = self.cfg
        self.teacher_name = model_name(cfg.teacher, cfg.dataset)
        self.model_name = model_name(cfg.student, cfg.dataset)
        self.distill = cfg.logit_distiller()
        self.missing_data = None
        try:
            super().check()
        except DataError as exc:
            if not self.dry_run:
                raise
            self.missing_data = str(exc)
            warn(f"{exc} (dry run: the config is validated without data)")
        self.ckpt = None
        if self.distill.kind != "none":
            try:
                self.ckpt = find_teacher(cfg.teacher_weights, cfg.dataset, cfg.teacher.removesuffix("_sdd"))
            except ConfigError as exc:
                if not self.dry_run:
                    raise
                warn(f"{exc} (dry run: a randomly initialised teacher stands in)")

    def evaluated(self, player):
        inner = unwrap(player)
        return getattr(inner, "model", inner) if self.distill.scale_decoupled else player

    def load_train_set(self):
        if self.missing_data:
            return torch.utils.data.TensorDataset(torch.empty(0), torch.empty(0, dtype=torch.long))
        return super().load_train_set()

    def build_evaluator(self):
        return None if self.missing_data else super().build_evaluator()

    def _model(self, name: str, checkpoint: str | None = None):
        options = {"cub": True} if self.cfg.dataset == "cub200" else {}
        model = build_model(name, self.num_classes, checkpoint=checkpoint, dataset=self.cfg.dataset, **options)
        if self.distill.scale_decoupled:
            from ..models.spp import ScaleDecoupled

            model = ScaleDecoupled(model, self.cfg.scales, legacy_pooling=self.cfg.sdd_legacy_pooling)
        return model

    def build_players(self):
        self.train_set = self.load_train_set()
        players = {"student": self.ctx.prepare(self._model(self.model_name))}
        if self.distill.kind != "none":
            players["teacher"] = self._model(self.teacher_name, self.ckpt).to(self.ctx.device)
        return players

    def build_method(self):
        cfg, ctx, task = self.cfg, self.ctx, self.task
        p = self.players
        if cfg.batch_size % ctx.dist.world_size:
            raise ConfigError(f"SOLVER.BATCH_SIZE {cfg.batch_size} is not divisible by the {ctx.dist.world_size} "
                              f"processes")
        common = dict(train_metrics=task.train_metrics, batch_size=cfg.batch_size,
                      optimizer=OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
                      # mdistiller: epoch e (1-based) trains at LR x rate^#{stage < e}, i.e. t = the 0-based epoch
                      schedule=lambda n: LRSchedule("multistep", milestones=tuple(cfg.lr_decay_stages),
                                                    gamma=cfg.lr_decay_rate),
                      clip_grad_norm=cfg.clip_grad_norm, seed=cfg.seed, device=ctx.device, dist=ctx.dist,
                      workers=cfg.workers, amp=cfg.amp, channels_last=cfg.channels_last, task=task.name)
        if self.distill.kind == "none":
            from .supervised import Supervised

            method = Supervised(p["student"], self.train_set, loss=task.loss, **common)
        else:
            method = LabelledKD(p["teacher"], p["student"], self.train_set, distiller=self.distill, **common)
        if cfg.iters_per_epoch is None:
            cfg.iters_per_epoch = len(method.loader)
        return method

    def plan(self) -> dict[str, str]:
        cfg, d = self.cfg, self.distill
        student = unwrap(self.players["student"])
        players = {"student": f"{self.model_name} {param_count(getattr(student, 'model', student))} params"}
        if "teacher" in self.players:
            teacher = self.players["teacher"]
            players["teacher"] = (f"{self.teacher_name} {param_count(getattr(teacher, 'model', teacher))} params, "
                                  f"weights {self.ckpt}")
        terms = {"none": "CE only", "kd": f"{d.ce_weight:g} CE + {d.kd_weight:g} KD (T={d.T:g})",
                 "dkd": f"{d.ce_weight:g} CE + ramp x DKD (alpha={d.alpha:g} beta={d.beta:g} T={d.T:g})",
                 "nkd": f"{d.ce_weight:g} CE + ramp x NKD (T={d.T:g} gamma={d.gamma:g}"
                        f"{', legacy all-class mask' if d.legacy_mask else ''})"}
        loss = terms.get(d.kind.removeprefix("sd_"))
        if d.scale_decoupled:
            n = sum(s * s for s in cfg.scales)
            loss = (f"{loss.replace('KD', 'SD-KD', 1) if d.kind == 'sd_kd' else loss} on {n} regions "
                    f"(M={cfg.scales}, {d.weight_rule}: complementary x2"
                    f"{', legacy pooling' if cfg.sdd_legacy_pooling else ''})")
        if d.ramp(1) < 1:
            loss += f", warm-up {d.warmup:g} epochs"
        world = self.ctx.dist.world_size
        per = f" ({cfg.batch_size // world} per process x {world})" if world > 1 else ""
        return {
            "dataset": f"{cfg.dataset} ({self.num_classes} classes, " + (f"{len(self.train_set)} training images"
                                                                        f"{subset_note(cfg)})"
                                                                        if not self.missing_data else "data not found)"),
            **players, "loss": loss,
            "schedule": f"{cfg.epochs} epochs x {cfg.iters_per_epoch} it, global batch {cfg.batch_size}{per}, SGD lr "
                        f"{cfg.lr:g} m={cfg.momentum:g} wd={cfg.weight_decay:g}, x{cfg.lr_decay_rate:g} after epochs "
                        f"{cfg.lr_decay_stages}, clip "
                        + (f"{cfg.clip_grad_norm:g}" if cfg.clip_grad_norm else "none"),
            "evaluation": f"test split ({self.task.metric}), best and last epoch" if self.evaluator else "none",
        }

    @property
    def export_path(self) -> Path:
        return self.ctx.output / f"{self.cfg.dataset}-{self.model_name}.pt"


for _name, _kind in DISTILLERS.items():
    register_method(_kind if _kind != "none" else "ce", "sdd", distiller=_name)

