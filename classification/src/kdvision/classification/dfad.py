"""DFAD for classification: MNIST, CIFAR-10/100 and Caltech101 configs over the one DFAD recipe in core.

Entry points ``classification/dfad_{mnist,cifar,caltech101}.py`` call :func:`main` with their preset; they accept
the original scripts' flags (``--batch_size --test_batch_size --epochs --epoch_itrs --lr_S --lr_G --data_root
--dataset --ckpt --weight_decay --momentum --seed --nz --step_size --scheduler --verbose --no-cuda --log-interval
--test-only``) with the same meaning, plus the common kdvision flags and the paper's baselines (``--baseline``).
"""
from __future__ import annotations

from typing import Any

from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import resolve_config
from kdvision.core.recipes.dfad import DFADConfig, add_dfad_arguments, lr_decay_epochs, run_dfad

from .common import CLASSIFICATION, load_preset

__all__ = ["DFADConfig", "PRESETS", "lr_decay_epochs", "run", "main"]

# One home per preset: the YAML files in ``configs/`` (the original scripts' defaults, documented there).
PRESETS: dict[str, dict[str, Any]] = {name: load_preset(f"dfad_{name}") for name in ("mnist", "cifar", "caltech101",
                                                                                   "digits")}
DATASET_CHOICES = {"mnist": ["mnist", "digits"], "cifar": ["cifar10", "cifar100"], "caltech101": ["caltech101"],
                   "digits": ["digits", "mnist"]}


def build_parser(preset: str):
    p = base_parser(f"DFAD data-free adversarial distillation ({preset}); flags of the original DFAD_{preset}.py")
    add_dfad_arguments(p, DATASET_CHOICES[preset])
    return p


def run(cfg: DFADConfig, *, explicit_root: bool, dry_run: bool = False, given: set[str] = frozenset()) -> dict:
    return run_dfad(cfg, CLASSIFICATION, explicit_root=explicit_root, dry_run=dry_run, given=given)


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
