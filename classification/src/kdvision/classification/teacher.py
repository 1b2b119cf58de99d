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
from kdvision.core.engine.config import param
from kdvision.core.engine.rundir import warn
from kdvision.core.errors import ConfigError
from kdvision.core.models import MODELS, model_info
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.supervised import SupervisedConfig, SupervisedRecipe

from .common import CLASSIFICATION, load_preset

RECIPES: dict[str, dict[str, Any]] = {name: load_preset(f"teacher_{name}") for name in ("dfad", "mosaickd")}

#: The originals' spellings (DFAD's train_teacher.py, MosaicKD's train_scratch.py).
TEACHER_FLAGS = {"batch_size": ["-b"], "epochs": ["--epoch"], "weight_decay": ["--wd"], "workers": ["-j"],
                 "log_interval": ["--print-freq", "--print_freq"], "test_only": ["--evaluate"]}


@dataclass
class TeacherConfig(SupervisedConfig):
    recipe: str = param("dfad", "training recipe: dfad (train_teacher.py) or mosaickd (train_scratch.py)",
                        choices=tuple(RECIPES))
    pretrained: bool = param(False, "ImageNet-pretrained torchvision weights (never downloaded: refused)")

    def validate(self) -> None:
        super().validate()
        if self.pretrained:
            raise ConfigError("--pretrained needs ImageNet weights, which kdvision never downloads; train from "
                              "scratch or load weights with --resume")


def resolve_model_name(name: str, dataset: str) -> str:
    """DFAD's ``--model resnet34`` means torchvision's ImageNet ResNet-34 for 128-px Caltech101."""
    spec = dataset_spec(dataset)
    size = model_info(name).get("input_size")
    alt = f"{name}_imagenet"
    if size is not None and size[1] <= 32 < min(spec.image_size) and alt in MODELS:
        return alt
    return name


class TeacherRecipe(SupervisedRecipe):
    config_class = TeacherConfig

    def check(self) -> None:
        cfg = self.cfg
        if "step_size" in self.given and not cfg.scheduler and cfg.recipe == "dfad":
            warn("--step_size has no effect without --scheduler (as in the original train_teacher.py); the "
                 "learning rate stays constant")
        self.model_name = resolve_model_name(cfg.model, cfg.dataset)
        self.extra_plan = {"recipe": cfg.recipe}
        super().check()


def _preset(default: str):
    def preset(args) -> dict[str, Any]:
        from kdvision.core.engine.config import user_values

        chosen = user_values(args, ["recipe"]).get("recipe", default)
        if chosen not in RECIPES:
            raise ConfigError(f"invalid recipe: {chosen!r} (valid: {', '.join(RECIPES)})")
        return RECIPES[chosen]
    return preset


ENTRIES = {recipe: Entry(TeacherRecipe, CLASSIFICATION, script=script, preset=_preset(recipe),
                         help_preset=RECIPES[recipe], aliases=TEACHER_FLAGS,
                         compat=dict(gpu=True, no_cuda=True, fp16=False),
                         description=f"Supervised teacher training (recipe {recipe}); flags of DFAD's "
                                     "train_teacher.py and MosaicKD's train_scratch.py")
           for recipe, script in (("dfad", "train_teacher"), ("mosaickd", "train_scratch"))}


def main(recipe: str = "dfad", argv: list[str] | None = None) -> None:
    ENTRIES[recipe].main(argv)


def run(cfg: TeacherConfig, *, given: set[str] = frozenset(), dry_run: bool = False, overwrite: bool = False) -> dict:
    """Programmatic entry: train (or dry-run) the teacher ``cfg`` describes."""
    return TeacherRecipe(cfg, CLASSIFICATION, script="train_teacher", given=given, dry_run=dry_run,
                         overwrite=overwrite).run()
