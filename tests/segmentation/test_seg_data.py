"""Segmentation datasets: CamVid and NYUv2 readers, DFAD's joint transforms, palettes.

Tiny fixtures in the official layouts are written here (PNG with PIL, HDF5 ``nyu_depth_v2_labeled.mat`` with h5py
in the real file's axis order, ``splits.mat`` with scipy); the shared CamVid subset is used when present.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from kdv_testutils import data_root
from kdvision.core.data import dataset_spec, dataset_splits, find_split, get_dataset
from kdvision.core.errors import ConfigError, DataError
from kdvision.segmentation.data import (
    CAMVID_PALETTE,
    NYUV2_PALETTE,
    build_camvid,
    colorize,
    palette_of,
)
from PIL import Image

W, H = 8, 6  # fixture images: 8 wide, 6 high (short side 6: resize=6 keeps them unchanged)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _norm(values) -> torch.Tensor:
    """uint8 values → DFAD's (0.5, 0.5) normalisation."""
    return (torch.as_tensor(values, dtype=torch.float32) / 255 - 0.5) / 0.5


def _image(seed: int) -> np.ndarray:
    """H×W×3 uint8, asymmetric: R encodes the column, G the row, B the image; no zero values."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([10 + 20 * x, 10 + 30 * y, np.full_like(x, 10 + seed)], -1).astype(np.uint8)


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


# ----------------------------------------------------------------------------------------------------------------
# CamVid fixture: SegNet layout; label = column index (0..7), with pixel (row 1, col 2) void (11)


def _camvid_label() -> np.ndarray:
    label = np.tile(np.arange(W, dtype=np.uint8), (H, 1))
    label[1, 2] = 11
    return label


@pytest.fixture
def camvid(tmp_path):
    root = tmp_path / "CamVid"
    for split, names in {"train": ["a.png", "b.png"], "val": ["c.png"], "test": ["d.png", "e.png"]}.items():
        for i, name in enumerate(names):
            _save(root / split / name, _image(i))
            _save(root / f"{split}annot" / name, _camvid_label())
    return root


def test_camvid_registration_and_spec(camvid):
    spec = dataset_spec("camvid")
    assert (spec.num_classes, spec.in_channels, spec.image_size, spec.task) == (11, 3, (128, 128), "segmentation")
    assert spec.class_names[0] == "Sky" and spec.class_names[-1] == "Bicyclist" and len(spec.class_names) == 11
    assert spec.mean == (0.5,) * 3 and spec.std == (0.5,) * 3
    assert dataset_splits("camvid") == ("train", "val", "test")
    assert find_split("camvid", camvid, "test") and not find_split("camvid", camvid.parent / "nope", "test")
    ds = get_dataset("camvid", camvid, "train")
    assert len(ds) == 2 and ds.spec.num_classes == 11 and ds.classes[3] == "Road"
    assert [(p.split("/")[-2:], q.split("/")[-2:]) for p, q in ds.files] == [
        (["train", "a.png"], ["trainannot", "a.png"]), (["train", "b.png"], ["trainannot", "b.png"])]


def test_camvid_test_item_pixels_and_void(camvid):
    ds = get_dataset("camvid", camvid, "test", resize=6)  # short side 6 = the original: no resampling
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, H, W) and type(x) is torch.Tensor
    assert y.dtype == torch.int64 and y.shape == (H, W) and type(y) is torch.Tensor
    assert torch.allclose(x, _norm(_image(1)).permute(2, 0, 1))
    assert x[0, 0, 7] == pytest.approx(float(_norm(10 + 20 * 7)))  # top-right pixel: R = column code
    want = torch.from_numpy(_camvid_label()).long()
    want[1, 2] = 255  # void → ignore
    assert torch.equal(y, want)


def test_camvid_resize_short_side_and_nearest_mask(camvid):
    x, y = get_dataset("camvid", camvid, "test", resize=12)[0]
    assert x.shape == (3, 12, 16) and y.shape == (12, 16)
    assert set(y.unique().tolist()) == set(range(8)) | {255}  # nearest: no new values
    assert torch.equal(y[::2, ::2][0], torch.arange(8))  # each column doubled


def test_train_crop_pads_mask_with_ignore(camvid):
    torch.manual_seed(0)
    x, y = get_dataset("camvid", camvid, "train", train_transform=True, resize=6, crop_size=16)[0]
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)
    pad = (x == -1.0).all(0)  # image fill 0 → -1 after normalisation; fixture pixels are never 0
    assert int(pad.sum()) >= 16 * 16 - H * W
    assert (y[pad] == 255).all() and (y[~pad] != 255).sum() >= 1


def test_default_train_crop_is_128(camvid):
    x, y = get_dataset("camvid", camvid, "train", train_transform=True)[0]
    assert x.shape == (3, 128, 128) and y.shape == (128, 128)


def test_flip_is_joint_and_seeded(camvid):
    """R (column code 10 + 20 * c) and the mask (column c) must move together under crop and flip."""
    ds = get_dataset("camvid", camvid, "train", train_transform=True, resize=6, crop_size=6)
    orientations = set()
    for seed in range(12):
        torch.manual_seed(seed)
        x, y = ds[0]
        column = torch.round(((x[0] * 0.5 + 0.5) * 255 - 10) / 20).long()
        keep = y != 255
        assert torch.equal(column[keep], y[keep])
        orientations.add(bool(y[0, 0] > y[0, -1]))
        torch.manual_seed(seed)
        x2, y2 = ds[0]
        assert torch.equal(x, x2) and torch.equal(y, y2)  # determinism under torch.manual_seed
    assert orientations == {True, False}  # both flipped and unflipped draws occurred


def test_camvid_missing_split_folder(camvid):
    import shutil

    shutil.rmtree(camvid / "valannot")
    assert not find_split("camvid", camvid, "val")
    with pytest.raises(DataError) as err:
        get_dataset("camvid", camvid, "val")
    msg = str(err.value)
    assert "\n" not in msg and str(camvid / "valannot") in msg


def test_camvid_unpaired_files(camvid):
    _save(camvid / "test" / "aa.png", _image(0))
    with pytest.raises(DataError) as err:
        get_dataset("camvid", camvid, "test")
    msg = str(err.value)
    assert "\n" not in msg and str(camvid / "test" / "aa.png") in msg and "no label" in msg
    (camvid / "test" / "aa.png").unlink()
    _save(camvid / "testannot" / "zz.png", _camvid_label())
    with pytest.raises(DataError, match="zz.png has no image"):
        get_dataset("camvid", camvid, "test")


def test_camvid_mask_value_out_of_range(camvid):
    bad = _camvid_label()
    bad[0, 0], bad[5, 5] = 12, 40
    _save(camvid / "testannot" / "e.png", bad)
    ds = get_dataset("camvid", camvid, "test")
    ds[0]  # the good file still reads
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert "\n" not in msg and str(camvid / "testannot" / "e.png") in msg
    assert "mask values out of range" in msg and "12, 40" in msg


def test_download_and_bad_options(camvid):
    for name in ("camvid", "nyuv2"):
        with pytest.raises(DataError) as err:
            get_dataset(name, camvid, "test", download=True)
        msg = str(err.value)
        assert "\n" not in msg and "cannot be downloaded automatically" in msg and str(camvid) in msg
    for bad in (0, -3, 2.5, "128", True):
        with pytest.raises(ConfigError, match="crop_size"):
            get_dataset("camvid", camvid, "train", crop_size=bad)
    with pytest.raises(ConfigError, match="resize"):
        build_camvid(camvid, "test", train_transform=False, mean=(0.5,), std=(0.5,), download=False, resize=0)
    with pytest.raises(ConfigError, match="image_size"):
        get_dataset("camvid", camvid, "test", image_size=64)  # core: unknown option
    with pytest.raises(DataError, match="does not exist"):
        get_dataset("camvid", camvid / "missing", "test")


# ----------------------------------------------------------------------------------------------------------------
# NYUv2 fixture: frames 1..6; train = 1, 3, 4 and test = 2, 5, 6 (1-based, as in the real splits.mat)

TRAIN_IDX, TEST_IDX = [4, 1, 3], [2, 5, 6]  # splits.mat order is kept (not sorted)


def _nyu_image(idx: int) -> np.ndarray:
    return _image(idx)


def _nyu_label(idx: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return ((x + 2 * y + idx) % 14).astype(np.uint8)  # every raw value 0..13 occurs


def _nyu_meta(root):
    from scipy.io import savemat

    meta = root / "nyuv2-meta-data"
    meta.mkdir(parents=True)
    savemat(meta / "splits.mat", {"trainNdxs": np.array(TRAIN_IDX, dtype=float).reshape(-1, 1),
                                  "testNdxs": np.array(TEST_IDX, dtype=float).reshape(-1, 1)})
    for split, idxs in (("train", TRAIN_IDX), ("test", TEST_IDX)):
        for i in idxs:
            _save(meta / f"{split}_labels_13" / f"new_nyu_class13_{i:04d}.png", _nyu_label(i))
    return root


@pytest.fixture
def nyu_png(tmp_path):
    root = _nyu_meta(tmp_path / "NYUv2")
    for i in range(1, 7):
        _save(root / "480_640" / "IMAGE" / f"{i - 1}.png", _nyu_image(i))
    return root


@pytest.fixture
def nyu_mat(tmp_path):
    """The official file's layout: MATLAB uint8 H×W×3×N, column-major, seen by h5py as (N, 3, W, H)."""
    import h5py

    root = _nyu_meta(tmp_path / "NYUv2mat")
    stack = np.stack([_nyu_image(i).transpose(2, 1, 0) for i in range(1, 7)])  # (N, 3, W, H)
    assert stack.shape == (6, 3, W, H)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:  # MATLAB's 512-byte header
        f.create_dataset("images", data=stack, chunks=(1, 3, W, H))
    return root


