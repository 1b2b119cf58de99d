"""Data-free KD for classification: ``kd_datafree.py`` / ``datafree_kd.py`` (CMI, Fast-Datafree) and ``rgal.py``.

Both are configs of the one recipe in :mod:`kdvision.core.recipes.datafree`:

- ``classification/kd_datafree.py --method {dafl,zskt,dfq,dfad,deepinv,cmi,fast,fast_meta}`` accepts the flags of
  CMI's and Fast-Datafree's ``datafree_kd.py`` (``datafree_kd.py`` is the same entry point under the original name);
  each method starts from its published CIFAR script values (``configs/datafree.yaml``).
- ``classification/rgal.py`` accepts every flag of RGAL's ``main.py``, so RGAL's README command runs as written,
  ``--balance 0.1`` included (in the original, argparse prefix-matched it to ``--balanced_sampling`` and the command
  failed; here it is the class-balance weight).

Model names follow the CMI registry: ``mobilenetv2`` there is torchvision's ImageNet MobileNetV2, which kdvision
calls ``mobilenetv2_imagenet`` (kdvision's ``mobilenetv2`` is RepDistiller's width-0.5 CIFAR model).
"""
from __future__ import annotations

from typing import Any

from kdvision.core.engine.config import user_values
from kdvision.core.engine.rundir import note, warn
from kdvision.core.errors import ConfigError
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.datafree import METHODS, DataFreeConfig, DataFreeRecipe

from .common import CLASSIFICATION, load_preset

__all__ = ["DataFreeConfig", "METHODS", "CMI_MODEL_NAMES", "DATAFREE_FLAGS", "RGAL_FLAGS", "preset", "main",
           "main_rgal"]

#: CMI-registry names whose kdvision entry is called differently.
CMI_MODEL_NAMES = {"mobilenetv2": "mobilenetv2_imagenet"}

ENGINE_METHODS = tuple(m for m in METHODS if m != "rgal")

#: The originals' spellings of DataFreeConfig fields (CMI / Fast-Datafree datafree_kd.py, RGAL main.py).
DATAFREE_FLAGS = {"teacher_weights": ["--ckpt"], "weight_decay": ["--wd"], "log_interval": ["--print_freq", "-p"],
                  "workers": ["-j"], "lr_schedule": ["--scheduler"]}
#: Flags the originals parse and kdvision accepts without a config field (said once when given).
IGNORED = {"start_epoch": "use --resume (exact) instead", "world_size": "launch with torchrun for multi-GPU",
           "rank": "launch with torchrun", "dist_url": "launch with torchrun", "dist_backend": "launch with torchrun",
           "multiprocessing_distributed": "use torchrun", "pretrained": "the teacher comes from --teacher_weights"}
RGAL_IGNORED = {"sampling": "unused by the original too", "end_epoch": "unused by the original too",
                "fmix": "FMix mixing of KD batches is not implemented",
                "cmi": "use kd_datafree.py --method cmi for CMI"}
RGAL_ONLY = ("triplet", "striplet", "triplet_target", "striplet_feature", "start_layer", "end_layer",
             "balanced_sampling", "balanced_sampling_student", "synthesis_triplet_sign", "pair_sample", "cd_loss",
             "gram_loss", "custom_steps")


def preset(method: str) -> dict[str, Any]:
    """The engine defaults plus the method's published script values."""
    data = load_preset("datafree")
    if method not in data["methods"]:
        raise ConfigError(f"invalid method: {method!r} (valid: {', '.join(ENGINE_METHODS)})")
    return {**data["common"], "method": method, **data["methods"][method]}


def _accepted_flags(names: dict[str, str]):
    def extend(p) -> None:
        g = p.add_argument_group("accepted for compatibility (no effect)")
        for name, why in names.items():
            flag = f"--{name}"
            if name in ("multiprocessing_distributed", "pretrained", "fmix", "cmi"):
                g.add_argument(flag, dest=f"ignored_{name}", action="store_true", help=f"accepted; {why}")
            else:
                g.add_argument(flag, dest=f"ignored_{name}", metavar="V", help=f"accepted; {why}")
    return extend


def _adjust(cfg: DataFreeConfig, given: set[str], args, ignored: dict[str, str]) -> None:
    for name, why in ignored.items():
        if f"ignored_{name}" in vars(args):
            warn(f"--{name} has no effect: {why}")
    for key in ("teacher", "student"):
        name = getattr(cfg, key)
        if name in CMI_MODEL_NAMES:
            setattr(cfg, key, CMI_MODEL_NAMES[name])


