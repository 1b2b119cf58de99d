"""Segmentation models: registry smoke tests, DFAD key layouts from the spec, and forward equivalence with a
functional reference written here from ``reference/models.md`` §5.4–5.5 (not from the model code)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from kdvision.core.checkpoint import load_state_dict, load_weights
from kdvision.core.errors import CheckpointError, ConfigError
from kdvision.core.models import create_model, list_models, model_info

DFAD_MODELS = ("deeplabv3_resnet50", "deeplabv3_mobilenetv2")
SEG_MODELS = list_models(task="segmentation")


# ---------------------------------------------------------------------------------------- expected keys (the spec)

def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def _head_keys(cin: int, k: int) -> dict[str, tuple]:
    keys = {"classifier.0.convs.0.0.weight": (256, cin, 1, 1), **_bn("classifier.0.convs.0.1", 256)}
    for i in (1, 2, 3):
        keys |= {f"classifier.0.convs.{i}.0.weight": (256, cin, 3, 3), **_bn(f"classifier.0.convs.{i}.1", 256)}
    keys |= {"classifier.0.convs.4.1.weight": (256, cin, 1, 1), **_bn("classifier.0.convs.4.2", 256)}
    keys |= {"classifier.0.project.0.weight": (256, 1280, 1, 1), **_bn("classifier.0.project.1", 256)}
    keys |= {"classifier.1.weight": (256, 256, 3, 3), **_bn("classifier.2", 256)}
    return keys | {"classifier.4.weight": (k, 256, 1, 1), "classifier.4.bias": (k,)}


RESNET50_LAYERS = ((64, 3), (128, 4), (256, 6), (512, 3))  # (planes, blocks); bottleneck expansion 4


def dfad_resnet50_keys(k: int) -> dict[str, tuple]:
    keys = {"backbone.conv1.weight": (64, 3, 7, 7), **_bn("backbone.bn1", 64)}
    cin = 64
    for li, (planes, blocks) in enumerate(RESNET50_LAYERS, 1):
        for b in range(blocks):
            p = f"backbone.layer{li}.{b}"
            keys |= {f"{p}.conv1.weight": (planes, cin, 1, 1), **_bn(f"{p}.bn1", planes),
                     f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes),
                     f"{p}.conv3.weight": (4 * planes, planes, 1, 1), **_bn(f"{p}.bn3", 4 * planes)}
            if b == 0:
                keys |= {f"{p}.downsample.0.weight": (4 * planes, cin, 1, 1), **_bn(f"{p}.downsample.1", 4 * planes)}
            cin = 4 * planes
    return keys | _head_keys(2048, k)


# (t, c, n, first stride, dilation) of the output-stride-8 MobileNetV2, as models.md §5.5 states them
MBV2_STAGES = ((1, 16, 1, 1, 1), (6, 24, 2, 2, 1), (6, 32, 3, 2, 1), (6, 64, 4, 1, 1), (6, 96, 3, 1, 2),
               (6, 160, 3, 1, 2), (6, 320, 1, 1, 4))


def dfad_mobilenetv2_keys(k: int) -> dict[str, tuple]:
    keys = {"backbone.features.0.0.weight": (32, 3, 3, 3), **_bn("backbone.features.0.1", 32)}
    idx, cin = 1, 32
    for t, c, n, _, _ in MBV2_STAGES:
        for _ in range(n):
            p, hidden = f"backbone.features.{idx}.conv", cin * t
            if t == 1:
                keys |= {f"{p}.0.weight": (hidden, 1, 3, 3), **_bn(f"{p}.1", hidden),
                         f"{p}.3.weight": (c, hidden, 1, 1), **_bn(f"{p}.4", c)}
            else:
                keys |= {f"{p}.0.weight": (hidden, cin, 1, 1), **_bn(f"{p}.1", hidden),
                         f"{p}.3.weight": (hidden, 1, 3, 3), **_bn(f"{p}.4", hidden),
                         f"{p}.6.weight": (c, hidden, 1, 1), **_bn(f"{p}.7", c)}
            idx, cin = idx + 1, c
    assert idx == 18 and cin == 320
    return keys | _head_keys(320, k)


SPEC_KEYS = {"deeplabv3_resnet50": dfad_resnet50_keys, "deeplabv3_mobilenetv2": dfad_mobilenetv2_keys}


def random_state_dict(spec: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the spec's keys: He-scaled convs, randomised BN affine and running statistics."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif len(shape) == 4:
            sd[key] = torch.randn(shape, generator=g) * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight"):  # BN scale
            sd[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:  # BN shift, running mean, classifier bias
            sd[key] = torch.randn(shape, generator=g) * 0.2
    return sd


# --------------------------------------------------------------------------------- functional reference forwards

def _conv(x, sd, p, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), stride, padding, dilation, groups)


def _bnf(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def _relu6(x):
    return F.hardtanh(x, 0.0, 6.0)


def ref_resnet50_os8(x, sd):
    """torchvision ResNet-50 up to layer4 with replace_stride_with_dilation=[False, True, True]: layer3/layer4 keep
    stride 1, their first block uses the previous dilation, the others dilation 2 (layer3) / 4 (layer4)."""
    x = F.relu(_bnf(_conv(x, sd, "backbone.conv1", 2, 3), sd, "backbone.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    dilation = 1
    for li, (blocks, stride, dilate) in enumerate(((3, 1, False), (4, 2, False), (6, 2, True), (3, 2, True)), 1):
        previous = dilation
        if dilate:
            dilation, stride = dilation * stride, 1
        for b in range(blocks):
            p, s, d = f"backbone.layer{li}.{b}", (stride if b == 0 else 1), (previous if b == 0 else dilation)
            y = F.relu(_bnf(_conv(x, sd, f"{p}.conv1"), sd, f"{p}.bn1"))
            y = F.relu(_bnf(_conv(y, sd, f"{p}.conv2", s, d, d), sd, f"{p}.bn2"))
            y = _bnf(_conv(y, sd, f"{p}.conv3"), sd, f"{p}.bn3")
            shortcut = _bnf(_conv(x, sd, f"{p}.downsample.0", s), sd, f"{p}.downsample.1") if b == 0 else x
            x = F.relu(y + shortcut)
    return x


def ref_mobilenetv2_os8(x, sd, fixed_padding=True):
    """DFAD's MobileNetV2 features; ``fixed_padding=False`` gives ordinary padding (conv padding = dilation)."""
    x = _relu6(_bnf(_conv(x, sd, "backbone.features.0.0", 2, 1), sd, "backbone.features.0.1"))
    idx, cin = 1, 32
    for t, c, n, first_stride, d in MBV2_STAGES:
        for i in range(n):
            p, s = f"backbone.features.{idx}.conv", (first_stride if i == 0 else 1)
            h, pad = (F.pad(x, (d, d, d, d)), 0) if fixed_padding else (x, d)
            if t == 1:
                y = _relu6(_bnf(_conv(h, sd, f"{p}.0", s, pad, d, groups=cin), sd, f"{p}.1"))
                y = _bnf(_conv(y, sd, f"{p}.3"), sd, f"{p}.4")
            else:
                y = _relu6(_bnf(_conv(h, sd, f"{p}.0"), sd, f"{p}.1"))
                y = _relu6(_bnf(_conv(y, sd, f"{p}.3", s, pad, d, groups=cin * t), sd, f"{p}.4"))
                y = _bnf(_conv(y, sd, f"{p}.6"), sd, f"{p}.7")
            x = x + y if s == 1 and cin == c else y
            idx, cin = idx + 1, c
    return x


