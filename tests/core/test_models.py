"""Model zoo: every registered model builds and runs, keys equal the golden lists and the spec, real teachers load.

Spec: ``reference/models.md`` (key names, tensor and parameter counts). Golden key lists: ``golden/model_keys.json``,
written by ``golden/make_golden.py``. Real checkpoints come from the shared data folder (``$KDV_DATA``, default
``<repo>/../shared/data``); tests that need it are skipped when it is absent.
"""
from __future__ import annotations

import gzip
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdvision.core.checkpoint import load_weights
from kdvision.core.errors import CheckpointError, ConfigError
from kdvision.core.models import MODELS, create_model, list_models, model_info

from kdv_testutils import data_root
GOLDEN = json.loads((Path(__file__).with_name("golden") / "model_keys.json").read_text())
DATA = data_root()
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

ALL_MODELS = list_models()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_num_classes(name: str) -> int:
    return inspect.signature(MODELS.get(name)).parameters["num_classes"].default


def make_input(name: str, batch: int = 2) -> torch.Tensor:
    c, h, w = model_info(name)["input_size"]
    if h > 64:  # ImageNet models: a small input keeps the CPU run fast and exercises their global pooling
        h = w = 64
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


def data_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared data file {path} not found (set KDV_DATA to the shared data folder)")
    return path


# --------------------------------------------------------------------------------------------- every registered model
@pytest.mark.parametrize("name", ALL_MODELS)
def test_builds_and_runs(name):
    info = model_info(name)
    assert len(info["input_size"]) == 3 and info["family"]
    model = create_model(name, num_classes=7).eval()
    assert model.kd_name == name
    with torch.no_grad():
        out = model(make_input(name))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    assert torch.isfinite(out).all()


# torchvision's own classes are left to torchvision's tests
OUR_MODELS = [n for n in ALL_MODELS if not model_info(n)["family"].startswith("torchvision")]


