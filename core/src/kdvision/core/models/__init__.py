"""Model zoo: ``create_model(name, num_classes=...)`` and ``list_models()``.

Parameter names follow the original zoos exactly (see ``docs/models.md``) so that the checkpoints those projects
published load with ``strict=True``.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..registry import Registry

MODELS = Registry("model")


def create_model(name: str, num_classes: int | None = None, *, cub: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model. ``num_classes=None`` keeps the entry's default class count.

    ``cub=True``: SDD's 224-px CUB-200-2011 variant of the architecture (same keys; :mod:`.cub200`)."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if not cub:
        return MODELS.create(name, **kwargs)
    from .cub200 import check_cub200, to_cub200

    key = check_cub200(name)
    return to_cub200(MODELS.create(key, **kwargs), key)


def build_model(name: str, num_classes: int | None = None, checkpoint: str | None = None,
                dataset: str | None = None, **kwargs: Any) -> nn.Module:
    """``create_model`` and, when ``checkpoint`` is given, load it strictly (loader rules of ``checkpoint.py``).

    ``dataset``: build the model for that dataset's channel count (:func:`channel_options`)."""
    from ..checkpoint import load_weights

    if dataset is not None:
        kwargs = {**channel_options(name, dataset), **kwargs}
    model = create_model(name, num_classes=num_classes, **kwargs)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model


def list_models(include_aliases: bool = False, task: str | None = "classification") -> list[str]:
    """Registered model names of one ``task`` (``"classification"``, ``"segmentation"``; ``None``: all).

    Task subpackages register their models through the ``kdvision.plugins`` entry point (see ``registry.py``)."""
    return MODELS.names(include_aliases=include_aliases,
                        where=None if task is None else (lambda meta: meta.get("task", "classification") == task))


def _takes_in_channels(name: str) -> bool:
    import inspect

    return "in_channels" in inspect.signature(MODELS.get(name)).parameters


def channel_options(name: str, dataset: str) -> dict[str, Any]:
    """``{"in_channels": C}`` when ``dataset`` has another channel count than the entry's default and the entry's
    builder takes ``in_channels`` (the CIFAR families do: a 1-channel ResNet for MNIST); else ``{}``."""
    from ..data import dataset_spec

    channels = dataset_spec(dataset).in_channels
    size = model_info(name).get("input_size")
    if size is not None and size[0] != channels and _takes_in_channels(name):
        return {"in_channels": channels}
    return {}


def check_model_fits(name: str, dataset: str) -> None:
    """A dataset/model mismatch (input channels, task) is a one-line ConfigError, not a shape error in a forward."""
    from ..data import dataset_spec
    from ..errors import ConfigError

    spec = dataset_spec(dataset)
    info = model_info(name)
    size = info.get("input_size")
    if size is not None and size[0] != spec.in_channels and not info.get("any_channels", False) \
            and not _takes_in_channels(name):
        raise ConfigError(f"model {name} takes {size[0]}-channel input but {dataset} has "
                          f"{spec.in_channels} channel(s)")
    task, data_task = info.get("task", "classification"), getattr(spec, "task", "classification")
    if task != data_task:
        raise ConfigError(f"model {name} is a {task} model but {dataset} is a {data_task} dataset")


def model_info(name: str) -> dict[str, Any]:
    """Registry metadata of a model: ``input_size`` (C, H, W) it was designed for, ``family``, ..."""
    return MODELS.meta(name)


# Importing the families registers them.
from . import lenet, resnet_cifar, resnet_cifar_a, wrn, vgg, resnet_repdistiller, mobilenetv2, shufflenet, imagenet  # noqa: E402,F401
from . import mobilenetv1  # noqa: E402,F401
