"""MNIST from the idx files of torchvision's layout (``root/MNIST/raw``), read in place (``.gz`` or not).

DFAD preprocessing: ``Resize((32, 32))`` on PIL images (Pillow bilinear), then ``Normalize(0.1307, 0.3081)``. The
resize is done once at load time for the whole split with :func:`resize_uint8_like_pil`, bit-identical to Pillow;
the dataset then holds uint8 (N, 1, 32, 32) tensors. The files are only read: nothing is extracted next to them.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import DATASETS, DatasetSpec, TensorImageDataset, require_root, run_download, with_stats
from .normalization import NORMALIZATION
from .resize import resize_uint8_like_pil

_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

MNIST_SPEC = DatasetSpec(
    name="mnist", num_classes=10, in_channels=1, image_size=(32, 32),
    mean=NORMALIZATION["mnist"][0], std=NORMALIZATION["mnist"][1],
    class_names=tuple(str(i) for i in range(10)),
    train_crop_padding=None, train_hflip=False,  # DFAD trains on MNIST with its test transform (resize only)
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) into a numpy array; :class:`DataError` if malformed."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path} is not an idx file (truncated header)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path} is truncated or corrupt: header says {shape}, payload has {len(data) - header} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _raw_dirs(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "raw"]


def _locate(root: Path, split: str) -> tuple[Path, Path] | None:
    """(images, labels) paths of ``split`` in the first raw folder that has both (uncompressed preferred)."""
    prefix = _PREFIX[split]
    for raw in _raw_dirs(root):
        found = []
        for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
            for candidate in (raw / stem, raw / f"{stem}.gz"):
                if candidate.is_file():
                    found.append(candidate)
                    break
        if len(found) == 2:
            return found[0], found[1]
    return None


def _find(root, split: str) -> bool:
    return root is not None and Path(root).expanduser().is_dir() and _locate(Path(root).expanduser(), split) is not None


def load_mnist_arrays(root: str | os.PathLike, split: str, *, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 (N, 28, 28) images and int64 labels of an MNIST split."""
    path = require_root(root, "mnist", create=download)
    files = _locate(path, split)
    if files is None and download:
        import torchvision

        run_download(lambda: torchvision.datasets.MNIST(str(path), train=(split == "train"), download=True),
                     "MNIST", path)
        files = _locate(path, split)
    if files is None:
        prefix = _PREFIX[split]
        raise DataError(
            f"MNIST {split} split not found: expected {path / 'MNIST' / 'raw'}/{prefix}-images-idx3-ubyte[.gz] and "
            f"{prefix}-labels-idx1-ubyte[.gz] (pass download=True to fetch them)"
        )
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST files {files[0]} / {files[1]} do not hold N×28×28 uint8 images with N labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"MNIST labels in {files[1]} are outside 0..9")
    return images, labels.astype(np.int64)


@DATASETS.register("mnist", spec=MNIST_SPEC, splits=("train", "test"), find=_find)
def build_mnist(root, split, *, train_transform, mean, std, download) -> TensorImageDataset:
    """MNIST resized to 32×32 like DFAD (the DFAD training transform is the test transform: no augmentation)."""
    images, labels = load_mnist_arrays(root, split, download=download)
    resized = resize_uint8_like_pil(torch.from_numpy(images.copy()), (32, 32)).unsqueeze(1)
    return TensorImageDataset(resized, torch.from_numpy(labels), mean=mean, std=std,
                              spec=with_stats(MNIST_SPEC, (mean, std)))
