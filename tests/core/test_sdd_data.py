"""The datasets of SDD's tables: CIFAR-100, ImageNet (class folders) and CUB-200-2011 (official layout and split).

Spec: ``reference/sdd.md`` §5.1 (CIFAR-100 normalisation and augmentation), §5.2 (ImageNet transforms), §5.3 (CUB
transforms), §8 #16 (the CUB split read from ``train_test_split.txt``). Every fixture is written here: tiny JPEGs in
the official layouts.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kdvision.core.data import ImageListDataset, RandomCropFlip, dataset_spec, find_split, get_dataset
from kdvision.core.errors import ConfigError, DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WNIDS = ("n01440764", "n01443537", "n01484850")


def save_image(path: Path, seed: int, size=(48, 32), grey: bool = False) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, quality=95)


def normalised(img, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A PIL RGB image → float C×H×W, normalised by hand."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


# ---------------------------------------------------------------------------------------------------- CIFAR-100
def test_cifar100_has_the_repdistiller_normalisation_and_augmentation(tmp_path):
    spec = dataset_spec("cifar100")
    assert (spec.num_classes, spec.image_size) == (100, (32, 32))
    assert spec.mean == (0.5071, 0.4867, 0.4408) and spec.std == (0.2675, 0.2565, 0.2761)
    assert (spec.train_crop_padding, spec.train_hflip) == (4, True)  # RandomCrop 32 pad 4 + HFlip
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(folder / "train", "wb") as fh:
        pickle.dump({"data": data, "fine_labels": [3, 99, 0, 42]}, fh, protocol=2)
    ds = get_dataset("cifar100", tmp_path, "train", train_transform=True)
    assert isinstance(ds.augment, RandomCropFlip) and (ds.augment.pad, ds.augment.flip) == (4, True)
    plain = get_dataset("cifar100", tmp_path, "train")
    x, y = plain[1]
    assert y == 99 and x.shape == (3, 32, 32)
    expected = (torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255 - torch.tensor(spec.mean).view(3, 1, 1)) \
        / torch.tensor(spec.std).view(3, 1, 1)
    torch.testing.assert_close(x, expected)


# ----------------------------------------------------------------------------------------------------- ImageNet
def make_imagenet(root: Path, train_per_class: int = 3, val_classes=WNIDS, val_per_class: int = 2) -> None:
    for ci, wnid in enumerate(WNIDS):
        for i in range(train_per_class):
            save_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", seed=10 * ci + i)
    for ci, wnid in enumerate(val_classes):
        for i in range(val_per_class):
            save_image(root / "val" / wnid / f"ILSVRC2012_val_{ci:04d}{i:04d}.JPEG", seed=100 + 10 * ci + i)


def test_imagenet_class_folders_sizes_and_labels(tmp_path):
    make_imagenet(tmp_path)
    spec = dataset_spec("imagenet")
    assert (spec.num_classes, spec.image_size, spec.mean, spec.std) == (1000, (224, 224), IMAGENET_MEAN,
                                                                      IMAGENET_STD)
    train, val = get_dataset("imagenet", tmp_path, "train"), get_dataset("imagenet", tmp_path, "val")
    assert isinstance(train, ImageListDataset) and (len(train), len(val)) == (9, 6)
    assert train.classes == list(WNIDS) and train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert val.targets == [0, 0, 1, 1, 2, 2] and val.spec.class_names == WNIDS and val.spec.num_classes == 3
    assert [Path(p).parent.name for p, _ in val.samples] == [w for w in WNIDS for _ in range(2)]
    test = get_dataset("imagenet", tmp_path, "test")  # ImageNet's labelled held-out split is val/
    assert test.samples == val.samples
    x, y = val[0]
    assert x.dtype == torch.float32 and x.shape == (3, 224, 224) and y == 0
    assert find_split("imagenet", tmp_path, "train") and find_split("imagenet", tmp_path, "test")


def test_imagenet_val_labels_follow_the_train_classes(tmp_path):
    make_imagenet(tmp_path, val_classes=WNIDS[1:])  # the first class has no val folder
    val = get_dataset("imagenet", tmp_path, "val")
    assert val.targets == [1, 1, 2, 2] and val.classes == list(WNIDS)
    (tmp_path / "val" / "n99999999").mkdir()
    save_image(tmp_path / "val" / "n99999999" / "x.JPEG", seed=0)
    with pytest.raises(DataError, match=r"1 class folder\(s\) not in .*train, e.g. n99999999"):
        get_dataset("imagenet", tmp_path, "val")


def test_imagenet_under_an_imagenet_folder(tmp_path):
    make_imagenet(tmp_path / "imagenet", train_per_class=1, val_per_class=1)  # SDD: ./data/imagenet
    assert len(get_dataset("imagenet", tmp_path, "val")) == 3 and find_split("imagenet", tmp_path, "val")
    assert get_dataset("ilsvrc2012", tmp_path, "train").spec.name == "imagenet"


def test_imagenet_transforms(tmp_path):
    from PIL import Image

    make_imagenet(tmp_path, train_per_class=1, val_per_class=1)
    path = tmp_path / "val" / WNIDS[0] / "ILSVRC2012_val_00000000.JPEG"
    with Image.open(path) as img:  # 48×32 → Resize(256, short side) = 384×256 → CenterCrop(224): left 80, top 16
        ref = normalised(img.convert("RGB").resize((384, 256), Image.BILINEAR).crop((80, 16, 304, 240)))
    x, _ = get_dataset("imagenet", tmp_path, "val")[0]
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)
    torch.manual_seed(0)
    xt, _ = get_dataset("imagenet", tmp_path, "train", train_transform=True)[0]
    assert xt.shape == (3, 224, 224) and not torch.equal(xt, x)  # RandomResizedCrop 224 + flip


def test_imagenet_flat_val_with_the_kaggle_solution_file(tmp_path):
    make_imagenet(tmp_path, val_classes=())
    rows = [("ILSVRC2012_val_00000002", WNIDS[2]), ("ILSVRC2012_val_00000001", WNIDS[0]),
            ("ILSVRC2012_val_00000003", WNIDS[0])]
    for i, (image, _) in enumerate(rows):
        save_image(tmp_path / "val" / f"{image}.JPEG", seed=i)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"{im},{w} 1 2 30 40 {w} 5 6 7 8\n" for im, w in rows))
    val = get_dataset("imagenet", tmp_path, "val")
    assert [Path(p).name for p, _ in val.samples] == [f"ILSVRC2012_val_0000000{i}.JPEG" for i in (1, 2, 3)]
    assert val.targets == [0, 2, 0] and val.classes == list(WNIDS)
    save_image(tmp_path / "val" / "ILSVRC2012_val_00000004.JPEG", seed=9)
    with pytest.raises(DataError, match=r"1 image\(s\) of .*val are not in .*LOC_val_solution.csv, e\.g\. "
                                        r"ILSVRC2012_val_00000004.JPEG"):
        get_dataset("imagenet", tmp_path, "val")


def test_imagenet_flat_val_without_usable_labels_says_how_to_arrange_it(tmp_path):
    make_imagenet(tmp_path, val_classes=())
    save_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", seed=0)
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("65\n")
    with pytest.raises(DataError) as exc:
        get_dataset("imagenet", tmp_path, "val")
    msg = str(exc.value)
    assert "\n" not in msg and "is flat (1 images)" in msg and "ILSVRC2012_validation_ground_truth.txt" in msg
    assert f"expected {tmp_path / 'val'}/<wnid>/*.JPEG" in msg and "LOC_val_solution.csv" in msg
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").unlink()
    with pytest.raises(DataError, match=r"is flat \(1 images\) with no labels: expected"):
        get_dataset("imagenet", tmp_path, "val")


def test_imagenet_missing_data_errors(tmp_path):
    with pytest.raises(DataError, match=rf"imagenet train split not found: expected {tmp_path}/train/<wnid>/\*\.JPEG"):
        get_dataset("imagenet", tmp_path, "train")
    assert not find_split("imagenet", tmp_path, "val")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"val split not found"):
        get_dataset("imagenet", tmp_path, "val")
    with pytest.raises(DataError, match=r"has no class folders: expected .*train/<wnid>/\*\.JPEG"):
        get_dataset("imagenet", tmp_path, "train")
    (tmp_path / "train" / WNIDS[0]).mkdir()
    with pytest.raises(DataError, match=r"has no images"):
        get_dataset("imagenet", tmp_path, "train")
    with pytest.raises(ConfigError, match=r"no split 'extra'"):
        get_dataset("imagenet", tmp_path, "extra")


# ------------------------------------------------------------------------------------------------- CUB-200-2011
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def write_cub_metadata(cub: Path, rel: list[str], labels: list[int], is_train: list[int],
                       classes=CUB_CLASSES, order=None) -> None:
    """The four text files; ``order`` permutes the per-image lines (the join is by image id, not line order)."""
    ids = list(range(1, len(rel) + 1))
    lines = order(ids) if order else ids
    cub.mkdir(parents=True, exist_ok=True)
    (cub / "images.txt").write_text("".join(f"{i} {rel[i - 1]}\n" for i in lines))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {labels[i - 1]}\n" for i in reversed(lines)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {is_train[i - 1]}\n" for i in lines))
    (cub / "classes.txt").write_text("".join(f"{c} {n}\n" for c, n in enumerate(classes, 1)))


def make_cub(root: Path, per_class: int = 4) -> tuple[list[str], list[int], list[int]]:
    """3 classes × ``per_class`` JPEGs (one greyscale); image ids run class by class, every 2nd image is train."""
    cub = root / "CUB_200_2011"
    rel, labels, is_train = [], [], []
    for c, name in enumerate(CUB_CLASSES, 1):
        for i in range(per_class):
            rel.append(f"{name}/{name.split('.')[1]}_{i:04d}_{c}.jpg")
            labels.append(c)
            is_train.append(int(i % 2 == 0))
    for j, r in enumerate(rel):
        save_image(cub / "images" / r, seed=j, size=(40, 30), grey=(j == 1))
    write_cub_metadata(cub, rel, labels, is_train, order=lambda ids: ids[::-1])
    return rel, labels, is_train


def test_cub200_split_labels_and_sizes(tmp_path):
    rel, labels, is_train = make_cub(tmp_path)
    spec = dataset_spec("cub200")
    assert (spec.num_classes, spec.image_size, spec.mean, spec.std) == (200, (224, 224), IMAGENET_MEAN,
                                                                      IMAGENET_STD)
    train, test = get_dataset("cub200", tmp_path, "train"), get_dataset("cub200", tmp_path, "test")
    assert (len(train), len(test)) == (6, 6)
    # image-id order, labels = class id − 1, the split from train_test_split.txt
    assert [Path(p).relative_to(tmp_path / "CUB_200_2011" / "images").as_posix() for p, _ in train.samples] == \
        [r for r, t in zip(rel, is_train) if t]
    assert train.targets == [0, 0, 1, 1, 2, 2] and test.targets == [0, 0, 1, 1, 2, 2]
    assert not set(p for p, _ in train.samples) & set(p for p, _ in test.samples)
    assert train.classes == list(CUB_CLASSES) and train.spec.num_classes == 3
    x, y = test[0]  # image 2: the greyscale one, converted to RGB
    assert x.dtype == torch.float32 and x.shape == (3, 224, 224) and y == 0
    assert torch.allclose((x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]), (x[2] * IMAGENET_STD[2] + IMAGENET_MEAN[2]),
                          atol=1e-5)
    assert get_dataset("cub", tmp_path, "test").samples == test.samples  # alias
    assert find_split("cub200", tmp_path, "train") and find_split("cub200", tmp_path, "test")


def test_cub200_root_may_be_the_cub_folder_itself(tmp_path):
    make_cub(tmp_path)
    assert len(get_dataset("cub200", tmp_path / "CUB_200_2011", "test")) == 6
    assert find_split("cub200", tmp_path / "CUB_200_2011", "test")


def test_cub200_official_split_sizes_at_full_scale(tmp_path):
    """11,788 ids, 200 classes, 5,994 / 5,794 images (the official counts), read from the split file."""
    rng = np.random.default_rng(0)
    n, classes = 11_788, tuple(f"{c:03d}.Bird_{c}" for c in range(1, 201))
    labels = list(np.sort(rng.integers(1, 201, n)))
    flags = np.zeros(n, dtype=int)
    flags[rng.choice(n, 5_994, replace=False)] = 1
    rel = [f"{classes[y - 1]}/img_{i}.jpg" for i, y in enumerate(labels)]
    cub = tmp_path / "CUB_200_2011"
    for r in rel:  # never decoded here: empty files are enough for the existence check
        (cub / "images" / r).parent.mkdir(parents=True, exist_ok=True)
        (cub / "images" / r).touch()
    write_cub_metadata(cub, rel, labels, list(flags), classes=classes, order=lambda ids: list(rng.permutation(ids)))
    train, test = get_dataset("cub200", tmp_path, "train"), get_dataset("cub200", tmp_path, "test")
    assert (len(train), len(test), train.spec.num_classes) == (5_994, 5_794, 200)
    want = np.asarray(labels) - 1
    assert train.targets == list(want[flags == 1]) and test.targets == list(want[flags == 0])


def test_cub200_transforms(tmp_path):
    from PIL import Image

    make_cub(tmp_path, per_class=2)
    ds = get_dataset("cub200", tmp_path, "train")
    path = ds.samples[0][0]
    with Image.open(path) as img:  # Resize((256, 256)) ignores the aspect ratio; CenterCrop(224): offset 16
        resized = normalised(img.convert("RGB").resize((256, 256), Image.BILINEAR))
    torch.testing.assert_close(ds[0][0], resized[:, 16:240, 16:240], rtol=0, atol=1e-5)
    # train: a 224 window of the 256×256 image, possibly flipped
    aug = get_dataset("cub200", tmp_path, "train", train_transform=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(6):
        xt, _ = aug[0]
        assert xt.shape == (3, 224, 224)
        hits = []
        for flip in (False, True):
            src = resized.flip(-1) if flip else resized
            # candidates by the crop's 4×4 corner, then the whole window
            corner = (src.unfold(1, 4, 1).unfold(2, 4, 1)[:, :33, :33] - xt[:, :4, :4, None, None].permute(
                0, 3, 4, 1, 2)).abs().amax(dim=(0, 3, 4))
            hits += [(int(t), int(l), flip) for t, l in (corner < 1e-5).nonzero()
                     if torch.allclose(src[:, t:t + 224, l:l + 224], xt, atol=1e-5)]
        assert hits, "the training image is not a 224-px crop of the resized image"
        seen |= {hits[0][2]}
    assert seen == {False, True}  # both flips occur in six draws with this seed


def test_cub200_missing_and_malformed_files(tmp_path):
    with pytest.raises(DataError) as exc:
        get_dataset("cub200", tmp_path, "train")
    msg = str(exc.value)
    assert f"expected {tmp_path / 'CUB_200_2011'}/ with images/, images.txt, image_class_labels.txt, " \
           "train_test_split.txt, classes.txt" in msg and "\n" not in msg
    assert not find_split("cub200", tmp_path, "train")
    make_cub(tmp_path, per_class=2)
    cub = tmp_path / "CUB_200_2011"
    split_text = (cub / "train_test_split.txt").read_text()
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match=r"is incomplete: .*\(missing train_test_split.txt\)"):
        get_dataset("cub200", tmp_path, "train")
    assert not find_split("cub200", tmp_path, "train")
    (cub / "train_test_split.txt").write_text(split_text + "99 1\n")
    with pytest.raises(DataError, match=r"train_test_split.txt does not list the image ids of images.txt "
                                        r"\(e.g. id 99 is not in images.txt\)"):
        get_dataset("cub200", tmp_path, "train")
    (cub / "train_test_split.txt").write_text(split_text.replace(" 1\n", " 2\n", 1))
    with pytest.raises(DataError, match=r"train_test_split.txt: value 2 is not one of 0..1"):
        get_dataset("cub200", tmp_path, "train")
    (cub / "train_test_split.txt").write_text(split_text + "oops\n")
    with pytest.raises(DataError, match=r"train_test_split.txt line 7: expected '<id> <is_training_image>'"):
        get_dataset("cub200", tmp_path, "train")
    (cub / "train_test_split.txt").write_text(split_text)
    labels_text = (cub / "image_class_labels.txt").read_text()
    (cub / "image_class_labels.txt").write_text(labels_text.replace(" 3\n", " 4\n", 1))
    with pytest.raises(DataError, match=r"image_class_labels.txt: value 4 is not one of 1..3"):
        get_dataset("cub200", tmp_path, "train")
    (cub / "image_class_labels.txt").write_text(labels_text)
    first = get_dataset("cub200", tmp_path, "test").samples[0][0]
    Path(first).unlink()
    with pytest.raises(DataError, match=rf"cub200 test split: 1 image\(s\) listed in images.txt are missing, "
                                        rf"e.g. {first}"):
        get_dataset("cub200", tmp_path, "test")
    assert len(get_dataset("cub200", tmp_path, "train")) == 3  # the other split is intact
    with pytest.raises(ConfigError, match=r"no split 'val'; valid: train, test"):
        get_dataset("cub200", tmp_path, "val")
