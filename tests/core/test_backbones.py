"""read_backbone / load_backbone: every file layout of reference/kdep.md §5 round-trips to torchvision exactly."""
from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from torchvision import models as tvm

from kdvision.core.backbones import (LoadReport, canonical_arch, detect_arch, load_backbone, read_backbone,
                                     tonylins_to_torchvision, torchvision_to_tonylins)
from kdvision.core.errors import CheckpointError


def _random(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every tensor (BN statistics and counters too), so that any mix-up shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.1)
            else:
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model


@pytest.fixture(scope="module")
def r18():
    return _random(tvm.resnet18(weights=None), 0).state_dict()


@pytest.fixture(scope="module")
def mnv2():
    return _random(tvm.mobilenet_v2(weights=None), 1).state_dict()


def _equal(a, b) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _robustness(sd, *, dummy=True, extras=True) -> dict:
    """A KDEP training checkpoint as reference/kdep.md §5.1 describes it (DataParallel(AttackerModel(DummyModel)))."""
    inner = "model." if dummy else ""
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    model = OrderedDict([("module.normalizer.new_mean", mean), ("module.normalizer.new_std", std)])
    for k, v in sd.items():
        model[f"module.model.{inner}{k}"] = v
    if extras:
        model["module.model.model.emb.weight"] = torch.ones(4, 4)
        model["module.model.model.l2norm.scale"] = torch.ones(1)
        model["module.model.model.feat_scale"] = torch.ones(1)
    model["module.attacker.normalize.new_mean"] = mean.clone()
    model["module.attacker.normalize.new_std"] = std.clone()
    for k, v in sd.items():
        model[f"module.attacker.model.{inner}{k}"] = v.clone()
    return {"model": model, "optimizer": {"state": {}}, "epoch": 90, "schedule": None}


def _tonylins(sd) -> "OrderedDict[str, torch.Tensor]":
    """The KDEP MobileNetV2 layout, written here from the spec's rules (kdep.md §3/§5.3), independent of the
    library's remap."""
    out = OrderedDict()
    for k, v in sd.items():
        m = re.match(r"features\.(\d+)\.conv\.([\d.]+?)\.(weight|bias|running_mean|running_var|num_batches_tracked)$",
                     k)
        if m:
            i, j, leaf = m.groups()
            if i == "1":
                j = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}[j]
            else:
                j = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}[j]
            out[f"features.{i}.conv.{j}.{leaf}"] = v
        elif k.startswith("features.18."):
            out["conv." + k[12:]] = v
        elif k.startswith("classifier.1."):
            out["classifier." + k[13:]] = v
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("layout", ["raw", "state_dict", "model", "module", "kdvision", "robustness",
                                    "robustness_no_dummy", "robustness_model_only", "kdep_seg_export"])
def test_resnet18_layouts_round_trip(tmp_path, r18, layout):
    module = OrderedDict((f"module.{k}", v) for k, v in r18.items())
    norm = {"module.normalizer.new_mean": torch.zeros(3, 1, 1), "module.attacker.normalize.new_std": torch.ones(3, 1, 1)}
    obj = {"raw": r18, "state_dict": {"state_dict": r18, "epoch": 3}, "model": {"model": r18}, "module": module,
           "kdvision": {"format": "kdvision-train-state", "version": 1, "method": "kdep", "state_dict": r18,
                        "method_state": {"student": r18}, "epoch": 1, "step": 10},
           "robustness": _robustness(r18), "robustness_no_dummy": _robustness(r18, dummy=False),
           "robustness_model_only": {"model": OrderedDict((f"module.model.model.{k}", v) for k, v in r18.items())},
           "kdep_seg_export": {**r18, **norm}}[layout]
    torch.save(obj, tmp_path / "ck.pt")
    out = read_backbone(tmp_path / "ck.pt", arch="R18")
    _equal(out, r18)
    model = tvm.resnet18(weights=None)
    report = load_backbone(model, out)
    _equal(OrderedDict((k, v) for k, v in model.state_dict().items() if not k.startswith("fc.")),
           OrderedDict((k, v) for k, v in r18.items() if not k.startswith("fc.")))
    assert report.skipped == ["fc.weight", "fc.bias"] and not report.missing and not report.unexpected
    assert len(report.matched) == len(r18) - 2


