"""MosaicKD and Blind KD — knowledge distillation from out-of-domain data (Fang et al., NeurIPS 2021; ``reference/mosaickd.md``).

A four-player game: generator G, patch discriminator D, frozen teacher T, student S. One iteration, in the
original's order (§2):

1. **D step.** z ~ N(0, I) (B × nz), x̂ = N_in(G(z)) (graph kept); x' = the next batch of the D stream (OOD images,
   no augmentation, in-domain normalisation N_in). L_D = local · patch_d_loss(D(x̂.detach()), D(x')); Adam on D.
2. **G step** on the same x̂ (D already updated): L_G = adv · (−KL_1(p_T ‖ p_S)) + align · H̄(p_T) + local ·
   patch_g_loss(D(x̂)) + balance · Σ p̄ log₂ p̄; Adam on G. S runs in train mode (its BN statistics absorb x̂, as
   in the original: ``student_bn_update_in_g_step``); S and D compute input gradients only.
3. **5 student steps.** Under no_grad: x̂' = N_in(G(z')) (G in train mode: ``generator_train_mode_sampling``),
   x_ood = the next batch of the KD stream (the OOD set's own training augmentation), X = [x̂'; x_ood]; then
   L_S = τ² KL_τ(p_T(X) ‖ p_S(X)); SGD on S.
4. The cosine schedules of S, G and D step once per iteration (the engine's schedule service, ``unit="iter"``).

Data: **one** uint8 copy of the OOD training set (``ood``, N × C × H × W, ideally on the device) feeds both streams
through two seeded, resumable index streams. The KD stream is normalised with the in-domain statistics (T and S
expect them); ``kd_mean``/``kd_std`` = the OOD set's own statistics reproduce the original (``legacy``, §5.2).

Hot path (DESIGN.md): T frozen (no weight gradients ever); in the G step S's and D's parameters stop requiring
gradients, so only input gradients are computed; the images never leave the device; no host synchronisation.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..data.stream import StreamLoader
from ..engine.distributed import DistInfo
from ..engine.method import LossDictMethod, Method, freeze, no_weight_grads, preserved_bn_stats, unwrap
from ..engine.optim import LRSchedule, OptimizerSpec
from ..losses import class_balance, entropy, kldiv, onehot_ce, patch_d_loss, patch_g_loss
from ..synthesis.augment import Augment


class _Indices(torch.utils.data.Dataset):
    """0..n-1: the stream hands out batches of indices into the device-resident OOD tensor."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _index_stream(n: int, batch_size: int, seed: int, dist: DistInfo) -> StreamLoader:
    return StreamLoader(_Indices(n), batch_size, seed=seed, rank=dist.rank, world_size=dist.world_size,
                        collate_fn=torch.tensor)


def _check_ood(ood: torch.Tensor) -> None:
    if ood.dtype != torch.uint8 or ood.dim() != 4:
        raise ValueError(f"the OOD images must be one uint8 N x C x H x W tensor, got {ood.dtype} {tuple(ood.shape)}")


