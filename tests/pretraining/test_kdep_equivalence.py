"""KDEP reference equivalence (``reference/kdep.md`` §1.2-1.5, §4, §10): steps of our :class:`KDEP` method equal a
loop written from the original's update (robustness' ``train.py`` step with KDEP's feature loss), same players,
seeds and batches, to 1e-6.

The reference side is written here from the description, independently of the toolkit: torchvision networks whose
last block is re-run by hand without its final activation (BasicBlock / Bottleneck residual sum, MobileNetV2's last
1x1 conv + BN without ReLU6), the original's fixed ``AvgPool2d(7)`` at 224 px, the normaliser inside the wrapper,
``f_T = sign(u) |u / tau|^(1/p)`` with ``u = (h_T - mu) V[:, :k]``, ``loss_w * MSE`` and a plain
``torch.optim.SGD(momentum 0.9, weight_decay 5e-4)`` over *all* student parameters (zero_grad, backward, step).
Our side goes through the recipe's pieces: ``build_model``, ``freeze_unused``, ``feature_dim``, ``SVDBasis``,
``KDEPTeacher`` and ``KDEP`` constructed as ``KDEPRecipe.build_method`` does, driven as the trainer drives it.
Multi-step comparisons restart every step from a common state (see ``test_steps_equal_reference_loop``: a random
network at batch 2 amplifies float32 rounding ~1000x per step, even between two reference loops).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kdvision.core.engine.distributed import DistInfo
from kdvision.core.engine.optim import LRSchedule, OptimizerSpec
from kdvision.core.methods.kdep import KDEP, KDEPTeacher, SVDBasis, feature_dim
from kdvision.core.models import build_model
from kdvision.core.recipes.kdep import freeze_unused
from kdvision.core.taps import PreReLUTap

TOL = 1e-6
SIZE = 224  # the original's AvgPool2d(7) only fits 224 px inputs
BATCH, STEPS = 2, 3  # the data set holds BATCH * STEPS images: one epoch of STEPS steps over distinct batches
TAU, POWER = 0.1, 3.0
SEED = 5  # the sampler's seed
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# ------------------------------------------------------------------------------------------ reference (original)
class Normalized(nn.Module):
    """robustness' wrapper: the normaliser is part of the model, the data stay in [0, 1]."""

    def __init__(self, feat) -> None:
        super().__init__()
        self.feat = feat
        self.register_buffer("new_mean", MEAN.clone())
        self.register_buffer("new_std", STD.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat((x - self.new_mean) / self.new_std)


def _stem(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.maxpool(m.relu(m.bn1(m.conv1(x))))


def avgpool7(t: torch.Tensor) -> torch.Tensor:
    """The original's fixed pooling (224 px inputs give 7 x 7 maps)."""
    return torch.flatten(nn.AvgPool2d(7)(t), 1)


def global_mean(t: torch.Tensor) -> torch.Tensor:
    """The same average with the summation order of our adaptive pooling (for bit-equal targets, see below)."""
    return t.mean((2, 3))


def resnet18_pre_relu(m: nn.Module, x: torch.Tensor, pool=avgpool7) -> torch.Tensor:
    """torchvision ResNet-18 up to layer4, the last BasicBlock returning its residual sum without ReLU, AvgPool(7)."""
    x = m.layer4[0](m.layer3(m.layer2(m.layer1(_stem(m, x)))))
    blk = m.layer4[1]
    identity = x if blk.downsample is None else blk.downsample(x)
    out = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(x))))) + identity
    return pool(out)


def resnet50_pre_relu(m: nn.Module, x: torch.Tensor, pool=avgpool7) -> torch.Tensor:
    """torchvision ResNet-50, the last Bottleneck returning its residual sum without ReLU, AvgPool(7)."""
    x = m.layer4[1](m.layer4[0](m.layer3(m.layer2(m.layer1(_stem(m, x))))))
    blk = m.layer4[2]
    identity = x if blk.downsample is None else blk.downsample(x)
    out = F.relu(blk.bn1(blk.conv1(x)))
    out = F.relu(blk.bn2(blk.conv2(out)))
    out = blk.bn3(blk.conv3(out)) + identity
    return pool(out)


def mobilenetv2_pre_relu(m: nn.Module, x: torch.Tensor, pool=avgpool7) -> torch.Tensor:
    """torchvision MobileNetV2: the final 1x1 conv (features.18.0) + BN (features.18.1) without ReLU6, AvgPool(7)."""
    x = m.features[:18](x)
    last = m.features[18]
    out = last[1](last[0](x))
    return pool(out)


