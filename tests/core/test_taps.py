"""Final feature map (before global pooling) and pre-ReLU taps, for every classifier of the zoo.

Spec: ``reference/sdd.md`` §1.1 (where the last feature map is taken, C and H×W per family), ``reference/kdep.md``
§1.2 and §10 (pre-ReLU pooled features: B×2048 / B×512 / B×1280; ReLU of the pre-ReLU map equals the standard
network's map). The pre-ReLU references are computed here by hand from each family's block submodules, with names
written in this file (independently of the registry metadata the taps read).
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.errors import ConfigError
from kdvision.core.hooks import FeatureHook, TeacherTaps, head_name
from kdvision.core.models import create_model, list_models, model_info
from kdvision.core.taps import FeatureMapTap, PreReLUTap, feature_map_point, pre_relu_point

# LeNet flattens conv3's map into an MLP: no global pooling, functional ReLUs (documented in taps.py / lenet.py)
UNSUPPORTED = {"lenet5", "lenet5_half"}
SUPPORTED = [n for n in list_models() if n not in UNSUPPORTED]


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    """One eval-mode, frozen instance per model for the whole module (tests remove their hooks)."""
    torch.manual_seed(0)
    return create_model(name, num_classes=10).eval().requires_grad_(False)


def _input(name: str, batch: int = 2, size: int | None = None) -> torch.Tensor:
    c, h, _ = model_info(name)["input_size"]
    h = size or min(h, 64)  # ImageNet models at 64 px keep the CPU run fast (global pooling accepts it)
    return torch.randn(batch, c, h, h, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------ hand-written references
def _residual_ref(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Residual sum of a basic / bottleneck / ShuffleNetV1 block, from its submodules (before the final ReLU)."""
    if hasattr(blk, "shuffle1"):                                     # ShuffleNetV1 bottleneck (stride 1: add)
        out = blk.shuffle1(F.relu(blk.bn1(blk.conv1(x))))
        out = blk.bn3(blk.conv3(F.relu(blk.bn2(blk.conv2(out)))))
    elif hasattr(blk, "conv3"):                                      # torchvision Bottleneck
        out = F.relu(blk.bn1(blk.conv1(x)))
        out = F.relu(blk.bn2(blk.conv2(out)))
        out = blk.bn3(blk.conv3(out))
    else:                                                            # BasicBlock (all CIFAR ResNets, torchvision)
        out = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(x)))))
    shortcut = getattr(blk, "shortcut", None) or getattr(blk, "downsample", None)
    return out + (x if shortcut is None else shortcut(x))


def _reference_point(model: nn.Module, family: str) -> tuple[str, object]:
    """(module whose *input* x is recorded, function x ↦ the pre-ReLU final map) for each family."""
    if family in ("cifar_resnet", "torchvision_resnet"):
        blk = model.layer4[-1]
        return f"layer4.{len(model.layer4) - 1}", lambda x: _residual_ref(blk, x)
    if family == "repdistiller_shufflenet" and hasattr(model, "conv2"):   # ShuffleNetV2: F.relu(bn2(conv2(·)))
        return "conv2", lambda x: model.bn2(model.conv2(x))
    if family in ("cifar_resnet_optiona", "repdistiller_resnet", "repdistiller_shufflenet"):
        blk = model.layer3[-1]
        return f"layer3.{len(model.layer3) - 1}", lambda x: _residual_ref(blk, x)
    if family == "lenet_gap":                                        # relu(conv3(·)), then the global pool
        return "conv3", lambda x: model.conv3(x)
    if family == "wrn":                                              # self.relu(self.bn1(·)), in place
        return "bn1", lambda x: model.bn1(x)
    if family == "vgg_bn":                                           # F.relu(block4(·))
        return "block4", lambda x: model.block4(x)
    if family == "repdistiller_mobilenetv2":                         # conv2 = [Conv 1×1, BN, ReLU(inplace)]
        return "conv2", lambda x: model.conv2[1](model.conv2[0](x))
    if family == "torchvision_mobilenetv2":                          # features.18 = [Conv, BN, ReLU6(inplace)]
        return "features.18", lambda x: model.features[18][1](model.features[18][0](x))
    if family == "mobilenet_v1":                                     # model.13 = [dw, BN, ReLU, pw, BN, ReLU]
        last = model.model[13]
        return "model.13", lambda x: last[4](last[3](F.relu(last[1](last[0](x)))))
    raise AssertionError(f"no reference for family {family}")


