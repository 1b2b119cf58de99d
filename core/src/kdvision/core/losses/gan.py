"""Patch-GAN and label-space losses of MosaicKD (``reference/mosaickd.md`` §2, §10).

The patch discriminator D maps an image to a map of logits, one per patch (8×8 for 32×32 inputs). With
BCE(l, y) = binary cross-entropy with logits, summed over the patches of an image:

- :func:`patch_d_loss`: L_D = [Σ_i BCE(D(x̂_i), 0) + Σ_i BCE(D(x'_i), 1)] / (B_fake + B_real): the mean over every
  image of its per-image sum of patch terms, fakes labelled 0, real (OOD) images 1. MosaicKD multiplies it by
  ``local``.
- :func:`patch_g_loss`: L_local = Σ_i BCE(D(x̂_i), 1) / B: the generator's local-authenticity term (Eq. 3).
- :func:`entropy`: L_align = (1/B) Σ_i H(softmax(t_i)), H the Shannon entropy with the natural log (Eq. 4).

All three compute in float32 and never synchronise with the host.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce_sum(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="sum")


def patch_d_loss(d_fake: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: per-image sums of patch BCE terms (fake → 0, real → 1), averaged over all images."""
    return (_bce_sum(d_fake, 0.0) + _bce_sum(d_real, 1.0)) / (d_fake.shape[0] + d_real.shape[0])


def patch_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator local-authenticity loss: per-image sums of patch BCE terms against "real", averaged over B."""
    return _bce_sum(d_fake, 1.0) / d_fake.shape[0]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (natural log) of softmax(logits) over the batch; 0·log 0 = 0."""
    logits = logits.float()
    return -(F.softmax(logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