@pytest.mark.parametrize("name", OUR_MODELS)
def test_train_step_reaches_every_parameter(name):
    model = create_model(name).train()
    out = model(make_input(name))
    out.square().mean().backward()
    no_grad = [k for k, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters outside the forward graph: {no_grad[:5]}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_state_dict_matches_golden(name):
    if name not in GOLDEN:
        pytest.fail(f"no golden key list for {name!r}: check its keys against reference/models.md, then run "
                    f"`python tests/core/golden/make_golden.py {name}`")
    entry = GOLDEN[name]
    assert default_num_classes(name) == entry["num_classes"]
    assert list(model_info(name)["input_size"]) == entry["input_size"]
    sd = create_model(name).state_dict()
    got = {k: list(v.shape) for k, v in sd.items()}
    want = entry["state_dict"]
    assert sorted(set(want) - set(got)) == [], "keys missing from the model"
    assert sorted(set(got) - set(want)) == [], "keys the golden list does not have"
    assert {k: s for k, s in got.items() if want[k] != s} == {}, "shape differences"


def test_golden_has_no_stale_entries():
    assert sorted(set(GOLDEN) - set(ALL_MODELS)) == []


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_model("wrn40_3")
    msg = str(info.value)
    assert "wrn40_3" in msg and "wrn40_2" in msg and "resnet20_a" in msg


@pytest.mark.parametrize("alias,name", [
    ("resnet18_8x", "resnet18"), ("resnet34_8x", "resnet34"), ("wrn_40_2", "wrn40_2"), ("wrn_16_1", "wrn16_1"),
    ("ShuffleV1", "shufflenetv1"), ("ShuffleV2", "shufflenetv2"), ("MobileNetV2", "mobilenetv2"),
    ("mobile_half", "mobilenetv2"), ("vgg13_bn", "vgg13"),
])
def test_aliases(alias, name):
    assert MODELS.resolve(alias) == name
    assert create_model(alias).kd_name == name


# ------------------------------------------------------------------------------------- numbers from reference/models.md
# (name, num_classes, state_dict tensors or None, parameters in millions, decimals the spec gives)
SPEC_COUNTS = [
    ("wrn40_2", 100, 227, 2.255, 3), ("wrn40_2", 10, 227, 2.244, 3), ("wrn40_1", 100, 226, 0.570, 3),
    ("wrn16_2", 100, 83, 0.703, 3), ("wrn16_1", 100, 82, 0.181, 3),
    ("resnet34", 10, 218, 21.28, 2), ("resnet18", 10, 122, 11.17, 2), ("resnet18", 100, 122, 11.22, 2),
    ("vgg8", 100, None, 3.97, 2), ("vgg11", 100, 58, 9.28, 2), ("vgg13", 100, None, 9.46, 2),
    ("vgg16", 100, None, 14.77, 2), ("vgg19", 100, None, 20.09, 2),
    ("resnet8", 100, None, 0.08, 2), ("resnet14", 100, None, 0.18, 2), ("resnet20", 100, None, 0.28, 2),
    ("resnet32", 100, None, 0.47, 2), ("resnet44", 100, None, 0.67, 2), ("resnet56", 100, 344, 0.86, 2),
    ("resnet110", 100, None, 1.74, 2), ("resnet8x4", 100, None, 1.23, 2), ("resnet32x4", 100, None, 7.43, 2),
    ("mobilenetv2", 100, None, 0.81, 2), ("shufflenetv1", 100, None, 0.95, 2), ("shufflenetv2", 100, None, 1.36, 2),
    # He et al. (2016), Table 6: 0.27 / 0.46 / 0.66 / 0.85 / 1.7 M; tensor counts = the released files' key counts
    ("resnet20_a", 10, 97, 0.27, 2), ("resnet32_a", 10, 157, 0.46, 2), ("resnet44_a", 10, 217, 0.66, 2),
    ("resnet56_a", 10, 277, 0.85, 2), ("resnet110_a", 10, None, 1.7, 1),
    ("resnet18_imagenet", 1000, 122, 11.69, 2), ("resnet34_imagenet", 1000, 218, 21.80, 2),
    ("resnet50_imagenet", 1000, 320, 25.56, 2),
]


@pytest.mark.parametrize("name,num_classes,tensors,mparams,decimals", SPEC_COUNTS)
def test_spec_counts(name, num_classes, tensors, mparams, decimals):
    model = create_model(name, num_classes=num_classes)
    if tensors is not None:
        assert len(model.state_dict()) == tensors
    assert round(n_params(model) / 1e6, decimals) == pytest.approx(mparams, abs=1e-9)


def test_lenet_exact_parameter_counts():
    assert n_params(create_model("lenet5")) == 61_706
    assert n_params(create_model("lenet5_half")) == 15_738
    assert n_params(create_model("lenet5_gap")) == 21_182  # 156 + 2,416 + 17,400 + 1,210
    assert n_params(create_model("lenet5_gap_half")) == 5_676  # 78 + 608 + 4,380 + 610


def test_wrn_conv_shortcut_only_where_width_changes():
    for name, k in (("wrn16_1", 1), ("wrn40_1", 1), ("wrn16_2", 2), ("wrn40_2", 2)):
        keys = [key for key in create_model(name).state_dict() if "convShortcut" in key]
        expected = ["block2.layer.0.convShortcut.weight", "block3.layer.0.convShortcut.weight"]
        if k > 1:
            expected.insert(0, "block1.layer.0.convShortcut.weight")
        assert keys == expected, name


def test_wrn40_2_keys_by_hand():
    sd = create_model("wrn40_2", num_classes=100).state_dict()
    assert sd["conv1.weight"].shape == (16, 3, 3, 3)
    assert sd["block1.layer.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert sd["block1.layer.0.convShortcut.weight"].shape == (32, 16, 1, 1)
    assert sd["block2.layer.0.convShortcut.weight"].shape == (64, 32, 1, 1)
    assert sd["block3.layer.5.conv2.weight"].shape == (128, 128, 3, 3)
    assert "block3.layer.6.conv1.weight" not in sd
    assert sd["bn1.running_var"].shape == (128,)
    assert sd["fc.weight"].shape == (100, 128)
    # each block: bn1, conv1, bn2, conv2, convShortcut in this order
    block = [k.split(".", 3)[3] for k in sd if k.startswith("block1.layer.0.")]
    assert [k.rsplit(".", 1)[0] for k in block] == (
        ["bn1"] * 5 + ["conv1"] + ["bn2"] * 5 + ["conv2", "convShortcut"])


def test_cifar_resnet_keys_by_hand():
    sd = create_model("resnet34", num_classes=10).state_dict()
    assert sd["layer2.0.shortcut.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.0.shortcut.1.running_mean"].shape == (512,)
    assert "layer1.0.shortcut.0.weight" not in sd and "layer2.1.shortcut.0.weight" not in sd
    assert sd["layer3.5.conv2.weight"].shape == (256, 256, 3, 3) and "layer3.6.conv1.weight" not in sd
    assert sd["linear.weight"].shape == (10, 512)


def test_vgg11_keys_by_hand():
    keys = {k.rsplit(".", 1)[0] for k in create_model("vgg11", num_classes=100).state_dict()}
    assert keys == {"block0.0", "block0.1", "block1.0", "block1.1", *[f"block{b}.{i}" for b in (2, 3, 4)
                                                                       for i in (0, 1, 3, 4)], "classifier"}


def test_repdistiller_resnet_keys_by_hand():
    sd = create_model("resnet56", num_classes=100).state_dict()
    assert [k for k in sd if "downsample" in k and k.endswith("weight")] == [
        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight",
        "layer3.0.downsample.0.weight", "layer3.0.downsample.1.weight"]
    assert sd["fc.weight"].shape == (100, 64)
    sd4 = create_model("resnet8x4").state_dict()
    assert sd4["layer1.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert sd4["fc.weight"].shape == (10, 256)


def test_mobile_shuffle_keys_by_hand():
    sd = create_model("mobilenetv2", num_classes=100).state_dict()
    assert sd["conv1.0.weight"].shape == (16, 3, 3, 3)
    assert {k.split(".")[4] for k in sd if k.startswith("blocks.")} == {"0", "1", "3", "4", "6", "7"}
    assert sd["blocks.0.0.conv.0.weight"].shape == (16, 16, 1, 1)  # expansion 1 still has the pw conv
    assert sd["blocks.6.0.conv.6.weight"].shape == (160, 480, 1, 1)  # 80 → 480 → 160
    assert sd["conv2.0.weight"].shape == (1280, 160, 1, 1) and sd["classifier.0.weight"].shape == (100, 1280)
    v1 = create_model("shufflenetv1", num_classes=100).state_dict()
    assert v1["conv1.weight"].shape == (24, 3, 1, 1) and v1["linear.weight"].shape == (100, 960)
    assert len([k for k in v1 if k.endswith("conv1.weight") and k.startswith("layer")]) == 16
    v2 = create_model("shufflenetv2", num_classes=100).state_dict()
    assert v2["conv1.weight"].shape == (24, 3, 1, 1) and v2["conv2.weight"].shape == (1024, 464, 1, 1)
    assert "layer1.0.conv5.weight" in v2 and "layer1.1.conv4.weight" not in v2 and "layer1.3.conv3.weight" in v2
    assert "layer2.7.conv1.weight" in v2 and "layer2.8.conv1.weight" not in v2


# Feature-map size where each family pools (32-px input): the hook points other modules rely on.
@pytest.mark.parametrize("name,module,hw", [
    ("resnet18", "layer4", 4), ("wrn40_2", "block3", 8), ("resnet56", "layer3", 8), ("resnet20_a", "layer3", 8),
    ("vgg13", "block4", 4), ("shufflenetv1", "layer3", 4), ("shufflenetv2", "conv2", 4),
    ("mobilenetv2", "conv2", 2), ("lenet5", "conv3", 1),
])
def test_feature_map_size_at_pooling(name, module, hw):
    model = create_model(name).eval()
    seen = []
    model.get_submodule(module).register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
    with torch.no_grad():
        model(make_input(name))
    assert seen == [(hw, hw)]


def test_vgg_pool3_only_at_64_px():
    model = create_model("vgg8").eval()
    seen = []
    model.block4.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        model(torch.randn(1, 3, 64, 64))
    assert seen == [(4, 4), (4, 4)]


def test_option_a_shortcut_is_zero_padding_with_subsampling():
    model = create_model("resnet20_a")
    shortcut = model.layer2[0].shortcut
    assert list(shortcut.parameters()) == [] and list(shortcut.buffers()) == []
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_option_a_batchnorm_counter_not_saved_but_training_works():
    model = create_model("resnet20_a").train()
    assert not any(k.endswith("num_batches_tracked") for k in model.state_dict())
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32))
    assert not torch.equal(before, model.bn1.running_mean)
    # a state_dict saved by this class loads back strictly into a fresh instance
    clone = create_model("resnet20_a")
    clone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(clone.bn1.running_mean, model.bn1.running_mean)


# ----------------------------------------------------------------------------------------------------- real teachers
def _cifar10_subset() -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(data_file("cifar10_test_subset", "cifar10_test_first846.npz"))
    x = torch.from_numpy(data["data"]).float().div_(255).view(-1, 3, 32, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(data["labels"]).long()


def _teacher_file(depth: int) -> Path:
    folder = DATA / "teachers"
    found = sorted(folder.glob(f"cifar10_resnet{depth}-*.th")) if folder.is_dir() else []
    if not found:
        pytest.skip(f"no cifar10_resnet{depth}-*.th under {folder} (set KDV_DATA to the shared data folder)")
    return found[0]


# correct predictions on the 846 images, from the shared data manifest: 91.73 / 93.03 / 93.74 / 93.26 %
@pytest.mark.parametrize("depth,correct", [(20, 776), (32, 787), (44, 793), (56, 789)])
def test_option_a_teachers_load_strictly_and_are_accurate(depth, correct):
    path = _teacher_file(depth)
    x, y = _cifar10_subset()
    model = load_weights(create_model(f"resnet{depth}_a"), path).eval()
    assert model_info(f"resnet{depth}_a")["mean"] == IMAGENET_MEAN
    model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        pred = model(x.contiguous(memory_format=torch.channels_last)).argmax(1)
    hits = int((pred == y).sum())
    assert hits / len(y) >= 0.91
    assert abs(hits - correct) <= 1, f"{hits} / {len(y)} correct, the manifest says {correct}"


def test_option_a_file_does_not_load_into_repdistiller_resnet():
    path = _teacher_file(20)
    with pytest.raises(CheckpointError) as info:
        load_weights(create_model("resnet20"), path)
    msg = str(info.value)
    assert "resnet20" in msg and "missing" in msg and "unexpected" in msg
    assert "linear.weight" in msg  # the option-A head is called `linear`, RepDistiller's `fc`


def test_lenet5_checkpoint_loads_strictly_and_classifies_mnist():
    path = data_file("teachers", "mnist_lenet5_classic.pth")
    model = load_weights(create_model("lenet5"), path).eval()
    images = data_file("MNIST", "raw", "t10k-images-idx3-ubyte.gz")
    labels = data_file("MNIST", "raw", "t10k-labels-idx1-ubyte.gz")
    n = 2000
    with gzip.open(images) as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16)[: n * 784].reshape(n, 28, 28)
    with gzip.open(labels) as fh:
        y = torch.from_numpy(np.frombuffer(fh.read(), np.uint8, offset=8)[:n].astype(np.int64))
    x = (torch.from_numpy(x.copy()).float().div(255) - 0.1307) / 0.3081
    x = F.pad(x, (2, 2, 2, 2))[:, None]  # normalised 28×28 zero-padded to 32×32 (models.md §10)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.98  # 98.6 % on these 2,000 images (98.81 % on all 10,000)


def test_lenet5_checkpoint_into_half_width_model_names_offending_keys():
    path = data_file("teachers", "mnist_lenet5_classic.pth")
    with pytest.raises(CheckpointError) as info:
        load_weights(create_model("lenet5_half"), path)
    msg = str(info.value)
    assert "lenet5_half" in msg and "shape mismatch" in msg
    assert "conv1.weight (6, 1, 5, 5) vs (3, 1, 5, 5)" in msg


def test_channel_options_give_cifar_families_one_channel_for_mnist():
    from kdvision.core.errors import ConfigError
    from kdvision.core.models import channel_options, check_model_fits

    assert channel_options("resnet8", "mnist") == {"in_channels": 1}
    assert channel_options("resnet20_a", "cifar10") == {}
    assert channel_options("lenet5", "mnist") == {}
    check_model_fits("resnet8", "mnist")  # its builder takes in_channels
    model = create_model("resnet8", num_classes=10, **channel_options("resnet8", "mnist"))
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="takes 3-channel input but mnist has 1"):
        check_model_fits("resnet18_imagenet", "mnist")