def test_nyuv2_spec_alias_and_find(nyu_png, nyu_mat, tmp_path):
    spec = dataset_spec("nyu")
    assert (spec.name, spec.num_classes, spec.task) == ("nyuv2", 13, "segmentation")
    assert spec.class_names[0] == "Bed" and spec.class_names[-1] == "Window"
    assert dataset_splits("nyuv2") == ("train", "test")
    assert find_split("nyuv2", nyu_png, "train") and find_split("nyu", nyu_mat, "test")
    assert not find_split("nyuv2", tmp_path, "test") and not find_split("nyuv2", None, "test")
    with pytest.raises(ConfigError):
        find_split("nyuv2", nyu_png, "val")


@pytest.mark.parametrize("layout", ["png", "mat"])
def test_nyuv2_splits_labels_and_pixels(layout, nyu_png, nyu_mat):
    root = nyu_png if layout == "png" else nyu_mat
    for split, idxs in (("train", TRAIN_IDX), ("test", TEST_IDX)):
        ds = get_dataset("nyu", root, split, resize=6)
        assert ds.source == layout and len(ds) == 3
        assert [q.rsplit("/", 1)[-1] for _, q in ds.files] == [f"new_nyu_class13_{i:04d}.png" for i in idxs]
        assert all(f"{split}_labels_13" in q for _, q in ds.files)
        if layout == "png":
            assert [p.rsplit("/", 1)[-1] for p, _ in ds.files] == [f"{i - 1}.png" for i in idxs]
        else:
            assert [p.rsplit(":", 1)[-1] for p, _ in ds.files] == [f"images[{i - 1}]" for i in idxs]
        for k, i in enumerate(idxs):
            x, y = ds[k]
            assert x.shape == (3, H, W) and y.dtype == torch.int64
            assert torch.allclose(x, _norm(_nyu_image(i)).permute(2, 0, 1))  # orientation and frame number
            assert x[0, 0, 7] == pytest.approx(float(_norm(150))) and x[1, 5, 0] == pytest.approx(float(_norm(160)))
            raw = torch.from_numpy(_nyu_label(i)).long()
            assert torch.equal(y, torch.where(raw == 0, 255, raw - 1))  # 0 → 255, k → k - 1
    assert set(y.unique().tolist()) == set(range(13)) | {255}


