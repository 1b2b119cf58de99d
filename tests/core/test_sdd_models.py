"""The zoo SDD's tables need: RepDistiller-format checkpoints load strictly, counts match the spec, CUB-200 variants.

Spec: ``reference/models.md`` §3.1–3.3, §4.1 (RepDistiller / mdistiller CIFAR-100 zoo: key layout, parameter counts),
§4.2 (CUB-200 variants), §4.3 (ImageNet MobileNet-V1, 164 tensors); ``reference/sdd.md`` §1.1 (feature-map sizes),
§5.3 (CUB recipe), §7 (checkpoint container ``{'epoch', 'model', 'accuracy', 'optimizer'}``).

The expected key lists are written here from the spec's layout rules (independently of the model classes): a
checkpoint with exactly those keys and shapes must load with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import pytest

from kdvision.core.checkpoint import load_weights
from kdvision.core.errors import CheckpointError, ConfigError
from kdvision.core.models import MODELS, create_model, model_info
from kdvision.core.models.cub200 import CUB200_INPUT_SIZE, cub200_models, to_cub200
from kdvision.core.models.mobilenetv1 import SDD_IMAGENET_MODELS
from kdvision.core.taps import FeatureMapTap

Shapes = dict[str, list[int]]


# ------------------------------------------------------------------------------ expected keys, from the spec rules
def bn(prefix: str, c: int) -> Shapes:
    return {f"{prefix}.weight": [c], f"{prefix}.bias": [c], f"{prefix}.running_mean": [c],
            f"{prefix}.running_var": [c], f"{prefix}.num_batches_tracked": []}


def repdistiller_resnet_keys(depth: int, widths: tuple[int, int, int, int], k: int, stem: int = 3) -> Shapes:
    """§4.1: conv1/bn1 stem, layer{1,2,3}.i.{conv1,bn1,conv2,bn2}, downsample.{0,1} where the shape changes, fc."""
    n = (depth - 2) // 6
    keys = {"conv1.weight": [widths[0], 3, stem, stem], **bn("bn1", widths[0])}
    inp = widths[0]
    for stage, w in enumerate(widths[1:], 1):
        for i in range(n):
            p, cin = f"layer{stage}.{i}", inp if i == 0 else w
            keys |= {f"{p}.conv1.weight": [w, cin, 3, 3], **bn(f"{p}.bn1", w),
                     f"{p}.conv2.weight": [w, w, 3, 3], **bn(f"{p}.bn2", w)}
            if i == 0 and (cin != w or stage > 1):
                keys |= {f"{p}.downsample.0.weight": [w, cin, 1, 1], **bn(f"{p}.downsample.1", w)}
        inp = w
    return keys | {"fc.weight": [k, widths[3]], "fc.bias": [k]}


def wrn_keys(depth: int, widen: int, k: int) -> Shapes:
    """§3.1: pre-activation blocks bn1, conv1, bn2, conv2 (+ convShortcut where the width changes), final bn1, fc."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    keys: Shapes = {"conv1.weight": [16, 3, 3, 3]}
    for g in range(1, 4):
        for i in range(n):
            p, cin, w = f"block{g}.layer.{i}", widths[g - 1] if i == 0 else widths[g], widths[g]
            keys |= {**bn(f"{p}.bn1", cin), f"{p}.conv1.weight": [w, cin, 3, 3], **bn(f"{p}.bn2", w),
                     f"{p}.conv2.weight": [w, w, 3, 3]}
            if cin != w:
                keys[f"{p}.convShortcut.weight"] = [w, cin, 1, 1]
    return keys | bn("bn1", widths[3]) | {"fc.weight": [k, widths[3]], "fc.bias": [k]}


def vgg_keys(convs: tuple[int, ...], k: int) -> Shapes:
    """§3.3: blockX.{0,1}, {3,4}, ... = [Conv3×3 with bias, BN] per conv; classifier Linear(512 → K)."""
    widths, keys, cin = (64, 128, 256, 512, 512), {}, 3
    for b, (w, count) in enumerate(zip(widths, convs)):
        for j in range(count):
            keys |= {f"block{b}.{3 * j}.weight": [w, cin, 3, 3], f"block{b}.{3 * j}.bias": [w],
                     **bn(f"block{b}.{3 * j + 1}", w)}
            cin = w
    return keys | {"classifier.weight": [k, 512], "classifier.bias": [k]}


