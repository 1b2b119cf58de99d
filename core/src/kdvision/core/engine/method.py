"""The :class:`Method` interface: a distillation method owns its players and optimizers and implements one step."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


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
    """

    name = "method"
    task = "classification"

    def __init__(self, device: torch.device, amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16) -> None:
        self.device = device
        self.amp = amp
        self.amp_dtype = amp_dtype

    # -- to implement ----------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """One training iteration; returns named losses/metrics as (detached) device tensors — no host sync."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def eval_model(self) -> nn.Module:
        """The model whose metric is tracked (the student)."""
        return unwrap(self.modules()["student"])

    def on_epoch_start(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based), e.g. to set the learning rate of that epoch."""

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

    # -- provided ------------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules().items():
            unwrap(m).load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra", {}))
