"""MosaicKD: golden values of its losses, one iteration against a loop written from the original kd_mosaic.py
(``reference/mosaickd.md`` §2), the update counts, the KD stream's normalisation and an exact method-level resume."""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdvision.core.engine.optim import LRSchedule, OptimizerSpec
from kdvision.core.generators import create_discriminator, create_generator
from kdvision.core.losses import entropy, get_loss, patch_d_loss, patch_g_loss
from kdvision.core.methods.mosaickd import MosaicKD
from kdvision.core.models import create_model
from kdvision.core.synthesis.augment import Augment

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from mosaickd_reference import ReferenceMosaicKD  # noqa: E402

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # CIFAR-100 (the in-domain set of the README)
OOD_MEAN, OOD_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # CIFAR-10
B, NZ, N_OOD, SEED = 8, 16, 40, 3
W = dict(adv=1.0, align=1.0, local=1.0, balance=10.0)  # the README command's weights
LR, LR_G, WD, TEMP, TOTAL = 0.1, 1e-3, 1e-4, 1.0, 4


# ---------------------------------------------------------------------------------------------------- losses

def test_patch_losses_are_per_image_sums_of_64_bce_terms():
    fake, real = torch.randn(3, 1, 8, 8), torch.randn(5, 1, 8, 8)
    per_image = lambda d, y: F.binary_cross_entropy_with_logits(d, torch.full_like(d, y), reduction="none").sum((1, 2, 3))
    expected = (per_image(fake, 0.0).sum() + per_image(real, 1.0).sum()) / 8
    assert torch.allclose(patch_d_loss(fake, real), expected)
    assert torch.allclose(patch_g_loss(fake), per_image(fake, 1.0).mean())
    # golden: logits 0 everywhere → log 2 per patch, 64 patches per image
    zeros = torch.zeros(2, 1, 8, 8)
    assert patch_g_loss(zeros).item() == pytest.approx(64 * math.log(2))
    assert patch_d_loss(zeros, zeros).item() == pytest.approx(64 * math.log(2))
    assert get_loss("local") is patch_g_loss and get_loss("patch_gan_d") is patch_d_loss


def test_entropy_is_natural_log_and_balance_uses_log2():
    assert entropy(torch.zeros(4, 10)).item() == pytest.approx(math.log(10))
    assert entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(6, 5)
    p = logits.softmax(1)
    assert torch.allclose(entropy(logits), -(p * p.log()).sum(1).mean())
    p_bar = torch.zeros(4, 10).softmax(1).mean(0)  # uniform: Σ p log2 p = -log2(10)
    assert get_loss("balance")(torch.zeros(4, 10), base=2).item() == pytest.approx(-math.log2(10))
    assert torch.allclose(get_loss("balance")(logits, base=2), (logits.softmax(1).mean(0) * logits.softmax(1).mean(0)
                                                               .log2()).sum())
    del p_bar


# ---------------------------------------------------------------------------------------------------- players

