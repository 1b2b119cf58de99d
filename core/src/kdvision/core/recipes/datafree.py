"""The data-free engine as a recipe: DAFL, ZSKT, DFQ, DFAD, DeepInversion, CMI, Fast, Fast-Meta and RGAL.

One config (:class:`~.datafree_config.DataFreeConfig`), one method (:class:`~kdvision.core.methods.datafree.
DataFreeKD`), one synthesizer per ``--method`` (:mod:`kdvision.core.synthesis.registry`). Method presets (the
published scripts' hyper-parameters) live in the task's config files; ``--T`` is honoured by every method: the
generative baselines' presets distil at τ = 1 because the originals silently did so whatever ``--T`` said, and
``legacy_generative_kd_T1`` restores that behaviour for a given ``--T``.
"""
from __future__ import annotations

from typing import Any

from ..data import dataset_spec
from ..engine.optim import OptimizerSpec
from ..engine.rundir import warn
from ..engine.runner import param_count
from ..engine.trainer import Hook
from ..errors import ConfigError
from ..generators import create_generator
from ..methods.datafree import DataFreeKD, SynthesisWarmupHook
from ..methods.rgal import RGALStudentTerms
from ..models import build_model, check_model_fits
from ..synthesis.augment import Augment
from ..synthesis.hooks import PoolPNGHook, load_image_folder
from ..synthesis.registry import build_synthesizer, synthesizer_uses_generator
from .base import RECIPES, Recipe, register_method
from .datafree_config import GENERATIVE, METHODS, SAVE_SAMPLES, DataFreeConfig  # noqa: F401  (re-exported)


def build_student_terms(cfg: DataFreeConfig, teacher, student, shape: tuple[int, int, int]
                        ) -> RGALStudentTerms | None:
    """RGAL's student-phase terms with the config's weights; None when the method adds none."""
    if cfg.method != "rgal" or not (cfg.cd_loss > 0 or cfg.gram_loss > 0 or cfg.striplet > 0):
        return None
    return RGALStudentTerms(teacher, student, shape, epochs=cfg.epochs, cd=cfg.cd_loss, gram=cfg.gram_loss,
                            striplet=cfg.striplet, striplet_feature=cfg.striplet_feature,
                            start_layer=cfg.start_layer, end_layer=cfg.end_layer, custom_steps=cfg.custom_steps,
                            balanced_sampling_student=cfg.balanced_sampling_student)


def build_datafree_kd(cfg: DataFreeConfig, teacher, student, synthesizer, *, world: int,
                      student_terms: RGALStudentTerms | None, device) -> DataFreeKD:
    """The KD method with the config's student optimiser, schedule, temperature and warm-up (per-rank batch)."""
    return DataFreeKD(teacher, student, synthesizer, batch_size=cfg.batch_size // world, kd_steps=cfg.kd_steps,
                      opt_S=OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
                      schedule=cfg.student_schedule(), T=cfg.T, kd_loss=cfg.kd_loss,
                      warmup_rounds=cfg.warmup * cfg.rounds_per_epoch, student_terms=student_terms,
                      device=device, amp=cfg.amp)


