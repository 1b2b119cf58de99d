"""A reference-equivalent SD-DKD training step: SDD's ``SDD_DKD`` distiller with mdistiller's trainer step.

Written from the specification (``reference/sdd.md`` §1.2–1.3, §2, §3.3–3.4, §5.1) in the original's form, for the
equivalence test and the benchmark:

- the ``*_sdd`` models' SPP: P4 = adaptive-avg-pool(F → 4×4), P2 and P1 pooled from P4, concatenated
  [P1, P2, P4] row-major, every region through the model's own classifier;
- DKD with the ``-1000 · onehot`` trick and the log of summed probabilities, per row over the N·B region rows
  (each row divided by N·B), weights from four boolean masks built on the teacher's region predictions, summed;
- the trainer: ``zero_grad``, ``sum(l.mean())`` of the loss dict, ``backward``, ``clip_grad_norm_`` at 40 over all
  parameters, SGD step; the LR of epoch e is ``LR · rate^#{stage < e}``; the warm-up ``min(e / warmup, 1)``.

The original's per-step waste kept here (for the benchmark): the masks rebuilt with ``torch.tensor`` copies and a
host sync (``isnan`` / ``isinf`` checks, the partition ``assert``), and the losses read back with ``.item()``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def spp_logits(fmap: torch.Tensor, head: nn.Linear, scales: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """B×K×N region logits, every scale pooled from the 4×4 grid, as the original SPP."""
    p4 = F.adaptive_avg_pool2d(fmap, 4)
    pooled = {4: p4, 2: F.adaptive_avg_pool2d(p4, 2), 1: F.adaptive_avg_pool2d(p4, 1)}
    regions = torch.cat([pooled[s].flatten(2) for s in scales], dim=2)  # B×C×N
    b, c, n = regions.shape
    flat = regions.permute(2, 0, 1).reshape(n * b, c)
    return head(flat).reshape(n, b, -1).permute(1, 2, 0)


def dkd_rows(s: torch.Tensor, t: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
             T: float) -> torch.Tensor:
    gt = torch.zeros_like(s).scatter_(1, target.unsqueeze(1), 1).bool()
    other = torch.ones_like(s).scatter_(1, target.unsqueeze(1), 0).bool()
    ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    cat = lambda p: torch.cat([(p * gt).sum(1, keepdim=True), (p * other).sum(1, keepdim=True)], dim=1)  # noqa
    ps, pt = cat(ps), cat(pt)
    tckd = (F.kl_div(torch.log(ps), pt, reduction="none") * T ** 2 / target.shape[0]).sum(1)
    pt2 = F.softmax(t / T - 1000.0 * gt, dim=1)
    log_ps2 = F.log_softmax(s / T - 1000.0 * gt, dim=1)
    nckd = (F.kl_div(log_ps2, pt2, reduction="none") * T ** 2 / target.shape[0]).sum(1)
    return alpha * tckd + beta * nckd


def multi_dkd(s_regions: torch.Tensor, t_regions: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
              T: float) -> torch.Tensor:
    n, b = s_regions.shape[2], target.shape[0]
    out_s = s_regions.permute(2, 0, 1).reshape(n * b, -1)
    out_t = t_regions.permute(2, 0, 1).reshape(n * b, -1)
    target_r = target.repeat(n)
    loss = dkd_rows(out_s, out_t, target_r, alpha, beta, T)
    pred = out_t.argmax(1)
    glob_true = (pred[:b] == target).repeat(n)
    local_true = pred == target_r
    gt_lw = glob_true & ~local_true
    gw_lt = ~glob_true & local_true
    gt_lw[:b] = False
    gw_lt[:b] = False
    gt_lt = glob_true & local_true
    gw_lw = ~glob_true & ~local_true
    assert int(gt_lt.sum() + gw_lw.sum() + gt_lw.sum() + gw_lt.sum()) == n * b  # the original's host sync
    index = torch.zeros_like(loss)
    index[gw_lw] = 1.0
    index[gt_lt] = 1.0
    index[gw_lt] = 2.0
    index[gt_lw] = 2.0
    total = (loss * index).sum()
    if torch.isnan(total) or torch.isinf(total):  # the original's silent skip
        total = torch.zeros((), device=total.device)
    return total


class ReferenceSDDKD:
    """SDD's SD-DKD training loop over plain models; ``feature_map(model)`` returns the map of its last forward."""

    def __init__(self, teacher: nn.Module, student: nn.Module, *, t_head: nn.Linear, s_head: nn.Linear,
                 feature_map: Callable[[nn.Module], torch.Tensor], scales: Sequence[int], lr: float,
                 momentum: float, weight_decay: float, stages: Sequence[int], rate: float, ce_weight: float,
                 alpha: float, beta: float, T: float, warmup: float, clip: float | None = 40.0) -> None:
        self.teacher, self.student = teacher, student
        self.t_head, self.s_head, self.fmap, self.scales = t_head, s_head, feature_map, tuple(scales)
        self.lr, self.stages, self.rate = lr, list(stages), rate
        self.ce_weight, self.alpha, self.beta, self.T, self.warmup, self.clip = ce_weight, alpha, beta, T, warmup, clip
        self.optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def adjust_lr(self, epoch: int) -> None:
        steps = sum(epoch > s for s in self.stages)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * self.rate ** steps if steps > 0 else self.lr

    def step(self, image: torch.Tensor, target: torch.Tensor, epoch: int) -> dict[str, float]:
        self.student.train()
        self.teacher.eval()
        self.optimizer.zero_grad()
        logits_s = self.student(image)
        patch_s = spp_logits(self.fmap(self.student), self.s_head, self.scales)
        with torch.no_grad():
            self.teacher(image)
            patch_t = spp_logits(self.fmap(self.teacher), self.t_head, self.scales)
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(logits_s, target),
                  "loss_kd": min(epoch / self.warmup, 1.0) * multi_dkd(patch_s, patch_t, target, self.alpha,
                                                                     self.beta, self.T)}
        loss = sum(v.mean() for v in losses.values())
        loss.backward()
        if self.clip is not None:
            nn.utils.clip_grad_norm_(self.student.parameters(), max_norm=self.clip, norm_type=2)
        self.optimizer.step()
        return {k: v.item() for k, v in losses.items()}  # the trainer's per-step reads
