"""Logit distillation on labelled data: KD, DKD, NKD and their scale-decoupled versions (``reference/sdd.md`` §3).

One step (mdistiller's ``train_iter`` with SDD's trainer): a labelled batch, the student forward in train mode, the
frozen teacher's forward in eval mode without gradients, the named losses of :class:`LogitDistiller`
(``loss_ce`` + ``loss_kd``), their sum back-propagated, gradients clipped by global norm (SDD: 40) and one SGD
step. The learning rate follows the multistep law per epoch (mdistiller's ``adjust_learning_rate``), the warm-up
factor ``min(epoch / warmup, 1)`` uses the 1-based epoch.

Scale-decoupled variants (``sd_kd``, ``sd_dkd``, ``sd_nkd``) wrap both players in
:class:`~kdvision.core.models.spp.ScaleDecoupled` (a forward hook, no copy of the model and no parameter of its
own): the models return ``(logits, region logits B×K×N)``; the teacher's region predictions give the
consistent/complementary weights (§2).

Checkpoints hold the student only (the teacher is frozen and reloaded from its file; mdistiller saved it every
epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.method import freeze, unwrap
from ..errors import ConfigError
from ..losses.logit import (WEIGHT_RULES, dkd_loss, kd_loss, nkd_loss, sd_dkd_loss, sd_kd_loss, sd_nkd_loss,
                            sdd_weights)
from ..recipes.supervised import Supervised

#: the distillation terms; "none" is CE only (mdistiller's Vanilla)
KINDS = ("none", "kd", "dkd", "nkd", "sd_kd", "sd_dkd", "sd_nkd")


@dataclass(frozen=True)
class LogitDistiller:
    """The loss of one labelled batch: ``ce_weight``·CE(student logits, y) + the distillation term of ``kind``.

    - ``kd`` / ``sd_kd``: ``kd_weight``·τ²·KL (no warm-up), τ = ``T``.
    - ``dkd`` / ``sd_dkd``: ``min(epoch / warmup, 1)``·(α·TCKD + β·NCKD) at τ = ``T``.
    - ``nkd`` / ``sd_nkd``: ``min(epoch / warmup, 1)``·NKD(τ = ``T``, γ = ``gamma``), ``legacy_mask`` = SDD's
      all-class non-target mask.
    - ``sd_*``: the same term on every region row, weighted 1 / 2 by ``weight_rule`` and averaged over N·B rows.
    """

    kind: str
    ce_weight: float = 1.0
    T: float = 4.0
    kd_weight: float = 1.0
    alpha: float = 1.0
    beta: float = 8.0
    gamma: float = 1.5
    warmup: float = 0.0
    legacy_mask: bool = False
    weight_rule: str = "correctness_xor"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown logit distillation {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.weight_rule not in WEIGHT_RULES:
            raise ConfigError(f"unknown SDD weight rule {self.weight_rule!r}; valid: {', '.join(WEIGHT_RULES)}")

    @property
    def scale_decoupled(self) -> bool:
        return self.kind.startswith("sd_")

    def ramp(self, epoch: int) -> float:
        """The warm-up factor of epoch ``epoch`` (1-based); 1 without warm-up (KD)."""
        if self.kind in ("kd", "sd_kd") or self.warmup <= 0:
            return 1.0
        return min(epoch / self.warmup, 1.0)

    def __call__(self, s_out: Any, t_out: Any, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        s, s_regions = s_out if self.scale_decoupled else (s_out, None)
        t, t_regions = t_out if self.scale_decoupled else (t_out, None)
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(s.float(), y)}
        kind, ramp = self.kind, self.ramp(epoch)
        if kind == "none":
            return losses
        if kind == "kd":
            term = self.kd_weight * kd_loss(s, t, self.T)
        elif kind == "dkd":
            term = ramp * dkd_loss(s, t, y, self.alpha, self.beta, self.T)
        elif kind == "nkd":
            term = ramp * nkd_loss(s, t, y, self.T, self.gamma, legacy_mask=self.legacy_mask)
        else:
            w = sdd_weights(t_regions, y, self.weight_rule)
            if kind == "sd_kd":
                term = self.kd_weight * sd_kd_loss(s_regions, t_regions, w, self.T)
            elif kind == "sd_dkd":
                term = ramp * sd_dkd_loss(s_regions, t_regions, y, w, self.alpha, self.beta, self.T)
            else:
                term = ramp * sd_nkd_loss(s_regions, t_regions, y, w, self.T, self.gamma,
                                          legacy_mask=self.legacy_mask)
        losses["loss_kd"] = term
        return losses


class LabelledKD(Supervised):
    """Distil a frozen teacher into the student on labelled batches (see the module docstring)."""

    name = "logit_kd"
    player = "model"

    def __init__(self, teacher: nn.Module, student: nn.Module, dataset: torch.utils.data.Dataset, *,
                 distiller: LogitDistiller, **kwargs: Any) -> None:
        super().__init__(student, dataset, loss=None, **kwargs)
        self.teacher = freeze(teacher)
        self.distiller = distiller
        self.name = distiller.kind if distiller.kind != "none" else "ce"
        self.epoch = 1

    def eval_model(self) -> nn.Module:
        """The plain student (a scale-decoupled wrapper's model), whose output is the logits."""
        model = unwrap(self.model)
        return getattr(model, "model", model) if self.distiller.scale_decoupled else model

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.epoch = epoch + 1  # mdistiller counts epochs from 1 (the warm-up of epoch 1 is 1/warmup)

    def losses(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x, y = self.next_batch()
        self.model.train()
        self.teacher.eval()
        with self.autocast():
            s_out = self.model(x)
            with torch.no_grad():
                t_out = self.teacher(x)
        losses = self.distiller(s_out, t_out, y, self.epoch)
        logits = s_out[0] if self.distiller.scale_decoupled else s_out
        metrics = self.train_metrics(logits.detach(), y) if self.train_metrics else {}
        return losses, metrics
