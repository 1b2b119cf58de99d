#!/usr/bin/env python
"""KDEP end to end on real images, on a CPU: basis, pre-training, transfer against random initialisation, export.

    python benchmarks/kdep_transfer.py [--images cifar846|camvid] [--steps 200] [--epochs 8] [--seeds 0,1,2]

1. ``gen_svd_weights.py``: the basis of a CIFAR-10 ResNet-20 (option A, ``../shared/data/teachers``; 64-d pre-ReLU
   feature) over the pre-training images, two augmented views each.
2. ``kdep.py``: a ResNet-20 student (random init) distilled for ``--steps`` steps of 64 on those images at 32 px
   (robustness augmentation; PTS τ 0.1, p 3; loss weight 3; SGD lr 0.1).
3. ``classification/transfer.py``: fine-tuning on ``cifar10_846`` (the 846 CIFAR-10 test images of the shared data,
   split 70/30 per class: 593 train / 253 test) from the KDEP student and from random initialisation, the same
   budget (``--epochs`` x 10 steps of 64, lr 0.02, no schedule), one run per seed; mean ± std of best and last.
4. ``tools/convert_kdep.py`` on the student: a CIFAR ResNet-20 is no torchvision ResNet, so the export is refused
   in one line (the R18/R50 exports are tested in tests/tools).

Pre-training images (``--images``): ``cifar846`` — the 593 training images of the transfer task without their
labels (in-domain unlabelled data, the test images never seen); ``camvid`` — the 72 CamVid frames of the shared
data (random resized crops of street scenes). Results go to ``--out`` (``kdep_transfer.json``) and stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KDV_DATA", REPO.parent / "shared" / "data")).resolve()
TEACHER = "teachers/cifar10_resnet20-12fca82f.th"


def write_images(kind: str, folder: Path) -> Path:
    """The pre-training image folder (PNG files; labels are never written)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "camvid":
        for split in ("train", "val", "test"):
            link = folder / split
            if not link.exists():
                link.symlink_to(DATA / "CamVid" / split, target_is_directory=True)
        return folder
    from PIL import Image

    from kdvision.core.data import get_dataset

    train = get_dataset("cifar10_846", DATA, "train", train_transform=False)
    for i, img in enumerate(train.images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return folder


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def run(out: Path, *, images: str = "cifar846", steps: int = 200, epochs: int = 8, seeds=(0, 1, 2),
        lr: float = 0.02) -> dict:
    from kdvision.classification.transfer import ENTRIES as TRANSFER
    from kdvision.pretraining.kdep import ENTRIES as KDEP

    t0 = time.perf_counter()
    teacher = DATA / TEACHER
    folder = write_images(images, out / f"images-{images}")
    small = ["--teacher", "resnet20_a", "--teacher_weights", str(teacher), "--teacher_num_classes", "10",
             "--image_size", "32", "--workers", "0", "--cache_images", "--device", "cpu", "--dataset", str(folder)]
    svd = KDEP["gen_svd_weights"].build([*small, "--batch_size", "64", "--views", "2", "--output", str(out / "svd"),
                                         "--overwrite"]).run()
    pre = KDEP["kdep"].build([*small, "--arch", "resnet20_a", "--fc_classes", "10", "--basis", svd["basis"],
                              "--batch_size", "64", "--epochs", "1", "--iters-per-epoch", str(steps), "--lr", "0.1",
                              "--log-interval", "50", "--output", str(out / "kdep"), "--overwrite"]).run()
    runs: dict[str, list[dict]] = {"kdep": [], "random": []}
    for name, init in (("kdep", pre["export"]), ("random", "none")):
        for seed in seeds:
            s = TRANSFER["transfer"].build([
                "--dataset", "cifar10_846", "--data_root", str(DATA), "--model", "resnet20_a", "--init", init,
                "--image_size", "0", "--epochs", str(epochs), "--lr", str(lr), "--set", "scheduler=false",
                "--workers", "0", "--device", "cpu", "--seed", str(seed), "--log-interval", "1000",
                "--output", str(out / f"transfer-{name}-{seed}"), "--overwrite"]).run()
            runs[name].append({"seed": seed, "best": s["student_best"], "last": s["student_last"],
                               "init_loaded": s["init_loaded"]})
    from kdvision.tools.convert_kdep import main as convert

    try:
        convert([pre["export"], str(out / "student.pkl"), "--to", "detectron2", "--arch", "R18"])
    except SystemExit as exc:  # run_cli always exits
        export = "written" if exc.code == 0 else f"refused (exit {exc.code})"
    report = {
        "images": images, "pretraining_images": svd["images"] // 2, "steps": steps, "transfer_epochs": epochs,
        "lr": lr, "seeds": list(seeds), "basis_top_singular_values": svd["top_singular_values"],
        "kdep_final_loss": _last_loss(out / "kdep"), "runs": runs, "export_r18": export,
        **{f"{name}_{k}": _stats([r[k] for r in runs[name]]) for name in runs for k in ("best", "last")},
        "wall_s": time.perf_counter() - t0,
    }
    (out / "kdep_transfer.json").write_text(json.dumps(report, indent=2))
    return report


def _last_loss(run_dir: Path) -> float:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss_feat"] for r in lines if "loss_feat" in r][-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", choices=("cifar846", "camvid"), default="cifar846")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench-kdep-transfer")
    a = p.parse_args()
    r = run(a.out / a.images, images=a.images, steps=a.steps, epochs=a.epochs,
            seeds=[int(s) for s in a.seeds.split(",")], lr=a.lr)
    fmt = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"  # noqa: E731
    print(f"pre-training images: {r['images']} ({r['pretraining_images']}), {r['steps']} steps; transfer "
          f"{r['transfer_epochs']} epochs x 10 steps, seeds {r['seeds']}; {r['wall_s']:.0f} s")
    print("| init | best acc (%) | last acc (%) |\n|---|---|---|")
    for name in ("kdep", "random"):
        print(f"| {name} | {fmt(r[name + '_best'])} | {fmt(r[name + '_last'])} |")
    print(f"export of the ResNet-20 student as R18: {r['export_r18']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
