"""Model-inversion synthesizers that fill the image pool: DeepInversion, CMI, Fast and Fast-Meta.

Every round optimises a batch against targets y (uniform random, sorted) and adds the round's best batch to the
pool (datafree_engine.md §5.2, §5.4, §5.5):

- DeepInversion: the pixels themselves (Adam, betas 0.5/0.99), random roll of ±``jitter`` px (4) and a batch flip
  per step, BN + CE − adv·JS₃(S, T) on the jittered batch, TV (+ L2) priors on the pixels; pixels clipped to the
  valid normalised range after every step. The original's "best" batch aliased the live tensor, so the **last**
  iterate entered the pool: that is the config's default; ``best_of_steps=True`` keeps the true lowest-loss batch.
- CMI: a generator re-initialised every round (:func:`~kdvision.core.generators.dcgan_init_`) and a learnable z
  (one Adam, betas 0.5/0.999); global view RandomCrop+flip, local view RandomResizedCrop+flip; BN + CE + masked
  adversarial + cr·InfoNCE over the teacher's instance means (projection head and memory bank persist).
  Fast path: the two views go through the teacher as **one** 2N batch (eval mode: identical outputs), with the BN
  statistics taken on the global half only; the bank lives on the device.
- Fast: one persistent generator trained a few steps per round (z with its own ``lr_z``), momentum BN loss whose
  EMA is updated after every round, adversarial term off during the warm-up rounds.
- Fast-Meta: the same inner loop on a copy of a meta-generator; the meta-generator then takes one Adam step
  (lr = lr_g · g_steps) on the summed inner gradients (FOMAML, ``is_maml=1``) or on
  ``reptile_scale``·(θ_meta − θ_fast), 67 in the original (Reptile, ``is_maml=0``).

The best batch of each round is tracked on the device (no ``loss.item()`` per step).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import Optimizer

from ..engine.optim import OptimizerSpec, build_optimizer, optimizer_step
from ..engine.method import unwrap
from ..generators import dcgan_init_
from ..hooks import FeatureHook, cmi_feature_layers
from ..losses import MemoryBank, ProjectionHead, adversarial_masked, cmi_contrastive_loss, jsdiv, l2_prior, tv_prior
from .augment import SynthesisViews
from .base import BestTracker, PoolSynthesizer, sorted_targets


def weighted_sum(parts: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[k] * v for k, v in parts.items())


class DeepInversionSynthesizer(PoolSynthesizer):
    name = "deepinv"

    def __init__(self, teacher: nn.Module, student: nn.Module, *, lr_g: float, adv: float, oh: float, tv: float,
                 l2: float, jitter: int, best_of_steps: bool, **kwargs: Any) -> None:
        super().__init__(teacher, student, **kwargs)
        self.lr_g = lr_g
        self.adv, self.oh, self.tv, self.l2 = adv, oh, tv, l2
        self.jitter = jitter
        self.best_of_steps = best_of_steps
        self.pixels: torch.Tensor | None = None  # the last round's optimised batch (normalised space)

    def synthesize(self) -> dict[str, torch.Tensor]:
        n = self.batch_size
        x = torch.randn(n, *self.image_shape, device=self.device).requires_grad_()
        y = sorted_targets(n, self.num_classes, self.device)
        opt = build_optimizer([x], OptimizerSpec("adam", lr=self.lr_g, betas=(0.5, 0.99)))
        lo, hi = self.normalizer.bounds()
        best = BestTracker()
        weights = {"loss_bn": self.bn, "loss_oh": self.oh, "loss_adv": self.adv, "loss_tv": self.tv,
                   "loss_l2": self.l2}
        with self.frozen_student() as S:
            for _ in range(self.g_steps):
                dy, dx = torch.randint(-self.jitter, self.jitter + 1, (2,)).tolist()  # CPU RNG: no device sync
                xj = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                if torch.rand(()) < 0.5:
                    xj = xj.flip(3)
                xj = self.layout(xj)
                parts: dict[str, torch.Tensor] = {}
                with self.autocast():
                    t = self.teacher_forward(xj)
                    if self.bn > 0:
                        parts["loss_bn"] = self.bn_loss()
                    if self.oh > 0:
                        parts["loss_oh"] = F.cross_entropy(t.float(), y)
                    if self.adv > 0:
                        parts["loss_adv"] = -jsdiv(S(xj), t, T=3.0)
                if self.tv > 0:  # the priors act on the un-jittered pixels, as in the original
                    parts["loss_tv"] = tv_prior(x)
                if self.l2 > 0:
                    parts["loss_l2"] = l2_prior(x)
                loss = weighted_sum(parts, weights)
                if self.best_of_steps:
                    best.update(loss, x)
                optimizer_step(opt, loss)
                with torch.no_grad():
                    x.data = torch.max(torch.min(x.data, hi), lo)
        self.pixels = x.detach()
        chosen = best.items[0] if self.best_of_steps else self.pixels
        self.add_to_pool(self.normalizer.inverse(chosen).clamp(0, 1))
        self.rounds += 1
        return {"loss_syn": loss.detach(), **{k: v.detach() for k, v in parts.items()}}


class GeneratorInversion(PoolSynthesizer):
    """Shared round of the methods that optimise a generator and its latent codes (CMI, Fast, Fast-Meta, RGAL).

    ``lr_z``: the latent codes' learning rate (Fast); ``None``: the codes share the generator's ``lr_g`` in one Adam
    group, as in CMI's and RGAL's code.
    """

    reset_each_round = True

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, nz: int, lr_g: float,
                 lr_z: float | None, adv: float, oh: float, **kwargs: Any) -> None:
        super().__init__(teacher, student, **kwargs)
        self.generator = generator
        self.nz = nz
        self.lr_g, self.lr_z = lr_g, lr_z
        self.adv, self.oh = adv, oh
        self.z: torch.Tensor | None = None  # the last round's latent codes
        self.global_view = SynthesisViews(self.image_shape[1:], self.normalizer, "global", augment=self.augment)

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    # -- steps subclasses customise ------------------------------------------------------------------------------
    def round_generator(self) -> nn.Module:
        """The generator this round optimises (CMI/RGAL: the generator re-initialised)."""
        G = unwrap(self.generator)
        if self.reset_each_round:
            dcgan_init_(G)
        return G

    def objective(self, x: torch.Tensor, y: torch.Tensor, student: nn.Module
                  ) -> tuple[dict[str, torch.Tensor], dict[str, float], tuple[torch.Tensor, ...]]:
        """Loss parts, their weights, and extra tensors to keep with the best batch."""
        raise NotImplementedError

    def after_backward(self, G: nn.Module, step: int) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...

    def finish_round(self, G: nn.Module, best: BestTracker) -> None: ...

    def masked_adv(self, student: nn.Module, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return adversarial_masked(student(v), t)

    # -- the round --------------------------------------------------------------------------------------------
    def synthesize(self) -> dict[str, torch.Tensor]:
        n = self.batch_size
        G = self.round_generator()
        G.train()
        z = torch.randn(n, self.nz, device=self.device).requires_grad_()
        y = sorted_targets(n, self.num_classes, self.device)
        groups = [{"params": list(G.parameters())}, {"params": [z]}]
        if self.lr_z is not None:
            groups[1]["lr"] = self.lr_z
        opt = build_optimizer(groups, OptimizerSpec("adam", lr=self.lr_g, betas=(0.5, 0.999)))
        best = BestTracker()
        with self.frozen_student() as S:
            for step in range(self.g_steps):
                with self.autocast():
                    x = G(z).float()
                parts, weights, keep = self.objective(x, y, S)
                loss = weighted_sum(parts, weights)
                best.update(loss, x, *keep)
                opt.zero_grad(set_to_none=True)
                self.before_step()
                loss.backward()
                self.after_backward(G, step)
                opt.step()
                self.after_step()
        self.finish_round(G, best)
        self.add_to_pool(best.items[0])
        self.z = z.detach()
        self.rounds += 1
        return {"loss_syn": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "z": None if self.z is None else self.z.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.z = None if state.get("z") is None else state["z"].to(self.device)


class CMISynthesizer(GeneratorInversion):
    name = "cmi"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, cr: float, cr_T: float,
                 bank_size: int, n_neg: int, head_dim: int, feature_layers: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(teacher, student, generator, **kwargs)
        self.cr, self.cr_T, self.n_neg = cr, cr_T, n_neg
        plain_teacher = unwrap(teacher)
        layers = feature_layers or cmi_feature_layers(plain_teacher)
        self.features = FeatureHook(plain_teacher, layers, kind="input_mean")
        with torch.no_grad(), self.features.active():
            plain_teacher(torch.zeros(1, *self.image_shape, device=self.device))
            self.feature_dim = self.features.concat().shape[1]
        self.features.clear()
        self.head = ProjectionHead(self.feature_dim, out_dim=head_dim).to(self.device)
        self.opt_head = build_optimizer(self.head.parameters(), OptimizerSpec("adam", lr=self.lr_g))
        self.bank = MemoryBank(bank_size, 2 * self.feature_dim, device=self.device)  # rows [local ; global]
        self.local_view = SynthesisViews(self.image_shape[1:], self.normalizer, "local", augment=self.augment)

    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "head": self.head, "bank": self.bank}

    def optimizers(self) -> dict[str, Optimizer]:
        return {"head": self.opt_head}

    def objective(self, x, y, student):
        n = x.shape[0]
        v = self.layout(torch.cat([self.global_view(x), self.local_view(x)]))
        with self.autocast():
            with self.features.active():
                t = self.teacher_forward(v, bn_slice=n)[:n]  # one 2N forward; BN statistics of the global half
            parts: dict[str, torch.Tensor] = {"loss_oh": F.cross_entropy(t.float(), y)}
            if self.bn > 0:
                parts["loss_bn"] = self.bn_loss()
            if self.adv > 0:
                parts["loss_adv"] = self.masked_adv(student, v[:n], t)
        feats = self.features.concat().float()
        self.features.clear()
        h_g, h_l = feats[:n], feats[n:]
        if self.cr > 0:
            cached = self.bank.sample(self.n_neg)
            bank_l, bank_g = cached.chunk(2, dim=1)
            with self.autocast():  # the head's matmuls over 2(N + K) rows are most of a step at full bank size
                proj = self.head(torch.cat([h_l, bank_l, h_g, bank_g])).float()
            p_l, p_g = proj.chunk(2)
            parts["loss_cr"] = cmi_contrastive_loss(p_l, p_g, n, self.cr_T)
        weights = {"loss_oh": self.oh, "loss_bn": self.bn, "loss_adv": self.adv, "loss_cr": self.cr}
        return parts, weights, (torch.cat([h_l, h_g], dim=1),)

    def before_step(self) -> None:
        self.opt_head.zero_grad(set_to_none=True)

    def after_step(self) -> None:
        self.opt_head.step()

    def finish_round(self, G, best) -> None:
        self.bank.add(best.items[1])

    def describe(self) -> dict[str, str]:
        return {"contrastive": f"{len(self.features.names)} teacher layers, d={self.feature_dim}, bank "
                               f"{self.bank.rows.shape[0]} x {self.bank.rows.shape[1]} on {self.device}, "
                               f"{self.n_neg} negatives, cr={self.cr} cr_T={self.cr_T}"}


class FastSynthesizer(GeneratorInversion):
    """Fast (``is_maml`` unused): a persistent generator, a few steps per round."""

    name = "fast"
    reset_each_round = False

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, warmup: int,
                 reset_l0: bool, **kwargs: Any) -> None:
        super().__init__(teacher, student, generator, **kwargs)
        self.warmup = warmup
        self.reset_l0 = reset_l0

    def round_generator(self) -> nn.Module:
        G = unwrap(self.generator)
        if self.reset_l0 and self.rounds + 1 == 120 + self.warmup:
            reinit_first_layers(G)
        return G

    def objective(self, x, y, student):
        v = self.layout(self.global_view(x))
        with self.autocast():
            t = self.teacher_forward(v)
            parts: dict[str, torch.Tensor] = {"loss_oh": F.cross_entropy(t.float(), y)}
            if self.bn > 0:
                parts["loss_bn"] = self.bn_loss()
            if self.adv > 0 and self.rounds + 1 >= self.warmup:  # the original's round counter is 1-based
                parts["loss_adv"] = self.masked_adv(student, v, t)
        return parts, {"loss_oh": self.oh, "loss_bn": self.bn, "loss_adv": self.adv}, ()

    def finish_round(self, G, best) -> None:
        if self.bn_hook is not None and self.bn_hook.momentum:
            self.bn_hook.update_ema()


class FastMetaSynthesizer(FastSynthesizer):
    """Fast-Meta: inner steps on a copy of the meta-generator, then one meta step (FOMAML or Reptile)."""

    name = "fast_meta"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, is_maml: bool,
                 reptile_scale: float, **kwargs: Any) -> None:
        super().__init__(teacher, student, generator, **kwargs)
        self.is_maml = is_maml
        self.reptile_scale = reptile_scale
        self.opt_meta = build_optimizer(generator.parameters(),
                                        OptimizerSpec("adam", lr=self.lr_g * self.g_steps, betas=(0.5, 0.999)))
        self.fast_generator: nn.Module | None = None  # the last round's adapted copy

    def optimizers(self) -> dict[str, Optimizer]:
        return {"meta": self.opt_meta}

    def round_generator(self) -> nn.Module:
        meta = super().round_generator()
        self.opt_meta.zero_grad(set_to_none=False)
        for p in meta.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.fast_generator = copy.deepcopy(meta)
        return self.fast_generator

    def after_backward(self, G: nn.Module, step: int) -> None:
        if self.is_maml:  # FOMAML: accumulate every inner gradient into the meta-generator
            for p, q in zip(unwrap(self.generator).parameters(), G.parameters()):
                if q.grad is not None:
                    p.grad.add_(q.grad)

    def finish_round(self, G, best) -> None:
        super().finish_round(G, best)
        meta = unwrap(self.generator)
        if not self.is_maml:  # Reptile: move towards the adapted weights
            with torch.no_grad():
                for p, q in zip(meta.parameters(), G.parameters()):
                    p.grad.add_(p - q, alpha=self.reptile_scale)
        self.opt_meta.step()


def reinit_first_layers(G: nn.Module) -> None:
    """Fast's ``reset_l0``: re-initialise the input projection ``l1.0`` and the first BN ``conv_blocks.0`` (N(0, 0.02)
    weights, zero biases). The original's condition (``n == "l1.0" or "conv_blocks.0"``) is always true and would
    touch every module; we implement what it names."""
    modules = dict(G.named_modules())
    for name in ("l1.0", "conv_blocks.0"):
        m = modules.get(name)
        if m is not None:
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
