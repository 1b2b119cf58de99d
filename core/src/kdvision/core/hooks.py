"""Features and BN statistics by forward hooks on named modules (no forward-signature changes).

Every model of the zoo exposes the same tap points through its registry metadata, so methods never need a
``return_features=True`` forward:

* :func:`bn_layer_names` — every ``BatchNorm2d`` in module order (DeepInversion / CMI / Fast / MosaicKD BN losses);
* :func:`block_names` — the family's block (stage) outputs, metadata ``blocks=(...)`` (RGAL, MosaicKD);
* :func:`head_name` — the final classifier ``nn.Linear``; its *input* is the penultimate pooled feature
  (CMI / Fast / DAFL / RGAL ``f_T``);
* :func:`cmi_feature_layers` — CMI's instance-mean tap points.

:class:`BNStatsHook` computes the three BN-statistics losses of ``reference/datafree_engine.md`` §2 from the BN
layers' *inputs*; :class:`FeatureHook` records module outputs / inputs / per-sample input means;
:class:`TeacherTaps` bundles block outputs and the penultimate feature for one forward.

Hooks do nothing outside their ``active()`` context (KD steps run the teacher without any hook work), record no
clones and never synchronise with the host. Values recorded in an active forward stay readable after the context
exits, until the next active forward overwrites them (or ``clear()``).
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn

from .errors import ConfigError
from .losses.bn import (
    batch_mean_var,
    bn_ema_update,
    bn_global_loss,
    bn_layer_loss,
    bn_momentum_blend,
)

__all__ = [
    "BNStatsHook",
    "FeatureHook",
    "TeacherTaps",
    "block_names",
    "bn_layer_names",
    "cmi_feature_layers",
    "head_name",
]

BN_MODES = ("deepinv", "momentum", "global")
FEATURE_KINDS = ("output", "input", "input_mean")

# CMI hooks the inputs of layer1..layer4 instead of every BN for resnet34 teachers (CMI ``datafree_kd.py``);
# d = 64 + 64 + 128 + 256 = 512 (layer4's output is never used).
_CMI_LAYER_OVERRIDES: dict[str, tuple[str, ...]] = {"resnet34": ("layer1", "layer2", "layer3", "layer4")}


# ------------------------------------------------------------------------------------------------------- look-ups
def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose ``named_modules()`` carry the zoo's names: strips ``torch.compile`` and (D)DP wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
            continue
        return model


def _label(model: nn.Module) -> str:
    return getattr(model, "kd_name", None) or type(model).__name__


def _meta(model_or_name: nn.Module | str) -> tuple[str, dict[str, Any]]:
    """(name, registry metadata) of a registered model or of a module built by ``create_model``."""
    from .models import model_info

    if isinstance(model_or_name, str):
        return model_or_name, model_info(model_or_name)
    model = _unwrap(model_or_name)
    name = getattr(model, "kd_name", None)
    if name is None:
        raise ConfigError(f"model {type(model).__name__} has no registry name (kd_name); build it with "
                          "create_model() or pass the tap-point names explicitly")
    return name, model_info(name)


def _modules_by_name(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    table = dict(model.named_modules())
    missing = [n for n in names if n not in table]
    if missing:
        import difflib

        hints = {n: difflib.get_close_matches(n, list(table), n=2) for n in missing}
        detail = "; ".join(f"{n!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for n, h in hints.items())
        raise ConfigError(f"model {_label(model)} has no module named {detail}")
    return [table[n] for n in names]


def bn_layer_names(model: nn.Module) -> list[str]:
    """Names of every ``nn.BatchNorm2d`` (subclasses included) of ``model``, in module order."""
    return [n for n, m in _unwrap(model).named_modules() if isinstance(m, nn.BatchNorm2d)]


def block_names(model_or_name: nn.Module | str) -> list[str]:
    """The block-output tap points of the model's family (registry metadata ``blocks``).

    WRN: ``block1..3`` (taken before the final ``bn1``); DAFL CIFAR ResNet-18/34: ``layer1..4``; option-A and
    RepDistiller CIFAR ResNets, ShuffleNets: ``layer1..3``; VGG: ``block0..4`` (the Sequentials, i.e. before the
    ReLU that ``forward`` applies after each block); ... see each family's ``MODELS.register``.
    """
    name, meta = _meta(model_or_name)
    blocks = meta.get("blocks")
    if not blocks:
        raise ConfigError(f"model {name} declares no block tap points (registry metadata 'blocks')")
    return list(blocks)


def head_name(model: nn.Module) -> str:
    """Name of the final classifier ``nn.Linear`` (metadata ``head`` if given, else the last Linear in module
    order). Its input is the penultimate pooled feature: hook it with ``FeatureHook(model, [name], "input")``."""
    model = _unwrap(model)
    name = getattr(model, "kd_name", None)
    if name is not None:
        from .models import MODELS

        if name in MODELS:
            head = MODELS.meta(name).get("head")
            if head:
                return head
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"model {_label(model)} has no nn.Linear classifier head")
    return linears[-1]


def cmi_feature_layers(model: nn.Module) -> list[str]:
    """CMI's instance-feature tap points (hook with ``kind="input_mean"``): every BatchNorm2d, except for
    ``resnet34`` teachers, where CMI hooks ``layer1..layer4`` (their *inputs*: d = 512).

    wrn40_2: 37 BN layers, d = 2704 (``reference/datafree_engine.md`` §3)."""
    name = getattr(_unwrap(model), "kd_name", None)
    if name in _CMI_LAYER_OVERRIDES:
        return list(_CMI_LAYER_OVERRIDES[name])
    return bn_layer_names(model)


# ----------------------------------------------------------------------------------------------------- base class
class _Hooks:
    """Handles, the ``enabled`` switch and ``active()``."""

    def __init__(self) -> None:
        self.enabled = False
        self._handles: list[Any] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[_Hooks]:
        """Record inside the block; outside it the hook functions return at once (no work, no references)."""
        before, self.enabled = self.enabled, True
        try:
            yield self
        finally:
            self.enabled = before

    def remove(self) -> None:
        """Detach every hook from the model."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.enabled = False


