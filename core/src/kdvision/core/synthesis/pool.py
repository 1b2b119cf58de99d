"""The synthetic-image pool: device-resident, quantised like the originals' PNG files, sampled with augmentation.

The CMI-lineage engines wrote every synthesized image as a PNG, rebuilt a DataLoader over the whole folder after
every round, and decoded and augmented each image on the CPU again at every use. Here the pool is one uint8 tensor
on the training device (51,200 CIFAR images = 157 MB), images are quantised exactly as the PNG round trip did
(``uint8(clamp(x, 0, 1) · 255)``, truncating), and a KD batch is a gather plus the batched training augmentation
and normalisation. The augmentation is the in-domain dataset's own training transform, as the originals applied
it to the PNGs read back: ``ImagePool(shape, augment=Augment.from_spec(dataset_spec(name)))`` (CIFAR, the default:
RandomCrop pad 4 + HFlip by :func:`~kdvision.core.synthesis.augment.crop_flip`; SVHN, MNIST, digits: none).

Sampling follows the original loader's order law: after every ``add`` a fresh random permutation of the whole pool
is walked batch by batch (``shuffle=True``); when it runs out, a new permutation continues it. Batches are always
full (the original's last batch of a pass could be short).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .augment import CIFAR_AUGMENT, Augment, Normalizer

DTYPES = {"uint8": torch.uint8, "float16": torch.float16}


class ImagePool:
    """``augment``: the training augmentation applied to sampled batches (default: CIFAR's RandomCrop pad 4 +
    HFlip; pass ``Augment.from_spec(spec)`` for the in-domain dataset's own)."""

    def __init__(self, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                 dtype: str = "uint8", augment: Augment = CIFAR_AUGMENT) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown pool dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        if not isinstance(augment, Augment):
            raise TypeError(f"augment must be an Augment, got {type(augment).__name__}")
        self.image_shape = tuple(image_shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.augment = augment
        self._data = torch.empty((0, *self.image_shape), dtype=DTYPES[dtype], device=self.device)
        self._size = 0
        self._perm = torch.empty(0, dtype=torch.long, device=self.device)
        self._cursor = 0

    def __len__(self) -> int:
        return self._size

    @property
    def images(self) -> torch.Tensor:
        """The stored images (uint8 or float16), oldest first."""
        return self._data[: self._size]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().clamp(0, 1)
        if self.dtype == "uint8":
            return (x * 255).to(torch.uint8)  # truncation, as the PNG writer of the originals
        return x.to(torch.float16)

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        """Stored images back to float in [0, 1]."""
        return stored.float().div_(255) if stored.dtype == torch.uint8 else stored.float()

    def add(self, images: torch.Tensor) -> None:
        """Append a batch of images in [0, 1] (B x C x H x W) and restart the sampling order."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"pool holds {self.image_shape} images, got {tuple(images.shape[1:])}")
        new = self._encode(images.to(self.device))
        need = self._size + new.shape[0]
        if need > self._data.shape[0]:  # grow geometrically: amortised O(1) appends
            grown = torch.empty((max(need, 2 * self._data.shape[0]), *self.image_shape), dtype=self._data.dtype,
                                device=self.device)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size: need] = new
        self._size = need
        self._perm = torch.empty(0, dtype=torch.long, device=self.device)
        self._cursor = 0

    def _indices(self, n: int) -> torch.Tensor:
        parts, left = [], n
        while left > 0:
            if self._cursor >= self._perm.numel():
                self._perm = torch.randperm(self._size, device=self.device)
                self._cursor = 0
            take = min(left, self._perm.numel() - self._cursor)
            parts.append(self._perm[self._cursor: self._cursor + take])
            self._cursor += take
            left -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def sample(self, n: int, normalizer: Normalizer | None = None, augment: bool = True,
               views: int = 1) -> torch.Tensor:
        """``n`` images (``views`` independently augmented copies of each, stacked view after view: n·views rows),
        as float, normalised when a normalizer is given; ``augment=False`` skips the pool's augmentation."""
        if self._size == 0:
            raise RuntimeError("the image pool is empty: synthesize() must run before sample()")
        stored = self._data[self._indices(n)]
        out = []
        for _ in range(views):
            x = self.augment(stored) if augment else stored
            x = self.decode(x)
            out.append(normalizer(x) if normalizer is not None else x)
        return out[0] if views == 1 else torch.cat(out)

    # -- persistence ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images.cpu(), "perm": self._perm.cpu(), "cursor": self._cursor, "dtype": self.dtype}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["dtype"] != self.dtype:
            raise ValueError(f"pool checkpoint holds {state['dtype']} images, this run uses {self.dtype}")
        images = state["images"].to(self.device)
        self._data, self._size = images.clone(), images.shape[0]
        self._perm, self._cursor = state["perm"].to(self.device), int(state["cursor"])

    def save_png(self, folder: str | Path, start: int = 0) -> int:
        """Write images ``start..`` as individual PNGs ``{index:06d}.png`` (the originals' pool folder, for
        inspection); returns how many were written."""
        from ..engine.grid import save_image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        images = self.decode(self.images[start:].cpu())
        for i, img in enumerate(images, start=start):
            save_image(img, folder / f"{i:06d}.png")
        return images.shape[0]