def ref_head(f, sd, size, rates=(12, 24, 32)):
    """ASPP (1x1, three dilated 3x3, image pooling), projection (dropout = identity in eval), 3x3 conv, classifier,
    bilinear upsampling to ``size``."""
    branches = [F.relu(_bnf(_conv(f, sd, "classifier.0.convs.0.0"), sd, "classifier.0.convs.0.1"))]
    for i, r in enumerate(rates, 1):
        branches.append(F.relu(_bnf(_conv(f, sd, f"classifier.0.convs.{i}.0", 1, r, r), sd,
                                    f"classifier.0.convs.{i}.1")))
    pooled = F.relu(_bnf(_conv(F.adaptive_avg_pool2d(f, 1), sd, "classifier.0.convs.4.1"), sd,
                         "classifier.0.convs.4.2"))
    branches.append(F.interpolate(pooled, size=f.shape[-2:], mode="bilinear", align_corners=False))
    y = F.relu(_bnf(_conv(torch.cat(branches, 1), sd, "classifier.0.project.0"), sd, "classifier.0.project.1"))
    y = F.relu(_bnf(_conv(y, sd, "classifier.1", padding=1), sd, "classifier.2"))
    y = _conv(y, sd, "classifier.4")
    return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def _assert_close(out, ref):
    scale = ref.abs().max().item()
    assert scale > 1e-3  # a meaningful signal, not all zeros
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * scale)


