"""The theory of Barbero et al. (2025), "Round and Round We Go!", as executable statements on the
library's RotaryEmbedding and Attention (float64, deterministic).

T1 (Prop. 3.1)  RoPE can peak at any chosen offset: k = R^r q maximises a at j - i = -r.
T2 (Prop. 3.2)  No decay for Gaussian q, k: E[q^T R^r k] = 0 at every r; the RoFormer decay curve is
                a property of constant vectors such as all-ones.
T3 (Prop. 5.2)  A single NoPE head puts at most 1/2 on the diagonal of [bos, x, x].
T4 (Thm. 5.3)   RoPE builds sharp diagonal / previous-token heads; high frequencies give the larger
                margin for a fixed norm budget.
T5 (Sec. 6)     A single-frequency semantic channel is overtaken at long range; a zero-frequency
                (p-RoPE NoPE) channel never is.
"""

import math

import numpy as np
import torch

from tenfold.nn.attention import Attention
from tenfold.nn.rope import RotaryEmbedding

D, BASE = 64, 1e4


def activations(rope, q, k, i, js):
    """a_{i,j} = (R^i q)^T (R^j k) for one query position i and key positions js; q, k: (d,)."""
    rq = rope(q.view(1, 1, 1, -1), torch.tensor([i]))  # (d,) -> (1, 1, 1, d)
    rk = rope(k.expand(1, 1, len(js), -1), torch.as_tensor(js))  # (1, 1, n, d)
    return (rq @ rk.transpose(-1, -2)).flatten()


def chunk_mean_cos(freqs, m):
    """mean_k cos(m g_k) over the given frequencies, for offsets m."""
    return np.cos(np.outer(m, freqs)).mean(axis=1)


# -- T1 -----------------------------------------------------------------------------------------------

def test_t1_rope_can_peak_at_any_offset():
    rope = RotaryEmbedding(D, base=BASE)
    gen = torch.Generator().manual_seed(0)
    center = 1024
    js = torch.arange(0, 2 * center + 1)
    for r in (0, 1, 5, 37, 300, 1000):
        q = torch.randn(D, generator=gen, dtype=torch.float64)
        k = rope(q.view(1, 1, 1, D), torch.tensor([r])).flatten()  # per chunk rho(g_k)^r q^(k)
        a = activations(rope, q, k, center, js)
        offset = js - center  # j - i
        assert int(offset[a.argmax()]) == -r
        # a_{i,j} = sum_k ||q^(k)||^2 cos((j - i + r) g_k)
        pairs = rope.pair_indices()
        chunk_sq = q[pairs].pow(2).sum(-1).numpy()  # (d/2,)
        expected = np.cos(np.outer(offset.numpy() + r, rope._freqs64.numpy())) @ chunk_sq
        np.testing.assert_allclose(a.numpy(), expected, atol=1e-9)
        top2 = a.topk(2).values
        assert top2[0] - top2[1] > 1e-3  # the peak is strict


# -- T2 -----------------------------------------------------------------------------------------------

def test_t2_all_ones_decays_but_gaussian_does_not():
    rope = RotaryEmbedding(D, base=BASE)
    offsets = [0, 1, 4, 16, 64, 256, 1024]
    ones = torch.ones(D, dtype=torch.float64)
    a_ones = activations(rope, ones, ones, 0, offsets).numpy()
    np.testing.assert_allclose(a_ones, [64.0, 61.8, 47.9, 38.8, 27.8, 22.6, 16.8], atol=0.1)
    assert (np.diff(a_ones) < 0).all()  # the RoFormer "long-term decay" of constant vectors

    gen = torch.Generator().manual_seed(1)
    n = 4000
    q = torch.randn(n, 1, 1, D, generator=gen, dtype=torch.float64)
    k = torch.randn(n, 1, 1, D, generator=gen, dtype=torch.float64)
    rq = rope(q, torch.tensor([0]))
    for r in offsets:
        a = (rq * rope(k, torch.tensor([r]))).sum(-1).flatten()  # (n,) samples of q^T R^r k
        assert abs(a.mean().item()) < 4 * a.std().item() / math.sqrt(n)
        assert abs(a.std().item() - math.sqrt(D)) < 0.5  # std = sqrt(d) at every offset: no decay


def test_t2_a_single_gaussian_pair_does_not_decay():
    rope = RotaryEmbedding(D, base=BASE)
    gen = torch.Generator().manual_seed(2)
    q, k = torch.randn(D, generator=gen, dtype=torch.float64), torch.randn(D, generator=gen, dtype=torch.float64)
    a = activations(rope, q, k, 0, torch.arange(0, 4096)).abs().numpy()
    # no decay: the late window is as large as the early one (the all-ones curve drops by 3x)
    assert a[2048:].max() > 0.5 * a[:64].max()


# -- T3 -----------------------------------------------------------------------------------------------

def test_t3_single_nope_head_cannot_be_diagonal():
    gen = torch.Generator().manual_seed(3)
    worst = 0.0
    for _ in range(100):
        attn = Attention(dim=16, num_heads=1).double()
        with torch.no_grad():
            attn.qkv.weight.normal_(0, 3.0, generator=gen)
        attn.record = True
        bos, x = torch.randn(2, 16, generator=gen, dtype=torch.float64)
        attn(torch.stack([bos, x, x]).unsqueeze(0))
        weights = attn.recorded["weights"][0, 0]  # (3, 3)
        assert abs(weights[2, 2] - weights[2, 1]) < 1e-12  # a_{3,3} = a_{3,2}
        worst = max(worst, weights[2, 2].item())
    assert worst <= 0.5 + 1e-12