# ------------------------------------------------------------------------------------------ final feature map
@pytest.mark.parametrize("name", SUPPORTED)
def test_feature_map_pools_to_the_penultimate_feature_and_the_logits(name):
    model = _model(name)
    x = _input(name)
    with torch.no_grad():
        plain = model(x)
    tap, taps = FeatureMapTap(model), TeacherTaps(model, blocks=False)
    try:
        with torch.no_grad(), tap.active(), taps.active():
            logits = model(x)
        assert torch.equal(logits, plain)                                   # the tap leaves the outputs untouched
        fmap = tap.feature_map
        assert fmap.dim() == 4 and fmap.shape[0] == 2 and fmap.shape[2] * fmap.shape[3] > 1
        pooled = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        torch.testing.assert_close(pooled, taps.penultimate, rtol=0, atol=1e-6)  # every zoo model average-pools
        assert torch.equal(tap.pooled, pooled)
        head = model.get_submodule(head_name(model))
        assert isinstance(head, nn.Linear) and head.in_features == fmap.shape[1]
        torch.testing.assert_close(head(pooled), plain, rtol=1e-5, atol=1e-5)  # the single-Linear head
    finally:
        tap.remove()
        taps.remove()


@pytest.mark.parametrize("name, channels, hw", [                          # sdd.md §1.1, 32×32 inputs
    ("resnet8x4", 256, 8), ("resnet32x4", 256, 8), ("resnet56", 64, 8), ("wrn40_2", 128, 8), ("wrn16_1", 64, 8),
    ("vgg8", 512, 4), ("vgg13", 512, 4), ("resnet18", 512, 4), ("shufflenetv1", 960, 4), ("shufflenetv2", 1024, 4),
    ("mobilenetv2", 1280, 2),
])
def test_feature_map_shapes_follow_the_sdd_table(name, channels, hw):
    model = _model(name)
    tap = FeatureMapTap(model)
    try:
        with torch.no_grad(), tap.active():
            model(_input(name, batch=1, size=32))
        assert tuple(tap.feature_map.shape) == (1, channels, hw, hw)
    finally:
        tap.remove()


def test_imagenet_resnet18_map_is_7x7_at_224px():
    model = _model("resnet18_imagenet")
    tap = FeatureMapTap(model)
    try:
        with torch.no_grad(), tap.active():
            model(_input("resnet18_imagenet", batch=1, size=224))
        assert tuple(tap.feature_map.shape) == (1, 512, 7, 7)
    finally:
        tap.remove()


# ---------------------------------------------------------------------------------------------------- pre-ReLU
@pytest.mark.parametrize("name", SUPPORTED)
def test_pre_relu_tap_equals_the_hand_computed_block_and_activates_to_the_feature_map(name):
    model = _model(name)
    x = _input(name)
    with torch.no_grad():
        plain = model(x)
    ref_module, ref_fn = _reference_point(model, model_info(name)["family"])
    pre, fmap, block_in = PreReLUTap(model), FeatureMapTap(model), FeatureHook(model, [ref_module], "input")
    try:
        with torch.no_grad(), pre.active(), fmap.active(), block_in.active():
            logits = model(x)
        assert torch.equal(logits, plain)                                    # outputs untouched (in-place ReLUs)
        tapped = pre.feature_map
        with torch.no_grad():
            reference = ref_fn(block_in.features[0])
        torch.testing.assert_close(tapped, reference, rtol=1e-5, atol=1e-5)
        assert (tapped < 0).any()                                            # really before the ReLU
        act = F.relu6 if name == "mobilenetv2_imagenet" else F.relu          # KDEP: MobileNetV2 ends in ReLU6
        assert pre.activation == ("relu6" if name == "mobilenetv2_imagenet" else "relu")
        assert torch.equal(act(tapped), fmap.feature_map)                    # relu(tap) = the post-ReLU map
        assert torch.equal(pre.activated, fmap.feature_map)
        torch.testing.assert_close(pre.pooled, F.adaptive_avg_pool2d(tapped, 1).flatten(1))
    finally:
        pre.remove()
        fmap.remove()
        block_in.remove()


@pytest.mark.parametrize("name, dim", [("resnet50_imagenet", 2048), ("resnet18_imagenet", 512),
                                       ("mobilenetv2_imagenet", 1280)])
def test_kdep_pooled_pre_relu_feature_sizes(name, dim):
    model = _model(name)
    tap = PreReLUTap(model)
    try:
        with torch.no_grad(), tap.active():
            model(_input(name, batch=2, size=32))
        assert tap.pooled.shape == (2, dim)
    finally:
        tap.remove()


