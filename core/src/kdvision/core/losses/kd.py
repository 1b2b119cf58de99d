"""Logit, activation and image-prior losses of the data-free engine (``datafree_engine.md`` §2).

Conventions shared by every function here:

- Student logits come first, teacher logits second (``kldiv(s, t)``), as in the engine's criterions.
- Inputs are cast to float32 (``.float()``) and the reductions run in float32 even under bf16 autocast.
- Everything is torch-only and device-agnostic; nothing synchronises with the host.

Notation: B batch size, K classes, τ temperature, softmax over the class dimension (dim 1).
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
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
]

_KL_REDUCTIONS = ("batchmean", "sum", "mean", "none")


def _no_autocast(t: torch.Tensor) -> AbstractContextManager:
    """Context that turns autocast off on ``t``'s device, so matmuls inside really run in float32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def kldiv(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float = 1.0, reduction: str = "batchmean") -> torch.Tensor:
    """Distillation KL divergence KL_τ(p_T ‖ p_S), student logits first.

    Elementwise term (B×K), already multiplied by τ²::

        e_ic = τ² · q_ic · (log q_ic − log p_ic),   q = softmax(t/τ), p = softmax(s/τ)

    Reduction: ``"batchmean"`` = Σ_ic e_ic / B (the engine's ``KLDiv``); ``"sum"`` = Σ_ic e_ic;
    ``"mean"`` = Σ_ic e_ic / (B·K); ``"none"`` = the B×K matrix e.
    """
    if reduction not in _KL_REDUCTIONS:
        raise ConfigError(f"unknown kldiv reduction {reduction!r}; valid: {', '.join(_KL_REDUCTIONS)}")
    log_p = F.log_softmax(s_logits.float() / T, dim=1)
    q = F.softmax(t_logits.float() / T, dim=1)
    terms = F.kl_div(log_p, q, reduction="none") * (T * T)  # q·(log q − log p), 0 where q == 0
    if reduction == "none":
        return terms
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        return terms.mean()
    return terms.sum() / terms.shape[0]


