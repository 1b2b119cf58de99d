"""Loss library of the data-free methods (``reference/datafree_engine.md`` §2, ``reference/rgal.md`` §2.3-2.4) and of
the SDD line (``reference/sdd.md`` §1-3: KD, DKD, NKD and their scale-decoupled forms).

Every function documents its formula and reduction; all of them compute in float32 (even under bf16 autocast),
are device-agnostic and do not synchronise with the host (``sample_triplets``/``triplet_loss`` wait once for the
data-dependent number of triplets).

Front doors: ``get_loss("kldiv")`` returns the function, ``list_losses()`` the registered names.

| module | contents |
|---|---|
| ``kd`` | ``kldiv``, ``l1_discrepancy``, ``jsdiv``, ``onehot_ce``, ``class_balance``, ``activation_loss``, ``adversarial_kl``, ``adversarial_masked``, ``tv_prior``, ``l2_prior`` |
| ``bn`` | ``batch_mean_var``, ``bn_layer_loss``, ``bn_momentum_blend``, ``bn_ema_update``, ``bn_global_loss`` |
| ``contrastive`` | ``ProjectionHead``, ``MemoryBank``, ``cmi_contrastive_loss`` |
| ``triplet`` | ``pairwise_distances``, ``negative_log_weights``, ``negative_weights``, ``sample_triplets``, ``triplet_loss``, ``triplet_loss_with_count`` |
| ``channel`` | ``ChannelAdapters``, ``cd_loss``, ``gram_loss``, ``gram_channel_weights`` |
| ``gan`` | ``patch_d_loss``, ``patch_g_loss``, ``entropy`` (MosaicKD) |
| ``logit`` | ``kd_loss``, ``dkd_loss``, ``nkd_loss``, ``sd_kd_loss``, ``sd_dkd_loss``, ``sd_nkd_loss``; SPP helpers ``parse_scales``, ``num_regions``, ``spp_regions``, ``region_logits``, ``sdd_weights`` (SDD) |
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .bn import (
    batch_mean_var,
    bn_ema_update,
    bn_global_loss,
    bn_layer_loss,
    bn_momentum_blend,
)
from .channel import ChannelAdapters, cd_loss, gram_channel_weights, gram_loss
from .contrastive import MemoryBank, ProjectionHead, cmi_contrastive_loss
from .gan import entropy, patch_d_loss, patch_g_loss
from .kd import (
    activation_loss,
    adversarial_kl,
    adversarial_masked,
    class_balance,
    jsdiv,
    kldiv,
    l1_discrepancy,
    l2_prior,
    onehot_ce,
    tv_prior,
)
from .logit import (
    dkd_loss,
    kd_loss,
    nkd_loss,
    num_regions,
    parse_scales,
    region_logits,
    sd_dkd_loss,
    sd_kd_loss,
    sd_nkd_loss,
    sdd_weights,
    spp_regions,
)
from .triplet import (
    SAMPLERS,
    negative_log_weights,
    negative_weights,
    pairwise_distances,
    sample_triplets,
    triplet_loss,
    triplet_loss_with_count,
)

LOSSES = Registry("loss")

# name -> (function, aliases, group)
_ENTRIES: tuple[tuple[str, Callable[..., Any], tuple[str, ...], str], ...] = (
    ("kldiv", kldiv, ("kl",), "logits"),
    ("l1_discrepancy", l1_discrepancy, ("l1",), "logits"),
    ("jsdiv", jsdiv, ("js",), "logits"),
    ("onehot_ce", onehot_ce, ("oh",), "logits"),
    ("class_balance", class_balance, ("balance",), "logits"),
    ("activation_loss", activation_loss, ("act",), "features"),
    ("adversarial_kl", adversarial_kl, (), "logits"),
    ("adversarial_masked", adversarial_masked, (), "logits"),
    ("tv_prior", tv_prior, ("tv",), "image"),
    ("l2_prior", l2_prior, (), "image"),
    ("bn_layer_loss", bn_layer_loss, ("bn",), "bn"),
    ("bn_global_loss", bn_global_loss, (), "bn"),
    ("cmi_contrastive_loss", cmi_contrastive_loss, ("cr", "infonce"), "contrastive"),
    ("triplet_loss", triplet_loss, ("triplet",), "relation"),
    ("cd_loss", cd_loss, ("cd",), "features"),
    ("gram_loss", gram_loss, ("gram",), "features"),
    ("patch_d_loss", patch_d_loss, ("patch_gan_d",), "gan"),
    ("patch_g_loss", patch_g_loss, ("patch_gan_g", "local"), "gan"),
    ("entropy", entropy, ("align",), "logits"),
    ("kd", kd_loss, ("kd_loss",), "logits"),
    ("dkd", dkd_loss, ("dkd_loss",), "logits"),
    ("nkd", nkd_loss, ("nkd_loss",), "logits"),
    ("sd_kd", sd_kd_loss, ("sdd_kd", "sd_kd_loss"), "sdd"),
    ("sd_dkd", sd_dkd_loss, ("sdd_dkd", "sd_dkd_loss"), "sdd"),
    ("sd_nkd", sd_nkd_loss, ("sdd_nkd", "sd_nkd_loss"), "sdd"),
)
for _name, _fn, _aliases, _group in _ENTRIES:
    LOSSES.add(_name, _fn, aliases=_aliases, group=_group)
del _name, _fn, _aliases, _group


def get_loss(name: str) -> Callable[..., Any]:
    """The loss function registered as ``name`` (or an alias); an unknown name raises a ``ConfigError`` that lists
    the valid ones."""
    return LOSSES.get(name)


def list_losses(include_aliases: bool = False) -> list[str]:
    """Sorted names of the registered losses."""
    return LOSSES.names(include_aliases=include_aliases)


__all__ = [
    "LOSSES",
    "get_loss",
    "list_losses",
    # kd
    "kldiv",
    "l1_discrepancy",
    "jsdiv",
    "onehot_ce",
    "class_balance",
    "activation_loss",
    "adversarial_kl",
    "adversarial_masked",
    "tv_prior",
    "l2_prior",
    # bn
    "batch_mean_var",
    "bn_layer_loss",
    "bn_momentum_blend",
    "bn_ema_update",
    "bn_global_loss",
    # contrastive
    "ProjectionHead",
    "MemoryBank",
    "cmi_contrastive_loss",
    # triplet
    "SAMPLERS",
    "pairwise_distances",
    "negative_log_weights",
    "negative_weights",
    "sample_triplets",
    "triplet_loss",
    "triplet_loss_with_count",
    # channel
    "ChannelAdapters",
    "cd_loss",
    "gram_loss",
    "gram_channel_weights",
    # logit (SDD line)
    "kd_loss",
    "dkd_loss",
    "nkd_loss",
    "sd_kd_loss",
    "sd_dkd_loss",
    "sd_nkd_loss",
    "parse_scales",
    "num_regions",
    "spp_regions",
    "region_logits",
    "sdd_weights",
]
