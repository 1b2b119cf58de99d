"""Caltech-256 with KDEP's transfer split: per class, the first 60 images for training, the rest for test.

Accepted layouts (first match wins), as for Caltech-101 (:mod:`.caltech`):

1. ``root/256_ObjectCategories/<NNN.name>/<image>`` (the official ``256_ObjectCategories.tar`` unpacked);
2. ``root/caltech256/256_ObjectCategories/<NNN.name>/<image>`` (torchvision's layout).

All 257 class folders are classes, ``257.clutter`` included (KDEP, ``reference/kdep.md`` §6.1); labels follow the
sorted folder names (``001.ak47`` → 0, …, ``257.clutter`` → 256). Image files directly inside a class folder count
(the stray non-image file and the nested ``greg/`` folder of the official archive are ignored).

Split rule: per class, the image files sorted by file name (``001_0001.jpg`` < ``001_0002.jpg`` …); the first
``train_per_class`` (default 60) are ``train``, the rest ``test``. The rule needs no split file and does not depend
on file-system order. Every class must keep at least one test image (Caltech-256 has 80 or more per class).

Transforms (KDEP): train RandomResizedCrop(224) → HFlip; test Resize(256, short side) → CenterCrop(224). The default
normalisation is ImageNet's; KDEP's original fine-tuning used none (``normalize=False``, ``reference/kdep.md`` §8 #8).
Images are decoded lazily (PIL, converted to RGB: Caltech-256 has greyscale images).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from .base import DATASETS, DatasetSpec, ImageListDataset, require_root, run_download, with_stats
from .caltech import categories_folder, scan_class_folders
from .folder import folder_transform
from .normalization import NORMALIZATION

# Training transform RandomResizedCrop(224) -> HFlip: only the flip has a fixed-size batched equivalent
CALTECH256_SPEC = DatasetSpec("caltech256", 257, 3, (224, 224), *NORMALIZATION["imagenet"],
                              train_crop_padding=None, train_hflip=True)
FOLDER = "256_ObjectCategories"
TORCHVISION_DIR = "caltech256"
DEFAULT_TRAIN_PER_CLASS = 60


def _categories(root: Path) -> Path | None:
    return categories_folder(root, FOLDER, TORCHVISION_DIR)


def _find(root, split: str) -> bool:
    return root is not None and _categories(Path(root).expanduser()) is not None


def split_class_files(class_files: dict[str, list[str]], train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
                      source: Path | None = None) -> tuple[list[str], list[str]]:
    """``(train, test)`` lists of ``"<class>/<file>"``: per class (sorted), the first ``train_per_class`` files in
    file-name order for train, the rest for test. A class with ``train_per_class`` images or fewer is a
    :class:`DataError` (it would have no test image)."""
    train: list[str] = []
    test: list[str] = []
    for cls in sorted(class_files):
        files = sorted(class_files[cls])
        if len(files) <= train_per_class:
            where = f" in {source}" if source is not None else ""
            raise DataError(f"caltech256 class {cls!r}{where} has {len(files)} image(s); the split needs more than "
                            f"train_per_class={train_per_class}")
        train += [f"{cls}/{f}" for f in files[:train_per_class]]
        test += [f"{cls}/{f}" for f in files[train_per_class:]]
    return train, test


def _check_train_per_class(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"caltech256 train_per_class must be a positive integer, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"caltech256 train_per_class must be a positive integer, got {value!r}") from None
    if n <= 0:
        raise ConfigError(f"caltech256 train_per_class must be a positive integer, got {value!r}")
    return n


def caltech256_samples(root, split: str, *, train_per_class: int = DEFAULT_TRAIN_PER_CLASS, download: bool = False
                       ) -> tuple[list[tuple[str, int]], list[str], Path]:
    """``(samples, classes, folder)``: ``(path, label)`` pairs of ``split`` (class by class, file-name order), the
    class names, and the ``256_ObjectCategories`` folder they were read from."""
    train_per_class = _check_train_per_class(train_per_class)
    path = require_root(root, "caltech256", create=download)
    categories = _categories(path)
    if categories is None and download:
        import torchvision

        run_download(lambda: torchvision.datasets.Caltech256(str(path), download=True), "Caltech256", path)
        categories = _categories(path)
    if categories is None:
        raise DataError(f"caltech256 not found: expected {path / FOLDER}/<class>/<image> or "
                        f"{path / TORCHVISION_DIR / FOLDER}/<class>/<image> (the official 256_ObjectCategories.tar "
                        f"unpacked under the data root)")
    class_files = scan_class_folders(categories, exclude=frozenset())
    if not class_files:
        raise DataError(f"caltech256 at {categories} is incomplete: expected <class>/<image> folders, found none")
    train, test = split_class_files(class_files, train_per_class, categories)
    classes = sorted(class_files)
    index = {c: i for i, c in enumerate(classes)}
    rels = train if split == "train" else test
    return [(str(categories / rel), index[rel.split("/", 1)[0]]) for rel in rels], classes, categories


@DATASETS.register("caltech256", aliases=("caltech-256",), spec=CALTECH256_SPEC, splits=("train", "test"),
                   find=_find)
def build_caltech256(root, split, *, train_transform, mean, std, download,
                     train_per_class: int = DEFAULT_TRAIN_PER_CLASS) -> ImageListDataset:
    """Caltech-256 (257 classes) at 224 px with KDEP's transforms and split; images are decoded lazily."""
    samples, classes, folder = caltech256_samples(root, split, train_per_class=train_per_class, download=download)
    spec = with_stats(CALTECH256_SPEC, (mean, std), num_classes=len(classes), class_names=tuple(classes))
    ds = ImageListDataset(samples, classes, folder_transform(train_transform, 224, 256, mean, std), spec=spec)
    ds.split_source = folder  # type: ignore[attr-defined]
    return ds