def shufflev1_keys(k: int, stem: int = 1) -> Shapes:
    """§4.1 ShuffleV1 (groups 3, stages 240/480/960, blocks 4/8/4): bottleneck width out/4, grouped 1×1 convs (the
    first ungrouped on the 24-channel stem), depthwise 3×3; a stride-2 block makes out − in channels (the pooled
    input is concatenated)."""
    g, keys, inp = 3, {"conv1.weight": [24, 3, stem, stem], **bn("bn1", 24)}, 24
    for stage, (out, blocks) in enumerate(zip((240, 480, 960), (4, 8, 4)), 1):
        for i in range(blocks):
            new = out - inp if i == 0 else out
            mid, g1, p = new // 4, 1 if inp == 24 else g, f"layer{stage}.{i}"
            keys |= {f"{p}.conv1.weight": [mid, inp // g1, 1, 1], **bn(f"{p}.bn1", mid),
                     f"{p}.conv2.weight": [mid, 1, 3, 3], **bn(f"{p}.bn2", mid),
                     f"{p}.conv3.weight": [new, mid // g, 1, 1], **bn(f"{p}.bn3", new)}
            inp = out
    return keys | {"linear.weight": [k, 960], "linear.bias": [k]}


def shufflev2_keys(k: int) -> Shapes:
    """§4.1 ShuffleV2 (116/232/464, blocks 3/7/3): per stage a down-sampling block conv1..5 / bn1..5, then basic
    blocks conv1..3 / bn1..3 on half the channels; conv2/bn2 464 → 1024; linear."""
    keys, inp = {"conv1.weight": [24, 3, 1, 1], **bn("bn1", 24)}, 24
    for stage, (out, blocks) in enumerate(zip((116, 232, 464), (3, 7, 3)), 1):
        mid, p = out // 2, f"layer{stage}.0"
        keys |= {f"{p}.conv1.weight": [inp, 1, 3, 3], **bn(f"{p}.bn1", inp),
                 f"{p}.conv2.weight": [mid, inp, 1, 1], **bn(f"{p}.bn2", mid),
                 f"{p}.conv3.weight": [mid, inp, 1, 1], **bn(f"{p}.bn3", mid),
                 f"{p}.conv4.weight": [mid, 1, 3, 3], **bn(f"{p}.bn4", mid),
                 f"{p}.conv5.weight": [mid, mid, 1, 1], **bn(f"{p}.bn5", mid)}
        for i in range(1, blocks + 1):
            p = f"layer{stage}.{i}"
            keys |= {f"{p}.conv1.weight": [mid, mid, 1, 1], **bn(f"{p}.bn1", mid),
                     f"{p}.conv2.weight": [mid, 1, 3, 3], **bn(f"{p}.bn2", mid),
                     f"{p}.conv3.weight": [mid, mid, 1, 1], **bn(f"{p}.bn3", mid)}
        inp = out
    return keys | {"conv2.weight": [1024, 464, 1, 1], **bn("bn2", 1024), "linear.weight": [k, 1024],
                   "linear.bias": [k]}


def mobilenetv2_keys(k: int, stem: int = 3) -> Shapes:
    """§4.1 MobileNetV2 = mobile_half (width 0.5, expansion 6): conv1.{0,1}, blocks.i.j.conv.{0,1,3,4,6,7},
    conv2.{0,1} (1×1 → 1280), classifier.0."""
    keys, inp = {"conv1.0.weight": [16, 3, stem, stem], **bn("conv1.1", 16)}, 16
    settings = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    for i, (t, c, n) in enumerate(settings):
        out = c // 2
        for j in range(n):
            hidden, p = inp * t, f"blocks.{i}.{j}.conv"
            keys |= {f"{p}.0.weight": [hidden, inp, 1, 1], **bn(f"{p}.1", hidden),
                     f"{p}.3.weight": [hidden, 1, 3, 3], **bn(f"{p}.4", hidden),
                     f"{p}.6.weight": [out, hidden, 1, 1], **bn(f"{p}.7", out)}
            inp = out
    return keys | {"conv2.0.weight": [1280, inp, 1, 1], **bn("conv2.1", 1280), "classifier.0.weight": [k, 1280],
                   "classifier.0.bias": [k]}


def resnetv2_keys(blocks: tuple[int, int, int, int], bottleneck: bool, k: int, stem: int = 3) -> Shapes:
    """§3.2 / §4.1 RepDistiller ``resnetv2``: conv1 (stride 1), bn1, layer1..4 (conv1..2 or conv1..3 with expansion 4),
    shortcut.{0,1} where the shape changes, linear."""
    e = 4 if bottleneck else 1
    keys, inp = {"conv1.weight": [64, 3, stem, stem], **bn("bn1", 64)}, 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), 1):
        for i in range(n):
            p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                keys |= {f"{p}.conv1.weight": [planes, inp, 1, 1], **bn(f"{p}.bn1", planes),
                         f"{p}.conv2.weight": [planes, planes, 3, 3], **bn(f"{p}.bn2", planes),
                         f"{p}.conv3.weight": [planes * e, planes, 1, 1], **bn(f"{p}.bn3", planes * e)}
            else:
                keys |= {f"{p}.conv1.weight": [planes, inp, 3, 3], **bn(f"{p}.bn1", planes),
                         f"{p}.conv2.weight": [planes, planes, 3, 3], **bn(f"{p}.bn2", planes)}
            if stride != 1 or inp != planes * e:
                keys |= {f"{p}.shortcut.0.weight": [planes * e, inp, 1, 1], **bn(f"{p}.shortcut.1", planes * e)}
            inp = planes * e
    return keys | {"linear.weight": [k, 512 * e], "linear.bias": [k]}


MV1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_v1_keys(k: int = 1000) -> Shapes:
    """§4.3: model.0.{0,1} (3×3 conv, BN), model.{1..13}.{0,1,3,4} (depthwise conv, BN, pointwise conv, BN), fc."""
    keys, inp = {"model.0.0.weight": [32, 3, 3, 3], **bn("model.0.1", 32)}, 32
    for i, (out, _) in enumerate(MV1_BLOCKS, 1):
        keys |= {f"model.{i}.0.weight": [inp, 1, 3, 3], **bn(f"model.{i}.1", inp),
                 f"model.{i}.3.weight": [out, inp, 1, 1], **bn(f"model.{i}.4", out)}
        inp = out
    return keys | {"fc.weight": [k, 1024], "fc.bias": [k]}


# (SDD / RepDistiller name, class count, expected keys, tensors)
ZOO = [
    ("resnet32x4", 100, lambda: repdistiller_resnet_keys(32, (32, 64, 128, 256), 100), 206),
    ("resnet8x4", 100, lambda: repdistiller_resnet_keys(8, (32, 64, 128, 256), 100), 62),
    ("resnet56", 100, lambda: repdistiller_resnet_keys(56, (16, 16, 32, 64), 100), 344),
    ("wrn_40_2", 100, lambda: wrn_keys(40, 2, 100), 227),
    ("vgg13", 100, lambda: vgg_keys((2, 2, 2, 2, 2), 100), 72),
    ("vgg8", 100, lambda: vgg_keys((1, 1, 1, 1, 1), 100), 37),
    ("ShuffleV1", 100, lambda: shufflev1_keys(100), 296),
    ("ShuffleV2", 100, lambda: shufflev2_keys(100), 338),
    ("MobileNetV2", 100, lambda: mobilenetv2_keys(100), 320),
    ("ResNet18", 100, lambda: resnetv2_keys((2, 2, 2, 2), False, 100), 122),
    ("ResNet50", 100, lambda: resnetv2_keys((3, 4, 6, 3), True, 100), 320),
    ("mobilenet_v1", 1000, mobilenet_v1_keys, 164),
    ("sdd_imagenet_mobilenetv2", 1000, mobilenet_v1_keys, 164),
]


def fake_state_dict(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
            for k, s in shapes.items()}


def save_repdistiller(path, sd: dict[str, torch.Tensor]):
    """The container of RepDistiller's ``<arch>_vanilla/ckpt_epoch_240.pth`` / SDD's CUB teachers (§7)."""
    torch.save({"epoch": 240, "model": sd, "accuracy": 79.42,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0]}]}}, path)
    return path


