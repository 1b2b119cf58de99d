#!/usr/bin/env python
"""Data-free engine throughput (CMI, RGAL): kdvision's KD step and synthesis step against reference-equivalent
loops, in one process.

Loops (same players, initial weights, batch and loss terms). Every hyper-parameter comes from the presets, built
into a ``DataFreeConfig`` as the entry scripts do: CMI = ``kd_datafree.py --method cmi`` (``datafree.yaml``), RGAL =
the README command (``rgal.py --config rgal_cifar10.yaml``), both on CIFAR-10 (10 classes, its normalisation); the
benchmark sets only the sizes (batches, bank, negatives, pool, steps) and the variant switches:

- **KD step, reference**: the pool is N PNG files (uint8, written with PIL as the originals did) read back by a
  ``DataLoader`` (CIFAR training transform, ``shuffle=True``, ``--workers``) that is **rebuilt every round**
  (after every ``synthesize()``; its cost — folder walk, worker start-up, first batch — is amortised over
  ``--kd_steps``); batch -> device, teacher under ``no_grad`` (the synthesizer's always-on hooks fire), student
  forward/backward/SGD, then the original meters' host syncs: CMI two ``.item()`` + an extra KL for the loss
  meter, RGAL two ``.item()`` + one per loss term. RGAL: ``--pair_sample`` (two augmented views per PNG), CD
  loss through 1x1 adapters on the full block maps, student triplet on the penultimate feature.
- **KD step, ours**: ``DataFreeKD.train_step()`` on the device-resident uint8 ``ImagePool`` (gather + batched
  crop/flip + normalise), wired by ``build_synthesizer``, ``build_student_terms`` and ``build_datafree_kd`` as the
  recipe does; the pool is pre-filled and ``kd_count`` is set so that no synthesis round starts: only KD steps are
  timed.
- **Synthesis step, reference**: one inner step of the original ``synthesize()``: G, kornia view(s), CMI: **two**
  teacher forwards (global, then local) with hooks that fire on both (DeepInversion statistics via a permuted
  copy), masked adversarial with the student, memory bank on the **CPU** sampled with ``random.sample`` and the
  rows copied to the device every step, projection head over [batch + n_neg] rows; RGAL: teacher and student with
  block taps, balanced-sampler triplet on the student's blocks; teacher and student parameters require grad
  (weight gradients computed, never used), ``loss.item()`` per step for best-batch tracking.
- **Synthesis step, ours**: ``synthesizer.synthesize()`` with ``g_steps = --iters``, timed and divided by
  ``--iters`` (round set-up and the pool/bank insert included, for both loops; PNG writes for the reference).

Variants of ours: ``default`` (fp32, contiguous), ``channels_last``, ``amp`` (bf16 autocast + channels_last).
Rounds alternate between the loops so that machine noise hits all of them alike; medians are reported. Before
timing, our KD step and the reference KD step must give the same loss on the same (unaugmented) batch with the
same weights and the same triplet draws (fp32 variants: |diff| <= 1e-5 · max(1, |loss|); the τ² = 400 factor
puts the loss near 100).

    python benchmarks/bench_datafree.py --device cpu --quick --threads 1      # ~1.5 min on 2 cores
    python benchmarks/bench_datafree.py --device cuda --iters 20 --rounds 5

On CUDA ``peak_step_mem_gib`` is the most memory allocated during a loop's timed steps, its own players,
optimiser states, pool and bank included, the other loops' not.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from kdvision.classification.common import load_preset
from kdvision.classification.datafree import preset as datafree_preset
from kdvision.core.data import dataset_spec
from kdvision.core.engine.config import apply_overrides
from kdvision.core.generators import create_generator, dcgan_init_
from kdvision.core.hooks import block_names, bn_layer_names, cmi_feature_layers, head_name
from kdvision.core.losses import ProjectionHead, adversarial_masked, cmi_contrastive_loss, triplet_loss
from kdvision.core.methods.datafree import DataFreeKD
from kdvision.core.models import create_model
from kdvision.core.recipes.datafree import DataFreeConfig, build_datafree_kd, build_student_terms, build_synthesizer
from kdvision.core.synthesis import Augment, Normalizer, SynthesisViews

DATASET = "cifar10"
SPEC = dataset_spec(DATASET)
CIFAR10 = (SPEC.mean, SPEC.std)
SHAPE = (SPEC.in_channels, *SPEC.image_size)
PRESETS = {  # the scripts' presets: datafree.yaml's cmi entry; rgal.yaml + rgal_cifar10.yaml (the README command)
    "cmi": lambda: datafree_preset("cmi"),
    # the reference loop is RGAL's released code, which has no class-balance term (the README's --balance 0.1 did
    # not parse there; rgal.md section 7): the benchmark compares that objective
    "rgal": lambda: {**load_preset("rgal"), **load_preset("rgal_cifar10"), "balance": 0.0},
}
SIZES = {  # kd_batch: images (CMI) or pairs (RGAL: 2x images) per KD step; pool: PNG files / pooled images
    "full": dict(syn_batch=256, kd_batch=128, bank=40960, n_neg=4096, pool=2048, iters=10, rounds=3),
    "quick": dict(syn_batch=32, kd_batch=32, bank=2048, n_neg=256, pool=256, iters=2, rounds=3),
}
VARIANTS = {"default": {}, "channels_last": dict(channels_last=True), "amp": dict(channels_last=True, amp=True)}


def method_config(method: str, size: dict, **variant) -> DataFreeConfig:
    """The method's preset as a config, on CIFAR-10, with the benchmark's sizes (one inner step per round: the
    synthesis loop sets ``g_steps`` to its timed step count) and the variant's switches."""
    cfg = apply_overrides(DataFreeConfig(), PRESETS[method](), "the preset")
    sizes = dict(dataset=DATASET, batch_size=size["kd_batch"], synthesis_batch_size=size["syn_batch"], g_steps=1,
                 bank_size=size["bank"], n_neg=size["n_neg"])
    return apply_overrides(cfg, {**sizes, **variant}, "the benchmark")


