"""DFAD game: loss formulas, update order and counts, frozen teacher, and equality with the original's passes."""
import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from kdvision.core.generators import create_generator
from kdvision.core.engine.optim import LRSchedule
from kdvision.core.methods.dfad import DFAD, dfad_optimizers, discrepancy, generator_loss
from kdvision.core.models import create_model
from kdvision.core.recipes.dfad import DFADConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from dfad_reference import ReferenceDFAD  # noqa: E402


def test_loss_formulas_by_hand():
    s = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    t = torch.tensor([[0.0, 0.0], [1.5, 1.0]])
    d = discrepancy(s, t)  # |1| + |-2| + |-1| + |2| = 6 over 4 elements
    assert d.item() == pytest.approx(1.5)
    assert generator_loss(d, "l1").item() == pytest.approx(-1.5)
    assert generator_loss(d, "log_l1").item() == pytest.approx(-torch.log(torch.tensor(2.5)).item())
    seg_s, seg_t = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)  # B x K x H x W: mean over every element
    assert discrepancy(seg_s, seg_t).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        generator_loss(d, "kl")


def test_schedule_matches_original_scheduler_timing():
    # CIFAR MultiStepLR([100, 200]) stepped at epoch start: decayed LR in force from epoch 100 and 200 (1-based).
    start = LRSchedule("multistep", timing="start", milestones=(100, 200)).validate()
    f = [start.lr(1.0, start.counter(e, 0)) for e in range(300)]
    assert f[98] == 1.0 and f[99] == pytest.approx(0.1) and f[198] == pytest.approx(0.1)
    assert f[199] == pytest.approx(0.01)
    # CamVid StepLR(100) stepped at epoch end: first decayed epoch is 101.
    end = LRSchedule("step", timing="end", step_size=100).validate()
    assert end.lr(1.0, end.counter(99, 0)) == 1.0 and end.lr(1.0, end.counter(100, 0)) == pytest.approx(0.1)


def make_dfad(T, S, G, *, nz, batch_size, lr_S, lr_G, weight_decay, **flags):
    """DFAD with the config's defaults (their one home) for everything the test does not set."""
    cfg = DFADConfig()
    opt_S, opt_G = dfad_optimizers(lr_S, lr_G, weight_decay, cfg.momentum)
    kw = dict(loss=cfg.loss, student_steps=cfg.student_steps,
              student_bn_update_in_g_step=cfg.student_bn_update_in_g_step,
              batched_generation=cfg.batched_generation, train_generator=True, schedule=LRSchedule("constant"))
    kw.update(flags)
    return DFAD(T, S, G, nz=nz, batch_size=batch_size, opt_S=opt_S, opt_G=opt_G, **kw)


def _players(seed=0, ngf=8):
    torch.manual_seed(seed)
    return (create_model("lenet5"), create_model("lenet5_half"),
            create_generator("dfad_a", nz=16, ngf=ngf, img_size=32, nc=1))


def _count_steps(opt):
    calls = {"n": 0}
    orig = opt.step

    def step(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    opt.step = step
    return calls


def test_one_iteration_counts_and_frozen_teacher():
    T, S, G = _players()
    teacher_before = copy.deepcopy(T.state_dict())
    m = make_dfad(T, S, G, nz=16, batch_size=8, lr_S=0.1, lr_G=1e-3, weight_decay=1e-4)
    s_calls, g_calls = _count_steps(m.optimizers()["student"]), _count_steps(m.optimizers()["generator"])
    bn = G.conv_blocks1[1]
    out = m.train_step()
    assert s_calls["n"] == 5 and g_calls["n"] == 1
    assert set(out) == {"loss_S", "loss_G"} and all(v.requires_grad is False for v in out.values())
    for k, v in T.state_dict().items():
        assert torch.equal(v, teacher_before[k])
    assert all(p.grad is None and not p.requires_grad for p in T.parameters())
    assert all(p.requires_grad for p in S.parameters())  # restored after the generator step
    assert not T.training and S.training and G.training
    # G saw 6 batches in train mode: 5 student steps + 1 generator step
    assert bn.num_batches_tracked.item() == 6


def test_student_bn_updates_in_generator_step_flag():
    torch.manual_seed(0)
    T = create_model("lenet5")
    S = nn.Sequential(nn.Conv2d(1, 4, 5), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 10))
    G = create_generator("dfad_a", nz=16, ngf=8, img_size=32, nc=1)
    for flag, expected in ((True, 6), (False, 5)):
        S[1].reset_running_stats()
        m = make_dfad(T, S, G, nz=16, batch_size=8, lr_S=0.1, lr_G=1e-3, weight_decay=0,
                 student_bn_update_in_g_step=flag)
        m.train_step()
        assert S[1].num_batches_tracked.item() == expected
        assert S.training


def test_fast_loop_equals_reference_loop():
    """Freezing T, no_grad in student steps and input-only gradients in the G step change no number."""
    T1, S1, G1 = _players(seed=3)
    T2, S2, G2 = copy.deepcopy(T1), copy.deepcopy(S1), copy.deepcopy(G1)
    kw = dict(nz=16, batch_size=8, lr_S=0.05, lr_G=1e-3, weight_decay=5e-4)
    fast, ref = make_dfad(T1, S1, G1, **kw), ReferenceDFAD(T2, S2, G2, **kw)
    torch.manual_seed(11)
    fast_out = [fast.train_step() for _ in range(3)]
    torch.manual_seed(11)
    ref_out = [ref.train_step() for _ in range(3)]
    for a, b in zip(fast_out, ref_out):
        assert torch.allclose(a["loss_S"], b["loss_S"], atol=1e-6) and torch.allclose(a["loss_G"], b["loss_G"],
                                                                                       atol=1e-6)
    for m1, m2 in ((S1, S2), (G1, G2)):
        for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
            assert (v1.float() - v2.float()).abs().max().item() < 1e-6, k
    # the reference wasted work: teacher weight gradients were computed and accumulated
    assert all(p.grad is not None for p in T2.parameters())


def test_sample_images_keep_generator_state():
    T, S, G = _players()
    m = make_dfad(T, S, G, nz=16, batch_size=4, lr_S=0.1, lr_G=1e-3, weight_decay=0, sample_count=6)
    before = copy.deepcopy(G.state_dict())
    imgs = m.sample_images()
    assert imgs.shape == (6, 1, 32, 32)
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(imgs, m.sample_images())  # fixed z: the same grid each time


def test_batched_generation_flag_uses_one_generator_forward():
    T, S, G = _players()
    m = make_dfad(T, S, G, nz=16, batch_size=4, lr_S=0.1, lr_G=1e-3, weight_decay=0, batched_generation=True)
    m.train_step()
    assert G.conv_blocks1[1].num_batches_tracked.item() == 2  # one 5B forward + the generator step