@pytest.mark.parametrize("name,k,keys,tensors", ZOO, ids=[z[0] for z in ZOO])
def test_repdistiller_checkpoint_with_the_published_keys_loads_strictly(name, k, keys, tensors, tmp_path):
    want = keys()
    assert len(want) == tensors
    model = create_model(name, num_classes=k)
    got = {key: list(v.shape) for key, v in model.state_dict().items()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {key: s for key, s in got.items() if want[key] != s} == {}
    sd = fake_state_dict(want)
    load_weights(model, save_repdistiller(tmp_path / "ckpt_epoch_240.pth", sd))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in sd.items())
    # ... and strictly into the scale-decoupled model (SDD's *_sdd variant: the same keys, no parameter of its own)
    from kdvision.core.models.spp import ScaleDecoupled

    sdd = ScaleDecoupled(create_model(name, num_classes=k), (1, 2, 4))
    load_weights(sdd, tmp_path / "ckpt_epoch_240.pth")
    assert all(torch.equal(sdd.state_dict()[key], value) for key, value in sd.items())


def test_published_keys_by_hand():
    sd = {k: tuple(v.shape) for k, v in create_model("resnet32x4", num_classes=100).state_dict().items()}
    assert sd["conv1.weight"] == (32, 3, 3, 3) and sd["layer1.0.downsample.0.weight"] == (64, 32, 1, 1)
    assert sd["layer3.4.conv2.weight"] == (256, 256, 3, 3) and "layer3.5.conv1.weight" not in sd
    assert sd["fc.weight"] == (100, 256)
    sd = {k: tuple(v.shape) for k, v in create_model("resnet8x4", num_classes=100).state_dict().items()}
    assert sd["layer2.0.downsample.1.running_mean"] == (128,) and "layer1.1.conv1.weight" not in sd
    sd = {k: tuple(v.shape) for k, v in create_model("ResNet50", num_classes=100).state_dict().items()}
    assert sd["conv1.weight"] == (64, 3, 3, 3)
    assert sd["layer1.0.shortcut.0.weight"] == (256, 64, 1, 1) and sd["layer1.0.shortcut.1.weight"] == (256,)
    assert "layer1.1.shortcut.0.weight" not in sd
    assert sd["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # the stride sits on the 3×3 conv
    assert sd["layer3.5.bn3.running_var"] == (1024,) and "layer3.6.conv1.weight" not in sd
    assert sd["layer4.2.conv3.weight"] == (2048, 512, 1, 1) and sd["linear.weight"] == (100, 2048)
    sd = {k: tuple(v.shape) for k, v in create_model("mobilenet_v1").state_dict().items()}
    assert sd["model.0.0.weight"] == (32, 3, 3, 3) and sd["model.0.1.running_mean"] == (32,)
    assert sd["model.1.0.weight"] == (32, 1, 3, 3) and sd["model.1.3.weight"] == (64, 32, 1, 1)
    assert sd["model.13.3.weight"] == (1024, 1024, 1, 1) and sd["fc.weight"] == (1000, 1024)
    assert not any(k.startswith("model.14") for k in sd) and not any(k.endswith(".2.weight") for k in sd)
    sd = {k: tuple(v.shape) for k, v in create_model("vgg13", num_classes=100).state_dict().items()}
    assert sd["block0.0.weight"] == (64, 3, 3, 3) and sd["block0.3.bias"] == (64,)
    assert sd["block4.4.running_var"] == (512,) and sd["classifier.weight"] == (100, 512)


def test_wrong_architecture_checkpoint_names_the_offending_keys(tmp_path):
    path = save_repdistiller(tmp_path / "ckpt.pth", fake_state_dict(resnetv2_keys((3, 4, 6, 3), True, 100)))
    with pytest.raises(CheckpointError) as info:
        load_weights(create_model("ResNet18", num_classes=100), path)
    msg = str(info.value)
    assert "resnet18" in msg and "unexpected" in msg and "layer1.0.conv3.weight" in msg


# (name, class count, parameters in millions, decimals): models.md §3.1, §4.1; mobilenet_v1 (D) below
SPEC_PARAMS = [
    ("resnet32x4", 100, 7.43, 2), ("resnet8x4", 100, 1.23, 2), ("wrn_40_2", 100, 2.26, 2), ("vgg13", 100, 9.46, 2),
    ("vgg8", 100, 3.97, 2), ("ShuffleV1", 100, 0.95, 2), ("ShuffleV2", 100, 1.36, 2), ("MobileNetV2", 100, 0.81, 2),
    ("ResNet18", 100, 11.22, 2), ("ResNet50", 100, 23.71, 2), ("resnet56", 100, 0.86, 2),
]


@pytest.mark.parametrize("name,k,mparams,decimals", SPEC_PARAMS, ids=[s[0] for s in SPEC_PARAMS])
def test_parameter_counts_match_the_spec(name, k, mparams, decimals):
    n = sum(p.numel() for p in create_model(name, num_classes=k).parameters())
    assert round(n / 1e6, decimals) == pytest.approx(mparams, abs=1e-9)


def test_mobilenet_v1_parameter_count_by_formula():
    # stem conv + BN; per block depthwise 3×3 + BN + pointwise + BN; fc
    n, inp = 3 * 32 * 9 + 2 * 32, 32
    for out, _ in MV1_BLOCKS:
        n += inp * 9 + 2 * inp + inp * out + 2 * out
        inp = out
    n += 1024 * 1000 + 1000
    assert n == 4_231_976
    assert sum(p.numel() for p in create_model("mobilenet_v1").parameters()) == n


# ---------------------------------------------------------------------------------------------- names and aliases
@pytest.mark.parametrize("alias,name", [
    ("ResNet18", "resnet18"), ("ResNet50", "resnet50"), ("resnet50_cifar", "resnet50"),
    ("MobileNetV1", "mobilenet_v1"), ("sdd_imagenet_mobilenetv2", "mobilenet_v1"),
    ("MobileNetV2", "mobilenetv2"),  # SDD's CIFAR name; its ImageNet "MobileNetV2" goes through SDD_IMAGENET_MODELS
])
def test_aliases(alias, name):
    assert MODELS.resolve(alias) == name
    assert create_model(alias).kd_name == name


def test_sdd_imagenet_names_map_to_imagenet_models():
    assert SDD_IMAGENET_MODELS["MobileNetV2"] == SDD_IMAGENET_MODELS["MobileNetV2_SDD"] == "mobilenet_v1"
    assert SDD_IMAGENET_MODELS["ResNet50"] == "resnet50_imagenet"
    for ours in SDD_IMAGENET_MODELS.values():
        info = model_info(ours)
        assert info["input_size"] == (3, 224, 224) and info["mean"] == (0.485, 0.456, 0.406)


def test_metadata_of_the_new_entries():
    info = model_info("ResNet50")
    assert info["family"] == "cifar_resnet" and info["input_size"] == (3, 32, 32)
    assert info["feature_map"] == ("avgpool", "input") and info["pre_relu"] == ("layer4.2.bn3", "layer4.2.shortcut")
    info = model_info("mobilenet_v1")
    assert info["family"] == "mobilenet_v1" and info["std"] == (0.229, 0.224, 0.225)
    assert info["pre_relu"] == ("model.13.4",)


# ------------------------------------------------------------------------------------------- forward and tap points
def _forward_with_map(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tap = FeatureMapTap(model)
    try:
        with torch.no_grad(), tap.active():
            logits = model(x)
        return logits, tap.feature_map
    finally:
        tap.remove()


def test_resnet50_cifar_map_is_4x4_at_32px():  # sdd.md §1.1
    logits, fmap = _forward_with_map(create_model("ResNet50", num_classes=100).eval(), torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and fmap.shape == (2, 2048, 4, 4)


def test_mobilenet_v1_at_224px_maps_and_blocks():
    model = create_model("mobilenet_v1").eval()
    sizes = []
    hooks = [model.get_submodule(b).register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
             for b in model_info("mobilenet_v1")["blocks"]]
    logits, fmap = _forward_with_map(model, torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert logits.shape == (1, 1000) and fmap.shape == (1, 1024, 7, 7)  # sdd.md §1.1: last stage 7×7
    assert sizes == [(128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    # the original pools with AvgPool2d(7) at 224 px: the same as our global pool
    torch.testing.assert_close(model.fc(nn.AvgPool2d(7)(fmap).flatten(1)), logits)


# ------------------------------------------------------------------------------------------------- CUB-200 variants
# (name, map C, map H=W at 224 px, the original's pool, stem key, stem shape): models.md §4.2, sdd.md §5.3
CUB = [
    ("resnet32x4", 256, 28, nn.AvgPool2d(28), "conv1.weight", (32, 3, 7, 7)),
    ("resnet8x4", 256, 28, nn.AvgPool2d(28), "conv1.weight", (32, 3, 7, 7)),
    ("ResNet50", 2048, 14, nn.AdaptiveAvgPool2d(1), "conv1.weight", (64, 3, 7, 7)),
    ("ShuffleV1", 960, 14, nn.AvgPool2d(14), "conv1.weight", (24, 3, 7, 7)),
    ("MobileNetV2", 1280, 7, nn.AvgPool2d(8, ceil_mode=True), "conv1.0.weight", (16, 3, 7, 7)),
    ("vgg13", 512, 28, nn.AdaptiveAvgPool2d(1), "block0.0.weight", (64, 3, 3, 3)),
    ("vgg8", 512, 28, nn.AdaptiveAvgPool2d(1), "block0.0.weight", (64, 3, 3, 3)),
]


@pytest.mark.parametrize("name,channels,hw,pool,stem,shape", CUB, ids=[c[0] for c in CUB])
def test_cub_variant_at_224px(name, channels, hw, pool, stem, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=200, cub=True).eval()
    assert model.kd_name == MODELS.resolve(name) and model.kd_variant == "cub200"
    assert tuple(model.state_dict()[stem].shape) == shape
    logits, fmap = _forward_with_map(model, torch.randn(2, *CUB200_INPUT_SIZE))
    assert logits.shape == (2, 200) and fmap.shape == (2, channels, hw, hw)
    head = model.get_submodule({"ShuffleV1": "linear", "ResNet50": "linear", "MobileNetV2": "classifier.0"}.get(
        name, "classifier" if name.startswith("vgg") else "fc"))
    # the original's fixed pool over the 224-px map = the zoo's global pool (summation order aside)
    torch.testing.assert_close(head(pool(fmap).flatten(1)), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet32x4", "ResNet50", "ShuffleV1", "MobileNetV2", "vgg13"])
def test_cub_variant_keeps_the_key_names_and_loads_a_cub_teacher(name, tmp_path):
    cifar = {k: tuple(v.shape) for k, v in create_model(name, num_classes=200).state_dict().items()}
    model = create_model(name, num_classes=200, cub=True)
    cub = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(cub) == list(cifar)                                        # same names, same order
    changed = sorted(k for k in cub if cub[k] != cifar[k])
    assert changed == ([] if name.startswith("vgg") else
                       ["conv1.0.weight"] if name == "MobileNetV2" else ["conv1.weight"])
    # SDD's save/cub200/<arch>_vanilla/<arch>_best.pth: {'model': state_dict}
    sd = {k: v.clone().normal_() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}_best.pth"
    torch.save({"model": sd}, path)
    load_weights(create_model(name, num_classes=200, cub=True), path)
    if changed:  # a CUB teacher is not a CIFAR one: the stem shape mismatch is named
        with pytest.raises(CheckpointError, match=rf"{changed[0]} \(\d+, 3, 7, 7\) vs \(\d+, 3, ([13]), \1\)"):
            load_weights(create_model(name, num_classes=200), path)


def test_cub_mobilenetv2_stem_is_conv7_bn_relu_maxpool():
    model = create_model("MobileNetV2", num_classes=200, cub=True)
    kinds = [type(m) for m in model.conv1]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    conv, pool = model.conv1[0], model.conv1[3]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3)) and pool.kernel_size == 2
    with torch.no_grad():
        assert model.conv1(torch.randn(1, 3, 224, 224)).shape == (1, 16, 56, 56)


def test_cub_variant_trains_through_the_new_stem():
    model = create_model("MobileNetV2", num_classes=200, cub=True).train()
    model(torch.randn(2, 3, 224, 224)).logsumexp(1).mean().backward()
    assert model.conv1[0].weight.grad is not None and model.conv1[0].weight.grad.abs().sum() > 0


def test_cub_refusals_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"ShuffleV2 has no CUB-200 variant: .*avg_pool2d") as info:
        create_model("ShuffleV2", num_classes=200, cub=True)
    assert "\n" not in str(info.value) and "resnet32x4" in str(info.value)
    with pytest.raises(ConfigError, match=r"wrn_40_2 has no CUB-200 variant: SDD defines no"):
        create_model("wrn_40_2", num_classes=200, cub=True)
    with pytest.raises(ConfigError, match=r"unknown model 'resnet32x5'"):
        create_model("resnet32x5", num_classes=200, cub=True)
    with pytest.raises(ConfigError, match="no registry name"):
        to_cub200(nn.Conv2d(3, 3, 1))
    assert cub200_models() == sorted(["mobilenetv2", "resnet32x4", "resnet50", "resnet8x4", "shufflenetv1",
                                      "vgg11", "vgg13", "vgg16", "vgg19", "vgg8"])


def test_cub_false_is_the_plain_model():
    model = create_model("resnet32x4", num_classes=100, cub=False)
    assert model.conv1.kernel_size == (3, 3) and not hasattr(model, "kd_variant")
