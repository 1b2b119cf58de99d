#!/usr/bin/env python
"""MosaicKD iteration throughput: kdvision's ``MosaicKD.train_step()`` against the original's passes, in one process.

- **reference** (``mosaickd_reference.py``): the original ``train()`` — teacher gradients on, weight gradients of S
  and D in the G step, per-step ``.item()`` meters, and the OOD set decoded by **two** DataLoader stacks (the D
  stream: ToTensor + Normalize; the KD stream: RandomCrop(32, 4) + HFlip + ToTensor + Normalize, cycled), each
  reading the images as PIL images like torchvision's CIFAR datasets, with ``--workers`` workers.
- **ours**: one uint8 copy of the OOD set on the device, two index streams, batched crop/flip on the device, frozen
  teacher, input-gradient-only G step, no host sync. Variants: ``default`` (fp32, channels_last), ``contiguous``,
  ``amp`` (bf16 autocast + channels_last).

Players and hyper-parameters come from ``kd_mosaic.py``'s config and the README command (wrn40_2 → wrn16_1,
CIFAR-100 classes, adv 1, align 1, local 1, balance 10); the OOD images are random uint8 (the data's content does
not change the cost). Rounds alternate between the loops; medians are reported.

    python benchmarks/bench_mosaickd.py --device cpu --quick          # ~2 min on 2 cores
    python benchmarks/bench_mosaickd.py --device cuda --batch 256 --iters 10 --rounds 5
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

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mosaickd_reference import ReferenceMosaicKD  # noqa: E402

from kdvision.core.data import dataset_spec  # noqa: E402
from kdvision.core.engine.optim import LRSchedule, OptimizerSpec  # noqa: E402
from kdvision.core.generators import create_discriminator, create_generator  # noqa: E402
from kdvision.core.methods.mosaickd import MosaicKD  # noqa: E402
from kdvision.core.models import create_model  # noqa: E402
from kdvision.core.recipes.mosaickd import MosaicKDConfig  # noqa: E402
from kdvision.core.synthesis.augment import Augment  # noqa: E402

README = dict(adv=1.0, align=1.0, local=1.0, balance=10.0)  # the README command's weights


class PILImages(Dataset):
    """uint8 images served as PIL images through a torchvision transform (what torchvision's CIFAR10 does)."""

    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), 0


def reference_streams(images: np.ndarray, mean, std, batch: int, workers: int, device: torch.device):
    from torchvision import transforms as T

    norm = T.Normalize(mean, std)
    d_loader = DataLoader(PILImages(images, T.Compose([T.ToTensor(), norm])), batch_size=batch, shuffle=True,
                          num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    kd_loader = DataLoader(PILImages(images, T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                                        T.ToTensor(), norm])),
                           batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                           persistent_workers=workers > 0)

    def cycle(loader):
        while True:
            yield from loader

    d_it, kd_it = cycle(d_loader), cycle(kd_loader)
    return (lambda: next(d_it)[0].to(device, non_blocking=True)), (lambda: next(kd_it)[0].to(device, non_blocking=True))


def time_loop(loop, iters: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        loop.train_step()
    sync()
    return iters / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ood", type=int, default=2048, help="OOD images (random uint8, 32x32)")
    p.add_argument("--iters", type=int, default=5, help="iterations per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="loader workers of each reference DataLoader")
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="default,contiguous,amp")
    p.add_argument("--quick", action="store_true", help="CPU scale: resnet8 players, batch 32, 2 iterations")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = MosaicKDConfig()
    teacher, student = ("resnet8", "resnet8") if args.quick else (cfg.teacher, cfg.student)
    batch, iters = (32, 2) if args.quick else (args.batch, args.iters)
    spec = dataset_spec(cfg.dataset)
    mean, std = spec.mean, spec.std
    torch.manual_seed(0)
    players = [create_model(teacher, spec.num_classes), create_model(student, spec.num_classes),
               create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf, img_size=32, nc=3),
               create_discriminator(cfg.discriminator, nc=3, ndf=cfg.ndf)]
    players = [m.to(device) for m in players]
    images = np.random.default_rng(0).integers(0, 256, (args.ood, 32, 32, 3), dtype=np.uint8)
    ood = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    total = 10**6  # a long run's cosine: the LR barely moves during the benchmark
    real, kd = reference_streams(images, mean, std, batch, args.workers, device)
    loops = {"reference": ReferenceMosaicKD(*[copy.deepcopy(m) for m in players], real=real, ood=kd, nz=cfg.nz,
                                            batch_size=batch, mean=mean, std=std, lr=cfg.lr, lr_g=cfg.lr_g,
                                            weight_decay=cfg.weight_decay, total_iters=total, T=cfg.T, sync=True,
                                            device=device, **README)}
    cosine = LRSchedule("cosine", unit="iter", total=total)
    adam = OptimizerSpec("adam", lr=cfg.lr_g, betas=(0.5, 0.999))
    for name in args.variants.split(","):
        channels_last = name != "contiguous"
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        t, s, g, d = (copy.deepcopy(m).to(memory_format=fmt) for m in players)
        loops[name] = MosaicKD(t, s, g, d, ood, nz=cfg.nz, batch_size=batch, mean=mean, std=std, kd_mean=mean,
                               kd_std=std, kd_augment=Augment(4, True),
                               opt_S=OptimizerSpec("sgd", lr=cfg.lr, momentum=cfg.momentum,
                                                   weight_decay=cfg.weight_decay),
                               opt_G=adam, opt_D=adam, schedule_S=cosine, schedule_G=cosine, schedule_D=cosine,
                               T=cfg.T, kd_steps=cfg.kd_steps, student_bn_update_in_g_step=True,
                               generator_train_mode_sampling=True, seed=0, device=device, amp=name == "amp",
                               channels_last=channels_last, **README)
    for loop in loops.values():  # warm-up: allocator, cuDNN autotuning, loader workers
        loop.train_step()
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            rates[name].append(time_loop(loop, iters, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {"batch": batch, "players": f"{teacher} -> {student}", "ood_images": args.ood, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
              platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "iters_per_round": iters, "rounds": args.rounds, "workers": args.workers,
              "it_per_s": med, "ratio_vs_reference": {k: v / med["reference"] for k, v in med.items()
                                                      if k != "reference"}}
    print(f"MosaicKD {teacher} -> {student}, batch {batch} (+{batch} OOD per student step) on "
          f"{result['device_name']} ({device}, {result['threads']} threads)")
    for k, v in med.items():
        print(f"  {k:<11} {v:8.3f} it/s" + ("" if k == "reference" else f"  x{v / med['reference']:.2f}"))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
