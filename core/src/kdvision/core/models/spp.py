"""Scale-decoupled (SPP) logits around any classifier of the zoo (``reference/sdd.md`` §1), without parameters.

:class:`ScaleDecoupled` replaces the original's ``*_sdd`` model copies: it wraps the plain model, taps its final
feature map with :class:`~kdvision.core.taps.FeatureMapTap` (registry metadata ``feature_map``), pools it into
N = Σ_s s² regions (:func:`~kdvision.core.losses.logit.spp_regions`) and applies the model's own linear head to
every region (:func:`~kdvision.core.losses.logit.region_logits`)::

    >>> sdd = ScaleDecoupled(create_model("resnet32x4", num_classes=100), scales=(1, 2, 4))
    >>> logits, regions = sdd(x)          # B×K (the model's own output), B×K×21 (region 0 = global)

The wrapper owns no parameters and its ``state_dict()`` has exactly the wrapped model's keys (no ``model.``
prefix, also when the wrapper sits inside another module), so RepDistiller / mdistiller checkpoints load strictly
into it and its checkpoints load into the plain model.

Head look-up (:func:`classifier_head`): registry metadata ``head`` when the model declares it, else the first of
``fc``, ``linear``, ``classifier``, ``classifier.0`` that is an ``nn.Linear`` (WRN / RepDistiller ResNets ``fc``;
ShuffleNets, ``resnetv2`` ``linear``; VGG ``classifier``; CIFAR MobileNetV2 ``classifier.0``), else the last
``nn.Linear`` (:func:`~kdvision.core.hooks.head_name`; torchvision MobileNetV2 ``classifier.1``). The region logits
use the head's weights only: a dropout in front of it (torchvision MobileNetV2) acts on the global logits in
training mode, not on the regions.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..hooks import _label, _unwrap, head_name
from ..losses.logit import parse_scales, region_logits, spp_regions
from ..taps import FeatureMapTap

__all__ = ["HEAD_NAMES", "ScaleDecoupled", "classifier_head"]

#: classifier names tried in order when the registry declares no ``head`` (``reference/sdd.md`` §1.3)
HEAD_NAMES = ("fc", "linear", "classifier", "classifier.0")

_CHILD = "model"  # the wrapped model's attribute name; hidden from state_dict keys


def classifier_head(model: nn.Module) -> str:
    """Name of the final ``nn.Linear`` classifier of ``model`` (see the module docstring for the look-up order)."""
    inner = _unwrap(model)
    modules = dict(inner.named_modules())
    name = getattr(inner, "kd_name", None)
    declared = None
    if name is not None:
        from . import MODELS

        if name in MODELS:
            declared = MODELS.meta(name).get("head")
    if declared is None:
        declared = next((n for n in HEAD_NAMES if isinstance(modules.get(n), nn.Linear)), None) or head_name(inner)
    if not isinstance(modules.get(declared), nn.Linear):
        raise ConfigError(f"model {_label(inner)}: classifier head {declared!r} is not an nn.Linear")
    return declared


class ScaleDecoupled(nn.Module):
    """``forward(x) -> (global_logits B×K, region_logits B×K×N)`` for a classifier whose head is linear on the
    globally pooled final feature map.

    ``scales``: the scale list M in concatenation order, first scale 1 (ints or ``"[1,2,4]"``); N = Σ_s s².
    ``legacy_pooling``: pool every scale from the 4×4 grid as the original does (default: each from the feature
    map directly, so region 0 is the true global average; see :func:`~kdvision.core.losses.logit.spp_regions`).
    ``head`` / ``feature_map``: explicit module name of the linear classifier, and ``(module, "input"|"output")`` of
    the feature-map tap point, for models outside the registry.

    The global logits are the wrapped model's own output; region 0 equals them up to rounding (exactly the same
    pooled feature times the same head) with the default pooling, or wherever both poolings agree (every CIFAR map).
    Hooks stay on the wrapped model until :meth:`remove`; they do nothing outside this wrapper's forward.
    """

    def __init__(self, model: nn.Module, scales: Sequence[int] | str = (1, 2, 4), legacy_pooling: bool = False,
                 head: str | None = None, feature_map: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.scales = parse_scales(scales)
        self.legacy_pooling = bool(legacy_pooling)
        self.head_name = head if head is not None else classifier_head(model)
        if not isinstance(_unwrap(model).get_submodule(self.head_name), nn.Linear):
            raise ConfigError(f"classifier head {self.head_name!r} of {_label(_unwrap(model))} is not an nn.Linear")
        self.tap = FeatureMapTap(model) if feature_map is None else FeatureMapTap(model, *feature_map)
        # public since torch 2.5; the private twin (same signature) on older versions
        post_hook = getattr(self, "register_state_dict_post_hook", None) or self._register_state_dict_hook
        post_hook(_strip_child_prefix)
        self.register_load_state_dict_pre_hook(_add_child_prefix)
        self.register_load_state_dict_post_hook(_report_plain_keys)
        self._load_prefixes: list[str] = []

    @property
    def num_regions(self) -> int:
        """N = Σ_s s²."""
        return sum(s * s for s in self.scales)

    @property
    def head(self) -> nn.Linear:
        """The wrapped model's classifier (not a child of the wrapper: no second copy of its keys)."""
        return _unwrap(self.model).get_submodule(self.head_name)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.tap.active():
            logits = self.model(x)
        fmap = self.tap.feature_map
        self.tap.clear()  # no reference to the map (and its graph) kept past this forward
        return logits, region_logits(spp_regions(fmap, self.scales, self.legacy_pooling), self.head)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a deep copy's model carries the original's hook functions, which record into the original tap: drop them
        # (the copied handles point at the copied model) and tap the copied model afresh
        super().__setstate__(state)
        old = self.tap
        old.remove()
        self.tap = FeatureMapTap(self.model, old.name, old.kind)

    def remove(self) -> None:
        """Detach the feature-map hook from the wrapped model."""
        self.tap.remove()

    def extra_repr(self) -> str:
        return f"scales={list(self.scales)}, legacy_pooling={self.legacy_pooling}, head={self.head_name!r}"


