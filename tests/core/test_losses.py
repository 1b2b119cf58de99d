"""Golden tests for ``kdvision.core.losses``: every expected value is worked out independently here, by hand or with
float64 NumPy / explicit loops, never by calling the code under test (``datafree_engine.md`` §2, §13;
``rgal.md`` §2.3-2.4, §10)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdvision.core.errors import ConfigError
from kdvision.core.losses import (
    LOSSES,
    ChannelAdapters,
    MemoryBank,
    ProjectionHead,
    activation_loss,
    adversarial_kl,
    adversarial_masked,
    batch_mean_var,
    bn_ema_update,
    bn_global_loss,
    bn_layer_loss,
    bn_momentum_blend,
    cd_loss,
    class_balance,
    cmi_contrastive_loss,
    get_loss,
    gram_channel_weights,
    gram_loss,
    jsdiv,
    kldiv,
    l1_discrepancy,
    l2_prior,
    list_losses,
    negative_log_weights,
    negative_weights,
    onehot_ce,
    pairwise_distances,
    sample_triplets,
    triplet_loss,
    triplet_loss_with_count,
    tv_prior,
)


def t64(x):
    return torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32)


def np_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def close(actual, expected, tol=1e-5):
    assert actual.dtype == torch.float32
    np.testing.assert_allclose(actual.detach().cpu().double().numpy(), expected, rtol=tol, atol=tol)


S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T = [[0.5, 0.5, 2.0], [1.0, 0.0, -1.0]]


# ------------------------------------------------------------------------------------------------ logits


def kl_terms(s, t, tau):
    """Explicit loops: τ² · q_ic (log q_ic − log p_ic)."""
    p, q = np_softmax(np.array(s) / tau), np_softmax(np.array(t) / tau)
    out = np.zeros_like(p)
    for i in range(p.shape[0]):
        for c in range(p.shape[1]):
            out[i, c] = tau * tau * q[i, c] * (math.log(q[i, c]) - math.log(p[i, c]))
    return out


def test_kldiv_batchmean_tau_squared_and_reductions():
    s, t = t64(S), t64(T)
    terms = kl_terms(S, T, 2.0)
    close(kldiv(s, t, T=2.0), terms.sum() / 2)  # batchmean: summed over classes, divided by B = 2
    close(kldiv(s, t, T=2.0, reduction="sum"), terms.sum())
    close(kldiv(s, t, T=2.0, reduction="mean"), terms.sum() / 6)  # over B·K
    close(kldiv(s, t, T=2.0, reduction="none"), terms)  # B×K, already × τ²
    # the τ² factor: without it the value is 4 times smaller
    close(kldiv(s, t, T=2.0) / 4.0, kl_terms(S, T, 2.0).sum() / 2 / 4.0)
    assert kl_terms(S, T, 2.0).sum() / 4.0 == pytest.approx(
        sum(q * math.log(q / p) for qs, ps in zip(np_softmax(np.array(T) / 2), np_softmax(np.array(S) / 2))
            for q, p in zip(qs, ps)))
    close(kldiv(s, t), kl_terms(S, T, 1.0).sum() / 2)  # default τ = 1
    assert kldiv(t, t, T=4.0).abs().item() < 1e-6
    with pytest.raises(ConfigError):
        kldiv(s, t, reduction="avg")


def test_l1_discrepancy_is_mean_over_every_element():
    # |1−0.5| + |2−0.5| + |0.5−2| + |0−1| + |−1−0| + |3+1| = 9.5 over B·K = 6 elements (not batchmean: 9.5 / 2)
    close(l1_discrepancy(t64(S), t64(T)), 9.5 / 6)
    close(l1_discrepancy(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)), 1.0)


def np_js(s, t, tau, form):
    P, Q = np_softmax(np.array(s) / tau), np_softmax(np.array(t) / tau)
    M = 0.5 * (P + Q)  # before clamping
    P, Q, M = (np.clip(a, 0.01, 0.99) for a in (P, Q, M))
    total = 0.0
    for i in range(P.shape[0]):
        for c in range(P.shape[1]):
            if form == "code":  # F.kl_div(log P, M) = Σ M log(M/P)
                total += 0.5 * M[i, c] * math.log(M[i, c] / P[i, c]) + 0.5 * M[i, c] * math.log(M[i, c] / Q[i, c])
            else:
                total += 0.5 * P[i, c] * math.log(P[i, c] / M[i, c]) + 0.5 * Q[i, c] * math.log(Q[i, c] / M[i, c])
    return total / P.shape[0]


def test_jsdiv_clamps_and_direction():
    s = [[20.0, 0.0, 0.0], [0.0, 1.0, -1.0]]  # row 0 saturates at τ = 3: clamps to [0.01, 0.99] are active
    t = [[0.0, 0.0, 20.0], [1.0, 1.0, 0.0]]
    close(jsdiv(t64(s), t64(t)), np_js(s, t, 3.0, "code"))  # default τ = 3, original's KL(M‖·) direction
    close(jsdiv(t64(s), t64(t), T=3.0, form="spec"), np_js(s, t, 3.0, "spec"))
    assert np_js(s, t, 3.0, "code") != pytest.approx(np_js(s, t, 3.0, "spec"), rel=1e-3)
    # symmetric in its arguments (P and Q enter symmetrically), so student/teacher order cannot matter
    close(jsdiv(t64(t), t64(s)), np_js(s, t, 3.0, "code"))
    with pytest.raises(ConfigError):
        jsdiv(t64(s), t64(t), form="textbook")


def test_onehot_ce_uses_teacher_argmax():
    t = [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]
    expected = -(math.log(math.exp(2) / (math.exp(2) + math.e + 1)) + math.log(math.exp(3) / (2 + math.exp(3)))) / 2
    close(onehot_ce(t64(t)), expected)


@pytest.mark.parametrize("base,log", [("e", math.log), (2, math.log2), ("2", math.log2), (10, math.log10),
                                      ("10", math.log10)])
def test_class_balance_log_bases(base, log):
    logits = [[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 3.0]]
    p_bar = np_softmax(logits).mean(axis=0)
    close(class_balance(t64(logits), base=base), sum(p * log(p) for p in p_bar))


def test_class_balance_extremes_and_bad_base():
    uniform = torch.zeros(5, 4)  # maximal entropy: Σ p log p = −log K
    close(class_balance(uniform), -math.log(4))
    close(class_balance(uniform, base=2), -2.0)
    one_class = torch.tensor([[50.0, 0.0, 0.0]] * 3)  # p̄ = one-hot: 0 (0·log 0 = 0, no NaN)
    assert abs(class_balance(one_class).item()) < 1e-6
    with pytest.raises(ConfigError):
        class_balance(uniform, base=3)


def test_activation_loss():
    close(activation_loss(t64([[1.0, -2.0], [0.0, 3.0]])), -6.0 / 4)


def test_adversarial_kl_is_minus_kl_at_tau_1():
    close(adversarial_kl(t64(S), t64(T)), -kl_terms(S, T, 1.0).sum() / 2)


def test_adversarial_masked_edge_cases_and_mixed_value():
    s = [[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
    t_disagree = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    t_agree = [[1.0, 0.5, 0.0], [0.0, 1.0, -1.0], [0.0, 0.2, 0.3]]
    assert adversarial_masked(t64(s), t64(t_disagree)).item() == 0.0
    per_sample = kl_terms(s, t_agree, 1.0).sum(axis=1)
    close(adversarial_masked(t64(s), t64(t_agree)), -per_sample.mean())
    t_mixed = [t_agree[0], t_disagree[1], t_agree[2]]  # samples 0 and 2 agree; mean still over all 3
    per_sample = kl_terms(s, t_mixed, 1.0).sum(axis=1)
    close(adversarial_masked(t64(s), t64(t_mixed)), -(per_sample[0] + per_sample[2]) / 3)


def test_tv_prior_four_directions():
    rs = np.random.RandomState(0)
    x = rs.randn(2, 2, 3, 4)  # non-square, so horizontal and vertical cannot be swapped unnoticed
    B, C, H, W = x.shape
    sums = {"h": [], "v": [], "anti": [], "diag": []}
    for b in range(B):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    if w + 1 < W:
                        sums["h"].append(x[b, c, h, w] - x[b, c, h, w + 1])
                    if h + 1 < H:
                        sums["v"].append(x[b, c, h, w] - x[b, c, h + 1, w])
                    if h + 1 < H and w + 1 < W:
                        sums["anti"].append(x[b, c, h + 1, w] - x[b, c, h, w + 1])
                        sums["diag"].append(x[b, c, h, w] - x[b, c, h + 1, w + 1])
    assert len(sums["h"]) == B * C * H * (W - 1) and len(sums["diag"]) == B * C * (H - 1) * (W - 1)
    close(tv_prior(t64(x)), sum(np.abs(v).mean() for v in sums.values()))
    close(tv_prior(t64(x), norm="l2"), sum(np.sqrt(np.sum(np.square(v))) for v in sums.values()))
    # a single bright pixel in the middle of a 3×3 zero image: each direction sees it in 2 of its differences
    img = torch.zeros(1, 1, 3, 3)
    img[0, 0, 1, 1] = 1.0
    close(tv_prior(img), 2 / 6 + 2 / 6 + 2 / 4 + 2 / 4)


def test_l2_prior_is_frobenius_norm_of_the_batch():
    close(l2_prior(t64([[[[3.0, 0.0]]], [[[0.0, 4.0]]]])), 5.0)


# ------------------------------------------------------------------------------------------------ BN


X_BN = np.arange(16, dtype=np.float64).reshape(2, 2, 2, 2) ** 1.5


def test_batch_mean_var_biased_and_unbiased():
    mean, var = batch_mean_var(t64(X_BN))
    per_channel = [X_BN[:, c].reshape(-1) for c in range(2)]
    close(mean, [v.mean() for v in per_channel], 1e-4)
    close(var, [((v - v.mean()) ** 2).sum() / 8 for v in per_channel], 1e-4)  # biased: / n, n = B·H·W = 8
    _, var_u = batch_mean_var(t64(X_BN), unbiased=True)
    close(var_u, [((v - v.mean()) ** 2).sum() / 7 for v in per_channel], 1e-4)  # unbiased: / (n − 1)
    x2 = [[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]]  # B×C input: statistics over the batch only
    mean2, var2 = batch_mean_var(t64(x2))
    close(mean2, [3.0, 20.0])
    close(var2, [8 / 3, 200 / 3])


def test_bn_layer_loss_per_layer_vs_global_norm():
    # layer A: mean − μ̂ = (3, 0), var − σ̂² = (0, 4);  layer B: mean − μ̂ = (0, 4), var − σ̂² = (3, 0)
    rm = [t64([1.0, 1.0]), t64([2.0, 2.0])]
    rv = [t64([1.0, 1.0]), t64([1.0, 1.0])]
    means = [t64([4.0, 1.0]), t64([2.0, 6.0])]
    vars_ = [t64([1.0, 5.0]), t64([4.0, 1.0])]
    layer = [bn_layer_loss(m, v, a, b) for m, v, a, b in zip(means, vars_, rm, rv)]
    close(layer[0], 4.0 + 3.0)  # ‖var diff‖ + ‖mean diff‖
    close(sum(layer), 14.0)  # DeepInversion: Σ_l of per-layer norms
    close(bn_global_loss(means, vars_, rm, rv), 5.0 + 5.0)  # ‖(3,0,0,4)‖ + ‖(0,4,3,0)‖


def test_bn_global_loss_with_unbiased_variances():
    mean, var_u = batch_mean_var(t64(X_BN), unbiased=True)
    rm, rv = torch.zeros(2), torch.ones(2)
    per_channel = [X_BN[:, c].reshape(-1) for c in range(2)]
    mu = np.array([v.mean() for v in per_channel])
    vu = np.array([v.var(ddof=1) for v in per_channel])
    close(bn_global_loss([mean], [var_u], [rm], [rv]), np.linalg.norm(mu) + np.linalg.norm(vu - 1), 1e-4)
    _, var_b = batch_mean_var(t64(X_BN))
    vb = np.array([v.var(ddof=0) for v in per_channel])
    close(bn_layer_loss(mean, var_b, rm, rv), np.linalg.norm(vb - 1) + np.linalg.norm(mu), 1e-4)


def test_bn_momentum_blend_and_ema_update():
    mean, var = t64([1.0, 2.0]), t64([3.0, 4.0])
    ema_m, ema_v = t64([5.0, 6.0]), t64([7.0, 8.0])
    bm, bv = bn_momentum_blend(mean, var, ema_m, ema_v, 0.9)
    close(bm, [0.1 * 1 + 0.9 * 5, 0.1 * 2 + 0.9 * 6])
    close(bv, [0.1 * 3 + 0.9 * 7, 0.1 * 4 + 0.9 * 8])
    assert bn_momentum_blend(mean, var, None, None, 0.9) == (mean, var)  # no EMA yet: plain form
    # Fast's r-value: ‖σ̂² − (1 − m)σ² − m σ̄²‖ + ‖μ̂ − (1 − m)μ − m μ̄‖
    rm, rv = t64([0.0, 0.0]), t64([1.0, 1.0])
    close(bn_layer_loss(bm, bv, rm, rv), math.hypot(6.6 - 1, 7.6 - 1) + math.hypot(4.6, 5.6))
    # EMA: first call copies, later calls m·old + (1 − m)·new, detached
    m_req = mean.clone().requires_grad_()
    e_m, e_v = bn_ema_update(None, None, m_req, var, 0.9)
    assert not e_m.requires_grad and e_m.data_ptr() != m_req.data_ptr()
    close(e_m, [1.0, 2.0])
    e_m, e_v = bn_ema_update(e_m, e_v, t64([11.0, 12.0]), t64([13.0, 14.0]), 0.9)
    close(e_m, [0.9 * 1 + 0.1 * 11, 0.9 * 2 + 0.1 * 12])
    close(e_v, [0.9 * 3 + 0.1 * 13, 0.9 * 4 + 0.1 * 14])


# ------------------------------------------------------------------------------------------------ CMI


def test_projection_head_layout_and_normalisation():
    head = ProjectionHead(6)
    assert list(head.state_dict()) == ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"]
    assert tuple(head.head[0].weight.shape) == (6, 6) and tuple(head.head[2].weight.shape) == (256, 6)
    out = ProjectionHead(6, hidden_dim=5, out_dim=3)(torch.randn(4, 6))
    assert out.shape == (4, 3) and out.dtype == torch.float32
    close(out.norm(dim=1), np.ones(4))


def np_info_nce(pl, pg, n, tau):
    pl, pg = np.asarray(pl, np.float64), np.asarray(pg, np.float64)
    rows = pl.shape[0]
    ce = []
    for i in range(rows):
        logits = [pl[i] @ pg[j] / tau for j in range(rows)]
        m = max(logits)
        ce.append(-(logits[i] - m - math.log(sum(math.exp(v - m) for v in logits))))
    return np.mean(ce) if rows == n else np.mean(ce[:n]) + np.mean(ce[n:])


def test_cmi_contrastive_k0_equals_ce_of_scaled_identity():
    tau, n = 0.5, 4
    p = torch.eye(6)[:n]  # identical, orthonormal local and global projections: logits = I / τ
    expected = math.log(1 + (n - 1) * math.exp(-1 / tau))  # CE of each row of I/τ against its diagonal
    close(cmi_contrastive_loss(p, p.clone(), n, tau), expected)
    close(cmi_contrastive_loss(p, p.clone(), n, tau), F.cross_entropy(torch.eye(n) / tau, torch.arange(n)).item())


def test_cmi_contrastive_two_terms_with_bank_and_stop_gradient():
    rs = np.random.RandomState(1)
    rows = rs.randn(5, 4)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows_g = rs.randn(5, 4)
    rows_g /= np.linalg.norm(rows_g, axis=1, keepdims=True)
    pl, pg = t64(rows).requires_grad_(), t64(rows_g).requires_grad_()
    loss = cmi_contrastive_loss(pl, pg, 2, 0.1)  # N = 2 current rows + K = 3 bank rows
    expected = np_info_nce(rows, rows_g, 2, 0.1)
    close(loss, expected, 1e-4)
    all_rows = np_info_nce(rows, rows_g, 5, 0.1)
    assert expected != pytest.approx(all_rows, rel=1e-3)  # the split is not the plain mean
    close(cmi_contrastive_loss(pl[:2], pg[:2], 2, 0.1), np_info_nce(rows[:2], rows_g[:2], 2, 0.1), 1e-4)  # K = 0
    loss.backward()
    assert pg.grad is None and pl.grad is not None and pl.grad.abs().sum() > 0  # global branch detached


def rows_of(k0, k1):
    return torch.tensor([[float(k), -float(k)] for k in range(k0, k1)])


def test_memory_bank_ring_wrap_with_non_dividing_batch():
    bank = MemoryBank(10, 2)
    assert bank.sample(5).shape == (0, 2) and len(bank) == 0  # empty bank: K = 0
    initial = bank.rows.clone()
    bank.add(rows_of(1, 5))
    # sampling draws only from the filled part, without replacement
    for _ in range(50):
        got = bank.sample(3)
        assert got.shape == (3, 2) and len(set(got[:, 0].tolist())) == 3 and set(got[:, 0].tolist()) <= {1, 2, 3, 4}
    assert sorted(bank.sample(100)[:, 0].tolist()) == [1, 2, 3, 4]
    bank.add(rows_of(5, 9))
    assert sorted(bank.sample(100)[:, 0].tolist()) == list(range(1, 9)) and len(bank) == 8
    torch.testing.assert_close(bank.rows[8:], initial[8:])  # not yet written: still the random init
    bank.add(rows_of(9, 13))  # 4 rows at ptr 8: positions 8, 9, 0, 1
    assert bank.rows[:, 0].tolist() == [11, 12, 3, 4, 5, 6, 7, 8, 9, 10]
    assert int(bank.ptr) == 2 and int(bank.filled) == 10 and len(bank) == 10
    assert sorted(bank.sample(100)[:, 0].tolist()) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    # more rows than the bank holds: the state sequential ring writes would leave
    big = rows_of(100, 125)
    expected = bank.rows.clone()
    ptr = 2
    for r in big:
        expected[ptr] = r
        ptr = (ptr + 1) % 10
    bank.add(big)
    torch.testing.assert_close(bank.rows, expected)
    assert int(bank.ptr) == ptr == 7 and int(bank.filled) == 10


def test_memory_bank_state_dict_resume_is_exact():
    a = nn.ModuleDict({"bank": MemoryBank(10, 2)})
    a["bank"].add(rows_of(1, 8))
    b = nn.ModuleDict({"bank": MemoryBank(10, 2)})
    b.load_state_dict(a.state_dict())
    assert len(b["bank"]) == 7
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(a["bank"].sample(4, ga), b["bank"].sample(4, gb))
    a["bank"].add(rows_of(20, 25))
    b["bank"].add(rows_of(20, 25))  # the write position was restored too
    torch.testing.assert_close(a["bank"].rows, b["bank"].rows)
    assert int(b["bank"].ptr) == 2 and int(b["bank"].filled) == 10


# ------------------------------------------------------------------------------------------------ RGAL triplet


def np_log_w(delta, d):
    return (2 - d) * math.log(delta) - (d - 3) / 2 * math.log(1 - delta * delta / 4)


def test_negative_log_weight_formula():
    expected = -8 * math.log(0.8) - 3.5 * math.log(1 - 0.16)  # d = 10, δ = 0.8
    assert np_log_w(0.8, 10) == pytest.approx(expected)
    close(negative_log_weights(torch.tensor([0.8]), 10), [expected])


# unit vectors in ℝ⁴: 0↔2 and 1↔3 at δ = 2 sin 15° ≈ 0.518, every other pair orthogonal (δ = √2 ≥ 1.4)
C30, S30 = math.cos(math.pi / 6), math.sin(math.pi / 6)
E4 = [[1, 0, 0, 0], [0, 0, 1, 0], [C30, S30, 0, 0], [0, 0, C30, S30]]
Y4 = [0, 0, 1, 1]


def test_pairwise_distances_and_one_allowed_negative():
    e = t64(E4)
    dist = pairwise_distances(e)
    close(torch.diagonal(dist), np.ones(4))  # diagonal forced to 1
    close(dist[0, 2], 2 * math.sin(math.pi / 12))
    close(dist[0, 3], math.sqrt(2))
    for sampler in ("distance", "balanced"):
        w = negative_weights(dist, torch.tensor(Y4), 4, sampler)
        close(w, [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]])  # only one negative allowed per row


def test_negative_weights_law_and_uniform_fallback():
    # anchor 0 (label 0) with negatives at δ = 0.3 (clamped to 0.5 by "distance", excluded by "balanced"),
    # 0.6, 0.9, 1.2 (only "distance") and 1.6 (neither); a positive at δ = 0.7
    deltas = {1: 0.7, 2: 0.3, 3: 0.6, 4: 0.9, 5: 1.2, 6: 1.6}
    dist = torch.ones(7, 7)
    for j, v in deltas.items():
        dist[0, j] = dist[j, 0] = v
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    d = 5
    w = negative_weights(dist, labels, d, "distance")[0].double().numpy()
    raw = {j: math.exp(np_log_w(max(deltas[j], 0.5), d)) for j in (2, 3, 4, 5)}
    z = sum(raw.values())
    np.testing.assert_allclose(w, [0, 0] + [raw[j] / z for j in (2, 3, 4, 5)] + [0], rtol=1e-5, atol=1e-7)
    wb = negative_weights(dist, labels, d, "balanced")[0].double().numpy()
    raw = {j: math.exp(np_log_w(deltas[j], d)) for j in (3, 4)}
    z = sum(raw.values())
    np.testing.assert_allclose(wb, [0, 0, 0, raw[3] / z, raw[4] / z, 0, 0], rtol=1e-5, atol=1e-7)
    # no allowed negative: uniform over all negatives (never over positives or the anchor itself)
    far = torch.full((4, 4), math.sqrt(2))
    for sampler in ("distance", "balanced"):
        close(negative_weights(far, torch.tensor([0, 0, 1, 1]), 4, sampler)[0], [0, 0, 0.5, 0.5])
    # non-finite log weights (δ = 2 → log 0) fall back to uniform instead of an all-zero row
    anti = torch.tensor([[1.0, 2.0, 1.0], [2.0, 1.0, 0.8], [1.0, 0.8, 1.0]])
    close(negative_weights(anti, torch.tensor([0, 1, 2]), 10, "distance")[0], [0, 0.5, 0.5])


# fixed embedding set for the distribution test: d = 4, 3 classes × 4 samples
EMB_RS = np.random.RandomState(172)
EMB = EMB_RS.randn(12, 4)
EMB_Y = np.repeat(np.arange(3), 4)


def expected_negative_law(emb, y, sampler):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = e.shape[1]
    law = np.zeros((len(y), len(y)))
    fallback = []
    for a in range(len(y)):
        negs = [j for j in range(len(y)) if y[j] != y[a]]
        w = {}
        for j in negs:
            delta = float(np.linalg.norm(e[a] - e[j]))
            if sampler == "distance" and max(delta, 0.5) < 1.4:
                w[j] = math.exp(np_log_w(max(delta, 0.5), d))
            if sampler == "balanced" and 0.5 < delta < 1.0:
                w[j] = math.exp(np_log_w(delta, d))
        if not w:
            w = {j: 1.0 for j in negs}
            fallback.append(a)
        z = sum(w.values())
        for j, v in w.items():
            law[a, j] = v / z
    return law, fallback


@pytest.mark.parametrize("sampler", ["distance", "balanced"])
def test_sampled_negative_frequencies_follow_the_weight_law(sampler):
    from scipy.stats import chi2

    law, fallback = expected_negative_law(EMB, EMB_Y, sampler)
    # the fixture exercises what it should: a fallback row, rows with several allowed negatives, excluded ones
    assert 6 in fallback and (np.count_nonzero(law, axis=1) >= 2).sum() >= 6 and (law == 0).sum() > 12 * 4
    emb, y = t64(EMB), torch.tensor(EMB_Y)
    g = torch.Generator().manual_seed(0)
    counts = np.zeros((12, 12))
    calls = 700
    for _ in range(calls):  # 36 pairs per call: 25,200 draws, 2,100 per anchor
        a, _, n = sample_triplets(emb, y, sampler, generator=g)
        np.add.at(counts, (a.numpy(), n.numpy()), 1)
    assert counts.sum() == calls * 36
    if sampler == "balanced":  # never outside (0.5, 1.0) unless the row fell back to uniform
        e = EMB / np.linalg.norm(EMB, axis=1, keepdims=True)
        for a_, n_ in zip(*np.nonzero(counts)):
            delta = np.linalg.norm(e[a_] - e[n_])
            assert 0.5 < delta < 1.0 or a_ in fallback
    assert (counts[law == 0] == 0).all()  # zero-weight negatives (same label, excluded distances) never drawn
    n_a = counts.sum(axis=1, keepdims=True)
    expected = law * n_a
    mask = law > 0
    stat = (((counts - expected) ** 2)[mask] / expected[mask]).sum()
    dof = int(mask.sum() - 12)
    assert chi2.sf(stat, dof) > 1e-4, (stat, dof)  # a correct sampler fails this with probability 1e-4
    # and per cell: |f − p| < 5 σ, σ = sqrt(p(1 − p)/n) with n = 2,100 draws per anchor (σ ≤ 0.011)
    sigma = np.sqrt(law * (1 - law) / n_a)
    assert (np.abs(counts / n_a - law) <= 5 * sigma + 1e-12).all()


def test_sample_triplets_pairs_and_empty_cases():
    a, p, n = sample_triplets(t64(E4), torch.tensor(Y4))
    assert a.tolist() == [0, 1, 2, 3] and p.tolist() == [1, 0, 3, 2] and n.tolist() == [2, 3, 0, 1]
    for labels in ([0, 1, 2, 3], [5, 5, 5, 5]):  # no positive pair / no negative at all
        a, p, n = sample_triplets(t64(E4), torch.tensor(labels))
        assert a.numel() == p.numel() == n.numel() == 0 and a.dtype == torch.long


def np_triplet(feats, triplets, margin, swap):
    total = np.zeros(len(triplets))
    for f in feats:
        f = np.asarray(f, np.float64)
        if f.ndim == 4:
            f = f.mean(axis=(2, 3))
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        for k, (a, p, n) in enumerate(triplets):
            if swap:
                p, n = n, p
            d_ap = np.linalg.norm(f[a] - f[p] + 1e-6)
            d_an = np.linalg.norm(f[a] - f[n] + 1e-6)
            total[k] += max(d_ap - d_an + margin, 0.0)
    return total.mean(), total


def test_triplet_loss_golden_value_and_swap():
    f1 = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
    rs = np.random.RandomState(5)
    f2 = rs.rand(4, 3, 2, 2)  # 4-D: global-average-pooled, then normalised
    triplets = [(0, 1, 2), (1, 0, 3), (2, 3, 0), (3, 2, 1)]  # the only allowed negatives (see E4)
    expected, per = np_triplet([f1, f2], triplets, 0.2, swap=False)
    assert (per > 0).any() and (np_triplet([f1], triplets, 0.2, False)[1] == 0).any()  # the hinge matters
    feats = [t64(f1).requires_grad_(), t64(f2).requires_grad_()]
    for sampler in ("distance", "balanced"):
        loss, count = triplet_loss_with_count(feats, t64(E4), torch.tensor(Y4), sampler=sampler)
        close(loss, expected)
        assert int(count) == 4
    swapped, _ = np_triplet([f1, f2], triplets, 0.2, swap=True)
    close(triplet_loss(feats, t64(E4), torch.tensor(Y4), swap=True), swapped)
    close(triplet_loss(feats, t64(E4), torch.tensor(Y4), margin=0.5), np_triplet([f1, f2], triplets, 0.5, False)[0])
    loss = triplet_loss(feats, t64(E4), torch.tensor(Y4))
    loss.backward()
    assert feats[0].grad is not None and feats[1].grad.abs().sum() > 0


def test_triplet_loss_without_triplets_is_a_connected_zero(capsys):
    feats = [torch.randn(4, 3, 2, 2, requires_grad=True), torch.randn(4, 5, requires_grad=True)]
    for labels in ([0, 1, 2, 3], [1, 1, 1, 1]):
        loss, count = triplet_loss(feats, t64(E4), torch.tensor(labels), return_count=True)
        assert loss.item() == 0.0 and int(count) == 0 and loss.device == feats[0].device
        assert loss.dtype == torch.float32 and loss.grad_fn is not None
        loss.backward()
        assert feats[0].grad is not None and feats[0].grad.abs().sum() == 0
    assert capsys.readouterr().out == ""  # no print


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError):
        sample_triplets(t64(E4), torch.tensor(Y4), sampler="semihard")


# ------------------------------------------------------------------------------------------------ RGAL CD / Gram


def _blocks(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = [torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 6, 2, 2, generator=g)]
    t = [torch.randn(3, 8, 5, 5, generator=g), torch.randn(3, 5, 2, 2, generator=g)]
    return s, t


def test_channel_adapters_layout():
    ad = ChannelAdapters([4, 6], [8, 5])
    assert list(ad.state_dict()) == ["adapters.0.weight", "adapters.0.bias", "adapters.1.weight", "adapters.1.bias"]
    assert tuple(ad.adapters[0].weight.shape) == (8, 4, 1, 1) and len(ad) == 2
    s, _ = _blocks()
    out = ad(s)
    assert tuple(out[0].shape) == (3, 8, 5, 5) and tuple(out[1].shape) == (3, 5, 2, 2)


def test_cd_loss_equals_mse_of_pooled_mapped_student_features():
    torch.manual_seed(0)
    ad = ChannelAdapters([4, 6], [8, 5])
    s, t = _blocks()
    expected = 0.0
    for conv, sb, tb in zip(ad.adapters, s, t):  # explicit conv on the 4-D maps, then pooling, MSE over B×C
        mapped = F.conv2d(sb.double(), conv.weight.double(), conv.bias.double()).mean(dim=(2, 3))
        expected += ((mapped - tb.double().mean(dim=(2, 3))) ** 2).mean().item()
    loss = cd_loss(ad, s, t)
    close(loss, expected)
    close(cd_loss(ad, [x.mean(dim=(2, 3)) for x in s], [x.mean(dim=(2, 3)) for x in t]), expected)  # pooled input
    close(cd_loss(ad.adapters, s, t), expected)  # a ModuleList works too
    loss.backward()
    assert ad.adapters[1].weight.grad is not None and ad.adapters[1].bias.grad.abs().sum() > 0
    same = [torch.ones(2, 3, 2, 2)]
    close(cd_loss([None], same, [torch.zeros(2, 3, 4, 4)]), 1.0)  # None = identity


def test_gram_loss_golden_value():
    torch.manual_seed(1)
    ad = ChannelAdapters([4, 6], [8, 5])
    s, t = _blocks(2)
    expected = 0.0
    for conv, sb, tb in zip(ad.adapters, s, t):
        tn = tb.double().numpy()
        B, C, H, W = tn.shape
        Fm = tn.reshape(B, C, H * W)
        G = Fm @ Fm.transpose(0, 2, 1)  # per-sample C×C Gram matrix
        A = G.sum(axis=2)
        m = 1 - (A - A.min()) / (A.max() - A.min()) + 1e-3
        w = conv.weight.detach().double().numpy()[:, :, 0, 0]
        bias = conv.bias.detach().double().numpy()[None, :, None, None]
        mapped = np.einsum("oc,bchw->bohw", w, sb.double().numpy()) + bias  # the 1×1 conv, written out
        expected += ((mapped - tn) ** 2 * m[:, :, None, None]).mean()
        close(gram_channel_weights(tb), m, 1e-4)
    close(gram_loss(ad, s, t), expected, 1e-4)
    # a constant teacher map: Gram row sums all equal; every weight 1.001 (the original divides 0 by 0)
    close(gram_channel_weights(torch.ones(2, 3, 2, 2)), np.full((2, 3), 1.001))
    loss = gram_loss(ad, s, t)
    loss.backward()
    assert ad.adapters[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ registry, dtype


def test_registry_front_doors():
    names = list_losses()
    for name in ("kldiv", "l1_discrepancy", "jsdiv", "onehot_ce", "class_balance", "activation_loss",
                 "adversarial_kl", "adversarial_masked", "tv_prior", "l2_prior", "bn_layer_loss", "bn_global_loss",
                 "cmi_contrastive_loss", "triplet_loss", "cd_loss", "gram_loss"):
        assert name in names and callable(get_loss(name))
    assert get_loss("kl") is kldiv and get_loss("triplet") is triplet_loss and LOSSES.get("cd") is cd_loss
    with pytest.raises(ConfigError, match="valid"):
        get_loss("kldv")


def test_float32_under_bf16_autocast():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    torch.manual_seed(0)
    ad = ChannelAdapters([4, 6], [8, 5])
    sb, tb = _blocks()
    p = F.normalize(torch.randn(6, 16), dim=1)
    ref = [kldiv(s, t, T=4.0), cmi_contrastive_loss(p, p, 2, 0.1), cd_loss(ad, sb, tb), gram_loss(ad, sb, tb)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [kldiv(s.bfloat16(), t.bfloat16(), T=4.0), cmi_contrastive_loss(p, p, 2, 0.1), cd_loss(ad, sb, tb),
               gram_loss(ad, sb, tb)]
    assert all(g.dtype == torch.float32 for g in got)
    for g, r in zip(got[1:], ref[1:]):  # fp32 inputs: bit-for-bit the non-autocast value (no bf16 matmul inside)
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[0], ref[0], rtol=0.05, atol=0.05)  # bf16 inputs, fp32 arithmetic


# ------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_without_host_sync():
    dev = torch.device("cuda")
    s, t = t64(S).to(dev), t64(T).to(dev)
    torch.manual_seed(0)
    ad = ChannelAdapters([4, 6], [8, 5]).to(dev)
    sb, tb = _blocks()
    sb, tb = [x.to(dev) for x in sb], [x.to(dev) for x in tb]
    p = F.normalize(torch.randn(6, 16, device=dev), dim=1)
    bank = MemoryBank(10, 16, device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = [kldiv(s, t, T=2.0), adversarial_masked(s, t), jsdiv(s, t), class_balance(s, 2),
               bn_layer_loss(*batch_mean_var(sb[0]), torch.zeros(4, device=dev), torch.ones(4, device=dev)),
               cmi_contrastive_loss(p, p, 2, 0.1), cd_loss(ad, sb, tb), gram_loss(ad, sb, tb), tv_prior(sb[0])]
        bank.add(p)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(o.is_cuda and o.dtype == torch.float32 for o in out)
    close(out[0], kl_terms(S, T, 2.0).sum() / 2)
    got = bank.sample(4, torch.Generator(device=dev).manual_seed(0))
    assert got.is_cuda and got.shape == (4, 16)
    feats = [torch.randn(4, 5, device=dev, requires_grad=True)]
    loss, count = triplet_loss_with_count(feats, t64(E4).to(dev), torch.tensor(Y4, device=dev),
                                          generator=torch.Generator(device=dev).manual_seed(0))
    assert loss.is_cuda and count.is_cuda and int(count) == 4
    zero = triplet_loss(feats, t64(E4).to(dev), torch.tensor([0, 1, 2, 3], device=dev))
    assert zero.is_cuda and zero.item() == 0.0
    zero.backward()
