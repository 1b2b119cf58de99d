"""MosaicKD and Blind KD for classification: ``classification/kd_mosaic.py``, ``classification/kd_vanilla.py``
(``reference/mosaickd.md``).

Accepts the flags of MosaicKD's ``kd_mosaic.py`` with the same meaning (``--lr --batch-size --teacher --student
--dataset --unlabeled --epoch(s) --local --align --adv --balance --ood_subset --gpu --fp16 --lr_g --T --z_dim --seed
--print-freq --resume --evaluate --workers --wd``), plus the common kdvision flags. The README command runs as written:

    python classification/kd_mosaic.py --lr 0.1 --batch-size 256 --teacher wrn40_2 --student wrn16_1 \\
        --dataset cifar100 --unlabeled cifar10 --epoch 200 --lr 0.1 --local 1 --align 1 --adv 1 --balance 10 --gpu 0
"""
from __future__ import annotations

from kdvision.core.engine.rundir import note, warn
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.mosaickd import MOSAICKD_FLAGS, MosaicKDConfig, MosaicKDRecipe

from .common import CLASSIFICATION

__all__ = ["MosaicKDConfig", "ENTRIES", "BLIND_KD", "DFQ", "main"]

#: kd_mosaic.py flags kdvision accepts without a config field (said once when given).
IGNORED = {"output_stride": "unused by the original too", "start_epoch": "use --resume (exact) instead",
           "world_size": "launch with torchrun for multi-GPU", "rank": "launch with torchrun",
           "dist_url": "launch with torchrun", "dist_backend": "launch with torchrun",
           "multiprocessing_distributed": "use torchrun"}


def _accepted(p) -> None:
    g = p.add_argument_group("accepted for compatibility (no effect)")
    for name, why in IGNORED.items():
        kind = dict(action="store_true") if name == "multiprocessing_distributed" else dict(metavar="V")
        g.add_argument(f"--{name}", dest=f"ignored_{name}", help=f"accepted; {why}", **kind)


def _adjust(cfg: MosaicKDConfig, given: set[str], args) -> None:
    for name, why in IGNORED.items():
        if f"ignored_{name}" in vars(args):
            warn(f"--{name} has no effect: {why}")
    if cfg.amp:
        note("--fp16/--amp: bf16 autocast (the original's fp16 needed three GradScalers; bf16 needs none)")


#: kd_vanilla.py's defaults (reference/mosaickd.md §4.2): batch 128, KL at T = 5.
BLIND_KD = {"method": "blind_kd", "batch_size": 128, "T": 5.0}
#: MosaicKD's kd_datafree.py defaults (§4.3): CIFAR-10, batch 128, Adam student at 1e-3, 200 iterations per epoch.
DFQ = {"method": "dfq", "dataset": "cifar10", "batch_size": 128, "lr": 1e-3, "iters_per_epoch": 200}

ENTRIES = {
    "kd_mosaic": Entry(MosaicKDRecipe, CLASSIFICATION, script="kd_mosaic", preset={}, aliases=MOSAICKD_FLAGS,
                       compat=dict(gpu=True, no_cuda=False, fp16=True), extend_parser=_accepted, adjust=_adjust,
                       description="MosaicKD: knowledge distillation from out-of-domain data (generator, patch "
                                   "discriminator, teacher, student); flags of MosaicKD's kd_mosaic.py"),
    "kd_vanilla": Entry(MosaicKDRecipe, CLASSIFICATION, script="kd_vanilla", preset=BLIND_KD, aliases=MOSAICKD_FLAGS,
                        compat=dict(gpu=True, no_cuda=False, fp16=True), extend_parser=_accepted, adjust=_adjust,
                        description="Blind KD: the student imitates the teacher on out-of-domain images (KL at --T); "
                                    "flags of MosaicKD's kd_vanilla.py"),
    # kd_datafree.py without --method (MosaicKD's command lines; CMI's always pass --method)
    "kd_datafree_dfq": Entry(MosaicKDRecipe, CLASSIFICATION, script="kd_datafree_dfq", preset=DFQ,
                             aliases=MOSAICKD_FLAGS, compat=dict(gpu=True, no_cuda=False, fp16=True),
                             extend_parser=_accepted, adjust=_adjust,
                             description="MosaicKD's data-free baseline (DFQ, its kd_datafree.py): kd_datafree.py "
                                         "without --method. With --method: the CMI / Fast-Datafree engine"),
}


def main(argv: list[str] | None = None, script: str = "kd_mosaic") -> None:
    ENTRIES[script].main(argv)
