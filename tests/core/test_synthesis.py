"""The synthesis engine: augmentation, the device-resident pool, every synthesizer's round, the KD method."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdvision.core.generators import create_generator
from kdvision.core.hooks import block_names
from kdvision.core.losses import kldiv, triplet_loss
from kdvision.core.engine.optim import LRSchedule, OptimizerSpec
from kdvision.core.methods.datafree import DataFreeKD
from kdvision.core.methods.rgal import RGALStudentTerms
from kdvision.core.models import create_model, list_models, model_info
from kdvision.core.data import dataset_spec, get_dataset
from kdvision.core.methods.dfad import DFAD
from kdvision.core.methods.kd_data import DataKD
from kdvision.core.recipes.datafree import DataFreeConfig, build_student_terms
from kdvision.core.recipes.supervised import Supervised
from kdvision.core.synthesis import (CIFAR_AUGMENT, NO_AUGMENT, AdvTripletSynthesizer, Augment, BestTracker,
                                     CMISynthesizer, DeepInversionSynthesizer, FastMetaSynthesizer, FastSynthesizer,
                                     GenerativeSynthesizer, ImagePool, Normalizer, SynthesisViews, crop_flip)
from kdvision.core.synthesis.base import Synthesizer
from kdvision.core.synthesis.inversion import reinit_first_layers
from kdvision.core.synthesis.registry import SYNTHESIZERS, build_synthesizer

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def small_pair(teacher="resnet8", student="resnet8", classes=10, seed=0):
    torch.manual_seed(seed)
    return create_model(teacher, num_classes=classes), create_model(student, num_classes=classes)


def synth(method, T, S, G=None, *, batch=8, g_steps=2, bn=1.0, shape=(3, 32, 32), augment=None, **fields):
    """``build_synthesizer`` on ``DataFreeConfig()``: the config's defaults (the one home of every hyper-parameter)
    plus the fields a test sets; ``batch`` images per round, 10 classes, the dataset's augmentation by default."""
    cfg = DataFreeConfig(method=method, synthesis_batch_size=batch, g_steps=g_steps, bn=bn, **fields)
    c = shape[0]
    augment = Augment.from_spec(dataset_spec(cfg.dataset)) if augment is None else augment
    return build_synthesizer(cfg, T, S, num_classes=10, shape=shape, norm=(MEAN[:c], STD[:c]),
                             device=torch.device("cpu"), world=1, augment=augment, generator=G)


def student_terms(T, S, shape=(3, 32, 32), **fields):
    """RGAL's student terms from ``DataFreeConfig(method="rgal")`` defaults plus the test's fields."""
    return build_student_terms(DataFreeConfig(method="rgal", **fields), T, S, shape)


def bn_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def small_generator(nz=16, ngf=8, nc=3):
    return create_generator("cmi", nz=nz, ngf=ngf, img_size=32, nc=nc)