def test_nyuv2_mat_and_png_agree_and_mat_pickles(nyu_png, nyu_mat):
    a = get_dataset("nyuv2", nyu_png, "train", train_transform=True, crop_size=4, resize=6)
    b = get_dataset("nyuv2", nyu_mat, "train", train_transform=True, crop_size=4, resize=6)
    torch.manual_seed(3)
    xa, ya = a[2]
    torch.manual_seed(3)
    xb, yb = b[2]
    assert xa.shape == (3, 4, 4) and torch.equal(xa, xb) and torch.equal(ya, yb)
    c = pickle.loads(pickle.dumps(b))  # DataLoader workers: the open h5py handle is not carried over
    assert torch.equal(c.raw_item(0)[0], b.raw_item(0)[0])


def test_nyuv2_errors(nyu_png, nyu_mat, tmp_path):
    import shutil

    # raw label value > 13
    bad = _nyu_label(2)
    bad[0, 0] = 14
    path = nyu_png / "nyuv2-meta-data" / "test_labels_13" / "new_nyu_class13_0002.png"
    _save(path, bad)
    with pytest.raises(DataError) as err:
        get_dataset("nyuv2", nyu_png, "test")[0]
    assert "\n" not in str(err.value) and str(path) in str(err.value) and "out of range" in str(err.value)
    # a missing image file is reported at construction
    (nyu_png / "480_640" / "IMAGE" / "4.png").unlink()
    with pytest.raises(DataError, match="4.png"):
        get_dataset("nyuv2", nyu_png, "test")
    # neither image source
    shutil.rmtree(nyu_png / "480_640")
    with pytest.raises(DataError) as err:
        get_dataset("nyuv2", nyu_png, "train")
    msg = str(err.value)
    assert "\n" not in msg and "480_640" in msg and "nyu_depth_v2_labeled.mat" in msg
    # the .mat holds too few frames
    import h5py

    with h5py.File(nyu_mat / "nyu_depth_v2_labeled.mat", "r+") as f:
        data = f["images"][:4]
        del f["images"]
        f["images"] = data
    with pytest.raises(DataError, match="holds 4 images"):
        get_dataset("nyuv2", nyu_mat, "test")
    # no splits.mat / no label folder
    (nyu_mat / "nyuv2-meta-data" / "splits.mat").unlink()
    with pytest.raises(DataError, match="splits.mat"):
        get_dataset("nyuv2", nyu_mat, "train")
    empty = tmp_path / "empty"
    _nyu_meta(empty)
    shutil.rmtree(empty / "nyuv2-meta-data" / "train_labels_13")
    with pytest.raises(DataError, match="train_labels_13"):
        get_dataset("nyuv2", empty, "train")


