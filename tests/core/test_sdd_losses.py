"""SDD line: KD, DKD, NKD, the scale-decoupled (SPP) region logits, the consistent/complementary weights and the
SD-KD / SD-DKD / SD-NKD losses (``reference/sdd.md`` §1-3, §8 bugs #1, #4, #5, #10, #11, §10 oracles).

Expected values come from straightforward float64 implementations written here from the spec's formulas (explicit
softmaxes, column deletion for the non-target distributions, explicit adaptive-pooling bins, loops over samples and
regions) and from hand-worked numbers; none of them calls the code under test.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.errors import ConfigError
from kdvision.core.losses import (
    LOSSES,
    dkd_loss,
    get_loss,
    kd_loss,
    kldiv,
    nkd_loss,
    num_regions,
    parse_scales,
    region_logits,
    sd_dkd_loss,
    sd_kd_loss,
    sd_nkd_loss,
    sdd_weights,
    spp_regions,
)
from kdvision.core.models import create_model
from kdvision.core.models.spp import ScaleDecoupled, classifier_head

D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(b: int, k: int, seed: int, scale: float = 3.0, n: int | None = None) -> torch.Tensor:
    shape = (b, k) if n is None else (b, k, n)
    return torch.randn(*shape, generator=_gen(seed), dtype=D) * scale


def _labels(b: int, k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, k, (b,), generator=_gen(seed))


# ------------------------------------------------------------------------------- float64 references (spec §3)
def _softmax(z: torch.Tensor) -> torch.Tensor:
    e = (z - z.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    m = z.max(-1, keepdim=True).values
    return z - m - (z - m).exp().sum(-1, keepdim=True).log()


def _kl(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Σ q log q − q log p per row (F.kl_div's convention, 0·log 0 = 0)."""
    return (torch.xlogy(q, q) - q * log_p).sum(-1)


def ref_kd_rows(s, t, T):
    return T * T * _kl(_softmax(t / T), _log_softmax(s / T))


def ref_dkd_original_rows(s, t, y, alpha, beta, T):
    """mdistiller's DKD as written in §3.3: binary probabilities by summing, log of the sums, −1000 masking."""
    gt = F.one_hot(y, s.shape[1]).to(s.dtype)
    ps, pt = _softmax(s / T), _softmax(t / T)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = _kl(bt, bs.log())
    nckd = _kl(_softmax(t / T - 1000.0 * gt), _log_softmax(s / T - 1000.0 * gt))
    return T * T * (alpha * tckd + beta * nckd)


def ref_dkd_exact_rows(s, t, y, alpha, beta, T):
    """DKD by definition: non-target distributions over the K − 1 other columns (column deleted)."""
    out = []
    for i in range(s.shape[0]):
        g = int(y[i])
        keep = [k for k in range(s.shape[1]) if k != g]
        ps, pt = _softmax(s[i] / T), _softmax(t[i] / T)
        bs, bt = torch.stack([ps[g], 1 - ps[g]]), torch.stack([pt[g], 1 - pt[g]])
        nckd = _kl(_softmax(t[i, keep] / T), _log_softmax(s[i, keep] / T))
        out.append(T * T * (alpha * _kl(bt, bs.log()) + beta * nckd))
    return torch.stack(out)


