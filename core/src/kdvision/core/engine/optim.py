"""Engine services around the step: the optimizer factory, the LR-schedule service and the update.

No method builds an optimizer or computes a learning rate by hand:

- :func:`build_optimizer` is the only place that constructs ``torch.optim`` optimizers (SGD, Adam, AdamW) from an
  :class:`OptimizerSpec` (momentum, nesterov, betas, eps, weight decay; ``foreach``/``fused`` where available).
- :class:`LRSchedule` is a closed-form learning-rate law (constant, step, multistep, cosine with a floor, poly, each
  with an optional linear warm-up), stepped per epoch or per iteration. ``timing`` reproduces where an original script
  called ``scheduler.step()`` for per-epoch laws: ``"start"`` (before the epoch's first step, as DFAD's
  classification scripts do) or ``"end"`` (after the epoch, as torch's examples and the segmentation scripts do).
  Because the LR is a pure function of (epoch, iteration), resuming needs no scheduler state.
- :func:`lr_multiplier_groups` builds parameter groups whose base LR is a multiple of the optimizer's (the
  segmentation heads at 10x the encoder's LR); the schedule scales every group's own base LR by the same law.
- :class:`ScheduleService` holds every (optimizer, schedule) pair of a method and is driven by the trainer (epoch
  start, each step); the current learning rates are logged with the losses.
- :func:`optimizer_step` does zero_grad → backward (GradScaler when one is given) → gradient clipping by norm
  (optional) → step; :meth:`~kdvision.core.engine.method.Method.update` is that, for a method's named optimizer.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch.optim import Optimizer

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "poly")
TIMINGS = ("start", "end")
UNITS = ("epoch", "iter")


@dataclass(frozen=True)
class OptimizerSpec:
    """What :func:`build_optimizer` builds. Every field is explicit at the call site that matters (the config)."""

    name: str
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD
    nesterov: bool = False  # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW
    eps: float = 1e-8  # Adam / AdamW
    foreach: bool | None = None  # CPU multi-tensor kernels; None: SGD yes, Adam/AdamW torch's default (per tensor)

    def validate(self, what: str = "optimizer") -> "OptimizerSpec":
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"unknown {what} {self.name!r}; valid: {', '.join(OPTIMIZERS)}")
        if not self.lr >= 0:
            raise ConfigError(f"{what} learning rate must be >= 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"{what} weight decay must be >= 0, got {self.weight_decay}")
        if self.name == "sgd" and self.nesterov and self.momentum <= 0:
            raise ConfigError(f"{what}: Nesterov momentum needs momentum > 0")
        return self


def build_optimizer(params: Iterable, spec: OptimizerSpec) -> Optimizer:
    """The optimizer ``spec`` describes over ``params`` (tensors or param-group dicts).

    Multi-tensor kernels: ``fused`` on CUDA; on the CPU ``foreach`` for SGD and where the spec asks for it (the
    same update with fewer kernel launches; kept per spec so that results match the originals bit for bit).
    """
    spec.validate()
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and tensors[0].device.type == "cuda" and spec.foreach is not False:
        fast = {"fused": True}
    else:
        foreach = spec.foreach if spec.foreach is not None else (True if spec.name == "sgd" else None)
        fast = {"foreach": foreach} if foreach is not None else {}
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                               weight_decay=spec.weight_decay, **fast)
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=spec.weight_decay, **fast)


@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate law ``lr(t) = base · factor(t)``, with ``t`` the epoch or the iteration.

    - ``constant``: factor 1.
    - ``step``: ``gamma ** (t // step_size)`` (torch's StepLR).
    - ``multistep``: ``gamma ** #{m in milestones : m <= t}`` (torch's MultiStepLR).
    - ``cosine``: ``floor + (base - floor) (1 + cos(pi t / total)) / 2`` (torch's CosineAnnealingLR, eta_min =
      ``floor``), ``total`` = epochs or iterations of the run.
    - ``poly``: ``floor + (base - floor) (1 - t / total) ** power`` (semseg's ``poly_learning_rate``, power 0.9),
      ``t`` clamped to ``total``.
    - ``warmup``: the first ``warmup`` units ramp linearly, ``lr · (t + 1) / warmup``.

    ``t`` counts the scheduler steps already taken: per iteration, the iterations done before this one; per epoch,
    the 0-based epoch for ``timing="end"`` and epoch + 1 for ``timing="start"`` (the original stepped before
    training the epoch).
    """

    kind: str = "constant"
    unit: str = "epoch"
    timing: str = "end"
    step_size: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    total: int = 0
    floor: float = 0.0
    warmup: int = 0
    power: float = 0.9  # poly

    def validate(self) -> "LRSchedule":
        if self.kind not in SCHEDULES:
            raise ConfigError(f"unknown LR schedule {self.kind!r}; valid: {', '.join(SCHEDULES)}")
        if self.unit not in UNITS:
            raise ConfigError(f"LR schedule unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.timing not in TIMINGS:
            raise ConfigError(f"LR schedule timing must be one of {', '.join(TIMINGS)}, got {self.timing!r}")
        if self.kind == "step" and self.step_size < 1:
            raise ConfigError(f"the step LR schedule needs a step size >= 1, got {self.step_size}")
        if self.kind in ("cosine", "poly") and self.total < 1:
            raise ConfigError(f"the {self.kind} LR schedule needs its length (epochs or iterations) >= 1")
        if self.kind == "poly" and not self.power > 0:
            raise ConfigError(f"the poly LR schedule needs a power > 0, got {self.power}")
        if self.warmup < 0:
            raise ConfigError(f"LR warm-up must be >= 0, got {self.warmup}")
        return self

    def counter(self, epoch: int, iteration: int) -> int:
        """Scheduler steps taken when training 0-based ``epoch`` / global 0-based ``iteration``."""
        if self.unit == "iter":
            return iteration
        return epoch + (1 if self.timing == "start" else 0)

    def lr(self, base: float, t: int) -> float:
        if self.kind == "constant":
            lr = base
        elif self.kind == "step":
            lr = base * self.gamma ** (t // self.step_size)
        elif self.kind == "multistep":
            lr = base * self.gamma ** bisect.bisect_right(sorted(self.milestones), t)
        elif self.kind == "poly":
            lr = self.floor + (base - self.floor) * (1 - min(t, self.total) / self.total) ** self.power
        else:
            lr = self.floor + (base - self.floor) * (1 + math.cos(math.pi * t / self.total)) / 2
        if self.warmup and t < self.warmup:
            lr *= (t + 1) / self.warmup
        return lr

    def describe(self) -> str:
        law = {"constant": "constant", "step": f"x{self.gamma:g} every {self.step_size} {self.unit}s",
               "multistep": f"x{self.gamma:g} at {self.unit}s {list(self.milestones)}",
               "cosine": f"cosine over {self.total} {self.unit}s to {self.floor:g}",
               "poly": f"poly power {self.power:g} over {self.total} {self.unit}s"}[self.kind]
        return law + (f", {self.warmup}-{self.unit} linear warm-up" if self.warmup else "")


def lr_multiplier_groups(groups: Iterable[tuple[str, Iterable[torch.nn.Parameter], float]], lr: float
                         ) -> list[dict]:
    """Parameter groups ``{"name", "params", "lr": lr * multiplier}`` from ``(name, parameters, multiplier)``.

    Parameters that do not require gradients are left out (frozen parts get no optimizer state); a parameter listed
    twice, or a group left empty, is a :class:`ConfigError` (a typo in a prefix must not silently drop a group).
    The :class:`ScheduleService` keeps each group's own base LR, so every group follows the same law at its multiple.
    """
    out, seen = [], set()
    for name, params, mult in groups:
        if not mult >= 0:
            raise ConfigError(f"LR multiplier of parameter group {name!r} must be >= 0, got {mult}")
        kept = [p for p in params if p.requires_grad]
        if any(id(p) in seen for p in kept):
            raise ConfigError(f"parameter group {name!r} repeats parameters of an earlier group")
        if not kept:
            raise ConfigError(f"parameter group {name!r} has no trainable parameters")
        seen.update(id(p) for p in kept)
        out.append({"name": name, "params": kept, "lr": lr * mult})
    return out


@dataclass
class _Entry:
    optimizer: Optimizer
    schedule: LRSchedule
    base_lrs: list[float] = field(default_factory=list)


class ScheduleService:
    """Every (optimizer, schedule) pair of a method; the trainer calls :meth:`epoch_start` and :meth:`step_start`.

    The base LR of each parameter group is the one the optimizer was built with (kept here, so a resumed
    optimizer's state_dict, which holds the current LR, never changes the law).
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def add(self, name: str, optimizer: Optimizer, schedule: LRSchedule) -> None:
        schedule.validate()
        self._entries[name] = _Entry(optimizer, schedule, [g["lr"] for g in optimizer.param_groups])

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def items(self):
        return ((k, e.schedule) for k, e in self._entries.items())

    def _apply(self, epoch: int, iteration: int, unit: str) -> None:
        for e in self._entries.values():
            if e.schedule.unit != unit:
                continue
            t = e.schedule.counter(epoch, iteration)
            for group, base in zip(e.optimizer.param_groups, e.base_lrs):
                group["lr"] = e.schedule.lr(base, t)

    def epoch_start(self, epoch: int, iteration: int) -> None:
        """Set the LR of per-epoch laws for 0-based ``epoch`` (and per-iteration ones for the next iteration)."""
        self._apply(epoch, iteration, "epoch")
        self._apply(epoch, iteration, "iter")

    def step_start(self, epoch: int, iteration: int) -> None:
        """Set the LR of per-iteration laws for global 0-based ``iteration``."""
        self._apply(epoch, iteration, "iter")

    def lrs(self) -> dict[str, float]:
        """Current LR of each optimizer (first parameter group), for logging: ``{"lr_<name>": value}``."""
        return {f"lr_{k}": e.optimizer.param_groups[0]["lr"] for k, e in self._entries.items()}

    def describe(self) -> dict[str, str]:
        return {k: e.schedule.describe() for k, e in self._entries.items()}


def optimizer_step(optimizer: Optimizer, loss: torch.Tensor, *, clip_grad_norm: float | None = None,
                   scaler: "torch.amp.GradScaler | None" = None, set_to_none: bool = True) -> None:
    """zero_grad → backward → (unscale →) clip gradients by global norm (when set) → step. No host sync."""
    optimizer.zero_grad(set_to_none=set_to_none)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if clip_grad_norm:
            scaler.unscale_(optimizer)
            _clip(optimizer, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip_grad_norm:
        _clip(optimizer, clip_grad_norm)
    optimizer.step()


def _clip(optimizer: Optimizer, max_norm: float) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