REF_FEATURES = {"resnet18_imagenet": resnet18_pre_relu, "resnet50_imagenet": resnet50_pre_relu,
                "mobilenetv2_imagenet": mobilenetv2_pre_relu}


class ReferenceTeacher(nn.Module):
    """The original's SVD teacher: pre-ReLU pooled feature, centred, projected on V[:, :k], PTS (float32 tensors)."""

    def __init__(self, net: nn.Module, mu: torch.Tensor, V: torch.Tensor, k: int, pool=avgpool7) -> None:
        super().__init__()
        self.body = net.eval()
        self.net = Normalized(lambda x: resnet50_pre_relu(net, x, pool))
        # a contiguous copy of the slice: the strided view takes another matmul kernel (rounding only, ~2e-6 on u,
        # which the cube root amplifies near 0)
        self.mu, self.Vk = mu.float(), V[:, :k].float().contiguous()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = (self.net(x) - self.mu) @ self.Vk
        return torch.sign(u) * torch.abs(u / TAU) ** (1.0 / POWER)


class ReferenceLoop:
    """The original iteration on raw batches: target under no_grad, the student's pre-ReLU pooled feature (through
    the normalising wrapper), ``loss_w * MSE``, zero_grad / backward / SGD step over all student parameters."""

    def __init__(self, student: nn.Module, arch: str, teacher: ReferenceTeacher, *, lr: float, loss_w: float) -> None:
        assert all(p.requires_grad for p in student.parameters())  # nothing frozen on this side
        self.student, self.teacher, self.loss_w = student, teacher, loss_w
        self.wrapped = Normalized(lambda x: REF_FEATURES[arch](student, x))
        self.opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.criterion = nn.MSELoss()

    def step(self, x: torch.Tensor) -> float:
        self.student.train()
        target = self.teacher(x)
        loss = self.loss_w * self.criterion(self.wrapped(x), target)
        self.opt.zero_grad()
        loss.backward()
        no_grad = [n for n, p in self.student.named_parameters() if p.grad is None]
        assert no_grad and all(n.startswith(("fc.", "classifier.")) for n in no_grad)  # the head gets no gradient
        self.opt.step()
        return loss.item()

    def momentum(self) -> dict[str, torch.Tensor]:
        return {n: self.opt.state[p]["momentum_buffer"] for n, p in self.student.named_parameters()
                if p in self.opt.state}


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def basis() -> SVDBasis:
    """A random mean and a random orthonormal 2048 x 2048 V (QR of a seeded Gaussian), as gen_svd_weights writes."""
    g = torch.Generator().manual_seed(123)
    V, _ = torch.linalg.qr(torch.randn(2048, 2048, generator=g, dtype=torch.float64))
    mean = 0.5 * torch.randn(2048, generator=g, dtype=torch.float64)
    return SVDBasis(mean=mean, V=V, S=torch.ones(2048, dtype=torch.float64), teacher="resnet50_imagenet",
                    teacher_sha256=None, images=0)


