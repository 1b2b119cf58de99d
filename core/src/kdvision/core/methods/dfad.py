"""DFAD — Data-Free Adversarial Distillation (Fang et al., arXiv:1912.11006), task-independent.

The student S minimises and the generator G maximises the mean absolute error between raw logits,

    D(x) = mean |S(x) - T(x)|        (over every element: B x K, or B x K x H x W for segmentation)

One iteration = ``student_steps`` (5) student steps on fresh noise, then one generator step:

    L_S = D(G(z)) with G and T outside the graph
    L_G = -D(G(z))                (loss="l1", classification)
    L_G = -log(D(G(z)) + 1)       (loss="log_l1", segmentation)

``train_generator=False`` gives the paper's "random generator" baseline: the same student steps, G never trained.

Faithful to the original update order and modes: S stays in train mode during the generator step, so its BN
running statistics absorb that batch too (``student_bn_update_in_g_step``), and G always runs in train mode.

Hot path (DESIGN.md): the teacher is frozen (no weight gradients; input gradients still reach G); in student
steps G and T run under ``no_grad``; in the generator step S's parameters stop requiring gradients so only input
gradients are computed; no host synchronisation inside a step.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..engine.method import Method, freeze, no_weight_grads, preserved_bn_stats, unwrap
from ..engine.optim import LRSchedule, OptimizerSpec
from ..losses import l1_discrepancy as discrepancy  # mean |S(x) - T(x)| over every element, float32

LOSSES = ("l1", "log_l1")


def generator_loss(d: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return -d
    if kind == "log_l1":
        return -torch.log(d + 1)
    raise ValueError(f"unknown DFAD generator loss {kind!r}; valid: {', '.join(LOSSES)}")


def dfad_optimizers(lr_S: float, lr_G: float, weight_decay: float, momentum: float
                    ) -> tuple[OptimizerSpec, OptimizerSpec]:
    """The original's optimisers: SGD for S (momentum, weight decay), Adam(0.9, 0.999) for G (no decay)."""
    return (OptimizerSpec("sgd", lr=lr_S, momentum=momentum, weight_decay=weight_decay),
            OptimizerSpec("adam", lr=lr_G, betas=(0.9, 0.999), foreach=True))


class DFAD(Method):
    name = "dfad"

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: nn.Module, *, nz: int, batch_size: int,
                 opt_S: OptimizerSpec, opt_G: OptimizerSpec, schedule: LRSchedule, loss: str, student_steps: int,
                 student_bn_update_in_g_step: bool, batched_generation: bool, train_generator: bool,
                 task: str = "classification", device: torch.device = torch.device("cpu"), amp: bool = False,
                 channels_last: bool = False, sample_count: int = 64, sample_seed: int = 0) -> None:
        super().__init__(device, amp)
        if loss not in LOSSES:
            raise ValueError(f"unknown DFAD generator loss {loss!r}; valid: {', '.join(LOSSES)}")
        self.task = task
        self.teacher = freeze(teacher)
        self.student = student
        self.generator = generator
        self.nz, self.batch_size, self.loss = nz, batch_size, loss
        self.student_steps = student_steps
        self.student_bn_update_in_g_step = student_bn_update_in_g_step
        self.batched_generation = batched_generation
        self.train_generator = train_generator  # False: the paper's "random generator" baseline
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # one schedule for both players, as the original (one StepLR / MultiStepLR each, same milestones)
        self.add_optimizer("student", student.parameters(), opt_S, schedule)
        self.add_optimizer("generator", generator.parameters(), opt_G, schedule)
        gen = torch.Generator(device="cpu").manual_seed(sample_seed)
        self.sample_z = torch.randn(sample_count, nz, generator=gen).to(device)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "generator": self.generator}

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.nz, device=self.device)

    def _fake(self, generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return generator(z).contiguous(memory_format=self.memory_format)

    def train_step(self) -> dict[str, torch.Tensor]:
        T, S, G = self.teacher, self.student, self.generator
        G_plain = unwrap(G)  # no DDP synchronisation needed where G is not trained
        S.train()
        G.train()
        B = self.batch_size
        if self.batched_generation:  # one G forward for all student steps: changes G's BN batch statistics
            with torch.no_grad(), self.autocast():
                fakes = self._fake(G_plain, self._noise(B * self.student_steps)).chunk(self.student_steps)
        for i in range(self.student_steps):
            with torch.no_grad(), self.autocast():
                x = fakes[i] if self.batched_generation else self._fake(G_plain, self._noise(B))
                t = T(x)
            with self.autocast():
                loss_S = discrepancy(S(x), t)
            self.update("student", loss_S)
        if not self.train_generator:
            return {"loss_S": loss_S.detach()}

        S_plain = unwrap(S)
        if not self.student_bn_update_in_g_step:
            S_plain.eval()
        with no_weight_grads(S_plain), self.autocast():
            x = self._fake(G, self._noise(B))
            d = discrepancy(S_plain(x), T(x))
            loss_G = generator_loss(d, self.loss)
        self.update("generator", loss_G)
        S_plain.train()
        return {"loss_S": loss_S.detach(), "loss_G": loss_G.detach()}

    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """The generator's images for a fixed z, in train mode as DFAD samples, without touching its BN stats."""
        G = unwrap(self.generator)
        with preserved_bn_stats(G):
            G.train()
            return G(self.sample_z)

    def extra_state(self) -> dict[str, Any]:
        return {"sample_z": self.sample_z.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "sample_z" in state:
            self.sample_z = state["sample_z"].to(self.device)
