"""KDEP: feature distillation as pre-training, with a non-parametric SVD alignment and power temperature scaling.

``reference/kdep.md`` §1. Both networks are tapped at the globally pooled final feature map *before* its final
activation (:class:`~kdvision.core.taps.PreReLUTap`; the parameters are those of the ordinary networks). The
teacher's target is

    f_T = PTS((h_T − μ) V[:, :k]),    PTS(u) = sign(u) · (|u| / τ)^(1/p)    (τ = 0.1, p = 3)

with μ and V the mean and the right singular vectors (decreasing singular values) of the teacher's features over the
pre-training images (:class:`SVDBasis`, computed by :class:`StreamingMoments`), k the student's feature width; the
loss is ``loss_w · MSE(f_S, f_T)`` (mean over B·k), and only the student learns.

The basis lives in :class:`KDEPTeacher` as buffers, moved to the device once (the original converted and copied it
host → device in every forward). A basis file records the teacher checkpoint it was computed for (SHA-256 of the
file); using it with another checkpoint is an error unless explicitly allowed (``legacy_ms_basis_for_sp``: the
original's SP-R50 runs silently projected onto the MS-R50 basis, bug 3).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError
from ..recipes.supervised import Supervised
from ..taps import PreReLUTap

BASIS_FORMAT = "kdvision-kdep-basis/1"


def pts(u: torch.Tensor, tau: float = 0.1, power: float = 3.0) -> torch.Tensor:
    """Power temperature scaling: ``sign(u) · (|u| / tau) ** (1 / power)`` — odd, monotone, compresses large values."""
    return torch.sign(u) * (u.abs() / tau).pow(1.0 / power)


# ------------------------------------------------------------------------------------------------ the SVD basis
class StreamingMoments:
    """Running sums of a stream of feature batches (float64): count, Σx and Σxxᵀ — memory D² however many images.

    ``all_reduce()`` merges the sums of every rank (each rank streams its own shard); :meth:`basis` turns them into
    the mean and the right singular vectors of the centred feature matrix: with ``C = Σxxᵀ − n μμᵀ = (X − μ)ᵀ(X − μ)
    = V S² Vᵀ``, the eigenvectors of ``C`` are ``V`` and the square roots of its eigenvalues are the singular values
    ``S`` (the original ran an SVD of the whole N × D matrix held in NumPy).
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(self.sum.device, torch.float64).flatten(1)
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.outer.addmm_(x.T, x)

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device)
            for t in (n, self.sum, self.outer):
                dist.all_reduce(t)
            self.n = int(n.item())

    def basis(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean D, V D×D, S D)`` in float64; V's columns sorted by decreasing singular value, each column's sign
        fixed so that its largest-magnitude entry is positive (the SVD leaves signs arbitrary)."""
        if self.n < 2:
            raise ConfigError(f"an SVD basis needs at least 2 feature vectors, got {self.n}")
        mean = self.sum / self.n
        cov = self.outer - self.n * torch.outer(mean, mean)
        cov = (cov + cov.T) / 2
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        s = evals.clamp_min(0).sqrt()
        idx = evecs.abs().argmax(0)
        signs = torch.sign(evecs[idx, torch.arange(evecs.shape[1], device=evecs.device)])
        signs[signs == 0] = 1
        return mean, evecs * signs, s


@dataclass
class SVDBasis:
    """What ``gen_svd_weights.py`` writes: the feature mean, V (D × D) and S of a teacher over an image set."""

    mean: torch.Tensor
    V: torch.Tensor
    S: torch.Tensor
    teacher: str
    teacher_sha256: str | None
    images: int
    subset_sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def save(self, path: str | os.PathLike) -> None:
        from ..checkpoint import save_atomic

        save_atomic({"format": BASIS_FORMAT, "mean": self.mean.float(), "V": self.V.float(), "S": self.S.float(),
                     "teacher": self.teacher, "teacher_sha256": self.teacher_sha256, "images": self.images,
                     "subset_sha256": self.subset_sha256, "meta": dict(self.meta)}, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SVDBasis":
        from ..checkpoint import read_checkpoint

        obj = read_checkpoint(path)
        if not isinstance(obj, dict) or obj.get("format") != BASIS_FORMAT:
            raise CheckpointError(f"{path} is not a KDEP basis file (written by pretraining/gen_svd_weights.py)")
        return cls(mean=obj["mean"], V=obj["V"], S=obj["S"], teacher=obj["teacher"],
                   teacher_sha256=obj["teacher_sha256"], images=obj["images"], subset_sha256=obj.get("subset_sha256"),
                   meta=dict(obj.get("meta") or {}))

    @classmethod
    def from_numpy_files(cls, v_path: str, mean_path: str, teacher: str = "resnet50_imagenet") -> "SVDBasis":
        """The original's published ``*_v.npy`` / ``*_feat_mean.npy`` pair (bit-level reproduction needs its signs)."""
        import numpy as np

        V = torch.from_numpy(np.load(v_path)).double()
        mean = torch.from_numpy(np.load(mean_path)).double().flatten()
        if V.dim() != 2 or V.shape[0] != mean.numel():
            raise CheckpointError(f"{v_path}: V is {tuple(V.shape)}, not {mean.numel()} x D")
        return cls(mean=mean, V=V, S=torch.full((V.shape[1],), float("nan")), teacher=teacher, teacher_sha256=None,
                   images=0, meta={"source": "numpy", "v": str(v_path), "mean": str(mean_path)})

    def check(self, *, teacher_dim: int, student_dim: int, teacher_sha256: str | None, allow_other_teacher: bool,
              where: str = "basis") -> None:
        """One-line errors for a basis that cannot serve this teacher/student pair."""
        if self.dim != teacher_dim:
            raise ConfigError(f"{where}: the basis is {self.dim}-dimensional but the teacher's feature has "
                              f"{teacher_dim} channels (a basis of another architecture)")
        if student_dim > self.V.shape[1]:
            raise ConfigError(f"{where}: the student's feature has {student_dim} channels but the basis has only "
                              f"{self.V.shape[1]} components (the teacher is narrower than the student)")
        if (teacher_sha256 and self.teacher_sha256 and teacher_sha256 != self.teacher_sha256
                and not allow_other_teacher):
            raise ConfigError(f"{where} was computed for teacher checkpoint {self.teacher_sha256[:12]}…, not the "
                              f"given one ({teacher_sha256[:12]}…); run gen_svd_weights.py for this teacher (or "
                              "--legacy_ms_basis_for_sp to reproduce the original's SP-R50 runs)")


