#!/usr/bin/env python
"""CE only vs KD vs DKD vs SD-DKD on a 1,000-image labelled MNIST subset, at equal budget, several seeds (CPU).

    OMP_NUM_THREADS=1 python benchmarks/sdd_mnist_compare.py --data_root ../shared/data --out sdd_mnist.json

What runs (everything through the toolkit: ``classification/sdd.py``'s entry and yacs configs, the supervised
teacher recipe of ``classification/train_teacher.py``; no training loop here):

1. **One teacher for all methods.** SD-DKD pools the teacher's and the student's final feature map at several
   scales (``FeatureMapTap``), so in the default set-up (``lenet_gap``) both are ``lenet5_gap`` models: LeNet-5's
   convolutions with a globally pooled 5×5 map and a linear head (the shared LeNet-5 teachers flatten their 1×1
   map into an MLP and have no such map). The ``lenet5_gap`` teacher is trained here on the *full* 60,000-image
   training split (``train_teacher.py`` recipe, cosine LR per iteration, ``--teacher-steps`` steps of
   ``--teacher-batch``) and cached in ``--work``. Set-up ``lenet``: the shared LeNet-5 teacher
   (``../shared/data/teachers/mnist_lenet5_classic.pth``) into ``lenet5_half``, CE / KD / DKD only.
2. **The student** sees only a fixed 1,000-image subset of the training split (``DATASET.TRAIN_SUBSET`` /
   ``DATASET.SUBSET_SEED``: a seeded permutation, independent of the run seed). The run seed changes the
   student's initialisation and the batch order only.
3. **Equal budget**: every method trains ``--epochs`` x ``--iters`` SGD steps of ``--batch`` images (same LR,
   weight decay, momentum, gradient clip 40 for all -- mdistiller's KD/DKD files have no clip, SDD's have 40).
   DKD's and SD-DKD's warm-up (``DKD.WARMUP`` / ``SDD.WARMUP``, default 20 epochs of CIFAR) would scale the DKD term
   down for the whole of such a short run; both are set to ``--warmup`` (same value for both) of our epochs.
4. **Evaluation** on all 10,000 MNIST test images every ``--eval-every`` epochs and after the last; "best" is
   mdistiller's best-of-evaluations (selected on the test set, so optimistic), "last" the final weights.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

#: method -> (shipped yacs config, extra overrides). CE only = mdistiller's Vanilla (DISTILLER.TYPE NONE).
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("configs/cifar100/kd/res32x4_res8x4.yaml", {"DISTILLER.TYPE": "NONE"}),
    "kd": ("configs/cifar100/kd/res32x4_res8x4.yaml", {}),
    "dkd": ("configs/cifar100/dkd/res32x4_res8x4.yaml", {}),
    "sd_dkd": ("configs/cifar100/sdd_dkd/res32x4_res8x4.yaml", {}),
}
LABELS = {"ce": "CE only", "kd": "KD", "dkd": "DKD", "sd_dkd": "SD-DKD"}

#: ``lenet_gap`` (default): a lenet5_gap teacher trained here into lenet5_gap_half, all four methods, SD-DKD on the
#: 5×5 map at M = [1,2,4] (21 regions, the SDD default). ``lenet``: the shared LeNet-5 teacher (98.81 % on MNIST
#: test) into lenet5_half: CE, KD, DKD only (LeNet-5 has no pooled feature map, so no SD-DKD).
SETUPS: dict[str, dict[str, Any]] = {
    "lenet_gap": dict(arch="lenet5_gap_half", teacher_arch="lenet5_gap", teacher_weights=None, scales="[1,2,4]",
                      methods=tuple(METHODS)),
    "lenet": dict(arch="lenet5_half", teacher_arch="lenet5", teacher_weights="teachers/mnist_lenet5_classic.pth",
                  scales=None, methods=("ce", "kd", "dkd")),
}
DEFAULTS = dict(teacher_steps=400, teacher_batch=128, teacher_lr=0.1, train_subset=1000, subset_seed=0,
                seeds=(0, 1, 2), batch=64, epochs=10, iters=50, lr=0.01, warmup=2.0, eval_every=5,
                **SETUPS["lenet_gap"])


def train_teacher(work: Path, data_root: str, *, arch: str, steps: int, batch: int, lr: float,
                  seed: int = 0) -> tuple[Path, float, float]:
    """(weights, test accuracy, seconds) of the shared teacher: trained once with the ``train_teacher.py`` recipe
    on the full MNIST training split, then reused (cached in ``work``)."""
    from kdvision.classification.teacher import ENTRIES as TEACHER_ENTRIES

    out = work / f"teacher-{arch}-{steps}x{batch}-lr{lr:g}-s{seed}"
    weights, record = out / f"mnist-{arch}.pt", out / "summary.json"
    if weights.is_file() and record.is_file():
        summary = json.loads(record.read_text())
        return weights, summary["student_best"], summary["wall_time_s"]
    argv = ["--dataset", "mnist", "--arch", arch, "--data_root", data_root, "--epochs", "1",
            "--iters-per-epoch", str(steps), "--batch_size", str(batch), "--lr", str(lr), "--lr_schedule", "cosine",
            "--seed", str(seed), "--device", "cpu", "--no-progress", "--log-interval", "100",
            "--output", str(out), "--overwrite"]
    summary = TEACHER_ENTRIES["dfad"].build(argv).run()
    return weights, summary["student_best"], summary["wall_time_s"]


def sdd_argv(method: str, seed: int, *, out: Path, data_root: str, teacher: Path | None, arch: str,
             teacher_arch: str, batch: int, epochs: int, iters: int, lr: float, warmup: float, eval_every: int,
             train_subset: int | None, subset_seed: int, scales: str | None) -> list[str]:
    """The ``classification/sdd.py`` command line of one run."""
    cfg, extra = METHODS[method]
    overrides = {"DATASET.TYPE": "mnist", "DATASET.NUM_WORKERS": 0, "DATASET.TEST.BATCH_SIZE": 1000,
                 "DISTILLER.TEACHER": teacher_arch, "DISTILLER.STUDENT": arch,
                 "SOLVER.BATCH_SIZE": batch, "SOLVER.EPOCHS": epochs, "SOLVER.LR": lr,
                 "SOLVER.LR_DECAY_STAGES": [epochs + 1], "SOLVER.CLIP_GRAD_NORM": 40.0, **extra}
    if train_subset is not None:
        overrides.update({"DATASET.TRAIN_SUBSET": train_subset, "DATASET.SUBSET_SEED": subset_seed})
    if method in ("dkd", "sd_dkd"):
        overrides["DKD.WARMUP"] = warmup
    if method == "sd_dkd":
        overrides["SDD.WARMUP"] = warmup
        if scales:
            overrides["SDD.SCALES"] = scales
    argv = ["--cfg", cfg]
    for k, v in overrides.items():
        argv += [k, str(v).replace(" ", "")]
    argv += ["--iters-per-epoch", str(iters), "--eval-every", str(eval_every), "--data_root", data_root,
             "--seed", str(seed), "--device", "cpu", "--no-progress", "--log-interval", "1000",
             "--output", str(out), "--overwrite"]
    if teacher is not None and method != "ce":
        argv += ["--teacher_weights", str(teacher)]
    return argv


def run_one(method: str, seed: int, *, work: Path, **options: Any) -> dict[str, Any]:
    import kdvision.classification.sdd  # noqa: F401  (registers the sdd entry)
    from kdvision.core.recipes.base import ENTRIES

    out = work / f"{method}-s{seed}"
    summary = ENTRIES["sdd"].build(sdd_argv(method, seed, out=out, **options)).run()
    return {"method": method, "seed": seed, "best": summary["student_best"], "last": summary["student_last"],
            "teacher": summary["teacher_metric"], "iterations": summary["iterations"],
            "batch_size": summary["batch_size"], "train_images": summary["train_images"],
            "wall_time_s": summary["wall_time_s"]}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(data_root: str | os.PathLike, work: str | os.PathLike, *, threads: int | None = 1,
            log=print, **overrides: Any) -> dict[str, Any]:
    """Train the teacher (cached) and every method x seed; the per-run results and per-method mean / std."""
    p = {**DEFAULTS, **overrides}
    work, data_root = Path(work), str(data_root)
    work.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        if p["teacher_weights"]:  # a shipped teacher: its accuracy is measured by the first distillation run
            teacher, teacher_acc = Path(data_root) / p["teacher_weights"], None
        else:
            teacher, teacher_acc, teacher_s = train_teacher(work, data_root, arch=p["teacher_arch"],
                                                            steps=p["teacher_steps"], batch=p["teacher_batch"],
                                                            lr=p["teacher_lr"])
            log(f"teacher {p['teacher_arch']}: test acc {teacher_acc:.4f} ({teacher_s:.0f} s)")
        budget = {k: p[k] for k in ("arch", "teacher_arch", "batch", "epochs", "iters", "lr", "warmup", "eval_every",
                                    "train_subset", "subset_seed", "scales")}
        runs = []
        for method in p["methods"]:
            for seed in p["seeds"]:
                r = run_one(method, seed, work=work, data_root=data_root, teacher=teacher, **budget)
                log(f"{LABELS[method]:<8} seed {seed}: best {r['best']:.4f} last {r['last']:.4f} "
                    f"({r['wall_time_s']:.0f} s)")
                runs.append(r)
    finally:
        torch.set_num_threads(old_threads)
    summary = {}
    for method in p["methods"]:
        rs = [r for r in runs if r["method"] == method]
        bm, bs = _mean_std([r["best"] for r in rs])
        lm, ls = _mean_std([r["last"] for r in rs])
        summary[method] = {"best_mean": bm, "best_std": bs, "last_mean": lm, "last_std": ls, "n": len(rs)}
    return {"params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
            "teacher": {"arch": p["teacher_arch"], "weights": p["teacher_weights"] or "trained here",
                        "acc_full_test": teacher_acc,
                        "acc_distil_runs": next((r["teacher"] for r in runs if r["teacher"] is not None), None),
                        "steps": p["teacher_steps"], "batch": p["teacher_batch"]},
            "student_steps": p["epochs"] * p["iters"], "runs": runs, "summary": summary,
            "wall_time_s": time.perf_counter() - t0, "threads": threads or torch.get_num_threads(),
            "torch": torch.__version__}


def table(result: dict[str, Any]) -> str:
    """The markdown table of best / last accuracy (mean ± std over seeds) per method, with the budget."""
    p, t = result["params"], result["teacher"]
    origin = (f"shared weights {t['weights']}" if p["teacher_weights"] else
              f"trained here on all 60,000 training images ({t['steps']} steps x {t['batch']}), "
              f"{100 * t['acc_full_test']:.2f} % on all 10,000 test images")
    acc = t["acc_distil_runs"]
    sd = f", SD-DKD at M = {p['scales']}" if "sd_dkd" in p["methods"] else ""
    lines = [f"MNIST, student {p['arch']} on a fixed {p['train_subset']:,}-image labelled subset (subset seed "
             f"{p['subset_seed']}); teacher {t['arch']}, {origin}"
             + (f"; teacher measured by the distillation runs: {100 * acc:.2f} %." if acc is not None else "."),
             f"Budget per run: {result['student_steps']} SGD steps x batch {p['batch']} ({p['epochs']} epochs x "
             f"{p['iters']} it; lr {p['lr']:g} constant, wd 5e-4, momentum 0.9, clip 40), DKD/SD-DKD warm-up "
             f"{p['warmup']:g} epochs{sd}; evaluated on all 10,000 test images every {p['eval_every']} epochs; seeds "
             f"{', '.join(map(str, p['seeds']))}; {result['threads']} CPU thread(s), total wall "
             f"{result['wall_time_s']:.0f} s.",
             "",
             "| method | best acc (%) | last acc (%) |",
             "|---|---|---|"]
    for method, s in result["summary"].items():
        lines.append(f"| {LABELS[method]} | {100 * s['best_mean']:.2f} ± {100 * s['best_std']:.2f} | "
                     f"{100 * s['last_mean']:.2f} ± {100 * s['last_std']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--data_root", "--data-root", default=os.environ.get("KDV_DATA", str(repo.parent / "shared" / "data")))
    ap.add_argument("--work", default=None, help="run directories and the cached teacher (default: a temporary dir)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--setup", choices=tuple(SETUPS), default="lenet_gap")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=None, help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--scales", default=None, help="SD-DKD's M, e.g. [1,2]")
    for key in ("teacher_steps", "teacher_batch", "train_subset", "subset_seed", "batch", "epochs", "iters",
                "eval_every"):
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None)
    for key in ("teacher_lr", "lr", "warmup"):
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=float, default=None)
    args = ap.parse_args(argv)
    keys = ("teacher_steps", "teacher_batch", "train_subset", "subset_seed", "batch", "epochs", "iters", "eval_every",
            "teacher_lr", "lr", "warmup", "scales")
    overrides = {**SETUPS[args.setup], **{k: getattr(args, k) for k in keys if getattr(args, k) is not None}}
    overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.methods:
        overrides["methods"] = tuple(m.strip() for m in args.methods.split(","))
    unknown = [m for m in overrides["methods"] if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    if "sd_dkd" in overrides["methods"] and not overrides.get("scales"):
        ap.error(f"set-up {args.setup}: SD-DKD needs a pooled feature map ({overrides['teacher_arch']} has none)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sdd_mnist_") as tmp:
        result = compare(args.data_root, args.work or tmp, threads=args.threads, **overrides)
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
