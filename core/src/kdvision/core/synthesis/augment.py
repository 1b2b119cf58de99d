"""Batched augmentation of synthetic images, on the device they live on.

- :func:`crop_flip`: RandomCrop(size, padding) with zero padding + RandomHorizontalFlip, per sample, by one
  ``gather`` on integer offsets. Exactly the distribution of torchvision's training transform that the original
  engines applied to every PNG read back from the pool, but for a whole batch at once and on uint8 data (about 3x
  faster than kornia's crop on a CPU, no interpolation).
- :class:`SynthesisViews`: the in-loop views of the inversion methods, built from kornia (differentiable,
  per-sample randomness, like the originals): ``"global"`` = RandomCrop(pad 4) + HFlip (CMI's global view, Fast,
  RGAL), ``"local"`` = RandomResizedCrop(scale 0.25-1) + HFlip (CMI's local view); each followed by normalisation.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of the original size from the zero-padded batch, and a random horizontal flip, per sample.

    Works on any dtype (uint8 pools included); offsets are drawn uniformly from [0, 2·padding] with the global RNG
    of ``x``'s device, flips with probability 0.5.
    """
    b, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        x = F.pad(x, (padding,) * 4)
    wp = w + 2 * padding
    oy = torch.randint(0, 2 * padding + 1, (b, 1), device=dev)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), device=dev)
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
    """Differentiable kornia views of generator outputs in [0, 1], returned normalised."""

    def __init__(self, size: tuple[int, int], normalizer: Normalizer, kind: str = "global",
                 padding: int = 4, scale: tuple[float, float] = (0.25, 1.0)) -> None:
        super().__init__()
        import kornia.augmentation as K

        if kind == "global":
            crop = K.RandomCrop(size, padding=padding)
        elif kind == "local":
            crop = K.RandomResizedCrop(size, scale=scale)
        else:
            raise ValueError(f"unknown view {kind!r}; valid: {', '.join(VIEWS)}")
        self.ops = torch.nn.Sequential(crop, K.RandomHorizontalFlip())
        self.normalizer = normalizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer(self.ops(x))
