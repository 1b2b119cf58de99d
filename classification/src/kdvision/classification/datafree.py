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

from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import resolve_config
from kdvision.core.errors import ConfigError
from kdvision.core.recipes.datafree import (METHODS, DataFreeConfig, add_datafree_arguments, run_datafree)

from .common import CLASSIFICATION, load_preset

__all__ = ["DataFreeConfig", "METHODS", "CMI_MODEL_NAMES", "preset", "main", "main_rgal"]

#: CMI-registry names whose kdvision entry is called differently.
CMI_MODEL_NAMES = {"mobilenetv2": "mobilenetv2_imagenet"}

ENGINE_METHODS = tuple(m for m in METHODS if m != "rgal")


def preset(method: str) -> dict[str, Any]:
    """The engine defaults plus the method's published script values."""
    data = load_preset("datafree")
    return {**data["common"], "method": method, **data["methods"][method]}


def _cmi_names(cfg: DataFreeConfig) -> None:
    for key in ("teacher", "student"):
        name = getattr(cfg, key)
        if name in CMI_MODEL_NAMES:
            setattr(cfg, key, CMI_MODEL_NAMES[name])


def _device_from_gpu(args) -> None:
    """``--gpu N`` (the originals' device flag) = ``--device cuda:N``; without CUDA, the CPU with a warning."""
    if getattr(args, "gpu", None) is None or "device" in vars(args):
        return
    import torch

    if torch.cuda.is_available():
        args.device = f"cuda:{args.gpu}"
    else:
        print(f"warning: --gpu {args.gpu} given but CUDA is not available; running on the CPU")
        args.device = "cpu"


def _run(cfg: DataFreeConfig, args, preset_values: dict[str, Any]) -> int:
    _cmi_names(cfg)
    given = set(vars(args))
    explicit_root = "data_root" in given or cfg.data_root != preset_values.get("data_root")
    run_datafree(cfg, CLASSIFICATION, explicit_root=explicit_root, dry_run=getattr(args, "dry_run", False),
                 given=given)
    return 0


def build_parser(script: str = "kd_datafree.py"):
    p = base_parser(f"Data-free KD ({script}): DAFL, ZSKT, DFQ, DFAD, DeepInversion, CMI, Fast, Fast-Meta; "
                    "flags of CMI / Fast-Datafree datafree_kd.py")
    add_datafree_arguments(p, ENGINE_METHODS)
    return p


def main(argv: list[str] | None = None, script: str = "kd_datafree.py") -> None:
    def _main(args_list: list[str]) -> int:
        parser = build_parser(script)
        args = parser.parse_args(args_list)
        if "method" not in vars(args):
            parser.error(f"--method is required ({', '.join(ENGINE_METHODS)})")
        _device_from_gpu(args)
        values = preset(args.method)
        return _run(resolve_config(DataFreeConfig, values, args), args, values)

    run_cli(_main, argv)


# -- RGAL ------------------------------------------------------------------------------------------------------------
def build_rgal_parser():
    p = base_parser("RGAL: relation-guided adversarial learning for data-free KD; flags of RGAL's main.py")
    add_datafree_arguments(p, ("rgal",))
    g = p.add_argument_group("RGAL (main.py flags)")
    g.add_argument("--triplet", type=float, help="synthesis triplet weight")
    g.add_argument("--striplet", type=float, help="student triplet weight")
    g.add_argument("--triplet_target", choices=("student", "teacher"), help="whose blocks feed the synthesis triplet")
    g.add_argument("--striplet_feature", help="student triplet features: substrings features, global, logits")
    g.add_argument("--start_layer", type=int, help="first block used by the triplet terms")
    g.add_argument("--end_layer", type=int, help="block after the last one used by the triplet terms")
    g.add_argument("--balanced_sampling", action="store_true", help="balanced (focal) negative sampler, synthesis")
    g.add_argument("--pair_sample", action="store_true", help="two augmented views of every pooled image")
    g.add_argument("--cd_loss", type=float, help="channel-distillation weight (1x1 adapters on all blocks)")
    g.add_argument("--gram_loss", type=float, help="Gram loss weight")
    g.add_argument("--custom_steps", type=float, help="fraction of epochs with the CD / Gram / student triplet terms")
    g.add_argument("--sampling", help="accepted; unused by the original")
    g.add_argument("--fmix", action="store_true", help="accepted; FMix mixing of KD batches is not implemented")
    g.add_argument("--cmi", action="store_true", help="accepted; use kd_datafree.py --method cmi for CMI")
    g.add_argument("--end_epoch", type=int, help="accepted; unused")
    k = p.add_argument_group("kdvision extensions (RGAL)")
    k.add_argument("--synthesis_triplet_sign", choices=("code", "paper"),
                   help="code: the released code's sign in synthesis (default); paper: the paper's opposite sign")
    k.add_argument("--balanced_sampling_student", action="store_true",
                   help="balanced sampler in the student triplet too (the original: distance-weighted only)")
    return p


def main_rgal(argv: list[str] | None = None) -> None:
    def _main(args_list: list[str]) -> int:
        args = build_rgal_parser().parse_args(args_list)
        _device_from_gpu(args)
        values = load_preset("rgal")
        cfg = resolve_config(DataFreeConfig, values, args)
        given = set(vars(args))
        for flag in ("act", "sampling", "fmix", "cmi", "end_epoch"):
            if flag in given:
                print(f"warning: --{flag} has no effect in rgal.py"
                      + (" (use kd_datafree.py --method cmi)" if flag == "cmi" else " (unused by the original too)"
                         if flag in ("act", "sampling", "end_epoch") else " (not implemented)"))
        if "momentum" in given:
            print(f"note: --momentum {cfg.momentum:g} is honoured (RGAL's main.py ignored it and used 0.9)")
        if cfg.adv == cfg.bn == cfg.oh == cfg.triplet == cfg.balance == 0:
            raise ConfigError("every synthesis weight (--adv --bn --oh --triplet --balance) is 0, as in main.py's "
                              "defaults: nothing would shape the synthetic images; pass the README's weights or "
                              "--config classification/src/kdvision/classification/configs/rgal_cifar10.yaml")
        return _run(cfg, args, values)

    run_cli(_main, argv)
