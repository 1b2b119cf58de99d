"""The evaluation pass every task's evaluator shares: a sharded, unshuffled loader and eval-mode predictions."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from .distributed import DistInfo


class ShardedEvaluator:
    """Base of the evaluators: ``evaluator(model) -> {metric: value}``.

    The loader is built once; under torchrun each rank reads every ``world_size``-th item and subclasses reduce
    their on-device statistics across ranks. :meth:`outputs` runs the model in eval mode (restored afterwards),
    under ``no_grad`` and, with ``amp``, bf16 autocast, and yields ``(float logits, targets)`` on the device.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, dist: DistInfo = DistInfo(),
                 workers: int = 0, amp: bool = False, channels_last: bool = False) -> None:
        self.dataset = dataset
        if dist.enabled:
            dataset = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                 pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.device, self.amp = device, amp
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def outputs(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        was_training = model.training
        model.eval()
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        try:
            with torch.no_grad():
                for x, y in self.loader:
                    x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                    y = y.to(self.device, non_blocking=True)
                    with amp:
                        logits = model(x)
                    yield logits.float(), y
        finally:
            model.train(was_training)
