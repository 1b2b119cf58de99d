"""A reference-equivalent MosaicKD iteration: the passes the original ``kd_mosaic.py`` ``train()`` makes.

Same update order and numbers as :class:`kdvision.core.methods.mosaickd.MosaicKD` with the original's waste: the
teacher's parameters require gradients (weight gradients computed in the G step and accumulated forever), the
student's and the discriminator's weight gradients are computed in the G step, and (in the benchmark) two
independent DataLoaders decode the same OOD set. Written from the specification (``reference/mosaickd.md`` §2),
used by the equivalence test and the benchmark. ``real`` and ``ood`` are callables returning the next
normalised batch of the D stream and of the KD stream.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def kldiv(logits: torch.Tensor, targets: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    return F.kl_div(F.log_softmax(logits / T, dim=1), F.softmax(targets / T, dim=1), reduction="batchmean") * (T * T)


class ReferenceMosaicKD:
    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, discriminator: nn.Module, *,
                 real: Callable[[], torch.Tensor], ood: Callable[[], torch.Tensor], nz: int, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], lr: float, lr_g: float, weight_decay: float,
                 total_iters: int, T: float, adv: float, align: float, local: float, balance: float,
                 sync: bool = False, device: torch.device = torch.device("cpu")) -> None:
        self.T_, self.S, self.G, self.D = teacher, student, generator, discriminator
        teacher.eval()
        teacher.requires_grad_(True)  # as in the original: never frozen
        self.real, self.ood, self.nz, self.batch_size, self.device = real, ood, nz, batch_size, device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.temperature, self.adv, self.align, self.local, self.balance = T, adv, align, local, balance
        self.sync = sync  # the original's meters: .item() per step when printing (benchmark: always)
        self.optim_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=[0.5, 0.999])
        self.optim_d = torch.optim.Adam(discriminator.parameters(), lr=lr_g, betas=[0.5, 0.999])
        self.optim_s = torch.optim.SGD(student.parameters(), lr, momentum=0.9, weight_decay=weight_decay)
        self.scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total_iters)
                       for o in (self.optim_s, self.optim_d, self.optim_g)]
        self.g_grads: list[dict[str, torch.Tensor]] = []  # G's gradients of each G step (kept when record=True)
        self.record = False

    def normalizer(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def train_step(self) -> dict[str, torch.Tensor]:
        T, S, G, D = self.T_, self.S, self.G, self.D
        S.train(), D.train(), G.train()
        real = self.real()
        z = torch.randn(size=(self.batch_size, self.nz), device=self.device)
        images = self.normalizer(G(z))
        d_out_fake, d_out_real = D(images.detach()), D(real.detach())
        loss_d = (F.binary_cross_entropy_with_logits(d_out_fake, torch.zeros_like(d_out_fake), reduction="sum")
                  + F.binary_cross_entropy_with_logits(d_out_real, torch.ones_like(d_out_real), reduction="sum")) \
            / (2 * len(d_out_fake)) * self.local
        self.optim_d.zero_grad()
        loss_d.backward()
        self.optim_d.step()

        t_out, s_out = T(images), S(images)
        pyx, log_pyx = F.softmax(t_out, dim=1), F.log_softmax(t_out, dim=1)
        py = pyx.mean(0)
        d_out_fake = D(images)
        loss_local = F.binary_cross_entropy_with_logits(d_out_fake, torch.ones_like(d_out_fake), reduction="sum") \
            / len(d_out_fake)
        loss_align = -(pyx * log_pyx).sum(1).mean()
        loss_adv = -kldiv(s_out, t_out)
        loss_balance = (py * torch.log2(py)).sum()
        loss_g = self.adv * loss_adv + loss_align * self.align + self.local * loss_local + loss_balance * self.balance
        self.optim_g.zero_grad()
        loss_g.backward()
        if self.record:
            self.g_grads.append({k: p.grad.clone() for k, p in G.named_parameters()})
        self.optim_g.step()

        for _ in range(5):
            with torch.no_grad():
                z = torch.randn(size=(self.batch_size, self.nz), device=self.device)
                images = torch.cat([self.normalizer(G(z)), self.ood()])
                t_out = T(images)
            s_out = S(images.detach())
            loss_s = kldiv(s_out, t_out.detach(), T=self.temperature)
            self.optim_s.zero_grad()
            loss_s.backward()
            self.optim_s.step()
        for sched in self.scheds:
            sched.step()
        if self.sync:
            loss_s.item(), loss_d.item(), loss_g.item(), loss_align.item(), loss_balance.item(), loss_adv.item()
        return {"loss_s": loss_s.detach(), "loss_g": loss_g.detach(), "loss_d": loss_d.detach()}
