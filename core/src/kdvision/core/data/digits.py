"""``digits``: an embedded real dataset that needs no download and no data root.

scikit-learn's ``load_digits`` ships 1,797 real 8×8 handwritten digits (UCI "Optical Recognition of Handwritten
Digits", values 0–16). We scale them to [0, 1] (÷16) and upscale to 1×32×32 with bilinear interpolation
(``align_corners=False``), so LeNet-5-style 32×32 models run on them (smoke runs, demos, CPU tests).

Held-out split (fixed, stratified, 20 % test), independent of library versions: for every class with ``n``
samples, ``n_test = floor(0.2 * n + 0.5)``; the test samples are those whose ``sha256(f"{seed}/{label}/{index}")``
hex digests are smallest (``index`` = position in ``load_digits``; seed 0). Exact counts:

- class sizes  [178, 182, 177, 183, 181, 182, 181, 179, 174, 180] (1,797)
- test         [ 36,  36,  35,  37,  36,  36,  36,  36,  35,  36] (359)
- train        [142, 146, 142, 146, 145, 146, 145, 143, 139, 144] (1,438)

Both splits are sorted by ``index``. Normalisation: ``NORMALIZATION["digits"]``, the mean/std of the training split
after upscaling (see :mod:`.normalization`). ``root`` is ignored (may be None).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import DATASETS, DatasetSpec, TensorImageDataset, stratified_hash_split, with_stats
from .normalization import NORMALIZATION

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPEC = DatasetSpec("digits", 10, 1, (32, 32), *NORMALIZATION["digits"],
                          class_names=tuple(str(i) for i in range(10)),
                          train_crop_padding=None, train_hflip=False)  # like MNIST: digits are never flipped


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        raise DataError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).to(torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    y = torch.from_numpy(bunch.target).to(torch.int64)
    return x, y


def digits_split_indices(labels: torch.Tensor, seed: int = DIGITS_SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) index tensors of the stratified hash split described in the module docstring."""
    return stratified_hash_split(labels, DIGITS_TEST_FRACTION, seed)


def digits_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, 1, 32, 32) images in [0, 1] and int64 labels of a digits split."""
    x, y = _digits_all()
    train_idx, test_idx = digits_split_indices(y)
    idx = train_idx if split == "train" else test_idx
    return x[idx], y[idx]


def _find(root, split: str) -> bool:
    return split in ("train", "test")


@DATASETS.register("digits", aliases=("sklearn_digits",), spec=DIGITS_SPEC, splits=("train", "test"), find=_find,
                   embedded=True)
def build_digits(root, split, *, train_transform, mean, std, download) -> TensorImageDataset:
    """scikit-learn digits at 1×32×32 (float storage); no training augmentation (digits must not be flipped)."""
    images, labels = digits_arrays(split)
    return TensorImageDataset(images, labels, mean=mean, std=std, spec=with_stats(DIGITS_SPEC, (mean, std)))
