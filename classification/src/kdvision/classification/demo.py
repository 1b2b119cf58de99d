"""``make demo``: a complete data-free distillation on the embedded digits data, in under three minutes on a CPU.

1. Train a LeNet-5 teacher on the training split of scikit-learn's handwritten digits (1x32x32).
2. Distil a LeNet-5-half student with DFAD — the student never sees a real training image, only generator samples.
3. Report teacher and student accuracy on the held-out real digits.

The DFAD run directory is ``--output`` (default ``runs/demo``), with the teacher's run in ``<output>/teacher``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import dfad, teacher

TEACHER_ARGS = ["--dataset", "digits", "--model", "lenet5", "--epochs", "20", "--batch_size", "64", "--lr", "0.05",
                "--weight_decay", "5e-3", "--seed", "1", "--device", "cpu"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="runs/demo")
    p.add_argument("--epochs", type=int, default=None, help="DFAD epochs (default: the digits preset)")
    args = p.parse_args(argv)
    out = Path(args.output)
    t0 = time.perf_counter()

    print("== 1/2 teacher: LeNet-5 on the digits training split ==", flush=True)
    # the demo owns its run directories: re-running `make demo` replaces them (--overwrite)
    _call(teacher.main, "dfad", TEACHER_ARGS + ["--output", str(out / "teacher"), "--overwrite"])
    ckpt = out / "teacher" / "digits-lenet5.pt"

    print("== 2/2 student: LeNet-5-half distilled with DFAD from generated images only ==", flush=True)
    dfad_args = ["--ckpt", str(ckpt), "--output", str(out), "--device", "cpu", "--overwrite"]
    if args.epochs:
        dfad_args += ["--epochs", str(args.epochs)]
    _call(dfad.main, "digits", dfad_args)

    summary = json.loads((out / "summary.json").read_text())
    t_acc, s_acc = summary["teacher_metric"], summary["student_best"]
    print(f"\nteacher accuracy on held-out real digits: {t_acc:.4f}")
    print(f"student accuracy on held-out real digits: {s_acc:.4f}  ({s_acc / t_acc:.1%} of the teacher; "
          f"last epoch {summary['student_last']:.4f})")
    print(f"synthetic samples: {out / 'samples' / 'last.png'}; run directory: {out}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 0


def _call(fn, *args) -> None:
    """Run an entry point's main() (which exits) and stop the demo when it fails."""
    try:
        fn(*args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            sys.exit(exc.code)
