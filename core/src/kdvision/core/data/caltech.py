"""Caltech-101 with DFAD's 80/20 split, made deterministic, versioned and checked.

Accepted layouts (first match wins):

1. ``root/101_ObjectCategories_split/{train,test}/<class>/*`` — a pre-split tree (DFAD's layout) used as is;
   a file present in both train and test of a class is an error.
2. ``root/101_ObjectCategories/<class>/*`` or ``root/caltech101/101_ObjectCategories/<class>/*`` (torchvision's
   layout) — split by the rule below, recorded in ``caltech101_split_v1.json``.

``BACKGROUND_Google`` is excluded (101 classes); classes are labelled in sorted folder-name order (as ImageFolder).

Split rule (version 1), independent of file-system order, platform and library versions:
for every class, with ``n`` images, ``n_test = max(2, floor(0.2 * n + 0.5))`` (at least one image stays in train;
a class with fewer than 3 images is an error); the test images are the ``n_test`` files whose
``sha256(f"{seed}/{class}/{filename}")`` hex digests are smallest; the rest are train. Default seed 1 (DFAD's).

The split file (JSON) holds ``format``, ``version``, ``seed``, ``test_fraction``, ``min_test_per_class``, ``rule``,
``classes``, ``train`` and ``test`` (sorted ``"<class>/<file>"`` lists) and ``sha256``: the sha256 of
``json.dumps({"train": train, "test": test}, sort_keys=True, separators=(",", ":"))``. It is written next to
``101_ObjectCategories`` when that folder is writable (and not marked read-only), else under
``$KDVISION_CACHE`` (default ``~/.cache/kdvision``)``/caltech101/<hash of the data path>/``. An existing file is
reused after checking its checksum, that train and test do not overlap, and that every listed image exists.

Transforms (DFAD): train Resize(128, short side) → RandomCrop(128) → HFlip; test Resize(128) → CenterCrop(128);
normalisation ``half`` (0.5/0.5) by default.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from ..errors import DataError
from .base import DATASETS, DatasetSpec, ImageListDataset, is_writable_dir, require_root, run_download, with_stats
from .normalization import NORMALIZATION

# Training transform Resize(128) -> RandomCrop(128) (no padding: on a 128 x 128 image only the flip remains) -> HFlip
CALTECH101_SPEC = DatasetSpec("caltech101", 101, 3, (128, 128), *NORMALIZATION["half"],
                              train_crop_padding=None, train_hflip=True)

SPLIT_VERSION = 1
SPLIT_FORMAT = "kdvision.caltech101_split"
DEFAULT_SEED = 1
TEST_FRACTION = 0.2
MIN_TEST_PER_CLASS = 2
EXCLUDED_CLASSES = frozenset({"BACKGROUND_Google"})
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_RULE = ("per class: n_test = max(2, floor(0.2*n + 0.5)), at most n-1; test = the n_test files with the "
              "smallest sha256('{seed}/{class}/{filename}') hex digest; classes sorted, BACKGROUND_Google excluded")


def split_file_name(seed: int = DEFAULT_SEED) -> str:
    return f"caltech101_split_v{SPLIT_VERSION}.json" if seed == DEFAULT_SEED else \
        f"caltech101_split_v{SPLIT_VERSION}_seed{seed}.json"


def cache_dir() -> Path:
    env = os.environ.get("KDVISION_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kdvision"


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_class_folders(folder: Path, exclude: frozenset[str] | set[str] = EXCLUDED_CLASSES) -> dict[str, list[str]]:
    """``{class: sorted image file names}`` of a ``<class>/<image>`` tree (image files directly in each class
    folder; hidden entries, other files and nested folders are ignored), the folders in ``exclude`` left out
    (default: Caltech-101's ``BACKGROUND_Google``)."""
    classes: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and entry.name not in exclude and not entry.name.startswith("."):
            classes[entry.name] = sorted(f.name for f in os.scandir(entry.path) if f.is_file() and _is_image(f.name))
    return classes


def compute_split(class_files: dict[str, list[str]], seed: int = DEFAULT_SEED) -> tuple[list[str], list[str]]:
    """Apply the version-1 split rule; returns sorted ``"<class>/<file>"`` train and test lists."""
    train: list[str] = []
    test: list[str] = []
    for cls in sorted(class_files):
        files = sorted(class_files[cls])
        n = len(files)
        if n < MIN_TEST_PER_CLASS + 1:
            raise DataError(f"caltech101 class {cls!r} has {n} image(s); the split needs at least "
                            f"{MIN_TEST_PER_CLASS + 1} per class")
        n_test = min(max(MIN_TEST_PER_CLASS, math.floor(TEST_FRACTION * n + 0.5)), n - 1)
        ranked = sorted(files, key=lambda f: hashlib.sha256(f"{seed}/{cls}/{f}".encode("utf-8")).hexdigest())
        test += [f"{cls}/{f}" for f in sorted(ranked[:n_test])]
        train += [f"{cls}/{f}" for f in sorted(ranked[n_test:])]
    return train, test


def lists_sha256(train: list[str], test: list[str]) -> str:
    payload = json.dumps({"train": train, "test": test}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def split_document(class_files: dict[str, list[str]], seed: int = DEFAULT_SEED) -> dict[str, Any]:
    train, test = compute_split(class_files, seed)
    return {
        "format": SPLIT_FORMAT,
        "version": SPLIT_VERSION,
        "seed": seed,
        "test_fraction": TEST_FRACTION,
        "min_test_per_class": MIN_TEST_PER_CLASS,
        "rule": SPLIT_RULE,
        "classes": sorted(class_files),
        "num_train": len(train),
        "num_test": len(test),
        "train": train,
        "test": test,
        "sha256": lists_sha256(train, test),
    }


def verify_split_document(doc: Any, path: Path, seed: int | None = None) -> None:
    """Checksum, version and overlap checks; :class:`DataError` naming ``path`` on any problem."""
    if not isinstance(doc, dict) or not all(k in doc for k in ("version", "seed", "train", "test", "sha256")):
        raise DataError(f"caltech101 split file {path} is malformed (needs version, seed, train, test, sha256)")
    if doc["version"] != SPLIT_VERSION:
        raise DataError(f"caltech101 split file {path} has version {doc['version']!r}, expected {SPLIT_VERSION}")
    if seed is not None and doc["seed"] != seed:
        raise DataError(f"caltech101 split file {path} was made with seed {doc['seed']!r}, expected {seed}")
    train, test = doc["train"], doc["test"]
    if not (isinstance(train, list) and isinstance(test, list) and all(isinstance(s, str) for s in train + test)):
        raise DataError(f"caltech101 split file {path} is malformed (train/test must be lists of paths)")
    if lists_sha256(train, test) != doc["sha256"]:
        raise DataError(f"caltech101 split file {path} fails its sha256 check (edited or corrupt); delete it to "
                        f"regenerate the split, or restore the original")
    overlap = set(train) & set(test)
    if overlap:
        raise DataError(f"caltech101 split file {path}: {len(overlap)} image(s) are in both train and test, "
                        f"e.g. {sorted(overlap)[0]}")
    if len(set(train)) != len(train) or len(set(test)) != len(test):
        raise DataError(f"caltech101 split file {path} lists an image twice")


def _atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: fh.write((json.dumps(doc, indent=1) + "\n").encode("utf-8")))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read caltech101 split file {path}: {exc}") from None


def _cache_location(categories: Path, seed: int) -> Path:
    key = hashlib.sha256(str(categories.resolve()).encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "caltech101" / key / split_file_name(seed)


def split_file_candidates(categories: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Where the split file of ``categories`` (a ``101_ObjectCategories`` folder) is looked for, in order."""
    return [categories.parent / split_file_name(seed), _cache_location(categories, seed)]


def load_or_create_split(categories: Path, seed: int = DEFAULT_SEED, split_file: str | os.PathLike | None = None
                         ) -> tuple[dict[str, Any], Path]:
    """The verified split document for ``categories`` and where it lives (created on first use)."""
    if split_file is not None:
        path = Path(split_file).expanduser()
        if not path.is_file():
            raise DataError(f"caltech101 split file {path} does not exist")
        candidates = [path]
    else:
        candidates = split_file_candidates(categories, seed)
    for path in candidates:
        if path.is_file():
            doc = _read_json(path)
            verify_split_document(doc, path, seed=None if split_file is not None else seed)
            missing = [rel for rel in doc["train"] + doc["test"] if not (categories / rel).is_file()]
            if missing:
                raise DataError(f"caltech101 split file {path} lists {len(missing)} image(s) missing under "
                                f"{categories}, e.g. {missing[0]}")
            return doc, path
    doc = split_document(scan_class_folders(categories), seed)
    primary, fallback = candidates
    target = primary if is_writable_dir(primary.parent) else fallback
    try:
        _atomic_write_json(target, doc)
    except OSError:
        if target == fallback:
            raise DataError(f"cannot write the caltech101 split file to {primary.parent} or {fallback.parent}") \
                from None
        target = fallback
        try:
            _atomic_write_json(target, doc)
        except OSError as exc:
            raise DataError(f"cannot write the caltech101 split file {target}: {exc}") from None
    return doc, target


def categories_folder(root: Path, folder: str, torchvision_dir: str) -> Path | None:
    """``root/<folder>`` or torchvision's ``root/<torchvision_dir>/<folder>``, whichever is a directory first."""
    for cand in (root / folder, root / torchvision_dir / folder):
        if cand.is_dir():
            return cand
    return None


def _categories_folder(root: Path) -> Path | None:
    return categories_folder(root, "101_ObjectCategories", "caltech101")


def _presplit_folder(root: Path) -> Path | None:
    cand = root / "101_ObjectCategories_split"
    return cand if cand.is_dir() else None


def _find(root, split: str) -> bool:
    if root is None:
        return False
    root = Path(root).expanduser()
    pre = _presplit_folder(root)
    if pre is not None:
        return (pre / split).is_dir()
    return _categories_folder(root) is not None


def _transform(train: bool, mean, std, size: int = 128):
    from torchvision.transforms import v2

    geometry = [v2.Resize(size), v2.RandomCrop(size), v2.RandomHorizontalFlip()] if train else \
        [v2.Resize(size), v2.CenterCrop(size)]
    return v2.Compose([*geometry, v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


def caltech101_samples(root, split: str, *, seed: int = DEFAULT_SEED, split_file=None, download: bool = False
                       ) -> tuple[list[tuple[str, int]], list[str], Path]:
    """``(samples, classes, source)``: ``(path, label)`` pairs of ``split``, class names, and the split file or
    pre-split folder they come from."""
    path = require_root(root, "caltech101", create=download)
    pre = _presplit_folder(path) if split_file is None else None
    if pre is not None:
        folder = pre / split
        if not folder.is_dir():
            raise DataError(f"caltech101 {split} split not found: expected {folder}/<class>/<image>")
        this = scan_class_folders(folder)
        other_name = "test" if split == "train" else "train"
        if (pre / other_name).is_dir():
            other = scan_class_folders(pre / other_name)
            overlap = [f"{c}/{f}" for c in this if c in other for f in set(this[c]) & set(other[c])]
            if overlap:
                raise DataError(f"caltech101 pre-split folder {pre}: {len(overlap)} image(s) are in both train and "
                                f"test, e.g. {sorted(overlap)[0]}")
        classes = sorted(this)
        if not classes or not any(this.values()):
            raise DataError(f"caltech101 {split} split {folder} has no images in <class>/ folders")
        samples = [(str(folder / c / f), i) for i, c in enumerate(classes) for f in this[c]]
        return samples, classes, folder
    categories = _categories_folder(path)
    if categories is None and download:
        import torchvision

        run_download(lambda: torchvision.datasets.Caltech101(str(path), download=True), "Caltech101", path)
        categories = _categories_folder(path)
    if categories is None:
        raise DataError(
            f"caltech101 not found: expected {path / '101_ObjectCategories'}/<class>/<image>, "
            f"{path / 'caltech101' / '101_ObjectCategories'} or {path / '101_ObjectCategories_split'}/{{train,test}}"
        )
    doc, source = load_or_create_split(categories, seed, split_file)
    classes = sorted(doc.get("classes") or {rel.split("/", 1)[0] for rel in doc["train"] + doc["test"]})
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for rel in doc[split]:
        cls = rel.split("/", 1)[0]
        if cls not in index:
            raise DataError(f"caltech101 split file {source} lists {rel} whose class is not in its class list")
        samples.append((str(categories / rel), index[cls]))
    return samples, classes, source


@DATASETS.register("caltech101", aliases=("caltech-101",), spec=CALTECH101_SPEC, splits=("train", "test"),
                   find=_find)
def build_caltech101(root, split, *, train_transform, mean, std, download, seed: int = DEFAULT_SEED,
                     split_file: str | os.PathLike | None = None) -> ImageListDataset:
    """Caltech-101 at 128 px with DFAD's transforms; images are decoded lazily (PIL, converted to RGB)."""
    samples, classes, source = caltech101_samples(root, split, seed=seed, split_file=split_file, download=download)
    spec = with_stats(CALTECH101_SPEC, (mean, std), num_classes=len(classes), class_names=tuple(classes))
    ds = ImageListDataset(samples, classes, _transform(train_transform, mean, std), spec=spec)
    ds.split_source = source  # type: ignore[attr-defined]
    return ds
