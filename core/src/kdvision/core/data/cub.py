"""CUB-200-2011 (Caltech-UCSD Birds) in its official layout, with the official train/test split.

``root/CUB_200_2011/`` (or ``root`` itself when it is that folder) holds, as the archive unpacks:

- ``images/<class folder>/<file>.jpg``;
- ``images.txt``: ``<image id> <path under images/>``;
- ``image_class_labels.txt``: ``<image id> <class id>`` (class ids 1 … 200);
- ``train_test_split.txt``: ``<image id> <is_training_image 1|0>`` (5,994 train / 5,794 test images);
- ``classes.txt``: ``<class id> <class name>``.

The split is read from ``train_test_split.txt`` and joined to the other files by image id, vectorised (SDD built
it with list-membership tests, O(N²): ``reference/sdd.md`` §8 #16). Labels are ``class id − 1`` (0-based). The three
per-image files must list the same image ids; every image of the requested split must exist.

Transforms (SDD, ``reference/sdd.md`` §5.3): train Resize((256, 256)) → RandomCrop(224) → HFlip; test
Resize((256, 256)) → CenterCrop(224); ImageNet normalisation. Images are decoded lazily (PIL, converted to RGB: a few
CUB images are greyscale).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import DATASETS, DatasetSpec, ImageListDataset, require_root, with_stats
from .normalization import NORMALIZATION

# Training transform Resize((256, 256)) -> RandomCrop(224) -> HFlip: only the flip has a fixed-size batched equivalent
CUB200_SPEC = DatasetSpec("cub200", 200, 3, (224, 224), *NORMALIZATION["imagenet"],
                          train_crop_padding=None, train_hflip=True)
FOLDER = "CUB_200_2011"
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def cub_folder(root: Path) -> Path | None:
    """``root/CUB_200_2011`` or ``root`` itself, whichever holds ``images.txt``."""
    for cand in (root / FOLDER, root):
        if (cand / "images.txt").is_file():
            return cand
    return None


def _read_pairs(path: Path, what: str) -> tuple[np.ndarray, list[str]]:
    """``(int64 first column, second column as strings)`` of a ``<id> <value>`` file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    ids, values = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path} line {n}: expected '<id> <{what}>', got {line!r}")
        ids.append(int(parts[0]))
        values.append(parts[1].strip())
    return np.asarray(ids, dtype=np.int64), values


def _by_id(path: Path, ids: np.ndarray, values: list[str], ref: np.ndarray) -> np.ndarray:
    """``values`` reordered to the image ids ``ref`` (sorted), or a DataError naming ``path``."""
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) != len(ref) or not np.array_equal(ids, ref):
        extra = np.setdiff1d(ids, ref)
        missing = np.setdiff1d(ref, ids)
        detail = f"e.g. id {int(extra[0])} is not in images.txt" if len(extra) else \
            f"e.g. id {int(missing[0])} of images.txt is missing" if len(missing) else "an image id repeats"
        raise DataError(f"{path} does not list the image ids of images.txt ({detail})")
    return np.asarray(values, dtype=object)[order]


def _ints(path: Path, values: np.ndarray, allowed: set[int] | None = None) -> np.ndarray:
    try:
        out = np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        raise DataError(f"{path}: expected integer values") from None
    if allowed is not None and len(out) and not np.isin(out, sorted(allowed)).all():
        bad = out[~np.isin(out, sorted(allowed))][0]
        raise DataError(f"{path}: value {int(bad)} is not one of {min(allowed)}..{max(allowed)}")
    return out


def cub200_samples(root, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``(samples, classes)``: ``(path, 0-based label)`` of ``split`` in image-id order, and the class names."""
    path = require_root(root, "cub200")
    folder = cub_folder(path)
    if folder is None:
        raise DataError(f"cub200 not found: expected {path / FOLDER}/ with images/, {', '.join(FILES)} "
                        f"(the official CUB_200_2011.tgz unpacked under the data root)")
    missing = [f for f in FILES if not (folder / f).is_file()] + ([] if (folder / "images").is_dir() else ["images/"])
    if missing:
        raise DataError(f"cub200 at {folder} is incomplete: expected images/, {', '.join(FILES)} "
                        f"(missing {', '.join(missing)})")
    class_ids, class_names = _read_pairs(folder / "classes.txt", "class name")
    if not np.array_equal(class_ids, np.arange(1, len(class_ids) + 1)):
        raise DataError(f"{folder / 'classes.txt'}: class ids must be 1..{len(class_ids)} in order")
    ids, rel = _read_pairs(folder / "images.txt", "image path")
    order = np.argsort(ids, kind="stable")
    ids, rel = ids[order], np.asarray(rel, dtype=object)[order]
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"{folder / 'images.txt'} lists an image id twice")
    label_file, split_file = folder / "image_class_labels.txt", folder / "train_test_split.txt"
    labels = _ints(label_file, _by_id(label_file, *_read_pairs(label_file, "class id"), ids),
                   set(range(1, len(class_names) + 1))) - 1
    is_train = _ints(split_file, _by_id(split_file, *_read_pairs(split_file, "is_training_image"), ids), {0, 1})
    keep = is_train == (1 if split == "train" else 0)
    files = [folder / "images" / r for r in rel[keep]]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DataError(f"cub200 {split} split: {len(absent)} image(s) listed in images.txt are missing, "
                        f"e.g. {absent[0]}")
    return [(str(f), int(y)) for f, y in zip(files, labels[keep])], class_names


def _find(root, split: str) -> bool:
    if root is None:
        return False
    folder = cub_folder(Path(root).expanduser())
    return folder is not None and all((folder / f).is_file() for f in FILES) and (folder / "images").is_dir()


def cub_transform(train: bool, mean, std, size: int = 224, resize: int = 256):
    from torchvision.transforms import v2

    geometry = [v2.Resize((resize, resize)), v2.RandomCrop(size), v2.RandomHorizontalFlip()] if train else \
        [v2.Resize((resize, resize)), v2.CenterCrop(size)]
    return v2.Compose([*geometry, v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


@DATASETS.register("cub200", aliases=("cub", "cub_200_2011"), spec=CUB200_SPEC, splits=("train", "test"),
                   find=_find)
def build_cub200(root, split, *, train_transform, mean, std, download) -> ImageListDataset:
    """CUB-200-2011 at 224 px with SDD's transforms and the official split."""
    samples, classes = cub200_samples(root, split)
    spec = with_stats(CUB200_SPEC, (mean, std), num_classes=len(classes), class_names=tuple(classes))
    return ImageListDataset(samples, classes, cub_transform(train_transform, mean, std), spec=spec)
