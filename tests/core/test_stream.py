"""The endless seeded stream: per-pass permutations, rank shares, resume, workers (``kdvision.core.data.stream``).

The dataset returns its index, so every batch is the list of indices the stream chose; the expected order is built
here from ``torch.randperm(n, generator=manual_seed(seed + k))`` pass by pass.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from kdvision.core.data import StreamLoader, StreamSampler
from kdvision.core.errors import ConfigError
from torch.utils.data import Dataset


class Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def global_stream(n: int, seed: int, passes: int) -> list[int]:
    out: list[int] = []
    for k in range(passes):
        out += torch.randperm(n, generator=torch.Generator().manual_seed(seed + k)).tolist()
    return out


def take(stream: StreamLoader, batches: int) -> list[list[int]]:
    return [next(stream).tolist() for _ in range(batches)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


# ------------------------------------------------------------------------------------------------ order, seeds
def test_passes_are_seeded_permutations_and_batches_straddle_pass_ends():
    n, bs = 10, 4
    stream = StreamLoader(Indices(n), bs, seed=7)
    batches = take(stream, 8)                                           # 32 samples = 3.2 passes
    assert all(len(b) == bs for b in batches)                           # never short
    assert flat(batches) == global_stream(n, 7, 4)[:32]
    assert batches[2] == global_stream(n, 7, 2)[8:12]                   # 2 from pass 0, 2 from pass 1
    for k in range(3):
        assert sorted(flat(batches)[k * n:(k + 1) * n]) == list(range(n))  # each pass covers the data once
    assert stream.consumed == 32 and stream.pass_index == 3


def test_same_seed_same_stream_other_seed_other_stream():
    a = flat(take(StreamLoader(Indices(50), 8, seed=3), 10))
    b = flat(take(StreamLoader(Indices(50), 8, seed=3), 10))
    c = flat(take(StreamLoader(Indices(50), 8, seed=4), 10))
    assert a == b and a != c
    assert c[:30] == a[50:80]                                          # pass k of seed 4 is pass k + 1 of seed 3


# ---------------------------------------------------------------------------------------------- rank shares
@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (7, 2)])
def test_rank_shares_are_disjoint_and_cover_every_pass(n, world):
    bs, batches = 3, 8
    per_rank = [flat(take(StreamLoader(Indices(n), bs, seed=1, rank=r, world_size=world), batches))
                for r in range(world)]
    # rank r's i-th sample sits at global position i·W + r
    by_position = {i * world + r: idx for r, seq in enumerate(per_rank) for i, idx in enumerate(seq)}
    total = bs * batches * world
    assert sorted(by_position) == list(range(total))
    assert [by_position[j] for j in range(total)] == global_stream(n, 1, total // n + 1)[:total]
    for k in range(total // n):                                         # every complete pass: disjoint, covering
        shares = [{by_position[j] for j in range(k * n, (k + 1) * n) if j % world == r} for r in range(world)]
        assert sum(len(s) for s in shares) == n and set().union(*shares) == set(range(n))


def test_rank_defaults_come_from_the_process_group(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    stream = StreamLoader(Indices(8), 2, seed=0)
    assert (stream.rank, stream.world_size) == (1, 2)
    assert flat(take(stream, 2)) == global_stream(8, 0, 1)[1:8:2]


# ---------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("stop", [1, 2, 5])                              # mid-pass (1), across a pass end (2, 5)
def test_resume_continues_with_the_batches_that_come_next(stop):
    n, bs = 10, 4
    whole = take(StreamLoader(Indices(n), bs, seed=5, rank=1, world_size=2), 8)
    first = StreamLoader(Indices(n), bs, seed=5, rank=1, world_size=2)
    assert take(first, stop) == whole[:stop]
    state = first.state_dict()
    assert state == {"consumed": stop * bs, "seed": 5, "num_samples": n, "world_size": 2}
    resumed = StreamLoader(Indices(n), bs, seed=5, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert take(resumed, 8 - stop) == whole[stop:]
    again = StreamLoader(Indices(n), bs, seed=5, rank=1, world_size=2, consumed=stop * bs)  # same as the constructor
    assert take(again, 8 - stop) == whole[stop:]


def test_load_state_dict_restarts_a_running_stream_and_checks_its_origin():
    stream = StreamLoader(Indices(10), 4, seed=2)
    head = take(stream, 3)
    take(stream, 4)
    stream.load_state_dict({"consumed": 4, "seed": 2, "num_samples": 10, "world_size": 1})
    assert take(stream, 2) == head[1:3]                                 # rewinds a live iterator
    with pytest.raises(ConfigError, match="seed 3"):
        stream.load_state_dict({"consumed": 4, "seed": 3, "num_samples": 10, "world_size": 1})
    with pytest.raises(ConfigError, match="11 samples"):
        stream.load_state_dict({"consumed": 4, "seed": 2, "num_samples": 11, "world_size": 1})


def test_resume_under_another_world_size_continues_the_global_stream():
    n = 10
    two = [StreamLoader(Indices(n), 3, seed=0, rank=r, world_size=2) for r in range(2)]
    for s in two:
        take(s, 2)                                                      # 12 global positions taken
    single = StreamLoader(Indices(n), 3, seed=0)
    single.load_state_dict(two[0].state_dict())
    assert single.consumed == 12
    assert flat(take(single, 2)) == global_stream(n, 0, 2)[12:18]
    three = StreamLoader(Indices(n), 3, seed=0, rank=0, world_size=3)
    three.load_state_dict({"consumed": 3, "seed": 0, "num_samples": n, "world_size": 2})  # 6 taken: 6 / 3 = 2
    assert three.consumed == 2
    five = StreamLoader(Indices(n), 3, seed=0, rank=0, world_size=5)
    with pytest.raises(ConfigError, match="cannot continue under world size 5"):
        five.load_state_dict({"consumed": 3, "seed": 0, "num_samples": n, "world_size": 2})


# ---------------------------------------------------------------------------------------------------- workers
def test_workers_give_the_same_batches_and_resume_counts_only_delivered_batches():
    n, bs = 13, 4
    plain = take(StreamLoader(Indices(n), bs, seed=9, rank=0, world_size=2), 9)
    stream = StreamLoader(Indices(n), bs, seed=9, rank=0, world_size=2, num_workers=2)
    got = take(stream, 4)                                               # workers prefetch ahead of this
    state = stream.state_dict()
    stream.close()
    assert got == plain[:4] and state["consumed"] == 16
    resumed = StreamLoader(Indices(n), bs, seed=9, rank=0, world_size=2, num_workers=2)
    resumed.load_state_dict(state)
    assert take(resumed, 5) == plain[4:]
    resumed.close()


def test_creating_and_running_the_stream_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stream = StreamLoader(Indices(10), 4, seed=0)
    take(stream, 3)
    stream.load_state_dict(stream.state_dict())
    take(stream, 1)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------------------- sampler and errors
def test_sampler_keeps_the_kd_baseline_semantics():
    whole = list(itertools.islice(iter(StreamSampler(5, seed=0)), 20))
    assert whole == global_stream(5, 0, 4)
    assert list(itertools.islice(iter(StreamSampler(5, seed=0, offset=3, rank=1, world_size=2)), 7)) == whole[7::2]
    from kdvision.core.methods.kd_data import StreamSampler as moved

    assert moved is StreamSampler                                       # the KD baselines use this one


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="non-empty"):
        StreamLoader(Indices(0), 2, seed=0)
    with pytest.raises(ConfigError, match="rank 2 is not in"):
        StreamLoader(Indices(4), 2, seed=0, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch size"):
        StreamLoader(Indices(4), 0, seed=0)
    with pytest.raises(ConfigError, match="shuffle"):
        StreamLoader(Indices(4), 2, seed=0, shuffle=True)
