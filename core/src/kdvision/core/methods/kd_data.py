"""Knowledge distillation on real images (DFAD's KD-ORI / KD-REL / KD-UNR baselines), task-independent.

The student minimises DFAD's discrepancy, the mean absolute difference of raw logits, on batches of real images
(the training split, or any folder of images) instead of generated ones; ``student_steps`` steps per iteration,
SGD with the DFAD schedule. The teacher is frozen and runs under ``no_grad``.

The image stream is a seeded permutation per pass over the data; the number of images consumed is checkpointed,
so a resumed run continues with the images that come next (augmentation draws come from the worker RNGs).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..data.stream import StreamSampler
from ..engine.distributed import DistInfo
from ..engine.method import Method, freeze
from ..engine.optim import LRSchedule, OptimizerSpec
from .dfad import discrepancy


class DataKD(Method):
    name = "kd"

    def __init__(self, teacher: nn.Module, student: nn.Module, images: Dataset, *, batch_size: int,
                 opt_S: OptimizerSpec, schedule: LRSchedule, student_steps: int, seed: int,
                 dist: DistInfo = DistInfo(), workers: int = 0, task: str = "classification",
                 device: torch.device = torch.device("cpu"), amp: bool = False, channels_last: bool = False,
                 sample_count: int = 16) -> None:
        super().__init__(device, amp)
        if len(images) == 0:
            raise ValueError("no images for knowledge distillation")
        self.task = task
        self.teacher = freeze(teacher)
        self.student = student
        self.images, self.batch_size, self.student_steps = images, batch_size, student_steps
        self.seed, self.dist, self.workers = seed, dist, workers
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.add_optimizer("student", student.parameters(), opt_S, schedule)
        self.consumed = 0  # images taken from the stream by this rank
        self._batches: Iterator | None = None
        self.sample_x = torch.stack([self._image(images[i]) for i in range(min(sample_count, len(images)))])

    @staticmethod
    def _image(item: Any) -> torch.Tensor:
        return item[0] if isinstance(item, (tuple, list)) else item

    def _stream(self) -> Iterator:
        sampler = StreamSampler(len(self.images), self.seed, self.consumed, self.dist.rank, self.dist.world_size)
        loader = DataLoader(self.images, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", drop_last=True)
        return iter(loader)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def train_step(self) -> dict[str, torch.Tensor]:
        if self._batches is None:
            self._batches = self._stream()
        self.student.train()
        for _ in range(self.student_steps):
            x = self._image(next(self._batches))
            self.consumed += x.shape[0]
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            with torch.no_grad(), self.autocast():
                t = self.teacher(x)
            with self.autocast():
                loss = discrepancy(self.student(x), t)
            self.update("student", loss)
        return {"loss_S": loss.detach()}

    def sample_images(self) -> torch.Tensor:
        """A fixed batch of the real images (the first of the dataset, augmented once at start-up)."""
        return self.sample_x.to(self.device)

    def extra_state(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "sample_x": self.sample_x}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.consumed = int(state.get("consumed", 0))
        self.sample_x = state.get("sample_x", self.sample_x)
        self._batches = None  # restart the stream where the checkpoint left it