# ------------------------------------------------------------------------------------------------------ BN hook
class BNStatsHook(_Hooks):
    """BN-statistics loss of a (frozen, eval-mode) teacher from the inputs of its ``BatchNorm2d`` layers.

    Modes (``reference/datafree_engine.md`` §2):

    * ``"deepinv"``: Σ_l ‖σ²_l − running_var_l‖₂ + ‖μ_l − running_mean_l‖₂, biased variance (CMI, DeepInversion,
      DFQ, RGAL);
    * ``"momentum"`` (Fast): the same with μ_l, σ²_l blended with an EMA held by the hook,
      (1 − m)·batch + m·EMA; the EMA starts as ``None`` (no blend) and :meth:`update_ema` folds the last
      active forward's raw statistics into it (call it once per ``synthesize()``);
    * ``"global"`` (MosaicKD DFQ): one L2 norm over all layers concatenated, **unbiased** variance.

    The forward hooks only compute each layer's (mean, var) (one fused reduction, no clones); :meth:`loss` turns the
    most recent active forward's statistics into the scalar. Gradients flow to the input.
    """

    def __init__(self, model: nn.Module, mode: str = "deepinv", momentum: float = 0.9,
                 modules: Sequence[str] | None = None) -> None:
        super().__init__()
        if mode not in BN_MODES:
            raise ConfigError(f"unknown BN-statistics mode {mode!r}; valid: {', '.join(BN_MODES)}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"BN momentum must lie in [0, 1], got {momentum}")
        self.mode, self.momentum = mode, float(momentum)
        inner = _unwrap(model)
        names = bn_layer_names(inner) if modules is None else list(modules)
        mods = _modules_by_name(inner, names)
        for n, m in zip(names, mods):
            if not isinstance(m, nn.BatchNorm2d):
                raise ConfigError(f"model {_label(inner)}: module {n!r} is {type(m).__name__}, not BatchNorm2d")
            if m.running_mean is None or m.running_var is None:
                raise ConfigError(f"model {_label(inner)}: BN layer {n!r} tracks no running statistics")
        self.names: list[str] = names
        self._bns: list[nn.BatchNorm2d] = mods
        self.n_samples: int | None = None  # only the first n samples feed the statistics (None: the whole batch)
        self._unbiased = mode == "global"
        self._mean: list[torch.Tensor | None] = [None] * len(mods)
        self._var: list[torch.Tensor | None] = [None] * len(mods)
        self.ema_mean: list[torch.Tensor] | None = None
        self.ema_var: list[torch.Tensor] | None = None
        first = next(itertools.chain(inner.parameters(), inner.buffers()), None)
        self._device = first.device if first is not None else torch.device("cpu")  # where loss() puts a zero
        for i, m in enumerate(mods):
            self._handles.append(m.register_forward_hook(self._make_hook(i)))

    def __len__(self) -> int:
        return len(self._bns)

    def _make_hook(self, i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not self.enabled:
                return
            x = inputs[0]
            if self.n_samples is not None:
                x = x[: self.n_samples]
            self._mean[i], self._var[i] = batch_mean_var(x, unbiased=self._unbiased)

        return hook

    @contextlib.contextmanager
    def batch_slice(self, n: int | None) -> Iterator[BNStatsHook]:
        """Statistics from the first ``n`` samples of each batch only (CMI: global half of a 2N teacher forward)."""
        before, self.n_samples = self.n_samples, n
        try:
            yield self
        finally:
            self.n_samples = before

    def _recorded(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        missing = [n for n, m in zip(self.names, self._mean) if m is None]
        if missing:
            raise RuntimeError(f"BNStatsHook: no statistics recorded for {len(missing)} BN layer(s) "
                               f"(first: {missing[0]!r}); run the forward inside `with hook.active():`")
        return self._mean, self._var  # type: ignore[return-value]

    @property
    def stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (mean, var) of the most recent active forward (var biased, unbiased in "global" mode)."""
        means, vars_ = self._recorded()
        return list(zip(means, vars_))

    def loss(self) -> torch.Tensor:
        """The BN loss of the most recent active forward (a 0-dim tensor; exactly 0 for a model without BN)."""
        if not self._bns:
            return torch.zeros((), device=self._device)
        means, vars_ = self._recorded()
        rms = [m.running_mean for m in self._bns]
        rvs = [m.running_var for m in self._bns]
        if self.mode == "global":
            return bn_global_loss(means, vars_, rms, rvs)
        if self.mode == "momentum" and self.ema_mean is not None:
            blended = [bn_momentum_blend(mu, v, em, ev, self.momentum)
                       for mu, v, em, ev in zip(means, vars_, self.ema_mean, self.ema_var)]
            means, vars_ = [b[0] for b in blended], [b[1] for b in blended]
        return torch.stack([bn_layer_loss(mu, v, rm, rv) for mu, v, rm, rv in zip(means, vars_, rms, rvs)]).sum()

    def update_ema(self) -> None:
        """Fold the most recent active forward's raw batch statistics into the EMA (Fast's ``update_mmt``):
        the first call copies them, later ones compute m·EMA + (1 − m)·batch."""
        if not self._bns:
            return
        means, vars_ = self._recorded()
        ema_mean = self.ema_mean or [None] * len(means)
        ema_var = self.ema_var or [None] * len(vars_)
        new = [bn_ema_update(em, ev, mu, v, self.momentum) for em, ev, mu, v in zip(ema_mean, ema_var, means, vars_)]
        self.ema_mean, self.ema_var = [n[0] for n in new], [n[1] for n in new]

    def clear(self) -> None:
        """Drop the recorded statistics (and the graph they hold); the EMA is kept."""
        self._mean = [None] * len(self._bns)
        self._var = [None] * len(self._bns)

    def state_dict(self) -> dict[str, Any]:
        """The EMA (the hook's only persistent state), for bit-exact resume."""
        return {"mode": self.mode, "momentum": self.momentum, "layers": list(self.names),
                "ema_mean": None if self.ema_mean is None else [t.clone() for t in self.ema_mean],
                "ema_var": None if self.ema_var is None else [t.clone() for t in self.ema_var]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layers = list(state.get("layers", self.names))
        if layers != self.names:
            raise ConfigError(f"BNStatsHook state is for {len(layers)} BN layers {layers[:2]}..., this hook has "
                              f"{len(self.names)} {self.names[:2]}...")
        if state.get("ema_mean") is None:
            self.ema_mean = self.ema_var = None
            return
        self.ema_mean = [t.detach().to(m.running_mean.device, m.running_mean.dtype).clone()
                         for t, m in zip(state["ema_mean"], self._bns)]
        self.ema_var = [t.detach().to(m.running_var.device, m.running_var.dtype).clone()
                        for t, m in zip(state["ema_var"], self._bns)]

    def remove(self) -> None:
        super().remove()
        self.clear()


# ------------------------------------------------------------------------------------------------- feature hook
class FeatureHook(_Hooks):
    """Records, for each named module, its output (``kind="output"``), its first positional input (``"input"``) or
    the per-sample spatial mean of that input, B×C (``"input_mean"``, CMI's instance features; a 2-D input is
    returned as is). Gradients flow through the recorded tensors."""

    def __init__(self, model: nn.Module, names: Sequence[str], kind: str = "output") -> None:
        super().__init__()
        if kind not in FEATURE_KINDS:
            raise ConfigError(f"unknown feature kind {kind!r}; valid: {', '.join(FEATURE_KINDS)}")
        if isinstance(names, str):
            names = [names]
        self.names, self.kind = list(names), kind
        mods = _modules_by_name(_unwrap(model), self.names)
        self._feats: list[torch.Tensor | None] = [None] * len(mods)
        self._versions: list[int | None] = [None] * len(mods)
        for i, m in enumerate(mods):
            self._handles.append(m.register_forward_hook(self._make_hook(i)))

    def _make_hook(self, i: int):
        kind = self.kind

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            if not self.enabled:
                return
            if kind == "output":
                t = output
            else:
                t = inputs[0]
                if kind == "input_mean" and t.dim() > 2:
                    t = t.flatten(2).mean(2)
            self._feats[i] = t
            self._versions[i] = _version(t)

        return hook

    @property
    def features(self) -> list[torch.Tensor]:
        """The recorded tensors of the most recent active forward, in the order of ``names``."""
        feats = self._feats
        for name, t, v in zip(self.names, feats, self._versions):
            if t is None:
                raise RuntimeError(f"FeatureHook: nothing recorded for module {name!r}; run the forward inside "
                                   "`with hook.active():`")
            if v is not None and _version(t) != v:
                raise RuntimeError(f"FeatureHook: the {self.kind} of module {name!r} was modified in place after "
                                   "it was recorded (an in-place op in the model's forward); tap another module")
        return list(feats)  # type: ignore[arg-type]

    def concat(self) -> torch.Tensor:
        """The features flattened per sample and concatenated along dim 1 (B × Σ d)."""
        return torch.cat([f.flatten(1) for f in self.features], 1)

    def clear(self) -> None:
        self._feats = [None] * len(self._feats)
        self._versions = [None] * len(self._versions)

    def remove(self) -> None:
        super().remove()
        self.clear()


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except (RuntimeError, AttributeError):  # inference-mode tensors have no version counter
        return None


# ----------------------------------------------------------------------------------------------- teacher taps
class TeacherTaps:
    """Block outputs and the penultimate pooled feature of one forward, for every family of the zoo.

    >>> taps = TeacherTaps(teacher)
    >>> with taps.active():
    ...     logits = teacher(x)
    >>> taps.blocks, taps.penultimate          # [B×C×H×W, ...], B×C (the input of the classifier head)

    ``blocks`` / ``penultimate`` may also be explicit module names (a list / a Linear's name) or ``False``.
    Replaces the ``return_features=True`` forwards of CMI / Fast (pooled feature), MosaicKD (block outputs) and
    RGAL (both).
    """

    def __init__(self, model: nn.Module, blocks: bool | Sequence[str] = True,
                 penultimate: bool | str = True) -> None:
        self._blocks: FeatureHook | None = None
        self._pen: FeatureHook | None = None
        if blocks:
            names = block_names(model) if blocks is True else list(blocks)  # type: ignore[arg-type]
            self._blocks = FeatureHook(model, names, kind="output")
        if penultimate:
            head = head_name(model) if penultimate is True else str(penultimate)
            self._pen = FeatureHook(model, [head], kind="input")
        self.block_names = [] if self._blocks is None else list(self._blocks.names)
        self.head_name = None if self._pen is None else self._pen.names[0]

    @property
    def hooks(self) -> list[FeatureHook]:
        return [h for h in (self._blocks, self._pen) if h is not None]

    @property
    def enabled(self) -> bool:
        return any(h.enabled for h in self.hooks)

    @contextlib.contextmanager
    def active(self) -> Iterator[TeacherTaps]:
        with contextlib.ExitStack() as stack:
            for h in self.hooks:
                stack.enter_context(h.active())
            yield self

    @property
    def blocks(self) -> list[torch.Tensor]:
        if self._blocks is None:
            raise RuntimeError("TeacherTaps was built with blocks=False")
        return self._blocks.features

    @property
    def penultimate(self) -> torch.Tensor:
        if self._pen is None:
            raise RuntimeError("TeacherTaps was built with penultimate=False")
        return self._pen.features[0].flatten(1)

    def clear(self) -> None:
        for h in self.hooks:
            h.clear()

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