def test_tonylins_mnv2_remap_round_trips(tmp_path, mnv2):
    tony = _tonylins(mnv2)
    assert "conv.0.weight" in tony and "features.17.conv.7.running_var" in tony and "classifier.weight" in tony
    assert "features.1.conv.4.weight" in tony and "features.1.conv.6.weight" not in tony
    _equal(tonylins_to_torchvision(tony), mnv2)
    _equal(torchvision_to_tonylins(mnv2), tony)
    torch.save(_robustness(tony), tmp_path / "kdep_mnv2.pt")  # KDEP MobileNetV2 student in robustness format
    out = read_backbone(tmp_path / "kdep_mnv2.pt", arch="mnv2")
    assert out.keys() == mnv2.keys() and all(torch.equal(out[k], mnv2[k]) for k in mnv2)
    model = tvm.mobilenet_v2(weights=None, num_classes=10)  # a new head: skipped, the rest strict
    report = load_backbone(model, out)
    assert report.skipped == ["classifier.1.weight", "classifier.1.bias"]
    assert torch.equal(model.state_dict()["features.18.1.running_var"], mnv2["features.18.1.running_var"])


def test_detect_and_canonical_arch(r18, mnv2):
    assert detect_arch(r18) == "R18" and detect_arch(mnv2) == "mnv2"
    assert detect_arch(tvm.resnet50(weights=None).state_dict()) == "R50"
    assert detect_arch({"conv.weight": torch.zeros(1)}) is None
    assert [canonical_arch(a) for a in ("R18", "resnet50", "resnet18_imagenet", "mobilenetv2_imagenet", "MNV2")] == \
        ["R18", "R50", "R18", "mnv2", "mnv2"]
    with pytest.raises(CheckpointError, match="unknown backbone arch 'vgg16'"):
        canonical_arch("vgg16")


def test_missing_num_batches_tracked_is_tolerated_and_reported(r18):
    sd = {k: v for k, v in r18.items() if not k.endswith("num_batches_tracked")}
    report = load_backbone(tvm.resnet18(weights=None), sd, what="old file")
    assert len(report.missing) == 20 and all(k.endswith("num_batches_tracked") for k in report.missing)
    text = str(report)
    assert text.startswith("old file: 100 matched") and "20 missing" in text and "2 skipped (fc.weight, fc.bias)" in text


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_errors_are_one_line(tmp_path, r18, mnv2):
    torch.save(r18, tmp_path / "r18.pt")
    with pytest.raises(CheckpointError) as e:  # --arch not matching the weights
        read_backbone(tmp_path / "r18.pt", arch="R50")
    assert "not a torchvision R50 backbone (the weights look like R18)" in _one_line(e)
    with pytest.raises(CheckpointError) as e:
        load_backbone(tvm.resnet34(weights=None), r18)
    assert "backbone does not match ResNet: missing" in _one_line(e) and "layer1.2.conv1.weight" in str(e.value)
    bad = dict(r18, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1), "extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError) as e:
        load_backbone(tvm.resnet18(weights=None), bad)
    assert "unexpected 1: extra.weight" in _one_line(e) and "shape mismatch 1" in str(e.value)
    rob = _robustness(r18, extras=False)
    rob["model"]["module.attacker.model.model.conv1.weight"] = torch.zeros_like(r18["conv1.weight"])
    torch.save(rob, tmp_path / "rob.pt")
    with pytest.raises(CheckpointError) as e:
        read_backbone(tmp_path / "rob.pt")
    assert "model and attacker copies differ in 1 tensors: conv1.weight" in _one_line(e)
    wrn = tvm.wide_resnet50_2(weights=None).state_dict()  # R50 keys, wider shapes
    torch.save(wrn, tmp_path / "wrn.pt")
    with pytest.raises(CheckpointError) as e:
        read_backbone(tmp_path / "wrn.pt", arch="R50")
    assert "shape mismatch" in _one_line(e)
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "none.pt")
    with pytest.raises(CheckpointError) as e:
        read_backbone(tmp_path / "none.pt")
    assert "holds no state_dict (top-level keys: epoch, acc)" in _one_line(e)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError) as e:
        read_backbone(tmp_path / "text.pt")
    assert "a text file" in _one_line(e)
    with pytest.raises(CheckpointError, match="not found"):
        read_backbone(tmp_path / "absent.pt")
    assert isinstance(LoadReport(), LoadReport)


def test_frozen_bn_model_reports_the_counters_as_unexpected(r18):
    from torchvision.ops import FrozenBatchNorm2d

    model = tvm.resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    report = load_backbone(model, r18, what="R18 into FrozenBN")
    assert len(report.matched) == 100 and len(report.unexpected) == 20 and not report.missing
    assert all(k.endswith("num_batches_tracked") for k in report.unexpected)
    assert torch.equal(model.layer4[1].bn2.running_var, r18["layer4.1.bn2.running_var"])
