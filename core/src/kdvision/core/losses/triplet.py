"""RGAL's triplet loss with distance-weighted and balanced negative sampling (``rgal.md`` §2.4).

Checked against the original ``Sharpiless/RGAL`` ``losses.py`` (``pdist``, ``pos_neg_mask``,
``DistanceWeighted``, ``BalancedWeighted``, ``TriLoss``). The sampling weights follow Wu et al., "Sampling Matters
in Deep Embedding Learning": for unit vectors in ℝ^d the pairwise distance δ has density
q(δ) ∝ δ^{d−2} (1 − δ²/4)^{(d−3)/2}, and negatives are drawn with weight w(δ) ∝ 1/q(δ).

Pipeline (same order as the original samplers):

1. Ê = E/‖E‖ row-wise; δ_ij = sqrt(max(‖Ê_i‖² + ‖Ê_j‖² − 2 Ê_i·Ê_j, 1e-12)) off the diagonal and δ_ii = 1 (the
   original zeroes the squared diagonal and adds the identity before the sqrt, to keep sqrt away from 0).
2. log w_ij = (2 − d)·log δ_ij − ((d − 3)/2)·log(1 − δ_ij²/4), with δ clamped to ≥ 0.5 first for "distance".
3. w_ij = exp(log w_ij − max_j' log w_ij') (max over the **whole** row: diagonal, positives and negatives).
4. w_ij ← w_ij · 1[y_j ≠ y_i, j ≠ i] · 1[allowed(δ_ij)]: "distance" δ < 1.4 (on the clamped δ), "balanced"
   0.5 < δ < 1.0.
5. Rows with no surviving weight fall back to 1 on every negative; rows are normalised to sum 1.
6. One negative per ordered positive pair (a, p), a ≠ p, y_a = y_p, drawn from row a with ``torch.multinomial``
   over all pairs at once (the original also made one call over the stacked rows).

Difference from the original, robustness only: non-finite weights (NaN/inf from δ = 2 or rounding beyond it) are
set to 0 **before** the fallback, so such a row falls back to uniform over its negatives; the original zeroed
them after normalising, leaving an all-zero row that made ``torch.multinomial`` raise. Rows are identical
wherever the original's are finite. Anchors without any negative (every label equal) yield no triplet, and the
loss is then a zero that stays connected to the graph (the original returned a CPU ``torch.zeros(1)`` and printed
a warning; ``rgal.md`` §8 #6).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .kd import _no_autocast

__all__ = [
    "SAMPLERS",
    "pairwise_distances",
    "negative_log_weights",
    "negative_weights",
    "sample_triplets",
    "triplet_loss",
    "triplet_loss_with_count",
]

# sampler -> (clamp of δ before the log weights, lower bound (exclusive), upper bound (exclusive))
SAMPLERS: dict[str, tuple[float | None, float | None, float]] = {
    "distance": (0.5, None, 1.4),  # DistanceWeighted: cut_off 0.5 (clamp), nonzero_loss_cutoff 1.4
    "balanced": (None, 0.5, 1.0),  # BalancedWeighted: cut_off 0.5 (mask), nonzero_loss_cutoff 1.0
}


def _check_sampler(sampler: str) -> tuple[float | None, float | None, float]:
    try:
        return SAMPLERS[sampler]
    except KeyError:
        raise ConfigError(f"unknown triplet sampler {sampler!r}; valid: {', '.join(SAMPLERS)}") from None


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """B×B Euclidean distances as the original samplers compute them (float32, autocast off)::

        δ_ij = sqrt(max(‖e_i‖² + ‖e_j‖² − 2 e_i·e_j, 1e-12))  for i ≠ j,    δ_ii = 1

    The caller normalises the rows first (:func:`sample_triplets` does).
    """
    with _no_autocast(embeddings):
        e = embeddings.float()
        sq = e.pow(2).sum(dim=1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * (e @ e.t())).clamp(min=1e-12)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return torch.where(eye, torch.ones_like(d2), d2).sqrt()


def negative_log_weights(dist: torch.Tensor, dim: int) -> torch.Tensor:
    """Log of the inverse distance density of unit vectors in ℝ^d (before the row-max subtraction)::

        log w(δ) = (2 − d)·log δ − ((d − 3)/2)·log(1 − δ²/4)

    e.g. d = 10, δ = 0.8: log w = −8·log 0.8 − 3.5·log(1 − 0.16). Elementwise, float32.
    """
    dist = dist.float()
    d = float(dim)
    return (2.0 - d) * dist.log() - ((d - 3.0) / 2.0) * (1.0 - 0.25 * dist * dist).log()


def negative_weights(dist: torch.Tensor, labels: torch.Tensor, dim: int, sampler: str = "distance") -> torch.Tensor:
    """Row-normalised B×B negative-sampling weights W (row a = the law of the negative drawn for anchor a).

    ``dist``: B×B distances of L2-normalised embeddings (:func:`pairwise_distances`, diagonal 1); ``labels``: B;
    ``dim``: embedding dimension d (the number of classes for logits). Steps 2-5 of the module docstring::

        δ' = max(δ, 0.5) ("distance") or δ ("balanced")
        u_aj = exp(log w(δ'_aj) − max_j' log w(δ'_aj')) · 1[y_j ≠ y_a] · 1[allowed(δ'_aj)]     (non-finite → 0)
        u_aj ← 1[y_j ≠ y_a]  for every j, if Σ_j u_aj = 0        (uniform over the negatives)
        W_aj = u_aj / Σ_j u_aj                                    (a row without negatives stays 0)

    allowed: "distance" δ' < 1.4; "balanced" 0.5 < δ' < 1.0. Same-label entries and the diagonal are 0.
    """
    clamp, low, high = _check_sampler(sampler)
    dist = dist.float()
    if clamp is not None:
        dist = dist.clamp(min=clamp)
    log_w = negative_log_weights(dist, dim)
    w = torch.exp(log_w - log_w.max(dim=1, keepdim=True).values)
    neg = labels[:, None] != labels[None, :]  # the diagonal is False (same label)
    allowed = neg & (dist < high)
    if low is not None:
        allowed = allowed & (dist > low)
    w = torch.where(allowed & torch.isfinite(w), w, torch.zeros_like(w))
    empty = w.sum(dim=1, keepdim=True) == 0
    w = torch.where(empty & neg, torch.ones_like(w), w)
    total = w.sum(dim=1, keepdim=True)
    return torch.where(total > 0, w / total.clamp(min=torch.finfo(w.dtype).tiny), torch.zeros_like(w))


def sample_triplets(embeddings: torch.Tensor, labels: torch.Tensor, sampler: str = "distance",
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mine (anchor, positive, negative) index tensors, each of length P, under ``no_grad``.

    Every ordered pair (a, p) with a ≠ p, y_a = y_p whose anchor has at least one negative is kept, in row-major
    order (as ``nonzero`` of the positive mask); for each pair one negative n ~ Categorical(W_a·) is drawn with a
    single ``torch.multinomial`` over the P rows (``generator`` must live on the embeddings' device). W is
    :func:`negative_weights` on the distances of the L2-normalised ``embeddings`` (B×d, e.g. logits), d = the
    embedding width. No positive pair → three empty long tensors.

    Host synchronisation: the number of pairs P is data-dependent, so ``nonzero`` waits for the device once per
    call; that is the only one.
    """
    _check_sampler(sampler)
    with torch.no_grad():
        e = F.normalize(embeddings.detach().float(), p=2, dim=1)
        labels = labels.to(e.device)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
        has_neg = (~same).any(dim=1, keepdim=True)
        pairs = (same & ~eye & has_neg).nonzero()
        anchor, positive = pairs[:, 0], pairs[:, 1]
        if pairs.shape[0] == 0:
            return anchor, positive, anchor.clone()
        weights = negative_weights(pairwise_distances(e), labels, e.shape[1], sampler)
        negative = torch.multinomial(weights[anchor], 1, generator=generator).squeeze(1)
    return anchor, positive, negative


def _pooled_unit(f: torch.Tensor) -> torch.Tensor:
    f = f.float()
    if f.dim() > 2:
        f = f.mean(dim=tuple(range(2, f.dim())))
    return F.normalize(f, p=2, dim=-1)


def triplet_loss_with_count(features: Sequence[torch.Tensor], embeddings: torch.Tensor, labels: torch.Tensor,
                            sampler: str = "distance", margin: float = 0.2, swap: bool = False,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`triplet_loss` and the number of triplets P as a long device tensor (for on-device meters)."""
    anchor, positive, negative = sample_triplets(embeddings, labels, sampler, generator)
    if swap:  # the original TriLoss(negative=True): the mined negative plays the positive and vice versa
        positive, negative = negative, positive
    device = features[0].device if len(features) else embeddings.device
    count = torch.full((), anchor.shape[0], dtype=torch.long, device=device)
    if anchor.shape[0] == 0:
        # A zero that is still connected to every feature tensor (backward gives zero gradients, no NaN).
        zero = torch.zeros((), device=device)
        for f in features:
            zero = zero + f.reshape(-1)[:0].float().sum()
        return zero, count
    total = None
    for f in features:
        u = _pooled_unit(f)
        ell = F.triplet_margin_loss(u[anchor], u[positive], u[negative], margin=margin, p=2, reduction="none")
        total = ell if total is None else total + ell
    if total is None:
        return torch.zeros((), device=device), count
    return total.mean(), count


def triplet_loss(features: Sequence[torch.Tensor], embeddings: torch.Tensor, labels: torch.Tensor,
                 sampler: str = "distance", margin: float = 0.2, swap: bool = False,
                 generator: torch.Generator | None = None, return_count: bool = False):
    """RGAL triplet loss (``TriLoss``) on a list of feature tensors, mined on ``embeddings`` with ``labels``.

    Triplets (a, p, n) from :func:`sample_triplets` (``sampler`` "distance" = DistanceWeighted, "balanced" =
    BalancedWeighted). Each feature tensor f (B×C×H×W → global-average-pooled, or B×C) is L2-normalised row-wise
    to f̂; per triplet::

        ℓ_t = Σ_f max(‖f̂_a − f̂_p + ε‖₂ − ‖f̂_a − f̂_n + ε‖₂ + margin, 0),    ε = 1e-6
        L   = (1/P) Σ_t ℓ_t

    (``F.triplet_margin_loss(…, p=2, reduction="none")`` per tensor, summed over the tensors, mean over triplets.)
    ``swap=True`` exchanges the positive and the negative — the original loss's ``negative=True``, i.e. the
    paper's synthesis-phase sign (pull different labels together, push equal labels apart). This is not
    ``F.triplet_margin_loss``'s own ``swap`` (the distance swap), which is never used.

    No triplet (no positive pair, or every label equal) → a float32 zero on the features' device, connected to
    the features so that ``backward()`` works; nothing is printed. Returns the loss, or ``(loss, count)`` with
    ``return_count=True`` (see :func:`triplet_loss_with_count`).
    """
    loss, count = triplet_loss_with_count(features, embeddings, labels, sampler, margin, swap, generator)
    return (loss, count) if return_count else loss
