"""Synthesizers by name: the data-free methods' image sources, built from a data-free config.

``build_synthesizer(cfg, ...)`` looks the method up in :data:`SYNTHESIZERS`; each builder passes every
hyper-parameter from the config (the constructors keep no hidden defaults of their own for what the config sets).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..registry import Registry
from .augment import Augment
from .generative import GenerativeSynthesizer
from .inversion import CMISynthesizer, DeepInversionSynthesizer, FastMetaSynthesizer, FastSynthesizer
from .rgal import AdvTripletSynthesizer

SYNTHESIZERS = Registry("synthesizer")


def _generative(adv_loss: str):
    def build(cfg, teacher, student, generator, common):
        return GenerativeSynthesizer(teacher, student, generator, nz=cfg.nz, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh,
                                     act=cfg.act, balance=cfg.balance, balance_base=cfg.balance_base,
                                     adv_loss=adv_loss, **common)
    return build


for _name in ("dafl", "zskt", "dfq"):
    SYNTHESIZERS.add(_name, _generative("kl"), generator=True, pool=False)
SYNTHESIZERS.add("dfad", _generative("l1"), generator=True, pool=False)


def _pool(cfg) -> dict[str, Any]:
    return dict(pool_dtype=cfg.pool_dtype, pair_sample=cfg.pair_sample)


def _inversion(cfg) -> dict[str, Any]:
    return dict(nz=cfg.nz, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh, **_pool(cfg))


@SYNTHESIZERS.register("deepinv", generator=False, pool=True)
def _deepinv(cfg, teacher, student, generator, common):
    return DeepInversionSynthesizer(teacher, student, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh, tv=cfg.tv, l2=cfg.l2,
                                    best_of_steps=cfg.best_of_steps, **_pool(cfg), **common)


@SYNTHESIZERS.register("cmi", generator=True, pool=True)
def _cmi(cfg, teacher, student, generator, common):
    layers = ["layer1", "layer2", "layer3", "layer4"] if cfg.teacher == "resnet34" else None
    return CMISynthesizer(teacher, student, generator, cr=cfg.cr, cr_T=cfg.cr_T, bank_size=cfg.bank_size,
                          n_neg=cfg.n_neg, head_dim=cfg.head_dim, feature_layers=layers, **_inversion(cfg), **common)


def _fast(cfg) -> dict[str, Any]:
    return dict(lr_z=cfg.lr_z, warmup=cfg.warmup, reset_l0=bool(cfg.reset_l0), bn_momentum=cfg.bn_mmt,
                bn_mode="momentum" if cfg.bn_mmt else "deepinv")


@SYNTHESIZERS.register("fast", generator=True, pool=True)
def _fast_plain(cfg, teacher, student, generator, common):
    return FastSynthesizer(teacher, student, generator, **_fast(cfg), **_inversion(cfg), **common)


@SYNTHESIZERS.register("fast_meta", generator=True, pool=True)
def _fast_meta(cfg, teacher, student, generator, common):
    return FastMetaSynthesizer(teacher, student, generator, is_maml=bool(cfg.is_maml), **_fast(cfg),
                               **_inversion(cfg), **common)


@SYNTHESIZERS.register("rgal", generator=True, pool=True)
def _rgal(cfg, teacher, student, generator, common):
    return AdvTripletSynthesizer(teacher, student, generator, triplet=cfg.triplet, triplet_target=cfg.triplet_target,
                                 start_layer=cfg.start_layer, end_layer=cfg.end_layer,
                                 balanced_sampling=cfg.balanced_sampling, triplet_sign=cfg.synthesis_triplet_sign,
                                 balance=cfg.balance, **_inversion(cfg), **common)


def synthesizer_uses_generator(method: str) -> bool:
    return SYNTHESIZERS.meta(method)["generator"]


def build_synthesizer(cfg, teacher: nn.Module, student: nn.Module, *, num_classes: int,
                      shape: tuple[int, int, int], norm, device, world: int, generator: nn.Module | None = None,
                      augment: Augment | None = None):
    """The synthesizer of ``cfg.method`` with the config's hyper-parameters (per-rank batch: global / world).

    ``augment``: the in-domain dataset's training augmentation, ``Augment.from_spec(dataset_spec(cfg.dataset))``,
    for the pool-based synthesizers' pool and kornia views (None: CIFAR's pad 4 + flip; generative ones use none).
    """
    common = dict(num_classes=num_classes, image_shape=shape, mean=norm[0], std=norm[1],
                  batch_size=(cfg.synthesis_batch_size or cfg.batch_size) // world, g_steps=cfg.g_steps,
                  device=device, amp=cfg.amp, channels_last=cfg.channels_last, bn=cfg.bn)
    if augment is not None and SYNTHESIZERS.meta(cfg.method)["pool"]:
        common["augment"] = augment
    return SYNTHESIZERS.get(cfg.method)(cfg, teacher, student, generator, common)
