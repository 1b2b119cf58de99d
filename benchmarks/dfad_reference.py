"""A reference-equivalent DFAD iteration: the passes the original DFAD ``train()`` makes.

Same update order and numbers as ``kdvision.core.methods.dfad.DFAD`` but with the original's waste: the teacher's
parameters require gradients (weight gradients computed and accumulated in the generator step), the generator and
teacher build autograd graphs in the student steps, and the student's weight gradients are computed in the
generator step. Written from the specification (``reference/dfad.md`` §1.2 and §9), used by the benchmark and by
the equivalence test.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ReferenceDFAD:
    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, nz: int, batch_size: int,
                 lr_S: float, lr_G: float, weight_decay: float, momentum: float = 0.9, loss: str = "l1",
                 device: torch.device = torch.device("cpu")) -> None:
        self.teacher, self.student, self.generator = teacher, student, generator
        teacher.eval()
        teacher.requires_grad_(True)  # as in the original: never frozen
        self.nz, self.batch_size, self.loss, self.device = nz, batch_size, loss, device
        self.opt_S = torch.optim.SGD(student.parameters(), lr=lr_S, momentum=momentum, weight_decay=weight_decay)
        self.opt_G = torch.optim.Adam(generator.parameters(), lr=lr_G)

    def train_step(self) -> dict[str, torch.Tensor]:
        T, S, G = self.teacher, self.student, self.generator
        S.train()
        G.train()
        for _ in range(5):
            z = torch.randn((self.batch_size, self.nz, 1, 1), device=self.device)
            self.opt_S.zero_grad()
            fake = G(z).detach()
            t_logit = T(fake)
            s_logit = S(fake)
            loss_S = F.l1_loss(s_logit, t_logit.detach())
            loss_S.backward()
            self.opt_S.step()
        z = torch.randn((self.batch_size, self.nz, 1, 1), device=self.device)
        self.opt_G.zero_grad()
        fake = G(z)
        t_logit = T(fake)
        s_logit = S(fake)
        d = F.l1_loss(s_logit, t_logit)
        loss_G = -d if self.loss == "l1" else -torch.log(d + 1)
        loss_G.backward()
        self.opt_G.step()
        return {"loss_S": loss_S.detach(), "loss_G": loss_G.detach()}
