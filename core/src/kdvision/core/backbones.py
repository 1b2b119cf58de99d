"""Backbone weights for transfer: read any of the files a KDEP pipeline meets, load them strictly minus the head.

:func:`read_backbone` returns a **torchvision-format** state_dict of a ResNet or MobileNetV2 from

- a raw state_dict, or ``{'state_dict' | 'model' | ...: state_dict}`` (``module.`` stripped), e.g. torchvision files;
- a kdvision training checkpoint (``{'format': 'kdvision-train-state', 'state_dict': <the tracked model>, ...}``);
- a robustness / KDEP training checkpoint (``reference/kdep.md`` §5.1): ``{'model': {'module.normalizer.*',
  'module.model.model.<tv keys>', 'module.attacker.normalize.*', 'module.attacker.model.model.<tv keys>'}}`` —
  also without the DummyModel level (``module.model.<tv keys>``, the §5.2 export) and KDEP's semseg export (§5.3:
  torchvision keys plus the normaliser buffers left in). Keys containing ``emb``, ``l2norm`` or ``feat_scale`` and
  the normaliser buffers are dropped; the attacker's copy must equal the model's;
- a KDEP / tonylins-layout MobileNetV2 (``features.i.conv.{0,1,3,4,6,7}``, ``conv.{0,1}``, ``classifier``),
  renamed to torchvision's layout (§5.3, last paragraph; :func:`tonylins_to_torchvision`).

:func:`load_backbone` loads such a dict into a model strictly except the head prefixes it is told to skip (the head
is replaced downstream) and returns a :class:`LoadReport`. Every problem is one :class:`CheckpointError` line.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from .checkpoint import CONTAINER_KEYS, _is_state_dict, read_checkpoint
from .errors import CheckpointError

__all__ = ["ARCHS", "LoadReport", "canonical_arch", "detect_arch", "build_torchvision", "check_arch",
           "read_backbone", "load_backbone", "tonylins_to_torchvision", "torchvision_to_tonylins",
           "is_tonylins_mnv2"]

_SHOW = 3

#: canonical arch name -> torchvision builder name
ARCHS = {"R18": "resnet18", "R34": "resnet34", "R50": "resnet50", "R101": "resnet101", "R152": "resnet152",
         "mnv2": "mobilenet_v2"}
_ALIASES = {"r18": "R18", "r34": "R34", "r50": "R50", "r101": "R101", "r152": "R152", "mnv2": "mnv2",
            "mobilenetv2": "mnv2", "mobilenet_v2": "mnv2", "mobilenet": "mnv2", "mobilenetv2_imagenet": "mnv2"}
for _c, _tv in list(ARCHS.items()):
    _ALIASES[_tv] = _c
    _ALIASES[f"{_tv}_imagenet"] = _c
_RESNET_BLOCKS = {(2, 2, 2, 2, False): "R18", (3, 4, 6, 3, False): "R34", (3, 4, 6, 3, True): "R50",
                  (3, 4, 23, 3, True): "R101", (3, 8, 36, 3, True): "R152"}
_DROP_SUBSTRINGS = ("emb", "l2norm", "feat_scale")  # KDEP's projection / scaling extras (§5.2, §5.3 rule 1)
_KDVISION_FORMAT = "kdvision-train-state"          # engine.trainer.CKPT_FORMAT (not imported: keeps this light)


def _fmt(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def canonical_arch(arch: str) -> str:
    """``'R18'`` / ``'resnet18'`` / ``'resnet18_imagenet'`` -> ``'R18'``; MobileNetV2 spellings -> ``'mnv2'``."""
    key = _ALIASES.get(str(arch).lower())
    if key is None:
        raise CheckpointError(f"unknown backbone arch {arch!r} (known: {', '.join(ARCHS)}, or the torchvision / "
                              "zoo names resnet18, resnet18_imagenet, mobilenet_v2, mobilenetv2_imagenet, ...)")
    return key


def build_torchvision(arch: str, device: str | torch.device | None = None) -> nn.Module:
    """The torchvision classifier of ``arch`` with random weights (``weights=None``; never downloads)."""
    from torchvision import models as tvm

    name = ARCHS[canonical_arch(arch)]
    if device is None:
        return getattr(tvm, name)(weights=None)
    with torch.device(device):
        return getattr(tvm, name)(weights=None)


# -- MobileNetV2 layouts ------------------------------------------------------------------------------------------
_TONY_BLOCK = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(.+)$")
_TV_BLOCK = re.compile(r"^features\.(\d+)\.conv\.(\d+(?:\.\d+)?)\.(.+)$")
_TONY_FIRST = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}                          # features.1 (no expansion)
_TONY_EXPANDED = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}  # features.2 .. 17


def is_tonylins_mnv2(sd: Mapping[str, torch.Tensor]) -> bool:
    """A MobileNetV2 state_dict in the tonylins / KDEP layout (final 1×1 conv under ``conv.``)."""
    return "features.0.0.weight" in sd and "conv.0.weight" in sd and "features.18.0.weight" not in sd


def tonylins_to_torchvision(sd: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename a tonylins-layout MobileNetV2 to torchvision's (``reference/kdep.md`` §5.3)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        new = k
        m = _TONY_BLOCK.match(k)
        if m:
            idx, j, rest = m.groups()
            table = _TONY_FIRST if idx == "1" else _TONY_EXPANDED
            if j not in table:
                raise CheckpointError(f"tonylins MobileNetV2 key {k} has no torchvision counterpart")
            new = f"features.{idx}.conv.{table[j]}.{rest}"
        elif k.startswith("conv."):
            new = "features.18." + k[len("conv."):]
        elif k.startswith("classifier.") and not k.startswith("classifier.1."):
            new = "classifier.1." + k[len("classifier."):]
        out[new] = v
    return out


def torchvision_to_tonylins(sd: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The inverse of :func:`tonylins_to_torchvision` (KDEP's semseg MobileNetV2 expects this layout)."""
    inv_first = {v: k for k, v in _TONY_FIRST.items()}
    inv_exp = {v: k for k, v in _TONY_EXPANDED.items()}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        new = k
        m = _TV_BLOCK.match(k)
        if m:
            idx, j, rest = m.groups()
            table = inv_first if idx == "1" else inv_exp
            if j not in table:
                raise CheckpointError(f"torchvision MobileNetV2 key {k} has no tonylins counterpart")
            new = f"features.{idx}.conv.{table[j]}.{rest}"
        elif k.startswith("features.18."):
            new = "conv." + k[len("features.18."):]
        elif k.startswith("classifier.1."):
            new = "classifier." + k[len("classifier.1."):]
        out[new] = v
    return out