def test_pre_relu_tap_trains_a_student_through_in_place_relus():
    """KDEP's student loss is on the pre-ReLU pooled feature: gradients reach every stage of the network."""
    torch.manual_seed(0)
    student = create_model("resnet18_imagenet", num_classes=10).train()
    tap = PreReLUTap(student)
    with tap.active():
        student(_input("resnet18_imagenet", batch=2, size=32))
    loss = tap.pooled.square().mean()
    loss.backward()
    for name in ("conv1", "layer1.0.conv1", "layer4.1.conv2", "layer4.1.bn2"):
        grad = student.get_submodule(name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert student.fc.weight.grad is None                                   # the head is not on the path
    tap.remove()


# ------------------------------------------------------------------------------------- inactivity, errors, API
def test_inactive_taps_record_nothing_and_keep_the_last_value():
    model = _model("resnet20")
    pre, fmap = PreReLUTap(model), FeatureMapTap(model)
    x = _input("resnet20")
    try:
        with torch.no_grad():
            model(x)
        assert pre._value is None and all(p is None for p in pre._parts)
        with pytest.raises(RuntimeError, match="inside `with tap.active"):
            pre.feature_map
        with pytest.raises(RuntimeError, match="nothing recorded"):
            fmap.feature_map
        with torch.no_grad(), pre.active(), fmap.active():
            model(x)
        kept_pre, kept_map = pre.feature_map, fmap.feature_map
        with torch.no_grad():
            model(torch.zeros_like(x))                                      # inactive: values stay
        assert pre.feature_map is kept_pre and fmap.feature_map is kept_map
        pre.clear()
        with pytest.raises(RuntimeError):
            pre.feature_map
    finally:
        pre.remove()
        fmap.remove()
    assert not model._forward_hooks and not model.avgpool._forward_hooks   # remove() detaches everything
    assert not model.layer3[-1].bn2._forward_hooks


def test_tap_points_from_metadata_and_errors():
    assert feature_map_point("resnet18_imagenet") == ("avgpool", "input")
    assert feature_map_point("mobilenetv2_imagenet") == ("features", "output")
    assert feature_map_point("vgg8") == ("pool4", "input")
    assert pre_relu_point("resnet18_imagenet") == (("layer4.1.bn2", "layer4.0"), "relu")
    assert pre_relu_point("resnet50_imagenet") == (("layer4.2.bn3", "layer4.1"), "relu")
    assert pre_relu_point("resnet8") == (("layer3.0.bn2", "layer3.0.downsample"), "relu")
    assert pre_relu_point("mobilenetv2_imagenet") == (("features.18.1",), "relu6")
    for name in UNSUPPORTED:
        with pytest.raises(ConfigError, match=f"model {name} has no final feature map"):
            FeatureMapTap(_model(name))
        with pytest.raises(ConfigError, match=f"model {name} declares no pre-ReLU"):
            PreReLUTap(_model(name))
    model = _model("resnet20")
    with pytest.raises(ConfigError, match="has no module named 'layer9'"):
        PreReLUTap(model, ["layer9"])
    with pytest.raises(ConfigError, match="unknown final activation 'gelu'"):
        PreReLUTap(model, activation="gelu")
    with pytest.raises(ConfigError, match="repeat"):
        PreReLUTap(model, ["bn1", "bn1"])
    with pytest.raises(ConfigError, match="'input' or 'output'"):
        FeatureMapTap(model, "avgpool", kind="input_mean")


class _Plain(nn.Module):
    """An unregistered net: conv → BN → (in-place ReLU) → global pool → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_unregistered_model_with_explicit_names_and_wrappers():
    torch.manual_seed(0)
    net = _Plain().eval()
    x = torch.randn(2, 3, 6, 6)
    fmap = FeatureMapTap(net)                                               # derived: the input of the global pool
    assert fmap.name == "pool" and fmap.kind == "input"
    pre = PreReLUTap(net, "bn")
    with pytest.raises(ConfigError, match="no registry name"):
        PreReLUTap(net)
    with torch.no_grad(), fmap.active(), pre.active():
        net(x)
    expected = net.bn(net.conv(x))
    torch.testing.assert_close(pre.feature_map, expected)                   # copied before the in-place ReLU
    assert torch.equal(F.relu(pre.feature_map), fmap.feature_map)
    fmap.remove()
    pre.remove()
    wrapped = nn.DataParallel(_model("wrn16_1"))                             # (D)DP wrappers are looked through
    tap = PreReLUTap(wrapped)
    try:
        with torch.no_grad(), tap.active():
            wrapped(_input("wrn16_1"))
        assert tap.feature_map.shape == (2, 64, 8, 8)
    finally:
        tap.remove()


class _InPlaceTerm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        a.mul_(2)                                                           # the first term changes before b runs
        return a + self.b(x)


def test_a_term_modified_in_place_before_the_sum_is_an_error():
    net = _InPlaceTerm()
    tap = PreReLUTap(net, ["a", "b"])
    with torch.no_grad(), tap.active(), pytest.raises(RuntimeError, match="modified in place"):
        net(torch.randn(1, 3, 4, 4))
    tap.remove()
