"""The :class:`Method` interface: a distillation method owns its players and optimizers and implements one step."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.nn.parallel import DistributedDataParallel as DDP

from .optim import LRSchedule, OptimizerSpec, ScheduleService, build_optimizer, optimizer_step


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP (or ``torch.compile``) wrapper."""
    while True:
        if isinstance(module, DDP):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def freeze(module: nn.Module) -> nn.Module:
    """Frozen teacher: eval mode and no weight gradients (input gradients still flow through it)."""
    module.eval()
    module.requires_grad_(False)
    return module


def freeze_unreached(model: nn.Module, probe: Callable[[], torch.Tensor], within: nn.Module | None = None
                     ) -> list[str]:
    """Freeze the parameters of ``within`` (default ``model``) that no gradient of the scalar ``probe()`` reaches
    — a head whose output a loss never uses, encoder stages a shallow decoder never reads — and return their names.
    They would never be updated anyway (no gradient: SGD skips them, weight decay included), and DDP needs every
    trainable parameter used. ``probe`` runs once with ``model`` in eval mode (running statistics untouched); the
    probe's gradients are cleared."""
    within = model if within is None else within
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            probe().backward()
        unused = [n for n, p in within.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.train(was)
        for p in model.parameters():
            p.grad = None
    for n, p in within.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    return unused


@contextlib.contextmanager
def no_weight_grads(module: nn.Module) -> Iterator[None]:
    """Temporarily stop weight gradients of ``module`` (input gradients still flow through it)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def preserved_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in train mode (batch statistics) without letting it change its running statistics."""
    saved = {name: buf.clone() for name, buf in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(saved[name])


class Method:
    """Base class of every training method (DFAD, supervised teacher training, ...).

    Subclasses set ``name`` and ``task`` and implement :meth:`train_step`. Everything returned by
    :meth:`modules`, :meth:`optimizers` and :meth:`extra_state` is checkpointed.

    Services (DESIGN.md, core idea 1): :meth:`add_optimizer` builds an optimizer with the engine's factory and
    registers its LR schedule with :attr:`schedules` (the trainer drives it, the logger records the rates);
    :meth:`update` does zero_grad → backward (GradScaler for fp16) → optional gradient clipping → step.
    """

    name = "method"
    task = "classification"

    def __init__(self, device: torch.device, amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16) -> None:
        self.device = device
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.schedules = ScheduleService()
        self._optimizers: dict[str, Optimizer] = {}
        self._clip: dict[str, float | None] = {}
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)

    # -- to implement ----------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """One training iteration; returns named losses/metrics as (detached) device tensors — no host sync."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, Optimizer]:
        """Every optimizer to checkpoint: those of :meth:`add_optimizer` (subclasses may add more)."""
        return dict(self._optimizers)

    def eval_model(self) -> nn.Module:
        """The model whose metric is tracked (the student)."""
        return unwrap(self.modules()["student"])

    def on_epoch_start(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based), after the LR schedules were applied."""

    def sample_images(self) -> torch.Tensor | None:
        """A fixed batch of synthetic inputs (normalised space) for image grids, or None."""
        return None

    def extra_state(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        """Extra entries for ``summary.json`` (e.g. synthesis time)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- services ------------------------------------------------------------------------------------------------
    def add_optimizer(self, name: str, params, spec: OptimizerSpec, schedule: LRSchedule | None = None,
                      clip_grad_norm: float | None = None) -> Optimizer:
        """Build the optimizer of player ``name`` (checkpointed under that name) and register its schedule."""
        opt = build_optimizer(params, spec)
        self._optimizers[name] = opt
        self._clip[name] = clip_grad_norm
        if schedule is not None:
            self.schedules.add(name, opt, schedule)
        return opt

    def update(self, name: str, loss: torch.Tensor) -> None:
        """One update of optimizer ``name`` from ``loss`` (see :func:`~kdvision.core.engine.optim.optimizer_step`)."""
        optimizer_step(self._optimizers[name], loss, clip_grad_norm=self._clip.get(name), scaler=self.scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules().items():
            unwrap(m).load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state.get("extra", {}))


class LossDictMethod(Method):
    """A method whose step is "compute named losses, then update one player" (mdistiller's ``Distiller`` idea).

    The subclass implements :meth:`losses`, returning the named scalar losses of one batch and any detached
    metrics; the base sums the losses, updates :attr:`player` with :meth:`update` (AMP scaling, gradient clipping)
    and returns losses and metrics detached, for the logger.
    """

    player = "student"

    def losses(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def train_step(self) -> dict[str, torch.Tensor]:
        losses, metrics = self.losses()
        self.update(self.player, sum(losses.values()))
        return {**{k: v.detach() for k, v in losses.items()}, **metrics}