def _stats(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def _normalized(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, memory_format: torch.memory_format
                ) -> torch.Tensor:
    """[0, 1] images → ``(x - mean) / std`` in the players' memory format (the input of every player)."""
    return ((x - mean) / std).contiguous(memory_format=memory_format)


class MosaicKD(Method):
    name = "mosaickd"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, discriminator: nn.Module,
                 ood: torch.Tensor, *, nz: int, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 kd_mean: Sequence[float], kd_std: Sequence[float], kd_augment: Augment, opt_S: OptimizerSpec,
                 opt_G: OptimizerSpec, opt_D: OptimizerSpec, schedule_S: LRSchedule, schedule_G: LRSchedule,
                 schedule_D: LRSchedule, T: float, adv: float, align: float, local: float, balance: float,
                 kd_steps: int, student_bn_update_in_g_step: bool, generator_train_mode_sampling: bool, seed: int,
                 dist: DistInfo = DistInfo(), device: torch.device = torch.device("cpu"), amp: bool = False,
                 channels_last: bool = False, sample_count: int = 32) -> None:
        super().__init__(device, amp)
        _check_ood(ood)
        self.teacher = freeze(teacher)
        self.student, self.generator, self.discriminator = student, generator, discriminator
        self.ood = ood.to(device)
        self.nz, self.batch_size, self.kd_steps = nz, batch_size, kd_steps
        self.T, self.adv, self.align, self.local, self.balance = T, adv, align, local, balance
        self.student_bn_update_in_g_step = student_bn_update_in_g_step
        self.generator_train_mode_sampling = generator_train_mode_sampling
        self.mean, self.std = _stats(mean, device), _stats(std, device)
        self.kd_mean, self.kd_std = _stats(kd_mean, device), _stats(kd_std, device)
        self.kd_augment = kd_augment
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.add_optimizer("student", student.parameters(), opt_S, schedule_S)
        self.add_optimizer("generator", generator.parameters(), opt_G, schedule_G)
        self.add_optimizer("discriminator", discriminator.parameters(), opt_D, schedule_D)
        # two streams over the one OOD copy: the discriminator's real batches and the OOD half of the KD batches
        self.d_stream = _index_stream(len(self.ood), batch_size, seed, dist)
        self.kd_stream = _index_stream(len(self.ood), batch_size, seed + 1, dist)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.sample_z = torch.randn(sample_count, nz, generator=gen).to(device)
        self.sample_idx = torch.randperm(len(self.ood), generator=gen)[:sample_count].to(device)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "generator": self.generator, "discriminator": self.discriminator}

    # -- data --------------------------------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """N_in: [0, 1] images → the in-domain normalisation the teacher and student expect."""
        return _normalized(x, self.mean, self.std, self.memory_format)

    def d_batch(self) -> torch.Tensor:
        """The next real batch of the discriminator: OOD images, no augmentation, in-domain normalisation."""
        idx = next(self.d_stream).to(self.device, non_blocking=True)
        return self.normalize(self.ood[idx].float() / 255)

    def kd_batch(self) -> torch.Tensor:
        """The next OOD half of a student batch: the OOD set's training augmentation, then ``kd_mean``/``kd_std``."""
        idx = next(self.kd_stream).to(self.device, non_blocking=True)
        x = self.kd_augment(self.ood[idx]).float() / 255
        return _normalized(x, self.kd_mean, self.kd_std, self.memory_format)

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.batch_size, self.nz, device=self.device)

    # -- one iteration -----------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        T, S, G, D = self.teacher, self.student, self.generator, self.discriminator
        S.train(), G.train(), D.train()
        # (1) discriminator step: fakes (graph kept for the G step) against real OOD patches
        with self.autocast():
            x_fake = self.normalize(G(self._noise()))
            d_loss = self.local * patch_d_loss(D(x_fake.detach()), D(self.d_batch()))
        self.update("discriminator", d_loss)
        # (2) generator step on the same fakes; S and D give input gradients only
        S_plain, D_plain = unwrap(S), unwrap(D)
        if not self.student_bn_update_in_g_step:
            S_plain.eval()
        with no_weight_grads(S_plain), no_weight_grads(D_plain), self.autocast():
            t, s = T(x_fake), S_plain(x_fake)
            loss_adv = -kldiv(s, t, T=1.0)
            loss_align = entropy(t)
            loss_local = patch_g_loss(D_plain(x_fake))
            loss_balance = class_balance(t, base=2)
            g_loss = self.adv * loss_adv + self.align * loss_align + self.local * loss_local \
                + self.balance * loss_balance
        self.update("generator", g_loss)
        S_plain.train()
        # (3) student steps on [synthetic; OOD]
        G_plain = unwrap(G)
        G_plain.train(self.generator_train_mode_sampling)
        for _ in range(self.kd_steps):
            with torch.no_grad(), self.autocast():
                x = torch.cat([self.normalize(G_plain(self._noise())), self.kd_batch()])
                t = T(x)
            with self.autocast():
                s_loss = kldiv(S(x), t, T=self.T)
            self.update("student", s_loss)
        G_plain.train()
        return {"loss_s": s_loss.detach(), "loss_g": g_loss.detach(), "loss_d": d_loss.detach(),
                "loss_adv": loss_adv.detach(), "loss_align": loss_align.detach(),
                "loss_local": loss_local.detach(), "loss_balance": loss_balance.detach()}

    # -- samples and state -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """Synthetic mosaics for a fixed z (normalised space, as the teacher sees them), without touching G's BN."""
        G = unwrap(self.generator)
        with preserved_bn_stats(G):
            G.train()
            return self.normalize(G(self.sample_z))

    @torch.no_grad()
    def ood_samples(self) -> torch.Tensor:
        """A fixed set of real OOD images in [0, 1] (the grids show them beside the mosaics)."""
        return self.ood[self.sample_idx].float() / 255

    def extra_state(self) -> dict[str, Any]:
        return {"d_stream": self.d_stream.state_dict(), "kd_stream": self.kd_stream.state_dict(),
                "sample_z": self.sample_z.cpu(), "sample_idx": self.sample_idx.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "d_stream" in state:
            self.d_stream.load_state_dict(state["d_stream"])
            self.kd_stream.load_state_dict(state["kd_stream"])
            self.d_stream.close()
            self.kd_stream.close()
        if "sample_z" in state:
            self.sample_z = state["sample_z"].to(self.device)
            self.sample_idx = state["sample_idx"].to(self.device)


class BlindKD(LossDictMethod):
    """"Blind KD" (MosaicKD's ``kd_vanilla.py``): the student imitates the teacher on OOD images only,
    L = τ² KL_τ(p_T ‖ p_S), one SGD step per batch. The batches come from the same uint8 OOD copy and index stream
    as MosaicKD's, with the **in-domain** training augmentation and normalisation (as the original's transform)."""

    name = "blind_kd"

    def __init__(self, teacher: nn.Module, student: nn.Module, ood: torch.Tensor, *, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], augment: Augment, opt_S: OptimizerSpec,
                 schedule_S: LRSchedule, T: float, seed: int, dist: DistInfo = DistInfo(),
                 device: torch.device = torch.device("cpu"), amp: bool = False, channels_last: bool = False,
                 sample_count: int = 32) -> None:
        super().__init__(device, amp)
        _check_ood(ood)
        self.teacher, self.student = freeze(teacher), student
        self.ood, self.T, self.augment = ood.to(device), T, augment
        self.mean, self.std = _stats(mean, device), _stats(std, device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.add_optimizer("student", student.parameters(), opt_S, schedule_S)
        self.stream = _index_stream(len(self.ood), batch_size, seed, dist)
        self.sample_idx = torch.randperm(len(self.ood), generator=torch.Generator().manual_seed(seed))[:sample_count]

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def batch(self) -> torch.Tensor:
        idx = next(self.stream).to(self.device, non_blocking=True)
        x = self.augment(self.ood[idx]).float() / 255
        return _normalized(x, self.mean, self.std, self.memory_format)

    def losses(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        self.student.train()
        x = self.batch()
        with torch.no_grad(), self.autocast():
            t = self.teacher(x)
        with self.autocast():
            s = self.student(x)
        return {"loss_kd": kldiv(s, t, T=self.T)}, {"agreement": (s.argmax(1) == t.argmax(1)).float().mean()
                                                   .detach()}

    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """A fixed set of the OOD images the student learns from (normalised space)."""
        x = self.ood[self.sample_idx.to(self.ood.device)].float() / 255
        return (x - self.mean) / self.std

    def extra_state(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "stream" in state:
            self.stream.load_state_dict(state["stream"])
            self.stream.close()


class MosaicDFQ(Method):
    """MosaicKD's data-free baseline (its ``kd_datafree.py``, "DFQAD"; ``reference/mosaickd.md`` §4.3), not the
    engine's DFQ. One iteration:

    1. **G step.** x = N_in(G(z)); L_G = −adv·KL_1(p_T ‖ p_S) + oh·CE(t, argmax t) + ie·Σ p̄ log₁₀ p̄ + bn·L_BN with
       L_BN the global-norm form over every teacher BN layer (unbiased batch variances); Adam on G. S runs in train
       mode (its BN statistics absorb x, as in the original) and gives input gradients only.
    2. **5 student steps.** Under no_grad x = N_in(G(z')), t = T(x); L_S = KL_1(p_T ‖ p_S(x)); **Adam** on S.

    Schedules (cosine per epoch for S and G) come from the caller. No augmentation, no data.
    """

    name = "dfq_mosaickd"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, nz: int, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], opt_S: OptimizerSpec, opt_G: OptimizerSpec,
                 schedule: LRSchedule, adv: float, oh: float, ie: float, bn: float, kd_steps: int,
                 device: torch.device = torch.device("cpu"), amp: bool = False, channels_last: bool = False,
                 sample_count: int = 32, sample_seed: int = 0) -> None:
        super().__init__(device, amp)
        from ..hooks import BNStatsHook

        self.teacher, self.student, self.generator = freeze(teacher), student, generator
        self.nz, self.batch_size, self.kd_steps = nz, batch_size, kd_steps
        self.adv, self.oh, self.ie, self.bn = adv, oh, ie, bn
        self.mean, self.std = _stats(mean, device), _stats(std, device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.bn_hook = BNStatsHook(unwrap(teacher), mode="global")
        self.add_optimizer("student", student.parameters(), opt_S, schedule)
        self.add_optimizer("generator", generator.parameters(), opt_G, schedule)
        self.sample_z = torch.randn(sample_count, nz, generator=torch.Generator().manual_seed(sample_seed)).to(device)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "generator": self.generator}

    def _fake(self, G: nn.Module) -> torch.Tensor:
        x = G(torch.randn(self.batch_size, self.nz, device=self.device))
        return _normalized(x, self.mean, self.std, self.memory_format)

    def train_step(self) -> dict[str, torch.Tensor]:
        T, S, G = self.teacher, self.student, self.generator
        S.train(), G.train()
        S_plain = unwrap(S)
        with no_weight_grads(S_plain), self.autocast():
            x = self._fake(G)
            with self.bn_hook.active():
                t = T(x)
            s = S_plain(x)
            loss_adv = -kldiv(s, t, T=1.0)
            loss_oh = onehot_ce(t)
            loss_ie = class_balance(t, base=10)
            loss_bn = self.bn_hook.loss()
            g_loss = self.adv * loss_adv + self.oh * loss_oh + self.ie * loss_ie + self.bn * loss_bn
        self.update("generator", g_loss)
        G_plain = unwrap(G)
        for _ in range(self.kd_steps):
            with torch.no_grad(), self.autocast():
                x = self._fake(G_plain)
                t = T(x)
            with self.autocast():
                s_loss = kldiv(S(x), t, T=1.0)
            self.update("student", s_loss)
        return {"loss_s": s_loss.detach(), "loss_g": g_loss.detach(), "loss_adv": loss_adv.detach(),
                "loss_oh": loss_oh.detach(), "loss_ie": loss_ie.detach(), "loss_bn": loss_bn.detach()}

    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        G = unwrap(self.generator)
        with preserved_bn_stats(G):
            G.train()
            return (G(self.sample_z) - self.mean) / self.std

    def extra_state(self) -> dict[str, Any]:
        return {"sample_z": self.sample_z.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "sample_z" in state:
            self.sample_z = state["sample_z"].to(self.device)
