"""DTD (Describable Textures Dataset) in its official release layout, with its ten official partitions.

``root/dtd/`` (or ``root`` itself when it is that folder, or torchvision's ``root/dtd/dtd/``) holds, as
``dtd-r1.0.1.tar.gz`` unpacks:

- ``images/<class>/<image>.jpg``: 47 class folders, 120 images each;
- ``labels/{train,val,test}{1..10}.txt``: one ``<class>/<image>.jpg`` per line, 1,880 lines per file.

Classes are the sorted folder names under ``images/`` and labels their index. ``partition`` (1 … 10, default 1)
picks the label files. Splits follow KDEP's transfer protocol (``reference/kdep.md`` §6.1): ``train`` is
``train<p>.txt`` followed by ``val<p>.txt`` (3,760 images), ``test`` is ``test<p>.txt`` (1,880 images); samples keep
the files' line order. Every listed image must exist and belong to a class folder.

Transforms (KDEP): train RandomResizedCrop(224) → HFlip; test Resize(256, short side) → CenterCrop(224). The default
normalisation is ImageNet's; KDEP's original fine-tuning used none (``normalize=False``, ``reference/kdep.md`` §8 #8).
Images are decoded lazily (PIL, converted to RGB).

``download=True`` fetches the official archive through torchvision (``torchvision.datasets.DTD``: URL
https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz and the md5 torchvision carries), which
unpacks it as ``root/dtd/dtd/``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, DataError
from .base import DATASETS, DatasetSpec, ImageListDataset, require_root, run_download, with_stats
from .folder import folder_transform
from .normalization import NORMALIZATION

# Training transform RandomResizedCrop(224) -> HFlip: only the flip has a fixed-size batched equivalent
DTD_SPEC = DatasetSpec("dtd", 47, 3, (224, 224), *NORMALIZATION["imagenet"], train_crop_padding=None,
                       train_hflip=True)
FOLDER = "dtd"
PARTITIONS = range(1, 11)
DEFAULT_PARTITION = 1
#: the label files each split reads, in order
SPLIT_FILES = {"train": ("train", "val"), "test": ("test",)}


def dtd_folder(root: Path) -> Path | None:
    """``root/dtd`` or torchvision's ``root/dtd/dtd``, the first that holds ``images/`` or ``labels/``; else ``root``
    itself when it holds both (a data root with an unrelated ``images/`` folder is not taken for DTD)."""
    for cand in (root / FOLDER, root / FOLDER / FOLDER):
        if (cand / "images").is_dir() or (cand / "labels").is_dir():
            return cand
    return root if (root / "images").is_dir() and (root / "labels").is_dir() else None


def label_files(split: str, partition: int = DEFAULT_PARTITION) -> list[str]:
    """The label files (relative to the dtd folder) that make up ``split`` of ``partition``."""
    return [f"labels/{kind}{partition}.txt" for kind in SPLIT_FILES[split]]


def _check_partition(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"dtd partition must be one of 1..10, got {value!r}")
    try:
        p = int(value)
    except ValueError:
        raise ConfigError(f"dtd partition must be one of 1..10, got {value!r}") from None
    if p not in PARTITIONS:
        raise ConfigError(f"dtd partition must be one of 1..10, got {value!r}")
    return p


def _find(root, split: str) -> bool:
    if root is None:
        return False
    folder = dtd_folder(Path(root).expanduser())
    return folder is not None and (folder / "images").is_dir() and \
        all((folder / f).is_file() for f in label_files(split))


def _read_list(path: Path, index: dict[str, int]) -> list[tuple[str, int]]:
    """``(<class>/<image>, label)`` per non-empty line of a label file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    out = []
    for n, line in enumerate(lines, 1):
        rel = line.strip()
        if not rel:
            continue
        cls, sep, name = rel.partition("/")
        if not sep or not name or "/" in name:
            raise DataError(f"{path} line {n}: expected '<class>/<image>', got {line!r}")
        if cls not in index:
            raise DataError(f"{path} line {n}: class {cls!r} has no folder under images/")
        out.append((rel, index[cls]))
    return out


def dtd_samples(root, split: str, *, partition: int = DEFAULT_PARTITION, download: bool = False
                ) -> tuple[list[tuple[str, int]], list[str], Path]:
    """``(samples, classes, folder)``: ``(path, label)`` pairs of ``split`` in label-file order, the class names,
    and the dtd folder they were read from."""
    partition = _check_partition(partition)
    path = require_root(root, "dtd", create=download)
    folder = dtd_folder(path)
    if folder is None and download:
        import torchvision

        run_download(lambda: torchvision.datasets.DTD(str(path), download=True), "DTD", path)
        folder = dtd_folder(path)
    files = label_files(split, partition)
    if folder is None:
        raise DataError(f"dtd not found: expected {path / FOLDER}/ with images/<class>/<image> and "
                        f"{', '.join(files)} (the official dtd-r1.0.1.tar.gz unpacked under the data root)")
    missing = ([] if (folder / "images").is_dir() else ["images/"]) + [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"dtd at {folder} is incomplete: expected images/, {', '.join(files)} "
                        f"(missing {', '.join(missing)})")
    classes = sorted(e.name for e in os.scandir(folder / "images") if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"dtd at {folder} is incomplete: expected images/<class>/ folders, found none")
    index = {c: i for i, c in enumerate(classes)}
    listed = [item for f in files for item in _read_list(folder / f, index)]
    seen: set[str] = set()
    for rel, _ in listed:
        if rel in seen:
            raise DataError(f"dtd {split} split of partition {partition} lists {rel} twice ({', '.join(files)})")
        seen.add(rel)
    images = folder / "images"
    samples = [(str(images / rel), label) for rel, label in listed]
    absent = [p for p, _ in samples if not os.path.isfile(p)]
    if absent:
        raise DataError(f"dtd {split} split: {len(absent)} image(s) listed in {', '.join(files)} are missing, "
                        f"e.g. {absent[0]}")
    return samples, classes, folder


@DATASETS.register("dtd", aliases=("describable_textures",), spec=DTD_SPEC, splits=("train", "test"), find=_find)
def build_dtd(root, split, *, train_transform, mean, std, download,
              partition: int = DEFAULT_PARTITION) -> ImageListDataset:
    """DTD (47 classes) at 224 px with KDEP's transforms; ``train`` = train + val of ``partition``."""
    samples, classes, folder = dtd_samples(root, split, partition=partition, download=download)
    spec = with_stats(DTD_SPEC, (mean, std), num_classes=len(classes), class_names=tuple(classes))
    ds = ImageListDataset(samples, classes, folder_transform(train_transform, 224, 256, mean, std), spec=spec)
    ds.split_source = folder  # type: ignore[attr-defined]
    return ds
