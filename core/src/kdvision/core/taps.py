"""The final feature map (before global pooling) and its pre-ReLU value, by forward hooks on named modules.

Two taps for every classifier of the zoo, declared by registry metadata (no forward is rewritten):

* :class:`FeatureMapTap` — the last feature map B×C×H×W, at the point where the network global-average-pools
  (SDD's spatial-pyramid pooling, ``reference/sdd.md`` §1.1; KDEP). Metadata ``feature_map=(module, kind)``: the
  map is that module's ``"input"`` (the global pool: ``avgpool``, VGG's ``pool4``) or ``"output"`` (torchvision
  MobileNetV2 pools ``features``' output functionally). ``pooled`` = ``adaptive_avg_pool2d(map, 1).flatten(1)``, the
  penultimate feature of :class:`~kdvision.core.hooks.TeacherTaps`.
* :class:`PreReLUTap` — the same map before the network's final activation (KDEP's ``*_pre_relu`` students and
  teacher, ``reference/kdep.md`` §1.2). Metadata ``pre_relu=(module, ...)``: the pre-activation value is the **sum of
  these modules' outputs** — one module where the final activation follows a BN or a block (WRN ``bn1``, VGG
  ``block4``, MobileNetV2 ``conv2.1``), two in a residual block (the last BN of the branch + the shortcut's output,
  or the previous block's output where the identity is the block input). ``pre_relu_activation`` names the final
  activation (``"relu"``, torchvision MobileNetV2: ``"relu6"``); ``activated`` applies it and equals the feature map.

Why sums of outputs: torchvision's ResNets add in place (``out += identity``) and apply ``nn.ReLU(inplace=True)``,
WRN and MobileNetV2 use in-place ReLUs too, so neither a hook on the block (post-ReLU) nor a reference to the
ReLU's input (overwritten) gives the pre-ReLU value. The tap keeps references to the terms and, in the hook of the
last term to arrive — before any in-place op of the model touches them — computes their sum (one add; for a
single term, one copy). The model's outputs are unchanged; gradients flow through the tapped values (a KDEP
student trains through them). A term modified in place before the sum is detected by its version counter and
reported, never silently used.

As in ``hooks.py``: hooks do nothing outside ``active()`` (a single flag test per hooked module), values stay
readable after the context until the next active forward, nothing synchronises with the host.

Unsupported: ``lenet5`` / ``lenet5_half`` (metadata ``feature_map=None``) — LeNet flattens conv3's map into an
MLP without global pooling and applies its ReLUs functionally. Models outside the registry take explicit names
(``FeatureMapTap(model, "avgpool")``, ``PreReLUTap(model, ["layer4.1.bn2", "layer4.0"])``); a registered model
without ``feature_map`` metadata falls back to the input of its last ``AdaptiveAvgPool2d`` with output size 1.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError
from .hooks import FeatureHook, _Hooks, _label, _meta, _modules_by_name, _unwrap, _version

__all__ = [
    "ACTIVATIONS",
    "FeatureMapTap",
    "PreReLUTap",
    "feature_map_point",
    "pre_relu_point",
]

#: final activations a :class:`PreReLUTap` knows (metadata ``pre_relu_activation``)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "relu6": F.relu6}


# ------------------------------------------------------------------------------------------------------- look-ups
def _global_pool_input(model: nn.Module) -> tuple[str, str]:
    pools = [n for n, m in _unwrap(model).named_modules()
             if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    if not pools:
        raise ConfigError(f"model {_label(_unwrap(model))} has no nn.AdaptiveAvgPool2d(1); pass the module whose "
                          "input (or output) is the final feature map")
    return pools[-1], "input"


def feature_map_point(model_or_name: nn.Module | str) -> tuple[str, str]:
    """``(module name, "input" | "output")``: where the final feature map before global pooling is taken.

    Registry metadata ``feature_map``; a model built outside ``create_model`` (or registered without the key) gets
    the input of its last ``AdaptiveAvgPool2d(1)``. ``feature_map=None`` (LeNet) is a ConfigError naming the model.
    """
    if not isinstance(model_or_name, str) and getattr(_unwrap(model_or_name), "kd_name", None) is None:
        return _global_pool_input(model_or_name)
    name, meta = _meta(model_or_name)
    if "feature_map" not in meta:
        if isinstance(model_or_name, str):
            raise ConfigError(f"model {name} declares no final feature map (registry metadata 'feature_map'); "
                              "pass the model itself to use the input of its global pool")
        return _global_pool_input(model_or_name)
    point = meta["feature_map"]
    if not point:
        raise ConfigError(f"model {name} has no final feature map before a global pooling "
                          f"(family {meta.get('family', '?')}: registry metadata feature_map=None)")
    module, kind = point
    return str(module), str(kind)


def pre_relu_point(model_or_name: nn.Module | str) -> tuple[tuple[str, ...], str]:
    """``(module names, activation)``: the modules whose outputs sum to the final feature map before its final
    activation, and that activation's name (a key of :data:`ACTIVATIONS`). Registry metadata ``pre_relu`` and
    ``pre_relu_activation`` (default ``"relu"``)."""
    name, meta = _meta(model_or_name)
    terms = meta.get("pre_relu")
    if not terms:
        raise ConfigError(f"model {name} declares no pre-ReLU final feature (registry metadata 'pre_relu'); "
                          "pass the module names whose outputs sum to it")
    return tuple(terms), str(meta.get("pre_relu_activation", "relu"))


def _check_map(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dim() != 4:
        raise RuntimeError(f"{what} is {tuple(t.shape)}, not a B×C×H×W feature map; tap another module")
    return t


# --------------------------------------------------------------------------------------------- final feature map
class FeatureMapTap(FeatureHook):
    """The final feature map before global pooling (B×C×H×W) of one forward.

    >>> tap = FeatureMapTap(model)                # metadata feature_map, e.g. ("avgpool", "input")
    >>> with tap.active():
    ...     logits = model(x)
    >>> tap.feature_map, tap.pooled               # B×C×H×W, B×C (= TeacherTaps' penultimate feature)

    ``module`` / ``kind`` name the tap point explicitly (``kind``: ``"input"`` or ``"output"`` of that module).
    The recorded tensor is the model's own (no copy); gradients flow through it.
    """

    def __init__(self, model: nn.Module, module: str | None = None, kind: str = "input") -> None:
        if module is None:
            module, kind = feature_map_point(model)
        if kind not in ("input", "output"):
            raise ConfigError(f"feature-map kind must be 'input' or 'output', got {kind!r}")
        super().__init__(model, [module], kind=kind)

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def feature_map(self) -> torch.Tensor:
        """B×C×H×W, the most recent active forward's final map."""
        return _check_map(self.features[0], f"the {self.kind} of module {self.name!r}")

    @property
    def pooled(self) -> torch.Tensor:
        """B×C: the global average of :attr:`feature_map`."""
        return F.adaptive_avg_pool2d(self.feature_map, 1).flatten(1)


