"""RGAL's adversarial-triplet synthesizer (Liang & Fu, IJCV 2024; rgal.md §2.2).

CMI's round without the contrastive part, plus a triplet term on block features:

    v = N(HFlip(RandomCrop(G(z))))
    L = bn·L_BN + oh·CE(T(v), y) + adv·L_adv,masked + triplet·L_tri + balance·Σ p̄ log p̄

L_tri = triplet loss over the blocks ``[start_layer:end_layer]`` of the student (``triplet_target="student"``,
the README command) or of the teacher, mined on the teacher's logits with labels argmax T(v), negatives from the
balanced ("focal") sampler when ``balanced_sampling`` else the distance-weighted one.

Sign: the released code minimises the standard triplet loss in synthesis too (``triplet_sign="code"``, default:
what produced the published numbers); the paper describes the opposite objective for synthesis — samples of one
class pushed apart, of different classes pulled together — which ``triplet_sign="paper"`` implements by swapping
positives and negatives.

``balance``: the class-balance weight of the engine (natural log). The released RGAL code has no such term and its
README command (which passes ``--balance 0.1``) did not parse; ``balance=0`` is the released objective.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.method import unwrap
from ..hooks import TeacherTaps
from ..losses import adversarial_masked, class_balance, triplet_loss
from .inversion import GeneratorInversion

TRIPLET_SIGNS = ("code", "paper")
TRIPLET_TARGETS = ("student", "teacher")


class AdvTripletSynthesizer(GeneratorInversion):
    name = "rgal"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, triplet: float,
                 triplet_target: str, start_layer: int, end_layer: int, balanced_sampling: bool, triplet_sign: str,
                 balance: float, **kwargs: Any) -> None:
        super().__init__(teacher, student, generator, **kwargs)
        if triplet_sign not in TRIPLET_SIGNS:
            raise ValueError(f"unknown triplet sign {triplet_sign!r}; valid: {', '.join(TRIPLET_SIGNS)}")
        if triplet_target not in TRIPLET_TARGETS:
            raise ValueError(f"unknown triplet target {triplet_target!r}; valid: {', '.join(TRIPLET_TARGETS)}")
        self.triplet, self.balance = triplet, balance
        self.triplet_target = triplet_target
        self.layers = slice(start_layer, end_layer)
        self.sampler = "balanced" if balanced_sampling else "distance"
        self.swap = triplet_sign == "paper"
        tapped = unwrap(student) if triplet_target == "student" else unwrap(teacher)
        self.taps = TeacherTaps(tapped, blocks=True, penultimate=False) if triplet > 0 else None
        self.needs_student = self.adv > 0 or (triplet > 0 and triplet_target == "student")

    def objective(self, x, y, student):
        v = self.layout(self.global_view(x))
        taps_on_teacher = self.taps is not None and self.triplet_target == "teacher"
        taps_on_student = self.taps is not None and self.triplet_target == "student"
        with self.autocast():
            if taps_on_teacher:
                with self.taps.active():
                    t = self.teacher_forward(v)
            else:
                t = self.teacher_forward(v)
            parts: dict[str, torch.Tensor] = {"loss_oh": F.cross_entropy(t.float(), y)}
            if self.bn > 0:
                parts["loss_bn"] = self.bn_loss()
            s = None
            if self.needs_student:
                if taps_on_student:
                    with self.taps.active():
                        s = student(v)
                else:
                    s = student(v)
            if self.adv > 0:
                parts["loss_adv"] = adversarial_masked(s, t)
            if self.triplet > 0:
                feats = [f.float() for f in self.taps.blocks[self.layers]]
                parts["loss_triplet"] = triplet_loss(feats, t.float(), t.argmax(1), sampler=self.sampler,
                                                     swap=self.swap)
            if self.balance > 0:
                parts["loss_balance"] = class_balance(t, base="e")
        weights = {"loss_oh": self.oh, "loss_bn": self.bn, "loss_adv": self.adv, "loss_triplet": self.triplet,
                   "loss_balance": self.balance}
        return parts, weights, ()

    def describe(self) -> dict[str, str]:
        if self.taps is None:
            return {"triplet": "off"}
        names = self.taps.block_names[self.layers] if hasattr(self.taps, "block_names") else ""
        return {"triplet": f"weight {self.triplet} on {self.triplet_target} blocks {names}, {self.sampler} "
                           f"sampler, sign {'paper (swapped)' if self.swap else 'code'}"}
