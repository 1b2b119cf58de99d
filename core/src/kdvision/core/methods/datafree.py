"""Data-free KD on a synthesizer: the engine loop of CMI / Fast / RGAL (datafree_engine.md §6), as a Method.

One training iteration is one KD step. Every ``kd_steps`` steps a synthesis round runs first (``synthesize()``:
``g_steps`` inner steps), so an epoch of ``ep_steps`` iterations holds ``ep_steps // kd_steps`` rounds — the
original's update order (synthesis, then KD steps). A KD step:

    x = synthesizer.sample(B)          # pool batch (augmented) or fresh generator batch
    t = T(x) without gradient;  L_S = KD(S(x), t)  (+ the method's student terms, e.g. RGAL's)
    SGD step on S (and on any trainable student-side modules, e.g. RGAL's 1x1 adapters)

KD(S, T) = τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) (batchmean) with τ = ``T``, or mean|s − t| (``kd_loss="l1"``, DFAD).
The student's LR follows a cosine from ``lr`` to ``lr_min`` over the KD epochs (set at the start of each epoch:
the original stepped ``CosineAnnealingLR`` once per epoch), or a step decay at ``milestones``.

``warmup_rounds`` synthesis rounds (Fast's warm-up epochs) run before the first KD step.

``student_terms``: a module adding student-phase losses (RGAL's :class:`~kdvision.core.methods.rgal.RGALStudentTerms`):
its ``capture_teacher()`` / ``capture_student()`` contexts tap the two forwards, ``terms(s, t, epoch)`` returns
named weighted losses; its parameters (adapters) are trained by the student's optimiser and checkpointed.
"""
from __future__ import annotations

import bisect
import contextlib
import math
import time
from typing import Any, Callable

import torch
import torch.nn as nn

from ..engine.method import Method, freeze
from ..losses import kldiv, l1_discrepancy
from ..synthesis.base import Synthesizer

KD_LOSSES = ("kl", "l1")
SCHEDULES = ("cosine", "multistep", "constant")


def epoch_lr(epoch: int, *, base: float, schedule: str, epochs: int, lr_min: float = 0.0,
             milestones: list[int] | tuple[int, ...] = (), gamma: float = 0.1) -> float:
    """LR of 0-based ``epoch``: cosine annealing over ``epochs`` (``CosineAnnealingLR(T_max=epochs, eta_min)``
    stepped per epoch), MultiStep decay at ``milestones`` (epochs at which the LR drops), or constant."""
    if schedule == "cosine":
        return lr_min + (base - lr_min) * (1 + math.cos(math.pi * epoch / max(epochs, 1))) / 2
    if schedule == "multistep":
        return base * gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if schedule == "constant":
        return base
    raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


class DataFreeKD(Method):
    name = "datafree"

    def __init__(self, teacher: nn.Module, student: nn.Module, synthesizer: Synthesizer, *, batch_size: int,
                 kd_steps: int, lr: float, epochs: int, momentum: float = 0.9, weight_decay: float = 1e-4,
                 T: float = 1.0, kd_loss: str = "kl", schedule: str = "cosine", lr_min: float = 0.0,
                 milestones: list[int] | tuple[int, ...] = (), gamma: float = 0.1, warmup_rounds: int = 0,
                 student_terms: nn.Module | None = None, device: torch.device = torch.device("cpu"),
                 amp: bool = False, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(device, amp)
        if kd_loss not in KD_LOSSES:
            raise ValueError(f"unknown KD loss {kd_loss!r}; valid: {', '.join(KD_LOSSES)}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.teacher = freeze(teacher)
        self.student = student
        self.synthesizer = synthesizer
        self.batch_size, self.kd_steps = batch_size, kd_steps
        self.T, self.kd_loss = T, kd_loss
        self.schedule = dict(base=lr, schedule=schedule, epochs=epochs, lr_min=lr_min, milestones=tuple(milestones),
                             gamma=gamma)
        self.warmup_rounds = warmup_rounds
        self.student_terms = student_terms
        params = list(student.parameters())
        if student_terms is not None:
            params += [p for p in student_terms.parameters() if p.requires_grad]
        self.opt_S = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)
        self.kd_count = 0  # KD steps taken
        self.epoch = 0
        self.synthesis_time = 0.0  # seconds in synthesize() (the originals' "Generation Cost")
        self._clock = clock
        self._syn: dict[str, torch.Tensor] = {}

    # -- Method interface -----------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        mods = {"student": self.student, **{f"syn_{k}": m for k, m in self.synthesizer.modules().items()}}
        if self.student_terms is not None:
            mods["student_terms"] = self.student_terms
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.opt_S, **{f"syn_{k}": o for k, o in self.synthesizer.optimizers().items()}}

    def extra_state(self) -> dict[str, Any]:
        return {"kd_count": self.kd_count, "synthesis_time": self.synthesis_time,
                "synthesizer": self.synthesizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kd_count = state["kd_count"]
        self.synthesis_time = state["synthesis_time"]
        self.synthesizer.load_state_dict(state["synthesizer"])

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        lr = epoch_lr(epoch, **self.schedule)
        for group in self.opt_S.param_groups:
            group["lr"] = lr

    def summary(self) -> dict[str, Any]:
        return {"synthesis_time_s": self.synthesis_time, "synthesis_rounds": self.synthesizer.rounds,
                "pool_size": len(self.synthesizer.pool) if self.synthesizer.uses_pool else None}

    def sample_images(self) -> torch.Tensor | None:
        return self.synthesizer.preview()

    # -- the loop ---------------------------------------------------------------------------------------------
    def _synthesize(self) -> dict[str, torch.Tensor]:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = self._clock()
        out = self.synthesizer.synthesize()
        sync()
        self.synthesis_time += self._clock() - t0
        return out

    def kd_objective(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.kd_loss == "l1":
            return l1_discrepancy(s, t)
        return kldiv(s, t, T=self.T)

    def train_step(self) -> dict[str, torch.Tensor]:
        while self.synthesizer.rounds < self.warmup_rounds:
            self._syn = self._synthesize()
        if self.kd_count % self.kd_steps == 0:
            self._syn = self._synthesize()
        S = self.student
        S.train()
        x = self.synthesizer.sample(self.batch_size)
        terms = self.student_terms
        with self.autocast():
            with torch.no_grad(), (terms.capture_teacher() if terms is not None else contextlib.nullcontext()):
                t = self.teacher(x)
            with terms.capture_student() if terms is not None else contextlib.nullcontext():
                s = S(x)
        t = t.float()
        s = s.float()
        out = {"loss_kd": self.kd_objective(s, t)}
        if terms is not None:
            out.update(terms(s, t, self.epoch))
        loss = sum(out.values())
        self.opt_S.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_S.step()
        self.kd_count += 1
        with torch.no_grad():
            out = {k: v.detach() for k, v in out.items()}
            out["agreement"] = (s.argmax(1) == t.argmax(1)).float().mean()
        return {**out, **self._syn}
