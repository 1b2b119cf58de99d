"""Unlabelled image sets for pre-training (KDEP): folders, seeded per-class subsets with a published file list, and
robustness' ImageNet training transform.

``reference/kdep.md`` §2, §4. The original 10 % ImageNet subset (128 images per class) was drawn unseeded, copied
file by file and never published. Here :func:`make_subset` draws it from a seed — per class, from that class's
sorted file names, so the choice of one class does not depend on the others — and :func:`write_image_list` writes
it as a list file whose header records the source root, the seed and the list's SHA-256::

    # kdvision image list
    # root: /data/imagenet/train
    # per_class: 128
    # seed: 0
    n01440764/n01440764_10026.JPEG
    ...

The SHA-256 of the path lines (``list_sha256``) identifies the subset: the basis file of ``gen_svd_weights.py``
records it. A folder, searched recursively, is a pre-training set too.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .base import ImageListDataset, open_image
from .folder import IMAGE_SUFFIXES, folder_geometry
from .ood import image_files

LIST_MAGIC = "# kdvision image list"

#: AlexNet's PCA lighting noise on ImageNet (robustness' ``Lighting(0.05, IMAGENET_PCA['eigval'], ...['eigvec'])``)
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


# ------------------------------------------------------------------------------------------------- file lists
def class_folders(src: str | os.PathLike) -> list[Path]:
    """The class folders of an ImageNet-style ``src/<class>/<image>`` tree, sorted by name."""
    root = Path(src).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders (expected SRC/<class>/<image>)")
    return classes


def make_subset(src: str | os.PathLike, per_class: int, seed: int) -> list[str]:
    """``per_class`` images of every class of ``src`` (all of a smaller class), chosen by ``seed``; paths relative
    to ``src``, sorted. Same ``src`` and seed, same list."""
    if per_class < 1:
        raise DataError(f"--per-class must be >= 1, got {per_class}")
    root = Path(src).expanduser()
    chosen: list[str] = []
    for folder in class_folders(root):
        files = [p.relative_to(root).as_posix() for p in image_files(folder)]
        rng = random.Random(f"{seed}/{folder.name}")  # per class: independent of the other classes
        chosen.extend(sorted(rng.sample(files, min(per_class, len(files)))))
    if not chosen:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return chosen


def list_sha256(files: Sequence[str]) -> str:
    return hashlib.sha256("".join(f"{f}\n" for f in files).encode()).hexdigest()


def write_image_list(path: str | os.PathLike, files: Sequence[str], root: str | os.PathLike,
                     **header: Any) -> str:
    """Write a list file (atomically); returns the list's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [LIST_MAGIC, f"# root: {Path(root).expanduser().resolve()}",
             *(f"# {k}: {v}" for k, v in header.items()), *files]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return list_sha256(files)


def read_image_list(path: str | os.PathLike) -> tuple[Path, list[str], dict[str, str]]:
    """``(root, relative paths, header)`` of a list file; without a ``# root:`` line, paths are relative to the
    list's folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"image list not found: {path}")
    header: dict[str, str] = {}
    files: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                header[key.strip()] = value.strip()
        elif line.strip():
            files.append(line.strip())
    if not files:
        raise DataError(f"image list {path} names no files")
    return Path(header.get("root", path.parent)), files, header


def resolve_images(spec: str, data_root: str | None = None) -> tuple[Path, list[str], str]:
    """``(root, relative paths, sha256)`` of a pre-training set: a list file, a folder (recursive), or the original's
    names ``imgnet_128k`` (``<data_root>/imgnet_128k/train.txt``, as ``make_imagenet_subset.py <data_root>/train
    <data_root>/imgnet_128k`` writes it) and ``imgnet_full`` (``<data_root>/train``)."""
    named = {"imgnet_128k": Path("imgnet_128k") / "train.txt", "imgnet_full": Path("train")}
    path = Path(data_root or ".").expanduser() / named[spec] if spec in named else Path(spec).expanduser()
    if path.is_file():
        root, files, _ = read_image_list(path)
    elif path.is_dir():
        root, files = path, [p.relative_to(path).as_posix() for p in image_files(path)]
        if not files:
            raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    else:
        hint = " (write it with pretraining/make_imagenet_subset.py)" if spec == "imgnet_128k" else ""
        raise DataError(f"pre-training images not found: {path}{hint}")
    return root, files, list_sha256(files)


# ------------------------------------------------------------------------------------------------- transforms
class Lighting:
    """PCA lighting noise: adds ``eigvec @ (alpha * eigval)``, ``alpha ~ N(0, std)``, to a float C×H×W image."""

    def __init__(self, std: float = 0.05, eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC) -> None:
        self.std = float(std)
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return img
        alpha = torch.randn(3) * self.std
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.view(3, 1, 1).to(img.dtype)


def robustness_train_transform(size: int, mean: Sequence[float], std: Sequence[float], *, augment: bool = True
                               ) -> Callable[[Any], torch.Tensor]:
    """robustness' ImageNet training transform (RandomResizedCrop, flip, ColorJitter 0.1/0.1/0.1, lighting 0.05),
    then normalisation (KDEP applies it inside the model wrapper: the same numbers). ``augment=False``: Resize to
    ``size · 256/224`` (short side) and CenterCrop, robustness' test transform."""
    from torchvision.transforms import v2

    geometry = folder_geometry(augment, size, round(size * 256 / 224))
    jitter = [v2.ColorJitter(0.1, 0.1, 0.1)] if augment else []
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose([*geometry, *jitter, *tail, *([Lighting(0.05)] if augment else []),
                       v2.Normalize(list(mean), list(std))])


class UnlabelledImages(ImageListDataset):
    """Images ``root/<file>`` through ``transform``; yields ``(image, 0)`` (labels are never used).

    ``cache=True`` decodes every image once, up front, into uint8 tensors (small sets: CPU runs and tests; the
    transforms then work on tensors, which also saves the PNG/JPEG decode of every epoch)."""

    def __init__(self, root: str | os.PathLike, files: Sequence[str], transform: Callable[[Any], torch.Tensor],
                 *, cache: bool = False) -> None:
        super().__init__([(str(Path(root) / f), 0) for f in files], [], transform)
        self._cache: list[torch.Tensor] | None = None
        if cache:
            import numpy as np

            self._cache = [torch.from_numpy(np.array(open_image(path, "RGB", what="pre-training image"))
                                            ).permute(2, 0, 1).contiguous() for path, _ in self.samples]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._cache is None:
            return super().__getitem__(index)
        return self.transform(self._cache[index]), 0


class Resized(Dataset):
    """A (normalised) image dataset seen through the protocol's geometry at ``size`` px: RandomResizedCrop + flip
    for training, Resize(size·256/224) + CenterCrop for testing (per-channel normalisation commutes with both)."""

    def __init__(self, base: Dataset, size: int, train: bool) -> None:
        from torchvision.transforms import v2

        self.base, self.spec = base, getattr(base, "spec", None)
        self.transform = v2.Compose(folder_geometry(train, size, round(size * 256 / 224)))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.transform(x), y
