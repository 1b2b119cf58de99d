"""Generative synthesizer: DAFL, ZSKT, DFQ and DFAD as loss weights on one persistent generator.

One round (``g_steps`` generator steps, 1 in every published script), with fresh z each step and no augmentation:

    x = N(G(z)),  t = T(x)
    L_G = bn·L_BN + oh·CE(t, argmax t) + act·(−mean|f_T(x)|) + adv·L_adv + balance·Σ_c p̄_c log p̄_c

L_adv = −KL_1(p_T ‖ p_S) (ZSKT, DFQ, DAFL) or −mean|S(x) − T(x)| (``adv_loss="l1"``, DFAD): G maximises the
teacher–student disagreement. Adam(lr_g, betas 0.5/0.999); G persists between rounds. ``sample(n)`` draws a fresh
batch from G in **eval** mode (its BN running statistics), with no gradient (datafree_engine.md §5.1).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ..engine.optim import OptimizerSpec, build_optimizer, optimizer_step
from ..engine.method import unwrap
from ..hooks import TeacherTaps
from ..losses import activation_loss, adversarial_kl, class_balance, l1_discrepancy, onehot_ce
from .base import Synthesizer

ADV_LOSSES = ("kl", "l1")


class GenerativeSynthesizer(Synthesizer):
    name = "generative"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, nz: int, lr_g: float,
                 adv: float, oh: float, act: float, balance: float, adv_loss: str, balance_base: str,
                 **kwargs: Any) -> None:
        super().__init__(teacher, student, **kwargs)
        if adv_loss not in ADV_LOSSES:
            raise ValueError(f"unknown adversarial loss {adv_loss!r}; valid: {', '.join(ADV_LOSSES)}")
        self.generator = generator
        self.nz = nz
        self.adv, self.oh, self.act, self.balance = adv, oh, act, balance
        self.adv_loss, self.balance_base = adv_loss, balance_base
        self.opt_G = build_optimizer(generator.parameters(), OptimizerSpec("adam", lr=lr_g, betas=(0.5, 0.999)))
        self.taps = TeacherTaps(unwrap(teacher), blocks=False, penultimate=True) if act > 0 else None
        if not any(w > 0 for w in (self.bn, adv, oh, act, balance)):
            raise ValueError("every synthesis loss weight is 0: nothing would train the generator")

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def optimizers(self) -> dict[str, Optimizer]:
        return {"generator": self.opt_G}

    def _generate(self, generator: nn.Module, n: int) -> torch.Tensor:
        z = torch.randn(n, self.nz, device=self.device)
        return self.layout(self.normalizer(generator(z).float()))

    def synthesize(self) -> dict[str, torch.Tensor]:
        G = self.generator
        G.train()
        with self.frozen_student() as S:
            for _ in range(self.g_steps):
                parts: dict[str, torch.Tensor] = {}
                with self.autocast():
                    x = self._generate(G, self.batch_size)
                    if self.taps is not None:
                        with self.taps.active():
                            t = self.teacher_forward(x)
                        feature = self.taps.penultimate
                    else:
                        t = self.teacher_forward(x)
                    if self.bn > 0:
                        parts["loss_bn"] = self.bn_loss()
                    if self.oh > 0:
                        parts["loss_oh"] = onehot_ce(t)
                    if self.act > 0:
                        parts["loss_act"] = activation_loss(feature)
                    if self.balance > 0:
                        parts["loss_balance"] = class_balance(t, base=self.balance_base)
                    if self.adv > 0:
                        s = S(x)
                        parts["loss_adv"] = (-l1_discrepancy(s, t) if self.adv_loss == "l1"
                                             else adversarial_kl(s, t))
                weights = {"loss_bn": self.bn, "loss_oh": self.oh, "loss_act": self.act,
                           "loss_balance": self.balance, "loss_adv": self.adv}
                loss = sum(weights[k] * v for k, v in parts.items())
                optimizer_step(self.opt_G, loss)
        self.rounds += 1
        return {"loss_syn": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        G = unwrap(self.generator)
        G.eval()
        with self.autocast():
            x = self._generate(G, n)
        G.train()
        return x

    @torch.no_grad()
    def preview(self) -> torch.Tensor | None:
        if self.rounds == 0:
            return None
        G = unwrap(self.generator)
        G.eval()
        gen = torch.Generator(device="cpu").manual_seed(0)  # fixed z: grids show how G evolves
        z = torch.randn(64, self.nz, generator=gen).to(self.device)
        x = G(z).float()
        G.train()
        return x
