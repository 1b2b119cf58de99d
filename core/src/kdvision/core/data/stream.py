"""An endless, seeded, resumable stream of batches over a map-style Dataset (KD baselines, MosaicKD's OOD streams).

>>> stream = StreamLoader(dataset, batch_size=128, seed=0, num_workers=4)   # rank / world size from torch.distributed
>>> x, y = next(stream)                                                      # batches forever
>>> state = stream.state_dict()                                              # into the checkpoint
>>> stream2 = StreamLoader(dataset, batch_size=128, seed=0); stream2.load_state_dict(state)
>>> next(stream2)                                                            # the batch that would have come next

The global stream is the concatenation of passes; pass k is ``torch.randperm(n)`` seeded with ``seed + k``. Under
torchrun rank r of W takes global positions r, r + W, r + 2W, …: the ranks' shares of every pass are disjoint and
together cover it exactly once (a rank's share of one pass differs in size by at most one from another's when W does
not divide n). Batches are never short: there are no epoch ends, so a batch that reaches the end of a pass continues
into the next one (no sample is dropped, and every ``batch_size`` consecutive samples of a rank form one batch).

The state is the number of samples this rank has taken (plus the seed, n and W it refers to, checked on load), so a
resumed stream yields exactly the indices that would have come next — with or without DataLoader workers, whose
prefetching never counts as consumed. The index order is independent of the number of workers. Random
augmentation inside the Dataset draws from the worker RNGs; their seeds come from a generator seeded with
(seed, rank, position), so creating the loader never touches the global torch RNG (a resumed run's global RNG stays
on the uninterrupted run's track), but the augmentation draws of a resumed run are not those of the uninterrupted run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError

__all__ = ["StreamLoader", "StreamSampler"]

_MASK63 = (1 << 63) - 1


class StreamSampler(Sampler[int]):
    """An endless stream of indices: pass k is a permutation seeded with ``seed + k``; starts at ``offset`` samples
    into this rank's share. Under torchrun each rank takes every ``world_size``-th index of the same global stream
    (rank r: global positions ``offset·W + r``, ``+W``, …)."""

    def __init__(self, n: int, seed: int, offset: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ConfigError(f"a stream needs a non-empty dataset (got {n} samples)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"stream rank {rank} is not in [0, world size {world_size})")
        if offset < 0:
            raise ConfigError(f"stream offset must be >= 0, got {offset}")
        self.n, self.seed, self.offset, self.rank, self.world_size = n, seed, offset, rank, world_size

    def permutation(self, k: int) -> list[int]:
        """Pass ``k`` of the global stream."""
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + k)).tolist()

    def __iter__(self) -> Iterator[int]:
        j = self.offset * self.world_size + self.rank  # global position in the stream
        current, perm = -1, []
        while True:
            k, i = divmod(j, self.n)
            if k != current:
                current, perm = k, self.permutation(k)
            yield perm[i]
            j += self.world_size

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader), which we never ask
        return 2**62


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StreamLoader:
    """An endless iterator of batches of ``batch_size`` samples from ``dataset`` (a :class:`StreamSampler` inside a
    ``DataLoader``); see the module docstring for the order, the rank shares and resume.

    ``rank`` / ``world_size`` default to the initialised process group's (0 / 1 without one). ``consumed``: samples
    of this rank already taken (what :meth:`state_dict` stores). The remaining keywords go to ``DataLoader``
    (``num_workers``, ``pin_memory``, ``collate_fn``, ``persistent_workers``, ``prefetch_factor``,
    ``worker_init_fn``, ``multiprocessing_context`` …); ``sampler``, ``shuffle``, ``batch_sampler``, ``drop_last``
    and ``generator`` are the stream's own.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, rank: int | None = None,
                 world_size: int | None = None, num_workers: int = 0, consumed: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, **loader_kwargs: Any) -> None:
        if batch_size < 1:
            raise ConfigError(f"stream batch size must be >= 1, got {batch_size}")
        taken = {"sampler", "shuffle", "batch_sampler", "drop_last", "generator"} & set(loader_kwargs)
        if taken:
            raise ConfigError(f"StreamLoader sets {', '.join(sorted(taken))} itself")
        if rank is None or world_size is None:
            dist_rank, dist_world = _dist_rank_world()
            rank = dist_rank if rank is None else rank
            world_size = dist_world if world_size is None else world_size
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)
        self.n = len(dataset)  # type: ignore[arg-type]
        StreamSampler(self.n, self.seed, consumed, rank, world_size)  # validates n, rank, world size, offset
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_workers, self.collate_fn, self.loader_kwargs = int(num_workers), collate_fn, dict(loader_kwargs)
        self._consumed = int(consumed)
        self._it: Iterator[Any] | None = None

    # ---------------------------------------------------------------------------------------------- iteration
    @property
    def consumed(self) -> int:
        """Samples this rank has taken from the stream (batches handed out × batch size)."""
        return self._consumed

    @property
    def position(self) -> int:
        """Global stream position of the next sample of this rank."""
        return self._consumed * self.world_size + self.rank

    @property
    def pass_index(self) -> int:
        """The pass (0, 1, …) the next sample of this rank comes from."""
        return self.position // self.n

    def sampler(self) -> StreamSampler:
        """The index stream from the current position on."""
        return StreamSampler(self.n, self.seed, self._consumed, self.rank, self.world_size)

    def _start(self) -> Iterator[Any]:
        mix = (self.seed * 0x9E3779B97F4A7C15 + self.rank * 0xBF58476D1CE4E5B9 + self._consumed) & _MASK63
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler(),
                            num_workers=self.num_workers, collate_fn=self.collate_fn, drop_last=True,
                            generator=torch.Generator().manual_seed(mix), **self.loader_kwargs)
        return iter(loader)

    def __iter__(self) -> StreamLoader:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._it = self._start()
        batch = next(self._it)
        self._consumed += self.batch_size
        return batch

    def close(self) -> None:
        """Stop the DataLoader iterator (and its workers); the next batch restarts them at the same position."""
        self._it = None

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self._consumed, "seed": self.seed, "num_samples": self.n, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off. A state saved under another world size continues the same global
        stream when the global position divides evenly by the new world size."""
        seed, n = int(state.get("seed", self.seed)), int(state.get("num_samples", self.n))
        if seed != self.seed:
            raise ConfigError(f"stream state is for seed {seed}, this stream has seed {self.seed}")
        if n != self.n:
            raise ConfigError(f"stream state is for a dataset of {n} samples, this one has {self.n}")
        consumed, world = int(state["consumed"]), int(state.get("world_size", self.world_size))
        if world != self.world_size:
            taken = consumed * world
            if taken % self.world_size:
                raise ConfigError(f"stream state from world size {world} ({taken} samples taken) cannot continue "
                                  f"under world size {self.world_size}")
            consumed = taken // self.world_size
        if consumed < 0:
            raise ConfigError(f"stream state has a negative sample count {consumed}")
        self._consumed = consumed
        self.close()
