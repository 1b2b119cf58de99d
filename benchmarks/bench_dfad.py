#!/usr/bin/env python
"""DFAD training throughput: kdvision's DFAD step against a reference-equivalent loop, in one process.

Both loops train the same players (same architectures, batch and initial weights) with the same update order and
hyper-parameters, taken from the original script's preset (``dfad_{mnist,cifar,caltech101}.yaml`` of the
classification package, ``dfad_camvid.yaml`` of the segmentation package) through ``DFADConfig``, as the entry
scripts build them; the benchmark sets only the batch. The reference makes the passes of the original DFAD code (teacher weights requiring gradients, autograd graphs built
in the student steps, student weight gradients in the generator step) and uses the default memory format. Rounds
alternate between the loops so that machine noise hits both alike; the ratio of median iterations/s is reported.

    python benchmarks/bench_dfad.py --preset mnist --batch 64            # CPU
    python benchmarks/bench_dfad.py --preset cifar --batch 256 --device cuda
    python benchmarks/bench_dfad.py --preset camvid --batch 64 --device cuda --variants default,amp

On CUDA the peak memory of each loop's steps is reported too (``peak_step_mem_gib``: the most memory allocated
during that loop's timed steps, its own weights and optimiser state included, the other loops' players not).
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

from kdvision.core.data import dataset_spec  # noqa: E402
from kdvision.core.engine.config import apply_overrides  # noqa: E402
from kdvision.core.generators import create_generator  # noqa: E402
from kdvision.core.methods.dfad import DFAD, dfad_optimizers  # noqa: E402
from kdvision.core.models import create_model  # noqa: E402
from kdvision.core.recipes.dfad import DFADConfig  # noqa: E402

PRESETS = ("mnist", "cifar", "caltech101", "camvid")  # the original scripts, by their preset files


def preset_config(preset: str):
    """(DFADConfig of the script's preset, its task adapter): the entry scripts' first two layers."""
    if preset == "camvid":
        from kdvision.segmentation.dfad import PRESETS as SEGMENTATION, task_for

        cfg = apply_overrides(DFADConfig(), SEGMENTATION[preset], "the preset")
        return cfg, task_for(cfg)
    from kdvision.classification.common import CLASSIFICATION
    from kdvision.classification.dfad import PRESETS as CLASSIFICATION_PRESETS

    return apply_overrides(DFADConfig(), CLASSIFICATION_PRESETS[preset], "the preset"), CLASSIFICATION


def build(preset: str, device: torch.device, img_size: int | None = None):
    """The preset's players (teacher, student, generator) as the DFAD recipe builds them, its config and task;
    ``img_size`` overrides the preset's generated-image size."""
    cfg, task = preset_config(preset)
    if img_size:
        cfg = apply_overrides(cfg, {"img_size": img_size}, "the benchmark")
    spec = dataset_spec(cfg.dataset)
    classes = cfg.num_classes or spec.num_classes
    torch.manual_seed(0)
    players = (create_model(cfg.teacher, classes, **task.teacher_options), create_model(cfg.student, classes),
               create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf, img_size=cfg.img_size, nc=spec.in_channels))
    return [p.to(device) for p in players], cfg, task


def _resident_bytes(loop) -> int:
    """Bytes of a loop's own players and optimiser state on the GPU."""
    tensors = [t for m in (loop.teacher, loop.student, loop.generator) for t in (*m.parameters(), *m.buffers())]
    for opt in (loop.opt_S, loop.opt_G):
        tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


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
    p.add_argument("--preset", choices=PRESETS, default="mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=5, help="iterations per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="default,contiguous,amp",
                   help="kdvision variants to time: default (channels_last), contiguous, amp (bf16), compile")
    p.add_argument("--img_size", type=int, help="generated-image size (default: the preset's; fully convolutional "
                   "players only: camvid, caltech101)")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)

    (T, S, G), cfg, task = build(args.preset, device, args.img_size)
    loops = {"reference": ReferenceDFAD(copy.deepcopy(T), copy.deepcopy(S), copy.deepcopy(G), nz=cfg.nz,
                                        batch_size=args.batch, lr_S=cfg.lr_S, lr_G=cfg.lr_G,
                                        weight_decay=cfg.weight_decay, momentum=cfg.momentum, loss=cfg.loss,
                                        device=device)}
    opt_S, opt_G = dfad_optimizers(cfg.lr_S, cfg.lr_G, cfg.weight_decay, cfg.momentum)
    common = dict(nz=cfg.nz, batch_size=args.batch, opt_S=opt_S, opt_G=opt_G, schedule=cfg.lr_schedule(),
                  loss=cfg.loss, student_steps=cfg.student_steps,
                  student_bn_update_in_g_step=cfg.student_bn_update_in_g_step,
                  batched_generation=cfg.batched_generation, train_generator=True, task=task.name, device=device)
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
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            if device.type == "cuda":
                others = torch.cuda.memory_allocated(device) - _resident_bytes(loop)
                torch.cuda.reset_peak_memory_stats(device)
            rates[name].append(time_loop(loop, args.iters, device))
            if device.type == "cuda":
                peak = (torch.cuda.max_memory_allocated(device) - others) / 2**30
                peaks[name] = max(peaks.get(name, 0.0), peak)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "preset": args.preset, "batch": args.batch, "img_size": cfg.img_size, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or
        platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "iters_per_round": args.iters, "rounds": args.rounds, "it_per_s": med,
        "ratio_vs_reference": {k: v / med["reference"] for k, v in med.items() if k != "reference"},
    }
    if device.type == "cuda":
        result["peak_step_mem_gib"] = peaks
    print(f"DFAD {args.preset} batch {args.batch} on {result['device_name']} ({device}, {result['threads']} threads)")
    for k, v in med.items():
        ratio = "" if k == "reference" else f"  x{v / med['reference']:.2f}"
        mem = f"  peak {peaks[k]:.2f} GiB" if k in peaks else ""
        print(f"  {k:<11} {v:8.3f} it/s{ratio}{mem}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