def ref_nkd_rows(s, t, y, T, gamma, legacy):
    out = []
    for i in range(s.shape[0]):
        g = int(y[i])
        first = -_softmax(t[i])[g] * _log_softmax(s[i])[g]
        keep = list(range(s.shape[1])) if legacy else [k for k in range(s.shape[1]) if k != g]
        cross = (_softmax(t[i, keep] / T) * _log_softmax(s[i, keep] / T)).sum()
        out.append(first - gamma * T * T * cross)
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------------ KD
def test_kd_hand_value_and_reference():
    s = torch.zeros(1, 2, dtype=D)
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=D)  # q = [3/4, 1/4], p = [1/2, 1/2] at τ = 1
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(s, t, T=1.0).item() == pytest.approx(expected, rel=1e-12)
    # τ = 2: q = softmax([log 3, 0] / 2) = [√3, 1] / (√3 + 1), times τ² = 4
    q0 = math.sqrt(3) / (math.sqrt(3) + 1)
    expected2 = 4 * (q0 * math.log(q0 / 0.5) + (1 - q0) * math.log((1 - q0) / 0.5))
    assert kd_loss(s, t, T=2.0).item() == pytest.approx(expected2, rel=1e-12)

    s, t = _logits(6, 10, 0), _logits(6, 10, 1)
    rows = kd_loss(s, t, T=4.0, reduction="none")
    assert rows.shape == (6,) and torch.allclose(rows, ref_kd_rows(s, t, 4.0), rtol=1e-10, atol=1e-12)
    assert torch.allclose(kd_loss(s.float(), t.float(), 4.0), kldiv(s.float(), t.float(), T=4.0), rtol=1e-6)
    with pytest.raises(ConfigError, match="reduction"):
        kd_loss(s, t, 4.0, reduction="sum")


# ------------------------------------------------------------------------------------------------------ DKD
def test_dkd_stable_form_equals_original_formulation_on_normal_logits():
    s, t, y = _logits(8, 10, 2), _logits(8, 10, 3), _labels(8, 10, 4)
    for alpha, beta, T in ((1.0, 8.0, 4.0), (1.0, 2.0, 1.0), (0.5, 6.0, 2.0)):
        ours = dkd_loss(s, t, y, alpha, beta, T, reduction="none")
        assert torch.allclose(ours, ref_dkd_original_rows(s, t, y, alpha, beta, T), rtol=1e-6, atol=1e-9)
        assert torch.allclose(ours, ref_dkd_exact_rows(s, t, y, alpha, beta, T), rtol=1e-10, atol=1e-12)
        assert dkd_loss(s, t, y, alpha, beta, T).item() == pytest.approx(ours.mean().item(), rel=1e-12)
    # in float32 as well (the training dtype), against the float64 original
    ours32 = dkd_loss(s.float(), t.float(), y, 1.0, 8.0, 4.0, reduction="none")
    assert ours32.dtype == torch.float32
    assert torch.allclose(ours32.double(), ref_dkd_original_rows(s, t, y, 1.0, 8.0, 4.0), rtol=1e-5, atol=1e-6)
    # each part matters: α only scales TCKD, β only NCKD
    tc = dkd_loss(s, t, y, 1.0, 0.0, 4.0)
    nc = dkd_loss(s, t, y, 0.0, 1.0, 4.0)
    assert tc > 0 and nc > 0
    assert dkd_loss(s, t, y, 2.0, 3.0, 4.0).item() == pytest.approx((2 * tc + 3 * nc).item(), rel=1e-12)


