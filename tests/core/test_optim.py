"""Engine services around the step: optimizer factory, LR schedules (against torch's schedulers), the update with
gradient clipping, the loss-dict base, hook state and the after_train guarantee."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from kdvision.core.engine.method import LossDictMethod, Method
from kdvision.core.engine.optim import (LRSchedule, OptimizerSpec, ScheduleService, build_optimizer,
                                       lr_multiplier_groups, optimizer_step)
from kdvision.core.engine.rundir import RunDir
from kdvision.core.engine.trainer import Hook, Trainer
from kdvision.core.errors import ConfigError


def _param(n=3):
    return nn.Parameter(torch.arange(n, dtype=torch.float32))


@pytest.mark.parametrize("spec, cls, expect", [
    (OptimizerSpec("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4), torch.optim.SGD,
     {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "foreach": True}),
    (OptimizerSpec("adam", lr=1e-3, betas=(0.5, 0.999)), torch.optim.Adam,
     {"lr": 1e-3, "betas": (0.5, 0.999), "weight_decay": 0.0, "eps": 1e-8}),
    (OptimizerSpec("adamw", lr=2e-3, weight_decay=0.05, foreach=True), torch.optim.AdamW,
     {"lr": 2e-3, "weight_decay": 0.05, "foreach": True}),
])
def test_factory_builds_what_the_spec_says(spec, cls, expect):
    opt = build_optimizer([_param()], spec)
    assert type(opt) is cls
    group = opt.param_groups[0]
    for k, v in expect.items():
        assert group[k] == v, k


def test_factory_keeps_param_groups_and_rejects_bad_specs():
    a, b = _param(), _param()
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr": 0.5}], OptimizerSpec("adam", lr=0.1))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        build_optimizer([a], OptimizerSpec("rmsprop", lr=0.1))
    with pytest.raises(ConfigError, match="Nesterov"):
        build_optimizer([a], OptimizerSpec("sgd", lr=0.1, nesterov=True))
    with pytest.raises(ConfigError, match="learning rate"):
        build_optimizer([a], OptimizerSpec("sgd", lr=-1.0))


def _torch_lrs(make, steps, lr=0.2):
    opt = torch.optim.SGD([_param()], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule, make", [
    (LRSchedule("cosine", total=10, floor=2e-4),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, eta_min=2e-4)),
    (LRSchedule("multistep", milestones=(3, 6), gamma=0.1),
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 6], 0.1)),
    (LRSchedule("step", step_size=4, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5)),
])
def test_schedules_equal_torch_schedulers_stepped_at_epoch_end(schedule, make):
    ours = [schedule.lr(0.2, schedule.counter(e, 0)) for e in range(12)]
    assert ours == pytest.approx(_torch_lrs(make, 12), rel=1e-9, abs=1e-12)


def test_epoch_start_timing_is_torch_stepped_before_the_epoch():
    """DFAD's classification scripts call scheduler.step() at the start of each epoch."""
    start = LRSchedule("multistep", timing="start", milestones=(2, 4), gamma=0.1)
    torch_lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 4], 0.1), 7)
    assert [start.lr(0.2, start.counter(e, 0)) for e in range(6)] == pytest.approx(torch_lrs[1:7])


