"""Pieces shared by the classification entry points: presets and the classification task adapter."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kdvision.core.engine.config import load_yaml
from kdvision.core.recipes.task import TaskAdapter

from .evaluation import AccuracyEvaluator

CONFIG_DIR = Path(__file__).with_name("configs")


def load_preset(name: str) -> dict[str, Any]:
    """A preset shipped in ``kdvision/classification/configs/NAME.yaml``."""
    return load_yaml(CONFIG_DIR / f"{name}.yaml")


def _train_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"train_acc": (logits.argmax(1) == y).float().mean()}


CLASSIFICATION = TaskAdapter(name="classification", metric="acc", make_evaluator=AccuracyEvaluator,
                             loss=F.cross_entropy, train_metrics=_train_metrics)