# -- architecture detection and checks ----------------------------------------------------------------------------
def detect_arch(sd: Mapping[str, torch.Tensor]) -> str | None:
    """``'R18'`` … ``'R152'`` or ``'mnv2'`` from a torchvision-format state_dict's key structure; None otherwise.

    Only the block structure is looked at: :func:`check_arch` then compares every shape (a wide ResNet-50 has
    ResNet-50's keys and fails there).
    """
    if "features.18.0.weight" in sd and "features.17.conv.3.weight" in sd:
        return "mnv2"
    if "conv1.weight" not in sd or "layer1.0.conv1.weight" not in sd:
        return None
    blocks = []
    for i in range(1, 5):
        ids = {int(m.group(1)) for k in sd for m in [re.match(rf"layer{i}\.(\d+)\.", k)] if m}
        blocks.append(len(ids))
    return _RESNET_BLOCKS.get((*blocks, "layer1.0.conv3.weight" in sd))


def check_arch(sd: Mapping[str, torch.Tensor], arch: str, *, skip: tuple[str, ...] = ("fc.", "classifier."),
               source: str = "checkpoint") -> None:
    """Raise one :class:`CheckpointError` unless ``sd`` is exactly torchvision's ``arch`` (minus ``skip``)."""
    arch = canonical_arch(arch)
    own = build_torchvision(arch, device="meta").state_dict()
    problems = _mismatch(own, sd, skip)
    if problems:
        found = detect_arch(sd)
        hint = f" (the weights look like {found})" if found and found != arch else ""
        raise CheckpointError(f"{source} is not a torchvision {arch} backbone{hint}: " + "; ".join(problems))


def _skipped(key: str, skip: tuple[str, ...]) -> bool:
    return key.startswith(skip)


