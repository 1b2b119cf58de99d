"""kdvision.core.data.ood / imagenet32: the OOD sources of MosaicKD and the teacher-entropy subset.

Every source is exercised on tiny fixtures written here in the on-disk format of its release.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from kdvision.core.data import (NORMALIZATION, OOD_SOURCES, load_imagenet32, load_ood, load_places365_32,
                                ood_normalization, ood_subset, resolve_ood, subset_applies)
from kdvision.core.data import ood as ood_mod
from kdvision.core.data.imagenet32 import load_downsampled
from kdvision.core.errors import CheckpointError, ConfigError, DataError

from kdv_testutils import write_downsampled


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------------------------------------ fixture writers

def write_cifar(root: Path, name: str, n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, k = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels", 10
    else:
        folder, files, key, k = root / "cifar-100-python", ["train"], "fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    datas = []
    for fname in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / fname, "wb") as f:
            pickle.dump({"batch_label": fname, key: [int(v) for v in rng.integers(0, k, n)], "data": data}, f,
                        protocol=2)
        datas.append(data)
    return np.concatenate(datas).reshape(-1, 3, 32, 32)


def write_svhn(root: Path, n: int = 6, seed: int = 0) -> np.ndarray:
    import scipy.io

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H, W, C, N
    y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)
    scipy.io.savemat(str(root / "train_32x32.mat"), {"X": x, "y": y})
    return np.transpose(x, (3, 2, 0, 1))


def write_pngs(folder: Path, n: int = 5, size=(32, 32), mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """PNG files (lossless) spread over nested folders; returns the (N, C, H, W) pixels in sorted-path order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = 1 if mode == "L" else 3
        arr = rng.integers(0, 256, (size[0], size[1], c), dtype=np.uint8)
        path = folder / f"d{i % 2}" / ("sub" if i % 3 == 0 else "") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[..., 0] if c == 1 else arr, mode).save(path)
        out.append((str(path), arr.transpose(2, 0, 1)))
    return np.stack([a for _, a in sorted(out)])


def _fx_cifar(name):
    def fx(tmp: Path):
        return tmp, write_cifar(tmp, name)
    return fx


def _fx_svhn(tmp: Path):
    return tmp, write_svhn(tmp)


def _fx_downsampled(sub: str, classes: int):
    def fx(tmp: Path):
        data, *_ = write_downsampled(tmp / sub, num_classes=classes, batches=10, per=0)
        return tmp, data.reshape(-1, 3, 32, 32)
    return fx


def _fx_folder(tmp: Path):
    return tmp / "imgs", write_pngs(tmp / "imgs")


OOD_FIXTURES = {
    "cifar10": _fx_cifar("cifar10"),
    "cifar100": _fx_cifar("cifar100"),
    "svhn": _fx_svhn,
    "imagenet_32x32": _fx_downsampled("Imagenet32_train", 1000),
    "places365_32x32": _fx_downsampled("Places365_32x32", 365),
    "folder": _fx_folder,
}


# ------------------------------------------------------------------------------------------------ ImageNet-32 reader

def test_imagenet32_reader_official_layout(tmp_path):
    train, tlab, val, vlab = write_downsampled(tmp_path / "Imagenet32_train", val=tmp_path / "Imagenet32_val")
    with pytest.warns(UserWarning, match="reading 3 of the 10 training batches"):
        x, y = load_imagenet32(tmp_path, "train")
    assert x.dtype == torch.uint8 and x.shape == (len(train), 3, 32, 32) and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(train.reshape(-1, 3, 32, 32)))
    assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(tlab - 1))  # 1-based on disk
    assert int(y.min()) >= 0 and int(y.max()) <= 999
    xv, yv = load_imagenet32(tmp_path, "val")
    assert torch.equal(xv, torch.from_numpy(val.reshape(-1, 3, 32, 32))) and torch.equal(yv, torch.from_numpy(vlab - 1))