def _differs(a, b):
    return (a - b).abs().max().item() > 1e-3 * b.abs().max().item()


# ------------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def teacher_sd():
    return random_state_dict(dfad_resnet50_keys(11), seed=1)


@pytest.fixture(scope="module")
def student_sd():
    return random_state_dict(dfad_mobilenetv2_keys(11), seed=2)


# --------------------------------------------------------------------------------------------- registry smoke tests

def test_registry_lists_the_segmentation_models():
    assert set(SEG_MODELS) >= {*DFAD_MODELS, "deeplabv3plus_resnet50", "deeplabv3plus_mobilenetv2"}
    for name in SEG_MODELS:
        info = model_info(name)
        assert info["task"] == "segmentation" and info["input_size"] == (3, 128, 128)
        assert info["mean"] == (0.5,) * 3 and info["std"] == (0.5,) * 3
    assert model_info("deeplabv3plus_resnet50")["family"] == "smp"


@pytest.mark.parametrize("name", SEG_MODELS)
def test_model_builds_forwards_and_trains(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    assert model.kd_name == name
    model.eval()
    with torch.no_grad():
        for shape in ((2, 3, 64, 64), (1, 3, 64, 96), (1, 3, 60, 70)):
            out = model(torch.randn(shape))
            assert isinstance(out, torch.Tensor) and out.shape == (shape[0], 7, *shape[2:])
            assert torch.isfinite(out).all()
    model.train()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 7, (2, 64, 64))
    F.cross_entropy(model(x), y).backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not unreached
    if name in DFAD_MODELS:
        assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_importing_the_package_does_not_import_smp():
    code = "import sys, kdvision.segmentation; print('segmentation_models_pytorch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_smp_missing_is_a_one_line_config_error(monkeypatch):
    from kdvision.segmentation import models

    models._smp_deeplabv3plus_class.cache_clear()
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    try:
        with pytest.raises(ConfigError, match="segmentation-models-pytorch") as err:
            create_model("deeplabv3plus_mobilenetv2", num_classes=7)
        assert "\n" not in str(err.value)
    finally:
        models._smp_deeplabv3plus_class.cache_clear()


