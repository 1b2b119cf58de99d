"""Data-free KD on a synthesizer: the engine loop of CMI / Fast / RGAL (datafree_engine.md §6), as a Method.

One training iteration is one KD step. Every ``kd_steps`` steps a synthesis round runs first (``synthesize()``:
``g_steps`` inner steps), so an epoch of ``ep_steps`` iterations holds ``ep_steps // kd_steps`` rounds — the
original's update order (synthesis, then KD steps). A KD step:

    x = synthesizer.sample(B)          # pool batch (augmented) or fresh generator batch
    t = T(x) without gradient;  L_S = KD(S(x), t)  (+ the method's student terms, e.g. RGAL's)
    SGD step on S (and on any trainable student-side modules, e.g. RGAL's 1x1 adapters)

KD(S, T) = τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) (batchmean) with τ = ``T``, or mean|s − t| (``kd_loss="l1"``, DFAD).
The student's optimizer and LR schedule come from the engine's services (the recipe passes a cosine from ``lr``
to ``lr_min`` over the KD epochs stepped once per epoch, as the original's ``CosineAnnealingLR``, or a step decay).

``warmup_rounds`` synthesis rounds (Fast's warm-up epochs) run before the first KD step: by
:class:`SynthesisWarmupHook` before training (progress bar, a checkpoint after each warm-up epoch), or, when no
hook ran them, at the first KD step.

``student_terms``: a module adding student-phase losses (RGAL's :class:`~kdvision.core.methods.rgal.RGALStudentTerms`):
its ``capture_teacher()`` / ``capture_student()`` contexts tap the two forwards, ``terms(s, t, epoch)`` returns
named weighted losses; its parameters (adapters) are trained by the student's optimiser and checkpointed.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ..engine.method import Method, freeze
from ..engine.optim import LRSchedule, OptimizerSpec
from ..engine.trainer import Hook
from ..losses import kldiv, l1_discrepancy
from ..synthesis.base import Synthesizer

KD_LOSSES = ("kl", "l1")


class DataFreeKD(Method):
    name = "datafree"

    def __init__(self, teacher: nn.Module, student: nn.Module, synthesizer: Synthesizer, *, batch_size: int,
                 kd_steps: int, opt_S: OptimizerSpec, schedule: LRSchedule, T: float, kd_loss: str,
                 warmup_rounds: int, student_terms: nn.Module | None = None,
                 device: torch.device = torch.device("cpu"), amp: bool = False,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(device, amp)
        if kd_loss not in KD_LOSSES:
            raise ValueError(f"unknown KD loss {kd_loss!r}; valid: {', '.join(KD_LOSSES)}")
        self.teacher = freeze(teacher)
        self.student = student
        self.synthesizer = synthesizer
        self.batch_size, self.kd_steps = batch_size, kd_steps
        self.T, self.kd_loss = T, kd_loss
        self.warmup_rounds = warmup_rounds
        self.student_terms = student_terms
        params = list(student.parameters())
        if student_terms is not None:
            params += [p for p in student_terms.parameters() if p.requires_grad]
        self.add_optimizer("student", params, opt_S, schedule)
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

    def optimizers(self) -> dict[str, Optimizer]:
        return {**super().optimizers(), **{f"syn_{k}": o for k, o in self.synthesizer.optimizers().items()}}

    def extra_state(self) -> dict[str, Any]:
        return {"kd_count": self.kd_count, "synthesis_time": self.synthesis_time,
                "synthesizer": self.synthesizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kd_count = state["kd_count"]
        self.synthesis_time = state["synthesis_time"]
        self.synthesizer.load_state_dict(state["synthesizer"])

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

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

    @property
    def warmup_pending(self) -> int:
        """Warm-up synthesis rounds still to run."""
        return max(0, self.warmup_rounds - self.synthesizer.rounds)

    def warmup_round(self) -> dict[str, torch.Tensor]:
        self._syn = self._synthesize()
        return self._syn

    def train_step(self) -> dict[str, torch.Tensor]:
        while self.warmup_pending:
            self.warmup_round()
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
        self.update("student", sum(out.values()))
        self.kd_count += 1
        with torch.no_grad():
            out = {k: v.detach() for k, v in out.items()}
            out["agreement"] = (s.argmax(1) == t.argmax(1)).float().mean()
        return {**out, **self._syn}


class SynthesisWarmupHook(Hook):
    """Runs the method's pending warm-up synthesis rounds before the first KD step (Fast's warm-up epochs).

    ``rounds_per_epoch`` rounds make one warm-up epoch: a progress bar on rank 0, one log line per warm-up epoch
    (with the synthesis losses) and a checkpoint after each, so an interrupted warm-up resumes where it stopped.
    """

    priority = 5  # before the logger opens its first progress bar

    def __init__(self, rounds_per_epoch: int, progress: bool | None = None) -> None:
        self.rounds_per_epoch = max(1, rounds_per_epoch)
        self.progress = progress

    def before_train(self, trainer) -> None:
        method: DataFreeKD = trainer.method
        pending = method.warmup_pending
        if not pending:
            return
        import sys

        from tqdm.auto import tqdm

        total = method.warmup_rounds
        show = (sys.stderr.isatty() if self.progress is None else self.progress) and trainer.dist.is_main
        bar = tqdm(total=total, initial=total - pending, desc="synthesis warm-up", leave=False,
                   dynamic_ncols=True, disable=not show)
        try:
            while method.warmup_pending:
                out = method.warmup_round()
                bar.update(1)
                done = method.synthesizer.rounds
                if done % self.rounds_per_epoch == 0 or not method.warmup_pending:
                    values = {k: float(v) for k, v in out.items()}  # one sync per warm-up epoch
                    epoch = -(-done // self.rounds_per_epoch)
                    trainer.run.log_metrics({"step": 0, "epoch": epoch, "split": "warmup", **values})
                    trainer.log.info(f"warm-up epoch {epoch}/{-(-total // self.rounds_per_epoch)}: "
                                     + " ".join(f"{k}={v:.4g}" for k, v in values.items()))
                    trainer.save(trainer.run.last_ckpt)
        finally:
            bar.close()