def test_imagenet32_channel_order_is_planar_rgb(tmp_path):
    img = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    img[0, 0], img[0, 1], img[0, 2] = 10, 20, 30
    img[0, 0, 0, 1] = 99  # row 0, column 1 of the R plane: the second byte of the row
    folder = tmp_path / "imagenet32"
    folder.mkdir()
    row = img.reshape(1, 3072)
    assert row[0, 1] == 99 and row[0, 1024] == 20 and row[0, 2048] == 30
    for k in range(1, 11):
        with open(folder / f"train_data_batch_{k}", "wb") as f:
            pickle.dump({"data": row, "labels": [k], "mean": row[0].astype(np.float64)}, f)
    x, y = load_imagenet32(tmp_path)  # all 10 batches: no warning
    assert x.shape == (10, 3, 32, 32)
    assert x[0, :, 5, 5].tolist() == [10, 20, 30] and int(x[0, 0, 0, 1]) == 99
    assert y.tolist() == list(range(10))


@pytest.mark.parametrize("sub", ["", "imagenet32", "ImageNet_32x32", "Imagenet32_train"])
def test_imagenet32_found_in_root_and_usual_subfolders(tmp_path, sub):
    train, *_ = write_downsampled(tmp_path / sub if sub else tmp_path, batches=10, per=1, protocol=4)
    x, _ = load_imagenet32(tmp_path)
    assert torch.equal(x, torch.from_numpy(train.reshape(-1, 3, 32, 32)))


def test_imagenet32_npz_variant(tmp_path):
    train, tlab, *_ = write_downsampled(tmp_path, batches=10, per=1, npz=True)
    x, y = load_imagenet32(tmp_path)
    assert torch.equal(x, torch.from_numpy(train.reshape(-1, 3, 32, 32))) and torch.equal(y, torch.from_numpy(tlab - 1))


def test_places365_32_same_layout(tmp_path):
    train, tlab, *_ = write_downsampled(tmp_path / "places365_32x32", num_classes=365, batches=2)
    x, y = load_places365_32(tmp_path)  # no official batch count: no warning
    assert torch.equal(x, torch.from_numpy(train.reshape(-1, 3, 32, 32))) and torch.equal(y, torch.from_numpy(tlab - 1))
    with pytest.raises(DataError) as e:  # the ImageNet reader does not look in Places folders
        load_imagenet32(tmp_path)
    assert "ImageNet-32 train split not found" in one_line(e) and "train_data_batch_1" in str(e.value)


def test_truncated_and_malformed_batches_are_one_line_errors_naming_the_file(tmp_path):
    write_downsampled(tmp_path, batches=10, per=2)
    bad = tmp_path / "train_data_batch_4"
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.raises(DataError) as e:
        load_imagenet32(tmp_path)
    assert str(bad) in one_line(e) and "truncated" in str(e.value)

    with open(bad, "wb") as f:  # wrong row width (a 64x64 batch read as 32x32)
        pickle.dump({"data": np.zeros((2, 12288), np.uint8), "labels": [1, 2]}, f)
    with pytest.raises(DataError, match="expected 'data' uint8 \\(N, 3072\\)") as e:
        load_imagenet32(tmp_path)
    assert str(bad) in one_line(e)

    with open(bad, "wb") as f:  # 0-based labels: not this release
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataError, match="1-based"):
        load_imagenet32(tmp_path)

    with open(bad, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DataError, match="expected a dict with 'data' and 'labels'"):
        load_imagenet32(tmp_path)

    bad.unlink()  # a gap in the numbering
    with pytest.raises(DataError, match="missing train_data_batch_4") as e:
        load_imagenet32(tmp_path)
    one_line(e)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickles_with_code_are_refused(tmp_path):
    write_downsampled(tmp_path, batches=10, per=1)
    with open(tmp_path / "train_data_batch_2", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [1], "x": _Evil()}, f)
    with pytest.raises(DataError, match="refusing to load global") as e:
        load_downsampled("imagenet_32x32", tmp_path)
    assert "train_data_batch_2" in one_line(e)


