"""Logit-distillation losses of the SDD line (``reference/sdd.md`` §1–3): KD, DKD, NKD, the scale-decoupled (SPP)
region logits and the SD-KD / SD-DKD / SD-NKD losses built on them.

Conventions (as in ``kd.py``):

- Student logits first, teacher logits second; logits are B×K (class dimension 1), region logits B×K×N.
- Computation runs with autocast off, in float32 (float64 inputs stay float64); nothing synchronises with the host
  and nothing branches on tensor values (only on shapes and hyper-parameters).
- ``reduction="mean"`` is the mean over rows of the per-row loss (Σ_rows / B, mdistiller's "batchmean");
  ``reduction="none"`` returns the B per-row losses.
- The math is written clean: no element of a loss is zeroed where it is NaN, and no NaN/Inf total is replaced by 0
  (the original SDD does both, ``reference/sdd.md`` bug #10). Counting bad steps is the method's job.

Notation: τ temperature, p = softmax(z/τ), g (or y) the target class, ``lse`` = logsumexp over classes.

Scale-decoupled logits (§1.2–1.3): :func:`spp_regions` pools the final feature map F (B×C×H×W) into N = Σ_s s²
regions per scale list, :func:`region_logits` applies the model's own linear head to every region (B×K×N, region 0
= the global region), :func:`sdd_weights` marks each region consistent (1) or complementary (2) from the teacher's
region predictions (§2), and the ``sd_*`` losses average w·ℓ over the N·B region rows.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "WEIGHT_RULES",
    "kd_loss",
    "dkd_loss",
    "nkd_loss",
    "parse_scales",
    "num_regions",
    "spp_regions",
    "region_logits",
    "sdd_weights",
    "sd_kd_loss",
    "sd_dkd_loss",
    "sd_nkd_loss",
]

REDUCTIONS = ("mean", "none")
#: rules for complementary regions (``reference/sdd.md`` §2)
WEIGHT_RULES = ("correctness_xor", "class_agreement")
#: the scales the original SPP computes (every one from its 4×4 grid): the only ones ``legacy_pooling`` accepts
LEGACY_SCALES = (1, 2, 4)


# ------------------------------------------------------------------------------------------------------ helpers
def _no_autocast(t: torch.Tensor) -> AbstractContextManager:
    return torch.autocast(device_type=t.device.type, enabled=False)


def _f(x: torch.Tensor) -> torch.Tensor:
    """float32 for half / bf16 / float32 input; float64 stays float64 (golden tests)."""
    return x if x.dtype == torch.float64 else x.float()


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    return rows if reduction == "none" else rows.mean()


def _target_mask(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """B×K bool, True at each row's target class."""
    return torch.zeros_like(z, dtype=torch.bool).scatter_(1, target.long().view(-1, 1), True)


def _non_target_log_softmax(z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-softmax over the non-target classes with −inf at the target, logsumexp of the non-target logits).

    The target is excluded exactly (its logit set to −inf), the limit of mdistiller's ``z − 1000·onehot`` trick."""
    z_nt = z.masked_fill(mask, float("-inf"))
    lse_nt = torch.logsumexp(z_nt, dim=1, keepdim=True)
    return z_nt - lse_nt, lse_nt


