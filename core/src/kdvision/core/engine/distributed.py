"""Distributed helpers: torchrun/DDP set-up (gloo on CPU, NCCL on GPU), rank queries, reductions."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op (world size 1) otherwise."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    from ..errors import ConfigError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} requested but CUDA is not available (use --device cpu)")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    elif name != "cpu":
        raise ConfigError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N, auto")
    return torch.device(name)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def rank_spread(modules: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Largest absolute difference of each module's parameters between the ranks (0.0: identical everywhere).

    DDP keeps the replicas identical only when every rank applies the same averaged gradients; a player updated
    outside DDP, or a rank that skipped a step, drifts. Called once after training: each rank's flattened
    parameters are reduced with MAX and MIN (one collective pair per module), so no rank ships its weights to
    another. Buffers are left out: BN statistics legitimately differ by the last local batch.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return {name: 0.0 for name in modules}
    spread = {}
    for name, module in modules.items():
        params = [p.detach().reshape(-1) for p in module.parameters()]
        if not params:
            continue
        flat = torch.cat(params).float()
        hi, lo = flat.clone(), flat.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        spread[name] = (hi - lo).max().item()
    return spread


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
