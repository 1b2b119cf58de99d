"""tools/convert_kdep.py: Detectron2 and semseg exports of KDEP backbones (reference/kdep.md §5.3–§5.5, §10).

The Detectron2 key scheme is checked against an oracle written here from Detectron2's documented ResNet naming and
the block structure (not from the converter), and Detectron2's ``matching_heuristics`` is emulated here on the key
lists of an R18-FPN and an R18-C4 model.
"""
from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from kdvision.core.errors import KDVisionError
from kdvision.tools import convert_kdep as ck

BN = ("weight", "bias", "running_mean", "running_var")
STAGES = {"R18": ((2, 2, 2, 2), False), "R50": ((3, 4, 6, 3), True)}


def oracle(arch: str) -> "OrderedDict[str, str]":
    """Detectron2 backbone key -> torchvision key, from the block structure: stem.conv1 (+ .norm); res2..res5 blocks
    with conv1..conv2 (BasicBlock) or conv1..conv3 (Bottleneck), each with .norm; a shortcut (+ .norm) on the first
    block of a stage whose channels or stride change (R18: res3..res5; R50: res2..res5)."""
    blocks, bottleneck = STAGES[arch]
    pairs = OrderedDict()

    def conv_norm(d2: str, tv_conv: str, tv_bn: str) -> None:
        pairs[f"{d2}.weight"] = f"{tv_conv}.weight"
        for b in BN:
            pairs[f"{d2}.norm.{b}"] = f"{tv_bn}.{b}"

    conv_norm("stem.conv1", "conv1", "bn1")
    for s, n in enumerate(blocks):
        for b in range(n):
            for j in range(1, 4 if bottleneck else 3):
                conv_norm(f"res{s + 2}.{b}.conv{j}", f"layer{s + 1}.{b}.conv{j}", f"layer{s + 1}.{b}.bn{j}")
            if b == 0 and (s > 0 or bottleneck):
                conv_norm(f"res{s + 2}.{b}.shortcut", f"layer{s + 1}.{b}.downsample.0", f"layer{s + 1}.{b}.downsample.1")
    return pairs


def test_oracle_counts():  # the oracle itself: R18 = 1 stem + 8 blocks × 2 convs + 3 shortcuts = 20 conv/norm pairs
    assert len(oracle("R18")) == 20 * 5 and len(oracle("R50")) == (1 + 16 * 3 + 4) * 5
    assert "res3.0.shortcut.norm.running_var" in oracle("R18") and "res2.0.shortcut.weight" not in oracle("R18")
    assert "res2.0.shortcut.weight" in oracle("R50") and "res5.2.conv3.norm.bias" in oracle("R50")


def _random_sd(model: torch.nn.Module, seed: int) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for t in sd.values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return sd


@pytest.fixture(scope="module")
def r18():
    return _random_sd(tvm.resnet18(weights=None), 0)


def _kdep_robustness(sd) -> dict:
    """A released KDEP student (§5.1): DataParallel(AttackerModel(DummyModel(net))) with normalisers."""
    m = OrderedDict([("module.normalizer.new_mean", torch.zeros(3, 1, 1)),
                     ("module.normalizer.new_std", torch.ones(3, 1, 1))])
    m.update((f"module.model.model.{k}", v) for k, v in sd.items())
    m.update([("module.attacker.normalize.new_mean", torch.zeros(3, 1, 1)),
              ("module.attacker.normalize.new_std", torch.ones(3, 1, 1))])
    m.update((f"module.attacker.model.model.{k}", v) for k, v in sd.items())
    return {"model": m, "epoch": 90}


