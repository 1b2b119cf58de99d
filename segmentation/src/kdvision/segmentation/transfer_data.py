"""The segmentation-transfer benchmarks (PASCAL VOC 2012, Cityscapes, ADE20K) and semseg's training augmentation.

Importing this module registers ``voc2012`` (alias ``voc``), ``cityscapes`` and ``ade20k`` (alias ``ade``) in core's
dataset registry. Items are ``(image float32 3×H×W normalised, mask int64 H×W)``; 255 = ignore. Layouts:

* **VOC2012**: ``root`` = the folder holding ``VOCdevkit/VOC2012`` (or ``VOC2012`` itself, or ``VOCdevkit``).
  ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs of class indices), lists
  ``ImageSets/Segmentation/{train,val}.txt``; split ``train_aug`` reads ``ImageSets/Segmentation/train_aug.txt``
  with labels from ``SegmentationClassAug/<id>.png`` (the SBD-augmented set). 21 classes (0 = background);
  255 (object boundaries) = ignore; any other value is a DataError.
* **Cityscapes**: ``leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png`` with
  ``gtFine/{split}/<city>/<stem>_gtFine_labelTrainIds.png`` when present (values 0..18, 255), else
  ``<stem>_gtFine_labelIds.png`` mapped to the 19 train ids (road 7 → 0, ..., bicycle 33 → 18; every other id → 255).
* **ADE20K** (SceneParsing): ``ADEChallengeData2016/images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (splits ``train``/``val``); 150 classes, raw 0 ("other") → 255,
  k → k − 1.

Training transform (:func:`semseg_transform`, semseg's pipeline on image/mask pairs with torchvision transforms v2):
random scale in ``scale`` (image bilinear, mask nearest) → rotation in ±``rotate``° with probability 0.5 (image
bilinear, filled with the mean; mask nearest, filled with 255) → Gaussian blur (5×5, σ 1.1: OpenCV's σ for a 5×5
kernel) with probability ``blur`` → horizontal flip (p 0.5) → random ``crop_size`` crop, padded where smaller (image
mean, mask 255) → [0, 1] → normalised. Evaluation: the full image, only normalised.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kdvision.core.data.base import DATASETS, DatasetSpec, open_image, require_root, with_stats
from kdvision.core.data.normalization import NORMALIZATION
from kdvision.core.errors import DataError

from .data import IGNORE_INDEX, SegmentationDataset, _bit_colormap, _label_lut, _PngImages

# ----------------------------------------------------------------------------------------------------------------
# classes and palettes

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
VOC_PALETTE = tuple(_bit_colormap(21)) + ((0, 0, 0),)

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
#: Cityscapes label id → train id (the 19 evaluated classes); every other id is ignored.
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                            26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
                      (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                      (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
                      (0, 0, 0))
# ADE20K: 150 classes drawn with the bit colour map (entries 1..150), void black; class names are not listed here.
ADE20K_PALETTE = tuple(_bit_colormap(151)[1:]) + ((0, 0, 0),)

IMAGENET = NORMALIZATION["imagenet"]


# ----------------------------------------------------------------------------------------------------------------
# transforms


def _random_scale(low: float, high: float):
    from torchvision.transforms import v2

    class RandomScale(v2.Transform):
        """Resize image and mask together by one factor drawn uniformly from [low, high] (masks: nearest)."""

        def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
            h, w = v2.query_size(flat_inputs)
            f = float(torch.empty(1).uniform_(low, high))
            return {"size": [max(1, round(h * f)), max(1, round(w * f))]}

        def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
            return v2.functional.resize(inpt, params["size"], interpolation=v2.InterpolationMode.BILINEAR,
                                        antialias=True)  # dispatches masks to nearest

    return RandomScale()


def semseg_transform(train: bool, *, crop_size: int = 512, scale: Sequence[float] = (0.5, 2.0), rotate: float = 10.0,
                     blur: float = 0.5, flip: bool = True, mean: Sequence[float] = IMAGENET[0],
                     std: Sequence[float] = IMAGENET[1]) -> Callable[[Any, Any], tuple[Any, Any]]:
    """semseg's joint training pipeline (module docstring) on ``(tv_tensors.Image uint8, tv_tensors.Mask)``;
    ``train=False``: normalisation only (full image)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps: list[Any] = []
    if train:
        fill_image = tuple(int(round(255 * m)) for m in mean)  # the mean colour: 0 once normalised
        fill = {tv_tensors.Image: fill_image, tv_tensors.Mask: IGNORE_INDEX}
        if tuple(scale) != (1.0, 1.0):
            steps.append(_random_scale(float(scale[0]), float(scale[1])))
        if rotate:
            steps.append(v2.RandomApply([v2.RandomRotation(rotate, interpolation=v2.InterpolationMode.BILINEAR,
                                                           fill=fill)], p=0.5))
        if blur:
            steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=1.1)], p=blur))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


