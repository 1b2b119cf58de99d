"""Forward hooks by module name: BN-statistics losses, feature taps, and tap points for every classifier.

Spec: ``reference/datafree_engine.md`` §2 (BN loss rows), §3 (hooks; CMI feature sizes 2704 / 512), ``rgal.md`` §2–3
(block outputs, penultimate feature), ``models.md`` §3 (WRN block outputs are taken before the final ``bn1``).
Expected values are computed here by hand from the BN layers' inputs, independently of ``kdvision.core.losses``.
"""
from __future__ import annotations

import kdvision.core.hooks as hooks_mod
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.errors import ConfigError
from kdvision.core.hooks import (
    BNStatsHook,
    FeatureHook,
    TeacherTaps,
    block_names,
    bn_layer_names,
    cmi_feature_layers,
    head_name,
)
from kdvision.core.models import create_model, list_models, model_info


# ------------------------------------------------------------------------------------------------ tiny network
class Tiny(nn.Module):
    """conv → BN → ReLU → conv → BN → ReLU → pool → fc, with non-trivial running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)
        g = torch.Generator().manual_seed(1)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval().requires_grad_(False)


def images(n: int = 6, seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def bn_inputs(net: Tiny, x: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of bn1 and bn2, by running the modules by hand."""
    a = net.conv1(x)
    b = net.conv2(F.relu(net.bn1(a)))
    return [a, b]


def mean_var(x: torch.Tensor, unbiased: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    mean = flat.mean(1)
    var = ((flat - mean[:, None]) ** 2).sum(1) / (flat.shape[1] - (1 if unbiased else 0))
    return mean, var


def deepinv_manual(net: Tiny, x: torch.Tensor, ema=None, m: float = 0.9) -> torch.Tensor:
    total = torch.zeros(())
    for i, (a, bn) in enumerate(zip(bn_inputs(net, x), (net.bn1, net.bn2))):
        mean, var = mean_var(a)
        if ema is not None:
            mean = (1 - m) * mean + m * ema[0][i]
            var = (1 - m) * var + m * ema[1][i]
        total = total + torch.sqrt(((var - bn.running_var) ** 2).sum()) + torch.sqrt(((mean - bn.running_mean) ** 2).sum())
    return total


# ------------------------------------------------------------------------------------------------------ BN hook
def test_deepinv_loss_equals_manual_and_reaches_the_input():
    net = tiny()
    hook = BNStatsHook(net)
    assert hook.names == ["bn1", "bn2"] == bn_layer_names(net)
    x = images().requires_grad_(True)
    with hook.active():
        net(x)
    loss = hook.loss()
    assert loss.dim() == 0
    torch.testing.assert_close(loss, deepinv_manual(net, x.detach()), rtol=1e-5, atol=1e-5)
    # biased variance: the recorded statistics are the population variance of the BN input
    torch.testing.assert_close(hook.stats[0][1], bn_inputs(net, x.detach())[0].var((0, 2, 3), unbiased=False))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the gradient equals the one of the hand-built loss
    x2 = x.detach().clone().requires_grad_(True)
    deepinv_manual(net, x2).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-6)


def test_inactive_hook_does_no_work_and_keeps_the_last_value(monkeypatch):
    net = tiny()
    calls = []
    real = hooks_mod.batch_mean_var
    monkeypatch.setattr(hooks_mod, "batch_mean_var", lambda *a, **k: calls.append(1) or real(*a, **k))
    hook = BNStatsHook(net)
    assert not hook.enabled
    with torch.no_grad():
        net(images())                                  # a KD-style forward: no hook work at all
    assert calls == [] and all(m is None for m in hook._mean)
    with pytest.raises(RuntimeError, match="active"):
        hook.loss()
    x = images(seed=1)
    with hook.active():
        assert hook.enabled
        net(x)
    assert not hook.enabled and len(calls) == 2
    first = hook.loss().detach()
    with torch.no_grad():
        net(images(seed=2))                            # outside active(): the value read is still the first one
    assert len(calls) == 2
    torch.testing.assert_close(hook.loss(), first)
    torch.testing.assert_close(first, deepinv_manual(net, x))
    hook.remove()
    with hook.active():
        net(x)
    assert len(calls) == 2                             # removed: never fires again