# ------------------------------------------------------------------------------------------ reference pieces
def ref_kl(s: torch.Tensor, t: torch.Tensor, T: float, reduction: str = "batchmean") -> torch.Tensor:
    """The originals' ``datafree.criterions.kldiv``."""
    return F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction=reduction) * (T * T)


def di_feature(m: nn.BatchNorm2d, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The originals' ``DeepInversionHook.r_feature`` (a permuted copy of every BN input, on every forward)."""
    nch = x.shape[1]
    var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
    return torch.norm(m.running_var.data - var, 2) + torch.norm(m.running_mean.data - x.mean([0, 2, 3]), 2)


class Taps:
    """Always-on forward hooks, as the originals registered them: they fire on every forward (KD forwards and
    CMI's second, local-view teacher forward included) and keep the last value."""

    def __init__(self, model: nn.Module, names: list[str], fn: Callable) -> None:
        modules = dict(model.named_modules())
        self.values: list[torch.Tensor | None] = [None] * len(names)
        for i, name in enumerate(names):
            modules[name].register_forward_hook(self._hook(i, fn))

    def _hook(self, i: int, fn: Callable) -> Callable:
        def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            self.values[i] = fn(m, inputs[0], out)

        return hook


class PNGFolder(torch.utils.data.Dataset):
    """The originals' ``UnlabeledImageDataset``: every PNG under ``root`` (``os.walk`` at construction), opened with
    PIL and transformed; ``pair``: two independent transforms of each image (RGAL ``--pair_sample``)."""

    def __init__(self, root: Path, transform: Callable, pair: bool) -> None:
        self.files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith("png")]
        self.transform, self.pair = transform, pair

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = Image.open(self.files[i])
        return [self.transform(img), self.transform(img)] if self.pair else self.transform(img)


