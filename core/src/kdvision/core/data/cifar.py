"""CIFAR-10 / CIFAR-100 from the python-pickle batch folders, and the 846-image CIFAR-10 test subset (npz).

The batch files are read directly (no md5 check, so partial or re-packed copies work) with a restricted unpickler
that only builds plain containers and numpy arrays: a tampered file cannot run code.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import (DATASETS, DatasetSpec, RandomCropFlip, TensorImageDataset, require_root, run_download,
                   stratified_hash_split, with_stats)
from .normalization import NORMALIZATION

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)

# training transform of every project: RandomCrop(32, padding=4) + RandomHorizontalFlip
_CIFAR_TRAIN = dict(train_crop_padding=4, train_hflip=True)
CIFAR10_SPEC = DatasetSpec("cifar10", 10, 3, (32, 32), *NORMALIZATION["cifar10"], class_names=CIFAR10_CLASSES,
                           **_CIFAR_TRAIN)
CIFAR100_SPEC = DatasetSpec("cifar100", 100, 3, (32, 32), *NORMALIZATION["cifar100"], class_names=CIFAR100_CLASSES,
                            **_CIFAR_TRAIN)
CIFAR10_SUBSET_SPEC = DatasetSpec("cifar10_test_subset", 10, 3, (32, 32), *NORMALIZATION["cifar10"],
                                  class_names=CIFAR10_CLASSES, **_CIFAR_TRAIN)

# folder, files per split, label key, torchvision class used for download=True
_LAYOUT: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "num_classes": 10,
        "tv": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "num_classes": 100,
        "tv": "CIFAR100",
    },
}

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def load_pickle(path: Path) -> Any:
    """Load a CIFAR python pickle (Python 2 or 3) safely; :class:`DataError` if unreadable."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {exc}") from None


def _find(name: str):
    layout = _LAYOUT[name]

    def find(root, split: str) -> bool:
        if root is None:
            return False
        folder = Path(root).expanduser() / layout["folder"]
        return all((folder / f).is_file() for f in layout[split])

    return find