# ------------------------------------------------------------------------------------------------ the players
class KDEPTeacher(nn.Module):
    """A frozen teacher that returns KDEP's target ``PTS((h − μ) V_k)`` (B × k) for normalised images.

    ``model`` is any classifier with a pre-ReLU tap (registry metadata, or ``terms``); the basis is held as buffers
    ``mean`` (D) and ``proj`` (D × k), so ``.to(device)`` moves it once.
    """

    def __init__(self, model: nn.Module, basis: SVDBasis, k: int, *, tau: float = 0.1, power: float = 3.0,
                 terms: list[str] | None = None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tap = PreReLUTap(model, terms)
        self.tau, self.power, self.k = float(tau), float(power), int(k)
        self.register_buffer("mean", basis.mean.detach().float().clone())
        self.register_buffer("proj", basis.V[:, :k].detach().float().contiguous().clone())

    def train(self, mode: bool = True) -> "KDEPTeacher":  # the teacher stays in eval mode
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's pre-ReLU pooled feature h (B × D)."""
        with self.tap.active():
            self.model(x)
        return self.tap.pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        with torch.autocast(x.device.type, enabled=False):  # the projection and PTS in float32, also under AMP
            return pts((h.float() - self.mean) @ self.proj, self.tau, self.power)


def feature_dim(model: nn.Module, input_size: tuple[int, ...], terms: list[str] | None = None) -> int:
    """Channels of a model's pre-ReLU final feature (one forward of a zero batch of two, in eval mode)."""
    tap = PreReLUTap(model, terms)
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad(), tap.active():
            model(torch.zeros(2, *input_size, device=p.device, dtype=p.dtype))
        return int(tap.pooled.shape[1])
    finally:
        tap.remove()
        model.train(was)


class KDEP(Supervised):
    """One KDEP step: ``loss_w · MSE(f_S, f_T)`` on a batch of the pre-training images; the student is updated.

    Built on :class:`~kdvision.core.recipes.supervised.Supervised` for the data stream (distributed sampler, one pass
    per epoch, device transfer) and the update; the labels of the image set are never used.
    """

    name = "kdep"
    player = "model"

    def __init__(self, student: nn.Module, teacher: KDEPTeacher, dataset, *, loss_weight: float,
                 student_terms: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(student, dataset, loss=None, **kwargs)
        self.teacher, self.loss_weight = teacher, float(loss_weight)
        self.student_tap = PreReLUTap(student, student_terms)

    def losses(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x, _ = self.next_batch()
        self.model.train()
        with torch.no_grad(), self.autocast():
            target = self.teacher(x)
        with self.autocast(), self.student_tap.active():
            self.model(x)
        f_s = self.student_tap.pooled.float()
        return {"loss_feat": self.loss_weight * F.mse_loss(f_s, target.float())}, {}
