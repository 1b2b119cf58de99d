"""Batched augmentation of synthetic images, on the device they live on.

- :class:`Augment`: which augmentation — the geometric part of the in-domain dataset's own training transform
  (``Augment.from_spec(dataset_spec("svhn"))``: none; CIFAR: RandomCrop pad 4 + HFlip, the default). The originals
  read every pooled PNG back through the in-domain training transform (datafree_engine.md §5.3, §9.2).
- :func:`crop_flip`: RandomCrop(size, padding) with zero padding + RandomHorizontalFlip, per sample, by one
  ``gather`` on integer offsets. Exactly the distribution of torchvision's training transform that the original
  engines applied to every PNG read back from the pool, but for a whole batch at once and on uint8 data (about 3x
  faster than kornia's crop on a CPU, no interpolation).
- :class:`SynthesisViews`: the in-loop views of the inversion methods, built from kornia (differentiable,
  per-sample randomness, like the originals): ``"global"`` = RandomCrop(pad 4) + HFlip (CMI's global view, Fast,
  RGAL), ``"local"`` = RandomResizedCrop(scale 0.25-1) + HFlip (CMI's local view); each followed by normalisation.
  The crop padding of the global view and the flip of both follow an :class:`Augment` (default: CIFAR's, as the
  originals hard-code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """RandomCrop(size, padding=``crop_padding``) (``None`` or 0: no crop) + RandomHorizontalFlip (``hflip``), per
    sample, for batches of fixed-size images. The default is CIFAR's training transform (pad 4 + flip)."""

    crop_padding: int | None = 4
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.crop_padding is not None and (not isinstance(self.crop_padding, int) or self.crop_padding < 0):
            raise ValueError(f"crop_padding must be None or an int >= 0, got {self.crop_padding!r}")

    @classmethod
    def from_spec(cls, spec: Any) -> "Augment":
        """The augmentation of a :class:`~kdvision.core.data.DatasetSpec` (``train_crop_padding``,
        ``train_hflip``): the in-domain dataset's own training transform."""
        return cls(crop_padding=spec.train_crop_padding, hflip=bool(spec.train_hflip))

    @property
    def padding(self) -> int:
        return int(self.crop_padding or 0)

    @property
    def active(self) -> bool:
        return self.padding > 0 or self.hflip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented batch (``x`` itself, no random draw, when there is nothing to do)."""
        return crop_flip(x, self.padding, self.hflip) if self.active else x

    def describe(self) -> str:
        parts = ([f"RandomCrop(pad {self.padding})"] if self.padding else []) + (["HFlip"] if self.hflip else [])
        return " + ".join(parts) or "none"


CIFAR_AUGMENT = Augment(crop_padding=4, hflip=True)
NO_AUGMENT = Augment(crop_padding=None, hflip=False)


def crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of the original size from the zero-padded batch, and a random horizontal flip, per sample.

    Works on any dtype (uint8 pools included); offsets are drawn uniformly from [0, 2·padding] with the global RNG
    of ``x``'s device, flips with probability 0.5.
    """
    b, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        x = F.pad(x, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (b, 1), device=dev)
        ox = torch.randint(0, 2 * padding + 1, (b, 1), device=dev)
    else:  # flip only: no offsets to draw
        oy = ox = torch.zeros((b, 1), dtype=torch.long, device=dev)
    wp = w + 2 * padding
    rows = oy + torch.arange(h, device=dev)  # B x H
    cols = ox + torch.arange(w, device=dev)  # B x W
    if flip:
        mirrored = torch.rand(b, 1, device=dev) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    index = (rows[:, :, None] * wp + cols[:, None, :]).flatten(1)  # B x (H·W)
    out = x.flatten(2).gather(2, index[:, None, :].expand(b, c, h * w))
    return out.view(b, c, h, w)


class Normalizer(torch.nn.Module):
    """(x − mean) / std per channel, for images in [0, 1]; ``inverse`` maps back."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images of 0 and 1 per channel (DeepInversion clips its pixels to this range)."""
        return -self.mean / self.std, (1 - self.mean) / self.std


VIEWS = ("global", "local")


class SynthesisViews(torch.nn.Module):
    """Differentiable kornia views of generator outputs in [0, 1], returned normalised.

    ``augment`` sets the global view's crop padding and, for both views, whether they flip (default: CIFAR's
    pad 4 + flip, what the originals hard-code); the local view's RandomResizedCrop is part of CMI's contrastive
    design and always applies.
    """

    def __init__(self, size: tuple[int, int], normalizer: Normalizer, kind: str = "global",
                 augment: Augment = CIFAR_AUGMENT, scale: tuple[float, float] = (0.25, 1.0)) -> None:
        super().__init__()
        import kornia.augmentation as K

        if kind == "global":
            ops = [K.RandomCrop(size, padding=augment.padding)] if augment.padding else []
        elif kind == "local":
            ops = [K.RandomResizedCrop(size, scale=scale)]
        else:
            raise ValueError(f"unknown view {kind!r}; valid: {', '.join(VIEWS)}")
        if augment.hflip:
            ops.append(K.RandomHorizontalFlip())
        self.kind, self.augment = kind, augment
        self.ops = torch.nn.Sequential(*ops)
        self.normalizer = normalizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer(self.ops(x))