# -- augmentation --------------------------------------------------------------------------------------------------
def test_crop_flip_is_a_padded_crop_or_its_mirror_with_uniform_offsets():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8) + 0.5  # strictly positive: zero padding is recognisable
    out = crop_flip(x, padding=2)
    padded = F.pad(x, (2,) * 4)
    seen, flips = set(), 0
    for i in range(x.shape[0]):
        matches = [(dy, dx, fl) for dy in range(5) for dx in range(5) for fl in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(2) if fl else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, f"sample {i} is not a crop of its padded image"
        dy, dx, fl = matches[0]
        seen.add((dy, dx))
        flips += fl
    assert len(seen) >= 15  # 25 offsets, 64 draws: a uniform law hits most of them
    assert 16 <= flips <= 48


def test_crop_flip_keeps_uint8():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert crop_flip(x).dtype == torch.uint8


# -- pool ------------------------------------------------------------------------------------------------------------
def test_pool_quantises_like_the_png_round_trip(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    x = torch.rand(5, 3, 32, 32)
    pool = ImagePool((3, 32, 32))
    pool.add(x)
    expected = (x.numpy() * 255).astype(np.uint8)  # the originals' writer: uint8(x * 255), truncating
    assert np.array_equal(pool.images.numpy(), expected)
    assert pool.save_png(tmp_path) == 5
    back = np.stack([np.asarray(Image.open(tmp_path / f"{i:06d}.png")).transpose(2, 0, 1) for i in range(5)])
    assert np.array_equal(back, expected)  # PNG files written for inspection hold exactly the pooled bytes


def constant_images(n: int) -> torch.Tensor:
    """Image i is the constant (i + 1) / 255: its source can be read back from any crop."""
    return (torch.arange(1, n + 1, dtype=torch.float32) / 255 + 1e-4).view(n, 1, 1, 1).expand(n, 3, 8, 8).clone()


def source_ids(batch: torch.Tensor) -> list[int]:
    return [int(round(float(img.max()) * 255)) - 1 for img in batch]


def test_pool_walks_a_permutation_per_pass_and_restarts_after_add():
    torch.manual_seed(0)
    pool = ImagePool((3, 8, 8))
    pool.add(constant_images(10))
    ids = []
    for _ in range(5):  # 20 draws = two full passes
        ids += source_ids(pool.sample(4, augment=False))
    assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
    assert len(pool) == 10
    pool.add(constant_images(12)[10:])
    ids = []
    for _ in range(3):
        ids += source_ids(pool.sample(4, augment=False))
    assert sorted(ids) == list(range(12))  # a fresh pass over the grown pool


def test_pair_sample_views_come_from_the_same_images_and_differ():
    torch.manual_seed(1)
    pool = ImagePool((3, 8, 8))
    pool.add(constant_images(6))
    batch = pool.sample(6, views=2)
    a, b = batch[:6], batch[6:]
    assert source_ids(a) == source_ids(b)
    assert not torch.equal(a, b)  # independent crops / flips


def test_pool_state_round_trip_continues_the_same_order():
    torch.manual_seed(0)
    pool = ImagePool((3, 8, 8))
    pool.add(constant_images(7))
    pool.sample(3)
    state = pool.state_dict()
    rng = torch.get_rng_state()
    first = pool.sample(5)
    other = ImagePool((3, 8, 8))
    other.load_state_dict(state)
    torch.set_rng_state(rng)
    assert torch.equal(other.sample(5), first)


def distinct_images(n: int, c: int = 3, size: int = 8) -> torch.Tensor:
    """n images whose n·c·size² pixels all hold different values k/2048, k ≥ 1 (zero padding and mirrors are
    recognisable, every crop names its source; exact in a float16 pool)."""
    values = torch.randperm(2047)[: n * c * size * size] + 1
    return (values.float() / 2048).view(n, c, size, size)


def matches(samples: torch.Tensor, sources: torch.Tensor, padding: int) -> list[list[tuple[int, int, int, bool]]]:
    """For every sample, the (source, dy, dx, flipped) whose crop of the zero-padded source it equals exactly."""
    n, c, h, w = sources.shape
    padded = F.pad(sources, (padding,) * 4)
    cands, keys = [], []
    for i in range(n):
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                crop = padded[i, :, dy:dy + h, dx:dx + w]
                for flipped in (False, True):
                    cands.append(crop.flip(-1) if flipped else crop)
                    keys.append((i, dy, dx, flipped))
    cands = torch.stack(cands)  # K x C x H x W
    eq = (samples[:, None] == cands[None]).flatten(2).all(2)  # N x K
    return [[keys[k] for k in torch.nonzero(row).flatten().tolist()] for row in eq]


def pool_draws(pool: ImagePool, sources: torch.Tensor, draws: int, batch: int = 8) -> torch.Tensor:
    pool.add(sources)
    return torch.cat([pool.sample(batch) for _ in range(draws // batch)])


@pytest.mark.parametrize("name", ["svhn", "mnist", "digits"])
def test_digit_dataset_pools_never_flip_or_crop(name):
    spec = dataset_spec(name)
    augment = Augment.from_spec(spec)
    assert augment == NO_AUGMENT and not augment.active
    torch.manual_seed(0)
    sources = distinct_images(3, c=spec.in_channels)
    pool = ImagePool((spec.in_channels, 8, 8), dtype="float16", augment=augment)
    samples = pool_draws(pool, sources, 120)
    found = matches(samples, sources, padding=4)
    # every sample is its source image untouched: offset (4, 4) of the padded image, never mirrored
    assert all(m == [(m[0][0], 4, 4, False)] for m in found), [m for m in found if len(m) != 1 or m[0][3]]
    assert sorted({m[0][0] for m in found}) == [0, 1, 2]


def test_cifar_spec_pool_crops_with_padding_4_and_flips_half_the_time():
    augment = Augment.from_spec(dataset_spec("cifar10"))
    assert augment == CIFAR_AUGMENT == Augment() and augment.describe() == "RandomCrop(pad 4) + HFlip"
    torch.manual_seed(0)
    sources = distinct_images(3)
    samples = pool_draws(ImagePool((3, 8, 8), dtype="float16", augment=augment), sources, 480)
    found = matches(samples, sources, padding=4)
    assert all(len(m) == 1 for m in found)  # each sample is exactly one crop (or mirrored crop) of one source
    flips = sum(m[0][3] for m in found)
    assert 200 <= flips <= 280, flips  # Binomial(480, 0.5): mean 240, sd 11
    dys, dxs = {m[0][1] for m in found}, {m[0][2] for m in found}
    assert dys == dxs == set(range(9))  # offsets 0..8: shifts of up to ±4 px, so padding 4, no more, no less
    # the default pool is the CIFAR one, draw for draw
    torch.manual_seed(3)
    default = pool_draws(ImagePool((3, 8, 8)), sources, 48)
    torch.manual_seed(3)
    assert torch.equal(pool_draws(ImagePool((3, 8, 8), augment=augment), sources, 48), default)


def test_augmentation_specs_follow_each_datasets_training_transform():
    for name in ("cifar10", "cifar100", "cifar10_test_subset"):
        assert Augment.from_spec(dataset_spec(name)) == Augment(crop_padding=4, hflip=True)
    for name in ("mnist", "svhn", "digits"):
        assert (dataset_spec(name).train_crop_padding, dataset_spec(name).train_hflip) == (None, False)
    assert get_dataset("digits", None, "train", train_transform=True).augment is None  # its loader agrees
    assert dataset_spec("svhn").mean == (0.5,) * 3 and dataset_spec("svhn").std == (0.5,) * 3  # CMI / MosaicKD
    flip_only = Augment(crop_padding=None, hflip=True)
    torch.manual_seed(0)
    x = distinct_images(8)
    out = flip_only(x)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out, x))
    assert any(not torch.equal(o, i) for o, i in zip(out, x))  # and some are mirrored
    assert NO_AUGMENT(x) is x
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)


def test_kornia_views_follow_the_augmentation():
    import kornia.augmentation as K

    norm = Normalizer((0.0,) * 3, (1.0,) * 3)
    kinds = lambda view: [type(op) for op in view.ops]  # noqa: E731
    assert kinds(SynthesisViews((8, 8), norm, "global")) == [K.RandomCrop, K.RandomHorizontalFlip]
    assert kinds(SynthesisViews((8, 8), norm, "local")) == [K.RandomResizedCrop, K.RandomHorizontalFlip]
    svhn = Augment.from_spec(dataset_spec("svhn"))
    still = SynthesisViews((8, 8), norm, "global", augment=svhn)
    x = torch.rand(16, 3, 8, 8)
    assert torch.equal(still(x), x)  # no crop, no flip
    assert kinds(SynthesisViews((8, 8), norm, "local", augment=svhn)) == [K.RandomResizedCrop]
    # a synthesizer hands its augmentation to its pool and to both views
    T, S = small_pair()
    syn = synth("cmi", T, S, small_generator(), nz=16, cr=0.8, bank_size=16, n_neg=8, augment=svhn, batch=4,
                g_steps=1)
    assert isinstance(syn, CMISynthesizer)
    assert syn.pool.augment == svhn and syn.global_view.augment == svhn and syn.local_view.augment == svhn
    assert synth("cmi", T, S, small_generator(), nz=16, cr=0.8, bank_size=16, n_neg=8, batch=4,
                 g_steps=1).pool.augment == CIFAR_AUGMENT  # the config's dataset, cifar10


def test_normalizer_bounds_and_inverse():
    norm = Normalizer(MEAN, STD)
    lo, hi = norm.bounds()
    assert torch.allclose(norm.inverse(lo), torch.zeros(1, 3, 1, 1), atol=1e-6)
    assert torch.allclose(norm.inverse(hi), torch.ones(1, 3, 1, 1), atol=1e-6)


def test_best_tracker_keeps_strictly_lower_losses():
    best = BestTracker()
    for loss, value in [(3.0, 0.0), (2.0, 1.0), (2.0, 2.0), (5.0, 3.0), (1.5, 4.0)]:
        best.update(torch.tensor(loss), torch.full((2,), value))
        if loss == 2.0 and value == 2.0:
            assert best.items[0][0] == 1.0  # a tie keeps the earlier batch
    assert best.loss.item() == 1.5 and best.items[0][0].item() == 4.0


# -- synthesizers --------------------------------------------------------------------------------------------------
def test_generative_sample_uses_eval_mode_and_leaves_bn_statistics_alone():
    T, S = small_pair()
    G = small_generator()
    syn = synth("zskt", T, S, G, nz=16, adv=1.0, oh=1.0)
    assert isinstance(syn, GenerativeSynthesizer) and syn.adv_loss == "kl"
    syn.synthesize()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    torch.manual_seed(5)
    x = syn.sample(6)
    assert G.training  # handed back in train mode for the next round
    torch.manual_seed(5)
    z = torch.randn(6, 16)
    G.eval()
    expected = syn.normalizer(G(z))
    assert torch.allclose(x, expected, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


def test_generative_round_trains_the_generator_not_the_players():
    T, S = small_pair()
    G = small_generator()
    s_before = {k: v.clone() for k, v in S.state_dict().items()}
    g_before = [p.clone() for p in G.parameters()]
    syn = synth("dfq", T, S, G, nz=16, lr_g=1e-2, adv=1.0, oh=1.0, act=0.1, balance=1.0)
    out = syn.synthesize()
    assert set(out) == {"loss_syn", "loss_bn", "loss_oh", "loss_act", "loss_balance", "loss_adv"}
    assert all(p.grad is None for p in S.parameters()) and all(p.grad is None for p in T.parameters())
    assert all(torch.equal(s_before[k], v) for k, v in S.state_dict().items())  # eval mode: no BN updates
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert S.training


def test_generative_needs_a_non_zero_weight():
    T, S = small_pair()
    with pytest.raises(ValueError, match="weight is 0"):
        synth("dafl", T, S, small_generator(), nz=16, bn=0.0)  # the config's weights: all 0


def test_deepinversion_pools_the_last_iterate_by_default_and_the_best_on_request(monkeypatch):
    T, S = small_pair()
    syn = synth("deepinv", T, S, lr_g=0.1, adv=1.0, oh=1.0, tv=0.001, g_steps=4)
    assert isinstance(syn, DeepInversionSynthesizer) and syn.jitter == 4 and not syn.best_of_steps
    syn.synthesize()
    expected = (syn.normalizer.inverse(syn.pixels).clamp(0, 1) * 255).to(torch.uint8)
    assert torch.equal(syn.pool.images, expected)  # the original's aliasing: the last iterate enters the pool

    seen = []
    update = BestTracker.update

    def spy(self, loss, *items):
        seen.append((loss.item(), items[0].clone()))
        return update(self, loss, *items)

    monkeypatch.setattr(BestTracker, "update", spy)
    best = synth("deepinv", T, S, lr_g=0.1, adv=1.0, oh=1.0, tv=0.001, best_of_steps=True, g_steps=4)
    best.synthesize()
    loss, x = min(seen, key=lambda item: item[0])
    assert torch.equal(best.pool.images, (best.normalizer.inverse(x).clamp(0, 1) * 255).to(torch.uint8))
    lo, hi = syn.normalizer.bounds()
    assert bool(((syn.pixels >= lo - 1e-6) & (syn.pixels <= hi + 1e-6)).all())  # clipped to the valid range


def test_cmi_round_adds_one_batch_to_pool_and_bank():
    T, S = small_pair()
    syn = synth("cmi", T, S, small_generator(), nz=16, adv=0.5, oh=1.0, cr=0.8, cr_T=0.1, bank_size=20, n_neg=12)
    d = syn.feature_dim
    assert d == sum(m.num_features for m in T.modules() if isinstance(m, nn.BatchNorm2d))
    out = syn.synthesize()
    assert len(syn.pool) == 8 and len(syn.bank) == 8 and syn.bank.rows.shape[1] == 2 * d
    assert "loss_cr" in out and "loss_adv" in out
    syn.synthesize()
    syn.synthesize()
    assert len(syn.pool) == 24 and len(syn.bank) == 20  # ring buffer full: 8 + 8 + 8 rows into 20
    images = syn.pool.images
    assert images.dtype == torch.uint8 and images.shape == (24, 3, 32, 32)


def test_cmi_generator_restarts_from_a_fresh_initialisation_every_round(monkeypatch):
    T, S = small_pair()
    G = small_generator()
    syn = synth("cmi", T, S, G, nz=16, oh=1.0, cr=0.8, cr_T=0.1, bank_size=16, n_neg=8, batch=4, g_steps=1)
    starts = []
    original = syn.round_generator

    def spy():
        gen = original()
        starts.append(gen.l1[0].weight.detach().clone())
        return gen

    monkeypatch.setattr(syn, "round_generator", spy)
    syn.synthesize()
    with torch.no_grad():
        G.l1[0].weight.fill_(5.0)
    syn.synthesize()
    assert abs(starts[1].std().item() - 0.02) < 0.002 and abs(starts[1].mean().item()) < 0.002


def test_fast_warmup_switches_the_adversarial_term_on_at_the_original_round():
    T, S = small_pair()
    syn = synth("fast", T, S, small_generator(), nz=16, lr_g=3e-3, lr_z=0.01, adv=1.1, oh=1.0, warmup=3,
                bn_mmt=0.9, batch=4, g_steps=1)
    assert isinstance(syn, FastSynthesizer) and syn.bn_hook.mode == "momentum"
    hook = syn.bn_hook
    assert hook.state_dict()["ema_mean"] is None  # no momentum statistics before the first round
    has_adv = []
    for r in range(4):
        before = hook.state_dict()
        has_adv.append("loss_adv" in syn.synthesize())
        after, last = hook.state_dict(), hook.stats  # the raw batch statistics of the round's last step
        assert len(after["ema_mean"]) == len(after["ema_var"]) == len(last) == len(bn_layers(T)) > 0
        for i, (mu, var) in enumerate(last):  # after each round: EMA <- 0.9 EMA + 0.1 batch (a copy at first)
            em = mu if r == 0 else 0.9 * before["ema_mean"][i] + 0.1 * mu
            ev = var if r == 0 else 0.9 * before["ema_var"][i] + 0.1 * var
            torch.testing.assert_close(after["ema_mean"][i], em.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(after["ema_var"][i], ev.detach(), rtol=1e-5, atol=1e-6)
    assert has_adv == [False, False, True, True]  # 1-based round counter >= warmup, as in the original


def test_fast_meta_fomaml_and_reptile_meta_gradients():
    T, S = small_pair()
    G = small_generator()
    syn = synth("fast_meta", T, S, G, nz=16, lr_g=3e-3, lr_z=0.01, oh=1.0, bn_mmt=0.9, is_maml=1, batch=4,
                g_steps=1)
    assert isinstance(syn, FastMetaSynthesizer) and syn.is_maml and syn.adv == 0.0
    syn.synthesize()
    for p, q in zip(G.parameters(), syn.fast_generator.parameters()):  # one inner step: meta grad = inner grad
        assert torch.allclose(p.grad, q.grad)

    G2 = small_generator()
    meta_before = [p.detach().clone() for p in G2.parameters()]
    rep = synth("fast_meta", T, S, G2, nz=16, lr_g=3e-3, lr_z=0.01, oh=1.0, bn_mmt=0.9, is_maml=0, batch=4,
                g_steps=2)
    assert rep.reptile_scale == 67.0
    rep.synthesize()
    for p, before, q in zip(G2.parameters(), meta_before, rep.fast_generator.parameters()):
        assert torch.allclose(p.grad, 67.0 * (before - q.detach()), atol=1e-6)
        assert not torch.equal(p.detach(), before)  # the meta step moved the meta-generator


def test_reset_l0_reinitialises_only_the_first_layers_at_round_120_plus_warmup():
    T, S = small_pair()
    G = small_generator()
    syn = synth("fast_meta", T, S, G, nz=16, lr_g=0.0, lr_z=0.0, oh=1.0, warmup=2, reset_l0=1, batch=2, g_steps=1,
                bn=0.0)
    with torch.no_grad():
        for p in G.parameters():
            p.fill_(0.5)
    syn.rounds = 120  # the next round is the 122nd - 1 = 121st: nothing happens
    syn.round_generator()
    assert torch.all(G.l1[0].weight == 0.5)
    syn.rounds = 121
    syn.round_generator()
    assert abs(G.l1[0].weight.std().item() - 0.02) < 0.005 and torch.all(G.l1[0].bias == 0)
    assert torch.all(G.conv_blocks[2].weight == 0.5)  # later layers untouched
    reinit_first_layers(G)  # and the helper names exactly those layers
    assert abs(G.conv_blocks[0].weight.std().item() - 0.02) < 0.02


@pytest.mark.parametrize("sign", ["code", "paper"])
def test_rgal_triplet_term_uses_the_student_blocks_and_the_requested_sign(sign, monkeypatch):
    T, S = small_pair("resnet8", "resnet14")
    calls = []

    def spy(features, embeddings, labels, **kw):
        calls.append((len(features), features[0].shape[1], kw))
        return triplet_loss(features, embeddings, labels, **kw)

    monkeypatch.setattr("kdvision.core.synthesis.rgal.triplet_loss", spy)
    syn = synth("rgal", T, S, small_generator(), nz=16, adv=1.0, oh=1.0, triplet=0.1, triplet_target="student",
                start_layer=1, end_layer=3, balanced_sampling=True, synthesis_triplet_sign=sign, balance=0.1,
                g_steps=1)
    assert isinstance(syn, AdvTripletSynthesizer)
    out = syn.synthesize()
    assert {"loss_triplet", "loss_balance", "loss_adv", "loss_bn", "loss_oh"} <= set(out)
    n_blocks, channels, kw = calls[0]
    assert n_blocks == 2 and channels == 32  # resnet14 layer2, layer3
    assert kw["sampler"] == "balanced" and kw["swap"] is (sign == "paper")


def test_rgal_student_terms_match_their_definitions():
    T, S = small_pair("resnet14", "resnet8")
    terms = student_terms(T, S, epochs=10, cd_loss=0.1, striplet=0.1, striplet_feature="global,logits",
                          custom_steps=0.5)
    assert terms.block_pairs == 3 and [a.out_channels for a in terms.adapters.adapters] == [16, 32, 64]
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad(), terms.capture_teacher():
        t = T(x)
    with terms.capture_student():
        s = S(x)
    out = terms(s, t, epoch=0)
    assert set(out) == {"loss_cd", "loss_striplet"}
    sb = terms._s_taps.blocks
    tb = terms._t_taps.blocks
    expected = sum(F.mse_loss(conv(a).mean((2, 3)), b.mean((2, 3))) for conv, a, b in
                   zip(terms.adapters.adapters, sb, tb))
    assert torch.allclose(out["loss_cd"], 0.1 * expected, atol=1e-6)
    assert terms(s, t, epoch=5) == {}  # custom_steps 0.5 of 10 epochs


# -- the KD method ---------------------------------------------------------------------------------------------------
def kd_method(T, S, syn, *, batch_size, kd_steps, lr, T_kd=1.0, kd_loss="kl", warmup_rounds=0, **kw):
    """DataFreeKD with a plain SGD student and a constant LR (the schedules are tested in test_optim.py)."""
    return DataFreeKD(T, S, syn, batch_size=batch_size, kd_steps=kd_steps,
                      opt_S=OptimizerSpec("sgd", lr=lr, momentum=0.9, weight_decay=1e-4),
                      schedule=LRSchedule("constant"), T=T_kd, kd_loss=kd_loss, warmup_rounds=warmup_rounds, **kw)


def test_kd_method_runs_warmup_rounds_then_one_round_every_kd_steps():
    T, S = small_pair()
    syn = synth("cmi", T, S, small_generator(), nz=16, oh=1.0, cr=0.0, bank_size=16, n_neg=4, batch=4, g_steps=1)
    method = kd_method(T, S, syn, batch_size=4, kd_steps=3, lr=0.1, T_kd=4.0, warmup_rounds=2)
    method.on_epoch_start(0)
    rounds = []
    for _ in range(7):
        out = method.train_step()
        rounds.append(syn.rounds)
    assert rounds == [3, 3, 3, 4, 4, 4, 5]
    assert {"loss_kd", "agreement", "loss_syn"} <= set(out)
    assert method.summary()["pool_size"] == 20 and method.summary()["synthesis_rounds"] == 5


def test_kd_objective_is_honoured_temperature_kl_or_l1():
    T, S = small_pair()
    syn = synth("cmi", T, S, small_generator(), nz=16, oh=1.0, cr=0.0, bank_size=16, n_neg=4, batch=4, g_steps=1)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    kl = kd_method(T, S, syn, batch_size=4, kd_steps=1, lr=0.1, T_kd=20.0)
    assert torch.allclose(kl.kd_objective(s, t), kldiv(s, t, T=20.0))
    l1 = kd_method(T, S, syn, batch_size=4, kd_steps=1, lr=0.1, kd_loss="l1")
    assert torch.allclose(l1.kd_objective(s, t), (s - t).abs().mean())


# -- every classifier of the zoo as teacher and student ------------------------------------------------------------
ZOO = list_models()


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_classifier_works_as_rgal_teacher_and_student(name):
    info = model_info(name)
    c = info["input_size"][0]
    size = 32
    torch.manual_seed(0)
    T = create_model(name, num_classes=10).eval()
    S = create_model(name, num_classes=10)
    assert block_names(T)
    syn = synth("rgal", T, S, small_generator(nc=c), nz=16, adv=1.0, oh=1.0, triplet=0.1, triplet_target="student",
                start_layer=1, end_layer=3, batch=4, g_steps=1, shape=(c, size, size),
                bn=1.0 if any(isinstance(m, nn.BatchNorm2d) for m in T.modules()) else 0.0)
    terms = student_terms(T, S, (c, size, size), epochs=1, cd_loss=0.1, striplet=0.1, striplet_feature="global")
    method = kd_method(T, S, syn, batch_size=4, kd_steps=1, lr=0.01, T_kd=20.0, student_terms=terms)
    method.on_epoch_start(0)
    out = method.train_step()
    assert all(torch.isfinite(v).all() for v in out.values()), out
    assert {"loss_kd", "loss_cd", "loss_striplet", "loss_triplet"} <= set(out)


# -- one home per hyper-parameter: the config, never a constructor default -------------------------------------------
#: Constructor arguments that may keep a default because they are not hyper-parameters: numerics/memory switches
#: (amp, amp_dtype, channels_last), the device, "auto" feature layers (None: the teacher's BN layers), optional
#: collaborators (student_terms, train_metrics), run plumbing (dist, workers, task, clock) and the sample grids'
#: size and seed.
TECHNICAL = {"amp", "amp_dtype", "channels_last", "device", "feature_layers", "student_terms", "train_metrics",
             "dist", "workers", "task", "clock", "sample_count", "sample_seed", "params"}
METHOD_CLASSES = [DataFreeKD, DFAD, DataKD, Supervised, RGALStudentTerms]


def defaulted_arguments(cls) -> dict[str, object]:
    """Every defaulted ``__init__`` argument of ``cls`` and of its kdvision base classes (kwargs flow up the MRO)."""
    out = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or not klass.__module__.startswith("kdvision."):
            continue
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[f"{klass.__name__}.{name}"] = p.default
    return out


@pytest.mark.parametrize("name", SYNTHESIZERS.names())
def test_synthesizer_constructors_have_no_defaulted_hyper_parameters(name):
    cls = SYNTHESIZERS.meta(name)["cls"]
    assert issubclass(cls, Synthesizer)
    hidden = {k: v for k, v in defaulted_arguments(cls).items() if k.split(".")[1] not in TECHNICAL}
    assert not hidden, f"{name}: hyper-parameter defaults outside the config: {hidden}"


@pytest.mark.parametrize("cls", METHOD_CLASSES, ids=lambda c: c.__name__)
def test_method_constructors_have_no_defaulted_hyper_parameters(cls):
    hidden = {k: v for k, v in defaulted_arguments(cls).items() if k.split(".")[1] not in TECHNICAL}
    assert not hidden, f"{cls.__name__}: hyper-parameter defaults outside the config: {hidden}"


#: config field -> synthesizer attribute, for the values build_synthesizer hands over unchanged
PASSED = {"adv": "adv", "oh": "oh", "act": "act", "balance": "balance", "balance_base": "balance_base",
          "lr_g": "lr_g", "tv": "tv", "l2": "l2", "jitter": "jitter", "best_of_steps": "best_of_steps",
          "cr": "cr", "cr_T": "cr_T", "n_neg": "n_neg", "pair_sample": "pair_sample", "warmup": "warmup",
          "reptile_scale": "reptile_scale", "triplet": "triplet", "triplet_target": "triplet_target"}


@pytest.mark.parametrize("name", SYNTHESIZERS.names())
def test_build_synthesizer_hands_every_registered_class_the_configs_values(name):
    T, S = small_pair()
    meta = SYNTHESIZERS.meta(name)
    # values that differ from every field default, so that a constructor default could not pass for them
    fields = dict(adv=0.7, oh=0.3, act=0.01, balance=0.2, balance_base="2", lr_g=2e-3, tv=0.002, l2=0.01, jitter=2,
                  best_of_steps=True, cr=0.6, cr_T=0.3, bank_size=24, n_neg=6, head_dim=16, pair_sample=True,
                  warmup=1, reset_l0=1, bn_mmt=0.5, is_maml=0, reptile_scale=3.0, lr_z=0.02, triplet=0.2,
                  triplet_target="student", start_layer=1, end_layer=3, balanced_sampling=True,
                  synthesis_triplet_sign="paper", pool_dtype="float16")
    defaults = DataFreeConfig()
    assert all(getattr(defaults, k) != v for k, v in fields.items())
    syn = synth(name, T, S, small_generator() if meta["generator"] else None, nz=16, batch=4, g_steps=1, **fields)
    assert type(syn) is meta["cls"] and syn.uses_pool == meta["pool"]
    passed = {field: getattr(syn, attr) for field, attr in PASSED.items() if hasattr(syn, attr)}
    assert passed == {field: fields[field] for field in passed}
    assert syn.bn == 1.0 and syn.batch_size == 4 and syn.g_steps == 1
    if isinstance(syn, CMISynthesizer):
        assert syn.bank.rows.shape[0] == 24 and syn.head.head[-1].out_features == 16 and syn.lr_z is None
    if isinstance(syn, FastSynthesizer):
        assert syn.lr_z == 0.02 and syn.reset_l0 is True and syn.bn_hook.mode == "momentum"
        assert syn.bn_hook.momentum == 0.5
    if isinstance(syn, FastMetaSynthesizer):
        assert syn.is_maml is False
    if isinstance(syn, AdvTripletSynthesizer):
        assert syn.layers == slice(1, 3) and syn.sampler == "balanced" and syn.swap and syn.lr_z is None
    if name in ("dafl", "zskt", "dfq", "dfad"):
        assert syn.adv_loss == ("l1" if name == "dfad" else "kl")
    syn.synthesize()  # the configured synthesizer runs a round
    if meta["pool"]:
        assert syn.pool.images.dtype == torch.float16 and len(syn.pool) == 4


def test_student_terms_take_the_configs_values():
    T, S = small_pair("resnet14", "resnet8")
    assert student_terms(T, S) is None  # the config's defaults add no student term
    assert build_student_terms(DataFreeConfig(method="cmi", cd_loss=0.1), T, S, (3, 32, 32)) is None  # RGAL only
    terms = student_terms(T, S, epochs=8, cd_loss=0.2, gram_loss=0.3, striplet=0.4, striplet_feature="logits",
                          start_layer=1, end_layer=2, custom_steps=0.5, balanced_sampling_student=True)
    assert (terms.cd, terms.gram, terms.striplet, terms.striplet_feature) == (0.2, 0.3, 0.4, "logits")
    assert terms.layers == slice(1, 2) and terms.active_epochs == 4.0 and terms.sampler == "balanced"
