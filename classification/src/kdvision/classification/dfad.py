"""DFAD for classification: MNIST, CIFAR-10/100 and Caltech101 configs over the one DFAD recipe in core.

Entry points ``classification/dfad_{mnist,cifar,caltech101}.py`` call :func:`main` with their preset; they accept
the original scripts' flags (``--batch_size --test_batch_size --epochs --epoch_itrs --lr_S --lr_G --data_root
--dataset --ckpt --weight_decay --momentum --seed --nz --step_size --scheduler --verbose --no-cuda --log-interval
--test-only``) with the same meaning, plus the common kdvision flags and the paper's baselines (``--baseline``).
"""
from __future__ import annotations

from typing import Any

from kdvision.core.errors import ConfigError
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.dfad import DFAD_FLAGS, DFADConfig, DFADRecipe, lr_decay_epochs, run_dfad

from .common import CLASSIFICATION, load_preset

__all__ = ["DFADConfig", "PRESETS", "lr_decay_epochs", "run", "main"]

# One home per preset: the YAML files in ``configs/`` (the original scripts' defaults, documented there).
PRESETS: dict[str, dict[str, Any]] = {name: load_preset(f"dfad_{name}") for name in ("mnist", "cifar", "caltech101",
                                                                                   "digits")}
DATASET_CHOICES = {"mnist": ["mnist", "digits"], "cifar": ["cifar10", "cifar100"], "caltech101": ["caltech101"],
                   "digits": ["digits", "mnist"]}


def run(cfg: DFADConfig, *, explicit_root: bool = True, dry_run: bool = False, given: set[str] = frozenset(),
        script: str = "dfad", overwrite: bool = False) -> dict:
    return run_dfad(cfg, CLASSIFICATION, script=script, explicit_root=explicit_root, dry_run=dry_run, given=given,
                    overwrite=overwrite)


def _adjust(preset: str):
    def adjust(cfg: DFADConfig, given: set[str], args) -> None:
        if cfg.dataset not in DATASET_CHOICES[preset]:
            raise ConfigError(f"invalid dataset: {cfg.dataset!r} (valid for dfad_{preset}.py: "
                              f"{', '.join(DATASET_CHOICES[preset])})")
        if preset == "cifar" and "ckpt" not in given and not cfg.ckpt:
            cfg.ckpt = f"checkpoint/teacher/{cfg.dataset}-resnet34_8x.pt"
    return adjust


ENTRIES = {preset: Entry(DFADRecipe, CLASSIFICATION, script=f"dfad_{preset}", preset=PRESETS[preset],
                         aliases=DFAD_FLAGS, compat=dict(gpu=False, no_cuda=True, fp16=False), adjust=_adjust(preset),
                         description=f"DFAD data-free adversarial distillation ({preset}); flags of the original "
                                     f"DFAD_{preset}.py")
           for preset in ("mnist", "cifar", "caltech101", "digits")}


def main(preset: str, argv: list[str] | None = None) -> None:
    ENTRIES[preset].main(argv)
