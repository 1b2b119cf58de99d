"""kdvision.core.data: readers, normalisation, splits and errors.

Real data (MNIST, the CIFAR-10 test subset) is read from $KDV_DATA (default ``<repo>/../shared/data``); every other
dataset is exercised on tiny fixtures written here.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdvision.core.data import (DATASETS, NORMALIZATION, DatasetSpec, RandomCropFlip, TensorImageDataset,
                                dataset_spec, find_split, get_dataset, list_datasets, normalization,
                                resize_uint8_like_pil)
from kdvision.core.data import caltech as caltech_mod
from kdvision.core.data.digits import digits_arrays, digits_split_indices, _digits_all
from kdvision.core.errors import ConfigError, DataError

from kdv_testutils import data_root, write_caltech256, write_dtd
DATA = data_root()
HAS_MNIST = (DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()
HAS_SUBSET = (DATA / "cifar10_test_subset" / "cifar10_test_first846.npz").is_file()
needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason=f"real MNIST not found under KDV_DATA={DATA}")
needs_subset = pytest.mark.skipif(not HAS_SUBSET, reason=f"CIFAR-10 test subset not found under KDV_DATA={DATA}")

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------------------------------------ fixture writers

def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(root: Path, n: int = 12, compress: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    raw = root / "MNIST" / "raw"
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return images, labels


def make_cifar(root: Path, name: str, n: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR python batches as the originals store them: dict with 'data' uint8 (N, 3072) and a label list."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, k = root / "cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)],
                                                               "test": ["test_batch"]}, "labels", 10
    else:
        folder, files, key, k = root / "cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, names in files.items():
        datas, labs = [], []
        for fname in names:
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, k, n)]
            with open(folder / fname, "wb") as f:
                pickle.dump({"batch_label": fname, key: labels, "data": data}, f, protocol=2)
            datas.append(data)
            labs += labels
        out[split] = (np.concatenate(datas), np.asarray(labs))
    return out


def make_svhn(root: Path, n: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import scipy.io

    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # 1..10, 10 is digit 0
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        out[split] = (x, y)
    return out


def save_jpeg(path: Path, seed: int, size=(14, 11)) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


CALTECH_CLASSES = ("Faces_easy", "accordion", "yin_yang")


def make_caltech(root: Path, per_class: int = 7, order=None) -> Path:
    cats = root / "101_ObjectCategories"
    names = [(c, f"image_{i:04d}.jpg") for c in CALTECH_CLASSES for i in range(1, per_class + 1)]
    for j, (c, f) in enumerate(order(names) if order else names):
        save_jpeg(cats / c / f, seed=j)
    for i in range(1, 4):
        save_jpeg(cats / "BACKGROUND_Google" / f"image_{i:04d}.jpg", seed=100 + i)
    return cats


def make_imagefolder(root: Path, splits=("train", "val"), classes=("cat", "dog"), per_class: int = 2) -> None:
    for s in splits:
        for ci, c in enumerate(classes):
            for i in range(per_class):
                save_jpeg(root / s / c / f"{i}.jpg", seed=10 * ci + i, size=(40, 30))


# Every registered dataset needs a fixture here: a new reader without one fails test_every_dataset_has_a_smoke_fixture.
def _fx_mnist(tmp):
    make_mnist(tmp)
    return tmp, "test"


def _fx_cifar10(tmp):
    make_cifar(tmp, "cifar10")
    return tmp, "test"


def _fx_cifar100(tmp):
    make_cifar(tmp, "cifar100")
    return tmp, "train"


def _fx_subset(tmp):
    (tmp / "cifar10_test_subset").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp / "cifar10_test_subset" / "cifar10_test_first846.npz",
             data=rng.integers(0, 256, (5, 3072), dtype=np.uint8), labels=np.arange(5, dtype=np.int64))
    return tmp, "test"


def _fx_846(tmp):
    _fx_subset(tmp)
    return tmp, "train"  # one image per class: the 30 % test share rounds to none


def _fx_svhn(tmp):
    make_svhn(tmp)
    return tmp, "test"


def _fx_caltech(tmp):
    make_caltech(tmp, per_class=3)
    return tmp, "test"


def _fx_imagefolder(tmp):
    make_imagefolder(tmp)
    return tmp, "val"


def _fx_digits(tmp):
    return None, "test"


def _fx_imagenet(tmp):  # more layouts and labels: tests/core/test_sdd_data.py
    make_imagefolder(tmp, classes=("n01440764", "n01443537"))
    return tmp, "val"


def _fx_cub200(tmp):  # the official CUB_200_2011 layout, 2 classes x 2 images (more: tests/core/test_sdd_data.py)
    cub = tmp / "CUB_200_2011"
    rel = [f"{c:03d}.Bird_{c}/img_{i}.jpg" for c in (1, 2) for i in range(2)]
    for i, r in enumerate(rel):
        save_jpeg(cub / "images" / r, seed=i, size=(40, 30))
    (cub / "images.txt").write_text("".join(f"{i} {r}\n" for i, r in enumerate(rel, 1)))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {r[2]}\n" for i, r in enumerate(rel, 1)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {i % 2}\n" for i in range(1, 5)))
    (cub / "classes.txt").write_text("1 001.Bird_1\n2 002.Bird_2\n")
    return tmp, "test"


def _fx_dtd(tmp):  # the official dtd/ layout, 3 classes x 4 images (more: tests/core/test_transfer_datasets.py)
    write_dtd(tmp / "dtd")
    return tmp, "test"


def _fx_caltech256(tmp):  # 256_ObjectCategories/, 3 classes (more: tests/core/test_transfer_datasets.py)
    write_caltech256(tmp / "256_ObjectCategories", per_class=(61, 62, 61), size=(8, 6))  # > 60: the default split
    return tmp, "test"


SMOKE_FIXTURES = {
    "mnist": _fx_mnist, "cifar10": _fx_cifar10, "cifar100": _fx_cifar100, "cifar10_test_subset": _fx_subset,
    "cifar10_846": _fx_846,
    "svhn": _fx_svhn, "caltech101": _fx_caltech, "imagefolder": _fx_imagefolder, "digits": _fx_digits,
    "imagenet": _fx_imagenet, "cub200": _fx_cub200, "dtd": _fx_dtd, "caltech256": _fx_caltech256,
}


def tree_state(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


# ------------------------------------------------------------------------------------------------ registry & specs

def test_every_dataset_has_a_smoke_fixture():
    # classification readers here; segmentation readers are tested in tests/segmentation
    assert set(list_datasets()) == set(SMOKE_FIXTURES)
    assert set(list_datasets(task=None)) == set(DATASETS) >= set(SMOKE_FIXTURES)
    for name in list_datasets(include_aliases=True):
        assert DATASETS.resolve(name) in SMOKE_FIXTURES


@pytest.mark.parametrize("name", sorted(SMOKE_FIXTURES))
def test_smoke_every_dataset(name, tmp_path):
    root, split = SMOKE_FIXTURES[name](tmp_path)
    spec = dataset_spec(name)
    assert isinstance(spec, DatasetSpec) and spec.name == name
    assert len(spec.mean) == len(spec.std) == spec.in_channels
    assert find_split(name, root, split)
    ds = get_dataset(name, root, split)
    assert len(ds) > 0
    x, y = ds[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (spec.in_channels, *spec.image_size)
    assert isinstance(y, int) and 0 <= y < (ds.spec.num_classes or 10**6)
    assert ds.spec.mean == spec.mean and ds.spec.std == spec.std
    # the training pipeline yields the same shapes
    xt, _ = get_dataset(name, root, split, train_transform=True)[0]
    assert xt.shape == x.shape


def test_specs_and_constants():
    assert NORMALIZATION["mnist"] == ((0.1307,), (0.3081,))
    assert NORMALIZATION["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert NORMALIZATION["cifar100"] == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert NORMALIZATION["half"] == ((0.5,) * 3, (0.5,) * 3)
    assert len(NORMALIZATION["svhn"][0]) == 3
    s = dataset_spec("cifar10")
    assert (s.num_classes, s.in_channels, s.image_size) == (10, 3, (32, 32))
    assert s.class_names[:2] == ("airplane", "automobile")
    assert dataset_spec("cifar-100").num_classes == 100 and len(dataset_spec("cifar100").class_names) == 100
    assert dataset_spec("cifar100").mean == NORMALIZATION["cifar100"][0]
    assert dataset_spec("mnist").image_size == (32, 32) and dataset_spec("mnist").in_channels == 1
    assert dataset_spec("caltech101").num_classes == 101 and dataset_spec("caltech101").mean == (0.5,) * 3
    assert dataset_spec("imagefolder").num_classes is None
    assert dataset_spec("digits").mean == NORMALIZATION["digits"][0]


def test_cifar_class_names_match_the_shipped_meta_files():
    from kdvision.core.data.cifar import cifar_meta_class_names

    for name in ("cifar10", "cifar100"):
        names = cifar_meta_class_names(DATA, name)
        if names is None:
            pytest.skip(f"CIFAR meta files not found under KDV_DATA={DATA}")
        assert names == dataset_spec(name).class_names


def test_unknown_names_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar1O'.*valid: .*cifar10.*mnist"):
        get_dataset("cifar1O", tmp_path)
    with pytest.raises(ConfigError, match="valid:"):
        dataset_spec("nope")
    with pytest.raises(ConfigError, match="valid:"):
        find_split("nope", tmp_path, "test")
    with pytest.raises(ConfigError, match=r"no split 'val'; valid: train, test"):
        get_dataset("mnist", tmp_path, "val")
    with pytest.raises(ConfigError, match=r"no split 'train'"):
        find_split("cifar10_test_subset", tmp_path, "train")
    with pytest.raises(ConfigError, match=r"takes no option 'image_size'"):
        get_dataset("mnist", tmp_path, "test", image_size=64)
    with pytest.raises(ConfigError, match=r"unknown normalization 'cifar'; valid: .*cifar10"):
        get_dataset("digits", None, "test", normalize="cifar")
    with pytest.raises(ConfigError, match="3 channels but the dataset has 1"):
        get_dataset("digits", None, "test", normalize="imagenet")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "caltech101", "imagefolder",
                                  "cifar10_test_subset", "dtd", "caltech256"])
def test_missing_root_and_files_are_one_line_data_errors(name, tmp_path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(DataError, match=f"data root {missing} does not exist") as exc:
        get_dataset(name, missing, "test")
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="needs a data root"):
        get_dataset(name, None, "test")
    with pytest.raises(DataError) as exc:  # the root exists but holds nothing
        get_dataset(name, tmp_path, "test")
    msg = str(exc.value)
    assert str(tmp_path) in msg and "expected" in msg and "\n" not in msg
    assert not find_split(name, tmp_path, "test") and not find_split(name, missing, "test")
    assert not find_split(name, None, "test")


def test_missing_file_messages_name_the_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw/t10k-images-idx3-ubyte\[\.gz\] and t10k-labels-idx1-ubyte"):
        get_dataset("mnist", tmp_path, "test")
    with pytest.raises(DataError, match=r"cifar-10-batches-py/ with data_batch_1, .*data_batch_5"):
        get_dataset("cifar10", tmp_path, "train")
    with pytest.raises(DataError, match=r"cifar-100-python/ with test"):
        get_dataset("cifar100", tmp_path, "test")
    with pytest.raises(DataError, match=r"test_32x32\.mat"):
        get_dataset("svhn", tmp_path, "test")
    with pytest.raises(DataError, match=r"101_ObjectCategories"):
        get_dataset("caltech101", tmp_path, "test")


# ------------------------------------------------------------------------------------------------ normalisation

def test_normalization_resolution():
    assert normalization("half", channels=3) == ((0.5,) * 3, (0.5,) * 3)
    assert normalization(((0.5,), (0.25,)), channels=3) == ((0.5,) * 3, (0.25,) * 3)  # DFAD Normalize((.5,),(.5,))
    assert normalization([[0.1, 0.2, 0.3], [1, 2, 3]]) == ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    assert normalization(False, channels=3) == ((0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ConfigError):
        normalization(((0.1, 0.2), (0.3,)))
    with pytest.raises(ConfigError):
        normalization(((0.1,), (0.0,)))


def test_normalize_argument_applies_exact_constants(tmp_path):
    arrays = make_cifar(tmp_path, "cifar100")
    raw = torch.from_numpy(arrays["test"][0][:3].reshape(-1, 3, 32, 32)).float() / 255

    def expected(stats):
        m, s = (torch.tensor(v).view(3, 1, 1) for v in stats)
        return (raw - m) / s

    default = get_dataset("cifar100", tmp_path, "test")
    dfad = get_dataset("cifar100", tmp_path, "test", normalize="cifar10")  # DFAD: CIFAR-100 with CIFAR-10 stats
    explicit = get_dataset("cifar100", tmp_path, "test", normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    plain = get_dataset("cifar100", tmp_path, "test", normalize=False)
    for ds, stats in ((default, NORMALIZATION["cifar100"]), (dfad, NORMALIZATION["cifar10"]),
                      (explicit, ((0.5,) * 3, (0.25,) * 3)), (plain, ((0.0,) * 3, (1.0,) * 3))):
        got = torch.stack([ds[i][0] for i in range(3)])
        torch.testing.assert_close(got, expected(stats), rtol=0, atol=2e-6)
        assert ds.spec.mean == tuple(stats[0]) and ds.spec.std == tuple(stats[1])


# ------------------------------------------------------------------------------------------------ containers

def test_tensor_dataset_batched_paths_agree(tmp_path):
    arrays = make_cifar(tmp_path, "cifar10", n=5)
    ds = get_dataset("cifar10", tmp_path, "train")
    assert isinstance(ds, TensorImageDataset) and len(ds) == 25 and ds.images.dtype == torch.uint8
    single = torch.stack([ds[i][0] for i in range(len(ds))])
    items = ds.__getitems__(list(range(len(ds))))
    torch.testing.assert_close(torch.stack([x for x, _ in items]), single, rtol=0, atol=0)
    assert [y for _, y in items] == arrays["train"][1].tolist() == ds.targets
    xs, ys = zip(*ds.batches(batch_size=8))
    torch.testing.assert_close(torch.cat(xs), single, rtol=0, atol=0)
    assert torch.cat(ys).tolist() == ds.targets and [len(y) for y in ys] == [8, 8, 8, 1]
    loader = torch.utils.data.DataLoader(ds, batch_size=10, shuffle=False)
    xb, yb = next(iter(loader))
    torch.testing.assert_close(xb, single[:10], rtol=0, atol=0)
    assert yb.dtype == torch.int64 and yb.tolist() == ds.targets[:10]
    assert ds[-1][1] == ds.targets[-1]


def test_random_crop_flip_is_a_shifted_padded_window():
    torch.manual_seed(0)
    imgs = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = RandomCropFlip(pad=4, flip=True)(imgs)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(imgs, (4, 4, 4, 4))
    flips = 0
    for i in range(len(imgs)):
        windows = [(padded[i, :, oy:oy + 8, ox:ox + 8], f) for oy in range(9) for ox in range(9) for f in (0, 1)]
        matches = [f for w, f in windows if torch.equal(w.flip(-1) if f else w, out[i])]
        assert matches, f"sample {i} is not a padded crop (+flip) of its input"
        flips += matches[0]
    assert 10 < flips < 54  # both branches are taken
    assert (out == 0).any()  # zero padding shows up somewhere


def test_train_transform_for_cifar_augments_but_not_for_digit_datasets(tmp_path):
    make_cifar(tmp_path, "cifar10")
    torch.manual_seed(1)
    aug = get_dataset("cifar10", tmp_path, "test", train_transform=True)
    plain = get_dataset("cifar10", tmp_path, "test")
    assert isinstance(aug.augment, RandomCropFlip)
    assert any(not torch.equal(aug[0][0], plain[0][0]) for _ in range(10))
    assert get_dataset("digits", None, "test", train_transform=True).augment is None


# ------------------------------------------------------------------------------------------------ MNIST

@needs_mnist
def test_real_mnist_test_and_train_splits_leave_the_data_untouched():
    before = tree_state(DATA)
    assert find_split("mnist", DATA, "test") and find_split("mnist", DATA, "train")
    test = get_dataset("mnist", DATA, "test")
    assert len(test) == 10_000 and tuple(test.images.shape) == (10_000, 1, 32, 32)
    assert torch.bincount(test.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    x, y = test[0]
    assert tuple(x.shape) == (1, 32, 32) and y == 7
    train = get_dataset("mnist", DATA, "train")
    assert len(train) == 60_000 and tuple(train.images.shape[1:]) == (1, 32, 32)
    assert sum(torch.bincount(train.labels, minlength=10).tolist()) == 60_000
    assert tree_state(DATA) == before, "the shared data folder was modified"


@needs_mnist
def test_mnist_resize_matches_torchvision_resize_on_pil():
    """Measured: max deviation 0 (bit-identical) over all 10,000 test images vs torchvision Resize((32, 32)) on PIL
    followed by ToTensor + Normalize; the float-tensor bilinear path (F.interpolate) would deviate by 1/255."""
    from PIL import Image
    from torchvision import transforms as T

    from kdvision.core.data.mnist import load_mnist_arrays

    images, _ = load_mnist_arrays(DATA, "test")
    ours = resize_uint8_like_pil(torch.from_numpy(images.copy()), (32, 32))
    resize = T.Resize((32, 32))  # DFAD's transform (bilinear on PIL)
    ref = torch.from_numpy(np.stack([np.asarray(resize(Image.fromarray(a))) for a in images]))
    deviation = (ours.int() - ref.int()).abs().max().item()
    assert deviation == 0, f"max pixel deviation {deviation}/255 vs torchvision Resize on PIL"
    # end to end: the dataset equals DFAD's Compose([Resize((32, 32)), ToTensor(), Normalize(...)]) pipeline
    dfad = T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
    ds = get_dataset("mnist", DATA, "test")
    for i in (0, 1, 9999):
        torch.testing.assert_close(ds[i][0], dfad(Image.fromarray(images[i])), rtol=0, atol=1e-5)


def test_resize_matches_pillow_on_random_upscales():
    from PIL import Image

    rng = np.random.default_rng(0)
    for h, w, oh, ow in [(28, 28, 32, 32), (7, 13, 29, 16), (37, 51, 128, 100)]:
        a = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        ours = resize_uint8_like_pil(torch.from_numpy(a), (oh, ow)).numpy()
        ref = np.stack([np.asarray(Image.fromarray(x).resize((ow, oh), Image.BILINEAR)) for x in a])
        assert np.array_equal(ours, ref), (h, w, oh, ow)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_reads_idx_files_with_or_without_gzip(tmp_path, compress):
    images, labels = make_mnist(tmp_path, n=12, compress=compress)
    ds = get_dataset("mnist", tmp_path, "train", normalize=False)
    assert len(ds) == 12 and ds.targets == labels.tolist()
    torch.testing.assert_close(ds.images[:, 0], resize_uint8_like_pil(torch.from_numpy(images), (32, 32)))
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(
        f"{p}-{k}-ubyte" + (".gz" if compress else "") for p in ("train", "t10k")
        for k in ("images-idx3", "labels-idx1"))  # nothing extracted or added


def test_mnist_malformed_files_are_data_errors(tmp_path):
    make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"xx")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated or corrupt"):
        get_dataset("mnist", tmp_path, "test")
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not an idx file"):
        get_dataset("mnist", tmp_path, "test")
    (raw / "t10k-images-idx3-ubyte").unlink()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        get_dataset("mnist", tmp_path, "test")


def test_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False, **kw):
            calls.append((root, train, download))
            make_mnist(Path(root), n=10)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    root = tmp_path / "new_root"
    with pytest.raises(DataError, match="pass download=True"):
        get_dataset("mnist", tmp_path, "test")
    assert not calls
    ds = get_dataset("mnist", root, "test", download=True)
    assert len(ds) == 10 and calls == [(str(root), False, True)]

    class OfflineMNIST:
        def __init__(self, root, train=True, download=False, **kw):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got: timed out")

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)
    with pytest.raises(DataError, match=r"downloading MNIST into .* failed: Error downloading") as exc:
        get_dataset("mnist", tmp_path / "other", "train", download=True)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------------ CIFAR

@needs_subset
def test_real_cifar10_test_subset():
    z = np.load(DATA / "cifar10_test_subset" / "cifar10_test_first846.npz")
    assert find_split("cifar10_test_subset", DATA, "test")
    ds = get_dataset("cifar10_test_subset", DATA, "test")
    assert len(ds) == 846 and tuple(ds[0][0].shape) == (3, 32, 32)
    assert ds.targets == z["labels"].tolist() and ds.targets[:5] == [3, 8, 8, 0, 6]
    assert ds.targets == z["all_test_labels"][:846].tolist()
    # R/G/B planes: pixel (row 0, col 0) of image 0 is data[0, 0], data[0, 1024], data[0, 2048]
    m, s = NORMALIZATION["imagenet"]
    opt_a = get_dataset("cifar10_test_subset", DATA, "test", normalize="imagenet")  # option-A teachers
    for c in range(3):
        assert opt_a[0][0][c, 0, 0].item() == pytest.approx((z["data"][0, 1024 * c] / 255 - m[c]) / s[c], abs=1e-6)
        assert opt_a[0][0][c, 0, 1].item() == pytest.approx((z["data"][0, 1024 * c + 1] / 255 - m[c]) / s[c],
                                                            abs=1e-6)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(name, tmp_path):
    arrays = make_cifar(tmp_path, name, n=4)
    for split, n in (("train", 20 if name == "cifar10" else 4), ("test", 4)):
        assert find_split(name, tmp_path, split)
        ds = get_dataset(name, tmp_path, split, normalize=False)
        data, labels = arrays[split]
        assert len(ds) == n and ds.targets == labels.tolist()
        assert torch.equal(ds.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        assert ds[1][0][2, 31, 0].item() == pytest.approx(data[1, 2048 + 31 * 32] / 255, abs=1e-7)


def _python2_cifar_pickle(data: bytes, labels: list[int]) -> bytes:
    """The bytes cPickle (protocol 2) wrote for the original CIFAR batches: py2 str keys and a numpy array built
    by numpy.core.multiarray._reconstruct (opcodes written by hand, as Python 3 cannot produce them)."""
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b  # SHORT_BINSTRING (a py2 str)

    p = b"\x80\x02}q\x00(" + s(b"data")
    p += b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85" + s(b"b") + b"\x87Rq\x03"
    p += b"(K\x01K" + bytes([len(data) // 3072]) + b"M\x00\x0c\x86cnumpy\ndtype\nq\x04" + s(b"u1") + b"K\x00K\x01\x87R"
    p += b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    p += b"\x89T" + len(data).to_bytes(4, "little") + data + b"tb"
    p += s(b"labels") + b"]q\x06(" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    p += s(b"batch_label") + s(b"testing batch 1 of 1") + b"u."
    return p


def test_cifar_loads_python2_pickles_and_refuses_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = bytes((i * 7) % 256 for i in range(2 * 3072))
    (folder / "test_batch").write_bytes(_python2_cifar_pickle(data, [3, 8]))
    ds = get_dataset("cifar10", tmp_path, "test")
    assert ds.targets == [3, 8]
    assert torch.equal(ds.images.flatten(), torch.frombuffer(bytearray(data), dtype=torch.uint8))
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    arr = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": arr, "fine_labels": [5, 99], "coarse_labels": [1, 2]}, f, protocol=2)
    assert get_dataset("cifar100", tmp_path, "test").targets == [5, 99]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "test", "wb") as f:
        pickle.dump({"data": Evil(), "fine_labels": [0]}, f)
    with pytest.raises(DataError, match=r"refusing to load global (posix|nt|os)\.system"):
        get_dataset("cifar100", tmp_path, "test")
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"expected uint8 data \(N, 3072\)"):
        get_dataset("cifar100", tmp_path, "test")
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": arr, "fine_labels": [0, 100]}, f)
    with pytest.raises(DataError, match="outside 0..99"):
        get_dataset("cifar100", tmp_path, "test")


# ------------------------------------------------------------------------------------------------ SVHN

def test_svhn_mat_layout(tmp_path):
    arrays = make_svhn(tmp_path, n=12)
    ds = get_dataset("svhn", tmp_path, "test", normalize=False)
    x, y = arrays["test"]
    assert len(ds) == 12 and ds.targets == [(v % 10) for v in y.reshape(-1).tolist()]
    assert ds.targets[9] == 0  # label 10 -> digit 0
    img, _ = ds[3]
    assert img[1, 5, 7].item() == pytest.approx(x[5, 7, 1, 3] / 255, abs=1e-7)  # X[row, col, channel, n]
    assert not find_split("svhn", tmp_path, "extra")
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"cannot read .*test_32x32\.mat"):
        get_dataset("svhn", tmp_path, "test")


# ------------------------------------------------------------------------------------------------ Caltech-101

def test_caltech101_split_is_deterministic_versioned_and_disjoint(tmp_path):
    root_a = tmp_path / "a"
    make_caltech(root_a)
    train = get_dataset("caltech101", root_a, "train")
    test = get_dataset("caltech101", root_a, "test")
    split_path = root_a / "caltech101_split_v1.json"
    assert split_path.is_file() and train.split_source == split_path
    doc = json.loads(split_path.read_text())
    assert doc["version"] == 1 and doc["seed"] == 1 and doc["classes"] == sorted(CALTECH_CLASSES)
    payload = json.dumps({"train": doc["train"], "test": doc["test"]}, sort_keys=True, separators=(",", ":"))
    assert doc["sha256"] == hashlib.sha256(payload.encode()).hexdigest()
    # 7 images per class: n_test = max(2, floor(1.4 + 0.5)) = 2; BACKGROUND_Google excluded
    assert (len(train), len(test)) == (15, 6) and (doc["num_train"], doc["num_test"]) == (15, 6)
    assert train.classes == test.classes == sorted(CALTECH_CLASSES) and train.spec.num_classes == 3
    assert not set(doc["train"]) & set(doc["test"])
    assert all(not p.startswith("BACKGROUND_Google") for p in doc["train"] + doc["test"])
    for c in range(3):
        assert sum(1 for _, y in test.samples if y == c) >= 2
    # the rule is reproducible from its definition
    for cls in CALTECH_CLASSES:
        files = [f"image_{i:04d}.jpg" for i in range(1, 8)]
        expect = sorted(sorted(files, key=lambda f: hashlib.sha256(f"1/{cls}/{f}".encode()).hexdigest())[:2])
        assert [p.split("/")[1] for p in doc["test"] if p.startswith(cls + "/")] == expect
    # a second copy, written in another order at another path, gets the same split
    root_b = tmp_path / "b"
    make_caltech(root_b, order=lambda names: list(reversed(names)))
    get_dataset("caltech101", root_b, "test")
    doc_b = json.loads((root_b / "caltech101_split_v1.json").read_text())
    assert (doc_b["train"], doc_b["test"], doc_b["sha256"]) == (doc["train"], doc["test"], doc["sha256"])
    # reused, not rewritten
    mtime = split_path.stat().st_mtime_ns
    assert [p for p, _ in get_dataset("caltech101", root_a, "test").samples] == [p for p, _ in test.samples]
    assert split_path.stat().st_mtime_ns == mtime
    # images: 3 x 128 x 128 in [-1, 1] (normalisation "half")
    x, _ = test[0]
    assert tuple(x.shape) == (3, 128, 128) and x.min() >= -1 and x.max() <= 1
    assert tuple(train[0][0].shape) == (3, 128, 128)


def test_caltech101_tampered_or_overlapping_split_files_are_errors(tmp_path):
    make_caltech(tmp_path)
    get_dataset("caltech101", tmp_path, "test")
    path = tmp_path / "caltech101_split_v1.json"
    doc = json.loads(path.read_text())
    tampered = dict(doc, test=doc["test"][:-1], train=doc["train"] + doc["test"][-1:])
    path.write_text(json.dumps(tampered))
    with pytest.raises(DataError, match=r"caltech101_split_v1\.json fails its sha256 check"):
        get_dataset("caltech101", tmp_path, "test")
    overlap = dict(doc, train=doc["train"] + doc["test"][:1])
    overlap["sha256"] = caltech_mod.lists_sha256(overlap["train"], overlap["test"])
    path.write_text(json.dumps(overlap))
    with pytest.raises(DataError, match="in both train and test"):
        get_dataset("caltech101", tmp_path, "train")
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read caltech101 split file"):
        get_dataset("caltech101", tmp_path, "train")
    path.write_text(json.dumps(doc))
    (tmp_path / "101_ObjectCategories" / doc["test"][0]).unlink()
    with pytest.raises(DataError, match=r"lists 1 image\(s\) missing"):
        get_dataset("caltech101", tmp_path, "test")


def test_caltech101_read_only_root_writes_split_to_cache(tmp_path, monkeypatch):
    data = tmp_path / "ro"
    cats = make_caltech(data / "caltech101", per_class=4)  # torchvision layout root/caltech101/101_ObjectCategories
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDVISION_CACHE", str(cache))
    os.chmod(cats.parent, 0o555)
    try:
        before = tree_state(data)
        ds = get_dataset("caltech101", data, "test")
        assert tree_state(data) == before
        written = list(cache.rglob("caltech101_split_v1.json"))
        assert written == [ds.split_source] and len(ds) == 3 * 2  # 4 per class -> 2 test
        assert get_dataset("caltech101", data, "train").split_source == written[0]
    finally:
        os.chmod(cats.parent, 0o755)


def test_caltech101_presplit_folder(tmp_path):
    pre = tmp_path / "101_ObjectCategories_split"
    for split, n in (("train", 3), ("test", 2)):
        for c in ("airplanes", "ant"):
            for i in range(n):
                save_jpeg(pre / split / c / f"{split}_{i}.jpg", seed=i)
    save_jpeg(pre / "train" / "BACKGROUND_Google" / "x.jpg", seed=0)
    ds = get_dataset("caltech101", tmp_path, "test")
    assert len(ds) == 4 and ds.classes == ["airplanes", "ant"] and ds.spec.num_classes == 2
    assert len(get_dataset("caltech101", tmp_path, "train")) == 6
    shutil.copy(pre / "test" / "ant" / "test_0.jpg", pre / "train" / "ant" / "test_0.jpg")
    with pytest.raises(DataError, match=r"in both train and test, e\.g\. ant/test_0\.jpg"):
        get_dataset("caltech101", tmp_path, "test")


def test_caltech101_too_small_class_is_an_error(tmp_path):
    make_caltech(tmp_path, per_class=2)
    with pytest.raises(DataError, match="has 2 image"):
        get_dataset("caltech101", tmp_path, "train")


# ------------------------------------------------------------------------------------------------ imagefolder

def test_imagefolder(tmp_path):
    make_imagefolder(tmp_path, classes=("cat", "dog", "emu"))
    ds = get_dataset("imagefolder", tmp_path, "val", image_size=32)
    assert len(ds) == 6 and ds.classes == ["cat", "dog", "emu"] and ds.spec.num_classes == 3
    assert ds.spec.image_size == (32, 32) and ds.spec.mean == NORMALIZATION["imagenet"][0]
    x, y = ds[5]
    assert tuple(x.shape) == (3, 32, 32) and y == 2
    assert tuple(get_dataset("imagefolder", tmp_path, "train", train_transform=True)[0][0].shape) == (3, 224, 224)
    assert find_split("imagefolder", tmp_path, "val") and not find_split("imagefolder", tmp_path, "test")
    with pytest.raises(DataError, match=r"imagefolder test split not found: expected .*test/<class>/<image>"):
        get_dataset("imagefolder", tmp_path, "test")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="imagefolder .*empty"):
        get_dataset("imagefolder", tmp_path, "empty")


# ------------------------------------------------------------------------------------------------ digits

def test_digits_split_sizes_stratification_and_determinism():
    train = get_dataset("digits", None, "train")
    test = get_dataset("digits", "/ignored/root", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert torch.bincount(test.labels, minlength=10).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    assert torch.bincount(train.labels, minlength=10).tolist() == [142, 146, 142, 146, 145, 146, 145, 143, 139, 144]
    _, y = _digits_all()
    totals = torch.bincount(y, minlength=10).float()
    frac = torch.bincount(test.labels, minlength=10).float() / totals
    assert ((frac - 0.2).abs() <= 0.5 / totals + 1e-6).all()  # stratified to the nearest image per class
    tr_idx, te_idx = digits_split_indices(y)
    assert len(set(tr_idx.tolist()) & set(te_idx.tolist())) == 0 and len(tr_idx) + len(te_idx) == 1797
    again = get_dataset("digits", None, "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    assert torch.equal(digits_split_indices(y.clone())[1], te_idx)
    x, label = test[0]
    assert tuple(x.shape) == (1, 32, 32) and isinstance(label, int)
    assert test.images.min() >= 0 and test.images.max() <= 1
    assert find_split("digits", None, "test") and find_split("digits", None, "train")


def test_digits_pixels_and_normalisation_constants():
    from sklearn.datasets import load_digits

    x_train, _ = digits_arrays("train")
    mean = x_train.double().mean().item()
    std = x_train.double().std(unbiased=False).item()
    assert NORMALIZATION["digits"] == ((round(mean, 4),), (round(std, 4),))
    # upscaling: bilinear (align_corners=False) of the 8x8 image / 16
    raw = torch.from_numpy(load_digits().images[:1] / 16.0).float().unsqueeze(1)
    up = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    first = _digits_all()[0][0]
    torch.testing.assert_close(first, up[0])
    ds = get_dataset("digits", None, "train")
    m, s = NORMALIZATION["digits"]
    torch.testing.assert_close(ds[0][0], (x_train[0] - m[0]) / s[0])


# ------------------------------------------------------------------------------------------------ GPU

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda_match_cpu_and_augment_on_device(tmp_path):
    make_cifar(tmp_path, "cifar10", n=8)
    ds = get_dataset("cifar10", tmp_path, "train")
    cpu = torch.cat([x for x, _ in ds.batches(16)])
    gpu = torch.cat([x for x, _ in ds.batches(16, device="cuda")])
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)
    aug = get_dataset("cifar10", tmp_path, "train", train_transform=True)
    x, y = next(aug.batches(16, device="cuda", shuffle=True))
    assert x.is_cuda and y.is_cuda and tuple(x.shape) == (16, 3, 32, 32)


def test_labelled_subset_is_seeded_sorted_and_bounded():
    from torch.utils.data import TensorDataset

    from kdvision.core.data import labelled_subset, subset_indices

    ds = TensorDataset(torch.arange(50))
    assert labelled_subset(ds, None, 3) is ds
    sub = labelled_subset(ds, 10, 3)
    assert [int(sub[i][0]) for i in range(len(sub))] == subset_indices(50, 10, 3)
    assert subset_indices(50, 10, 3) == sorted(set(subset_indices(50, 10, 3)))
    assert subset_indices(50, 10, 3) != subset_indices(50, 10, 4)
    big = subset_indices(60000, 1000, 0)  # the SDD MNIST comparison's subset: the same on every call
    assert big == subset_indices(60000, 1000, 0) and len(set(big)) == 1000 and big == sorted(big)
    assert len(sub) == 10
    with pytest.raises(ConfigError, match="--train_subset 51 is larger than the training split"):
        labelled_subset(ds, 51, 0)


def test_cifar10_846_is_a_stratified_70_30_split_of_the_subset(shared_data):
    from kdvision.core.data import stratified_hash_split

    full = get_dataset("cifar10_test_subset", shared_data, "test")
    train, test = (get_dataset("cifar10_846", shared_data, s) for s in ("train", "test"))
    assert (len(train), len(test)) == (593, 253)
    tr_idx, te_idx = stratified_hash_split(full.labels, 0.3, seed=0)
    assert set(tr_idx.tolist()).isdisjoint(te_idx.tolist()) and len(tr_idx) + len(te_idx) == len(full)
    assert torch.equal(train.images, full.images[tr_idx]) and torch.equal(test.labels, full.labels[te_idx])
    per_class = torch.bincount(full.labels, minlength=10)
    assert torch.equal(torch.bincount(test.labels, minlength=10), (0.3 * per_class.double() + 0.5).floor().long())
