"""The KDEP classification-transfer readers: DTD (official partitions, train = train + val) and Caltech-256 (the
first 60 images per class for training), on tiny fixtures in the official layouts (tests/kdv_testutils.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from kdvision.core.data import (NORMALIZATION, dataset_spec, dataset_splits, download_dataset, find_split,
                                get_dataset, list_datasets)
from kdvision.core.data.base import open_image
from kdvision.core.errors import ConfigError, DataError

from kdv_testutils import CALTECH256_FIXTURE_CLASSES, write_caltech256, write_dtd

DTD_CLASSES = ["banded", "cracked", "zigzagged"]  # sorted folder names


def rel_samples(ds, base: Path) -> list[tuple[str, int]]:
    return [(str(Path(p).relative_to(base)), y) for p, y in ds.samples]


def one_line(exc: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------ registry

def test_registered_names_specs_and_options(tmp_path):
    assert {"dtd", "caltech256"} <= set(list_datasets())
    assert dataset_splits("dtd") == ("train", "test") and dataset_splits("caltech256") == ("train", "test")
    for name, n in (("dtd", 47), ("describable_textures", 47), ("caltech256", 257), ("caltech-256", 257)):
        spec = dataset_spec(name)
        assert (spec.num_classes, spec.in_channels, spec.image_size) == (n, 3, (224, 224))
        assert (spec.mean, spec.std) == NORMALIZATION["imagenet"]
        assert spec.train_hflip and spec.train_crop_padding is None
    with pytest.raises(ConfigError, match=r"dataset 'dtd' takes no option 'train_per_class'; valid: partition"):
        get_dataset("dtd", tmp_path, "train", train_per_class=3)
    with pytest.raises(ConfigError, match=r"dataset 'caltech256' takes no option 'partition'; valid: train_per_class"):
        get_dataset("caltech256", tmp_path, "train", partition=2)
    with pytest.raises(ConfigError, match=r"dataset 'dtd' has no split 'val'; valid: train, test"):
        get_dataset("dtd", tmp_path, "val")


def test_download_dataset_points_to_the_readers_download_flag(tmp_path):
    for name in ("dtd", "caltech256"):
        with pytest.raises(DataError, match=rf"^dataset '{name}' cannot be downloaded: use get_dataset\('{name}', "
                                            rf"root, download=True\)") as exc:
            download_dataset(name, tmp_path)
        one_line(exc)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ DTD

def test_dtd_train_is_train_plus_val_and_test_is_test(tmp_path):
    lists = write_dtd(tmp_path / "dtd", partitions=(1, 2))
    images = tmp_path / "dtd" / "images"
    label = {c: i for i, c in enumerate(DTD_CLASSES)}
    train = get_dataset("dtd", tmp_path, "train")
    test = get_dataset("dtd", tmp_path, "test")
    # exact membership, in label-file order (train1 then val1), labels by sorted class folder
    assert rel_samples(train, images) == [(r, label[r.split("/")[0]]) for r in lists["train1"] + lists["val1"]]
    assert rel_samples(test, images) == [(r, label[r.split("/")[0]]) for r in lists["test1"]]
    assert len(train) == 9 and len(test) == 3
    assert train.targets == [0, 0, 1, 1, 2, 2, 0, 1, 2]
    assert test.targets == [0, 1, 2]
    every = {p for p, _ in train.samples} | {p for p, _ in test.samples}
    assert len(every) == 12 and not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    for ds in (train, test):
        assert ds.classes == DTD_CLASSES and ds.spec.class_names == tuple(DTD_CLASSES)
        assert ds.spec.num_classes == 3 and ds.split_source == tmp_path / "dtd"
    # partition 2 reads train2/val2/test2
    test2 = get_dataset("dtd", tmp_path, "test", partition=2)
    assert rel_samples(test2, images) == [(r, label[r.split("/")[0]]) for r in lists["test2"]]
    assert {p for p, _ in test2.samples} != {p for p, _ in test.samples}
    assert [p for p, _ in get_dataset("dtd", tmp_path, "train", partition="2").samples] == \
        [str(images / r) for r in lists["train2"] + lists["val2"]]
    for bad in (0, 11, "x", True, 1.5):
        with pytest.raises(ConfigError, match=r"dtd partition must be one of 1\.\.10"):
            get_dataset("dtd", tmp_path, "test", partition=bad)
    with pytest.raises(DataError) as exc:  # partition 3 was not written
        get_dataset("dtd", tmp_path, "test", partition=3)
    one_line(exc, f"dtd at {tmp_path / 'dtd'} is incomplete", "(missing labels/test3.txt)")


def test_dtd_layouts_root_itself_and_torchvision(tmp_path):
    lists = write_dtd(tmp_path / "a" / "dtd")
    expected = lists["test1"]
    # the folder holding dtd/, dtd/ itself, and torchvision's root/dtd/dtd/
    shutil.copytree(tmp_path / "a" / "dtd", tmp_path / "tv" / "dtd" / "dtd")
    for root, base in ((tmp_path / "a", tmp_path / "a" / "dtd"), (tmp_path / "a" / "dtd", tmp_path / "a" / "dtd"),
                       (tmp_path / "tv", tmp_path / "tv" / "dtd" / "dtd")):
        assert find_split("dtd", root, "train") and find_split("dtd", root, "test")
        ds = get_dataset("dtd", root, "test")
        assert [r for r, _ in rel_samples(ds, base / "images")] == expected and ds.split_source == base
    # an unrelated images/ folder in a data root is not taken for DTD
    (tmp_path / "other" / "images" / "x").mkdir(parents=True)
    assert not find_split("dtd", tmp_path / "other", "test")
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path / "other", "test")
    one_line(exc, f"dtd not found: expected {tmp_path / 'other' / 'dtd'}/ with images/<class>/<image> and "
                  f"labels/test1.txt")


def test_dtd_transforms_shapes_and_greyscale(tmp_path):
    from torchvision.transforms.v2 import functional as F

    write_dtd(tmp_path / "dtd", size=(50, 30))
    test = get_dataset("dtd", tmp_path, "test", normalize=False)
    grey = get_dataset("dtd", tmp_path, "train", normalize=False)
    # cracked_0000.jpg (greyscale on disk) is in val1, so in train: decoded as RGB with three equal channels
    i = [Path(p).name for p, _ in grey.samples].index("cracked_0000.jpg")
    assert open_image(grey.samples[i][0], None).mode == "L"
    x, y = grey[i]
    assert x.shape == (3, 224, 224) and y == 1 and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    # test: Resize(256, short side) -> CenterCrop(224), deterministic
    x0, y0 = test[0]
    ref = F.to_dtype(F.to_image(F.center_crop(F.resize(open_image(test.samples[0][0]), 256), 224)),
                     torch.float32, scale=True)
    assert x0.shape == (3, 224, 224) and torch.allclose(x0, ref) and torch.equal(test[0][0], x0)
    # train: RandomResizedCrop(224) + flip, random; ImageNet statistics by default
    train = get_dataset("dtd", tmp_path, "train", train_transform=True)
    torch.manual_seed(0)
    a = train[0][0]
    torch.manual_seed(1)
    b = train[0][0]
    assert a.shape == b.shape == (3, 224, 224) and not torch.equal(a, b)
    mean, std = NORMALIZATION["imagenet"]
    normed = get_dataset("dtd", tmp_path, "test")[0][0]
    assert torch.allclose(normed, (x0 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None],
                          atol=1e-5)


def test_dtd_find_split_never_raises(tmp_path):
    write_dtd(tmp_path / "dtd")
    assert find_split("dtd", tmp_path, "train") and find_split("dtd", tmp_path, "test")
    (tmp_path / "dtd" / "labels" / "test1.txt").unlink()
    assert find_split("dtd", tmp_path, "train") and not find_split("dtd", tmp_path, "test")
    (tmp_path / "dtd" / "labels" / "val1.txt").unlink()
    assert not find_split("dtd", tmp_path, "train")
    assert not find_split("dtd", tmp_path / "missing", "test") and not find_split("dtd", None, "train")
    (tmp_path / "file").write_text("x")
    assert not find_split("dtd", tmp_path / "file", "test")


def test_dtd_incomplete_layouts_are_one_line_errors(tmp_path):
    folder = tmp_path / "dtd"
    write_dtd(folder)
    (folder / "labels" / "val1.txt").unlink()
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "train")
    one_line(exc, f"dtd at {folder} is incomplete: expected images/, labels/train1.txt, labels/val1.txt "
                  f"(missing labels/val1.txt)")
    assert len(get_dataset("dtd", tmp_path, "test")) == 3  # the test split does not need val1.txt
    shutil.rmtree(folder / "images")
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "test")
    one_line(exc, "incomplete", "(missing images/)")

    write_dtd(folder)
    (folder / "images" / "banded" / "banded_0000.jpg").unlink()  # listed in val1.txt
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "train")
    one_line(exc, "dtd train split: 1 image(s) listed in labels/train1.txt, labels/val1.txt are missing, "
                  f"e.g. {folder / 'images' / 'banded' / 'banded_0000.jpg'}")
    test_file = folder / "labels" / "test1.txt"
    test_file.write_text("banded/banded_0003.jpg\nwoven/woven_0001.jpg\n")
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "test")
    one_line(exc, f"{test_file} line 2: class 'woven' has no folder under images/")
    test_file.write_text("banded_0003.jpg\n")
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "test")
    one_line(exc, f"{test_file} line 1: expected '<class>/<image>', got 'banded_0003.jpg'")
    test_file.write_text("banded/banded_0003.jpg\n\nbanded/banded_0003.jpg\n")
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "test")
    one_line(exc, "dtd test split of partition 1 lists banded/banded_0003.jpg twice")
    shutil.rmtree(folder)
    with pytest.raises(DataError) as exc:
        get_dataset("dtd", tmp_path, "test")
    one_line(exc, f"dtd not found: expected {folder}/ with images/<class>/<image>", "dtd-r1.0.1.tar.gz")


# ------------------------------------------------------------------------------------------------ Caltech-256

def test_caltech256_first_n_per_class_for_train_rest_for_test(tmp_path):
    folder = tmp_path / "256_ObjectCategories"
    files = write_caltech256(folder)  # 4, 3, 5 images; written in reverse name order
    train = get_dataset("caltech256", tmp_path, "train", train_per_class=2)
    test = get_dataset("caltech256", tmp_path, "test", train_per_class=2)
    classes = list(CALTECH256_FIXTURE_CLASSES)  # already sorted: 001.ak47, 002.american-flag, 257.clutter
    assert train.classes == test.classes == classes and train.spec.num_classes == 3
    assert train.spec.class_names == tuple(classes) and train.split_source == folder
    assert rel_samples(train, folder) == [
        ("001.ak47/001_0001.jpg", 0), ("001.ak47/001_0002.jpg", 0),
        ("002.american-flag/002_0001.jpg", 1), ("002.american-flag/002_0002.jpg", 1),
        ("257.clutter/257_0001.jpg", 2), ("257.clutter/257_0002.jpg", 2)]
    assert rel_samples(test, folder) == [
        ("001.ak47/001_0003.jpg", 0), ("001.ak47/001_0004.jpg", 0),
        ("002.american-flag/002_0003.png", 1),
        ("257.clutter/257_0003.jpg", 2), ("257.clutter/257_0004.jpg", 2), ("257.clutter/257_0005.jpg", 2)]
    # noise (RENAME2, a hidden file, the nested greg/ folder) is not data
    assert all(Path(p).parent.parent == folder for p, _ in train.samples + test.samples)
    assert sum(len(v) for v in files.values()) == len(train) + len(test) == 12
    # train_per_class=1: one per class in train, the rest in test
    one = get_dataset("caltech256", tmp_path, "train", train_per_class=1)
    assert rel_samples(one, folder) == [(f"{c}/{files[c][0]}", i) for i, c in enumerate(classes)]
    assert len(get_dataset("caltech256", tmp_path, "test", train_per_class="1")) == 9


def test_caltech256_default_split_is_60_per_class(tmp_path):
    folder = tmp_path / "256_ObjectCategories"
    files = write_caltech256(folder, per_class=(61, 63, 62), size=(8, 6))
    train = get_dataset("caltech256", tmp_path, "train")
    test = get_dataset("caltech256", tmp_path, "test")
    assert len(train) == 180 and len(test) == 6
    assert [sum(1 for _, y in train.samples if y == i) for i in range(3)] == [60, 60, 60]
    assert [sum(1 for _, y in test.samples if y == i) for i in range(3)] == [1, 3, 2]
    for i, c in enumerate(CALTECH256_FIXTURE_CLASSES):
        assert [Path(p).name for p, y in test.samples if y == i] == files[c][60:]
    # a class that would keep no test image is an error naming it
    with pytest.raises(DataError) as exc:
        get_dataset("caltech256", tmp_path, "train", train_per_class=61)
    one_line(exc, f"caltech256 class '001.ak47' in {folder} has 61 image(s); the split needs more than "
                  f"train_per_class=61")
    for bad in (0, -3, "x", True, 2.5):
        with pytest.raises(ConfigError, match="caltech256 train_per_class must be a positive integer"):
            get_dataset("caltech256", tmp_path, "train", train_per_class=bad)


def test_caltech256_torchvision_layout_and_transforms(tmp_path):
    tv = tmp_path / "caltech256" / "256_ObjectCategories"
    write_caltech256(tv, size=(60, 40))
    assert find_split("caltech256", tmp_path, "train") and find_split("caltech256", tmp_path, "test")
    test = get_dataset("caltech256", tmp_path, "test", train_per_class=2, normalize=False)
    assert test.split_source == tv
    i = [Path(p).name for p, _ in test.samples].index("002_0003.png")  # greyscale PNG
    assert open_image(test.samples[i][0], None).mode == "L"
    x, y = test[i]
    assert x.shape == (3, 224, 224) and y == 1 and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    xt, _ = get_dataset("caltech256", tmp_path, "train", train_per_class=2, train_transform=True)[0]
    assert xt.shape == (3, 224, 224) and xt.dtype == torch.float32


def test_caltech256_find_split_and_one_line_errors(tmp_path):
    assert not find_split("caltech256", tmp_path, "test") and not find_split("caltech256", None, "test")
    assert not find_split("caltech256", tmp_path / "missing", "train")
    with pytest.raises(DataError) as exc:
        get_dataset("caltech256", tmp_path, "test")
    one_line(exc, f"caltech256 not found: expected {tmp_path / '256_ObjectCategories'}/<class>/<image> or "
                  f"{tmp_path / 'caltech256' / '256_ObjectCategories'}/<class>/<image>")
    with pytest.raises(DataError, match=f"data root {tmp_path / 'missing'} does not exist"):
        get_dataset("caltech256", tmp_path / "missing", "test")
    folder = tmp_path / "256_ObjectCategories"
    folder.mkdir()
    assert find_split("caltech256", tmp_path, "test")  # present (an empty folder is an error when read)
    with pytest.raises(DataError) as exc:
        get_dataset("caltech256", tmp_path, "train")
    one_line(exc, f"caltech256 at {folder} is incomplete: expected <class>/<image> folders, found none")
    (folder / "003.backpack").mkdir()
    with pytest.raises(DataError) as exc:
        get_dataset("caltech256", tmp_path, "train")
    one_line(exc, "caltech256 class '003.backpack'", "has 0 image(s)")


# ------------------------------------------------------------------------------------------------ download=True

@pytest.mark.parametrize("name", ["dtd", "caltech256"])
def test_download_flag_goes_through_torchvision(name, tmp_path, monkeypatch):
    calls = []

    class FakeDTD:  # torchvision unpacks the archive as root/dtd/dtd/
        def __init__(self, root, download=False):
            calls.append((root, download))
            write_dtd(Path(root) / "dtd" / "dtd")

    class FakeCaltech256:  # and Caltech-256 as root/caltech256/256_ObjectCategories/
        def __init__(self, root, download=False):
            calls.append((root, download))
            write_caltech256(Path(root) / "caltech256" / "256_ObjectCategories")

    attr, fake = ("DTD", FakeDTD) if name == "dtd" else ("Caltech256", FakeCaltech256)
    monkeypatch.setattr(torchvision.datasets, attr, fake)
    root = tmp_path / "new"  # created
    opts = {} if name == "dtd" else {"train_per_class": 2}
    ds = get_dataset(name, root, "test", download=True, **opts)
    assert calls == [(str(root), True)] and len(ds) == (3 if name == "dtd" else 6)
    get_dataset(name, root, "train", download=True, **opts)
    assert len(calls) == 1  # present: not fetched again

    def fail(root, download=False):
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets, attr, fail)
    with pytest.raises(DataError) as exc:
        get_dataset(name, tmp_path / "other", "test", download=True, **opts)
    one_line(exc, f"downloading {attr} into {tmp_path / 'other'} failed: File not found or corrupted.")