def save_pngs(images: torch.Tensor, folder: Path, tag: str) -> None:
    """The originals' ``save_image_batch(..., pack=False)``: uint8 (truncated), one PNG per image."""
    arrays = (images.detach().clamp(0, 1).cpu().numpy() * 255).astype("uint8")
    for i, a in enumerate(arrays):
        Image.fromarray(a.transpose(1, 2, 0)).save(folder / f"{tag}-{i}.png")


class Reference:
    """The original loops' passes for one method (CMI ``datafree_kd.py`` + ``contrastive.py``, RGAL ``main.py`` +
    ``synthesis/triplet.py``). Loss formulas reuse kdvision's functions where only the formula matters (masked
    adversarial, InfoNCE, triplet; the same maths as the originals'); the passes, hooks, data path, bank, syncs
    and weight gradients are the originals'."""

    def __init__(self, method: str, T: nn.Module, S: nn.Module, G: nn.Module, adapters: nn.Module | None,
                 pool: torch.Tensor, size: dict, workers: int, device: torch.device, tmp: Path) -> None:
        self.cfg = method_config(method, size)
        self.method, self.size, self.device, self.workers = method, size, device, workers
        self.T, self.S, self.G = T.eval(), S, G  # teacher parameters require grad: never frozen in the originals
        self.normalizer = Normalizer(*CIFAR10).to(device)
        self.global_view = SynthesisViews(SHAPE[1:], self.normalizer, "global")
        self.di = Taps(T, bn_layer_names(T), di_feature)
        params = list(S.parameters())
        if method == "cmi":
            self.feats = Taps(T, cmi_feature_layers(T), lambda m, x, out: torch.mean(x, dim=[2, 3]))
            with torch.no_grad():
                T(torch.zeros(1, *SHAPE, device=device))
            d = sum(v.shape[1] for v in self.feats.values)
            self.head = ProjectionHead(d, out_dim=self.cfg.head_dim).to(device)
            self.opt_head = torch.optim.Adam(self.head.parameters(), lr=self.cfg.lr_g)
            self.bank = torch.randn(size["bank"], 2 * d)  # on the CPU, full: sampled from all rows
            self.bank_ptr = 0
            self.local_view = SynthesisViews(SHAPE[1:], self.normalizer, "local")
        else:
            self.t_blocks = Taps(T, block_names(T), lambda m, x, out: out)  # return_features=True
            self.s_blocks = Taps(S, block_names(S), lambda m, x, out: out)
            self.s_pen = Taps(S, [head_name(S)], lambda m, x, out: x)
            self.adapters = adapters
            params += list(adapters.parameters())
        self.opt_S = torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                                     weight_decay=self.cfg.weight_decay)
        self.pool_dir, self.round_dir = tmp / f"{method}-pool", tmp / f"{method}-round"
        self.pool_dir.mkdir()
        self.round_dir.mkdir()
        for start in range(0, pool.shape[0], 256):
            save_pngs(pool[start:start + 256], self.pool_dir, str(start // 256))
        import torchvision.transforms as TV  # the CIFAR training transform of the originals' registry

        self.transform = TV.Compose([TV.RandomCrop(32, padding=4), TV.RandomHorizontalFlip(), TV.ToTensor(),
                                     TV.Normalize(*CIFAR10)])
        self.batches, self.pending = None, None

    def modules(self) -> list[nn.Module]:
        return [self.T, self.S, self.G] + ([self.head] if self.method == "cmi" else [self.adapters])

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_S] + ([self.opt_head] if self.method == "cmi" else [])

    # -- KD ---------------------------------------------------------------------------------------------------
    def rebuild(self) -> float:
        """A new DataLoader over every PNG and its first batch, as after every ``synthesize()``; returns seconds."""
        t0 = time.perf_counter()
        loader = torch.utils.data.DataLoader(
            PNGFolder(self.pool_dir, self.transform, self.method == "rgal"), batch_size=self.size["kd_batch"],
            shuffle=True, num_workers=self.workers, pin_memory=self.device.type == "cuda")
        self.batches = iter(loader)  # the previous iterator's workers shut down here, as in the original
        self.pending = next(self.batches)
        return time.perf_counter() - t0

    def kd_loss(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t = self.T(x)
        s = self.S(x)
        parts = {"kd": ref_kl(s, t, self.cfg.T)}
        if self.method == "rgal":  # CD on the full maps (1x1 conv, then GAP), student triplet on the pooled feature
            parts["cd"] = self.cfg.cd_loss * sum(
                F.mse_loss(conv(sb).mean(dim=(2, 3)), tb.mean(dim=(2, 3)))
                for conv, sb, tb in zip(self.adapters.adapters, self.s_blocks.values, self.t_blocks.values))
            parts["gram"] = torch.tensor(0.0)
            parts["striplet"] = self.cfg.striplet * triplet_loss([self.s_pen.values[0]], s, t.argmax(-1))
        return parts, s, t

    def kd_step(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is None:
            batch, self.pending = (self.pending, None) if self.pending is not None else (next(self.batches), None)
            x = (torch.cat(batch) if isinstance(batch, list) else batch).to(self.device, non_blocking=True)
        self.S.train()
        parts, s, t = self.kd_loss(x)
        loss = sum(parts.values())
        self.opt_S.zero_grad()
        loss.backward()
        self.opt_S.step()
        with torch.no_grad():  # the meters: TopkAccuracy((1, 5)) reads two values per step
            for k in (1, 5):
                s.topk(k, 1)[1].eq(t.max(1)[1].view(-1, 1)).float().sum(0).sum().item()
            if self.method == "cmi":  # RunningLoss(KLDiv(reduction='sum')): one more KL
                ref_kl(s, t, 1.0, reduction="sum")
            else:  # AverageMeter.update(loss.item()) per term
                [v.item() for v in parts.values()]
        return loss.detach()

    # -- synthesis ----------------------------------------------------------------------------------------------
    def synthesize(self, g_steps: int) -> None:
        T, S, G, cfg, n = self.T, self.S, self.G, self.cfg, self.size["syn_batch"]
        S.eval()
        dcgan_init_(G)  # the originals' reset_model
        z = torch.randn(n, cfg.nz, device=self.device).requires_grad_()
        y = torch.randint(0, SPEC.num_classes, (n,)).sort()[0].to(self.device)
        opt = torch.optim.Adam([{"params": G.parameters()}, {"params": [z]}], cfg.lr_g, betas=[0.5, 0.999])
        best_cost, best = 1e6, None
        for _ in range(g_steps):
            x = G(z)
            v = self.global_view(x)
            t = T(v)
            loss = cfg.bn * sum(self.di.values) + cfg.oh * F.cross_entropy(t, y)
            loss = loss + cfg.adv * adversarial_masked(S(v), t)
            if self.method == "cmi":
                h_g = torch.cat(self.feats.values, dim=1)
                T(self.local_view(x))  # second teacher forward; every hook fires again
                h_l = torch.cat(self.feats.values, dim=1)
                index = random.sample(list(range(self.bank.shape[0])), k=self.size["n_neg"])
                c_l, c_g = self.bank[index].to(self.device).chunk(2, dim=1)
                p_l, p_g = self.head(torch.cat([h_l, c_l, h_g, c_g])).chunk(2)
                loss = loss + cfg.cr * cmi_contrastive_loss(p_l, p_g, n, cfg.cr_T)
                keep = torch.cat([h_l.data, h_g.data], dim=1)
            else:
                blocks = (self.s_blocks if cfg.triplet_target == "student" else self.t_blocks).values
                loss = loss + cfg.triplet * triplet_loss(blocks[cfg.start_layer:cfg.end_layer], t, t.argmax(-1),
                                                         sampler="balanced" if cfg.balanced_sampling else "distance")
                keep = None
            if best_cost > loss.item() or best is None:
                best_cost, best = loss.item(), (x.data, keep)
            opt.zero_grad()
            if self.method == "cmi":
                self.opt_head.zero_grad()
            loss.backward()  # weight gradients of T and S too
            opt.step()
            if self.method == "cmi":
                self.opt_head.step()
        S.train()
        save_pngs(best[0], self.round_dir, "0")  # data_pool.add (a scratch folder: the KD pool keeps its size)
        if self.method == "cmi":
            self.bank[self.bank_ptr:self.bank_ptr + n] = best[1].cpu()
            self.bank_ptr = (self.bank_ptr + n) % self.bank.shape[0]


# -------------------------------------------------------------------------------------------------- ours
def build_ours(method: str, variant: str, T: nn.Module, S: nn.Module, G: nn.Module, adapters: nn.Module | None,
               pool: torch.Tensor, size: dict, device: torch.device) -> DataFreeKD:
    opts = VARIANTS[variant]
    fmt = torch.channels_last if opts.get("channels_last") else torch.contiguous_format
    t, s, g = (copy.deepcopy(m).to(memory_format=fmt) for m in (T, S, G))
    cfg = method_config(method, size, **opts)
    syn = build_synthesizer(cfg, t, s, num_classes=SPEC.num_classes, shape=SHAPE, norm=CIFAR10, device=device,
                            world=1, augment=Augment.from_spec(SPEC), generator=g)
    terms = build_student_terms(cfg, t, s, SHAPE)
    if terms is not None:
        terms.adapters.load_state_dict(adapters.state_dict())
    kd = build_datafree_kd(cfg, t, s, syn, world=1, student_terms=terms, device=device)
    kd.kd_steps = 1 << 40  # with kd_count = 1, never a multiple of kd_steps: train_step() takes KD steps only,
    kd.kd_count = 1        # no synthesis round starts
    syn.pool.add(pool)
    if method == "cmi":  # a full bank, as after 160 rounds
        syn.bank.add(torch.randn(size["bank"], syn.bank.dim, device=device))
    return kd


def ours_resident(kd: DataFreeKD) -> list[torch.Tensor]:
    mods = [kd.teacher, *kd.modules().values()]
    tensors = [x for m in mods for x in (*m.parameters(), *m.buffers())] + [kd.synthesizer.pool.images]
    for opt in kd.optimizers().values():
        tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return tensors


def ref_resident(ref: Reference) -> list[torch.Tensor]:
    tensors = [x for m in ref.modules() for x in (*m.parameters(), *m.buffers())]
    tensors += [p.grad for m in ref.modules() for p in m.parameters() if p.grad is not None]
    return tensors + [v for o in ref.optimizers() for st in o.state.values() for v in st.values()
                      if torch.is_tensor(v)]


# ------------------------------------------------------------------------------------------------- timing
@dataclasses.dataclass
class Loop:
    run: Callable[[int], object]  # ``iters`` timed units (KD steps or synthesis inner steps)
    resident: Callable[[], list[torch.Tensor]]  # its own tensors (peak memory excludes the other loops')
    before_round: Callable[[], float] = lambda: 0.0  # untimed here; returns seconds amortised over ``amortise``
    amortise: int = 1


def measure(loops: dict[str, Loop], iters: int, rounds: int, device: torch.device) -> dict[str, dict]:
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for loop in loops.values():  # warm-up (allocator, cuDNN autotuning, worker start-up)
        loop.before_round()
        loop.run(1)
    per_unit: dict[str, list[float]] = {k: [] for k in loops}
    overheads: dict[str, list[float]] = {k: [] for k in loops}
    peaks: dict[str, float] = {}
    for _ in range(rounds):
        for name, loop in loops.items():
            overhead = loop.before_round()
            if cuda:
                mine = sum(t.numel() * t.element_size() for t in {id(t): t for t in loop.resident()}.values()
                           if t.is_cuda)
                others = torch.cuda.memory_allocated(device) - mine
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t0 = time.perf_counter()
            loop.run(iters)
            sync()
            per_unit[name].append((time.perf_counter() - t0) / iters + overhead / loop.amortise)
            overheads[name].append(overhead)
            if cuda:
                peaks[name] = max(peaks.get(name, 0.0), (torch.cuda.max_memory_allocated(device) - others) / 2**30)
    out = {}
    for name in loops:
        med = statistics.median(per_unit[name])
        out[name] = {"steps_per_s": 1.0 / med, "round_overhead_s": statistics.median(overheads[name])}
        if cuda:
            out[name]["peak_step_mem_gib"] = peaks[name]
    return out


def check_kd_equal(method: str, ref: Reference, ours: dict[str, DataFreeKD], pool: torch.Tensor,
                   size: dict) -> dict[str, float]:
    """Same weights, same unaugmented batch: the reference KD loss and ours (fp32 variants) agree to 1e-5 (relative
    to the loss when it is above 1: τ² = 400 makes it ~100). On CUDA with TF32 off and deterministic algorithms."""
    n = size["kd_batch"] * (2 if method == "rgal" else 1)
    x = ref.normalizer(pool[:n])
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = (
        False, True, False)
    torch.manual_seed(0)  # the triplet mining draws negatives: same draws in both
    want = sum(ref.kd_loss(x)[0].values()).item()
    diffs = {}
    for name, kd in ours.items():
        batch = kd.synthesizer.layout(x)
        kd.synthesizer.sample = lambda k, batch=batch: batch
        torch.manual_seed(0)
        out = kd.train_step()
        del kd.synthesizer.sample
        got = float(sum(v for k, v in out.items() if k.startswith("loss_")))
        diffs[name] = abs(got - want)
        if not VARIANTS[name].get("amp"):
            assert diffs[name] <= 1e-5 * max(1.0, abs(want)), (
                f"{method} KD loss differs from the reference: {got} vs {want} ({name})")
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    return {"reference_loss": want, **{f"abs_diff_{k}": v for k, v in diffs.items()}}


def bench_method(method: str, args, size: dict, device: torch.device, tmp: Path) -> dict:
    cfg = method_config(method, size)
    torch.manual_seed(0)
    T = create_model(cfg.teacher, num_classes=SPEC.num_classes).to(device)
    S = create_model(cfg.student, num_classes=SPEC.num_classes).to(device)
    G = create_generator(cfg.generator, nz=cfg.nz, ngf=cfg.ngf, img_size=SHAPE[1:], nc=SHAPE[0]).to(device)
    pool_n = max(size["pool"], size["kd_batch"] * (size["iters"] + 1))
    with torch.no_grad():  # pool images: generator outputs (smooth, like real synthetic PNGs), in [0, 1]
        dcgan_init_(G)
        pool = torch.cat([G(torch.randn(256, cfg.nz, device=device)) for _ in range(-(-pool_n // 256))])[:pool_n]
        pool = (pool * 255).to(torch.uint8).float() / 255  # as stored: both loops read the same quantised images
    adapters = None
    if method == "rgal":  # one set of initial adapter weights for every loop
        adapters = build_student_terms(cfg, copy.deepcopy(T), copy.deepcopy(S), SHAPE).adapters
    ref = Reference(method, copy.deepcopy(T), copy.deepcopy(S), copy.deepcopy(G), copy.deepcopy(adapters), pool,
                    size, args.workers, device, tmp)
    ours = {v: build_ours(method, v, T, S, G, adapters, pool, size, device) for v in args.variants.split(",")}
    check = check_kd_equal(method, ref, ours, pool, size)
    result = {"kd_check": check, "pool_pngs": pool_n}
    if "kd" in args.parts:
        loops = {"reference": Loop(lambda k: [ref.kd_step() for _ in range(k)], lambda: ref_resident(ref),
                                   ref.rebuild, args.kd_steps)}
        loops.update({v: Loop(lambda k, kd=kd: [kd.train_step() for _ in range(k)], lambda kd=kd: ours_resident(kd))
                      for v, kd in ours.items()})
        result["kd"] = measure(loops, size["iters"], size["rounds"], device)
    if "synth" in args.parts:
        def run_ours(k: int, kd: DataFreeKD) -> None:
            kd.synthesizer.g_steps = k
            kd.synthesizer.synthesize()

        loops = {"reference": Loop(ref.synthesize, lambda: ref_resident(ref))}
        loops.update({v: Loop(lambda k, kd=kd: run_ours(k, kd), lambda kd=kd: ours_resident(kd))
                      for v, kd in ours.items()})
        result["synth"] = measure(loops, size["iters"], size["rounds"], device)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small batches, bank and pool; 3 rounds of 2 steps")
    p.add_argument("--methods", default="cmi,rgal")
    p.add_argument("--parts", default="kd,synth", help="kd, synth or both")
    p.add_argument("--variants", default="default,channels_last,amp",
                   help="kdvision variants: default (fp32), channels_last, amp (bf16 + channels_last)")
    for key in SIZES["full"]:
        p.add_argument(f"--{key}", type=int, help=f"override the preset's {key}")
    p.add_argument("--kd_steps", type=int, default=400, help="KD steps per round: the reference's loader rebuild "
                   "is amortised over them (CMI scratch and RGAL: 400)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="reference DataLoader workers (original: 4)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = {k: (getattr(args, k) if getattr(args, k) is not None else v)
            for k, v in SIZES["quick" if args.quick else "full"].items()}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # for every loop alike
    info = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "workers": args.workers, "kd_steps": args.kd_steps,
            **size}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            results[method] = bench_method(method, args, size, device, Path(tmp))
    print(f"\nData-free engine on {info['device_name']} ({device}, {info['threads']} threads, {info['cpus']} CPUs); "
          f"synthesis batch {size['syn_batch']}, KD batch {size['kd_batch']}, bank {size['bank']} x 2d, "
          f"n_neg {size['n_neg']}, {size['iters']} steps x {size['rounds']} rounds\n")
    mem = device.type == "cuda"
    print("| method | part | loop | steps/s | images/s | x ref |" + (" peak GiB |" if mem else ""))
    print("|---|---|---|---|---|---|" + ("---|" if mem else ""))
    for method, res in results.items():
        for part in ("kd", "synth"):
            if part not in res:
                continue
            ref_rate = res[part]["reference"]["steps_per_s"]
            images = size["syn_batch"] if part == "synth" else size["kd_batch"] * (2 if method == "rgal" else 1)
            for loop, r in res[part].items():
                r["images_per_s"] = r["steps_per_s"] * images
                r["ratio_vs_reference"] = r["steps_per_s"] / ref_rate
                print(f"| {method} | {part} | {loop} | {r['steps_per_s']:.3f} | {r['images_per_s']:.1f} | "
                      f"{r['ratio_vs_reference']:.2f} |" + (f" {r['peak_step_mem_gib']:.2f} |" if mem else ""))
        notes = [f"KD loss check: reference {res['kd_check']['reference_loss']:.6f}, |ours - ref| " + ", ".join(
            f"{k[9:]} {v:.1e}" for k, v in res["kd_check"].items() if k.startswith("abs_diff_"))]
        if "kd" in res:
            notes.append(f"reference loader rebuild over {res['pool_pngs']} PNGs: "
                         f"{res['kd']['reference']['round_overhead_s']:.2f} s per round (/ {args.kd_steps} steps)")
        print("\n".join(f"  {method}: {n}" for n in notes))
    result = {**info, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
