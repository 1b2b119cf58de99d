#!/usr/bin/env python
"""DFAD training throughput: kdvision's DFAD step against a reference-equivalent loop, in one process.

Both loops train the same players (same architectures, batch and initial weights) with the same update order; the
reference makes the passes of the original DFAD code (teacher weights requiring gradients, autograd graphs built
in the student steps, student weight gradients in the generator step) and uses the default memory format. Rounds
alternate between the loops so that machine noise hits both alike; the ratio of median iterations/s is reported.

    python benchmarks/bench_dfad.py --preset mnist --batch 64            # CPU
    python benchmarks/bench_dfad.py --preset cifar --batch 256 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dfad_reference import ReferenceDFAD  # noqa: E402

from kdvision.core.generators import create_generator  # noqa: E402
from kdvision.core.methods.dfad import DFAD  # noqa: E402
from kdvision.core.models import create_model  # noqa: E402

PRESETS = {  # teacher, student, generator kwargs, optimiser settings of the original scripts
    "mnist": ("lenet5", "lenet5_half", dict(name="dfad_a", nz=100, nc=1, img_size=32), 0.01, 1e-4),
    "cifar": ("resnet34_8x", "resnet18_8x", dict(name="dfad_a", nz=256, nc=3, img_size=32), 0.1, 5e-4),
    "caltech101": ("resnet34_imagenet", "resnet18_imagenet", dict(name="dfad_b", nz=256, nc=3, img_size=128),
                   0.1, 5e-4),
}


def build(preset: str, device: torch.device, num_classes: int):
    t, s, g, lr_S, wd = PRESETS[preset]
    g = dict(g)
    torch.manual_seed(0)
    players = (create_model(t, num_classes), create_model(s, num_classes), create_generator(g.pop("name"), **g))
    return [p.to(device) for p in players], g["nz"], lr_S, wd


def time_loop(method, iters: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        method.train_step()
    sync()
    return iters / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=5, help="iterations per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="default,contiguous,amp",
                   help="kdvision variants to time: default (channels_last), contiguous, amp (bf16), compile")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    num_classes = 101 if args.preset == "caltech101" else 10

    (T, S, G), nz, lr_S, wd = build(args.preset, device, num_classes)
    common = dict(nz=nz, batch_size=args.batch, lr_S=lr_S, lr_G=1e-3, weight_decay=wd, device=device)
    loops = {"reference": ReferenceDFAD(copy.deepcopy(T), copy.deepcopy(S), copy.deepcopy(G), **common)}
    variant_kw = {"default": dict(channels_last=True), "contiguous": dict(channels_last=False),
                  "amp": dict(channels_last=True, amp=True), "compile": dict(channels_last=True)}
    for name in args.variants.split(","):
        fmt = torch.channels_last if variant_kw[name].get("channels_last") else torch.contiguous_format
        t, s, g = (copy.deepcopy(m).to(memory_format=fmt) for m in (T, S, G))
        if name == "compile":
            s, g = torch.compile(s), torch.compile(g)
        loops[name] = DFAD(t, s, g, **common, **variant_kw[name])
    for loop in loops.values():  # warm-up (allocator, cuDNN autotuning, compilation)
        loop.train_step()
        loop.train_step()
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            rates[name].append(time_loop(loop, args.iters, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "preset": args.preset, "batch": args.batch, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or
        platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "iters_per_round": args.iters, "rounds": args.rounds, "it_per_s": med,
        "ratio_vs_reference": {k: v / med["reference"] for k, v in med.items() if k != "reference"},
    }
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"DFAD {args.preset} batch {args.batch} on {result['device_name']} ({device}, {result['threads']} threads)")
    for k, v in med.items():
        ratio = "" if k == "reference" else f"  x{v / med['reference']:.2f}"
        print(f"  {k:<11} {v:8.3f} it/s{ratio}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