# ------------------------------------------------------------------------------------------------ pre-ReLU tap
class PreReLUTap(_Hooks):
    """The final feature map *before* the final activation (B×C×H×W), in-place-safe.

    >>> tap = PreReLUTap(student)                 # metadata pre_relu, e.g. ("layer4.1.bn2", "layer4.0")
    >>> with tap.active():
    ...     student(x)
    >>> tap.feature_map, tap.pooled               # KDEP's f_S = tap.pooled (B×512 for resnet18_imagenet)
    >>> tap.activated                             # relu(feature_map) = the ordinary network's final map

    ``terms``: explicit module names whose outputs sum to the pre-activation value; ``activation``: its name
    (``"relu"`` / ``"relu6"``; default from metadata, else ``"relu"``). Cost per active forward: one add per extra
    term, one copy for a single term; nothing when inactive.
    """

    def __init__(self, model: nn.Module, terms: Sequence[str] | None = None, activation: str | None = None) -> None:
        super().__init__()
        if terms is None:
            terms, meta_act = pre_relu_point(model)
            activation = activation or meta_act
        if isinstance(terms, str):
            terms = [terms]
        terms = list(terms)
        activation = activation or "relu"
        if not terms:
            raise ConfigError("PreReLUTap needs at least one module name")
        if len(set(terms)) != len(terms):
            raise ConfigError(f"PreReLUTap: module names repeat in {terms}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown final activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.terms, self.activation = terms, activation
        mods = _modules_by_name(_unwrap(model), terms)
        self._parts: list[torch.Tensor | None] = [None] * len(mods)
        self._versions: list[int | None] = [None] * len(mods)
        self._value: torch.Tensor | None = None
        for i, m in enumerate(mods):
            self._handles.append(m.register_forward_hook(self._make_hook(i)))

    def _make_hook(self, i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            if not self.enabled:
                return
            if not isinstance(output, torch.Tensor):
                raise RuntimeError(f"PreReLUTap: module {self.terms[i]!r} returned {type(output).__name__}, "
                                   "not a tensor")
            self._parts[i] = output
            self._versions[i] = _version(output)
            if all(p is not None for p in self._parts):
                self._value = self._combine()

        return hook

    def _combine(self) -> torch.Tensor:
        parts = self._parts
        for name, t, v in zip(self.terms, parts, self._versions):
            if v is not None and _version(t) != v:
                raise RuntimeError(f"PreReLUTap: the output of module {name!r} was modified in place before the "
                                   "last term arrived; declare terms that stay intact until then")
        self._parts = [None] * len(parts)
        self._versions = [None] * len(parts)
        if len(parts) == 1:
            return parts[0].clone()  # type: ignore[union-attr]  # the model's in-place activation comes next
        value = parts[0] + parts[1]  # type: ignore[operator]
        for p in parts[2:]:
            value = value + p
        return value

    @contextlib.contextmanager
    def active(self) -> Iterator[PreReLUTap]:
        self._parts = [None] * len(self._parts)  # no half-recorded terms from an interrupted forward
        self._versions = [None] * len(self._versions)
        with super().active():
            yield self

    @property
    def feature_map(self) -> torch.Tensor:
        """B×C×H×W before the final activation, from the most recent active forward."""
        if self._value is None:
            raise RuntimeError(f"PreReLUTap: nothing recorded for {self.terms}; run the forward inside "
                               "`with tap.active():`")
        return _check_map(self._value, f"the pre-activation sum of {self.terms}")

    @property
    def pooled(self) -> torch.Tensor:
        """B×C: the global average of :attr:`feature_map` (KDEP's pre-ReLU pooled feature)."""
        return F.adaptive_avg_pool2d(self.feature_map, 1).flatten(1)

    @property
    def activated(self) -> torch.Tensor:
        """The final activation applied to :attr:`feature_map`: the ordinary network's final map."""
        return ACTIVATIONS[self.activation](self.feature_map)

    def clear(self) -> None:
        self._parts = [None] * len(self._parts)
        self._versions = [None] * len(self._versions)
        self._value = None

    def remove(self) -> None:
        super().remove()
        self.clear()
