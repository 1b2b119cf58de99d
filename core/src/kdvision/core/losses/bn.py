"""BatchNorm-statistics losses (``datafree_engine.md`` §2-3), as pure functions of statistics.

The forward hooks that collect the statistics live elsewhere and call these functions; nothing here keeps state.
All results are float32 (inputs are cast with ``.float()``); nothing synchronises with the host.

Three forms, which golden tests pin down:

- DeepInversion form (CMI, DeepInversion, RGAL, generative baselines): per layer l,
  r_l = ‖σ²_l − σ̂²_l‖₂ + ‖μ_l − μ̂_l‖₂ with the **biased** batch variance; the caller sums r_l over layers.
- Momentum form (Fast): the same with μ_l, σ²_l replaced by the blend with an EMA of earlier batches.
- Global-norm form (MosaicKD's DFQ): one L2 norm over all layers concatenated, with **unbiased** variances.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "batch_mean_var",
    "bn_layer_loss",
    "bn_momentum_blend",
    "bn_ema_update",
    "bn_global_loss",
]


def batch_mean_var(x: torch.Tensor, unbiased: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance of a B×C×H×W (or B×C, or B×C×…) tensor over every dim but the channel dim 1.

    μ_c = (1/n) Σ x_{·c·},  σ²_c = (1/(n − u)) Σ (x_{·c·} − μ_c)²,  n = B·H·W,  u = 1 if ``unbiased`` else 0.

    Returns ``(mean, var)``, each of shape C, float32. The DeepInversion hook uses the biased form (u = 0), the
    MosaicKD mean/var hook the unbiased one (u = 1).
    """
    dims = (0, *range(2, x.dim()))
    var, mean = torch.var_mean(x.float(), dim=dims, correction=1 if unbiased else 0)
    return mean, var


def bn_layer_loss(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor,
                  running_var: torch.Tensor) -> torch.Tensor:
    """DeepInversion BN loss of **one** layer: r = ‖σ² − σ̂²‖₂ + ‖μ − μ̂‖₂ (two L2 norms over the C channels).

    ``mean``/``var``: the batch statistics of the layer **input** (biased variance in every original script);
    ``running_mean``/``running_var``: the layer's running statistics μ̂, σ̂². L_BN = Σ_l r_l over every BN layer.
    """
    return (torch.linalg.vector_norm(var.float() - running_var.float())
            + torch.linalg.vector_norm(mean.float() - running_mean.float()))


def bn_momentum_blend(mean: torch.Tensor, var: torch.Tensor, ema_mean: torch.Tensor | None,
                      ema_var: torch.Tensor | None, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast's momentum blend of the current batch statistics with their EMA over earlier batches::

        μ' = (1 − m)·μ + m·μ̄,   σ²' = (1 − m)·σ² + m·σ̄²      (m = ``bn_mmt`` = 0.9 in Fast's scripts)

    The momentum BN loss is :func:`bn_layer_loss` (μ', σ²', μ̂, σ̂²) — Fast-Datafree's ``DeepInversionHook`` computes
    ‖σ̂² − (1 − m)σ² − m·σ̄²‖₂ + ‖μ̂ − (1 − m)μ − m·μ̄‖₂. Before the first EMA exists (``ema_mean is None``) the inputs
    are returned unchanged (plain DeepInversion form). Gradients flow through μ and σ² only: the EMA produced by
    :func:`bn_ema_update` is detached.
    """
    if ema_mean is None or ema_var is None:
        return mean, var
    return ((1.0 - momentum) * mean.float() + momentum * ema_mean.float(),
            (1.0 - momentum) * var.float() + momentum * ema_var.float())


def bn_ema_update(ema_mean: torch.Tensor | None, ema_var: torch.Tensor | None, mean: torch.Tensor,
                  var: torch.Tensor, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EMA update of Fast's BN statistics, called once per ``synthesize()`` with the statistics of the **last**
    inner step (Fast-Datafree ``DeepInversionHook.update_mmt``)::

        first call (no EMA yet):  μ̄ ← μ,                      σ̄² ← σ²
        afterwards:               μ̄ ← m·μ̄ + (1 − m)·μ,        σ̄² ← m·σ̄² + (1 − m)·σ²

    The new batch enters with weight 1 − m (0.1 for m = 0.9), the same convention as the blend. μ and σ² are the
    plain (biased) batch statistics of that step, not the blended ones, and are detached (the original stores
    ``.data``). Returns new float32 tensors ``(ema_mean, ema_var)``.
    """
    mean, var = mean.detach().float(), var.detach().float()
    if ema_mean is None or ema_var is None:
        return mean.clone(), var.clone()
    return (momentum * ema_mean.float() + (1.0 - momentum) * mean,
            momentum * ema_var.float() + (1.0 - momentum) * var)


def bn_global_loss(means: Sequence[torch.Tensor], vars: Sequence[torch.Tensor],
                   running_means: Sequence[torch.Tensor], running_vars: Sequence[torch.Tensor]) -> torch.Tensor:
    """MosaicKD-DFQ BN loss: **one** L2 norm over all layers concatenated::

        L = ‖cat_l μ_l − cat_l μ̂_l‖₂ + ‖cat_l σ²_l − cat_l σ̂²_l‖₂

    The lists run over the BN layers in module order; the caller passes **unbiased** batch variances
    (:func:`batch_mean_var` with ``unbiased=True``), as the original's mean/var hook does. Unlike Σ_l r_l of
    :func:`bn_layer_loss`, the norm is taken once over the concatenation (√(Σ_l ‖·‖²) rather than Σ_l ‖·‖).
    """
    mu = torch.cat([m.float().reshape(-1) for m in means])
    mu_hat = torch.cat([m.float().reshape(-1) for m in running_means])
    var = torch.cat([v.float().reshape(-1) for v in vars])
    var_hat = torch.cat([v.float().reshape(-1) for v in running_vars])
    return torch.linalg.vector_norm(mu - mu_hat) + torch.linalg.vector_norm(var - var_hat)
