"""Top-1 accuracy on a labelled dataset, sharded over ranks under torchrun."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.engine.distributed import DistInfo, all_reduce_sum
from torch.utils.data import DataLoader, Dataset, Subset


class AccuracyEvaluator:
    """Callable ``evaluator(model) -> {"acc": top-1 fraction, "loss": mean cross-entropy}``.

    The loader is built once; the model is put in eval mode for the pass and restored afterwards.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, dist: DistInfo = DistInfo(),
                 workers: int = 0, amp: bool = False, channels_last: bool = False) -> None:
        if dist.enabled:
            dataset = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                 pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.device = device
        self.amp = amp
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        stats = torch.zeros(3, dtype=torch.float64, device=self.device)  # correct, loss sum, count
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        try:
            for x, y in self.loader:
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                y = y.to(self.device, non_blocking=True)
                with amp:
                    logits = model(x).float()
                stats[0] += (logits.argmax(1) == y).sum()
                stats[1] += F.cross_entropy(logits, y, reduction="sum")
                stats[2] += y.numel()
        finally:
            model.train(was_training)
        correct, loss, count = all_reduce_sum(stats).tolist()
        return {"acc": correct / max(count, 1), "loss": loss / max(count, 1)}