# ------------------------------------------------------------------------------------------------ every OOD source

def test_every_ood_source_has_a_fixture():
    assert set(OOD_FIXTURES) == set(OOD_SOURCES.names())


@pytest.mark.parametrize("name", OOD_SOURCES.names(include_aliases=True))
def test_every_ood_source_loads_all_training_images(name, tmp_path):
    key, _ = resolve_ood(name)
    root, expected = OOD_FIXTURES[key](tmp_path)
    x = load_ood(name, root)
    assert x.dtype == torch.uint8 and x.shape == (len(expected), 3, 32, 32) and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(np.ascontiguousarray(expected)))


def test_folder_given_as_path_or_folder_prefix(tmp_path):
    expected = torch.from_numpy(write_pngs(tmp_path / "imgs", n=4))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / ".hidden.png").write_bytes(b"junk")  # hidden files are skipped
    for name, root in ((str(tmp_path / "imgs"), None), (f"folder:{tmp_path / 'imgs'}", "/ignored"),
                       ("folder", tmp_path / "imgs")):
        assert torch.equal(load_ood(name, root), expected)
    assert resolve_ood("./rel/dir") == ("folder", "./rel/dir")


def test_folder_grayscale(tmp_path):
    expected = write_pngs(tmp_path / "g", n=3, mode="L")
    x = load_ood("folder", tmp_path / "g", channels=1)
    assert x.shape == (3, 1, 32, 32) and torch.equal(x, torch.from_numpy(expected))