def l1_discrepancy(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """DFAD discrepancy: mean |s − t| over **every** element (B×K; B×K×H×W for segmentation).

    Note the reduction differs from :func:`kldiv`'s batchmean: here the sum is divided by B·K.
    """
    return (s_logits.float() - t_logits.float()).abs().mean()


def jsdiv(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float = 3.0, form: str = "code") -> torch.Tensor:
    """Jensen–Shannon-style divergence used by the DeepInversion synthesizer (τ = 3), batch mean.

    P = softmax(s/τ) (student, the **first** argument), Q = softmax(t/τ) (teacher, the second), as in the
    engine's ``DeepInvSyntheiszer``, which calls ``jsdiv(s_out, t_out, T=3)``; both forms are symmetric in P and Q,
    so the order does not change the value. M = (P + Q)/2 is formed from the unclamped P and Q; then P, Q and M are
    each clamped to [0.01, 0.99] before the logs. With clamped P, Q, M:

    - ``form="code"`` (default, what the original engine computes and what produced the published numbers —
      its ``F.kl_div(log P, M)`` is KL(M‖P), not KL(P‖M))::

          JS = (1/B) Σ_i [ ½ Σ_c M_ic log(M_ic/P_ic) + ½ Σ_c M_ic log(M_ic/Q_ic) ]

    - ``form="spec"`` (the textbook direction written in ``datafree_engine.md`` §2)::

          JS = (1/B) Σ_i [ ½ Σ_c P_ic log(P_ic/M_ic) + ½ Σ_c Q_ic log(Q_ic/M_ic) ]
    """
    P = F.softmax(s_logits.float() / T, dim=1)
    Q = F.softmax(t_logits.float() / T, dim=1)
    M = 0.5 * (P + Q)
    P, Q, M = P.clamp(0.01, 0.99), Q.clamp(0.01, 0.99), M.clamp(0.01, 0.99)
    log_p, log_q, log_m = P.log(), Q.log(), M.log()
    if form == "code":
        terms = 0.5 * M * (log_m - log_p) + 0.5 * M * (log_m - log_q)
    elif form == "spec":
        terms = 0.5 * P * (log_p - log_m) + 0.5 * Q * (log_q - log_m)
    else:
        raise ConfigError(f"unknown jsdiv form {form!r}; valid: code, spec")
    return terms.sum() / terms.shape[0]


def onehot_ce(t_logits: torch.Tensor) -> torch.Tensor:
    """Pseudo-label cross-entropy: CE(t, argmax t) = −(1/B) Σ_i log softmax(t_i)[argmax t_i] (mean over B)."""
    t = t_logits.float()
    return F.cross_entropy(t, t.argmax(dim=1))


def _log_base(base: str | int | float) -> float:
    if base in ("e", math.e):
        return 1.0
    try:
        value = float(base)
    except (TypeError, ValueError):
        value = -1.0
    if value in (2.0, 10.0):
        return math.log(value)
    raise ConfigError(f"unknown class_balance log base {base!r}; valid: 'e', 2, 10")


def class_balance(logits: torch.Tensor, base: str | int | float = "e") -> torch.Tensor:
    """Class-balance (negative information entropy) term L_bal = Σ_c p̄_c · log_base p̄_c.

    p̄ = (1/B) Σ_i softmax(logits_i) is the batch-mean prediction; minimising L_bal maximises the entropy of p̄.
    ``base``: ``"e"`` (natural log, the engine's ``balance``), ``2`` (MosaicKD's ``balance``), ``10`` (MosaicKD-DFQ's
    ``ie``); the strings ``"2"``/``"10"`` are accepted. p̄_c·log p̄_c is computed with ``xlogy`` (0·log 0 = 0), and
    for bases 2 and 10 with ``log2``/``log10`` directly, as the originals: identical to them wherever they are finite
    (the same rounding, which matters where Adam normalises a near-zero gradient).
    """
    scale = _log_base(base)
    p_bar = F.softmax(logits.float(), dim=1).mean(dim=0)
    if scale == 1.0:
        return torch.xlogy(p_bar, p_bar).sum()
    log = torch.log2 if scale == math.log(2.0) else torch.log10
    return torch.where(p_bar > 0, p_bar * log(p_bar), torch.zeros_like(p_bar)).sum()


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL activation term L_act = −mean |f| over every element of the (pooled) teacher feature."""
    return -features.float().abs().mean()


def adversarial_kl(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """Plain adversarial term L_adv = −KL_1(p_T ‖ p_S) = −:func:`kldiv` (s, t, T=1), batchmean."""
    return -kldiv(s_logits, t_logits, T=1.0)


def adversarial_masked(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """Masked ("decision") adversarial term of CMI, Fast and RGAL::

        L = −(1/B) Σ_i 1[argmax s_i = argmax t_i] · Σ_c q_ic (log q_ic − log p_ic),   τ = 1

    The per-sample KL is masked by the agreement of student and teacher and averaged over **all** B samples
    (disagreeing samples count as zeros). 0 when S and T disagree everywhere; −mean KL when they agree everywhere.
    """
    per_sample = kldiv(s_logits, t_logits, T=1.0, reduction="none").sum(dim=1)
    mask = (s_logits.argmax(dim=1) == t_logits.argmax(dim=1)).float()
    return -(per_sample * mask).mean()


def _tv_diffs(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (
        x[:, :, :, :-1] - x[:, :, :, 1:],  # horizontal neighbours
        x[:, :, :-1, :] - x[:, :, 1:, :],  # vertical neighbours
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],  # anti-diagonal: (h+1, w) vs (h, w+1)
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],  # diagonal: (h, w) vs (h+1, w+1)
    )


def tv_prior(x: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """Total-variation image prior over the 4 neighbour directions of a B×C×H×W batch.

    With d_1 = x[..., h, w] − x[..., h, w+1], d_2 = x[..., h, w] − x[..., h+1, w],
    d_3 = x[..., h+1, w] − x[..., h, w+1], d_4 = x[..., h, w] − x[..., h+1, w+1]:

    - ``norm="l1"`` (default): Σ_k mean |d_k| — each direction averaged over its own element count. This is the
      one value the CMI engine's ``get_image_prior_losses`` returns (its ``/255 … ·255`` is an identity) and the
      term DeepInversion runs with weight 0.001 in the CMI scripts.
    - ``norm="l2"``: Σ_k ‖d_k‖₂ — the second value of NVlabs DeepInversion's function, unused by CMI.
    """
    diffs = _tv_diffs(x.float())
    if norm == "l1":
        return sum(d.abs().mean() for d in diffs)
    if norm == "l2":
        return sum(torch.linalg.vector_norm(d) for d in diffs)
    raise ConfigError(f"unknown tv_prior norm {norm!r}; valid: l1, l2")


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """L2 image prior ‖x‖₂: the Frobenius norm of the **whole batch** (sqrt of Σ over every element of x²), as the
    original's ``torch.norm(inputs, 2)``; weight 0 in every published script."""
    return torch.linalg.vector_norm(x.float())