def _mismatch(own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], skip: tuple[str, ...],
              ) -> list[str]:
    missing = [k for k in own if not _skipped(k, skip) and k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if not _skipped(k, skip) and k not in own and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if not _skipped(k, skip) and k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_fmt(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_fmt(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {len(shapes)} (checkpoint vs model): {_fmt(shapes)}")
    return problems


# -- reading ------------------------------------------------------------------------------------------------------
def _unwrap(obj, source: str) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, Mapping) and obj.get("format") == _KDVISION_FORMAT:
        sd = obj.get("state_dict")
        if not _is_state_dict(sd):
            raise CheckpointError(f"{source} is a kdvision training checkpoint without a model state_dict")
        return OrderedDict(sd)
    if _is_state_dict(obj):
        return OrderedDict(obj)
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return OrderedDict(obj[key])
        shown = ", ".join(map(str, list(obj)[:8])) or "none"
        raise CheckpointError(f"{source} holds no state_dict (top-level keys: {shown})")
    raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state_dict")


def _strip_robustness(sd: "OrderedDict[str, torch.Tensor]", source: str) -> "OrderedDict[str, torch.Tensor]":
    """Undo DataParallel / AttackerModel / DummyModel wrapping; drop normalisers; check the attacker's copy."""
    sd = _strip_prefix(sd, "module.")
    # normaliser buffers (also left in by KDEP's semseg export, with or without ``module.``)
    norm = re.compile(r"^(module\.)?(normalizer|attacker\.normalize)\.")
    sd = OrderedDict((k, v) for k, v in sd.items()
                     if not norm.match(k) and not any(s in k for s in _DROP_SUBSTRINGS))
    is_robust = any(k.startswith(("model.", "attacker.model.")) for k in sd)
    if not is_robust:
        return sd
    model, attacker, other = OrderedDict(), OrderedDict(), []
    for k, v in sd.items():
        if k.startswith("attacker.model."):
            attacker[k[len("attacker.model."):]] = v
        elif k.startswith("model."):
            model[k[len("model."):]] = v
        else:
            other.append(k)
    if other:
        raise CheckpointError(f"{source}: robustness checkpoint with keys outside model/attacker/normalizer: "
                              f"{_fmt(other)}")
    # robustness's DummyModel level (custom architectures, ``add_custom_forward=True``)
    model, attacker = _strip_prefix(model, "model."), _strip_prefix(attacker, "model.")
    if not model:  # only the attacker's copy was kept
        model = attacker
    elif attacker:
        if set(model) != set(attacker):
            diff = sorted(set(model) ^ set(attacker))
            raise CheckpointError(f"{source}: the model and attacker copies hold different keys: {_fmt(diff)}")
        differ = [k for k in model if model[k].shape != attacker[k].shape or not torch.equal(model[k], attacker[k])]
        if differ:
            raise CheckpointError(f"{source}: the model and attacker copies differ in {len(differ)} tensors: "
                                  f"{_fmt(differ)}")
    return model


def _strip_prefix(sd: "OrderedDict[str, torch.Tensor]", prefix: str) -> "OrderedDict[str, torch.Tensor]":
    if sd and all(k.startswith(prefix) for k in sd):
        return OrderedDict((k[len(prefix):], v) for k, v in sd.items())
    return sd


def read_backbone(path: str | os.PathLike, arch: str | None = None) -> dict[str, torch.Tensor]:
    """torchvision-format state_dict of a ResNet / MobileNetV2 backbone read from ``path`` (module docstring).

    ``fc.*`` / ``classifier.*`` are kept when present (callers skip them when loading). With ``arch`` (``'R18'``,
    ``'R50'``, ``'mnv2'`` or a torchvision / zoo name) the result is checked to be exactly that torchvision
    architecture apart from the head; without it, a ResNet / MobileNetV2 is recognised from its keys (anything
    else is returned as read). Any problem is one :class:`CheckpointError`.
    """
    source = str(path)
    sd = _unwrap(read_checkpoint(path), source)
    sd = _strip_robustness(sd, source)
    if not sd:
        raise CheckpointError(f"{source} holds no backbone weights once wrappers and normalisers are removed")
    if is_tonylins_mnv2(sd):
        sd = tonylins_to_torchvision(sd)
    if arch is not None:
        check_arch(sd, arch, source=source)
    return dict(sd)


# -- loading ------------------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What :func:`load_backbone` did: loaded keys, tolerated missing counters, left-out head keys."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)     #: only BN ``num_batches_tracked`` counters (kept at 0)
    unexpected: list[str] = field(default_factory=list)  #: only BN counters the model has no place for (FrozenBN)
    skipped: list[str] = field(default_factory=list)     #: head keys of the model and the state, left out
    what: str = "backbone"

    def __str__(self) -> str:
        def part(name: str, keys: list[str]) -> str:
            return f"{len(keys)} {name}" + (f" ({_fmt(keys)})" if keys else "")

        return (f"{self.what}: " + ", ".join([part("matched", self.matched), part("missing", self.missing),
                                              part("unexpected", self.unexpected), part("skipped", self.skipped)]))


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                  skip: Iterable[str] = ("fc.", "classifier."), what: str = "backbone") -> LoadReport:
    """Load ``state`` into ``model`` strictly, except keys under the ``skip`` prefixes (a head replaced downstream).

    Both the model's and the state's keys under ``skip`` are left out and listed in ``skipped``. Any other
    missing, unexpected or shape-mismatched key is one :class:`CheckpointError` naming the first few; only
    BatchNorm ``num_batches_tracked`` counters are tolerated, and reported: missing (old files lack them) or
    unexpected (a model with ``FrozenBatchNorm2d`` has none).
    """
    skip = tuple(skip)
    own = model.state_dict()
    problems = _mismatch(own, state, skip)
    if problems:
        name = getattr(model, "kd_name", type(model).__name__)
        raise CheckpointError(f"{what} does not match {name}: " + "; ".join(problems))
    load = OrderedDict((k, v) for k, v in state.items() if not _skipped(k, skip) and k in own)
    model.load_state_dict(load, strict=False)  # some models (smp encoders) override it and return None
    after = model.state_dict()
    differ = [k for k, v in load.items() if not torch.equal(after[k].to(v.device), v)]
    if differ:  # cannot happen after _mismatch unless the model's load_state_dict drops keys; check anyway
        raise CheckpointError(f"{what}: {len(differ)} tensors did not load into the model: {_fmt(differ)}")
    skipped = list(dict.fromkeys([k for k in own if _skipped(k, skip)] + [k for k in state if _skipped(k, skip)]))
    return LoadReport(matched=list(load), missing=[k for k in own if not _skipped(k, skip) and k not in state],
                      unexpected=[k for k in state if not _skipped(k, skip) and k not in own], skipped=skipped,
                      what=what)
