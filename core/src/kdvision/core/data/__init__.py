"""Datasets with the published normalisation constants.

>>> from kdvision.core.data import dataset_spec, get_dataset, find_split
>>> spec = dataset_spec("cifar10")            # DatasetSpec(name, num_classes, in_channels, image_size, mean, std, ...)
>>> ds = get_dataset("cifar100", root, "test", normalize="cifar10")   # DFAD: CIFAR-100 with CIFAR-10 statistics
>>> find_split("mnist", root, "test")        # True/False, never raises for missing data

Every dataset yields ``(float32 image C×H×W, normalised; int label)`` and carries ``.spec`` with the statistics it
applied. Small datasets (MNIST, CIFAR, SVHN, the CIFAR-10 subset, digits) are in-memory tensors
(:class:`TensorImageDataset`) normalised on the fly, vectorised; the image-file datasets (Caltech-101/256, CUB-200,
DTD, ImageNet, ``imagefolder``) decode lazily.
Missing roots, splits or files raise a one-line :class:`~kdvision.core.errors.DataError` naming the path.
"""
from __future__ import annotations

from .base import (DATASETS, DatasetSpec, ImageListDataset, RandomCropFlip, TensorImageDataset, dataset_spec,
                   dataset_splits, find_split, get_dataset, is_embedded, labelled_subset, list_datasets,
                   stratified_hash_split, subset_indices)
from .download import DOWNLOADABLE, download_dataset
from .imagenet32 import load_downsampled, load_imagenet32, load_places365_32
from .normalization import NORMALIZATION, dataset_normalization, normalization
from .ood import (OOD_SOURCES, list_ood_sources, load_image_folder, load_ood, ood_normalization, ood_subset,
                  resolve_ood, subset_applies)
from .resize import resize_uint8_like_pil
from .stream import StreamLoader, StreamSampler

# Importing the readers registers them.
from . import mnist, cifar, svhn, caltech, folder, digits  # noqa: E402,F401
from . import imagenet, cub, dtd, caltech256  # noqa: E402,F401

__all__ = [
    "DATASETS", "DOWNLOADABLE", "NORMALIZATION", "DatasetSpec", "ImageListDataset", "RandomCropFlip", "StreamLoader", "StreamSampler",
    "TensorImageDataset",
    "dataset_normalization", "dataset_spec", "dataset_splits", "download_dataset", "find_split", "get_dataset", "is_embedded", "labelled_subset", "list_datasets", "normalization",
    "resize_uint8_like_pil", "stratified_hash_split", "subset_indices",
    # out-of-domain data (MosaicKD, Blind KD)
    "OOD_SOURCES", "list_ood_sources", "load_downsampled", "load_image_folder", "load_imagenet32", "load_ood",
    "load_places365_32", "ood_normalization", "ood_subset", "resolve_ood", "subset_applies",
]