def load_cifar_arrays(name: str, root, split: str, *, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 labels of a CIFAR split."""
    layout = _LAYOUT[name]
    path = require_root(root, name, create=download)
    folder = path / layout["folder"]
    missing = [f for f in layout[split] if not (folder / f).is_file()]
    if missing and download:
        import torchvision

        tv_cls = getattr(torchvision.datasets, layout["tv"])
        run_download(lambda: tv_cls(str(path), train=(split == "train"), download=True), name, path)
        missing = [f for f in layout[split] if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{name} {split} split not found: expected {folder}/ with {', '.join(layout[split])} "
            f"(missing {', '.join(missing)}; pass download=True to fetch it)"
        )
    images, labels = [], []
    for fname in layout[split]:
        batch = load_pickle(folder / fname)
        if not isinstance(batch, dict) or "data" not in batch or layout["label_key"] not in batch:
            raise DataError(f"{folder / fname} is not a CIFAR batch (needs 'data' and '{layout['label_key']}')")
        data = np.asarray(batch["data"])
        lab = np.asarray(batch[layout["label_key"]], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(lab):
            raise DataError(f"{folder / fname}: expected uint8 data (N, 3072) and N labels, got "
                            f"{data.dtype} {data.shape} and {lab.shape[0]} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    y = np.concatenate(labels)
    if y.size and (y.min() < 0 or y.max() >= layout["num_classes"]):
        raise DataError(f"{name} labels in {folder} are outside 0..{layout['num_classes'] - 1}")
    return np.concatenate(images), y


def _cifar_builder(name: str, spec: DatasetSpec):
    def build(root, split, *, train_transform, mean, std, download) -> TensorImageDataset:
        images, labels = load_cifar_arrays(name, root, split, download=download)
        return TensorImageDataset(
            torch.from_numpy(images), torch.from_numpy(labels), mean=mean, std=std,
            augment=RandomCropFlip(pad=4, flip=True) if train_transform else None,
            spec=with_stats(spec, (mean, std)),
        )

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{name}: uint8 in memory; training augmentation RandomCrop 32 pad 4 + HFlip."
    return build


DATASETS.add("cifar10", _cifar_builder("cifar10", CIFAR10_SPEC), aliases=("cifar-10",), spec=CIFAR10_SPEC,
             splits=("train", "test"), find=_find("cifar10"))
DATASETS.add("cifar100", _cifar_builder("cifar100", CIFAR100_SPEC), aliases=("cifar-100",), spec=CIFAR100_SPEC,
             splits=("train", "test"), find=_find("cifar100"))


# ---------------------------------------------------------------------------------------------------------------
# The CIFAR-10 test subset shipped with the project's shared data (first 846 test images, exact bytes).

SUBSET_FILE = Path("cifar10_test_subset") / "cifar10_test_first846.npz"


def _find_subset(root, split: str) -> bool:
    return split == "test" and root is not None and (Path(root).expanduser() / SUBSET_FILE).is_file()


def _subset_arrays(root, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = require_root(root, name)
    file = path / SUBSET_FILE
    if not file.is_file():
        raise DataError(f"{name} not found: expected {file} (no download source; it ships with the project's "
                        f"shared data)")
    try:
        with np.load(file, allow_pickle=False) as z:
            data, labels = z["data"], z["labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {file}: {exc} (expected arrays 'data' and 'labels')") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{file}: expected uint8 data (N, 3072) and N labels, got {data.dtype} {data.shape} "
                        f"and {len(labels)} labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64))


def _subset_dataset(images, labels, spec, *, train_transform, mean, std) -> TensorImageDataset:
    return TensorImageDataset(images, labels, mean=mean, std=std,
                              augment=RandomCropFlip(pad=4, flip=True) if train_transform else None,
                              spec=with_stats(spec, (mean, std)))


@DATASETS.register("cifar10_test_subset", spec=CIFAR10_SUBSET_SPEC, splits=("test",), find=_find_subset)
def build_cifar10_test_subset(root, split, *, train_transform, mean, std, download) -> TensorImageDataset:
    """The first 846 CIFAR-10 test images (``data`` uint8 (846, 3072) R/G/B planes, ``labels`` (846,))."""
    images, labels = _subset_arrays(root, "cifar10_test_subset")
    return _subset_dataset(images, labels, CIFAR10_SUBSET_SPEC, train_transform=train_transform, mean=mean, std=std)


#: ``cifar10_846``: the same 846 images as a small labelled task with both splits (transfer and fine-tuning tests):
#: a stratified hash split (:func:`~kdvision.core.data.base.stratified_hash_split`, seed 0), 30 % test
CIFAR10_846_SPEC = replace(CIFAR10_SUBSET_SPEC, name="cifar10_846")
CIFAR10_846_TEST_FRACTION = 0.3


def _find_846(root, split: str) -> bool:
    return split in ("train", "test") and root is not None and (Path(root).expanduser() / SUBSET_FILE).is_file()


@DATASETS.register("cifar10_846", spec=CIFAR10_846_SPEC, splits=("train", "test"), find=_find_846)
def build_cifar10_846(root, split, *, train_transform, mean, std, download) -> TensorImageDataset:
    """The 846 CIFAR-10 test images of ``cifar10_test_subset`` split 70/30 per class into train/test."""
    images, labels = _subset_arrays(root, "cifar10_846")
    train, test = stratified_hash_split(labels, CIFAR10_846_TEST_FRACTION, seed=0)
    idx = train if split == "train" else test
    return _subset_dataset(images[idx], labels[idx], CIFAR10_846_SPEC, train_transform=train_transform, mean=mean,
                           std=std)


def cifar_meta_class_names(root: str | os.PathLike, name: str) -> tuple[str, ...] | None:
    """Class names from ``batches.meta`` / ``meta`` when present (they match the built-in lists)."""
    layout = _LAYOUT[name]
    meta = Path(root) / layout["folder"] / ("batches.meta" if name == "cifar10" else "meta")
    if not meta.is_file():
        return None
    obj = load_pickle(meta)
    key = "label_names" if name == "cifar10" else "fine_label_names"
    return tuple(obj[key]) if isinstance(obj, dict) and key in obj else None