# ----------------------------------------------------------------------------------------------------------------
# palettes


def test_colorize_and_palettes():
    camvid = palette_of("camvid")
    assert camvid.dtype == torch.uint8 and camvid.shape == (12, 3) and camvid[3].tolist() == [128, 64, 128]
    assert camvid[11].tolist() == [0, 0, 0] and tuple(map(tuple, camvid.tolist())) == CAMVID_PALETTE
    nyu = palette_of("nyu")
    assert nyu.shape == (14, 3) and len({tuple(c) for c in nyu.tolist()}) == 14  # 13 distinct colours + black
    assert NYUV2_PALETTE[0] == (128, 0, 0) and NYUV2_PALETTE[12] == (192, 0, 128) and NYUV2_PALETTE[13] == (0, 0, 0)
    mask = torch.tensor([[0, 3], [255, 10]])
    rgb = colorize(mask, camvid)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 2, 2)
    assert rgb[:, 0, 0].tolist() == [128, 128, 128] and rgb[:, 0, 1].tolist() == [128, 64, 128]
    assert rgb[:, 1, 0].tolist() == [0, 0, 0] and rgb[:, 1, 1].tolist() == [0, 128, 192]
    batch = torch.stack([mask, torch.full((2, 2), 40)])  # 40: outside the palette → black
    out = colorize(batch, CAMVID_PALETTE)
    assert out.shape == (2, 3, 2, 2) and torch.equal(out[0], rgb) and (out[1] == 0).all()
    with pytest.raises(ConfigError, match="no colour palette"):
        palette_of("mnist")


# ----------------------------------------------------------------------------------------------------------------
# real data: the shared CamVid subset


@pytest.mark.slow
def test_real_camvid_subset():
    root = data_root() / "CamVid"
    if not root.is_dir():
        pytest.skip(f"CamVid subset not found at {root} (set KDV_DATA to the shared data folder)")
    assert [len(get_dataset("camvid", root, s)) for s in ("train", "val", "test")] == [24, 12, 36]
    test = get_dataset("camvid", root, "test")
    values: set[int] = set()
    for i in (0, 17, 35):
        x, y = test[i]
        assert x.shape == (3, 256, 341) and y.shape == (256, 341) and y.dtype == torch.int64
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
        values |= set(y.unique().tolist())
    assert values <= set(range(11)) | {255} and 255 in values
    torch.manual_seed(0)
    x, y = get_dataset("camvid", root, "train", train_transform=True)[0]
    assert x.shape == (3, 128, 128) and y.shape == (128, 128)
