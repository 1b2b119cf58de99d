"""RGAL's student-phase feature losses: channel distillation (CD) and the "Gram" loss (``rgal.md`` §2.3, §3).

Checked against the original ``Sharpiless/RGAL`` ``losses.py`` (``CDLoss``, ``GRAMLoss``, ``prune_fpgm``) and
``main.py`` (how the adapters are built and trained). Both losses share one set of 1×1 adapters W_b, which map
student block b's channels to teacher block b's channels and are trained by the student's optimiser.

Blocks are paired as Python's ``zip`` pairs them (adapters, student blocks, teacher blocks): the original zips the
teacher's and the student's block lists, so extra blocks on either side are ignored.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kd import _no_autocast

__all__ = ["ChannelAdapters", "cd_loss", "gram_loss", "gram_channel_weights"]


class ChannelAdapters(nn.Module):
    """One ``Conv2d(C_s, C_t, kernel_size=1, bias=True)`` per (student, teacher) block pair, in ``self.adapters``
    (an ``nn.ModuleList``; state-dict keys ``adapters.{b}.weight`` (C_t×C_s×1×1) and ``adapters.{b}.bias``).

    Default PyTorch initialisation, as the original (``nn.Conv2d(s.size(1), t.size(1), 1)`` built from a dummy
    forward in ``main.py``). The original kept them in a bare ``nn.ModuleList`` shared by ``CDLoss``/``GRAMLoss``
    (as their ``linears`` attribute) and never saved them (``rgal.md`` §8 #7), so there is no checkpoint layout to
    match; save this module with the student.

    ``forward(s_blocks)`` applies W_b to each 4-D student block and returns the list of mapped maps.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(
            nn.Conv2d(cs, ct, kernel_size=1, bias=True) for cs, ct in zip(student_channels, teacher_channels)
        )

    def __len__(self) -> int:
        return len(self.adapters)

    def forward(self, s_blocks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(s) for conv, s in zip(self.adapters, s_blocks)]


def _convs(adapters: ChannelAdapters | Iterable[nn.Conv2d | None]) -> list[nn.Conv2d | None]:
    return list(adapters.adapters if isinstance(adapters, ChannelAdapters) else adapters)


def _gap(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x


def cd_loss(adapters: ChannelAdapters | Iterable[nn.Conv2d | None], s_blocks: Sequence[torch.Tensor],
            t_blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Channel-distillation loss, summed over block pairs, MSE averaged over B×C_t within a block::

        L_CD = Σ_b (1/(B·C_t)) Σ_{i,c} ( GAP(W_b ∗ s_b)_{ic} − GAP(t_b)_{ic} )²

    Computed on pooled features: for a 1×1 convolution GAP(W ∗ s) = W·GAP(s) + bias exactly, so the student map is
    pooled first and mapped with a B×C_s by C_s×C_t product (the original convolved the full map, then pooled).
    Blocks may be 4-D maps or already pooled B×C; an adapter entry of ``None`` means identity (as the original's
    ``linears[i] is None``). The weight ``--cd_loss`` (0.1 in the README) is applied by the caller. Float32.
    """
    total = None
    for conv, s, t in zip(_convs(adapters), s_blocks, t_blocks):
        with _no_autocast(s):
            s_pooled = _gap(s)
            if conv is not None:
                w = conv.weight.float().reshape(conv.weight.shape[0], -1)
                b = conv.bias.float() if conv.bias is not None else None
                s_pooled = F.linear(s_pooled, w, b)
            term = F.mse_loss(s_pooled, _gap(t))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("cd_loss needs at least one (adapter, student block, teacher block) triple")
    return total


def gram_channel_weights(t: torch.Tensor) -> torch.Tensor:
    """RGAL's channel weights for the Gram loss (its ``prune_fpgm``), B×C, detached.

    With F_i the C×HW matrix of teacher sample i, G_i = F_i F_iᵀ (C×C Gram) and its row sums
    A_ic = Σ_c' (G_i)_{cc'} = Σ_hw t_{ic,hw} · Σ_c' t_{ic',hw} (computed this way, without forming G)::

        m_ic = 1 − (A_ic − min A)/(max A − min A) + 1e-3          (min, max over the whole B×C matrix)

    Channels with a small Gram row sum get weights near 1.001, the largest ones 0.001. If max A = min A (the
    original divides 0 by 0 and returns NaN) every weight is 1.001.
    """
    with torch.no_grad(), _no_autocast(t):
        t = t.detach().float()
        a = (t * t.sum(dim=1, keepdim=True)).sum(dim=tuple(range(2, t.dim())))
        lo, hi = a.min(), a.max()
        span = hi - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        return 1.0 - (a - lo) / span + 1e-3


def gram_loss(adapters: ChannelAdapters | Iterable[nn.Conv2d | None], s_blocks: Sequence[torch.Tensor],
              t_blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """RGAL's "Gram" loss (``GRAMLoss``, weight ``--gram_loss``, 0 in the README command), summed over blocks::

        L_GR = Σ_b (1/(B·C_t·H·W)) Σ_{i,c,h,w} m^b_ic · ( (W_b ∗ s_b)_{ic,hw} − t_b,{ic,hw} )²

    i.e. a channel-weighted MSE between the adapted student map and the teacher map, with the weights m^b from the
    teacher's Gram matrices (:func:`gram_channel_weights`). The Gram matrix only enters through these weights; it is
    not the style-transfer Gram-matrix MSE. Blocks must be 4-D with equal spatial sizes per pair; the adapter
    (1×1 conv, ``None`` = identity) runs on the full map. Float32.
    """
    total = None
    for conv, s, t in zip(_convs(adapters), s_blocks, t_blocks):
        if s.dim() != 4 or t.dim() != 4:
            raise ValueError("gram_loss needs 4-D student and teacher block maps (B x C x H x W)")
        m = gram_channel_weights(t)
        with _no_autocast(s):
            s = s.float()
            if conv is not None:
                s = F.conv2d(s, conv.weight.float(), None if conv.bias is None else conv.bias.float())
            term = ((s - t.float()).pow(2) * m[:, :, None, None]).mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("gram_loss needs at least one (adapter, student block, teacher block) triple")
    return total