def test_dkd_finite_on_extreme_logits_where_the_original_is_not():
    y = torch.tensor([0])
    # student gives the target probability 0 in float32 → the original takes log 0
    s = torch.tensor([[-3000.0, 0.0, 0.0]])
    t = torch.zeros(1, 3)
    orig = ref_dkd_original_rows(s, t, y, 1.0, 8.0, 1.0)
    assert torch.isinf(orig).all()
    ours = dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    # hand value: b_t = [1/3, 2/3], log b_s = [−3000 − log 2, ≈ 0]; both non-target distributions uniform → NCKD = 0
    expected = (1 / 3) * (math.log(1 / 3) + 3000 + math.log(2)) + (2 / 3) * math.log(2 / 3)
    assert torch.isfinite(ours) and ours.item() == pytest.approx(expected, rel=1e-6)

    # teacher and student both certain of the target: the original computes 0 · log 0 − 0 · (−inf) = NaN
    s = t = torch.tensor([[3000.0, 0.0, 1.0]])
    assert torch.isnan(ref_dkd_original_rows(s, t, y, 1.0, 8.0, 1.0)).all()
    assert dkd_loss(s, t, y, 1.0, 8.0, 1.0).item() == 0.0  # identical distributions

    # a target logit 3000 above the rest: z − 1000 still dominates the "non-target" softmax of the −1000 trick;
    # excluding the target gives the true non-target distribution softmax([0, 1]) (hand value, float64 scalars)
    s, t = torch.tensor([[3000.0, 0.0, 1.0]]), torch.tensor([[0.0, 2.0, 1.0]])
    pt = _softmax(t.double())[0]
    q = _softmax(torch.tensor([2.0, 1.0], dtype=D))
    p = _softmax(torch.tensor([0.0, 1.0], dtype=D))
    tckd = pt[0] * pt[0].log() + (1 - pt[0]) * ((1 - pt[0]).log() - (math.log(1 + math.e) - 3000))
    nckd = (q * (q / p).log()).sum()
    assert dkd_loss(s, t, y, 1.0, 8.0, 1.0).item() == pytest.approx((tckd + 8 * nckd).item(), rel=1e-6)

    # gradients stay finite too
    s = torch.tensor([[-3000.0, 0.0, 5.0], [3000.0, -2.0, 1.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 2.0], [3000.0, 0.0, 1.0]])
    dkd_loss(s, t, torch.tensor([0, 0]), 1.0, 8.0, 4.0).backward()
    assert torch.isfinite(s.grad).all()


def test_dkd_rejects_fewer_than_three_classes():
    with pytest.raises(ConfigError, match="3 classes"):
        dkd_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([0, 1]), 1.0, 8.0, 4.0)
    with pytest.raises(ConfigError, match="3 classes"):
        sd_dkd_loss(torch.zeros(2, 2, 5), torch.zeros(2, 2, 5), torch.tensor([0, 1]), None, 1.0, 8.0, 4.0)
    assert torch.isfinite(dkd_loss(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0, 2]), 1.0, 8.0, 4.0))


# ------------------------------------------------------------------------------------------------------ NKD
def test_nkd_hand_values():
    s = t = torch.zeros(1, 3, dtype=D)
    y = torch.tensor([0])
    # first term: t_y = 1/3, log s_y = −log 3; fixed: non-target uniform over 2 classes; legacy: uniform over 3
    fixed = math.log(3) / 3 + 1.5 * math.log(2)
    legacy = math.log(3) / 3 + 1.5 * math.log(3)
    assert nkd_loss(s, t, y, T=1.0, gamma=1.5).item() == pytest.approx(fixed, rel=1e-12)
    assert nkd_loss(s, t, y, T=1.0, gamma=1.5, legacy_mask=True).item() == pytest.approx(legacy, rel=1e-12)


def test_nkd_fixed_and_legacy_match_the_references():
    s, t, y = _logits(7, 10, 5), _logits(7, 10, 6), _labels(7, 10, 7)
    for T, gamma in ((1.0, 1.5), (4.0, 8.0)):
        for legacy in (False, True):
            ours = nkd_loss(s, t, y, T, gamma, legacy_mask=legacy, reduction="none")
            assert torch.allclose(ours, ref_nkd_rows(s, t, y, T, gamma, legacy), rtol=1e-10, atol=1e-12)
        assert nkd_loss(s, t, y, T, gamma).item() == pytest.approx(
            nkd_loss(s, t, y, T, gamma, reduction="none").mean().item(), rel=1e-12)


