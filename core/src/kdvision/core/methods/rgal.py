"""RGAL's student-phase terms (rgal.md §2.3), added to the KD loss of :class:`~.datafree.DataFreeKD`:

    L_CD  = cd · Σ_b MSE(GAP(W_b ∗ s_b), GAP(t_b))       all block pairs, W_b a learnable 1×1 conv (with bias)
    L_GR  = gram · Gram loss on the same pairs
    L_STR = striplet · triplet(F', mining embeddings = student logits, labels = argmax T(x))

F' collects, by substring of ``striplet_feature``: ``features`` → student blocks ``[start_layer:end_layer]``,
``global`` → the student's penultimate pooled feature, ``logits`` → the student's logits. Negatives are
distance-weighted (the original ignores ``--balanced_sampling`` here; ``balanced_sampling_student`` opts in).
The terms are active while ``epoch < custom_steps · epochs``. The adapters are trained by the student's optimiser
and, unlike the original, saved and restored with the student. Every weight is a required keyword (the config is
their one home: :func:`kdvision.core.recipes.datafree.build_student_terms`).
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from ..engine.method import unwrap
from ..hooks import TeacherTaps
from ..losses import ChannelAdapters, cd_loss, gram_loss, triplet_loss

STRIPLET_FEATURES = ("features", "global", "logits")


class RGALStudentTerms(nn.Module):
    def __init__(self, teacher: nn.Module, student: nn.Module, image_shape: tuple[int, int, int], *,
                 epochs: int, cd: float, gram: float, striplet: float, striplet_feature: str, start_layer: int,
                 end_layer: int, custom_steps: float, balanced_sampling_student: bool) -> None:
        super().__init__()
        if striplet > 0 and not any(k in striplet_feature for k in STRIPLET_FEATURES):
            raise ValueError(f"striplet_feature {striplet_feature!r} names none of {', '.join(STRIPLET_FEATURES)}")
        self.cd, self.gram, self.striplet = cd, gram, striplet
        self.striplet_feature = striplet_feature
        self.layers = slice(start_layer, end_layer)
        self.active_epochs = custom_steps * epochs
        self.sampler = "balanced" if balanced_sampling_student else "distance"
        teacher, student = unwrap(teacher), unwrap(student)
        self._t_taps = TeacherTaps(teacher, blocks=True, penultimate=False)
        self._s_taps = TeacherTaps(student, blocks=True, penultimate=True)
        device = next(student.parameters()).device
        probe = torch.zeros(2, *image_shape, device=device)
        with torch.no_grad(), self._t_taps.active(), self._s_taps.active():
            was_training = student.training
            student.eval()
            teacher(probe)
            student(probe)
            student.train(was_training)
            t_ch = [f.shape[1] for f in self._t_taps.blocks]
            s_ch = [f.shape[1] for f in self._s_taps.blocks]
        n = min(len(t_ch), len(s_ch))  # the original zipped the two block lists
        self.adapters = ChannelAdapters(s_ch[:n], t_ch[:n]).to(device)
        self.block_pairs = n

    @property
    def uses_teacher_blocks(self) -> bool:
        return self.cd > 0 or self.gram > 0

    @property
    def uses_student_taps(self) -> bool:
        return self.uses_teacher_blocks or self.striplet > 0

    def capture_teacher(self) -> contextlib.AbstractContextManager:
        return self._t_taps.active() if self.uses_teacher_blocks else contextlib.nullcontext()

    def capture_student(self) -> contextlib.AbstractContextManager:
        return self._s_taps.active() if self.uses_student_taps else contextlib.nullcontext()

    def forward(self, s: torch.Tensor, t: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        if epoch >= self.active_epochs:
            return {}
        out: dict[str, torch.Tensor] = {}
        n = self.block_pairs
        if self.uses_teacher_blocks:
            s_blocks, t_blocks = self._s_taps.blocks[:n], self._t_taps.blocks[:n]
            if self.cd > 0:
                out["loss_cd"] = self.cd * cd_loss(self.adapters, s_blocks, t_blocks)
            if self.gram > 0:
                out["loss_gram"] = self.gram * gram_loss(self.adapters, s_blocks, t_blocks)
        if self.striplet > 0:
            feats: list[torch.Tensor] = []
            if "features" in self.striplet_feature:
                feats += list(self._s_taps.blocks[self.layers])
            if "global" in self.striplet_feature:
                feats.append(self._s_taps.penultimate)
            if "logits" in self.striplet_feature:
                feats.append(s)
            out["loss_striplet"] = self.striplet * triplet_loss([f.float() for f in feats], s.detach(),
                                                                t.argmax(1), sampler=self.sampler)
        return out

    def extra_repr(self) -> str:
        return f"cd={self.cd}, gram={self.gram}, striplet={self.striplet} ({self.striplet_feature})"

    def describe(self) -> dict[str, Any]:
        return {"student terms": f"cd {self.cd} on {self.block_pairs} block pairs (1x1 adapters), gram {self.gram}, "
                                 f"striplet {self.striplet} on {self.striplet_feature} ({self.sampler} sampler), "
                                 f"active for the first {self.active_epochs:g} epochs"}
