"""Generic ``root/{split}/<class>/<image>`` datasets through torchvision's ImageFolder.

Defaults follow the ImageNet recipe: test Resize(image_size * 256 / 224, short side) → CenterCrop(image_size);
train RandomResizedCrop(image_size) → HFlip; ImageNet normalisation.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .base import DATASETS, DatasetSpec, open_image, require_root, with_stats
from .normalization import NORMALIZATION

# Training transform RandomResizedCrop + HFlip: only the flip has a fixed-size batched equivalent here.
IMAGEFOLDER_SPEC = DatasetSpec("imagefolder", None, 3, (224, 224), *NORMALIZATION["imagenet"],
                               train_crop_padding=None, train_hflip=True)


def _find(root, split: str) -> bool:
    return root is not None and (Path(root).expanduser() / split).is_dir()


def folder_geometry(train: bool, image_size: int, resize_size: int) -> list:
    """The ImageNet recipe's geometry: RandomResizedCrop + flip (train), Resize(short side) + CenterCrop (test)."""
    from torchvision.transforms import v2

    return [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()] if train else \
        [v2.Resize(resize_size), v2.CenterCrop(image_size)]


def folder_transform(train: bool, image_size: int, resize_size: int, mean, std):
    from torchvision.transforms import v2

    return v2.Compose([*folder_geometry(train, image_size, resize_size), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


@DATASETS.register("imagefolder", aliases=("image_folder",), spec=IMAGEFOLDER_SPEC, splits=(), find=_find)
def build_imagefolder(root, split, *, train_transform, mean, std, download, image_size: int = 224,
                      resize_size: int | None = None):
    """``root/{split}/<class>/*`` (any split name, e.g. train/val/test); ``.spec.num_classes`` from the folders."""
    import torchvision

    if int(image_size) <= 0:
        raise ConfigError(f"imagefolder image_size must be positive, got {image_size}")
    image_size = int(image_size)
    resize_size = int(resize_size) if resize_size is not None else int(round(image_size * 256 / 224))
    path = require_root(root, "imagefolder")
    folder = path / split
    if not folder.is_dir():
        raise DataError(f"imagefolder {split} split not found: expected {folder}/<class>/<image>")
    try:
        ds = torchvision.datasets.ImageFolder(str(folder), transform=folder_transform(
            train_transform, image_size, resize_size, mean, std))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"imagefolder {folder}: {' '.join(str(exc).split())}") from None
    ds.spec = with_stats(IMAGEFOLDER_SPEC, (mean, std), num_classes=len(ds.classes),  # type: ignore[attr-defined]
                         image_size=(image_size, image_size), class_names=tuple(ds.classes))
    return ds


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class UnlabeledImages(torch.utils.data.Dataset):
    """Every image file under ``root`` (any depth, sorted), without labels: the "related"/"unrelated" data of the
    KD baselines. Each item is Resize(``resize``, short side) → RandomCrop(``size``, padded if needed) → HFlip →
    normalised float tensor with ``channels`` channels (1: converted to grey)."""

    def __init__(self, root, *, size: int, resize: int, channels: int, mean, std) -> None:
        from torchvision.transforms import v2

        self.root = Path(root)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.mode = "L" if channels == 1 else "RGB"
        self.transform = v2.Compose([v2.Resize(int(resize)), v2.RandomCrop(int(size), pad_if_needed=True),
                                     v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(list(mean), list(std))])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(open_image(self.files[index], self.mode))
