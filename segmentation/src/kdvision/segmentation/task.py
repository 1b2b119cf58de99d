"""The segmentation task adapter: mIoU evaluation, DFAD's focal loss, prediction grids, dataset options."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.data import dataset_normalization
from kdvision.core.engine.trainer import denormalize
from kdvision.core.recipes.task import TaskAdapter

from .data import IGNORE_INDEX, colorize, palette_of
from .evaluation import MIoUEvaluator


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """DFAD's teacher loss: per-pixel CE scaled by alpha * (1 - exp(-CE))^gamma, averaged over **all** pixels.

    Ignored pixels contribute 0 but count in the denominator, as in the original.
    """
    ce = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=ignore_index)
    return (alpha * (1 - torch.exp(-ce)) ** gamma * ce).mean()


def _train_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    keep = y != IGNORE_INDEX
    return {"pixel_acc": ((logits.argmax(1) == y) & keep).sum() / keep.sum().clamp_min(1)}


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(x).argmax(1)
    finally:
        model.train(was_training)


def prediction_grid(images: torch.Tensor, reference: Any, model: nn.Module, *, palette: torch.Tensor,
                    norm: tuple) -> torch.Tensor:
    """For each image, three tiles: the image, the reference mask (a teacher's prediction, or ground truth) and
    ``model``'s prediction, colour-coded with ``palette`` (ignored pixels black). Models run in eval mode."""
    if isinstance(reference, nn.Module):
        reference = _predict(reference, images)
    pred = _predict(model, images)
    tiles = [denormalize(images.detach().float().cpu(), *norm)]
    if reference is not None:
        tiles.append(colorize(reference.cpu(), palette).float() / 255)
    tiles.append(colorize(pred.cpu(), palette).float() / 255)
    return torch.stack(tiles, 1).flatten(0, 1)  # (B * tiles, 3, H, W), one row per image


def segmentation_task(dataset: str, normalize: str | None = None, **teacher_options: Any) -> TaskAdapter:
    """The adapter for ``dataset`` (palette and normalisation are the dataset's)."""
    palette = palette_of(dataset)
    norm = dataset_normalization(dataset, normalize)
    return TaskAdapter(
        name="segmentation", metric="miou", make_evaluator=MIoUEvaluator, loss=focal_loss,
        train_metrics=_train_metrics,
        render=lambda images, reference, model: prediction_grid(images, reference, model, palette=palette,
                                                                norm=norm),
        render_nrow=6,  # two (image, reference, prediction) triples per row
        teacher_options=dict(teacher_options),
        dataset_options=_dataset_options,
    )


def _dataset_options(cfg: Any) -> dict[str, int]:
    """Resize (short side) and crop size of real images: the config's ``resize`` and ``crop_size`` (DFAD
    configs: the generated ``img_size``); unset keeps the dataset's defaults (256 / 128)."""
    opts = {}
    if getattr(cfg, "resize", None):
        opts["resize"] = int(cfg.resize)
    crop = getattr(cfg, "crop_size", None) or getattr(cfg, "img_size", None)
    if crop:
        opts["crop_size"] = int(crop)
    return opts