# ----------------------------------------------------------------------------------------------------------------
# the dataset with a whitelist of raw label values


class CheckedSegmentationDataset(SegmentationDataset):
    """A :class:`SegmentationDataset` whose raw labels must lie in ``valid`` (bool, 256 entries): a label file from
    another format (colour PNGs, other id sets) is a one-line DataError naming the values, never silent noise."""

    def __init__(self, *args: Any, valid: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.valid = valid

    def raw_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        image_ref, label_path = self.files[index]
        image = self.read_image(index)
        arr = np.asarray(open_image(label_path, None, what="label"))
        if arr.ndim != 2:
            raise DataError(f"label {label_path} has shape {arr.shape}: expected a single-channel image of class "
                            f"indices")
        raw = torch.from_numpy(arr.astype(np.uint8)).long()
        if arr.dtype != np.uint8 and arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise DataError(f"label {label_path}: values outside 0..255")
        bad = ~self.valid[raw]
        if bool(bad.any()):
            values = sorted(set(raw[bad].unique().tolist()))
            shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
            raise DataError(f"label {label_path}: values not valid for {self.name}: {shown}")
        if tuple(raw.shape) != tuple(image.shape[1:]):
            raise DataError(f"label {label_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_ref} is "
                            f"{image.shape[2]}x{image.shape[1]} (W x H)")
        return tv_tensors.Image(image), tv_tensors.Mask(self.lut[raw])


def _valid(values) -> torch.Tensor:
    valid = torch.zeros(256, dtype=torch.bool)
    valid[list(values)] = True
    return valid


def _make(name: str, split: str, root: Path, files: list[tuple[str, str]], spec: DatasetSpec, *, lut, valid,
          train_transform: bool, mean, std, crop_size: int, scale: Sequence[float]) -> CheckedSegmentationDataset:
    if not files:
        raise DataError(f"{name} {split}: no images found under {root}")
    transform = semseg_transform(train_transform, crop_size=crop_size, scale=scale, mean=mean, std=std)
    return CheckedSegmentationDataset(name, split, root, files, read_image=_PngImages([f for f, _ in files]),
                                      lut=lut, max_raw=255, transform=transform,
                                      spec=with_stats(spec, (mean, std), image_size=(crop_size, crop_size)),
                                      valid=valid)


def _no_download(name: str, download: bool, root: Any, how: str) -> None:
    if download:
        raise DataError(f"{name} cannot be downloaded automatically (data root {root}): {how}")


def _safe(find: Callable[[Path, str], Any]) -> Callable[[Any, str], bool]:
    def wrapped(root, split: str) -> bool:
        if root is None:
            return False
        try:
            return bool(find(Path(root).expanduser(), split))
        except (OSError, TypeError, ValueError, DataError):
            return False

    return wrapped


# ----------------------------------------------------------------------------------------------------------------
# PASCAL VOC 2012

VOC_SPEC = DatasetSpec("voc2012", 21, 3, (512, 512), *IMAGENET, class_names=VOC_CLASSES, task="segmentation")
VOC_HOW = ("put VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation; for train_aug also "
           "SegmentationClassAug and ImageSets/Segmentation/train_aug.txt) there")


def voc_base(root: Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or ``root``)."""
    for base in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (base / "JPEGImages").is_dir():
            return base
    raise DataError(f"voc2012: no VOC2012/JPEGImages under {root}; {VOC_HOW}")


def voc_files(root: Path, split: str) -> list[tuple[str, str]]:
    base = voc_base(root)
    listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    labels = base / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
    for need in (listing, labels):
        if not need.exists():
            raise DataError(f"voc2012 {split} split incomplete: {need} not found")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    # Some published lists hold "/JPEGImages/x.jpg /SegmentationClassAug/x.png" pairs: keep the id.
    ids = [Path(i).stem for i in ids]
    files = [(str(base / "JPEGImages" / f"{i}.jpg"), str(labels / f"{i}.png")) for i in ids]
    missing = next((p for pair in files for p in pair if not Path(p).is_file()), None)
    if missing is not None:
        raise DataError(f"voc2012 {split}: {missing} listed in {listing} not found ({len(files)} ids)")
    return files


@DATASETS.register("voc2012", aliases=("voc",), spec=VOC_SPEC, splits=("train", "train_aug", "val"),
                   find=_safe(voc_files), palette=VOC_PALETTE)
def build_voc2012(root, split, *, train_transform, mean, std, download, crop_size: int = 512,
                  scale: Sequence[float] = (0.5, 1.5)):
    """PASCAL VOC 2012 segmentation (module docstring)."""
    _no_download("voc2012", download, root, VOC_HOW)
    path = require_root(root, "voc2012")
    lut = _label_lut({**{k: k for k in range(21)}, 255: IGNORE_INDEX})
    return _make("voc2012", split, path, voc_files(path, split), VOC_SPEC, lut=lut, valid=_valid([*range(21), 255]),
                 train_transform=train_transform, mean=mean, std=std, crop_size=crop_size, scale=scale)


# ----------------------------------------------------------------------------------------------------------------
# Cityscapes

CITYSCAPES_SPEC = DatasetSpec("cityscapes", 19, 3, (512, 512), *IMAGENET, class_names=CITYSCAPES_CLASSES,
                              task="segmentation")
CITYSCAPES_HOW = "put leftImg8bit/ and gtFine/ (cityscapes-dataset.com) there"


def cityscapes_files(root: Path, split: str) -> list[tuple[str, str, bool]]:
    """``(image, label, label_is_train_ids)`` of a split, sorted by city then file name."""
    images_dir, labels_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for need in (images_dir, labels_dir):
        if not need.is_dir():
            raise DataError(f"cityscapes {split} split not found: expected folder {need}")
    out = []
    for image in sorted(images_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        city = labels_dir / image.parent.name
        train_ids, ids = city / f"{stem}_gtFine_labelTrainIds.png", city / f"{stem}_gtFine_labelIds.png"
        if train_ids.is_file():
            out.append((str(image), str(train_ids), True))
        elif ids.is_file():
            out.append((str(image), str(ids), False))
        else:
            raise DataError(f"cityscapes {split}: image {image} has no label ({ids.name} or {train_ids.name} in "
                            f"{city})")
    if not out:
        raise DataError(f"cityscapes {split}: no <city>/*_leftImg8bit.png under {images_dir}")
    return out


class _CityscapesDataset(CheckedSegmentationDataset):
    """Cityscapes: labelIds files through the id → train id table, labelTrainIds files as they are."""

    def __init__(self, *args: Any, train_ids: list[bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_ids = train_ids
        self.id_lut, self.id_valid = self.lut, self.valid
        self.train_lut = _label_lut({**{k: k for k in range(19)}, 255: IGNORE_INDEX})
        self.train_valid = _valid([*range(19), 255])

    def raw_item(self, index: int):
        self.lut, self.valid = ((self.train_lut, self.train_valid) if self.train_ids[index]
                                else (self.id_lut, self.id_valid))
        return super().raw_item(index)


@DATASETS.register("cityscapes", spec=CITYSCAPES_SPEC, splits=("train", "val"), find=_safe(cityscapes_files),
                   palette=CITYSCAPES_PALETTE)
def build_cityscapes(root, split, *, train_transform, mean, std, download, crop_size: int = 512,
                     scale: Sequence[float] = (0.5, 2.0)):
    """Cityscapes fine annotations, 19 train ids (module docstring)."""
    _no_download("cityscapes", download, root, CITYSCAPES_HOW)
    path = require_root(root, "cityscapes")
    found = cityscapes_files(path, split)
    files = [(i, label) for i, label, _ in found]
    transform = semseg_transform(train_transform, crop_size=crop_size, scale=scale, mean=mean, std=std)
    return _CityscapesDataset("cityscapes", split, path, files, read_image=_PngImages([f for f, _ in files]),
                              lut=_label_lut(CITYSCAPES_ID_TO_TRAINID), max_raw=255, transform=transform,
                              spec=with_stats(CITYSCAPES_SPEC, (mean, std), image_size=(crop_size, crop_size)),
                              valid=_valid(range(34)), train_ids=[t for *_, t in found])


# ----------------------------------------------------------------------------------------------------------------
# ADE20K (SceneParsing, ADEChallengeData2016)

ADE20K_SPEC = DatasetSpec("ade20k", 150, 3, (512, 512), *IMAGENET, task="segmentation")
ADE20K_HOW = "put ADEChallengeData2016/ (images/, annotations/; sceneparsing.csail.mit.edu) there"
_ADE_SPLIT = {"train": "training", "val": "validation"}


def ade20k_files(root: Path, split: str) -> list[tuple[str, str]]:
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    images_dir, labels_dir = base / "images" / _ADE_SPLIT[split], base / "annotations" / _ADE_SPLIT[split]
    for need in (images_dir, labels_dir):
        if not need.is_dir():
            raise DataError(f"ade20k {split} split not found: expected folder {need}")
    files = []
    for image in sorted(images_dir.glob("*.jpg")):
        label = labels_dir / f"{image.stem}.png"
        if not label.is_file():
            raise DataError(f"ade20k {split}: image {image} has no label {label}")
        files.append((str(image), str(label)))
    if not files:
        raise DataError(f"ade20k {split}: no .jpg images in {images_dir}")
    return files


@DATASETS.register("ade20k", aliases=("ade",), spec=ADE20K_SPEC, splits=("train", "val"), find=_safe(ade20k_files),
                   palette=ADE20K_PALETTE)
def build_ade20k(root, split, *, train_transform, mean, std, download, crop_size: int = 512,
                 scale: Sequence[float] = (0.5, 2.0)):
    """ADE20K SceneParsing, 150 classes (module docstring)."""
    _no_download("ade20k", download, root, ADE20K_HOW)
    path = require_root(root, "ade20k")
    lut = _label_lut({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, 151)}})
    return _make("ade20k", split, path, ade20k_files(path, split), ADE20K_SPEC, lut=lut, valid=_valid(range(151)),
                 train_transform=train_transform, mean=mean, std=std, crop_size=crop_size, scale=scale)


__all__ = ["ADE20K_PALETTE", "CITYSCAPES_CLASSES", "CITYSCAPES_ID_TO_TRAINID", "CITYSCAPES_PALETTE",
           "CheckedSegmentationDataset", "VOC_CLASSES", "VOC_PALETTE", "ade20k_files", "build_ade20k",
           "build_cityscapes", "build_voc2012", "cityscapes_files", "semseg_transform", "voc_files"]