def test_per_iteration_cosine_and_linear_warmup():
    cos = LRSchedule("cosine", unit="iter", total=8)
    assert [cos.lr(1.0, cos.counter(0, i)) for i in range(8)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)])
    warm = LRSchedule("constant", warmup=4)
    assert [warm.lr(0.4, t) for t in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    for bad in (LRSchedule("poly"), LRSchedule("step"), LRSchedule("cosine"), LRSchedule(unit="batch")):
        with pytest.raises(ConfigError):
            bad.validate()


def test_schedule_service_drives_several_optimizers_and_reports_rates():
    a, b = build_optimizer([_param()], OptimizerSpec("sgd", lr=0.1)), build_optimizer([_param()],
                                                                                     OptimizerSpec("adam", lr=1.0))
    service = ScheduleService()
    service.add("student", a, LRSchedule("step", step_size=1, gamma=0.5))
    service.add("generator", b, LRSchedule("cosine", unit="iter", total=4))
    service.epoch_start(epoch=2, iteration=0)
    assert service.lrs() == pytest.approx({"lr_student": 0.025, "lr_generator": 1.0})
    service.step_start(epoch=2, iteration=2)
    assert service.lrs() == pytest.approx({"lr_student": 0.025, "lr_generator": 0.5})
    a.param_groups[0]["lr"] = 123.0  # a resumed optimizer's state holds the current LR: the law keeps its base
    service.epoch_start(epoch=0, iteration=0)
    assert service.lrs()["lr_student"] == pytest.approx(0.1)


def test_update_clips_the_global_gradient_norm():
    p = nn.Parameter(torch.zeros(4))
    opt = build_optimizer([p], OptimizerSpec("sgd", lr=1.0))
    optimizer_step(opt, (p * torch.tensor([3.0, 4.0, 0.0, 0.0])).sum(), clip_grad_norm=1.0)
    assert p.detach().tolist() == pytest.approx([-0.6, -0.8, 0.0, 0.0])  # gradient (3, 4) clipped to norm 1
    optimizer_step(opt, (p * 0.1).sum(), clip_grad_norm=1.0)  # below the threshold: untouched
    assert p.detach().tolist() == pytest.approx([-0.7, -0.9, -0.1, -0.1])


class _Toy(LossDictMethod):
    name = "toy"

    def __init__(self, clip=None):
        super().__init__(torch.device("cpu"))
        torch.manual_seed(0)
        self.net = nn.Linear(2, 1)
        self.add_optimizer("student", self.net.parameters(), OptimizerSpec("sgd", lr=0.1),
                           LRSchedule("step", step_size=1, gamma=0.5), clip_grad_norm=clip)
        self.x = torch.randn(8, 2)

    def modules(self):
        return {"student": self.net}

    def losses(self):
        out = self.net(self.x)
        return {"loss_a": out.pow(2).mean(), "loss_b": out.abs().mean()}, {"mean_out": out.mean().detach()}


def test_loss_dict_base_sums_losses_and_updates_the_player():
    m, ref = _Toy(), nn.Linear(2, 1)
    ref.load_state_dict(m.net.state_dict())
    out = m.train_step()
    assert set(out) == {"loss_a", "loss_b", "mean_out"} and not any(v.requires_grad for v in out.values())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    y = ref(m.x)
    (y.pow(2).mean() + y.abs().mean()).backward()
    opt.step()
    for a, b in zip(m.net.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


class _StatefulHook(Hook):
    def __init__(self):
        self.calls, self.count = [], 0

    def before_step(self, trainer):
        self.count += 1

    def after_train(self, trainer):
        self.calls.append("after_train")

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_trainer_applies_schedules_saves_hook_state_and_always_closes_hooks(tmp_path):
    m, hook = _Toy(), _StatefulHook()
    seen = []
    orig = m.train_step
    m.train_step = lambda: (seen.append(m.optimizers()["student"].param_groups[0]["lr"]), orig())[1]
    trainer = Trainer(m, epochs=2, iters_per_epoch=3, run=RunDir(tmp_path), hooks=[hook])
    trainer.fit()
    assert seen == pytest.approx([0.1] * 3 + [0.05] * 3)  # StepLR(1) at epoch end
    assert hook.count == 6 and hook.calls == ["after_train"]
    trainer.save(tmp_path / "ck.pt")
    fresh = _StatefulHook()
    Trainer(_Toy(), epochs=2, iters_per_epoch=3, run=RunDir(tmp_path), hooks=[fresh]).resume(tmp_path / "ck.pt")
    assert fresh.count == 6

    class Boom(Method):
        name = "boom"

        def modules(self):
            return {"student": nn.Linear(1, 1)}

        def train_step(self):
            raise RuntimeError("boom")

    hook = _StatefulHook()
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(Boom(torch.device("cpu")), epochs=1, iters_per_epoch=1, run=RunDir(tmp_path), hooks=[hook]).fit()
    assert hook.calls == ["after_train"]


def test_poly_schedule_values_and_validation():
    poly = LRSchedule("poly", unit="iter", total=10, power=0.9)
    # semseg's poly_learning_rate: base * (1 - it / max_iter) ** power, it = iterations done before this one
    assert [poly.lr(0.01, poly.counter(0, i)) for i in (0, 1, 5, 9, 10, 12)] == pytest.approx(
        [0.01, 0.01 * 0.9 ** 0.9, 0.01 * 0.5 ** 0.9, 0.01 * 0.1 ** 0.9, 0.0, 0.0])
    assert poly.lr(0.01, 5) == pytest.approx(0.005358867312681466)
    assert LRSchedule("poly", unit="iter", total=4, power=1.0, floor=1e-4).lr(0.1, 2) == pytest.approx(0.05005)
    assert poly.describe() == "poly power 0.9 over 10 iters"
    for bad in (LRSchedule("poly", total=0), LRSchedule("poly", total=5, power=0.0)):
        with pytest.raises(ConfigError):
            bad.validate()


def test_lr_multiplier_groups_follow_the_schedule_at_their_multiple():
    enc, head, frozen = _param(), _param(), _param()
    frozen.requires_grad_(False)
    groups = lr_multiplier_groups([("encoder", [enc, frozen], 1.0), ("heads", [head], 10.0)], lr=0.01)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("encoder", 0.01, 1), ("heads", 0.1, 1)]
    opt = build_optimizer(groups, OptimizerSpec("sgd", lr=0.01, momentum=0.9, weight_decay=1e-4))
    service = ScheduleService()
    service.add("model", opt, LRSchedule("poly", unit="iter", total=100, power=0.9))
    service.step_start(epoch=0, iteration=50)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * 0.5 ** 0.9, 0.1 * 0.5 ** 0.9])
    with pytest.raises(ConfigError, match="repeats"):
        lr_multiplier_groups([("a", [enc], 1.0), ("b", [enc], 10.0)], lr=0.1)
    with pytest.raises(ConfigError, match="no trainable"):
        lr_multiplier_groups([("a", [frozen], 1.0)], lr=0.1)