def players(seed: int = 0):
    torch.manual_seed(seed)
    teacher = create_model("resnet8", num_classes=10)
    student = create_model("resnet8", num_classes=10)
    generator = create_generator("mosaickd", nz=NZ, ngf=8, img_size=32, nc=3)
    discriminator = create_discriminator("patch", nc=3, ndf=16)
    teacher.eval()
    for m in (teacher, student):  # non-trivial BN statistics
        with torch.no_grad():
            m.train()(torch.randn(16, 3, 32, 32))
    teacher.eval()
    ood = torch.randint(0, 256, (N_OOD, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    return teacher, student, generator, discriminator, ood


def ours(T, S, G, D, ood, *, augment=Augment(None, False), kd_norm=(MEAN, STD), **kw):
    cosine = LRSchedule("cosine", unit="iter", total=TOTAL)
    adam = OptimizerSpec("adam", lr=LR_G, betas=(0.5, 0.999))
    return MosaicKD(T, S, G, D, ood, nz=NZ, batch_size=B, mean=MEAN, std=STD, kd_mean=kd_norm[0], kd_std=kd_norm[1],
                    kd_augment=augment, opt_S=OptimizerSpec("sgd", lr=LR, momentum=0.9, weight_decay=WD),
                    opt_G=adam, opt_D=adam, schedule_S=cosine, schedule_G=cosine, schedule_D=cosine, T=TEMP,
                    kd_steps=5, student_bn_update_in_g_step=True, generator_train_mode_sampling=True, seed=SEED,
                    **{**W, **kw})


def run_ours(method: MosaicKD, iterations: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + iterations):
        method.schedules.step_start(0, i)
        out.append(method.train_step())
    return out


# ------------------------------------------------------------------------------------------- the original loop

def stream_batches(seed: int, count: int) -> list[torch.Tensor]:
    """The index batches of a stream: consecutive B-sized slices of the seeded permutations of the OOD set."""
    order = torch.cat([torch.randperm(N_OOD, generator=torch.Generator().manual_seed(seed + k)) for k in range(3)])
    return [order[i * B:(i + 1) * B] for i in range(count)]


def reference(T, S, G, D, ood, iterations: int) -> ReferenceMosaicKD:
    """kd_mosaic.py's train() (benchmarks/mosaickd_reference.py) on the batches of the two seeded streams."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    real_batches = iter(stream_batches(SEED, iterations))
    ood_batches = iter(stream_batches(SEED + 1, 5 * iterations))
    loop = ReferenceMosaicKD(T, S, G, D, real=lambda: (ood[next(real_batches)].float() / 255 - mean) / std,
                             ood=lambda: (ood[next(ood_batches)].float() / 255 - mean) / std, nz=NZ, batch_size=B,
                             mean=MEAN, std=STD, lr=LR, lr_g=LR_G, weight_decay=WD, total_iters=TOTAL, T=TEMP, **W)
    loop.record = True
    for _ in range(iterations):
        loop.train_step()
    return loop


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def test_one_iteration_equals_the_original_loop_in_every_players_weights():
    """D, G and S after one iteration (1 D step, 1 G step, 5 S steps) equal the original's to 1e-6, and so do G's
    gradients. One exception, by construction of Adam: its first step moves a weight by lr·g/(|g| + 1e-8), so a
    weight whose gradient is below ~1e-6 (here about 1 in 30,000 of G's) moves by an amount that float rounding
    of g decides (ours skips the frozen players' weight gradients, which changes the order in which autograd sums
    G's gradient contributions); those weights are compared to Adam's bound lr instead."""
    T, S, G, D, ood = players()
    ref = [copy.deepcopy(m) for m in (T, S, G, D)]
    torch.manual_seed(11)
    method = ours(*[copy.deepcopy(m) for m in (T, S, G, D)], ood)
    ours_grads: list[dict] = []
    update = method.update

    def recording(name, loss):
        update(name, loss)
        if name == "generator":
            ours_grads.append({k: p.grad.clone() for k, p in method.generator.named_parameters()})

    method.update = recording
    run_ours(method, 1)
    torch.manual_seed(11)
    ref_grads = reference(*ref, ood, 1).g_grads
    for k, g in ref_grads[0].items():
        assert torch.allclose(ours_grads[0][k], g, rtol=0, atol=1e-6), k
    assert max_diff(method.student, ref[1]) < 1e-6  # weights and BN running statistics
    assert max_diff(method.discriminator, ref[3]) < 1e-6
    ours_g, ref_g = method.generator.state_dict(), ref[2].state_dict()
    ill_conditioned = 0
    for k, v in ref_g.items():
        grad = ref_grads[0].get(k)
        sensitive = grad.abs() < 1e-6 if grad is not None else torch.zeros_like(v, dtype=torch.bool)
        ill_conditioned += int(sensitive.sum())
        diff = (ours_g[k].double() - v.double()).abs()
        assert diff[~sensitive].max().item() < 1e-6, k
        assert diff[sensitive].max().item() <= LR_G if sensitive.any() else True, k
    assert ill_conditioned < 1e-3 * sum(v.numel() for v in ref_g.values())
    assert max_diff(method.teacher, T) == 0


def test_the_learning_rates_follow_the_per_iteration_cosine_of_all_three_players():
    T, S, G, D, ood = players()
    method = ours(T, S, G, D, ood)
    run_ours(method, 2)
    factor = (1 + math.cos(math.pi * 1 / TOTAL)) / 2  # the 2nd iteration's (one scheduler step taken)
    assert method.schedules.lrs() == pytest.approx({"lr_student": LR * factor, "lr_generator": LR_G * factor,
                                                    "lr_discriminator": LR_G * factor})


def test_one_iteration_is_one_d_step_one_g_step_five_student_steps_and_the_teacher_stays_frozen(monkeypatch):
    T, S, G, D, ood = players()
    method = ours(T, S, G, D, ood)
    calls: list[str] = []
    update = MosaicKD.update
    monkeypatch.setattr(MosaicKD, "update", lambda self, name, loss: (calls.append(name), update(self, name, loss)))
    out = run_ours(method, 1)[0]
    assert calls == ["discriminator", "generator"] + ["student"] * 5
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert set(out) == {"loss_s", "loss_g", "loss_d", "loss_adv", "loss_align", "loss_local", "loss_balance"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    assert method.d_stream.consumed == B and method.kd_stream.consumed == 5 * B


def test_the_kd_stream_is_normalised_in_domain_by_default_and_as_the_original_with_legacy():
    T, S, G, D, ood = players()
    idx = stream_batches(SEED + 1, 1)[0]
    x = ood[idx].float() / 255
    in_domain = ours(T, S, G, D, ood).kd_batch()
    assert torch.allclose(in_domain, (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    legacy = ours(T, S, G, D, ood, kd_norm=(OOD_MEAN, OOD_STD)).kd_batch()
    assert torch.allclose(legacy, (x - torch.tensor(OOD_MEAN).view(1, 3, 1, 1)) / torch.tensor(OOD_STD).view(1, 3, 1, 1))
    # with the OOD set's training augmentation: crop + flip of the same images, drawn from the global RNG
    aug = Augment(crop_padding=4, hflip=True)
    torch.manual_seed(5)
    augmented = ours(T, S, G, D, ood, augment=aug).kd_batch()
    torch.manual_seed(5)
    expected = aug(ood[idx]).float() / 255
    assert torch.allclose(augmented, (expected - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    # the discriminator's real batches: no augmentation, in-domain normalisation, their own stream
    d = ours(T, S, G, D, ood, augment=aug).d_batch()
    x_d = ood[stream_batches(SEED, 1)[0]].float() / 255
    assert torch.allclose(d, (x_d - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))


def test_state_dict_resume_continues_exactly():
    T, S, G, D, ood = players()
    full = ours(*[copy.deepcopy(m) for m in (T, S, G, D)], ood, augment=Augment(4, True))
    torch.manual_seed(1)
    run_ours(full, 2)
    state_full = full.state_dict()
    part = ours(*[copy.deepcopy(m) for m in (T, S, G, D)], ood, augment=Augment(4, True))
    torch.manual_seed(1)
    run_ours(part, 1)
    state, rng = copy.deepcopy(part.state_dict()), torch.get_rng_state()
    resumed = ours(*[copy.deepcopy(m) for m in (T, S, G, D)], ood, augment=Augment(4, True))
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    run_ours(resumed, 1, start=1)
    state_resumed = resumed.state_dict()
    for player in ("student", "generator", "discriminator"):
        for k, v in state_full["modules"][player].items():
            assert torch.equal(v, state_resumed["modules"][player][k]), (player, k)
    assert state_full["extra"]["d_stream"] == state_resumed["extra"]["d_stream"]
    assert state_full["extra"]["kd_stream"] == state_resumed["extra"]["kd_stream"]
    for name in ("student", "generator", "discriminator"):
        a, b = state_full["optimizers"][name]["state"], state_resumed["optimizers"][name]["state"]
        for i in a:
            for k, v in a[i].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(b[i][k])), (name, i, k)


def test_bad_ood_tensor_is_refused():
    T, S, G, D, ood = players()
    with pytest.raises(ValueError, match="uint8"):
        ours(T, S, G, D, ood.float())


# ------------------------------------------------------------------------------ MosaicKD's DFQ baseline ("DFQAD")

class ReferenceDFQ:
    """MosaicKD's kd_datafree.py train(), written from the original (teacher gradients on, the student's weight
    gradients computed in the G step, BN mean/var hooks with unbiased variances), as its two halves."""

    def __init__(self, T, S, G, *, lr, lr_g, wd, adv, oh, ie, bn) -> None:
        self.T, self.S, self.G = T, S, G
        self.hp = dict(adv=adv, oh=oh, ie=ie, bn=bn)
        self.mean, self.std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        self.optim_s = torch.optim.Adam(S.parameters(), lr, weight_decay=wd)
        self.optim_g = torch.optim.Adam(G.parameters(), lr_g)

    def normalizer(self, x):
        return (x - self.mean) / self.std

    @staticmethod
    def kl(s, t):
        return F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="batchmean")

    def g_step(self) -> dict:
        T, S, G, hp = self.T, self.S, self.G, self.hp
        stats = []
        bns = [m for m in T.modules() if isinstance(m, torch.nn.BatchNorm2d)]

        def hook(module, inputs, output):
            x = inputs[0]
            stats.append((x.mean([0, 2, 3]), x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=True)))

        handles = [m.register_forward_hook(hook) for m in bns]
        bn_mean, bn_var = torch.cat([m.running_mean for m in bns]), torch.cat([m.running_var for m in bns])
        S.train(), T.eval(), G.train()
        images = self.normalizer(G(torch.randn(size=(B, NZ))))
        t_out, s_out = T(images), S(images)
        loss_one_hot = F.cross_entropy(t_out, t_out.data.max(1)[1])
        softmax_o_T = F.softmax(t_out, dim=1).mean(dim=0)
        loss_information_entropy = (softmax_o_T * torch.log10(softmax_o_T)).sum()
        loss_bn = torch.norm(torch.cat([m for m, _ in stats]) - bn_mean, 2) + \
            torch.norm(torch.cat([v for _, v in stats]) - bn_var, 2)
        loss_g = -hp["adv"] * self.kl(s_out, t_out) + loss_one_hot * hp["oh"] + \
            loss_information_entropy * hp["ie"] + hp["bn"] * loss_bn
        self.optim_g.zero_grad()
        loss_g.backward()
        grads = {k: p.grad.clone() for k, p in G.named_parameters()}
        self.optim_g.step()
        for h in handles:
            h.remove()
        return {"loss_g": loss_g.detach(), "loss_bn": loss_bn.detach(), "grads": grads}

    def s_steps(self) -> None:
        for _ in range(5):
            with torch.no_grad():
                images = self.normalizer(self.G(torch.randn(size=(B, NZ))))
                t_out = self.T(images)
            s_out = self.S(images.detach())
            loss_s = self.kl(s_out, t_out.detach())
            self.optim_s.zero_grad()
            loss_s.backward()
            self.optim_s.step()


def test_mosaickd_dfq_iteration_equals_the_original_loop():
    """The G step: the same losses and G gradients (1e-6); the 5 Adam student steps from the same updated G: the
    same student (1e-6). (Adam's first steps move each weight by about ±lr whatever |g|, so a G that differs in
    a few near-zero-gradient weights by float rounding would change the student's batches; the halves are checked
    from the same state.)"""
    from kdvision.core.methods.mosaickd import MosaicDFQ

    T, S, G, _, _ = players()
    hp = dict(adv=1.0, oh=0.5, ie=20.0, bn=1.0)
    ref = ReferenceDFQ(*[copy.deepcopy(m) for m in (T, S, G)], lr=1e-3, lr_g=LR_G, wd=WD, **hp)
    method = MosaicDFQ(*[copy.deepcopy(m) for m in (T, S, G)], nz=NZ, batch_size=B, mean=MEAN, std=STD,
                       opt_S=OptimizerSpec("adam", lr=1e-3, weight_decay=WD), opt_G=OptimizerSpec("adam", lr=LR_G),
                       schedule=LRSchedule("cosine", total=200), kd_steps=5, **hp)
    calls, snapshots = [], {}
    update = method.update

    def recording(name, loss):
        update(name, loss)
        calls.append(name)
        if name == "generator":
            snapshots["grads"] = {k: p.grad.clone() for k, p in method.generator.named_parameters()}
            snapshots["G"] = copy.deepcopy(method.generator.state_dict())
            snapshots["rng"] = torch.get_rng_state()

    method.update = recording
    torch.manual_seed(4)
    out = method.train_step()
    torch.manual_seed(4)
    theirs = ref.g_step()
    assert calls == ["generator"] + ["student"] * 5
    assert torch.allclose(out["loss_g"], theirs["loss_g"], atol=1e-6)
    assert torch.allclose(out["loss_bn"], theirs["loss_bn"], atol=1e-6)
    for k, g in theirs["grads"].items():
        assert torch.allclose(snapshots["grads"][k], g, rtol=0, atol=1e-6), k
    ref.G.load_state_dict(snapshots["G"])
    torch.set_rng_state(snapshots["rng"])
    ref.s_steps()
    assert max_diff(method.student, ref.S) < 1e-6
    assert set(out) == {"loss_s", "loss_g", "loss_adv", "loss_oh", "loss_ie", "loss_bn"}
    assert all(p.grad is None for p in method.teacher.parameters())