def _pick(args) -> dict[str, Any]:
    method = user_values(args, ["method"]).get("method")
    if method is None:
        raise ConfigError(f"--method is required ({', '.join(ENGINE_METHODS)})")
    return preset(method)


def _adjust_engine(cfg, given, args) -> None:
    _adjust(cfg, given, args, IGNORED)
    if cfg.method == "rgal":
        raise ConfigError("--method rgal runs with classification/rgal.py (RGAL's own flags and presets)")


ENTRIES = {script: Entry(DataFreeRecipe, CLASSIFICATION, script=script, preset=_pick,
                         help_preset=load_preset("datafree")["common"], aliases=DATAFREE_FLAGS,
                         compat=dict(gpu=True, no_cuda=False, fp16=True), extend_parser=_accepted_flags(IGNORED),
                         adjust=_adjust_engine,
                         description=f"Data-free KD ({script}.py): DAFL, ZSKT, DFQ, DFAD, DeepInversion, CMI, Fast, "
                                     "Fast-Meta; flags of CMI / Fast-Datafree datafree_kd.py")
           for script in ("kd_datafree", "datafree_kd")}


def method_given(argv: list[str]) -> bool:
    """Whether a command line names a data-free method (``--method``, ``--set method=...`` or a ``--config`` file with
    a ``method`` key), read by the engine's own parser and value layers; flags only MosaicKD's DFQ knows are left
    aside, and so is ``--help`` (``kd_datafree.py --help`` is DFQ's help, ``--method cmi --help`` the engine's). A
    command line the engine cannot read at all goes to the engine, which reports it."""
    import argparse

    parser = ENTRIES["kd_datafree"].parser()
    parser.exit_on_error = False
    try:
        args, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
        return "method" in user_values(args, ["method"])
    except (argparse.ArgumentError, ConfigError):
        return True


def main(argv: list[str] | None = None, script: str = "kd_datafree.py") -> None:
    """``kd_datafree.py`` without a method is MosaicKD's DFQ baseline (MosaicKD's script of that name takes no
    ``--method``); with one, the CMI / Fast-Datafree engine. ``datafree_kd.py`` (CMI's name) always needs one."""
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    if script == "kd_datafree.py" and not method_given(args):
        from .mosaickd import main as mosaickd_main

        return mosaickd_main(args, script="kd_datafree_dfq")
    ENTRIES[script.removesuffix(".py")].main(args)


# -- RGAL ------------------------------------------------------------------------------------------------------------
RGAL_FLAGS = {**DATAFREE_FLAGS}


def _adjust_rgal(cfg: DataFreeConfig, given: set[str], args) -> None:
    _adjust(cfg, given, args, {**IGNORED, **RGAL_IGNORED})
    if cfg.method != "rgal":
        raise ConfigError(f"rgal.py runs RGAL only (method {cfg.method!r}: use kd_datafree.py --method "
                          f"{cfg.method})")
    if "act" in given:
        warn("--act has no effect in rgal.py (unused by the original too)")
        cfg.act = 0.0
    if "momentum" in given:
        note(f"--momentum {cfg.momentum:g} is honoured (RGAL's main.py ignored it and used 0.9)")
    if cfg.adv == cfg.bn == cfg.oh == cfg.triplet == cfg.balance == 0:
        raise ConfigError("every synthesis weight (--adv --bn --oh --triplet --balance) is 0, as in main.py's "
                          "defaults: nothing would shape the synthetic images; pass the README's weights or "
                          "--config classification/src/kdvision/classification/configs/rgal_cifar10.yaml")


RGAL_ENTRY = Entry(DataFreeRecipe, CLASSIFICATION, script="rgal", preset=load_preset("rgal"), aliases=RGAL_FLAGS,
                   compat=dict(gpu=True, no_cuda=False, fp16=True),
                   extend_parser=_accepted_flags({**IGNORED, **RGAL_IGNORED}), adjust=_adjust_rgal,
                   description="RGAL: relation-guided adversarial learning for data-free KD; flags of RGAL's main.py")


def main_rgal(argv: list[str] | None = None) -> None:
    RGAL_ENTRY.main(argv)
