"""Segmentation evaluation: mIoU over the whole test set (torchmetrics), as DFAD's evaluation defines it.

DFAD accumulates one confusion matrix over the test set (pixels labelled 255 skipped), takes per-class
IoU = diag / (row sum + column sum - diag) and averages with ``nanmean``: classes absent from both predictions and
ground truth do not count. torchmetrics' ``MulticlassJaccardIndex(average="macro", ignore_index=255)`` computes
the same number (``tests/segmentation`` checks it against :func:`confusion_matrix_miou`); under torchrun each rank
evaluates its shard and torchmetrics sums the states across ranks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from kdvision.core.engine.distributed import DistInfo
from kdvision.core.engine.evaluation import ShardedEvaluator
from torch.utils.data import Dataset

from .data import IGNORE_INDEX



def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """DFAD's confusion matrix (rows: ground truth, columns: prediction); labels outside [0, K) are skipped."""
    keep = (target >= 0) & (target < num_classes)
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_matrix_miou(conf: torch.Tensor) -> dict[str, float]:
    """Reference scores of a confusion matrix: mIoU (nanmean of per-class IoU) and overall pixel accuracy."""
    conf = conf.double()
    diag = conf.diag()
    iou = diag / (conf.sum(0) + conf.sum(1) - diag)
    return {"miou": float(torch.nanmean(iou)), "pixel_acc": float(diag.sum() / conf.sum().clamp_min(1))}


class MIoUEvaluator(ShardedEvaluator):
    """Callable ``evaluator(model) -> {"miou", "pixel_acc"}`` at the test images' resolution.

    Predictions are the argmax of the logits the model returns at input size.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, dist: DistInfo = DistInfo(),
                 workers: int = 0, amp: bool = False, channels_last: bool = False) -> None:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        super().__init__(dataset, batch_size, device, dist, workers, amp, channels_last)
        self.num_classes = int(dataset.spec.num_classes)
        # validate_args=False: no per-batch host syncs; the dataset readers already reject out-of-range labels
        self.miou = MulticlassJaccardIndex(self.num_classes, average="macro", ignore_index=IGNORE_INDEX,
                                           validate_args=False).to(device)
        self.pixel_acc = MulticlassAccuracy(self.num_classes, average="micro", ignore_index=IGNORE_INDEX,
                                            validate_args=False).to(device)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.miou.reset()
        self.pixel_acc.reset()
        for logits, y in self.outputs(model):
            pred = logits.argmax(1)
            self.miou.update(pred, y)
            self.pixel_acc.update(pred, y)
        return {"miou": float(self.miou.compute()), "pixel_acc": float(self.pixel_acc.compute())}

    def sample_batch(self, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test images (evenly spaced over the split) and their masks, for prediction grids."""
        idx = torch.linspace(0, len(self.dataset) - 1, min(n, len(self.dataset))).round().long().unique().tolist()
        items = [self.dataset[i] for i in idx]
        return (torch.stack([x for x, _ in items]).to(self.device),
                torch.stack([torch.as_tensor(y) for _, y in items]).to(self.device))
