"""detection/train_net.py: KDEP backbone transfer to Faster R-CNN + FPN on a VOC-layout fixture written here."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdvision.core.errors import KDVisionError
from kdvision.detection import train_net as tn
from kdvision.detection.data import VOCDetection
from kdvision.detection.evaluation import class_ap, voc_ap, voc_metrics

CLASSES = {"cat": (220, 40, 40), "dog": (40, 60, 220)}  # two VOC classes: red and blue rectangles


def make_voc(root: Path, n: int = 12, seed: int = 0) -> Path:
    """``root/VOC2007`` with n images (96–128 px, one or two coloured rectangles each) and their XML; trainval =
    the first 3/4, test = the rest."""
    rng = np.random.default_rng(seed)
    base = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        w, h = int(rng.integers(96, 129)), int(rng.integers(96, 129))
        img = np.full((h, w, 3), 235, np.uint8) + rng.integers(0, 15, (h, w, 3), dtype=np.uint8)
        objs = []
        for k in range(1 + i % 2):
            name = list(CLASSES)[(i + k) % 2]
            bw, bh = int(rng.integers(28, 44)), int(rng.integers(28, 44))
            x0 = int(rng.integers(0, w - bw)) if k == 0 else max(0, w - bw - 2)
            y0 = int(rng.integers(0, h - bh)) if k == 0 else max(0, h - bh - 2)
            if k == 1 and objs and x0 < objs[0][3] and y0 < objs[0][4]:  # keep the two boxes apart
                x0, y0 = 0, 0
            img[y0:y0 + bh, x0:x0 + bw] = CLASSES[name]
            objs.append((name, x0 + 1, y0 + 1, x0 + bw, y0 + bh))  # VOC: 1-based inclusive pixels
        image_id = f"{i:06d}"
        ids.append(image_id)
        Image.fromarray(img).save(base / "JPEGImages" / f"{image_id}.jpg", quality=100, subsampling=0)
        xml = "".join(f"<object><name>{o[0]}</name><difficult>0</difficult><bndbox><xmin>{o[1]}</xmin><ymin>{o[2]}"
                      f"</ymin><xmax>{o[3]}</xmax><ymax>{o[4]}</ymax></bndbox></object>" for o in objs)
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{xml}</annotation>")
    cut = n * 3 // 4
    (base / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:cut]) + "\n")
    (base / "ImageSets/Main/test.txt").write_text("\n".join(ids[cut:]) + "\n")
    return root


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def kdep_r18(tmp_path_factory) -> tuple[Path, OrderedDict]:
    """A KDEP ResNet-18 student in robustness format (kdep.md §5.1)."""
    from torchvision import models as tvm

    torch.manual_seed(0)
    sd = tvm.resnet18(weights=None).state_dict()
    m = OrderedDict([("module.normalizer.new_mean", torch.zeros(3, 1, 1)),
                     ("module.normalizer.new_std", torch.ones(3, 1, 1))])
    m.update((f"module.model.model.{k}", v) for k, v in sd.items())
    m.update((f"module.attacker.model.model.{k}", v.clone()) for k, v in sd.items())
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt.latest"
    torch.save({"model": m, "epoch": 90}, path)
    return path, sd


#: a CPU-sized run: 128-px images, 2 per batch, 64 sampled RoIs and a few hundred proposals per image
TINY = ["--arch", "R18", "--train_sets", "voc_2007_trainval", "--test_set", "voc_2007_test", "--batch_size", "2",
        "--test_batch_size", "4", "--min_size_train", "128", "--min_size_test", "128", "--max_size", "160",
        "--roi_batch_size_per_image", "64", "--rpn_pre_nms_topk_train", "400", "--rpn_post_nms_topk_train", "200",
        "--rpn_pre_nms_topk_test", "200", "--rpn_post_nms_topk_test", "100", "--workers", "0", "--device", "cpu"]


def test_voc_reader_and_box_convention(voc):
    ds = VOCDetection("voc_2007_trainval", voc)
    assert len(ds) == 9
    assert ds[1][1]["labels"].tolist() == [12, 8]  # dog, cat (1-based VOC indices; 0 is the background)
    image, target = ds[0]
    assert image.shape[0] == 3 and 96 <= image.shape[1] <= 128 and image.dtype == torch.float32
    assert target["labels"].tolist() == [8]
    # the box is 0-based xmin/ymin (VOC's 1-based - 1) and covers the red rectangle exactly
    x0, y0, x1, y1 = target["boxes"][0].round().long().tolist()
    red = (image[0] > 0.7) & (image[2] < 0.35)
    ys, xs = torch.nonzero(red, as_tuple=True)
    found = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert max(abs(a - b) for a, b in zip((x0, y0, x1, y1), found)) <= 1, ((x0, y0, x1, y1), found)  # JPEG edges


def test_voc_ap_by_hand():
    # 11-point vs all-point on the classic example: recall [0.5, 1], precision [1, 0.5]
    rec, prec = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert voc_ap(rec, prec) == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert voc_ap(rec, prec, use_07=True) == pytest.approx((6 * 1 + 5 * 0.5) / 11)
    gt = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), "labels": np.array([1, 1]),
           "difficult": np.array([False, True])}]
    # a hit on the normal box, a hit on the difficult one (ignored), a duplicate (false positive), a miss
    pred = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9], [50, 50, 60, 60]], float),
             "scores": np.array([0.9, 0.8, 0.7, 0.6]), "labels": np.array([1, 1, 1, 1])}]
    assert class_ap(pred, gt, 1, 0.5) == pytest.approx(1.0)  # recall 1 reached at precision 1
    pred[0]["scores"] = np.array([0.5, 0.8, 0.9, 0.95])  # the miss and the duplicate first
    assert class_ap(pred, gt, 1, 0.5) == pytest.approx(1 / 2)  # TP at rank 2 of the counted ones: precision 1/2
    assert class_ap(pred, gt, 2, 0.5) is None
    m = voc_metrics(pred, gt, 2)
    assert m["ap50"] == pytest.approx(0.5) and m["ap"] <= m["ap50"]


def test_dry_run_shows_the_init_report_and_honours_detectron2_datasets(voc, kdep_r18, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        tn.main([*TINY, "--init", str(kdep_r18[0]), "--dry-run"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"voc_2007_trainval (9 images) under {voc}; 20 classes" in out
    assert "backbone R18: 120 matched" in out and "0 unexpected, 2 skipped (fc.weight, fc.bias)" in out
    assert "Faster R-CNN R18-FPN, BN" in out and "x0.1 at iters [12000, 16000], 100-iter linear warm-up" in out
    assert "SGD lr 0.0025 (= 0.02 x 2/16)" in out
    assert not (tmp_path / "runs").exists()


def test_build_detector_loads_the_backbone_strictly(kdep_r18):
    from kdvision.core.backbones import read_backbone

    path, sd = kdep_r18
    model, report = tn.build_detector("R18", 2, norm="FrozenBN", state=read_backbone(path, "R18"), min_size=(128,))
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer4.1.bn2.running_var"], sd["layer4.1.bn2.running_var"])
    assert torch.equal(body["conv1.weight"], sd["conv1.weight"]) and "fc.weight" not in body
    assert len(report.matched) == 100 and len(report.unexpected) == 20  # FrozenBN: no num_batches_tracked
    mnv2, _ = tn.build_detector("mnv2", 2, min_size=(128,))
    feats = mnv2.backbone(torch.zeros(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats.values()] == [32, 16, 8, 4, 2]  # strides 4..64 (P2..P6)


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        tn.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_one_line_errors(voc, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    assert "no voc_2007_trainval under datasets: expected datasets/VOC2007/ImageSets/Main/trainval.txt" in \
        _error(capsys, TINY)
    assert f"data root not found: {tmp_path / 'nope'} (--data_root)" in \
        _error(capsys, [*TINY, "--data_root", str(tmp_path / "nope")])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "gone"))
    assert "(DETECTRON2_DATASETS)" in _error(capsys, TINY).replace("$", "")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    assert "bad.pt is not a torchvision R18 backbone" in _error(capsys, [*TINY, "--init", str(tmp_path / "bad.pt")])
    assert "checkpoint file not found" in _error(capsys, [*TINY, "--init", str(tmp_path / "no.pt")])
    assert "invalid arch: 'R9'" in _error(capsys, [*TINY, "--arch", "R9", "--dry-run"])
    assert "mix VOC and COCO" in _error(capsys, [*TINY, "--test_set", "coco_2017_val", "--dry-run"])
    assert "MODEL.MASK_ON True" in _error(capsys, [*TINY, "MODEL.MASK_ON", "True", "--dry-run"])
    assert not (tmp_path / "runs").exists()


def test_detectron2_config_file_and_overrides(tmp_path):
    base = tmp_path / "Base-RCNN-FPN.yaml"
    base.write_text("MODEL:\n  RESNETS:\n    DEPTH: 50\n  PIXEL_MEAN: [123.675, 116.280, 103.530]\n"
                    "SOLVER:\n  IMS_PER_BATCH: 16\n  BASE_LR: 0.02\nINPUT:\n  FORMAT: RGB\n"
                    "VERSION: 2\n")
    cfg_file = tmp_path / "faster_rcnn_R_18_FPN.yaml"
    cfg_file.write_text("_BASE_: Base-RCNN-FPN.yaml\nMODEL:\n  RESNETS:\n    DEPTH: 18\n    NORM: SyncBN\n"
                        "DATASETS:\n  TRAIN: ('voc_2007_trainval',)\n  TEST: ('voc_2007_test',)\n"
                        "SOLVER:\n  STEPS: (12000, 16000)\n  MAX_ITER: 18000\n  WARMUP_ITERS: 100\n"
                        "INPUT:\n  MIN_SIZE_TRAIN: (480, 512)\n  MIN_SIZE_TEST: 800\n")
    cfg, given, _ = tn.ENTRY.resolve(["--config-file", str(cfg_file), "--num-gpus", "1", "SOLVER.MAX_ITER", "90",
                                      "SOLVER.STEPS", "(60, 80)", "--batch_size", "2"])
    assert (cfg.arch, cfg.norm, cfg.iters, cfg.steps, cfg.batch_size) == ("R18", "BN", 90, [60, 80], 2)
    assert cfg.train_sets == ["voc_2007_trainval"] and cfg.test_set == "voc_2007_test"
    assert cfg.min_size_train == [480, 512] and cfg.warmup_iters == 100 and cfg.lr == 0.02
    cfg.validate()


@pytest.mark.slow
def test_short_training_run_lowers_the_loss_and_computes_ap(voc, kdep_r18, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        tn.main([*TINY, "--data_root", str(voc), "--init", str(kdep_r18[0]), "--iters", "20", "--steps", "18",
                 "--warmup_iters", "4", "--lr", "0.04", "--eval_period", "10", "--log-interval", "4", "--seed", "0",
                 "--output", str(out), "--no-progress", "--coco_eval"])
    assert e.value.code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train" and "loss_classifier" in r]
    assert len(train) >= 4
    total = lambda r: sum(r[k] for k in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"))  # noqa: E731
    assert total(train[-1]) < 0.7 * total(train[0]), [total(r) for r in train]  # 2.5 -> ~1.2 measured
    tests = [r for r in rows if r.get("split") == "test" and "ap50" in r]
    assert len(tests) == 2 and all(0.0 <= r["ap50"] <= 1.0 and 0.0 <= r["coco_ap"] <= 1.0 for r in tests)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "ap50" and summary["task"] == "detection" and summary["iterations"] == 20
    assert summary["init_report"].startswith("backbone R18: 120 matched")
    assert (out / "checkpoints" / "last.pt").is_file()
    # --eval-only on the trained run reproduces its last AP
    with pytest.raises(SystemExit) as e:
        tn.main([*TINY, "--data_root", str(voc), "--eval-only", "--resume", str(out / "checkpoints" / "last.pt"),
                 "--output", str(tmp_path / "eval")])
    assert e.value.code == 0
    assert f"ap50 {summary['student_last']:.4f}" in capsys.readouterr().out
