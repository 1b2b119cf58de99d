"""Downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter 2017, "Imagenet32x32") and Places365-32 batch files.

The official release (patrykchrabaszcz.github.io/Imagenet32) ships pickled batches, not image folders:

- ``Imagenet32_train/train_data_batch_1`` ... ``train_data_batch_10`` (1,281,167 images in all) and
  ``Imagenet32_val/val_data`` (50,000 images);
- each file is a pickle of a dict with ``data`` (uint8, N × 3072: one row per image, the 32×32 R plane, then G,
  then B, each row-major, as CIFAR), ``labels`` (N ints, **1-based**: 1..1000) and, in the training batches,
  ``mean`` (the 3072-value mean image, not used here);
- the ``*_npz`` variant of the release stores the same arrays as ``train_data_batch_<k>.npz`` / ``val_data.npz``;
  both are read.

Places365-32 (MosaicKD's other 32×32 OOD set) has no official pickled release; a conversion in **the same layout**
(the same file names, a dict with ``data`` N × 3072 planar RGB uint8 and 1-based ``labels`` 1..365) is accepted
under its own folder names. MosaicKD itself reads both sets as converted ImageFolder trees
(``{root}/ImageNet_32x32/train``); :func:`kdvision.core.data.ood.load_ood` falls back to such a tree when no
batch files are found.

Files are looked up in ``root`` itself, then in the usual sub-folders (:data:`LAYOUTS`); the first folder holding
the split's first file wins. Training batches must be numbered 1..K without gaps; fewer than the release's 10
ImageNet batches is read with a one-line warning (a partial copy for a quick run). Pickles are read with the
restricted unpickler of the CIFAR reader (plain containers and numpy arrays only: a tampered file cannot run
code) and checked; a truncated or malformed file is a one-line :class:`~kdvision.core.errors.DataError` naming it.

Reading is memory-bounded: the output array is allocated once (its size bounded from the file sizes) and filled
one batch at a time, so the peak is the dataset (3.9 GB of uint8 for ImageNet-32 train) plus one batch.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, KDVisionError
from .base import require_root
from .cifar import _SafeUnpickler


@dataclass(frozen=True)
class DownsampledLayout:
    """Where and how one downsampled batch release is stored."""

    name: str                 # canonical name (the OOD source name)
    title: str                # for messages
    folders: dict[str, tuple[str, ...]]  # split -> sub-folders of the root searched after the root itself
    num_classes: int          # labels are 1..num_classes on disk
    train_batches: int | None  # batches of the official release (None: unknown)
    image_size: int = 32
    url: str = ""


LAYOUTS: dict[str, DownsampledLayout] = {
    "imagenet_32x32": DownsampledLayout(
        "imagenet_32x32", "ImageNet-32",
        folders={"train": ("Imagenet32_train", "imagenet32", "ImageNet_32x32", "Imagenet32"),
                 "val": ("Imagenet32_val", "imagenet32", "ImageNet_32x32", "Imagenet32")},
        num_classes=1000, train_batches=10, url="patrykchrabaszcz.github.io/Imagenet32"),
    "places365_32x32": DownsampledLayout(
        "places365_32x32", "Places365-32",
        folders={"train": ("Places365_32x32_train", "Places365_32x32", "places365_32x32", "Places365_32",
                           "places365_32"),
                 "val": ("Places365_32x32_val", "Places365_32x32", "places365_32x32", "Places365_32",
                         "places365_32")},
        num_classes=365, train_batches=None),
}

SPLITS = ("train", "val")
_TRAIN_FILE = re.compile(r"^train_data_batch_(\d+)(\.npz)?$")


def _layout(name: str) -> DownsampledLayout:
    if name not in LAYOUTS:
        raise ConfigError(f"unknown downsampled batch release {name!r}; valid: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _check_split(layout: DownsampledLayout, split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"{layout.title} has no split {split!r}; valid: {', '.join(SPLITS)}")


def _candidates(layout: DownsampledLayout, root: Path, split: str) -> list[Path]:
    return [root, *(root / sub for sub in layout.folders[split])]


def _split_files(folder: Path, split: str) -> list[Path] | None:
    """The split's files in ``folder`` (train: ordered by batch number, pickle preferred over npz), or None."""
    if not folder.is_dir():
        return None
    if split == "val":
        for fname in ("val_data", "val_data.npz"):
            if (folder / fname).is_file():
                return [folder / fname]
        return None
    batches: dict[int, Path] = {}
    for entry in folder.iterdir():
        m = _TRAIN_FILE.match(entry.name)
        if m and entry.is_file():
            k = int(m.group(1))
            if k not in batches or not m.group(2):  # the pickle wins over its npz twin
                batches[k] = entry
    if not batches:
        return None
    missing = [k for k in range(1, max(batches) + 1) if k not in batches]
    if missing:
        raise DataError(f"{folder}: train batches must be numbered 1..{max(batches)} without gaps; missing "
                        f"{', '.join(f'train_data_batch_{k}' for k in missing)}")
    return [batches[k] for k in sorted(batches)]


