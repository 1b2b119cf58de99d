"""Detection datasets in Detectron2's folder layouts, under Detectron2's names.

The root is ``--data_root``, else the ``DETECTRON2_DATASETS`` environment variable, else ``datasets`` (as
Detectron2's ``builtin.py``). Layouts:

- Pascal VOC: ``<root>/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{trainval,test}.txt}`` (and
  VOC2012); names ``voc_2007_trainval``, ``voc_2007_train``, ``voc_2007_val``, ``voc_2007_test``,
  ``voc_2012_trainval``, ``voc_2012_train``, ``voc_2012_val``. Boxes as Detectron2 reads them: ``xmin - 1``,
  ``ymin - 1``, ``xmax``, ``ymax`` (VOC's 1-based pixel indices to 0-based corners); ``difficult`` objects are
  kept for training and ignored by the evaluation (:mod:`.evaluation`).
- COCO: ``<root>/coco/annotations/instances_{train,val}2017.json``, images in ``<root>/coco/{train,val}2017/``;
  names ``coco_2017_train``, ``coco_2017_val``. Category ids are mapped to contiguous labels 1..80 in id order;
  ``iscrowd`` boxes are left out of training and ignored by the evaluation.

Samples are ``(image float [0,1] C×H×W RGB, target)`` with ``target = {"boxes" (N×4 xyxy float), "labels"
(N int64, 1-based; 0 is torchvision's background), "difficult" (N bool), "image_id"}`` — torchvision's detection
convention. Resizing and normalisation are the model's (``GeneralizedRCNNTransform``).
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from kdvision.core.errors import ConfigError, DataError

ENV = "DETECTRON2_DATASETS"
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str    # "voc" | "coco"
    folder: str  # VOC2007 / coco
    split: str   # trainval / test / train2017 ...

    def describe(self, root: str | Path) -> str:
        base = Path(root) / self.folder
        if self.kind == "voc":
            return f"{base}/ImageSets/Main/{self.split}.txt"
        return f"{base}/annotations/instances_{self.split}.json"


DATASETS: dict[str, DatasetSpec] = {}
for _year in (2007, 2012):
    for _split in ("trainval", "train", "val") + (("test",) if _year == 2007 else ()):
        DATASETS[f"voc_{_year}_{_split}"] = DatasetSpec(f"voc_{_year}_{_split}", "voc", f"VOC{_year}", _split)
for _split in ("train", "val"):
    DATASETS[f"coco_2017_{_split}"] = DatasetSpec(f"coco_2017_{_split}", "coco", "coco", f"{_split}2017")


def default_root(data_root: str | None) -> str:
    """``--data_root``, else ``$DETECTRON2_DATASETS``, else ``datasets``."""
    return data_root or os.environ.get(ENV) or "datasets"


def spec_of(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"unknown detection dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def is_present(name: str, root: str | Path) -> bool:
    spec = spec_of(name)
    return Path(spec.describe(root)).is_file()


def classes_of(names: list[str] | tuple[str, ...], root: str | Path) -> tuple[str, ...]:
    """Class names of a list of datasets (all VOC or all COCO)."""
    kinds = {spec_of(n).kind for n in names}
    if len(kinds) > 1:
        raise ConfigError(f"datasets {', '.join(names)} mix VOC and COCO (different classes)")
    if kinds == {"voc"}:
        return VOC_CLASSES
    for n in names:  # COCO: from the first annotation file present
        path = Path(spec_of(n).describe(root))
        if path.is_file():
            cats = _read_json(path).get("categories", [])
            return tuple(c["name"] for c in sorted(cats, key=lambda c: c["id"]))
    raise DataError(f"no COCO annotation file for {', '.join(names)} under {root}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _load_image(path: Path) -> torch.Tensor:
    from PIL import Image
    import numpy as np

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


class VOCDetection(Dataset):
    """One VOC split (``voc_2007_trainval`` ...): records parsed once, images read per item."""

    def __init__(self, name: str, root: str | Path, train: bool = False) -> None:
        spec = spec_of(name)
        self.name, self.train = name, train
        self.base = Path(root) / spec.folder
        ids_file = self.base / "ImageSets" / "Main" / f"{spec.split}.txt"
        if not ids_file.is_file():
            raise DataError(f"{name}: split file not found: {ids_file}")
        ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise DataError(f"{name}: {ids_file} lists no images")
        self.classes = VOC_CLASSES
        self.records = [self._parse(i) for i in ids]

    def _parse(self, image_id: str) -> dict[str, Any]:
        xml = self.base / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(xml).getroot()
        except (OSError, ET.ParseError) as exc:
            raise DataError(f"{self.name}: cannot read {xml}: {exc}") from None
        boxes, labels, difficult = [], [], []
        for obj in tree.findall("object"):
            cls = obj.findtext("name", "").strip()
            if cls not in VOC_CLASSES:
                raise DataError(f"{xml}: unknown VOC class {cls!r}")
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])  # Detectron2's pascal_voc.py reading
            labels.append(VOC_CLASSES.index(cls) + 1)
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
        return {"id": image_id, "file": self.base / "JPEGImages" / f"{image_id}.jpg",
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64), "difficult": torch.tensor(difficult, dtype=torch.bool)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        image = _load_image(r["file"])
        target = {"boxes": r["boxes"].clone(), "labels": r["labels"].clone(), "difficult": r["difficult"].clone(),
                  "image_id": i}
        return image, target


class COCODetection(Dataset):
    """One COCO split from its instances JSON (read with the standard library; no pycocotools needed)."""

    def __init__(self, name: str, root: str | Path, train: bool = False) -> None:
        spec = spec_of(name)
        self.name, self.train = name, train
        ann = Path(spec.describe(root))
        if not ann.is_file():
            raise DataError(f"{name}: annotation file not found: {ann}")
        data = _read_json(ann)
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        self.classes = tuple(c["name"] for c in cats)
        label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        per_image: dict[int, list] = {}
        for a in data.get("annotations", []):
            per_image.setdefault(a["image_id"], []).append(a)
        images = Path(root) / spec.folder / spec.split
        self.records = []
        for img in sorted(data.get("images", []), key=lambda im: im["id"]):
            anns = [a for a in per_image.get(img["id"], []) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
            if train:
                anns = [a for a in anns if not a.get("iscrowd", 0)]
                if not anns:  # Detectron2 filters empty images from training
                    continue
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns]
            self.records.append({"id": img["id"], "file": images / img["file_name"],
                                 "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                 "labels": torch.tensor([label[a["category_id"]] for a in anns], dtype=torch.int64),
                                 "difficult": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns],
                                                           dtype=torch.bool)})
        if not self.records:
            raise DataError(f"{name}: {ann} holds no usable images")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        return _load_image(r["file"]), {"boxes": r["boxes"].clone(), "labels": r["labels"].clone(),
                                        "difficult": r["difficult"].clone(), "image_id": i}


def build_dataset(name: str, root: str | Path, train: bool = False) -> Dataset:
    spec = spec_of(name)
    return (VOCDetection if spec.kind == "voc" else COCODetection)(name, root, train=train)


class HFlip(Dataset):
    """Random horizontal flip of a detection dataset (the only augmentation besides the model's multi-scale
    resize: Detectron2's default ``RandomFlip``); seeded per sample from a generator the method owns."""

    def __init__(self, base: Dataset, p: float = 0.5) -> None:
        self.base, self.p = base, p

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, target = self.base[i]
        if torch.rand(()) < self.p:
            w = image.shape[-1]
            image = image.flip(-1)
            b = target["boxes"]
            target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        return image, target


def collate(batch):
    """Lists of images and targets (images differ in size; the model batches them)."""
    return [b[0] for b in batch], [b[1] for b in batch]