def test_folder_with_wrong_size_or_grayscale_image_is_an_error_naming_it(tmp_path):
    from PIL import Image

    write_pngs(tmp_path / "a", n=3)
    odd = tmp_path / "a" / "zz_big.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(odd)
    with pytest.raises(DataError) as e:
        load_ood(f"folder:{tmp_path / 'a'}", None)
    msg = one_line(e)
    assert str(odd) in msg and "3x40x30" in msg and "expected 3x32x32" in msg

    write_pngs(tmp_path / "b", n=3)
    gray = tmp_path / "b" / "gray.png"
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(gray)
    with pytest.raises(DataError) as e:
        load_ood(str(tmp_path / "b"), None)
    msg = one_line(e)
    assert str(gray) in msg and "1x32x32" in msg and "expected 3x32x32" in msg

    with pytest.raises(DataError, match="does not exist"):
        load_ood(f"folder:{tmp_path / 'nope'}", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_ood("folder", tmp_path / "empty")


def test_mosaickd_imagefolder_tree_fallback(tmp_path):
    expected = write_pngs(tmp_path / "ImageNet_32x32" / "train", n=4)
    assert torch.equal(load_ood("imagenet32", tmp_path), torch.from_numpy(expected))


def test_unknown_name_lists_the_valid_ones_and_shape_mismatch(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_ood("imagenet", tmp_path)
    msg = one_line(e)
    for name in OOD_SOURCES.names(include_aliases=True):
        assert name in msg
    assert "folder:PATH" in msg
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(ConfigError, match="3x32x32 .* but 1x28x28") as e:
        load_ood("cifar10", tmp_path, size=(28, 28), channels=1)
    one_line(e)
    with pytest.raises(DataError, match="does not exist"):
        load_ood("svhn", tmp_path / "missing")


def test_ood_normalization_and_subset_applies():
    assert ood_normalization("cifar10") == NORMALIZATION["cifar10"] == (
        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert ood_normalization("cifar100") == NORMALIZATION["cifar100"]
    for name in ("svhn", "imagenet_32x32", "imagenet32", "places365_32x32", "places365_32"):
        assert ood_normalization(name) == ((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ConfigError, match="in_domain"):
        ood_normalization("/some/folder")
    applies = {n for n in OOD_SOURCES.names(include_aliases=True) if subset_applies(n)}
    assert applies == {"imagenet_32x32", "imagenet32", "places365_32x32", "places365_32"}
    assert not subset_applies("folder:/x")
    with pytest.raises(ConfigError, match="valid"):
        subset_applies("cifar-10")


# ------------------------------------------------------------------------------------------------ OOD subset

MEAN, STD = NORMALIZATION["cifar100"]


def tiny_teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 7))
    with torch.no_grad():
        net[-1].weight.mul_(8)  # spread the entropies
        net[1].running_mean.uniform_(-0.2, 0.2)
    return net


def brute_force_top_entropy(images: torch.Tensor, teacher: nn.Module, n: int) -> list[int]:
    teacher.eval()
    ent = []
    m = np.asarray(MEAN).reshape(3, 1, 1)
    s = np.asarray(STD).reshape(3, 1, 1)
    for img in images.numpy():
        x = torch.from_numpy(((img / 255.0 - m) / s)[None].astype(np.float32))
        with torch.no_grad():
            z = teacher(x)[0].double().numpy()
        p = np.exp(z - z.max())
        p /= p.sum()
        ent.append(float(-(p * np.log(p)).sum()))
    return sorted(np.argsort(-np.asarray(ent), kind="stable")[:n].tolist())


def test_ood_subset_is_the_top_entropy_and_is_cached(tmp_path, monkeypatch):
    images = torch.randint(0, 256, (45, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    teacher = tiny_teacher()
    ckpt = tmp_path / "teacher.pth"
    torch.save(teacher.state_dict(), ckpt)
    teacher.train()
    kw = dict(n=12, mean=MEAN, std=STD, batch_size=8, device="cpu", cache_dir=tmp_path / "cache",
              dataset="cifar100-imagenet_32x32", teacher_checkpoint=ckpt, progress=False)
    idx = ood_subset(images, teacher, **kw)
    assert teacher.training  # its mode is restored; the pass itself ran in eval mode (BN running stats)
    expected = brute_force_top_entropy(images, teacher, 12)
    assert idx.dtype == torch.int64 and idx.tolist() == expected
    files = list((tmp_path / "cache").iterdir())
    sha16 = ood_mod.file_sha256(ckpt)[:16]
    assert [f.name for f in files] == [f"cifar100-imagenet_32x32-{sha16}-12.pt"]

    def boom(*a, **k):
        raise AssertionError("teacher called although the subset is cached")

    monkeypatch.setattr(teacher, "forward", boom)
    assert ood_subset(images, teacher, **kw).tolist() == expected  # no teacher pass

    # another teacher checkpoint: another key, recomputed with the new teacher
    teacher2 = tiny_teacher(seed=5)
    torch.save(teacher2.state_dict(), ckpt)
    idx2 = ood_subset(images, teacher2, **kw)
    assert idx2.tolist() == brute_force_top_entropy(images, teacher2, 12) != expected
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert not [f for f in (tmp_path / "cache").iterdir() if f.name.endswith(".tmp")]

    # same key but other images: recomputed (with a warning), not a stale subset
    other = images.flip(0).contiguous()
    with pytest.warns(UserWarning, match="other images"):
        idx3 = ood_subset(other, teacher2, **kw)
    assert idx3.tolist() == brute_force_top_entropy(other, teacher2, 12)


def test_ood_subset_rules(tmp_path):
    images = torch.zeros((10, 3, 32, 32), dtype=torch.uint8)
    teacher = tiny_teacher()
    kw = dict(mean=MEAN, std=STD, batch_size=4, device="cpu", cache_dir=None, dataset="x", teacher_checkpoint=None,
              progress=False)
    for n in (10, 11, 0):
        with pytest.raises(ConfigError, match="must be between 1 and 9") as e:
            ood_subset(images, teacher, n=n, **kw)
        one_line(e)
    # identical images: equal entropies, ties keep the lower indices
    assert ood_subset(images, teacher, n=3, **kw).tolist() == [0, 1, 2]
    with pytest.raises(CheckpointError, match="cannot read teacher checkpoint"):
        ood_subset(images, teacher, n=3, **{**kw, "cache_dir": tmp_path, "teacher_checkpoint": tmp_path / "no.pth"})