@RECIPES.register("datafree")
class DataFreeRecipe(Recipe):
    name = "datafree"
    config_class = DataFreeConfig
    eval_only_field = "evaluate_only"

    @property
    def plan_title(self) -> str:
        return f"data-free KD plan ({self.cfg.method})"

    def check(self) -> None:
        cfg = self.cfg
        cfg.resolve(self.given)
        for name in (cfg.teacher, cfg.student):
            check_model_fits(name, cfg.dataset)
        self.ckpt = cfg.teacher_checkpoint()
        spec = dataset_spec(cfg.dataset)
        self.num_classes = cfg.num_classes or spec.num_classes
        self.shape = (spec.in_channels, *spec.image_size)
        self.norm = cfg.expected_normalization()

    def build_players(self):
        cfg, ctx = self.cfg, self.ctx
        world = ctx.dist.world_size
        for key in ("batch_size", "synthesis_batch_size"):
            if (getattr(cfg, key) or cfg.batch_size) % world:
                raise ConfigError(f"--{key} {getattr(cfg, key)} is not divisible by the {world} processes")
        players = {"teacher": ctx.prepare(build_model(cfg.teacher, self.num_classes, checkpoint=self.ckpt,
                                                      dataset=cfg.dataset)),
                   "student": ctx.prepare(build_model(cfg.student, self.num_classes, dataset=cfg.dataset))}
        if synthesizer_uses_generator(cfg.method):
            players["generator"] = ctx.prepare(create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf,
                                                                img_size=self.shape[1:], nc=self.shape[0]))
        return players

    def build_evaluator(self):
        return self.teacher_domain_evaluator("training anyway (data-free); no evaluation will happen")

    def parallel_players(self) -> tuple[str, ...]:
        # the generative baselines train one persistent generator; the inversion methods re-create theirs per round
        return ("student", "generator") if self.cfg.method in GENERATIVE else ("student",)

    def build_method(self):
        cfg, ctx, p = self.cfg, self.ctx, self.players
        world = ctx.dist.world_size
        self.synthesizer = build_synthesizer(cfg, p["teacher"], p["student"], num_classes=self.num_classes,
                                             shape=self.shape, norm=self.norm, device=ctx.device, world=world,
                                             generator=p.get("generator"),
                                             augment=Augment.from_spec(dataset_spec(cfg.dataset)))
        self.terms = build_student_terms(cfg, p["teacher"], p["student"], self.shape)
        method = build_datafree_kd(cfg, p["teacher"], p["student"], self.synthesizer, world=world,
                                   student_terms=self.terms, device=ctx.device)
        method.name = cfg.method
        if cfg.cmi_init and not self.dry_run:
            if self.synthesizer.uses_pool:
                self.synthesizer.pool.add(load_image_folder(cfg.cmi_init, self.shape).to(ctx.device))
            else:
                warn(f"--cmi_init is ignored by --method {cfg.method} (no image pool)")
        return method

    def plan(self) -> dict[str, str]:
        cfg, p, syn = self.cfg, self.players, self.synthesizer
        syn_batch = cfg.synthesis_batch_size or cfg.batch_size
        kd = "L1" if cfg.kd_loss == "l1" else f"KL at T={cfg.T:g}"
        generator = p.get("generator")
        return {
            "dataset": f"{cfg.dataset} ({self.num_classes} classes, {self.shape[1]}x{self.shape[2]}), normalisation "
                       f"mean={self.norm[0]} std={self.norm[1]}",
            "teacher": f"{cfg.teacher} {param_count(p['teacher'])} params, weights {self.ckpt}",
            "student": f"{cfg.student} {param_count(p['student'])} params",
            "synthesizer": f"{type(syn).__name__}: {cfg.g_steps} steps x {syn_batch} images per round, "
                           f"lr_g {cfg.lr_g}, weights adv {cfg.adv} bn {cfg.bn} oh {cfg.oh}"
                           + (f" act {cfg.act}" if cfg.act and cfg.method in GENERATIVE else "")
                           + (f" balance {cfg.balance}" if cfg.balance else ""),
            "generator": f"{cfg.generator} nz={cfg.nz} {param_count(generator)} params" if generator is not None
                         else "none (pixels are optimised)",
            **syn.describe(),
            **(self.terms.describe() if self.terms is not None else {}),
            "schedule": f"{cfg.epochs} epochs ({cfg.warmup} warm-up) x {cfg.rounds_per_epoch} round(s) of "
                        f"{cfg.kd_steps} KD steps, batch {cfg.batch_size}{' x2 views' if cfg.pair_sample else ''}, "
                        f"{kd}, SGD lr {cfg.lr} {self.method.schedules.describe()['student']}",
            "data": "synthetic pool on the device" if syn.uses_pool else "fresh generator batches",
            "evaluation": f"{self.eval_name} test split ({self.task.metric})" if self.evaluator
                          else "none (data not found)",
        }

    def hooks(self) -> list[Hook]:
        cfg = self.cfg
        hooks: list[Hook] = [SynthesisWarmupHook(cfg.rounds_per_epoch, cfg.progress)]
        if self.synthesizer.uses_pool and (cfg.save_dir or cfg.save_samples == "pool"):
            hooks.append(PoolPNGHook(cfg.save_dir or str(self.ctx.output / "pool")))
        return hooks

    def render(self):
        return (lambda m: m.sample_images()) if self.cfg.save_samples != "none" else None

    def train_settings(self) -> dict[str, Any]:
        # the trainer counts KD epochs; the warm-up epochs run before them (SynthesisWarmupHook)
        cfg = self.cfg
        return {"nrow": 16, "epochs": cfg.epochs - cfg.warmup, "iters_per_epoch": cfg.iters_per_epoch}


for _name in METHODS:
    register_method(_name, "datafree", method=_name)


def run_datafree(cfg: DataFreeConfig, task, *, script: str = "kd_datafree", explicit_root: bool = True,
                 dry_run: bool = False, given: set[str] = frozenset(), overwrite: bool = False) -> dict[str, Any]:
    return DataFreeRecipe(cfg, task, script=script, given=given, explicit_root=explicit_root, dry_run=dry_run,
                          overwrite=overwrite).run()