@pytest.mark.parametrize("arch", ["R18", "R50"])
def test_detectron2_keys_and_values_match_the_oracle(tmp_path, r18, arch, capsys):
    sd = r18 if arch == "R18" else _random_sd(tvm.resnet50(weights=None), 1)
    torch.save(_kdep_robustness(sd) if arch == "R18" else sd, tmp_path / "in.pt")
    ck._main([str(tmp_path / "in.pt"), str(tmp_path / "out.pkl"), "--to", "detectron2", "--arch", arch])
    with open(tmp_path / "out.pkl", "rb") as fh:
        obj = pickle.load(fh)
    assert obj["__author__"] == "kdvision" and obj["matching_heuristics"] is True
    expect = oracle(arch)
    assert set(obj["model"]) == set(expect)
    for d2, tv in expect.items():
        arr = obj["model"][d2]
        assert isinstance(arr, np.ndarray)
        assert torch.equal(torch.from_numpy(arr), sd[tv]), d2
    out = capsys.readouterr().out
    counters = 20 if arch == "R18" else 53
    assert f"dropped 2 head keys (fc.weight, fc.bias) and {counters} BN num_batches_tracked counters" in out
    assert f"Detectron2 {arch}-FPN: {len(expect)}/{len(expect)} backbone keys loaded (100 %)" in out
    yaml_text = (tmp_path / "out.yaml").read_text()
    assert "PIXEL_MEAN: [123.675, 116.280, 103.530]" in yaml_text and "PIXEL_STD: [58.395, 57.120, 57.375]" in yaml_text
    assert "STRIDE_IN_1X1: False" in yaml_text and 'FORMAT: "RGB"' in yaml_text and f"DEPTH: {arch[1:]}" in yaml_text
    assert ("RES2_OUT_CHANNELS: 64" in yaml_text) == (arch == "R18") and yaml_text in out + "\n"
    assert ("WARNING: do not use this R18 file with a Detectron2 C4 model" in out) == (arch == "R18")


def test_tensors_flag_stores_torch_tensors(tmp_path, r18):
    torch.save(r18, tmp_path / "r18.pth")
    res = ck.export_detectron2(tmp_path / "r18.pth", tmp_path / "t.pkl", "R18", tensors=True, echo=lambda s: None)
    with open(tmp_path / "t.pkl", "rb") as fh:
        model = pickle.load(fh)["model"]
    assert all(isinstance(v, torch.Tensor) for v in model.values())
    assert torch.equal(model["res5.1.conv2.norm.running_mean"], r18["layer4.1.bn2.running_mean"])
    assert res["dropped"][-2:] == ["fc.weight", "fc.bias"]


# -- Detectron2's matching_heuristics, emulated from its documentation ----------------------------------------------
def emulate_matching(model_shapes: dict, ckpt_shapes: dict) -> tuple[set, set, set]:
    """(loaded, shape-mismatched, unmatched) model keys: each model key takes the longest checkpoint key that is a
    dot-separated suffix of it; a shape mismatch is skipped."""
    loaded, bad, unmatched = set(), set(), set()
    for mk, shape in model_shapes.items():
        cands = [c for c in ckpt_shapes if mk == c or mk.endswith("." + c)]
        if not cands:
            unmatched.add(mk)
            continue
        c = max(cands, key=len)
        (loaded if ckpt_shapes[c] == shape else bad).add(mk)
    return loaded, bad, unmatched


def _bottleneck_res5(prefix: str) -> dict:
    """Res5ROIHeads' res5 for an R18 config: 3 Bottleneck blocks, in 256, bottleneck 512, out 512."""
    shapes = {}
    cin = 256
    for b in range(3):
        for j, (co, ci, k) in enumerate(((512, cin, 1), (512, 512, 3), (512, 512, 1)), 1):
            shapes[f"{prefix}{b}.conv{j}.weight"] = (co, ci, k, k)
            shapes.update({f"{prefix}{b}.conv{j}.norm.{x}": (co,) for x in BN})
        if b == 0:
            shapes[f"{prefix}0.shortcut.weight"] = (512, 256, 1, 1)
            shapes.update({f"{prefix}0.shortcut.norm.{x}": (512,) for x in BN})
        cin = 512
    return shapes


