"""Top-1 accuracy on a labelled dataset, sharded over ranks under torchrun."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.engine.distributed import all_reduce_sum
from kdvision.core.engine.evaluation import ShardedEvaluator


class AccuracyEvaluator(ShardedEvaluator):
    """Callable ``evaluator(model) -> {"acc": top-1 fraction, "loss": mean cross-entropy}``."""

    def __call__(self, model: nn.Module) -> dict[str, float]:
        stats = torch.zeros(3, dtype=torch.float64, device=self.device)  # correct, loss sum, count
        for logits, y in self.outputs(model):
            stats[0] += (logits.argmax(1) == y).sum()
            stats[1] += F.cross_entropy(logits, y, reduction="sum")
            stats[2] += y.numel()
        correct, loss, count = all_reduce_sum(stats).tolist()
        return {"acc": correct / max(count, 1), "loss": loss / max(count, 1)}