def test_dropout_option():
    model = create_model("deeplabv3_mobilenetv2", num_classes=7)
    assert model.classifier[0].project[3].p == 0.5  # DFAD's student
    assert create_model("deeplabv3_resnet50", num_classes=7, dropout=0.0).classifier[0].project[3].p == 0.0
    smp_model = create_model("deeplabv3plus_mobilenetv2", num_classes=7, dropout=0.1)
    assert {m.p for m in smp_model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    with pytest.raises(ConfigError, match="dropout"):
        create_model("deeplabv3_resnet50", num_classes=7, dropout=1.5)


# ---------------------------------------------------------------------------------------------- DFAD key layouts

@pytest.mark.parametrize("name", DFAD_MODELS)
def test_dfad_key_layout_matches_the_spec(name):
    sd = create_model(name, num_classes=11).state_dict()
    expected = SPEC_KEYS[name](11)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert not any(k.startswith(("aux_classifier", "backbone.fc")) or ".fc." in k for k in sd)
    assert sd["classifier.4.weight"].shape == (11, 256, 1, 1)
    assert sd["classifier.0.project.0.weight"].shape == (256, 1280, 1, 1)


def test_dfad_key_counts_and_parameters():
    teacher, student = (create_model(n, num_classes=11) for n in DFAD_MODELS)
    # ResNet-50: 53 convs + 53 BNs (5 entries each); head: 7 convs, 7 BNs, classifier weight + bias
    assert len(teacher.state_dict()) == 53 + 53 * 5 + 7 + 7 * 5 + 2 == 362
    # MobileNetV2: stem conv + BN, 1 block of 2 convs/BNs, 16 blocks of 3 convs/BNs; same head
    assert len(student.state_dict()) == (1 + 2 + 48) * 6 + 7 + 7 * 5 + 2 == 350
    assert sum(p.numel() for p in teacher.parameters()) == 39_636_299
    assert sum(p.numel() for p in student.parameters()) == 5_111_307
    sd = student.state_dict()
    assert sd["classifier.0.convs.0.0.weight"].shape == (256, 320, 1, 1)
    assert sd["backbone.features.1.conv.3.weight"].shape == (16, 32, 1, 1)
    assert sd["backbone.features.17.conv.6.weight"].shape == (320, 960, 1, 1)
    assert "backbone.features.18.conv.0.weight" not in sd  # no 1280-channel conv


def test_student_dilations_and_init():
    model = create_model("deeplabv3_mobilenetv2", num_classes=11)
    feats = model.backbone.features
    dilations = [feats[i].dilation for i in range(1, 18)]
    assert dilations == [1] * 10 + [2] * 6 + [4]  # 16, 24x2, 32x3, 64x4: 1; 96x3, 160x3: 2; 320: 4
    assert all(m.padding == (0, 0) for blk in feats[1:] for m in blk.conv if isinstance(m, torch.nn.Conv2d))
    assert feats[0][0].padding == (1, 1) and feats[0][0].stride == (2, 2)
    assert all(isinstance(m, torch.nn.ReLU6) for blk in feats[1:] for m in blk.conv if not hasattr(m, "weight"))
    assert model.classifier[0].convs[3][0].dilation == (32, 32) and model.classifier[0].convs[3][0].padding == (32, 32)
    # Kaiming-normal fan-in init: std sqrt(2 / fan_in) for the 960x160 1x1 conv
    w = feats[17].conv[0].weight
    assert abs(w.std().item() / (2 / 160) ** 0.5 - 1) < 0.05
    with torch.no_grad():
        assert model.backbone(torch.randn(1, 3, 128, 128))["out"].shape == (1, 320, 16, 16)


# -------------------------------------------------------------------------------- forward equivalence (acceptance)

def test_dfad_teacher_matches_the_functional_reference(teacher_sd):
    model = create_model("deeplabv3_resnet50", num_classes=11, dropout=0.0)
    load_state_dict(model, teacher_sd)
    model.eval()
    # 270x50 gives a 34x7 feature map: the third ASPP branch (rate 32 vs 36) reaches real pixels only when the
    # map is taller than 32, and the odd sizes exercise the final upsampling
    x = torch.randn(1, 3, 270, 50, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)
        features = ref_resnet50_os8(x, teacher_sd)
        assert features.shape == (1, 2048, 34, 7)
        _assert_close(out, ref_head(features, teacher_sd, x.shape[-2:]))
        assert out.shape == (1, 11, 270, 50)

        # torchvision's own DeepLabV3 loads the same checkpoint, but its rates (12, 24, 36) change the output ...
        tv = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                                num_classes=11, aux_loss=False)
        tv.load_state_dict(teacher_sd, strict=True)
        tv.eval()
        assert _differs(tv(x)["out"], out)
        # ... and matches once the third branch is patched to 32
        conv = tv.classifier[0].convs[3][0]
        conv.dilation, conv.padding = (32, 32), (32, 32)
        _assert_close(tv(x)["out"], out)