def _constant_head(psi_q, psi_k, rope):
    """A one-head attention whose queries are psi_q and keys psi_k for every input e_0 (W_Q = psi_q e_0^T)."""
    d = psi_q.numel()
    attn = Attention(dim=d, num_heads=1, rope=rope).double()
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.weight[:d, 0] = psi_q * math.sqrt(math.sqrt(d))  # the 1/sqrt(d) of the logits folded in
        attn.qkv.weight[d:2 * d, 0] = psi_k * math.sqrt(math.sqrt(d))
        attn.qkv.weight[2 * d:, :] = torch.eye(d)
    attn.record = True
    return attn


def _psi_on(pairs, chunks, norm_sq, d):
    """psi with ||psi||^2 = norm_sq split equally over ``chunks`` (each chunk along its first dim)."""
    psi = torch.zeros(d, dtype=torch.float64)
    psi[pairs[chunks, 0]] = math.sqrt(norm_sq / len(chunks))
    return psi


def _run_constant(attn, n_tokens, d):
    x = torch.zeros(1, n_tokens, d, dtype=torch.float64)
    x[..., 0] = 1.0
    attn(x)
    return attn.recorded["weights"][0, 0]  # (n, n)


def test_t3_contrast_rope_head_exceeds_one_half_on_bos_x_x():
    rope = RotaryEmbedding(D, base=BASE)
    psi = _psi_on(rope.pair_indices(), torch.arange(8), 60.0, D)
    weights = _run_constant(_constant_head(psi, psi, rope), 3, D)
    assert weights[2, 2] > 0.99


# -- T4 -----------------------------------------------------------------------------------------------

def test_t4_gaps_of_the_paper_table():
    freqs = BASE ** (-np.arange(0, D, 2) / D)
    m = np.arange(1, 1024)
    gap = lambda f: 1 - chunk_mean_cos(f, m).max()
    assert abs(gap(freqs[:8]) - 0.134) < 1e-3 and abs(gap(freqs) - 0.034) < 1e-3
    assert gap(freqs[:8]) > gap(freqs) > gap(freqs[-8:])
    assert abs(np.cos(np.arange(1, 64)).max() - 0.99984) < 1e-5  # one frequency g = 1: the gap -> 0 as N grows


def test_t4_sharp_diagonal_and_previous_token_heads_from_high_frequencies():
    rope = RotaryEmbedding(D, base=BASE)
    pairs, freqs = rope.pair_indices(), rope._freqs64.numpy()
    n_tokens, eps = 128, 1e-3
    top = torch.arange(8)
    gap = 1 - chunk_mean_cos(freqs[:8], np.arange(1, n_tokens)).max()
    norm_sq = math.log((n_tokens - 1) * (1 - eps) / eps) / gap  # the bound of Thm. 5.3 (derived form)
    psi = _psi_on(pairs, top, norm_sq, D)

    diag = _run_constant(_constant_head(psi, psi, rope), n_tokens, D).diagonal()
    assert diag.min() >= 1 - eps

    shifted = rope(psi.view(1, 1, 1, D), torch.tensor([1])).flatten()  # k = rho(g) psi
    prev = _run_constant(_constant_head(psi, shifted, rope), n_tokens, D).diagonal(offset=-1)
    assert prev.min() >= 1 - eps

    # the same norm budget on the 8 lowest frequencies gives no positional head at all
    low = _psi_on(pairs, torch.arange(24, 32), norm_sq, D)
    diag_low = _run_constant(_constant_head(low, low, rope), n_tokens, D).diagonal()
    assert diag_low[-1] < 0.05


def test_t4_high_frequency_diagonal_head_has_the_larger_margin():
    rope = RotaryEmbedding(D, base=BASE)
    pairs = rope.pair_indices()
    margins = {}
    for name, chunks in (("high", torch.arange(8)), ("low", torch.arange(24, 32))):
        psi = _psi_on(pairs, chunks, 100.0, D)
        a = activations(rope, psi, psi, 512, torch.arange(0, 513))  # keys up to the query
        margins[name] = (a[-1] - a[:-1].max()).item()
    assert margins["high"] > 10 * margins["low"] > 0
    assert abs(margins["high"] - 100 * 0.134) < 0.1


# -- T5 -----------------------------------------------------------------------------------------------

def test_t5_single_frequency_semantic_channel_is_overtaken_zero_frequency_is_not():
    d, c = 4, 0.8  # pair 1 has g = 1e4^(-2/4) = 0.01 (RoPE) or 0 (p-RoPE with p = 0.5)
    q = torch.tensor([0.0, 3.0, 0.0, 0.0], dtype=torch.float64)  # all the norm on the slow chunk
    distances = torch.arange(0, 4097)
    for p, overtaken in ((1.0, True), (0.5, False)):
        rope = RotaryEmbedding(d, base=BASE, p=p)
        needle = activations(rope, q, q, 4096, 4096 - distances)  # the matching key at distance Δ
        distractor = c * q.dot(q)  # a weaker match at offset 0 (key c·q): logit c ||q||^2
        beaten = needle < distractor
        assert bool(beaten.any()) is overtaken
        if overtaken:
            first = int(distances[beaten][0])
            assert math.cos(first * 0.01) < c  # exactly where cos(Δ g) drops below c
            assert math.cos((first - 1) * 0.01) >= c
        else:
            torch.testing.assert_close(needle, torch.full_like(needle, 9.0))