@pytest.fixture(scope="module")
def teacher_net() -> nn.Module:
    """A random ResNet-50 whose BN running statistics were estimated on random images (a teacher not at its initial
    statistics, with pooled features of a sensible size); eval mode."""
    torch.manual_seed(0)
    net = build_model("resnet50_imagenet", 1000)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        net((torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) - MEAN) / STD)
    for m in bns:
        m.momentum = 0.1
    return net.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """BATCH * STEPS raw images in [0, 1]."""
    return torch.rand(BATCH * STEPS, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def normalized(x: torch.Tensor) -> torch.Tensor:
    """What our data pipeline feeds (the transform normalises); the same arithmetic as the reference wrapper."""
    return (x - MEAN) / STD


def momentum_of(method: KDEP, model: nn.Module) -> dict[str, torch.Tensor]:
    opt = method.optimizers()["model"]
    return {n: opt.state[p]["momentum_buffer"] for n, p in model.named_parameters() if p in opt.state}


def max_dev(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    assert a.keys() == b.keys()
    return max(((a[k].double() - b[k].double()).abs().max().item(), k) for k in a)


# -------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("arch,k", [("resnet18_imagenet", 512), ("mobilenetv2_imagenet", 1280)])
def test_teacher_target_equals_reference(arch, k, basis, teacher_net, images):
    """KDEPTeacher(x) = PTS((h_T - mu) V_k) of the hand-written pre-ReLU ResNet-50; k is the student's width, 1280
    for MobileNetV2 (the original hard-wired 512 and failed there, bug 4).

    The pooled feature is compared with the original's AvgPool2d(7); the target with the same average summed in our
    order: the cube root's slope is unbounded at 0, so the 1-ulp difference of the two pooling kernels (~5e-7 on h)
    becomes up to ~2e-5 on a target element whose projection is near 0 (measured 1.8e-5): rounding, not method.
    """
    student = build_model(arch, 1000)
    assert feature_dim(student, (3, SIZE, SIZE)) == k  # the recipe infers k from the student
    basis.check(teacher_dim=feature_dim(teacher_net, (3, SIZE, SIZE)), student_dim=k, teacher_sha256=None,
                allow_other_teacher=False)
    ours = KDEPTeacher(copy.deepcopy(teacher_net), basis, k, tau=TAU, power=POWER)
    ours.train()  # a method may call train() on every module: the teacher must stay in eval mode
    x = images[:BATCH]
    with torch.no_grad():
        got, h = ours(normalized(x)), ours.features(normalized(x))
    ref = ReferenceTeacher(copy.deepcopy(teacher_net), basis.mean, basis.V, k)
    h_ref = ref.net(x)
    assert (h - h_ref).abs().max() <= TOL
    want = ReferenceTeacher(copy.deepcopy(teacher_net), basis.mean, basis.V, k, pool=global_mean)(x)
    assert got.shape == want.shape == (BATCH, k)
    assert want.abs().max() > 1.0  # the targets are not trivially small
    dev = (got - want).abs().max().item()
    assert dev <= TOL, f"teacher target deviates by {dev:.3g}"
    # in train mode the BN layers would use batch statistics: another target, so the check above can fail
    with torch.no_grad():
        u = (resnet50_pre_relu(copy.deepcopy(teacher_net).train(), normalized(x), global_mean) - basis.mean.float()) \
            @ basis.V[:, :k].float()
    assert (torch.sign(u) * torch.abs(u / TAU) ** (1 / POWER) - want).abs().max() > 1e-2


@pytest.mark.parametrize("arch,lr,loss_w", [("resnet18_imagenet", 0.3, 3.0), ("mobilenetv2_imagenet", 0.1, 3.0)])
def test_steps_equal_reference_loop(arch, lr, loss_w, basis, teacher_net, images):
    """STEPS steps of our KDEP over one epoch against the original's loop over the same batches in the sampler's
    order (the published LRs and loss weight): after every step each student parameter and BN buffer (running
    mean / var, num_batches_tracked), each SGD momentum buffer (times the LR: the step it contributes) and the loss
    agree to 1e-6.

    Each step starts from a common state: after the comparison ours is set to the reference's weights, buffers and
    momentum (corrections of ~1e-7). Without that the two float32 trajectories separate by themselves: two reference
    loops that differ only in the pooling kernel (AvgPool2d(7) vs a mean, equal up to rounding) are 2e-7 apart
    after step 1 but 5e-4 after step 2 and 9e-3 after step 3 (ResNet-18, LR 0.3; MobileNetV2 at LR 0.01 still
    2e-4 after step 2) — a random network at batch 2 amplifies rounding ~1000x per step — so a free-running
    comparison could only test rounding. The synchronised one still checks every update rule across steps: the
    batch order, momentum (step 2 and 3 use the buffer), weight decay, BN statistics, the frozen head.
    """
    torch.manual_seed(10)
    student = build_model(arch, 1000)
    ref_student = copy.deepcopy(student)  # before freezing: the reference trains "all parameters"
    init = copy.deepcopy(student)

    # as KDEPRecipe.build_players: freeze what no gradient of the pre-ReLU feature reaches (the head). Equivalent to
    # the original: its head receives no gradient (grad None after zero_grad), so torch's SGD skips it entirely —
    # no weight decay, no momentum — which is exactly what a frozen parameter gets.
    frozen = freeze_unused(student, (3, SIZE, SIZE))
    head = [n for n, _ in student.named_parameters() if n.startswith(("fc.", "classifier."))]
    assert sorted(frozen) == sorted(head)
    k = feature_dim(student, (3, SIZE, SIZE))
    teacher = KDEPTeacher(copy.deepcopy(teacher_net), basis, k, tau=TAU, power=POWER)
    data = TensorDataset(normalized(images), torch.zeros(len(images), dtype=torch.long))
    method = KDEP(student, teacher, data, loss_weight=loss_w, batch_size=BATCH,
                  optimizer=OptimizerSpec("sgd", lr=lr, momentum=0.9, weight_decay=5e-4),
                  schedule=lambda n: LRSchedule("constant"), clip_grad_norm=None, seed=SEED,
                  device=torch.device("cpu"), dist=DistInfo(), workers=0, amp=False, channels_last=False)
    assert len(method.loader) == STEPS

    # DistributedSampler(shuffle=True, seed): epoch e visits randperm(n) drawn from a generator seeded with seed + e.
    # The reference consumes the same images in that order (the first step then sees a non-leading pair).
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED + 0))
    assert order[:BATCH].tolist() != list(range(BATCH))  # the order matters for this seed
    batches = [images[order[i * BATCH:(i + 1) * BATCH]] for i in range(STEPS)]
    ref = ReferenceLoop(ref_student, arch, ReferenceTeacher(copy.deepcopy(teacher_net), basis.mean, basis.V, k),
                        lr=lr, loss_w=loss_w)

    method.schedules.epoch_start(0, 0)  # as the trainer drives a method
    method.on_epoch_start(0)
    assert list(method.sampler) == order.tolist()
    report = []
    for step in range(STEPS):
        before = copy.deepcopy(ref_student.state_dict())
        ref_loss = ref.step(batches[step])
        method.schedules.step_start(0, step)
        loss = method.train_step()["loss_feat"].item()

        moved, _ = max_dev(ref_student.state_dict(), before)
        assert moved > 1e-3  # the step changes the weights far beyond the tolerance
        dev, where = max_dev(student.state_dict(), ref_student.state_dict())
        mom = momentum_of(method, student)
        assert set(mom) == set(ref.momentum()) == {n for n, _ in student.named_parameters()} - set(head)
        mdev, mwhere = max_dev({n: lr * b for n, b in mom.items()}, {n: lr * b for n, b in ref.momentum().items()})
        report.append((step + 1, dev, where, mdev, mwhere, abs(loss - ref_loss)))
        assert dev <= TOL, f"after step {step + 1}: {where} deviates by {dev:.3g}"
        assert mdev <= TOL, f"after step {step + 1}: lr x momentum of {mwhere} deviates by {mdev:.3g}"
        assert loss == pytest.approx(ref_loss, rel=TOL, abs=TOL)
        for n in head:  # the head never moves on either side
            assert torch.equal(student.get_parameter(n), init.get_parameter(n))
            assert torch.equal(ref_student.get_parameter(n), init.get_parameter(n))
        # the common state of the next step
        student.load_state_dict(ref_student.state_dict())
        ref_mom = ref.momentum()
        for n, b in mom.items():
            b.copy_(ref_mom[n])
    print(f"{arch}: (step, max |ours - ref| state, where, lr x momentum, where, |loss diff|) {report}")


