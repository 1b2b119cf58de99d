#!/usr/bin/env python
"""Training throughput with live Visdom logging against the same run without it.

The same ``classification/dfad_mnist.py`` command (MNIST LeNet-5 teacher from ``--data-root``, one config, one
seed) runs ``--repeats`` times with ``--visdom`` pointed at a live local server (started here, on loopback, the one
``tools/dashboard.py`` starts) and ``--repeats`` times without it, alternating so that machine noise hits both
alike. Each run's ``summary.json`` gives ``train_iters_per_s`` (training steps only, evaluation excluded); the
medians and their ratio are reported, and written as JSON with ``--out``.

    python benchmarks/bench_visdom.py --data-root ../shared/data            # CPU, ~4 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def run_once(args: argparse.Namespace, out: Path, visdom: str | None) -> dict:
    cmd = [sys.executable, str(REPO / "classification" / "dfad_mnist.py"),
           "--ckpt", str(Path(args.data_root) / "teachers" / "mnist_lenet5_classic.pth"),
           "--data_root", str(args.data_root), "--batch_size", str(args.batch), "--ngf", str(args.ngf),
           "--epochs", str(args.epochs), "--iters-per-epoch", str(args.iters), "--log-interval", str(args.log_interval),
           "--test_batch_size", "1000", "--device", args.device, "--seed", "1", "--no-progress", "--output", str(out)]
    if visdom:
        cmd += ["--visdom", visdom]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr[-2000:]}")
    if visdom and "visdom" in proc.stdout.lower().replace(str(out).lower(), ""):
        raise SystemExit(f"the run did not log to the server: {proc.stdout[-1000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--iters", type=int, default=50, help="iterations per epoch")
    p.add_argument("--log-interval", type=int, default=10, help="steps between logs (DFAD's original plots every 50)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the runs (0: torch's default)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()

    from kdvision.tools.dashboard import VisdomServer, connect, free_port

    results: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp, VisdomServer(free_port(), Path(tmp) / "visdom") as server:
        for k in range(args.repeats):
            for mode in (("without", "with") if k % 2 == 0 else ("with", "without")):
                out = Path(tmp) / f"{mode}-{k}"
                summary = run_once(args, out, server.url if mode == "with" else None)
                results[mode].append(summary["train_iters_per_s"])
                print(f"repeat {k} {mode:>7} visdom: {summary['train_iters_per_s']:.3f} it/s", flush=True)
        panes = json.loads(connect(server.url).get_window_data(env=f"with-{args.repeats - 1}"))
        points = len(panes["train/loss_S"]["content"]["data"][0]["x"])
    med = {m: statistics.median(v) for m, v in results.items()}
    ratio = med["with"] / med["without"]
    report = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "iters_per_s": results, "median": med,
              "ratio_with_over_without": ratio, "points_per_pane": points, "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads":
              args.threads or torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    print(f"median train it/s: without {med['without']:.3f}, with live Visdom {med['with']:.3f} "
          f"(ratio {ratio:.3f}; {points} points per train pane of the last logged run)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