def test_nkd_legacy_differs_from_fixed_exactly_in_the_target_class():
    s, t, y = _logits(5, 6, 8), _logits(5, 6, 9), _labels(5, 6, 10)
    fixed = nkd_loss(s, t, y, 2.0, 1.5, reduction="none")
    legacy = nkd_loss(s, t, y, 2.0, 1.5, legacy_mask=True, reduction="none")
    assert (fixed - legacy).abs().min() > 1e-6  # the masks differ on every row
    # the first term is shared: without the second term the two agree
    assert torch.allclose(nkd_loss(s, t, y, 2.0, 0.0, reduction="none"),
                          nkd_loss(s, t, y, 2.0, 0.0, legacy_mask=True, reduction="none"), rtol=0, atol=0)
    # the corrected second term ignores the target class at τ (only the first term, at τ = 1, sees it) ...
    s2 = s.clone()
    s2[torch.arange(5), y] += 2.0
    first = lambda z: -_softmax(t)[torch.arange(5), y] * _log_softmax(z)[torch.arange(5), y]  # noqa: E731
    second_fixed = lambda z: nkd_loss(z, t, y, 2.0, 1.5, reduction="none") - first(z)  # noqa: E731
    second_legacy = lambda z: nkd_loss(z, t, y, 2.0, 1.5, legacy_mask=True, reduction="none") - first(z)  # noqa: E731
    assert torch.allclose(second_fixed(s2), second_fixed(s), rtol=0, atol=1e-12)
    # ... the legacy one is the full-distribution cross-entropy at τ, which does
    assert (second_legacy(s2) - second_legacy(s)).abs().min() > 1e-4
    full_ce = -1.5 * 4.0 * (_softmax(t / 2.0) * _log_softmax(s / 2.0)).sum(1)
    assert torch.allclose(second_legacy(s), full_ce, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------- SPP (§1.2, §1.3)
def _bins(n: int, s: int) -> list[tuple[int, int]]:
    return [((i * n) // s, -((-(i + 1) * n) // s)) for i in range(s)]  # floor(i·n/s), ceil((i+1)·n/s)


def _pool_ref(x: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = x.shape
    out = torch.empty(b, c, s, s, dtype=x.dtype)
    for i, (h0, h1) in enumerate(_bins(h, s)):
        for j, (w0, w1) in enumerate(_bins(w, s)):
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean((2, 3))
    return out


def _spp_ref(x: torch.Tensor, scales, legacy: bool) -> torch.Tensor:
    if legacy:
        p4 = _pool_ref(x, 4)
        grids = [p4 if s == 4 else _pool_ref(p4, s) for s in scales]
    else:
        grids = [_pool_ref(x, s) for s in scales]
    return torch.cat([g.reshape(x.shape[0], x.shape[1], -1) for g in grids], 2)


def test_scale_lists_and_region_counts():
    assert num_regions([1, 2, 4]) == 21 and num_regions([1, 2]) == 5 and num_regions([1]) == 1
    assert parse_scales("[1, 2, 4]") == parse_scales("[1,2,4]") == parse_scales("1,2,4") == (1, 2, 4)
    assert parse_scales((1, 4, 2)) == (1, 4, 2)  # order as given
    x = torch.randn(2, 3, 8, 8, generator=_gen(11))
    assert spp_regions(x, [1, 2, 4]).shape == (2, 3, 21) and spp_regions(x, "[1, 2]").shape == (2, 3, 5)
    for bad in ([], [2, 1], [1, 2, 2], [1, 0], [1, True], "[1,2", [1.0, 2]):
        with pytest.raises(ConfigError):
            parse_scales(bad)
    with pytest.raises(ConfigError, match="legacy"):
        spp_regions(x, [1, 3], legacy_pooling=True)


@pytest.mark.parametrize("hw", [8, 4, 7, 2])
def test_spp_matches_explicit_bins(hw):
    x = torch.randn(2, 3, hw, hw, generator=_gen(hw), dtype=D)
    for scales in ([1, 2, 4], [1, 2], [1, 4, 2]):
        for legacy in (False, True):
            assert torch.allclose(spp_regions(x, scales, legacy), _spp_ref(x, scales, legacy), atol=1e-12)
    default = spp_regions(x, [1, 2, 4])
    assert torch.allclose(default[:, :, 0], x.mean((2, 3)), atol=1e-12)  # region 0 = true global average
    if hw != 7:  # nested bins: both poolings agree on every CIFAR map
        assert torch.allclose(default, spp_regions(x, [1, 2, 4], legacy_pooling=True), atol=1e-12)


def test_spp_legacy_region0_is_biased_on_7x7_maps():
    x = torch.randn(4, 8, 7, 7, generator=_gen(12), dtype=D)
    legacy = spp_regions(x, [1, 2, 4], legacy_pooling=True)
    default = spp_regions(x, [1, 2, 4])
    assert torch.allclose(default[:, :, 0], x.mean((2, 3)), atol=1e-12)
    assert (legacy[:, :, 0] - x.mean((2, 3))).abs().max() > 1e-3
    # the 2×2 scale differs too (legacy pools it from the overlapping 4×4 bins), the 4×4 scale does not
    assert (legacy[:, :, 1:5] - default[:, :, 1:5]).abs().max() > 1e-3
    assert torch.allclose(legacy[:, :, 5:], default[:, :, 5:], atol=1e-12)


def test_spp_2x2_map_finest_regions_are_copies():
    x = torch.randn(2, 3, 2, 2, generator=_gen(13), dtype=D)
    for legacy in (False, True):
        r = spp_regions(x, [1, 2, 4], legacy)
        for i in range(4):
            for j in range(4):
                assert torch.equal(r[:, :, 5 + 4 * i + j], x[:, :, i // 2, j // 2])
        assert torch.equal(r[:, :, 1:5], x.flatten(2))


def test_region_logits_one_matmul_equals_per_region_head():
    torch.manual_seed(0)
    head = nn.Linear(6, 5).double()
    x = torch.randn(3, 6, 4, 4, generator=_gen(14), dtype=D)
    regions = spp_regions(x, [1, 2, 4])
    out = region_logits(regions, head)
    assert out.shape == (3, 5, 21)
    for n in range(21):
        assert torch.allclose(out[:, :, n], head(regions[:, :, n]), atol=1e-12)
    # the head is linear: a region logit is the mean of the per-pixel logit map over the region
    pixel = torch.einsum("bchw,kc->bkhw", x, head.weight) + head.bias.view(1, -1, 1, 1)
    assert torch.allclose(out[:, :, 5], pixel[:, :, 0, 0], atol=1e-12)
    assert torch.allclose(out[:, :, 1], pixel[:, :, :2, :2].mean((2, 3)), atol=1e-12)
    # a forward hook on the head does not see the N·B region rows
    calls = []
    head.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    region_logits(regions, head)
    assert calls == []


# ------------------------------------------------------------------------------------ ScaleDecoupled wrapper
ZOO_HEADS = {"resnet8x4": "fc", "resnet32x4": "fc", "wrn_40_2": "fc", "vgg13": "classifier", "vgg8": "classifier",
             "ShuffleV1": "linear", "ShuffleV2": "linear", "MobileNetV2": "classifier.0", "resnet20": "fc"}
ZOO_MAPS = {"resnet8x4": 8, "resnet32x4": 8, "wrn_40_2": 8, "vgg13": 4, "vgg8": 4, "ShuffleV1": 4, "ShuffleV2": 4,
            "MobileNetV2": 2, "resnet20": 8}


@pytest.mark.parametrize("name", list(ZOO_HEADS))
def test_scale_decoupled_zoo_models(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    assert classifier_head(model) == ZOO_HEADS[name]
    plain_keys = list(model.state_dict())
    sdd = ScaleDecoupled(model, scales=[1, 2, 4])
    x = torch.randn(2, 3, 32, 32, generator=_gen(15))
    with torch.no_grad():
        logits, regions = sdd(x)
        reference = model(x)
    assert regions.shape == (2, 10, 21) and sdd.num_regions == 21
    assert torch.allclose(logits, reference, atol=1e-6)
    assert torch.allclose(regions[:, :, 0], reference, rtol=1e-5, atol=1e-5)  # region 0 = the global logits
    assert sdd.tap._feats == [None]  # no map kept past the forward
    if ZOO_MAPS[name] == 2:  # MobileNetV2 at 32 px: the 16 finest regions are 4 copies of each 2×2 cell
        for i in range(4):
            for j in range(4):
                assert torch.allclose(regions[:, :, 5 + 4 * i + j], regions[:, :, 1 + 2 * (i // 2) + j // 2],
                                      atol=1e-6)
    else:  # ... and not on larger maps
        assert (regions[:, :, 5] - regions[:, :, 6]).abs().max() > 1e-6
    # state_dict: exactly the plain model's keys; strict loads both ways and inside a parent module
    assert list(sdd.state_dict()) == plain_keys
    other = create_model(name, num_classes=10).eval()
    sdd.load_state_dict(other.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(sdd(x)[0], other(x), atol=1e-6)
    model.load_state_dict(ScaleDecoupled(create_model(name, num_classes=10)).state_dict(), strict=True)
    sdd.remove()


def test_scale_decoupled_state_dict_nesting_errors_and_copies():
    torch.manual_seed(0)
    model = create_model("resnet8x4", num_classes=10).eval()
    parent = nn.ModuleDict({"student": ScaleDecoupled(model, [1, 2])})
    sd = parent.state_dict()
    assert list(sd) == ["student." + k for k in model.state_dict()]
    parent.load_state_dict(sd, strict=True)
    bad = dict(model.state_dict())
    bad.pop("fc.bias")
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as err:
        parent["student"].load_state_dict(bad, strict=True)
    assert '"fc.bias"' in str(err.value) and '"extra.weight"' in str(err.value) and "model." not in str(err.value)
    # a deep copy taps its own model
    clone = copy.deepcopy(parent["student"])
    x = torch.randn(2, 3, 32, 32, generator=_gen(16))
    with torch.no_grad():
        a, b = parent["student"](x), clone(x)
    assert torch.allclose(a[1], b[1]) and len(clone.model.avgpool._forward_hooks) == 1
    # gradients reach the student through the region logits; the SPP adds no parameters
    assert sum(p.numel() for p in parent["student"].parameters()) == sum(p.numel() for p in model.parameters())
    model.train()
    _, regions = parent["student"](x)
    regions[:, :, 1:].sum().backward()
    assert model.conv1.weight.grad.abs().sum() > 0


def test_scale_decoupled_explicit_points_and_legacy_pooling_on_7x7():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5)).double().eval()
    x = torch.randn(2, 3, 7, 7, generator=_gen(17), dtype=D)
    default = ScaleDecoupled(net, "[1,2,4]", head="4", feature_map=("2", "input"))
    logits, regions = default(x)
    assert torch.allclose(regions[:, :, 0], logits, atol=1e-12)
    default.remove()
    legacy = ScaleDecoupled(net, [1, 2, 4], legacy_pooling=True, head="4", feature_map=("2", "input"))
    _, regions_l = legacy(x)
    assert (regions_l[:, :, 0] - logits).abs().max() > 1e-4
    legacy.remove()
    with pytest.raises(ConfigError):
        ScaleDecoupled(net, [1, 2], head="0", feature_map=("2", "input"))  # not a Linear


# -------------------------------------------------------------------------------------- weights (§2)
def _teacher_regions(preds: list[list[int]], k: int) -> torch.Tensor:
    """B×K×N logits whose argmax in region n of sample b is preds[b][n]."""
    t = torch.zeros(len(preds), k, len(preds[0]))
    for b, row in enumerate(preds):
        for n, c in enumerate(row):
            t[b, c, n] = 5.0
    return t


def test_sdd_weights_hand_built_cases():
    y = torch.tensor([0, 0])
    # sample 0: global right (0); regions: right (gt_lt), wrong 1 (gt_lw), wrong 2 (gt_lw), right (gt_lt)
    # sample 1: global wrong (1); regions: right (gw_lt), same wrong 1 (gw_lw), other wrong 2, other wrong 3 (gw_lw)
    t = _teacher_regions([[0, 0, 1, 2, 0], [1, 0, 1, 2, 3]], k=4)
    xor = sdd_weights(t, y)
    agree = sdd_weights(t, y, rule="class_agreement")
    assert xor.dtype == torch.float32 and xor.shape == (2, 5)
    assert xor.tolist() == [[1, 1, 2, 2, 1], [1, 2, 1, 1, 1]]
    assert agree.tolist() == [[1, 1, 2, 2, 1], [1, 2, 1, 2, 2]]
    with pytest.raises(ConfigError, match="rule"):
        sdd_weights(t, y, rule="xor")


def test_sdd_weights_rules_differ_exactly_on_both_wrong_different_classes():
    t = torch.randn(32, 4, 21, generator=_gen(18))
    y = _labels(32, 4, 19)
    pred = t.argmax(1)
    xor, agree = sdd_weights(t, y), sdd_weights(t, y, rule="class_agreement")
    for b in range(32):
        g_ok = bool(pred[b, 0] == y[b])
        for n in range(21):
            l_ok = bool(pred[b, n] == y[b])
            assert xor[b, n] == (2.0 if l_ok != g_ok else 1.0)
            both_wrong_diff = not g_ok and not l_ok and bool(pred[b, n] != pred[b, 0])
            assert (xor[b, n] != agree[b, n]) == both_wrong_diff
    assert (xor[:, 0] == 1).all() and (agree[:, 0] == 1).all()
    assert (xor != agree).any() and (xor == 2).any()  # the random case exercises both branches


# ------------------------------------------------------------------------------------- SD losses (§3.2-3.6)
def _sd_ref(row_fn, s, t, y, w):
    b, _, n = s.shape
    total = torch.zeros((), dtype=D)
    for i in range(b):
        for r in range(n):
            total = total + w[i, r] * row_fn(s[i:i + 1, :, r], t[i:i + 1, :, r], y[i:i + 1])[0]
    return total / (n * b)


def test_sd_losses_equal_weighted_region_sums():
    b, k, n = 3, 6, 5
    s, t, y = _logits(b, k, 20, n=n), _logits(b, k, 21, n=n), _labels(b, k, 22)
    w = sdd_weights(t, y).double()
    assert (w == 2).any()
    cases = [
        (sd_kd_loss(s, t, w, T=4.0), lambda a, c, l: ref_kd_rows(a, c, 4.0)),
        (sd_dkd_loss(s, t, y, w, alpha=1.0, beta=8.0, T=4.0),
         lambda a, c, l: ref_dkd_original_rows(a, c, l, 1.0, 8.0, 4.0)),
        (sd_nkd_loss(s, t, y, w, T=4.0, gamma=8.0), lambda a, c, l: ref_nkd_rows(a, c, l, 4.0, 8.0, False)),
        (sd_nkd_loss(s, t, y, w, T=4.0, gamma=8.0, legacy_mask=True),
         lambda a, c, l: ref_nkd_rows(a, c, l, 4.0, 8.0, True)),
    ]
    for ours, row_fn in cases:
        assert ours.item() == pytest.approx(_sd_ref(row_fn, s, t, y, w).item(), rel=1e-6)
        assert ours.item() != pytest.approx(_sd_ref(row_fn, s, t, y, torch.ones_like(w)).item(), rel=1e-6)
    # weights=None means all ones
    assert sd_kd_loss(s, t, None, 4.0).item() == pytest.approx(
        _sd_ref(lambda a, c, l: ref_kd_rows(a, c, 4.0), s, t, y, torch.ones(b, n, dtype=D)).item(), rel=1e-10)
    with pytest.raises(ValueError, match="B×N"):
        sd_kd_loss(s, t, w.t(), 4.0)


def test_sd_losses_with_one_scale_equal_the_plain_losses():
    s, t, y = _logits(6, 10, 23), _logits(6, 10, 24), _labels(6, 10, 25)
    ones = torch.ones(6, 1)
    s1, t1 = s.unsqueeze(2), t.unsqueeze(2)
    assert sd_kd_loss(s1, t1, ones, 4.0).item() == pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-12)
    assert sd_dkd_loss(s1, t1, y, ones, 1.0, 8.0, 4.0).item() == pytest.approx(
        ref_dkd_original_rows(s, t, y, 1.0, 8.0, 4.0).mean().item(), rel=1e-6)
    assert sd_nkd_loss(s1, t1, y, ones, 1.0, 1.5).item() == pytest.approx(nkd_loss(s, t, y, 1.0, 1.5).item(),
                                                                         rel=1e-12)
    # through the wrapper: scales [1] region logits reproduce KD / DKD on the models' global logits
    torch.manual_seed(0)
    teacher = ScaleDecoupled(create_model("resnet8x4", num_classes=10).eval(), [1])
    student = ScaleDecoupled(create_model("resnet20", num_classes=10).eval(), [1])
    x = torch.randn(4, 3, 32, 32, generator=_gen(26))
    yb = _labels(4, 10, 27)
    with torch.no_grad():
        (tg, tr), (sg, sr) = teacher(x), student(x)
    w = sdd_weights(tr, yb)
    assert w.shape == (4, 1) and (w == 1).all()
    assert sd_kd_loss(sr, tr, w, 4.0).item() == pytest.approx(kd_loss(sg, tg, 4.0).item(), rel=1e-5)
    assert sd_dkd_loss(sr, tr, yb, w, 1.0, 8.0, 4.0).item() == pytest.approx(
        dkd_loss(sg, tg, yb, 1.0, 8.0, 4.0).item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ dtype, registry
def test_float32_under_bf16_autocast():
    b, k, n = 4, 10, 5
    s, t, y = _logits(b, k, 28).float(), _logits(b, k, 29).float(), _labels(b, k, 30)
    sr, tr = _logits(b, k, 31, n=n).float(), _logits(b, k, 32, n=n).float()
    w = sdd_weights(tr, y)
    fns = [lambda a, c, ar, cr: kd_loss(a, c, 4.0),
           lambda a, c, ar, cr: dkd_loss(a, c, y, 1.0, 8.0, 4.0),
           lambda a, c, ar, cr: nkd_loss(a, c, y, 1.0, 1.5),
           lambda a, c, ar, cr: sd_kd_loss(ar, cr, w, 4.0),
           lambda a, c, ar, cr: sd_dkd_loss(ar, cr, y, w, 1.0, 8.0, 4.0),
           lambda a, c, ar, cr: sd_nkd_loss(ar, cr, y, w, 4.0, 8.0, legacy_mask=True)]
    bf = [x.bfloat16() for x in (s, t, sr, tr)]
    for fn in fns:
        plain = fn(*(x.float() for x in bf))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*bf)
            out_f = fn(s, t, sr, tr)
        assert out.dtype == torch.float32 and out_f.dtype == torch.float32
        assert torch.equal(out, plain)  # bf16 inputs are upcast, nothing inside runs in bf16
        assert torch.equal(out_f, fn(s, t, sr, tr))


def test_registry_names():
    for name, fn in (("kd", kd_loss), ("dkd", dkd_loss), ("nkd", nkd_loss), ("sd_kd", sd_kd_loss),
                     ("sd_dkd", sd_dkd_loss), ("sd_nkd", sd_nkd_loss)):
        assert get_loss(name) is fn and LOSSES.get(name + "_loss") is fn
    assert get_loss("sdd_dkd") is sd_dkd_loss and get_loss("kl") is kldiv
