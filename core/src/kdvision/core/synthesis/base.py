"""The :class:`Synthesizer` interface shared by every data-free method.

``synthesize()`` runs one round of the inner optimisation (generator / latent codes / pixels) and, for pool-based
methods, adds the round's images to the device-resident :class:`~kdvision.core.synthesis.pool.ImagePool`;
``sample(n)`` returns one normalised batch for a KD step. The teacher is frozen throughout; during synthesis the
student runs in eval mode with its parameters frozen as well, so backward passes compute input gradients only
(the originals computed and then discarded weight gradients of both networks).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ..engine.method import freeze, unwrap
from ..hooks import BNStatsHook
from .augment import Augment, Normalizer
from .pool import ImagePool


def sorted_targets(n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Uniform random class targets, sorted (for readable sample grids), as in CMI / DeepInversion / RGAL."""
    return torch.randint(0, num_classes, (n,)).sort().values.to(device)


class Synthesizer:
    """Base class; subclasses implement :meth:`synthesize` and :meth:`sample`.

    Every hyper-parameter is a required keyword: the one home of their values is the data-free config
    (:class:`~kdvision.core.recipes.datafree_config.DataFreeConfig` and the presets), which
    :func:`~kdvision.core.synthesis.registry.build_synthesizer` maps onto the constructors. Only technical switches
    (``amp``, ``amp_dtype``, ``channels_last``) have defaults.
    """

    name = "synthesizer"
    uses_pool = False

    def __init__(self, teacher: nn.Module, student: nn.Module, *, num_classes: int,
                 image_shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 batch_size: int, g_steps: int, device: torch.device, bn: float, bn_mode: str,
                 bn_momentum: float, amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16,
                 channels_last: bool = False) -> None:
        self.teacher = freeze(teacher)
        self.student = student
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.batch_size = batch_size
        self.g_steps = g_steps
        self.device = device
        self.amp, self.amp_dtype = amp, amp_dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.normalizer = Normalizer(mean, std).to(device)
        self.bn = bn
        self.bn_hook = BNStatsHook(unwrap(teacher), mode=bn_mode, momentum=bn_momentum) if bn > 0 else None
        self.rounds = 0  # completed synthesize() calls
        self.last_images: torch.Tensor | None = None  # the last round's images in [0, 1] (grids)

    # -- helpers ------------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format)

    @contextlib.contextmanager
    def frozen_student(self) -> Iterator[nn.Module]:
        """The student in eval mode with frozen parameters (input gradients only); restored to train mode."""
        student = unwrap(self.student)
        params = [p for p in student.parameters() if p.requires_grad]
        student.eval()
        for p in params:
            p.requires_grad_(False)
        try:
            yield student
        finally:
            for p in params:
                p.requires_grad_(True)
            student.train()

    def bn_loss(self) -> torch.Tensor:
        return self.bn_hook.loss()

    def teacher_forward(self, x: torch.Tensor, bn_slice: int | None = None) -> torch.Tensor:
        """T(x) with the BN-statistics hook active (on the first ``bn_slice`` samples only when given)."""
        if self.bn_hook is None:
            return self.teacher(x)
        with self.bn_hook.active(), self.bn_hook.batch_slice(bn_slice):
            return self.teacher(x)

    # -- interface ----------------------------------------------------------------------------------------------
    def synthesize(self) -> dict[str, torch.Tensor]:
        """One synthesis round; returns named losses as device tensors (no host sync)."""
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        """A normalised batch of ``n`` images for one KD step."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Trained players owned by the synthesizer (checkpointed)."""
        return {}

    def optimizers(self) -> dict[str, Optimizer]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rounds": self.rounds}
        if self.bn_hook is not None:
            state["bn_hook"] = self.bn_hook.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds = state["rounds"]
        if self.bn_hook is not None and "bn_hook" in state:
            self.bn_hook.load_state_dict(state["bn_hook"])

    def preview(self) -> torch.Tensor | None:
        """Images in [0, 1] to show in sample grids."""
        return self.last_images

    def describe(self) -> dict[str, str]:
        """Lines for the ``--dry-run`` plan."""
        return {}


class PoolSynthesizer(Synthesizer):
    """A synthesizer whose rounds fill an :class:`ImagePool` that KD batches are sampled from.

    ``pair_sample``: every sampled image comes as two independently augmented views (RGAL's ``--pair_sample``;
    a batch of ``n`` is then 2n images, the two halves from the same pool indices).
    ``augment``: the in-domain dataset's training augmentation (``Augment.from_spec(spec)``), applied to pooled
    images when sampled and, by the generator-based synthesizers, in their kornia views.
    """

    uses_pool = True

    def __init__(self, *args: Any, pool_dtype: str, pair_sample: bool, augment: Augment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.augment = augment
        self.pool = ImagePool(self.image_shape, self.device, dtype=pool_dtype, augment=augment)
        self.pair_sample = pair_sample

    def sample(self, n: int) -> torch.Tensor:
        return self.layout(self.pool.sample(n, self.normalizer, views=2 if self.pair_sample else 1))

    def add_to_pool(self, images: torch.Tensor) -> None:
        self.pool.add(images)
        self.last_images = images.detach()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pool": self.pool.state_dict(), "last_images": self.last_images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pool.load_state_dict(state["pool"])
        self.last_images = state.get("last_images")
        if self.last_images is not None:
            self.last_images = self.last_images.to(self.device)


class BestTracker:
    """The lowest-loss batch of a round, kept on the device (``torch.where`` on a running minimum, no ``.item()``).

    Ties keep the earlier batch (the originals replaced only on a strictly lower loss)."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.items: tuple[torch.Tensor, ...] = ()

    def update(self, loss: torch.Tensor, *items: torch.Tensor) -> None:
        loss = loss.detach().float()
        items = tuple(t.detach() for t in items)
        if self.loss is None:
            self.loss, self.items = loss, tuple(t.clone() for t in items)
            return
        better = loss < self.loss
        self.items = tuple(torch.where(better, new, old) for new, old in zip(items, self.items))
        self.loss = torch.minimum(loss, self.loss)