def test_batch_slice_uses_the_first_n_samples_only():
    net = tiny()
    hook = BNStatsHook(net)
    x = images(8)
    with hook.active(), hook.batch_slice(3):
        assert hook.n_samples == 3
        logits = net(x)
    assert hook.n_samples is None and logits.shape[0] == 8   # the forward itself still sees the whole batch
    sliced = hook.loss()
    with hook.active():
        net(x[:3])
    torch.testing.assert_close(sliced, hook.loss())
    torch.testing.assert_close(sliced, deepinv_manual(net, x[:3]))
    with hook.active():
        net(x)
    assert not torch.allclose(sliced, hook.loss())


def test_momentum_mode_blends_with_the_ema():
    net = tiny()
    deep, mom = BNStatsHook(net), BNStatsHook(net, mode="momentum", momentum=0.9)
    x1, x2, x3 = images(seed=1), images(seed=2), images(seed=3)
    with deep.active(), mom.active():
        net(x1)
    assert mom.ema_mean is None
    torch.testing.assert_close(mom.loss(), deep.loss())          # no EMA yet: no blend
    mom.update_ema()                                              # first update copies the batch statistics
    raw1 = [mean_var(a) for a in bn_inputs(net, x1)]
    for i in range(2):
        torch.testing.assert_close(mom.ema_mean[i], raw1[i][0])
        torch.testing.assert_close(mom.ema_var[i], raw1[i][1])
    assert not mom.ema_mean[0].requires_grad
    with mom.active():
        net(x2)
    ema = ([r[0] for r in raw1], [r[1] for r in raw1])
    torch.testing.assert_close(mom.loss(), deepinv_manual(net, x2, ema=ema, m=0.9), rtol=1e-5, atol=1e-5)
    mom.update_ema()                                              # m·EMA + (1 − m)·batch
    raw2 = [mean_var(a) for a in bn_inputs(net, x2)]
    ema = ([0.9 * raw1[i][0] + 0.1 * raw2[i][0] for i in range(2)],
           [0.9 * raw1[i][1] + 0.1 * raw2[i][1] for i in range(2)])
    for i in range(2):
        torch.testing.assert_close(mom.ema_mean[i], ema[0][i])
        torch.testing.assert_close(mom.ema_var[i], ema[1][i])
    with mom.active():
        net(x3)
    torch.testing.assert_close(mom.loss(), deepinv_manual(net, x3, ema=ema, m=0.9), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    net = tiny()
    a = BNStatsHook(net, mode="momentum")
    for seed in (1, 2):
        with a.active():
            net(images(seed=seed))
        a.update_ema()
    path = tmp_path / "hook.pt"
    torch.save(a.state_dict(), path)
    b = BNStatsHook(net, mode="momentum")
    b.load_state_dict(torch.load(path, weights_only=True))
    for i in range(2):
        assert torch.equal(a.ema_mean[i], b.ema_mean[i]) and torch.equal(a.ema_var[i], b.ema_var[i])
    x = images(seed=5)
    with a.active(), b.active():
        net(x)
    assert torch.equal(a.loss(), b.loss())
    # an empty EMA round-trips as None; a state for other layers is refused
    c = BNStatsHook(net, mode="momentum")
    c.load_state_dict(BNStatsHook(net, mode="momentum").state_dict())
    assert c.ema_mean is None
    with pytest.raises(ConfigError):
        BNStatsHook(net, mode="momentum", modules=["bn2"]).load_state_dict(a.state_dict())


def test_global_mode_is_one_norm_over_all_layers_with_unbiased_variance():
    net = tiny()
    hook = BNStatsHook(net, mode="global")
    x = images(4)
    with hook.active():
        net(x)
    stats = [mean_var(a, unbiased=True) for a in bn_inputs(net, x)]
    mu = torch.cat([s[0] for s in stats])
    var = torch.cat([s[1] for s in stats])
    rm = torch.cat([net.bn1.running_mean, net.bn2.running_mean])
    rv = torch.cat([net.bn1.running_var, net.bn2.running_var])
    expected = torch.linalg.vector_norm(mu - rm) + torch.linalg.vector_norm(var - rv)
    torch.testing.assert_close(hook.loss(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hook.stats[1][1], bn_inputs(net, x)[1].var((0, 2, 3), unbiased=True))
    # differs from the per-layer biased form
    deep = BNStatsHook(net)
    with deep.active():
        net(x)
    assert not torch.allclose(deep.loss(), hook.loss())


def test_bn_hook_options_and_errors():
    net = tiny()
    only = BNStatsHook(net, modules=["bn2"])
    x = images()
    with only.active():
        net(x)
    _, b = bn_inputs(net, x)
    mean, var = mean_var(b)
    expected = torch.linalg.vector_norm(var - net.bn2.running_var) + torch.linalg.vector_norm(mean - net.bn2.running_mean)
    torch.testing.assert_close(only.loss(), expected)
    with pytest.raises(ConfigError, match="not BatchNorm2d"):
        BNStatsHook(net, modules=["conv1"])
    with pytest.raises(ConfigError, match="no module named 'bn3'"):
        BNStatsHook(net, modules=["bn3"])
    with pytest.raises(ConfigError, match="mode"):
        BNStatsHook(net, mode="fast")


# ------------------------------------------------------------------------------------------------- feature hook
def test_feature_hook_kinds_and_inactivity():
    net = tiny()
    x = images()
    a, b = bn_inputs(net, x)
    out = FeatureHook(net, ["bn1", "conv2"], kind="output")
    inp = FeatureHook(net, ["bn1", "fc"], kind="input")
    means = FeatureHook(net, ["bn1", "bn2", "fc"], kind="input_mean")
    with torch.no_grad():
        net(x)                                           # inactive: nothing recorded, no references kept
    assert all(f is None for h in (out, inp, means) for f in h._feats)
    with pytest.raises(RuntimeError, match="active"):
        _ = out.features
    with out.active(), inp.active(), means.active():
        logits = net(x)
    torch.testing.assert_close(out.features[0], net.bn1(a))
    torch.testing.assert_close(out.features[1], b)
    torch.testing.assert_close(inp.features[0], a)
    torch.testing.assert_close(net.fc(inp.features[1]), logits)
    torch.testing.assert_close(means.features[0], a.mean((2, 3)))
    torch.testing.assert_close(means.features[1], b.mean((2, 3)))
    assert means.features[2].shape == (6, 5)             # a 2-D input is returned as is
    cat = means.concat()
    assert cat.shape == (6, 4 + 5 + 5)
    torch.testing.assert_close(cat[:, :4], a.mean((2, 3)))
    means.clear()
    assert all(f is None for f in means._feats)
    # gradients flow through recorded features to the input
    xg = x.clone().requires_grad_(True)
    with out.active():
        net(xg)
    out.features[1].square().sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="kind"):
        FeatureHook(net, ["bn1"], kind="outputs")


def test_feature_hook_detects_in_place_modification():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return y.relu_()

    net = InPlace()
    hook = FeatureHook(net, ["conv"])
    with hook.active():
        net(images(2))
    with pytest.raises(RuntimeError, match="in place"):
        _ = hook.features


# ------------------------------------------------------------------------------------------ CMI feature sizes
def test_cmi_feature_size_wrn40_2_is_2704_over_37_bn_layers():
    model = create_model("wrn40_2", num_classes=10).eval()
    names = cmi_feature_layers(model)
    assert names == bn_layer_names(model) and len(names) == 37 and names[-1] == "bn1"
    hook = FeatureHook(model, names, kind="input_mean")
    with torch.no_grad(), hook.active():
        model(torch.randn(2, 3, 32, 32))
    assert hook.concat().shape == (2, 2704)


def test_cmi_feature_size_resnet34_is_512_from_layer_inputs():
    model = create_model("resnet34_8x", num_classes=10).eval()   # alias: kd_name is the canonical "resnet34"
    names = cmi_feature_layers(model)
    assert names == ["layer1", "layer2", "layer3", "layer4"]
    hook = FeatureHook(model, names, kind="input_mean")
    with torch.no_grad(), hook.active():
        model(torch.randn(2, 3, 32, 32))
    assert [f.shape[1] for f in hook.features] == [64, 64, 128, 256]
    assert hook.concat().shape == (2, 512)
    assert cmi_feature_layers(create_model("resnet18", num_classes=10)) == bn_layer_names(create_model("resnet18"))


# ------------------------------------------------------------------------------------------------ tap points
def test_wrn_block_outputs_are_taken_before_the_final_bn1():
    model = create_model("wrn16_2", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    taps = TeacherTaps(model)
    with torch.no_grad(), taps.active():
        logits = model(x)
    with torch.no_grad():
        b1 = model.block1(model.conv1(x))
        b2 = model.block2(b1)
        b3 = model.block3(b2)
        pooled = F.relu(model.bn1(b3)).mean((2, 3))
    assert taps.block_names == ["block1", "block2", "block3"]
    for got, ref in zip(taps.blocks, (b1, b2, b3)):
        assert torch.equal(got, ref)
    assert taps.blocks[2].shape == (2, 128, 8, 8)
    torch.testing.assert_close(taps.penultimate, pooled)
    torch.testing.assert_close(model.fc(pooled), logits)


@pytest.mark.parametrize("name, blocks, head", [
    ("wrn40_2", ["block1", "block2", "block3"], "fc"),
    ("resnet18", ["layer1", "layer2", "layer3", "layer4"], "linear"),
    ("resnet20_a", ["layer1", "layer2", "layer3"], "linear"),
    ("resnet8x4", ["layer1", "layer2", "layer3"], "fc"),
    ("vgg11", ["block0", "block1", "block2", "block3", "block4"], "classifier"),
    ("mobilenetv2", ["blocks.1", "blocks.2", "blocks.4", "blocks.6"], "classifier.0"),
    ("mobilenetv2_imagenet", ["features.3", "features.6", "features.13", "features.17"], "classifier.1"),
    ("shufflenetv2", ["layer1", "layer2", "layer3"], "linear"),
    ("resnet50_imagenet", ["layer1", "layer2", "layer3", "layer4"], "fc"),
    ("lenet5", ["conv1", "conv2", "conv3"], "fc2"),
])
def test_tap_point_names(name, blocks, head):
    assert block_names(name) == blocks
    model = create_model(name, num_classes=10)
    assert block_names(model) == blocks
    assert head_name(model) == head


def test_tap_point_errors_name_the_model():
    with pytest.raises(ConfigError, match="kd_name"):
        block_names(tiny())
    assert block_names("wrn_40_2") == ["block1", "block2", "block3"]       # aliases resolve
    with pytest.raises(ConfigError, match="wrn40_3"):
        block_names("wrn40_3")
    model = tiny()
    taps = TeacherTaps(model, blocks=["conv1", "conv2"])                   # explicit names for unregistered nets
    with taps.active():
        logits = model(images())
    assert [b.shape[1] for b in taps.blocks] == [4, 5]
    torch.testing.assert_close(model.fc(taps.penultimate), logits)
    with pytest.raises(ConfigError, match="has no module named 'layer9'"):
        TeacherTaps(create_model("resnet20", num_classes=10), blocks=["layer9"])


# -------------------------------------------------------------------------------- every registered classifier
def _input(name: str, batch: int = 2) -> torch.Tensor:
    c, h, w = model_info(name)["input_size"]
    if h > 64:  # ImageNet models at 64 px keep the CPU run fast (global pooling accepts it)
        h = w = 64
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list_models())
def test_every_classifier_has_taps_and_bn_statistics(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval().requires_grad_(False)
    x = _input(name)
    with torch.no_grad():
        plain = model(x)
    taps = TeacherTaps(model)
    bn = BNStatsHook(model)
    assert len(bn) == len(bn_layer_names(model))
    xg = x.clone().requires_grad_(True)
    with taps.active(), bn.active():
        logits = model(xg)
    assert torch.equal(logits.detach(), plain)                       # hooks leave the outputs untouched
    blocks = taps.blocks
    assert len(blocks) == len(block_names(name)) > 0
    for b in blocks:
        assert b.dim() == 4 and b.shape[0] == 2
    head = model.get_submodule(taps.head_name)
    assert isinstance(head, nn.Linear)
    assert taps.penultimate.shape == (2, head.in_features)
    torch.testing.assert_close(head(taps.penultimate), plain)        # the penultimate feature is the head's input
    loss = bn.loss()
    assert loss.dim() == 0 and torch.isfinite(loss)
    if len(bn):
        assert loss > 0
        loss.backward()                                               # the BN loss reaches the input
        assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    else:                                                             # lenet: no BN, a clear zero
        assert loss.item() == 0.0 and not loss.requires_grad
    taps.remove()
    bn.remove()
