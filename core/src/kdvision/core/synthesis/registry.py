"""Synthesizers by name: the data-free methods' image sources, built from a data-free config.

``build_synthesizer(cfg, ...)`` looks the method up in :data:`SYNTHESIZERS`; each builder passes every
hyper-parameter from the config explicitly: the constructors have no defaults for hyper-parameters (they are
required keywords), so the config and its presets are their one home. Each entry's metadata names the class it
builds (``cls``), the generator it needs (``generator``) and whether it fills an image pool (``pool``).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..registry import Registry
from .augment import Augment
from .generative import GenerativeSynthesizer
from .inversion import CMISynthesizer, DeepInversionSynthesizer, FastMetaSynthesizer, FastSynthesizer
from .rgal import AdvTripletSynthesizer

SYNTHESIZERS = Registry("synthesizer")  # meta: generator (needs one), pool (pool-based), cls (the class built)


def _generative(adv_loss: str):
    def build(cfg, teacher, student, generator, common, augment):  # no augmentation: fresh G(z) batches
        return GenerativeSynthesizer(teacher, student, generator, nz=cfg.nz, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh,
                                     act=cfg.act, balance=cfg.balance, balance_base=cfg.balance_base,
                                     adv_loss=adv_loss, **common)
    return build


for _name in ("dafl", "zskt", "dfq"):
    SYNTHESIZERS.add(_name, _generative("kl"), generator=True, pool=False, cls=GenerativeSynthesizer)
SYNTHESIZERS.add("dfad", _generative("l1"), generator=True, pool=False, cls=GenerativeSynthesizer)


def _pool(cfg, augment: Augment) -> dict[str, Any]:
    return dict(pool_dtype=cfg.pool_dtype, pair_sample=cfg.pair_sample, augment=augment)


def _inversion(cfg, augment: Augment, *, lr_z: float | None) -> dict[str, Any]:
    """The generator-inversion arguments; ``lr_z=None``: z shares ``lr_g`` (CMI's and RGAL's single Adam group)."""
    return dict(nz=cfg.nz, lr_g=cfg.lr_g, lr_z=lr_z, adv=cfg.adv, oh=cfg.oh, **_pool(cfg, augment))


@SYNTHESIZERS.register("deepinv", generator=False, pool=True, cls=DeepInversionSynthesizer)
def _deepinv(cfg, teacher, student, generator, common, augment):
    return DeepInversionSynthesizer(teacher, student, lr_g=cfg.lr_g, adv=cfg.adv, oh=cfg.oh, tv=cfg.tv, l2=cfg.l2,
                                    jitter=cfg.jitter, best_of_steps=cfg.best_of_steps, **_pool(cfg, augment),
                                    **common)


@SYNTHESIZERS.register("cmi", generator=True, pool=True, cls=CMISynthesizer)
def _cmi(cfg, teacher, student, generator, common, augment):
    layers = ["layer1", "layer2", "layer3", "layer4"] if cfg.teacher == "resnet34" else None
    return CMISynthesizer(teacher, student, generator, cr=cfg.cr, cr_T=cfg.cr_T, bank_size=cfg.bank_size,
                          n_neg=cfg.n_neg, head_dim=cfg.head_dim, feature_layers=layers,
                          **_inversion(cfg, augment, lr_z=None), **common)


def _fast(cfg, augment: Augment) -> dict[str, Any]:
    return dict(warmup=cfg.warmup, reset_l0=bool(cfg.reset_l0), **_inversion(cfg, augment, lr_z=cfg.lr_z))


@SYNTHESIZERS.register("fast", generator=True, pool=True, cls=FastSynthesizer)
def _fast_plain(cfg, teacher, student, generator, common, augment):
    return FastSynthesizer(teacher, student, generator, **_fast(cfg, augment), **common)


@SYNTHESIZERS.register("fast_meta", generator=True, pool=True, cls=FastMetaSynthesizer)
def _fast_meta(cfg, teacher, student, generator, common, augment):
    return FastMetaSynthesizer(teacher, student, generator, is_maml=bool(cfg.is_maml),
                               reptile_scale=cfg.reptile_scale, **_fast(cfg, augment), **common)


@SYNTHESIZERS.register("rgal", generator=True, pool=True, cls=AdvTripletSynthesizer)
def _rgal(cfg, teacher, student, generator, common, augment):
    return AdvTripletSynthesizer(teacher, student, generator, triplet=cfg.triplet, triplet_target=cfg.triplet_target,
                                 start_layer=cfg.start_layer, end_layer=cfg.end_layer,
                                 balanced_sampling=cfg.balanced_sampling, triplet_sign=cfg.synthesis_triplet_sign,
                                 balance=cfg.balance, **_inversion(cfg, augment, lr_z=None), **common)


def synthesizer_uses_generator(method: str) -> bool:
    return SYNTHESIZERS.meta(method)["generator"]


def build_synthesizer(cfg, teacher: nn.Module, student: nn.Module, *, num_classes: int,
                      shape: tuple[int, int, int], norm, device, world: int, augment: Augment,
                      generator: nn.Module | None = None):
    """The synthesizer of ``cfg.method`` with the config's hyper-parameters (per-rank batch: global / world).

    ``augment``: the in-domain dataset's training augmentation, ``Augment.from_spec(dataset_spec(cfg.dataset))``,
    for the pool-based synthesizers' pool and kornia views (the generative ones use none).
    BN-statistics loss: the momentum form (Fast) when ``bn_mmt`` > 0 for ``fast`` / ``fast_meta``, the
    DeepInversion form otherwise.
    """
    momentum_bn = issubclass(SYNTHESIZERS.meta(cfg.method)["cls"], FastSynthesizer) and cfg.bn_mmt > 0
    common = dict(num_classes=num_classes, image_shape=shape, mean=norm[0], std=norm[1],
                  batch_size=(cfg.synthesis_batch_size or cfg.batch_size) // world, g_steps=cfg.g_steps,
                  device=device, amp=cfg.amp, channels_last=cfg.channels_last, bn=cfg.bn,
                  bn_mode="momentum" if momentum_bn else "deepinv", bn_momentum=cfg.bn_mmt)
    return SYNTHESIZERS.get(cfg.method)(cfg, teacher, student, generator, common, augment)