def _kl_rows(log_q: torch.Tensor, log_p: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row Σ_k q_k (log q_k − log p_k) from log-probabilities; entries under ``mask`` (log q = −inf, q = 0)
    contribute exactly 0, also to the gradient."""
    q = log_q.exp()
    if mask is not None:  # mask the logs before any arithmetic: no −inf − (−inf), no 0 · inf, also in backward
        log_q, log_p = log_q.masked_fill(mask, 0.0), log_p.masked_fill(mask, 0.0)
    return (q * (log_q - log_p)).sum(dim=1)


def _region_rows(x: torch.Tensor) -> torch.Tensor:
    """B×K×N → (N·B)×K, region-major rows (rows [nB, (n+1)B) are region n of every sample, §1.3)."""
    b, k, n = x.shape
    return x.permute(2, 0, 1).reshape(n * b, k)


def _check_regions(s: torch.Tensor, t: torch.Tensor) -> None:
    if s.dim() != 3 or s.shape != t.shape:
        raise ValueError(f"region logits must be B×K×N and equal in shape; got student {tuple(s.shape)}, "
                         f"teacher {tuple(t.shape)}")


def _row_weights(weights: torch.Tensor | None, b: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """B×N weights (``None``: all 1) → N·B region-major row weights."""
    if weights is None:
        return torch.ones(n * b, dtype=like.dtype, device=like.device)
    if tuple(weights.shape) != (b, n):
        raise ValueError(f"weights must be B×N = {(b, n)}, got {tuple(weights.shape)}")
    return weights.to(like.dtype).t().reshape(n * b)


# ------------------------------------------------------------------------------------------------ KD, DKD, NKD
def _kd_rows(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    return (T * T) * _kl_rows(F.log_softmax(t / T, dim=1), F.log_softmax(s / T, dim=1))


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float, reduction: str = "mean") -> torch.Tensor:
    """Hinton KD term (mdistiller ``KD``, §3.1), per row::

        ℓ_i = τ² · Σ_k q_ik (log q_ik − log p_ik),   q = softmax(t/τ), p = softmax(s/τ)

    ``"mean"``: Σ_i ℓ_i / B (= ``kldiv(s, t, T)``'s batchmean); ``"none"``: the B values ℓ_i. The CE term and the
    λ weights are the method's."""
    _check_reduction(reduction)
    with _no_autocast(s_logits):
        return _reduce(_kd_rows(_f(s_logits), _f(t_logits), T), reduction)


def _dkd_rows(s: torch.Tensor, t: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
              T: float) -> torch.Tensor:
    if s.shape[1] < 3:
        raise ConfigError(f"DKD needs at least 3 classes (a target and a non-target distribution of ≥ 2 classes); "
                          f"got K = {s.shape[1]}")
    zs, zt = s / T, t / T
    mask = _target_mask(zs, target)
    idx = target.long().view(-1, 1)
    lse_s, lse_t = torch.logsumexp(zs, 1, keepdim=True), torch.logsumexp(zt, 1, keepdim=True)
    log_nt_s, lse_nt_s = _non_target_log_softmax(zs, mask)
    log_nt_t, lse_nt_t = _non_target_log_softmax(zt, mask)
    # binary [target, non-target] log-probabilities: log p_g = z_g − lse, log (1 − p_g) = lse_nt − lse
    log_b_s = torch.cat([zs.gather(1, idx) - lse_s, lse_nt_s - lse_s], dim=1)
    log_b_t = torch.cat([zt.gather(1, idx) - lse_t, lse_nt_t - lse_t], dim=1)
    tckd = _kl_rows(log_b_t, log_b_s)
    nckd = _kl_rows(log_nt_t, log_nt_s, mask)
    return (T * T) * (alpha * tckd + beta * nckd)


def dkd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
             T: float, reduction: str = "mean") -> torch.Tensor:
    """Decoupled KD (mdistiller ``DKD``, §3.3) in a log-space form, per row::

        ℓ_i = τ² · (α · KL(b_t ‖ b_s) + β · KL(p̂_t ‖ p̂_s))

    b = [p_g, 1 − p_g] with p = softmax(z/τ), computed as log p_g = z_g/τ − lse(z/τ) and
    log(1 − p_g) = lse_{k≠g}(z_k/τ) − lse(z/τ) (no log of a sum of probabilities, so no log 0); p̂ = softmax over the
    non-target classes at τ, the target excluded (mdistiller's ``−1000·onehot`` trick is the same to ~1e-6 on
    ordinary logits and stays finite where that one gives inf/NaN). ``"mean"``: Σ_i ℓ_i / B (mdistiller's sums over
    the batch divided by B); ``"none"``: the B values ℓ_i (for SD-DKD). The CE term and the warm-up factor are the
    method's. K < 3 is a ConfigError.
    """
    _check_reduction(reduction)
    with _no_autocast(s_logits):
        return _reduce(_dkd_rows(_f(s_logits), _f(t_logits), target, alpha, beta, T), reduction)


def _nkd_rows(s: torch.Tensor, t: torch.Tensor, target: torch.Tensor, T: float, gamma: float,
              legacy_mask: bool) -> torch.Tensor:
    idx = target.long().view(-1, 1)
    log_s_y = F.log_softmax(s, dim=1).gather(1, idx).squeeze(1)
    t_y = F.softmax(t, dim=1).gather(1, idx).squeeze(1).detach()
    if legacy_mask:  # SDD's mask scatters 1 into ones: every class kept, a full-distribution term at τ
        log_ts, log_ss, mask = F.log_softmax(t / T, dim=1), F.log_softmax(s / T, dim=1), None
    else:
        mask = _target_mask(s, target)
        log_ts, _ = _non_target_log_softmax(t / T, mask)
        log_ss, _ = _non_target_log_softmax(s / T, mask)
    if mask is not None:  # t̃ = 0 at the excluded target; mask log s̃ = −inf there so that no 0 · (−inf) arises
        log_ss = log_ss.masked_fill(mask, 0.0)
    cross = (log_ts.exp() * log_ss).sum(dim=1)
    return -t_y * log_s_y - gamma * (T * T) * cross


def nkd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, target: torch.Tensor, T: float, gamma: float,
             legacy_mask: bool = False, reduction: str = "mean") -> torch.Tensor:
    """Normalized KD (``yzd-v/cls_KD``, §3.5), per row::

        ℓ_i = −t_y · log s_y − γ · τ² · Σ_{k≠y} t̃_k · log s̃_k

    t_y, s_y: target-class probabilities at τ = 1 (t_y detached); t̃, s̃: softmax over the **non-target** logits at
    τ (the target excluded). ``legacy_mask=True`` reproduces SDD's mask bug (§3.6, bug #1): the sum runs over all
    K classes with t̃ = softmax(t/τ), s̃ = softmax(s/τ), a full-distribution cross-entropy. ``"mean"``: Σ_i ℓ_i / B;
    ``"none"``: the B values ℓ_i. (cls_KD's NKD defaults are τ = 1, γ = 1.5.)
    """
    _check_reduction(reduction)
    with _no_autocast(s_logits):
        return _reduce(_nkd_rows(_f(s_logits), _f(t_logits), target, T, gamma, legacy_mask), reduction)