def test_matching_heuristics_fpn_full_c4_partial(tmp_path, r18):
    torch.save(r18, tmp_path / "r18.pth")
    ck.export_detectron2(tmp_path / "r18.pth", tmp_path / "r18.pkl", "R18", echo=lambda s: None)
    with open(tmp_path / "r18.pkl", "rb") as fh:
        ckpt = {k: tuple(v.shape) for k, v in pickle.load(fh)["model"].items()}
    backbone = {d2: tuple(r18[tv].shape) for d2, tv in oracle("R18").items()}
    heads = {"backbone.fpn_lateral2.weight": (256, 64, 1, 1), "backbone.fpn_output5.weight": (256, 256, 3, 3),
             "proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
             "roi_heads.box_head.fc1.weight": (1024, 12544), "roi_heads.box_predictor.cls_score.weight": (81, 1024)}
    fpn = {f"backbone.bottom_up.{k}": s for k, s in backbone.items()} | heads
    loaded, bad, unmatched = emulate_matching(fpn, ckpt)
    assert loaded == {f"backbone.bottom_up.{k}" for k in backbone} and not bad and unmatched == set(heads)

    c4 = {f"backbone.{k}": s for k, s in backbone.items() if not k.startswith("res5.")}
    c4 |= _bottleneck_res5("roi_heads.res5.")
    loaded, bad, unmatched = emulate_matching(c4, ckpt)
    res5_loaded = {k[len("roi_heads.res5."):] for k in loaded if k.startswith("roi_heads.")}
    norms = {f"{b}.{c}.norm.{x}" for b in (0, 1) for c in ("conv1", "conv2") for x in BN}
    assert res5_loaded == norms | {"0.conv2.weight", "1.conv2.weight", "0.shortcut.weight"} | \
        {f"0.shortcut.norm.{x}" for x in BN}
    assert bad == {"roi_heads.res5.0.conv1.weight", "roi_heads.res5.1.conv1.weight"}
    assert len(unmatched) == 5 + 5 + 15 and "roi_heads.res5.2.conv2.weight" in unmatched  # conv3 ×2, block 2
    assert len(loaded) / len(c4) < 0.8
    # the converter's own report says the same
    lib = ck.suffix_match(ck.detectron2_model_shapes("R18", "c4"), ckpt)
    assert set(lib.loaded) == loaded and set(lib.shape_mismatch) == bad and set(lib.unmatched) == unmatched
    assert ck.suffix_match(ck.detectron2_model_shapes("R18", "fpn"), ckpt).complete
    r50 = {k: tuple(v.shape) for k, v in ck.to_detectron2(tvm.resnet50(weights=None).state_dict())[0].items()}
    assert ck.suffix_match(ck.detectron2_model_shapes("R50", "c4"), r50).complete


# -- semseg -------------------------------------------------------------------------------------------------------
def test_semseg_resnet_from_kdep_checkpoint(tmp_path, r18, capsys):
    torch.save(_kdep_robustness(r18), tmp_path / "kdep.pt")
    ck._main([str(tmp_path / "kdep.pt"), str(tmp_path / "seg.pth"), "--to", "semseg", "--arch", "R18"])
    out = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert list(out) == [k for k in r18 if not k.startswith("fc.")]
    assert all(torch.equal(out[k], r18[k]) for k in out)
    model = tvm.resnet18(weights=None)
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []
    text = capsys.readouterr().out
    assert "check torchvision R18: 120 matched" in text and "2 skipped (fc.weight, fc.bias)" in text
    assert "check smp encoder resnet18: 120 matched" in text and "0 missing, 0 unexpected" in text


@pytest.mark.parametrize("layout", ["torchvision", "tonylins"])
def test_semseg_mobilenetv2_layouts(tmp_path, layout, capsys):
    sd = _random_sd(tvm.mobilenet_v2(weights=None), 2)
    torch.save({"state_dict": sd}, tmp_path / "m.pt")
    ck._main([str(tmp_path / "m.pt"), str(tmp_path / "seg.pth"), "--to", "semseg", "--arch", "mnv2",
              "--layout", layout])
    out = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert len(out) == len(sd) - 2
    if layout == "torchvision":
        assert all(torch.equal(out[k], sd[k]) for k in out)
    else:  # KDEP's semseg keys: features.i.conv.{0,1,3,4,6,7}, conv.{0,1}
        assert torch.equal(out["features.5.conv.6.weight"], sd["features.5.conv.2.weight"])
        assert torch.equal(out["features.1.conv.4.running_var"], sd["features.1.conv.2.running_var"])
        assert torch.equal(out["conv.1.bias"], sd["features.18.1.bias"])
    assert "check smp encoder mobilenet_v2: 312 matched" in capsys.readouterr().out


