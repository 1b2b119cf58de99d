"""KD, DKD, NKD and SDD (SD-KD, SD-DKD, SD-NKD) on labelled data: ``classification/sdd.py``
(``reference/sdd.md``, ``seed_commands.md`` §5).

SDD's command lines run as written (``train_origin.py`` / ``train.py`` flags with the same meaning)::

    python classification/sdd.py --cfg configs/cifar100/sdd_dkd/res32x4_shuv1.yaml --gpu 1 --M [1,2,4]
    torchrun --nproc_per_node=2 classification/sdd.py --cfg configs/imagenet/r50_mv2/sdd_dkd.yaml

- ``--cfg``: an mdistiller / SDD yacs file, or the relative path of a shipped one (``--list-configs``), resolved
  from any working directory.
- ``--M``: the scale set, as ``[1,2,4]``, ``1,2,4`` or ``[1, 2, 4]`` (quote it: an unquoted ``[1,2,4]`` is a
  shell glob); recorded in the run's config.yaml (the original kept it on the command line only).
- ``--gpu``: a GPU index, or a list (``0,1``; the original's DataParallel): kdvision runs one process per GPU
  under torchrun instead, so a list says so and uses its first GPU.
- ``--warmup``: SD-DKD's warm-up epochs (the original's meaning). ``--resume``: continue the run exactly.
- Trailing ``KEY VALUE`` pairs: yacs overrides (``SOLVER.LR 0.1 DKD.BETA 6.0``).
"""
from __future__ import annotations

import argparse
import sys

from kdvision.core.engine.cli import device_from_gpu_ids
from kdvision.core.engine.rundir import warn
from kdvision.core.recipes.base import Entry, pop_seeds
from kdvision.core.recipes.sdd import SDDConfig, SDDRecipe, read_yacs, yacs_overrides

from .common import CLASSIFICATION
from .sdd_configs import list_configs, resolve_config_path

__all__ = ["SDDConfig", "ENTRIES", "main"]


class _ListConfigs(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="list the shipped configs and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            for name in list_configs():
                print(f"configs/{name}")
            sys.stdout.flush()
        except BrokenPipeError:  # `sdd.py --list-configs | head`
            sys.stderr.close()
        sys.exit(0)


def _extend(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SDD's train_origin.py / train.py")
    g.add_argument("--cfg", metavar="YAML", help="mdistiller/SDD yacs config (a file, or a shipped config's "
                   "relative path such as configs/cifar100/sdd_dkd/res32x4_shuv1.yaml)")
    g.add_argument("--gpu", dest="sdd_gpu", metavar="IDS", help="GPU index (= --device cuda:N), or a list such as "
                   "0,1 (use torchrun --nproc_per_node for several GPUs)")
    g.add_argument("--list-configs", "--list_configs", action=_ListConfigs)
    g.add_argument("--seeds", metavar="S,S,...", help="run once per seed (OUTPUT/seed<S>) and report mean ± std of "
                   "the best and the last accuracy (OUTPUT/seeds.json)")
    g.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="yacs overrides after the flags, e.g. SOLVER.LR 0.1")


def _preset(args: argparse.Namespace) -> dict:
    """mdistiller's data folder (``./data``), then the ``--cfg`` file, then the trailing overrides."""
    values = read_yacs(resolve_config_path(args.cfg)) if getattr(args, "cfg", None) else {}
    return {"data_root": "data", **values, **yacs_overrides(list(getattr(args, "opts", None) or []))}


def _adjust(cfg: SDDConfig, given: set[str], args: argparse.Namespace) -> None:
    gpus = getattr(args, "sdd_gpu", None)
    if gpus is not None and "device" not in given:
        cfg.device = device_from_gpu_ids(gpus, "--gpu", warn)


ENTRIES = {
    "sdd": Entry(SDDRecipe, CLASSIFICATION, script="sdd", preset=_preset, help_preset={},
                 compat=dict(gpu=False, no_cuda=False, fp16=True), extend_parser=_extend, adjust=_adjust,
                 description="KD / DKD / NKD and scale-decoupled distillation (SD-KD, SD-DKD, SD-NKD) on labelled "
                             "data; mdistiller/SDD yacs configs and the flags of SDD's train_origin.py"),
}


def main(argv: list[str] | None = None, script: str = "sdd") -> None:
    from kdvision.core.engine.cli import run_cli
    from kdvision.core.engine.rundir import init_logging
    from kdvision.core.recipes.base import run_seeds

    entry = ENTRIES[script]

    def _main(args: list[str]) -> int:
        init_logging(keep=False)
        args = list(args)
        seeds = pop_seeds(args)
        if seeds is None:
            entry.build(args).run()
        else:
            run_seeds(entry, args, seeds)
        return 0

    run_cli(_main, sys.argv[1:] if argv is None else argv)