# ------------------------------------------------------------------------------------ scale-decoupled logits
def parse_scales(scales: Sequence[int] | str) -> tuple[int, ...]:
    """The scale list M as a tuple of ints, in the given order (bug #5: the original compares the literal string).

    Accepts a sequence of ints or the string forms ``"[1,2,4]"``, ``"[1, 2, 4]"``, ``"1,2,4"``. Scales are positive,
    distinct, and the first is 1: region 0 is the global region the weights (§2) compare every region with."""
    if isinstance(scales, str):
        text = scales.strip()
        try:
            value = ast.literal_eval(text if text.startswith(("[", "(")) else f"[{text}]")
        except (ValueError, SyntaxError):
            raise ConfigError(f"cannot read the scale list {scales!r}; write it as [1,2,4]") from None
        scales = value if isinstance(value, (list, tuple)) else [value]
    out = tuple(scales)
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in out):
        raise ConfigError(f"scales must be a non-empty list of positive ints, got {list(out)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"scales repeat in {list(out)}")
    if out[0] != 1:
        raise ConfigError(f"the first scale must be 1 (region 0 is the global region), got {list(out)}")
    return out


def num_regions(scales: Sequence[int] | str) -> int:
    """N = Σ_s s²: 21 for [1,2,4], 5 for [1,2], 1 for [1]."""
    return sum(s * s for s in parse_scales(scales))


def spp_regions(feature_map: torch.Tensor, scales: Sequence[int] | str = (1, 2, 4),
                legacy_pooling: bool = False) -> torch.Tensor:
    """Parameter-free multi-scale average pooling of F (B×C×H×W) into B×C×N regions (§1.2).

    For each scale s, in the given order, an s×s grid of average-pooled cells flattened row-major, concatenated along
    the last dim: for [1,2,4], region 0 = the global cell, regions 1–4 the 2×2 grid, 5–20 the 4×4 grid.

    - Default: **every scale is pooled from F directly** (``adaptive_avg_pool2d(F, s)``), so region 0 is the true
      global average and each s×s cell the true mean of its adaptive bin — for the coarse scales too, not only
      region 0 (bug #4: on 7×7 maps the 4×4 bins overlap, so cells pooled from them are biased averages).
    - ``legacy_pooling=True``: the original's pooling — P4 = pool(F → 4×4), and every scale pooled from P4
      (P2 = pool(P4 → 2×2), P1 = pool(P4 → 1×1)) whichever scales are selected; only scales in {1, 2, 4}.

    The two are equal (up to rounding) when H and W are multiples of 4 or H = W = 2 (every CIFAR map).
    """
    scales = parse_scales(scales)
    if legacy_pooling:
        bad = [s for s in scales if s not in LEGACY_SCALES]
        if bad:
            raise ConfigError(f"legacy SPP pooling computes only the scales {list(LEGACY_SCALES)}; got {bad}")
        base = F.adaptive_avg_pool2d(feature_map, 4)
        grids = [base if s == 4 else F.adaptive_avg_pool2d(base, s) for s in scales]
    else:
        grids = [F.adaptive_avg_pool2d(feature_map, s) for s in scales]
    return torch.cat([g.flatten(2) for g in grids], dim=2)


def region_logits(regions: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """The model's own classifier applied to every region: B×C×N → B×K×N (§1.3).

    One matmul over the (N·B)×C region-major rows (rows [nB, (n+1)B) = region n), reshaped N×B×K and permuted to
    B×K×N. An ``nn.Linear`` head is applied functionally with its own weight and bias, so forward hooks on the head
    (e.g. a penultimate-feature tap) do not see the region rows; another module is called on the rows."""
    b, c, n = regions.shape
    rows = regions.permute(2, 0, 1).reshape(n * b, c)
    out = F.linear(rows, head.weight, head.bias) if isinstance(head, nn.Linear) else head(rows)
    return out.reshape(n, b, -1).permute(1, 2, 0)


def sdd_weights(t_region_logits: torch.Tensor, target: torch.Tensor,
                rule: str = "correctness_xor") -> torch.Tensor:
    """Consistent (1) / complementary (2) weights per sample and region, B×N float32, from the teacher only (§2).

    ŷ(b, n) = argmax_k of the teacher's region-n logits, region 0 = global.

    - ``"correctness_xor"`` (the original code): w = 2 where 1[ŷ(b, n) = y_b] ≠ 1[ŷ(b, 0) = y_b] (gt_lw, gw_lt),
      else 1 (gt_lt, gw_lw — "both wrong" is consistent even for different wrong classes).
    - ``"class_agreement"`` (a reading of the paper): w = 2 where ŷ(b, n) ≠ ŷ(b, 0). It differs from the XOR rule
      exactly where global and local are both wrong with different classes.

    Region 0 always gets 1. For the losses' region-major rows use ``w.t().reshape(-1)``."""
    if rule not in WEIGHT_RULES:
        raise ConfigError(f"unknown SDD weight rule {rule!r}; valid: {', '.join(WEIGHT_RULES)}")
    pred = t_region_logits.argmax(dim=1)  # B×N
    if rule == "correctness_xor":
        correct = pred == target.view(-1, 1)
        complementary = correct != correct[:, :1]
    else:
        complementary = pred != pred[:, :1]
    return 1.0 + complementary.float()


def _sd_loss(s_regions: torch.Tensor, t_regions: torch.Tensor, weights: torch.Tensor | None, row_loss) -> torch.Tensor:
    """Σ w · ``row_loss(s_rows, t_rows, N)`` / (N·B) over the region-major rows of B×K×N region logits."""
    _check_regions(s_regions, t_regions)
    b, _, n = s_regions.shape
    with _no_autocast(s_regions):
        rows = row_loss(_f(_region_rows(s_regions)), _f(_region_rows(t_regions)), n)
        return (_row_weights(weights, b, n, rows) * rows).sum() / rows.shape[0]


def sd_kd_loss(s_regions: torch.Tensor, t_regions: torch.Tensor, weights: torch.Tensor | None,
               T: float) -> torch.Tensor:
    """SD-KD (§3.2): L = Σ_{b,n} w(b, n) · ℓ_KD(b, n) / (N·B), with ℓ_KD = :func:`kd_loss`'s per-row term
    τ²·KL(q‖p) on the region-(b, n) logits. ``weights``: B×N from :func:`sdd_weights` (``None``: all 1). With
    scales [1] (N = 1, w = 1) it is ``kd_loss`` on the global logits.

    The original sets NaN elements of the elementwise KL to 0 and replaces a NaN/Inf total by 0; here the math is
    clean and nothing is zeroed (bug #10)."""
    return _sd_loss(s_regions, t_regions, weights, lambda s, t, n: _kd_rows(s, t, T))


def sd_dkd_loss(s_regions: torch.Tensor, t_regions: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None, alpha: float, beta: float, T: float) -> torch.Tensor:
    """SD-DKD (§3.4): L = Σ_{b,n} w(b, n) · ℓ_DKD(b, n) / (N·B), ℓ_DKD = :func:`dkd_loss`'s per-row term on the
    region rows, label y_b for every region of sample b. With scales [1] it is ``dkd_loss`` (mean). The warm-up
    factor and CE are the method's; no NaN is zeroed (bug #10)."""
    return _sd_loss(s_regions, t_regions, weights,
                    lambda s, t, n: _dkd_rows(s, t, target.repeat(n), alpha, beta, T))


def sd_nkd_loss(s_regions: torch.Tensor, t_regions: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None, T: float, gamma: float, legacy_mask: bool = False) -> torch.Tensor:
    """SD-NKD (§3.6): L = Σ_{b,n} w(b, n) · ℓ_NKD(b, n) / (N·B), ℓ_NKD = :func:`nkd_loss`'s per-row term (fixed
    non-target mask, or ``legacy_mask=True`` for SDD's all-class one). The original borrows τ and γ from ``DKD.T`` /
    ``DKD.BETA``; here they are explicit. No NaN is zeroed (bug #10)."""
    return _sd_loss(s_regions, t_regions, weights,
                    lambda s, t, n: _nkd_rows(s, t, target.repeat(n), T, gamma, legacy_mask))