# -- one-line errors ----------------------------------------------------------------------------------------------
def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        ck.main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_errors(tmp_path, r18, capsys):
    torch.save(r18, tmp_path / "r18.pt")
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), tmp_path / "m.pt")
    wrn = tvm.wide_resnet50_2(weights=None).state_dict()
    torch.save(wrn, tmp_path / "wrn.pt")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "classifier.0.weight": torch.zeros(10, 64)},
               tmp_path / "vgg.pt")
    assert "not a torchvision R50 backbone (the weights look like R18)" in _error(
        capsys, [str(tmp_path / "r18.pt"), str(tmp_path / "o.pkl"), "--to", "detectron2", "--arch", "R50"])
    assert "Detectron2 has no MobileNetV2 backbone" in _error(
        capsys, [str(tmp_path / "m.pt"), str(tmp_path / "o.pkl"), "--to", "detectron2"])
    assert "is not a torchvision R50 backbone" in _error(  # WRN-50-2: R50's keys, wider tensors
        capsys, [str(tmp_path / "wrn.pt"), str(tmp_path / "o.pth"), "--to", "semseg"])
    assert "neither a torchvision ResNet nor a MobileNetV2" in _error(
        capsys, [str(tmp_path / "vgg.pt"), str(tmp_path / "o.pth"), "--to", "semseg"])
    assert "name OUTPUT *.pkl" in _error(capsys, [str(tmp_path / "r18.pt"), str(tmp_path / "o.pth"),
                                                  "--to", "detectron2"])
    assert "checkpoint file not found" in _error(capsys, [str(tmp_path / "no.pt"), str(tmp_path / "o.pth"),
                                                          "--to", "semseg"])
    assert not (tmp_path / "o.pkl").exists() and not (tmp_path / "o.pth").exists()
    with pytest.raises(KDVisionError, match="--layout tonylins applies to MobileNetV2 only"):
        ck.export_semseg(tmp_path / "r18.pt", tmp_path / "o.pth", layout="tonylins")


@pytest.mark.slow
def test_script_runs_as_a_subprocess(tmp_path, r18):
    import subprocess
    import sys

    from kdv_testutils import REPO

    torch.save(r18, tmp_path / "r18.pt")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert_kdep.py"), str(tmp_path / "r18.pt"),
                           str(tmp_path / "r18.pkl"), "--to", "detectron2", "--arch", "R18"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Detectron2 R18-FPN: 100/100 backbone keys loaded (100 %)" in proc.stdout
    assert (tmp_path / "r18.yaml").is_file()


def test_real_detectron2_loads_the_export(tmp_path, r18):
    """With Detectron2 installed: build an R18-FPN Faster R-CNN from its model zoo config plus our fragment, load the
    .pkl with DetectionCheckpointer and compare tensors."""
    d2 = pytest.importorskip("detectron2", reason="Detectron2 is not installed (it is not on PyPI; see "
                                                   "docs/kdep_export.md)")
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    assert d2 is not None
    torch.save(r18, tmp_path / "r18.pt")
    ck.export_detectron2(tmp_path / "r18.pt", tmp_path / "r18.pkl", "R18", echo=lambda s: None)
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_file(str(tmp_path / "r18.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(tmp_path / "r18.pkl"))
    own = model.backbone.bottom_up.state_dict()
    for d2_key, tv_key in oracle("R18").items():
        assert torch.equal(own[d2_key], r18[tv_key]), d2_key
