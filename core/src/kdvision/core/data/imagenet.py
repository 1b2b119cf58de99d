"""ImageNet-1k (ILSVRC 2012) from class folders, as mdistiller / SDD read it (``reference/sdd.md`` §5.2).

Layout, under the data root or its ``imagenet/`` folder (SDD's ``./data/imagenet``), first match wins:

- ``train/<wnid>/*.JPEG`` and the standard validation layout ``val/<wnid>/*.JPEG`` (as torchvision's ``ImageNet``
  and the usual ``valprep.sh`` leave it);
- or Kaggle's flat ``val/*.JPEG`` with ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of
  the prediction string is the image's wnid) next to ``val/`` or inside it.

A flat ``val/`` with only the devkit's ``ILSVRC2012_validation_ground_truth.txt`` is refused with a one-line error
saying how to arrange it: those labels are devkit ``ILSVRC2012_ID``\\ s, which are not in the sorted-wnid order the
models (torchvision's weights included) are trained with.

Labels are the index of the wnid among the sorted class folders of ``train/`` (ImageFolder's rule, torchvision's
class order); without ``train/``, of the split's own folders (or the csv's wnids). So ``val`` labels always agree
with ``train`` labels, even when a class folder is missing from ``val/``. Split ``test`` reads ``val/``: ImageNet's
test labels are not public, and ``val`` is the split every paper reports (mdistiller's test loader reads it too).

Transforms (mdistiller / SDD): train RandomResizedCrop(224) → HFlip; test Resize(256, short side) → CenterCrop(224);
ImageNet normalisation. Images are decoded lazily (PIL, converted to RGB).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import DataError
from .base import DATASETS, DatasetSpec, ImageListDataset, require_root, with_stats
from .folder import IMAGE_SUFFIXES, folder_transform
from .normalization import NORMALIZATION

IMAGENET_SPEC = DatasetSpec("imagenet", 1000, 3, (224, 224), *NORMALIZATION["imagenet"],
                            train_crop_padding=None, train_hflip=True)
VAL_SOLUTION = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
_FOLDER = {"train": "train", "val": "val", "test": "val"}


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def imagenet_folder(root: Path) -> Path | None:
    """The folder holding ``train/`` / ``val/``: ``root`` or ``root/imagenet``."""
    for cand in (root, root / "imagenet"):
        if (cand / "train").is_dir() or (cand / "val").is_dir():
            return cand
    return None


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _solution_file(base: Path) -> Path | None:
    for cand in (base / VAL_SOLUTION, base / "val" / VAL_SOLUTION):
        if cand.is_file():
            return cand
    return None


def _read_solution(path: Path) -> dict[str, str]:
    """``{image id: wnid}`` from Kaggle's ``LOC_val_solution.csv``."""
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise DataError(f"{path} is not an ImageNet {VAL_SOLUTION} (needs the header "
                                f"'ImageId,PredictionString')")
            for line, row in enumerate(reader, 2):
                if len(row) < 2 or not row[1].split():
                    raise DataError(f"{path} line {line}: expected 'ImageId,<wnid> ...', got {','.join(row)!r}")
                out[row[0].strip()] = row[1].split()[0]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return out


def _flat_val_samples(base: Path, folder: Path, classes: list[str] | None) -> tuple[list[tuple[str, int]], list[str]]:
    files = sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
    solution = _solution_file(base)
    if solution is None:
        devkit = [p for p in (base / DEVKIT_GROUND_TRUTH, folder / DEVKIT_GROUND_TRUTH) if p.is_file()]
        found = f"only {devkit[0]}, whose devkit ILSVRC2012_IDs are not class-folder indices" if devkit else \
            "no labels"
        raise DataError(f"imagenet val/ at {folder} is flat ({len(files)} images) with {found}: expected "
                        f"{folder}/<wnid>/*.JPEG (move each image into its wnid folder, e.g. with valprep.sh) or "
                        f"{base / VAL_SOLUTION} next to it")
    wnid_of = _read_solution(solution)
    unlabelled = [f for f in files if os.path.splitext(f)[0] not in wnid_of]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} image(s) of {folder} are not in {solution}, e.g. {unlabelled[0]}")
    wnids = [wnid_of[os.path.splitext(f)[0]] for f in files]
    classes = classes or sorted(set(wnids))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(wnids) - set(index))
    if unknown:
        raise DataError(f"{solution} names {len(unknown)} wnid(s) without a train/ class folder, e.g. {unknown[0]}")
    return [(str(folder / f), index[w]) for f, w in zip(files, wnids)], classes


def imagenet_samples(root, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``(samples, classes)``: ``(path, label)`` pairs of ``split`` (sorted by class, then file) and the wnids."""
    path = require_root(root, "imagenet")
    base = imagenet_folder(path)
    name = _FOLDER[split]
    if base is None or not (base / name).is_dir():
        where = base or path
        raise DataError(f"imagenet {split} split not found: expected {where / name}/<wnid>/*.JPEG "
                        f"(under {path} or {path / 'imagenet'})")
    folder = base / name
    train_classes = _class_folders(base / "train") if (base / "train").is_dir() else None
    own = _class_folders(folder)
    if not own:
        if name == "val":
            return _flat_val_samples(base, folder, train_classes)
        raise DataError(f"imagenet {split} split {folder} has no class folders: expected {folder}/<wnid>/*.JPEG")
    classes = train_classes or own
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in own if c not in index]
    if unknown:
        raise DataError(f"imagenet {folder} has {len(unknown)} class folder(s) not in {base / 'train'}, "
                        f"e.g. {unknown[0]}")
    samples = [(os.path.join(folder, c, f), index[c]) for c in own
               for f in sorted(e.name for e in os.scandir(folder / c) if e.is_file() and _is_image(e.name))]
    if not samples:
        raise DataError(f"imagenet {split} split {folder} has no images ({', '.join(IMAGE_SUFFIXES)}) in its "
                        f"<wnid>/ folders")
    return samples, classes


def _find(root, split: str) -> bool:
    if root is None:
        return False
    base = imagenet_folder(Path(root).expanduser())
    return base is not None and (base / _FOLDER[split]).is_dir()


@DATASETS.register("imagenet", aliases=("imagenet1k", "ilsvrc2012"), spec=IMAGENET_SPEC,
                   splits=("train", "val", "test"), find=_find)
def build_imagenet(root, split, *, train_transform, mean, std, download) -> ImageListDataset:
    """ImageNet-1k at 224 px with mdistiller's / SDD's transforms (``test`` = ``val``)."""
    samples, classes = imagenet_samples(root, split)
    spec = with_stats(IMAGENET_SPEC, (mean, std), num_classes=len(classes), class_names=tuple(classes))
    return ImageListDataset(samples, classes, folder_transform(train_transform, 224, 256, mean, std), spec=spec)
