"""Supervised teacher training: the recipes of DFAD's ``train_teacher.py`` and MosaicKD's ``train_scratch.py``.

- ``dfad``: SGD (momentum 0.9), constant LR unless ``--scheduler`` is given, then StepLR(``--step_size``, x0.1)
  stepped at the start of each epoch (decayed LR from epoch ``step_size``, 1-based); defaults batch 256, 30 epochs,
  lr 0.1, wd 5e-4. The original ignores ``--step_size`` without ``--scheduler``; so do we, with a warning.
- ``mosaickd``: SGD lr 0.1, momentum 0.9, wd 1e-4, batch 256, 200 epochs, cosine annealing per iteration.

Both select the best test accuracy and, besides the run directory, write the best weights as a raw state_dict
``<output>/{dataset}-{model}.pt`` — the format the DFAD scripts' ``--ckpt`` expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdvision.core.data import dataset_spec
from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import resolve_config
from kdvision.core.errors import ConfigError
from kdvision.core.models import MODELS, model_info
from kdvision.core.recipes.supervised import SupervisedConfig, run_supervised

from .common import CLASSIFICATION, load_preset

RECIPES: dict[str, dict[str, Any]] = {name: load_preset(f"teacher_{name}") for name in ("dfad", "mosaickd")}


@dataclass
class TeacherConfig(SupervisedConfig):
    recipe: str = "dfad"
    pretrained: bool = False


def resolve_model_name(name: str, dataset: str) -> str:
    """DFAD's ``--model resnet34`` means torchvision's ImageNet ResNet-34 for 128-px Caltech101."""
    spec = dataset_spec(dataset)
    size = model_info(name).get("input_size")
    alt = f"{name}_imagenet"
    if size is not None and size[1] <= 32 < min(spec.image_size) and alt in MODELS:
        return alt
    return name


def build_parser(recipe: str):
    p = base_parser(f"Supervised teacher training (recipe {recipe}); flags of DFAD's train_teacher.py and "
                    "MosaicKD's train_scratch.py")
    g = p.add_argument_group("teacher (original flags)")
    g.add_argument("--recipe", choices=sorted(RECIPES))
    g.add_argument("--dataset")
    g.add_argument("--model", "--arch", dest="model")
    g.add_argument("--num_classes", "--num-classes", dest="num_classes", type=int)
    g.add_argument("--batch_size", "--batch-size", "-b", dest="batch_size", type=int)
    g.add_argument("--test_batch_size", "--test-batch-size", dest="test_batch_size", type=int)
    g.add_argument("--epoch", dest="epochs", type=int, help="alias of --epochs (MosaicKD)")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight_decay", "--weight-decay", "--wd", dest="weight_decay", type=float)
    g.add_argument("--scheduler", action="store_true", help="StepLR(--step_size) (dfad recipe)")
    g.add_argument("--step_size", type=int)
    g.add_argument("--pretrained", action="store_true", help="ImageNet-pretrained torchvision weights")
    g.add_argument("--workers", "-j", dest="workers", type=int)
    g.add_argument("--gpu", type=int, help="GPU index (MosaicKD)")
    g.add_argument("--print-freq", "--print_freq", dest="log_interval", type=int, help="alias of --log-interval")
    g.add_argument("--test-only", "--test_only", "--evaluate", dest="test_only", action="store_true")
    g.add_argument("--verbose", action="store_true")
    g.add_argument("--no-cuda", "--no_cuda", dest="device", action="store_const", const="cpu")
    g.add_argument("--normalize", help="normalisation constants key (default: the dataset's)")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no training augmentation")
    return p


def run(cfg: TeacherConfig, *, given: set[str], dry_run: bool = False) -> dict:
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}; valid: {', '.join(RECIPES)}")
    if "step_size" in given and not cfg.scheduler and cfg.recipe == "dfad":
        print("warning: --step_size has no effect without --scheduler (as in the original train_teacher.py); "
              "the learning rate stays constant")
    if cfg.pretrained:
        raise ConfigError("--pretrained needs ImageNet weights, which kdvision never downloads; train from "
                          "scratch or load weights with --resume")
    return run_supervised(cfg, CLASSIFICATION, model_name=resolve_model_name(cfg.model, cfg.dataset), given=given,
                          dry_run=dry_run, plan={"recipe": cfg.recipe})


def main(recipe: str = "dfad", argv: list[str] | None = None) -> None:
    def _main(args_list: list[str]) -> int:
        args = build_parser(recipe).parse_args(args_list)
        preset = RECIPES[getattr(args, "recipe", recipe)]
        ns = vars(args)
        if "gpu" in ns:
            args.device = f"cuda:{ns.pop('gpu')}"
        cfg = resolve_config(TeacherConfig, preset, args)
        run(cfg, given=set(vars(args)), dry_run=getattr(args, "dry_run", False))
        return 0

    run_cli(_main, argv)
