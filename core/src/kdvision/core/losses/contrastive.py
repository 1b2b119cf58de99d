"""CMI's contrastive pieces (``datafree_engine.md`` §5.4): projection head, device memory bank, InfoNCE loss.

Checked against the original ``zju-vipa/CMI`` ``datafree/synthesis/contrastive.py`` (``MLPHead``, ``MemoryBank``
and the "naive" contrastive loss inside ``CMISynthesizer.synthesize``); differences are listed per class.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kd import _no_autocast

__all__ = ["ProjectionHead", "MemoryBank", "cmi_contrastive_loss"]


class ProjectionHead(nn.Module):
    """CMI projection head φ: Linear(in, hidden) → ReLU → Linear(hidden, out) → row-wise L2 normalisation::

        φ(h) = g / ‖g‖₂,   g = W₂ · relu(W₁ h + b₁) + b₂

    ``hidden_dim`` defaults to ``in_dim`` and ``out_dim`` to 256 (the CMI script passes ``head_dim=256``). The
    layers sit in an ``nn.Sequential`` named ``head``, as in the original ``MLPHead``, so the state-dict keys are
    ``head.0.weight``, ``head.0.bias``, ``head.2.weight``, ``head.2.bias``; default PyTorch initialisation, as the
    original. The linear layers follow autocast (bf16 on GPU); the normalisation runs in float32 and the output is
    float32. (The original's argument order is ``MLPHead(dim_in, dim_feat, dim_h)``; ours is
    ``(in_dim, hidden_dim, out_dim)``.)
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 256) -> None:
        super().__init__()
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.head = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x).float(), p=2, dim=1)


class MemoryBank(nn.Module):
    """Ring buffer of past feature rows on the device, for CMI's negatives.

    Buffers (all in the ``state_dict``, so a resumed run samples from exactly the same bank):

    - ``rows``: size × dim, initialised with ``torch.randn`` like the original (the random rows are never sampled:
      only the filled part is);
    - ``ptr``: long scalar, the next row to write;
    - ``filled``: long scalar, how many rows hold real data (min(total rows added, size)).

    Differences from the original ``MemoryBank`` (both deliberate, ``datafree_engine.md`` §11 #8):

    - ``add`` accepts any number of rows and wraps around (the original asserted ``size % n == 0``); with more rows
      than ``size`` only the last ``size`` rows are kept, as sequential ring writes would leave them;
    - sampling draws from the filled part, and from the whole bank once it has wrapped; the original sampled
      ``range(ptr)`` until *more than* ``size`` rows had been added, so right after exactly ``size`` rows it
      returned nothing (ptr back at 0).

    The bank lives on the module's device (the original kept it on the CPU and copied 4096 rows to the GPU each
    step). ``ptr`` and ``filled`` are mirrored as Python ints so that ``add`` and ``sample`` never read a device
    value; the mirrors are refreshed from the buffers after ``load_state_dict``.
    """

    rows: torch.Tensor
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"MemoryBank needs a positive size and dim, got size={size}, dim={dim}")
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("rows", torch.randn(self.size, self.dim, device=device, dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long, device=device))
        self._ptr = 0
        self._filled = 0
        self.register_load_state_dict_post_hook(MemoryBank._sync_mirrors)

    @staticmethod
    def _sync_mirrors(module: MemoryBank, incompatible_keys) -> None:
        # One host read per load_state_dict (resume), never in the training step.
        module._ptr = int(module.ptr)
        module._filled = int(module.filled)

    def __len__(self) -> int:
        """Number of rows holding real data (0 … size)."""
        return self._filled

    @torch.no_grad()
    def add(self, rows: torch.Tensor) -> None:
        """Append ``rows`` (n × dim, any n ≥ 0) at ``ptr``, wrapping around; the rows are detached and cast to the
        bank's dtype and device. ptr ← (ptr + n) mod size, filled ← min(filled + n, size)."""
        if rows.dim() != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"MemoryBank.add expects n x {self.dim} rows, got shape {tuple(rows.shape)}")
        n = rows.shape[0]
        if n == 0:
            return
        kept = rows[-self.size:] if n > self.size else rows
        m = kept.shape[0]
        kept = kept.detach().to(device=self.rows.device, dtype=self.rows.dtype)
        start = (self._ptr + n - m) % self.size
        first = min(m, self.size - start)
        self.rows[start:start + first].copy_(kept[:first])
        if m > first:
            self.rows[: m - first].copy_(kept[first:])
        self._ptr = (self._ptr + n) % self.size
        self._filled = min(self._filled + n, self.size)
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)

    @torch.no_grad()
    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Up to ``k`` rows drawn uniformly **without replacement** from the filled part, in random order:
        min(k, filled) × dim (an empty bank, or k ≤ 0, gives a 0 × dim tensor). Uses ``torch.randperm`` on the
        bank's device (``generator`` must live on that device)."""
        if self._filled == 0 or k <= 0:
            return self.rows.new_empty((0, self.dim))
        idx = torch.randperm(self._filled, generator=generator, device=self.rows.device)[:k]
        return self.rows[idx]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


def cmi_contrastive_loss(p_local: torch.Tensor, p_global: torch.Tensor, n: int, temperature: float) -> torch.Tensor:
    """CMI's instance-discrimination (InfoNCE) loss over the current batch and the bank rows.

    ``p_local``, ``p_global``: (N + K) × D projected rows, the first ``n`` = N from the current batch, the other K
    from the memory bank (row i of both comes from the same sample). With P_l, P_g and τ = ``temperature``::

        logits = P_l · sg(P_g)ᵀ / τ                      (N + K) × (N + K), sg = stop-gradient (detach)
        ce_i   = −log softmax(logits_i)_i                 (positives on the diagonal)
        L      = mean(ce_0 … ce_{N−1}) + mean(ce_N … ce_{N+K−1})   if K > 0
        L      = mean(ce_0 … ce_{N−1})                              if K = 0

    As the original ``CMISynthesizer`` ("naive implementation"): the split keeps the current batch's gradient from
    being diluted by the K bank rows. Difference: the original chose the two-term form whenever the bank had ever
    been written (``n_updates > 0``), which gives NaN when a sample came back empty; here the choice is made on
    K > 0 (the shapes), which is the same in every case the original handles. Float32 even under autocast.
    """
    with _no_autocast(p_local):
        pl = p_local.float()
        pg = p_global.detach().float()
        logits = pl @ pg.t() / temperature
        labels = torch.arange(logits.shape[0], device=logits.device)
        ce = F.cross_entropy(logits, labels, reduction="none")
    if ce.shape[0] > n:
        return ce[:n].mean() + ce[n:].mean()
    return ce.mean()