@pytest.mark.parametrize("arch,head", [("resnet18_imagenet", ["fc.weight", "fc.bias"]),
                                       ("mobilenetv2_imagenet", ["classifier.1.weight", "classifier.1.bias"])])
def test_freeze_unused_is_the_head_and_relu_of_pre_relu_map_is_the_standard_feature(arch, head, images):
    """``freeze_unused`` freezes exactly the head; spec §10: the activation applied to the pre-ReLU map, then
    pooled, is the ordinary network's pooled feature (same parameters); the tapped map is the hand-written one."""
    torch.manual_seed(20)
    model = build_model(arch, 1000)
    state = copy.deepcopy(model.state_dict())
    assert sorted(freeze_unused(model, (3, SIZE, SIZE))) == sorted(head)
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == head
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # running statistics untouched

    model.train()  # batch statistics (a random network at its initial running statistics has ~1e-8 features)
    x = normalized(images[:BATCH])
    tap = PreReLUTap(model)
    with torch.no_grad():
        torch.manual_seed(0)  # the same dropout mask (MobileNetV2's classifier) for both forwards
        with tap.active():
            logits = model(x)
        torch.manual_seed(0)
        plain = model(x)
        if arch.startswith("resnet"):
            m = model
            standard = torch.flatten(m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(_stem(m, x)))))), 1)
            blk = m.layer4[1]
            y = m.layer4[0](m.layer3(m.layer2(m.layer1(_stem(m, x)))))
            pre_map = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(y))))) + y
            act = F.relu
        else:
            standard = F.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
            pre_map = model.features[18][1](model.features[18][0](model.features[:18](x)))
            act = F.relu6
    assert torch.equal(logits, plain)  # the tap leaves the model's output alone
    assert (pre_map < 0).float().mean() > 0.1  # the activation matters: pre- and post-activation features differ
    assert (tap.pooled - standard).abs().max() > 1e-2
    assert (tap.feature_map - pre_map).abs().max() <= TOL
    assert (F.adaptive_avg_pool2d(act(pre_map), 1).flatten(1) - standard).abs().max() <= TOL
    assert (nn.AvgPool2d(7)(tap.activated).flatten(1) - standard).abs().max() <= TOL
