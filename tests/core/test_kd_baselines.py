"""DFAD's baselines: the random-generator game and KD on real images (stream sampler, resume position)."""
import copy

import torch
from torch.utils.data import TensorDataset

from kdvision.core.generators import create_generator
from kdvision.core.engine.optim import LRSchedule, OptimizerSpec
from kdvision.core.methods.dfad import DFAD, dfad_optimizers
from kdvision.core.methods.kd_data import DataKD, StreamSampler
from kdvision.core.models import create_model


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_stream_sampler_passes_are_seeded_permutations():
    s = StreamSampler(7, seed=3)
    first = _take(iter(s), 21)
    for k in range(3):
        chunk = first[7 * k:7 * (k + 1)]
        assert sorted(chunk) == list(range(7))
        assert chunk == torch.randperm(7, generator=torch.Generator().manual_seed(3 + k)).tolist()
    assert first[:7] != first[7:14]  # a fresh order each pass


def test_stream_sampler_resumes_and_shards():
    whole = _take(iter(StreamSampler(5, seed=0)), 20)
    assert _take(iter(StreamSampler(5, seed=0, offset=8)), 12) == whole[8:]  # continues mid-pass
    r0 = _take(iter(StreamSampler(5, seed=0, rank=0, world_size=2)), 10)
    r1 = _take(iter(StreamSampler(5, seed=0, rank=1, world_size=2)), 10)
    assert r0 == whole[0::2] and r1 == whole[1::2]  # the ranks split one stream
    assert _take(iter(StreamSampler(5, seed=0, offset=3, rank=1, world_size=2)), 7) == whole[7::2]


def test_random_generator_baseline_trains_only_the_student():
    torch.manual_seed(0)
    T, S = create_model("lenet5"), create_model("lenet5_half")
    G = create_generator("dfad_a", nz=16, ngf=8, img_size=32, nc=1)
    g_before = copy.deepcopy(G.state_dict())
    s_before = copy.deepcopy(S.state_dict())
    opt_S, opt_G = dfad_optimizers(0.1, 0.1, 0.0, 0.9)
    m = DFAD(T, S, G, nz=16, batch_size=4, opt_S=opt_S, opt_G=opt_G, schedule=LRSchedule("constant"), loss="l1",
             student_steps=5, student_bn_update_in_g_step=True, batched_generation=False, train_generator=False)
    out = m.train_step()
    assert set(out) == {"loss_S"}
    for k, v in G.state_dict().items():
        if k.endswith(("weight", "bias")):
            assert torch.equal(v, g_before[k]), k
    assert any(not torch.equal(v, s_before[k]) for k, v in S.state_dict().items())
    assert all(p.grad is None for p in G.parameters())


KD = dict(opt_S=OptimizerSpec("sgd", lr=0.01, momentum=0.9, weight_decay=0.0), schedule=LRSchedule("constant"))


def test_data_kd_minimises_l1_on_real_images_and_resumes_the_stream():
    torch.manual_seed(0)
    images = TensorDataset(torch.randn(10, 1, 32, 32), torch.zeros(10, dtype=torch.long))
    T, S = create_model("lenet5"), create_model("lenet5_half")
    seen = []
    T_forward = T.forward
    T.forward = lambda x: (seen.append(x.clone()), T_forward(x))[1]
    m = DataKD(T, S, images, batch_size=3, **KD, student_steps=2, seed=5)
    losses = [m.train_step()["loss_S"].item() for _ in range(2)]
    assert m.consumed == 12 and len(seen) == 4
    order = _take(iter(StreamSampler(10, seed=5)), 12)
    assert torch.equal(torch.cat(seen), images.tensors[0][order])  # the teacher saw the stream, in order
    assert all(loss > 0 for loss in losses)

    state = copy.deepcopy(m.state_dict())
    resumed = DataKD(create_model("lenet5"), create_model("lenet5_half"), images, batch_size=3, **KD,
                     student_steps=2, seed=5)
    resumed.load_state_dict(state)
    seen.clear()
    m.train_step()
    resumed.teacher.forward = lambda x: (seen.append(x.clone()), T_forward(x))[1]
    resumed.train_step()
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])  # same next images after resume
    following = _take(iter(StreamSampler(10, seed=5, offset=12)), 3)
    assert torch.equal(seen[0], images.tensors[0][following])
