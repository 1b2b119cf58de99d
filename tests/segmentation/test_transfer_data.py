"""The segmentation-transfer readers (VOC2012, Cityscapes, ADE20K) on tiny fixtures written in each official layout,
their exact label mapping, their one-line errors, and semseg's joint augmentation on image/mask pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kdvision.core.data import dataset_spec, find_split, get_dataset
from kdvision.core.errors import DataError
from kdvision.segmentation.data import palette_of
from kdvision.segmentation.transfer_data import CITYSCAPES_ID_TO_TRAINID, VOC_PALETTE, semseg_transform
from PIL import Image

W, H = 64, 48


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _label(path: Path, values: list[int], palette: bool = False) -> np.ndarray:
    """A label PNG whose rows cycle through ``values`` (single channel; ``palette``: a VOC-style P-mode PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.array([[values[(r + c) % len(values)] for c in range(W)] for r in range(H)], dtype=np.uint8)
    img = Image.fromarray(arr, mode="L")
    if palette:  # the official files: colour-coded, but their pixel values are the class indices
        img = img.convert("P")
        img.putpalette([v for c in VOC_PALETTE[:21] for v in c] + [224, 224, 192] * (256 - 21))
    img.save(path)
    return arr


def _mapped(arr: np.ndarray, table: dict[int, int]) -> torch.Tensor:
    return torch.from_numpy(np.vectorize(lambda v: table.get(int(v), 255))(arr).astype(np.int64))


@pytest.fixture
def voc(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    raws = {}
    for i, name in enumerate(["2007_000001", "2007_000002", "2007_000003"]):
        _image(base / "JPEGImages" / f"{name}.jpg", i)
        raws[name] = _label(base / "SegmentationClass" / f"{name}.png", [0, 5, 20, 255], palette=True)
        _label(base / "SegmentationClassAug" / f"{name}.png", [1, 2, 255])
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "val.txt").write_text("2007_000003\n")
    (lists / "train_aug.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    return tmp_path, raws


def test_voc_layout_splits_and_exact_labels(voc):
    root, raws = voc
    assert [find_split("voc2012", root, s) for s in ("train", "val", "train_aug")] == [True, True, True]
    val = get_dataset("voc", root, split="val")  # the alias
    assert len(val) == 1 and val.spec.num_classes == 21 and dataset_spec("voc2012").class_names[20] == "tvmonitor"
    image, mask = val[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert torch.equal(mask, torch.from_numpy(raws["2007_000003"].astype(np.int64)))  # 0..20 kept, 255 ignore
    assert sorted(mask.unique().tolist()) == [0, 5, 20, 255]
    aug = get_dataset("voc2012", root, split="train_aug")
    assert len(aug) == 3 and sorted(aug[0][1].unique().tolist()) == [1, 2, 255]  # SegmentationClassAug labels
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    raw = torch.from_numpy(np.asarray(Image.open(val.files[0][0]).convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.allclose(image, (raw / 255 - mean) / std, atol=1e-5)  # ImageNet normalisation, full image
    assert palette_of("voc2012").shape == (22, 3)


def test_voc_errors_are_one_line(voc, tmp_path):
    root, _ = voc
    base = root / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    assert not find_split("voc2012", root, "train_aug")
    with pytest.raises(DataError, match=r"train_aug split incomplete: .*train_aug.txt not found") as err:
        get_dataset("voc2012", root, split="train_aug")
    assert "\n" not in str(err.value)
    (base / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(DataError, match="2007_000002.jpg listed in .*train.txt not found"):
        get_dataset("voc2012", root, split="train")
    _label(base / "SegmentationClass" / "2007_000003.png", [0, 30, 255])  # not a VOC class
    with pytest.raises(DataError, match="values not valid for voc2012: 30"):
        get_dataset("voc2012", root, split="val")[0]
    with pytest.raises(DataError, match="no VOC2012/JPEGImages"):
        get_dataset("voc2012", tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets", split="val")


@pytest.fixture
def cityscapes(tmp_path):
    raws = {}
    for split, city, stems in (("train", "aachen", ["aachen_000000_000019", "aachen_000001_000019"]),
                               ("val", "lindau", ["lindau_000000_000019"])):
        for i, stem in enumerate(stems):
            _image(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", i)
            raws[stem] = _label(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                                [0, 1, 7, 8, 24, 26, 33, 4])
    # the second training image also has a labelTrainIds file (cityscapesScripts' output): it wins
    raws["trainids"] = _label(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelTrainIds.png",
                              [0, 18, 255, 11])
    return tmp_path, raws


def test_cityscapes_label_ids_to_train_ids_exactly(cityscapes):
    root, raws = cityscapes
    train = get_dataset("cityscapes", root, split="train")
    assert len(train) == 2 and train.spec.num_classes == 19
    _, mask = train.raw_item(0)  # labelIds through the table: 7 -> 0, 8 -> 1, 24 -> 11, 26 -> 13, 33 -> 18, else 255
    assert torch.equal(mask.long(), _mapped(raws["aachen_000000_000019"], CITYSCAPES_ID_TO_TRAINID))
    assert sorted(mask.unique().tolist()) == [0, 1, 11, 13, 18, 255]
    _, mask = train.raw_item(1)  # labelTrainIds as they are
    assert torch.equal(mask.long(), torch.from_numpy(raws["trainids"].astype(np.int64)))
    assert len(CITYSCAPES_ID_TO_TRAINID) == 19 and sorted(CITYSCAPES_ID_TO_TRAINID.values()) == list(range(19))
    image, mask = get_dataset("cityscapes", root, split="val")[0]
    assert image.shape == (3, H, W) and mask.shape == (H, W) and mask.dtype == torch.int64


def test_cityscapes_incomplete_layout(cityscapes):
    root, _ = cityscapes
    (root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    assert not find_split("cityscapes", root, "val")
    with pytest.raises(DataError, match="image .*lindau_000000_000019_leftImg8bit.png has no label"):
        get_dataset("cityscapes", root, split="val")
    with pytest.raises(DataError, match="cityscapes train split not found: expected folder"):
        get_dataset("cityscapes", root / "gtFine", split="train")


def test_ade20k_zero_ignored_and_shifted(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    raws = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        _image(base / "images" / folder / f"ADE_{folder}_00000001.jpg", 1)
        raws[split] = _label(base / "annotations" / folder / f"ADE_{folder}_00000001.png", [0, 1, 2, 150])
    val = get_dataset("ade", tmp_path, split="val")
    assert len(val) == 1 and val.spec.num_classes == 150
    _, mask = val[0]
    assert torch.equal(mask, _mapped(raws["val"], {1: 0, 2: 1, 150: 149}))  # 0 -> 255, k -> k - 1
    assert get_dataset("ade20k", base, split="train").files[0][0].endswith("ADE_training_00000001.jpg")
    (base / "annotations" / "training" / "ADE_training_00000001.png").unlink()
    with pytest.raises(DataError, match="ade20k train: image .* has no label"):
        get_dataset("ade20k", tmp_path, split="train")


def test_semseg_transform_keeps_masks_exact():
    from torchvision import tv_tensors

    torch.manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, H, W), dtype=torch.uint8))
    values = torch.tensor([0, 3, 7, 255], dtype=torch.uint8)
    mask = tv_tensors.Mask(values[torch.arange(H * W).view(H, W) // 7 % 4])
    train = semseg_transform(True, crop_size=80, scale=(0.5, 2.0))
    for _ in range(6):
        x, y = train(image, mask)
        assert x.shape == (3, 80, 80) and y.shape == (80, 80)
        assert set(y.unique().tolist()) <= {0, 3, 7, 255}  # nearest for masks: no interpolated label values
    # scale 1, no rotation/blur/flip, crop larger than the image: the whole image is kept, the padding is the mean
    # colour (0 once normalised) for the image and 255 for the mask
    labelled = tv_tensors.Mask(values[:3][torch.arange(H * W).view(H, W) % 3])
    x, y = semseg_transform(True, crop_size=96, scale=(1.0, 1.0), rotate=0, blur=0, flip=False)(image, labelled)
    padded = y == 255
    assert int(padded.sum()) == 96 * 96 - H * W and x[:, padded].abs().max() < 0.02
    assert torch.bincount(y[~padded].flatten().long(), minlength=8).tolist() == torch.bincount(
        labelled.flatten().long(), minlength=8).tolist()
    x, y = semseg_transform(False)(image, mask)
    assert y.shape == (H, W) and torch.equal(y, mask)  # evaluation: full image, mask untouched
