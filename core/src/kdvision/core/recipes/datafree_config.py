"""The data-free engine's config: the CMI / Fast-Datafree / RGAL flags as fields, with their rules.

One home per hyper-parameter: the field defaults are the engine's (``datafree_kd.py``'s argparse defaults); each
method's published script values live in the task's preset files, not here and not in constructors.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunConfig, param
from ..engine.optim import LRSchedule
from ..engine.rundir import note, warn
from ..errors import ConfigError
from .task import teacher_checkpoint, teacher_normalization

GENERATIVE = ("dafl", "zskt", "dfq", "dfad")
METHODS = GENERATIVE + ("deepinv", "cmi", "fast", "fast_meta", "rgal")
SAVE_SAMPLES = ("none", "grid", "pool")
LR_SCHEDULES = ("cosine", "multistep", "constant")


@dataclass
class DataFreeConfig(RunConfig):
    method: str = param("cmi", "data-free method", choices=METHODS)
    dataset: str = param("cifar10", "in-domain dataset: classes, image size, normalisation, augmentation, evaluation")
    eval_dataset: str | None = param(None, "evaluate on this dataset's test split (e.g. cifar10_test_subset)",
                                     flags=("--eval-dataset",))
    teacher: str = param("wrn40_2", "teacher architecture")
    student: str = param("wrn16_1", "student architecture")
    teacher_weights: str | None = param(None, "teacher checkpoint (default: checkpoints/pretrained/"
                                        "{dataset}_{teacher}.pth, the CMI layout)", flags=("--teacher-weights",))
    num_classes: int | None = param(None, "classes (default: the dataset's)", min=1)
    normalize: str | None = param(None, "normalisation the teacher expects (default: the teacher's, else the "
                                  "dataset's)")
    # -- KD (student) -------------------------------------------------------------------------------------------
    batch_size: int = param(128, "KD batch (global; x2 images with --pair_sample)", flags=("--batch-size",), min=1)
    test_batch_size: int = param(256, "evaluation batch", min=1)
    lr: float = param(0.1, "student SGD learning rate", min=0)
    momentum: float = param(0.9, "student SGD momentum", min=0)
    weight_decay: float = param(1e-4, "student weight decay", min=0)
    T: float | None = param(None, "KD temperature, honoured by every method (default: 1)", min=0)
    kd_loss: str = param("kl", "KD objective: kl (at T) or l1 (DFAD)", choices=("kl", "l1"))
    legacy_generative_kd_T1: bool = param(False, "DAFL/ZSKT/DFQ/DFAD: distil at T=1 (L1 for DFAD) whatever --T "
                                          "says, as the original engine did", flags=("--legacy-generative-kd-T1",))
    lr_schedule: str = param("cosine", "student LR schedule (per epoch, as the original's scheduler)",
                             choices=LR_SCHEDULES, flags=("--lr-schedule",))
    lr_min: float = param(0.0, "floor of the cosine schedule (Fast: 2e-4)", min=0)
    lr_decay_milestones: list[int] = param(factory=list, help="epochs of x0.1 decay (only with --lr_schedule "
                                           "multistep)")
    kd_steps: int = param(400, "KD steps per synthesis round", min=1)
    ep_steps: int = param(400, "KD steps per epoch (= --iters-per-epoch; an epoch holds ep_steps // kd_steps "
                          "rounds)", min=1)
    warmup: int = param(0, "synthesis-only epochs before KD starts (Fast); counted in --epochs", min=0)
    # -- synthesis ------------------------------------------------------------------------------------------------
    synthesis_batch_size: int | None = param(None, "images synthesized per round (default: --batch_size)", min=1)
    g_steps: int = param(1, "inner synthesis steps per round", min=1)
    lr_g: float = param(1e-3, "generator / pixel Adam learning rate", min=0)
    lr_z: float = param(1e-3, "latent-code learning rate (Fast)", min=0)
    generator: str = param("cmi", "generator name (cmi, cmi_large, ...)")
    nz: int = param(256, "latent size", min=1)
    ngf: int = param(64, "generator width", min=1)
    adv: float = param(0.0, "adversarial loss weight", min=0)
    bn: float = param(0.0, "BN-statistics loss weight", min=0)
    oh: float = param(0.0, "one-hot / target CE loss weight", min=0)
    act: float = param(0.0, "DAFL activation loss weight", min=0)
    balance: float = param(0.0, "class-balance loss weight", min=0)
    balance_base: str = param("e", "logarithm base of the class-balance entropy", choices=("e", "2", "10"))
    tv: float = param(0.0, "DeepInversion total-variation weight", min=0)
    l2: float = param(0.0, "DeepInversion L2 prior weight", min=0)
    best_of_steps: bool = param(False, "DeepInversion: pool the lowest-loss iterate (the original's selection was "
                                "a no-op: the last iterate)")
    jitter: int = param(4, "DeepInversion: largest random roll in pixels per step (the original's fixed 1/8 of the "
                        "32-px width; no flag there)", min=0, cli=False)
    cr: float = param(1.0, "contrastive loss weight (CMI)", min=0)
    cr_T: float = param(0.5, "contrastive temperature (CMI)", min=0)
    bank_size: int = param(40960, "CMI memory-bank rows", min=1)
    n_neg: int = param(4096, "CMI negatives drawn from the bank per step", min=1)
    head_dim: int = param(256, "CMI projection size", min=1)
    bn_mmt: float = param(0.0, "momentum of the BN-statistics EMA (Fast)", min=0, max=1)
    is_maml: int = param(1, "Fast-Meta: 1 = FOMAML, 0 = Reptile", choices=(0, 1))
    reptile_scale: float = param(67.0, "Fast-Meta Reptile: meta gradient = reptile_scale * (meta - adapted weights) "
                                 "(hard-coded in the original; no flag there)", min=0, cli=False)
    reset_l0: int = param(0, "Fast: re-initialise the generator's first layers once, at epoch 120 + warmup",
                          choices=(0, 1))
    reset_bn: int = param(0, "accepted; unused by the original too", choices=(0, 1))
    pool_dtype: str = param("uint8", "pool storage (uint8 = the PNG quantisation)", choices=("uint8", "float16"))
    cmi_init: str | None = param(None, "folder of pre-inverted images that starts the pool")
    save_dir: str | None = param(None, "also write the pool as PNG files here (for inspection)")
    save_samples: str = param("grid", "grid: image grids of each round's batch in <output>/samples; pool: also every "
                              "pooled image as a PNG in <output>/pool (or --save_dir); none: neither",
                              choices=SAVE_SAMPLES, flags=("--save-samples",))
    # -- RGAL -----------------------------------------------------------------------------------------------------
    triplet: float = param(0.0, "synthesis triplet weight (RGAL)", min=0)
    striplet: float = param(0.0, "student triplet weight (RGAL)", min=0)
    triplet_target: str = param("teacher", "whose blocks feed the synthesis triplet", choices=("student", "teacher"))
    striplet_feature: str = param("features", "student triplet features: substrings features, global, logits")
    start_layer: int = param(0, "first block used by the triplet terms", min=0)
    end_layer: int = param(4, "block after the last one used by the triplet terms", min=0)
    balanced_sampling: bool = param(False, "balanced (focal) negative sampler, synthesis")
    balanced_sampling_student: bool = param(False, "balanced sampler in the student triplet too (the original: "
                                            "distance-weighted only)")
    synthesis_triplet_sign: str = param("code", "code: the released code's sign in synthesis; paper: the paper's "
                                        "opposite sign", choices=("code", "paper"))
    pair_sample: bool = param(False, "two augmented views of every pooled image")
    cd_loss: float = param(0.0, "channel-distillation weight (1x1 adapters on all blocks)", min=0)
    gram_loss: float = param(0.0, "Gram loss weight", min=0)
    custom_steps: float = param(1.0, "fraction of epochs with the CD / Gram / student triplet terms", min=0)
    # -- misc -----------------------------------------------------------------------------------------------------
    workers: int = param(0, "data-loading workers for evaluation", min=0)
    evaluate_only: bool = param(False, "evaluate the teacher (and --resume'd student), no training")
    log_tag: str = param("", "recorded in the config (the run directory replaces the log file names)")

    def validate(self) -> None:
        super().validate()
        if self.ep_steps < self.kd_steps:
            raise ConfigError(f"--ep_steps ({self.ep_steps}) must be >= --kd_steps ({self.kd_steps}): an epoch holds "
                              f"ep_steps // kd_steps synthesis rounds")
        if not self.warmup < self.epochs:
            raise ConfigError(f"--warmup ({self.warmup}) must be in [0, --epochs={self.epochs})")
        if self.lr_schedule == "multistep" and not self.lr_decay_milestones:
            raise ConfigError("--lr_schedule multistep needs --lr_decay_milestones")
        if self.striplet > 0 and not any(k in self.striplet_feature for k in ("features", "global", "logits")):
            raise ConfigError(f"invalid striplet_feature: {self.striplet_feature!r} (names none of features, "
                              f"global, logits)")
        weights = {"adv": self.adv, "bn": self.bn, "oh": self.oh, "balance": self.balance,
                   **({"act": self.act} if self.method in GENERATIVE else {}),
                   **({"cr": self.cr} if self.method == "cmi" else {}),
                   **({"tv": self.tv, "l2": self.l2} if self.method == "deepinv" else {}),
                   **({"triplet": self.triplet} if self.method == "rgal" else {})}
        if not any(weights.values()):
            raise ConfigError(f"every synthesis loss weight ({' '.join('--' + k for k in weights)}) is 0: nothing "
                              f"would shape the synthetic images")

    @property
    def rounds_per_epoch(self) -> int:
        return self.ep_steps // self.kd_steps

    def resolve(self, given: set[str]) -> None:
        """Fill the derived values and say, once, what the given flags do: ``T``/``kd_loss`` of the generative
        baselines' legacy mode, ``iters_per_epoch`` (= ``ep_steps``, the unit the original calls an epoch)."""
        if "iters_per_epoch" in given and self.iters_per_epoch is not None:
            consistent = self.iters_per_epoch in (self.ep_steps, self.rounds_per_epoch * self.kd_steps)
            if "ep_steps" in given and not consistent:
                raise ConfigError(f"--iters-per-epoch {self.iters_per_epoch} and --ep_steps {self.ep_steps} disagree "
                                  f"(they are the same setting; give one)")
            if self.iters_per_epoch % self.kd_steps:
                raise ConfigError(f"--iters-per-epoch {self.iters_per_epoch} must be a multiple of --kd_steps "
                                  f"{self.kd_steps} (an epoch is a whole number of synthesis rounds)")
            if not consistent:
                self.ep_steps = self.iters_per_epoch
            self.validate()
        self.iters_per_epoch = self.rounds_per_epoch * self.kd_steps
        if self.method in GENERATIVE and self.legacy_generative_kd_T1:
            if "T" in given:
                warn(f"--T {self.T:g} ignored: --legacy_generative_kd_T1 distils {self.method} at T=1"
                     + (" (L1 for dfad)" if self.method == "dfad" else ""))
            self.T = 1.0
            self.kd_loss = "l1" if self.method == "dfad" else "kl"
        elif self.T is None:
            self.T = 1.0
        elif self.method in GENERATIVE and "T" in given and self.kd_loss == "kl" and self.T != 1:
            note(f"--T {self.T:g} is honoured for {self.method}; the original engine distilled it at T=1 whatever "
                 f"--T said (add --legacy_generative_kd_T1 to reproduce the published numbers)")
        if self.lr_decay_milestones and self.lr_schedule != "multistep":
            warn("--lr_decay_milestones has no effect with the cosine schedule (as in the original); pass "
                 "--lr_schedule multistep to use it")
        if self.reset_bn:
            warn("--reset_bn has no effect (the original parsed it and never used it)")
        if self.method == "fast" and self.is_maml != 1:
            warn("--is_maml only affects --method fast_meta")

    def student_schedule(self) -> LRSchedule:
        """The original's per-epoch scheduler over the KD epochs (stepped after each epoch)."""
        kd_epochs = self.epochs - self.warmup
        if self.lr_schedule == "cosine":
            return LRSchedule("cosine", total=kd_epochs, floor=self.lr_min)
        if self.lr_schedule == "multistep":
            return LRSchedule("multistep", milestones=tuple(self.lr_decay_milestones), gamma=0.1)
        return LRSchedule("constant")

    def expected_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return teacher_normalization(self.dataset, self.teacher, self.normalize)

    def teacher_checkpoint(self) -> str:
        return teacher_checkpoint(self.teacher_weights, self.dataset, self.teacher)