def test_dfad_student_matches_the_functional_reference(student_sd):
    model = create_model("deeplabv3_mobilenetv2", num_classes=11)
    load_state_dict(model, student_sd)
    model.eval()
    x = torch.randn(2, 3, 270, 58, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        features = ref_mobilenetv2_os8(x, student_sd)
        assert features.shape == (2, 320, 34, 8)
        out = model(x)
        _assert_close(out, ref_head(features, student_sd, x.shape[-2:]))
        ordinary = ref_head(ref_mobilenetv2_os8(x, student_sd, fixed_padding=False), student_sd, x.shape[-2:])
        assert _differs(ordinary, out)  # fixed padding matters once BN(0) is not 0


def _ordinary_padding_block(block, x):
    """The same block with ordinary conv padding (= dilation) instead of padding the block input."""
    convs = block.conv
    d = block.dilation
    sd = {k: v for k, v in block.state_dict().items()}
    if len(convs) == 5:  # expand_ratio 1: dw, BN, ReLU6, pw-linear, BN
        y = _relu6(_bnf(_conv(x, sd, "conv.0", convs[0].stride, d, d, groups=convs[0].groups), sd, "conv.1"))
        y = _bnf(_conv(y, sd, "conv.3"), sd, "conv.4")
    else:
        y = _relu6(_bnf(_conv(x, sd, "conv.0"), sd, "conv.1"))
        y = _relu6(_bnf(_conv(y, sd, "conv.3", convs[3].stride, d, d, groups=convs[3].groups), sd, "conv.4"))
        y = _bnf(_conv(y, sd, "conv.6"), sd, "conv.7")
    return x + y if block.use_residual else y


def test_fixed_padding_differs_from_same_padding_only_at_expanded_block_borders(student_sd):
    trained = create_model("deeplabv3_mobilenetv2", num_classes=11)
    load_state_dict(trained, student_sd)
    fresh = create_model("deeplabv3_mobilenetv2", num_classes=11)  # BN(0) = 0: no difference anywhere
    x = torch.randn(1, 32, 20, 20)
    with torch.no_grad():
        for model in (trained, fresh):
            model.eval()
            blk = model.backbone.features[1]  # depthwise first: fixed padding is plain zero padding
            torch.testing.assert_close(blk(x), _ordinary_padding_block(blk, x))
        for idx in (2, 12, 17):  # stride-2 (d 1), dilation 2 and dilation 4 expanded blocks
            for model in (trained, fresh):
                blk = model.backbone.features[idx]
                xin = torch.randn(1, blk.conv[0].in_channels, 20, 20)
                ours, ordinary = blk(xin), _ordinary_padding_block(blk, xin)
                if model is fresh:
                    torch.testing.assert_close(ours, ordinary)
                    continue
                border = blk.dilation if blk.conv[3].stride == (1, 1) else 1
                inner = (slice(None), slice(None), slice(border, -border), slice(border, -border))
                torch.testing.assert_close(ours[inner], ordinary[inner])
                ring = torch.ones_like(ours, dtype=torch.bool)
                ring[inner] = False
                assert (ours - ordinary)[ring].abs().max() > 1e-3


# ------------------------------------------------------------------------------------------- loading checkpoints

def test_wrong_class_count_is_a_one_line_checkpoint_error():
    model = create_model("deeplabv3_resnet50", num_classes=11)
    sd13 = random_state_dict(dfad_resnet50_keys(13))
    with pytest.raises(CheckpointError) as err:
        load_state_dict(model, sd13)
    msg = str(err.value)
    assert "\n" not in msg
    assert "classifier.4.weight" in msg and "(13, 256, 1, 1)" in msg and "(11, 256, 1, 1)" in msg


def test_containers_and_module_prefix_load(tmp_path, student_sd):
    raw = tmp_path / "raw.pt"
    torch.save({f"module.{k}": v for k, v in student_sd.items()}, raw)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": student_sd, "epoch": 3}, wrapped)
    for path in (raw, wrapped):
        model = load_weights(create_model("deeplabv3_mobilenetv2", num_classes=11), path)
        torch.testing.assert_close(model.state_dict()["classifier.4.weight"], student_sd["classifier.4.weight"])
        torch.testing.assert_close(model.state_dict()["backbone.features.9.conv.4.running_var"],
                                   student_sd["backbone.features.9.conv.4.running_var"])


def test_pretrained_backbone_loads_a_torchvision_resnet50(tmp_path):
    torch.manual_seed(5)
    ref = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(ref, path)
    model = create_model("deeplabv3_resnet50", num_classes=11, pretrained_backbone=str(path))
    sd = model.state_dict()
    for key in ("conv1.weight", "layer4.2.conv3.weight", "layer3.0.downsample.1.running_var"):
        torch.testing.assert_close(sd[f"backbone.{key}"], ref[key])

    old_format = tmp_path / "resnet50-19c8e357.pth"  # 2017 files have no num_batches_tracked
    torch.save({k: v for k, v in ref.items() if not k.endswith("num_batches_tracked")}, old_format)
    model = create_model("deeplabv3_resnet50", num_classes=11, pretrained_backbone=old_format)
    torch.testing.assert_close(model.state_dict()["backbone.layer1.0.conv2.weight"], ref["layer1.0.conv2.weight"])


def test_pretrained_backbone_wrong_file_is_a_one_line_error(tmp_path):
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    for path in (wrong, tmp_path / "missing.pth"):
        with pytest.raises(CheckpointError) as err:
            create_model("deeplabv3_resnet50", num_classes=11, pretrained_backbone=path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="not a torchvision ImageNet ResNet-50"):
        create_model("deeplabv3_resnet50", num_classes=11, pretrained_backbone=wrong)


def test_find_local_imagenet_resnet50(tmp_path, monkeypatch):
    from kdvision.segmentation.models import find_local_imagenet_resnet50

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert find_local_imagenet_resnet50() is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "resnet50-11ad3fa6.pth").touch()  # IMAGENET1K_V2: not what DFAD used
    assert find_local_imagenet_resnet50() is None
    (tmp_path / "checkpoints" / "resnet50-19c8e357.pth").touch()
    assert find_local_imagenet_resnet50() == tmp_path / "checkpoints" / "resnet50-19c8e357.pth"