# --------------------------------------------------------------------------- state_dict without the "model." level
def _strip_child_prefix(module: ScaleDecoupled, state_dict: dict[str, Any], prefix: str,
                        local_metadata: dict[str, Any]) -> None:
    """``{prefix}model.k`` → ``{prefix}k`` in place (keys and metadata), keeping the order."""
    inner = prefix + _CHILD + "."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        own = prefix + _CHILD
        for key in [k for k in meta if k == own or k.startswith(own + ".")]:
            rel = key[len(own) + 1:]
            meta[prefix + rel if rel else prefix[:-1]] = meta.pop(key)


def _add_child_prefix(module: ScaleDecoupled, state_dict: dict[str, Any], prefix: str,
                      local_metadata: dict[str, Any], strict: bool, missing_keys: list[str],
                      unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """``{prefix}k`` → ``{prefix}model.k`` in place before loading (plain-model keys into the wrapper)."""
    module._load_prefixes.append(prefix)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + _CHILD + "." + key[len(prefix):]] = state_dict.pop(key)
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        own = prefix[:-1]
        for key in [k for k in meta if k == own or k.startswith(prefix)]:
            rel = key[len(prefix):] if key != own else ""
            meta.setdefault(prefix + _CHILD + ("." + rel if rel else ""), meta[key])


def _report_plain_keys(module: ScaleDecoupled, incompatible: Any) -> None:
    """Missing / unexpected keys named as in the plain model (without ``model.``)."""
    for prefix in module._load_prefixes:
        inner = prefix + _CHILD + "."
        for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
            keys[:] = [prefix + k[len(inner):] if k.startswith(inner) else k for k in keys]
    module._load_prefixes.clear()