def find_downsampled_files(name: str, root: str | os.PathLike | None, split: str = "train") -> list[Path] | None:
    """The batch files of ``split`` of release ``name`` under ``root`` (first matching folder), or None.

    Never raises for missing data; a gap in the batch numbering of a folder that has batches is a DataError.
    """
    layout = _layout(name)
    _check_split(layout, split)
    if root is None or str(root) == "":
        return None
    base = Path(root).expanduser()
    for folder in _candidates(layout, base, split):
        files = _split_files(folder, split)
        if files:
            return files
    return None


def _row_capacity(path: Path, row: int) -> int:
    """An upper bound on the images in one file: its data array alone takes ``N * row`` bytes."""
    if path.suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.getinfo("data.npy").file_size // row
        except (OSError, KeyError, zipfile.BadZipFile):
            return 0  # reported properly when the file is read
    return path.stat().st_size // row


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_batch(path: str | os.PathLike, *, num_classes: int, image_size: int = 32,
               title: str = "downsampled batch") -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (uint8 (N, 3, S, S) images, int64 0-based labels); DataError naming the file otherwise."""
    path = Path(path)
    row = 3 * image_size * image_size
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files if k in ("data", "labels")}
        else:
            with open(path, "rb") as fh:
                obj = _SafeUnpickler(fh, encoding="latin1").load()
    except KDVisionError:
        raise
    except pickle.UnpicklingError as exc:
        raise DataError(f"cannot read {title} {path}: {_one_line(exc)} (truncated, or not a pickled batch)") from None
    except Exception as exc:  # noqa: BLE001 - a malformed pickle/zip raises EOFError, ValueError, zipfile errors, ...
        raise DataError(f"cannot read {title} {path}: {_one_line(exc)} (truncated, or not a batch file)") from None
    if not isinstance(obj, dict) or "data" not in obj or "labels" not in obj:
        keys = f" with keys {', '.join(map(str, obj))}" if isinstance(obj, dict) else ""
        raise DataError(f"{path} is not a {title} file: expected a dict with 'data' and 'labels', got "
                        f"{type(obj).__name__}{keys}")
    data, labels = obj["data"], obj["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected 'data' uint8 (N, {row}) (planar R, G, B rows of {image_size}x{image_size} "
                        f"images), got {got}")
    try:
        lab = np.asarray(labels)
        if lab.size == 0:
            lab = lab.reshape(0).astype(np.int64)
        if lab.dtype.kind not in "iu" or lab.ndim != 1:
            raise ValueError
        lab = lab.astype(np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected 'labels' as a list of N ints, got {type(labels).__name__}") from None
    if len(lab) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(lab)} labels")
    if lab.size and (lab.min() < 1 or lab.max() > num_classes):
        raise DataError(f"{path}: labels must be 1-based (1..{num_classes}), found {lab.min()}..{lab.max()}")
    return data.reshape(-1, 3, image_size, image_size), lab - 1


def load_downsampled(name: str, root: str | os.PathLike | None, split: str = "train") -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """All images of ``split`` (``train`` or ``val``) of release ``name`` (``imagenet_32x32``,
    ``places365_32x32``): uint8 (N, 3, 32, 32) and int64 0-based labels."""
    layout = _layout(name)
    _check_split(layout, split)
    base = require_root(root, name)
    files = find_downsampled_files(name, base, split)
    if not files:
        first = "train_data_batch_1" if split == "train" else "val_data"
        where = ", ".join(str(p) for p in _candidates(layout, base, split))
        src = f"; the official release: {layout.url}" if layout.url else ""
        raise DataError(f"{layout.title} {split} split not found: no {first} (or {first}.npz) in {where}{src}")
    if split == "train" and layout.train_batches and len(files) < layout.train_batches:
        warnings.warn(f"{layout.title}: reading {len(files)} of the {layout.train_batches} training batches of the "
                      f"release (found in {files[0].parent})", stacklevel=2)
    s = layout.image_size
    row = 3 * s * s
    capacity = sum(_row_capacity(f, row) for f in files)
    images = np.empty((capacity, 3, s, s), dtype=np.uint8)
    labels = np.empty((capacity,), dtype=np.int64)
    n = 0
    for f in files:
        data, lab = read_batch(f, num_classes=layout.num_classes, image_size=s, title=f"{layout.title} batch")
        k = len(data)
        if n + k > capacity:  # only if a file's size bound was wrong (e.g. an unreadable npz directory)
            capacity = n + k + sum(_row_capacity(g, row) for g in files[files.index(f) + 1:])
            images.resize((capacity, 3, s, s), refcheck=False)
            labels.resize((capacity,), refcheck=False)
        images[n:n + k] = data
        labels[n:n + k] = lab
        n += k
        del data, lab
    images.resize((n, 3, s, s), refcheck=False)  # shrink in place to what was read
    labels.resize((n,), refcheck=False)
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_imagenet32(root: str | os.PathLike | None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-32 ``train`` (``train_data_batch_1..10``) or ``val`` (``val_data``): uint8 (N, 3, 32, 32) images
    and int64 labels 0..999."""
    return load_downsampled("imagenet_32x32", root, split)


def load_places365_32(root: str | os.PathLike | None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Places365-32 in the ImageNet-32 batch layout: uint8 (N, 3, 32, 32) images and int64 labels 0..364."""
    return load_downsampled("places365_32x32", root, split)
