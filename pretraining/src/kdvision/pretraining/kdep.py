"""Entry points of KDEP pre-training (``pretraining/kdep.py``) and of its SVD basis (``pretraining/gen_svd_weights.py``).

The original scripts' positional forms are accepted (``reference/kdep.md`` §4, bug 1: ``KDEP_MS-R50_R18.sh``'s
``step-lr=$4`` line made the README command fail):

    kdep.py imgnet_128k exp_name 90 30 5e-4 0,1,2,3     dataset, exp_name, epochs, step-lr, weight decay, GPU ids
    kdep.py --preset ms-r50_mnv2 imgnet_128k exp_name 0,1,2,3      dataset, exp_name, GPU ids
    gen_svd_weights.py imgnet_128k ex_gen_svd 0                    dataset, exp_name, GPU ids

Presets (``configs/``): ``ms-r50_r18`` (default), ``ms-r50_mnv2``, ``sp-r50_r18``. GPU ids choose the device of a
single process; several GPUs are used with ``torchrun --nproc_per_node N`` (DDP), as one warning line says.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdvision.core.engine.cli import device_from_gpu_ids
from kdvision.core.engine.config import load_yaml
from kdvision.core.engine.rundir import warn
from kdvision.core.errors import ConfigError
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.kdep import KDEPConfig, KDEPRecipe, SVDConfig, SVDRecipe
from kdvision.core.recipes.task import TaskAdapter

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = ("ms-r50_r18", "ms-r50_mnv2", "sp-r50_r18")

#: the pre-training "task": no labelled evaluation (the student's head is never trained)
PRETRAINING = TaskAdapter(name="pretraining", metric="loss_feat", make_evaluator=lambda *a, **k: None)

#: positional arguments by count, per script (the original shell scripts' $1, $2, ...)
KDEP_POSITIONALS = {6: ("dataset", "exp_name", "epochs", "step_lr", "weight_decay", "gpus"),
                    3: ("dataset", "exp_name", "gpus"), 2: ("dataset", "exp_name"), 1: ("dataset",)}
SVD_POSITIONALS = {3: ("dataset", "exp_name", "gpus"), 2: ("dataset", "exp_name"), 1: ("dataset",)}


def _extend(presets: bool):
    def extend(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("the original scripts' positional form")
        if presets:
            g.add_argument("--preset", choices=PRESETS, default="ms-r50_r18",
                           help="published set-up (configs/<preset>.yaml; default ms-r50_r18)")
        g.add_argument("positional", nargs="*", metavar="ARG",
                       help="dataset exp_name [epochs step_lr weight_decay] [gpu_ids], as the original scripts")
    return extend


def _preset(args: argparse.Namespace) -> dict[str, Any]:
    return load_yaml(CONFIG_DIR / f"{getattr(args, 'preset', None) or 'ms-r50_r18'}.yaml")


def _adjust(table: dict[int, tuple[str, ...]]):
    def adjust(cfg, given: set[str], args: argparse.Namespace) -> None:
        values = list(getattr(args, "positional", None) or [])
        if values:
            names = table.get(len(values))
            if names is None:
                raise ConfigError(f"{len(values)} positional arguments ({' '.join(values)}); expected "
                                  + " or ".join(" ".join(n) for n in sorted(table.values(), key=len, reverse=True)))
            for name, value in zip(names, values):
                if name == "gpus":
                    _gpus(cfg, value, given)
                else:
                    setattr(cfg, name, type(getattr(cfg, name))(float(value)) if name in ("epochs", "step_lr")
                            else type(getattr(cfg, name))(value) if getattr(cfg, name) is not None else value)
                    given.add(name)
        cfg.resolved_output()
    return adjust


def _gpus(cfg, value: str, given: set[str]) -> None:
    if "device" not in given:
        cfg.device = device_from_gpu_ids(value, "GPU ids", warn)


ENTRIES = {
    "kdep": Entry(KDEPRecipe, PRETRAINING, script="kdep", preset=_preset, help_preset=load_yaml(
                  CONFIG_DIR / "ms-r50_r18.yaml"), extend_parser=_extend(True), adjust=_adjust(KDEP_POSITIONALS),
                  description="KDEP pre-training: feature distillation with SVD alignment and power temperature "
                              "scaling (teacher's pre-ReLU pooled feature -> student's)"),
    "gen_svd_weights": Entry(SVDRecipe, PRETRAINING, script="gen_svd_weights",
                             preset=lambda args: load_yaml(CONFIG_DIR / "gen_svd.yaml"),
                             help_preset=load_yaml(CONFIG_DIR / "gen_svd.yaml"), extend_parser=_extend(False),
                             adjust=_adjust(SVD_POSITIONALS),
                             description="KDEP's SVD basis: mean and right singular vectors of the teacher's pre-ReLU "
                                         "pooled features over the pre-training images (streamed, float64)"),
}


def main(script: str, argv: list[str] | None = None) -> None:
    ENTRIES[script].main(argv)


__all__ = ["ENTRIES", "KDEPConfig", "SVDConfig", "main"]
