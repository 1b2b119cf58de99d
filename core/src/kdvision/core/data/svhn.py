"""SVHN (cropped digits) from torchvision's ``.mat`` layout: ``root/{train,test,extra}_32x32.mat``.

``X`` is (32, 32, 3, N) uint8, ``y`` is (N, 1) with digit 0 stored as 10; we map 10 → 0 as torchvision does.
No training augmentation (CMI / MosaicKD use none for SVHN; flips would turn digits into other symbols).
Default normalisation 0.5 / 0.5 per channel, as CMI and MosaicKD (``normalize="svhn"``: SVHN-train statistics).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import DATASETS, DatasetSpec, TensorImageDataset, require_root, run_download, with_stats
from .normalization import NORMALIZATION

# CMI and MosaicKD normalise SVHN with 0.5 / 0.5 per channel (datafree_engine.md §9.1) and train without
# augmentation (§9.2). The SVHN-train statistics stay available as normalize="svhn".
SVHN_SPEC = DatasetSpec("svhn", 10, 3, (32, 32), *NORMALIZATION["half"], class_names=tuple(str(i) for i in range(10)),
                        train_crop_padding=None, train_hflip=False)


def _file(root: Path, split: str) -> Path:
    return root / f"{split}_32x32.mat"


def _find(root, split: str) -> bool:
    return root is not None and _file(Path(root).expanduser(), split).is_file()


def load_svhn_arrays(root, split: str, *, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    path = require_root(root, "svhn", create=download)
    file = _file(path, split)
    if not file.is_file() and download:
        import torchvision

        run_download(lambda: torchvision.datasets.SVHN(str(path), split=split, download=True), "SVHN", path)
    if not file.is_file():
        raise DataError(f"SVHN {split} split not found: expected {file} (pass download=True to fetch it)")
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy ships with the toolkit's environment
        raise DataError("reading SVHN .mat files needs scipy (pip install scipy)") from None
    try:
        mat = scipy.io.loadmat(str(file))
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, MatReadError, OSError, ...
        raise DataError(f"cannot read {file}: {' '.join(str(exc).split())}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{file} is not an SVHN .mat file (needs variables 'X' and 'y')")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{file}: expected X of shape (32, 32, 3, N) and N labels, got {x.shape} and {len(y)}")
    y[y == 10] = 0
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"SVHN labels in {file} are outside 1..10")
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))).astype(np.uint8, copy=False)  # (N, 3, 32, 32)
    return images, y


@DATASETS.register("svhn", spec=SVHN_SPEC, splits=("train", "test", "extra"), find=_find)
def build_svhn(root, split, *, train_transform, mean, std, download) -> TensorImageDataset:
    """SVHN in memory (uint8); ``train_transform`` is a no-op (no augmentation for SVHN)."""
    images, labels = load_svhn_arrays(root, split, download=download)
    return TensorImageDataset(torch.from_numpy(images), torch.from_numpy(labels), mean=mean, std=std,
                              spec=with_stats(SVHN_SPEC, (mean, std)))
