"""Pieces shared by the classification entry points: dataset/model resolution and evaluation set-up."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from kdvision.core.data import (
    NORMALIZATION,
    dataset_spec,
    find_split,
    get_dataset,
    is_embedded,
)
from kdvision.core.engine.config import RunConfig, load_yaml
from kdvision.core.engine.runner import RunContext, check_data_root
from kdvision.core.errors import ConfigError
from kdvision.core.models import model_info

from .evaluation import AccuracyEvaluator

CONFIG_DIR = Path(__file__).with_name("configs")


def load_preset(name: str) -> dict[str, Any]:
    """A preset shipped in ``kdvision/classification/configs/NAME.yaml``."""
    return load_yaml(CONFIG_DIR / f"{name}.yaml")


def normalization_of(dataset: str, normalize: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if normalize is None:
        spec = dataset_spec(dataset)
        return tuple(spec.mean), tuple(spec.std)
    if normalize not in NORMALIZATION:
        raise ConfigError(f"unknown normalisation {normalize!r}; valid: {', '.join(sorted(NORMALIZATION))}")
    return NORMALIZATION[normalize]


def check_model_fits(model_name: str, dataset: str) -> None:
    """A dataset/model mismatch (input channels) is a one-line error, not a shape error deep in a forward."""
    spec = dataset_spec(dataset)
    info = model_info(model_name)
    size = info.get("input_size")
    if size is not None and size[0] != spec.in_channels and not info.get("any_channels", False):
        raise ConfigError(f"model {model_name} takes {size[0]}-channel input but {dataset} has "
                          f"{spec.in_channels} channel(s)")


def data_root_of(dataset: str, data_root: str | None) -> str | None:
    """The root to read ``dataset`` from (None for embedded datasets, which ignore it)."""
    return None if is_embedded(dataset) else data_root


def make_evaluator(ctx: RunContext, cfg: RunConfig, *, dataset: str, normalize: str | None, batch_size: int,
                   workers: int, explicit_root: bool, warn_if_missing: str) -> AccuracyEvaluator | None:
    """Accuracy on the test split, or None (with one warning line) when the split is not available."""
    root = data_root_of(dataset, cfg.data_root)
    ok = check_data_root(root, explicit_root, lambda: find_split(dataset, root, "test"), dataset)
    if not ok:
        ctx.log.warning(f"warning: no {dataset} test split under {root!r}; {warn_if_missing}")
        return None
    ds = get_dataset(dataset, root, split="test", normalize=normalize)
    return AccuracyEvaluator(ds, batch_size, ctx.device, ctx.dist, workers, cfg.amp, cfg.channels_last)


def describe_plan(title: str, items: dict[str, Any]) -> str:
    width = max(len(k) for k in items)
    return "\n".join([title] + [f"  {k:<{width}}  {v}" for k, v in items.items()])


def param_count(m: nn.Module) -> str:
    n = sum(p.numel() for p in m.parameters())
    return f"{n / 1e6:.3f} M" if n >= 1e5 else f"{n:,}"
