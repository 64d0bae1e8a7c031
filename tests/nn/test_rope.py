"""RoPE / p-RoPE: exact frequencies, limiting cases, the relative-position property at large
positions, layouts, conversions (NeoX partial, Hugging Face), KV-cache decoding, dtypes, bad input."""

import math

import numpy as np
import pytest
import torch

from tenfold.models.gpt import GPT, GPTConfig
from tenfold.nn.attention import Attention
from tenfold.nn.rope import (
    RotaryEmbedding,
    rotating_pairs,
    half_to_interleaved_permutation,
    permute_head_rows,
    permute_qk_rows,
    prope_as_neox,
    prope_to_neox_permutation,
)


def reference_rope(x: np.ndarray, positions: np.ndarray, freqs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Independent fp64 evaluation of Sec. 2.1: chunk (pairs[i, 0], pairs[i, 1]) rotated by pos * freqs[i]."""
    out = x.astype(np.float64).copy()
    angles = positions[:, None] * freqs[None, :]  # (seq, d/2)
    a, b = x[..., pairs[:, 0]], x[..., pairs[:, 1]]
    out[..., pairs[:, 0]] = a * np.cos(angles) - b * np.sin(angles)
    out[..., pairs[:, 1]] = b * np.cos(angles) + a * np.sin(angles)
    return out


def half_pairs(d):
    return np.stack([np.arange(d // 2), np.arange(d // 2) + d // 2], axis=1)


def rope_freqs(d, base):
    return base ** (-np.arange(0, d, 2) / d)


# -- exact frequencies ------------------------------------------------------------------------------

@pytest.mark.parametrize("d,p,r", [(16, 0.75, 6), (16, 0.25, 2), (64, 0.75, 24), (256, 0.25, 32), (16, 1.0, 8),
                                   (16, 0.0, 0)])
def test_inv_freq_low_is_exact_with_full_head_denominator(d, p, r):
    rope = RotaryEmbedding(d, base=1e4, p=p)
    expected = np.concatenate([1e4 ** (-2 * np.arange(r) / d), np.zeros(d // 2 - r)])
    assert rope.n_rotating == r
    np.testing.assert_allclose(rope.inv_freq.numpy(), expected, rtol=1e-6)
    assert (rope.inv_freq[r:] == 0).all()


def test_inv_freq_high_zeroes_the_fastest():
    rope = RotaryEmbedding(16, base=100.0, p=0.75, truncate="high")
    full = rope_freqs(16, 100.0)
    assert (rope.inv_freq[:2] == 0).all()
    np.testing.assert_allclose(rope.inv_freq[2:].numpy(), full[2:], rtol=1e-6)


def test_inv_freq_prefix_is_neox_partial():
    rope = RotaryEmbedding(16, base=100.0, p=0.75, truncate="prefix")
    np.testing.assert_allclose(rope.inv_freq[:6].numpy(), 100.0 ** (-np.arange(0, 12, 2) / 12), rtol=1e-6)
    assert (rope.inv_freq[6:] == 0).all()
    # wavelengths 2π/θ_i of the toy NeoX partial config (base 100, 12 rotary dims)
    np.testing.assert_allclose(rope.wavelengths[:6].numpy(), [6.3, 13.5, 29.2, 62.8, 135.4, 291.6], atol=0.06)


def test_toy_wavelengths():
    rope = RotaryEmbedding(16, base=100.0)
    np.testing.assert_allclose(rope.wavelengths.numpy(), [6.3, 11.2, 19.9, 35.3, 62.8, 111.7, 198.7, 353.3],
                               atol=0.06)


# -- against an independent formula, at large positions ---------------------------------------------

@pytest.mark.parametrize("truncate,p", [("low", 1.0), ("low", 0.75), ("high", 0.75), ("prefix", 0.5)])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_matches_reference_formula_at_large_positions(truncate, p, layout):
    d = 32
    rope = RotaryEmbedding(d, base=1e4, p=p, truncate=truncate, layout=layout)
    x = torch.randn(2, 3, 40, d, dtype=torch.float64)
    positions = torch.arange(700, 2000, 33)[:40]
    got = rope(x, positions).numpy()
    pairs = rope.pair_indices().numpy()
    freqs = rope._freqs64.numpy()
    expected = reference_rope(x.numpy(), positions.numpy().astype(np.float64), freqs, pairs)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    got32 = rope(x.float(), positions).double().numpy()
    np.testing.assert_allclose(got32, expected, atol=2e-5)


def test_pair_indices_of_layouts():
    assert RotaryEmbedding(8).pair_indices().tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert RotaryEmbedding(8, layout="interleaved").pair_indices().tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert RotaryEmbedding(8, p=0.5, truncate="prefix").pair_indices().tolist() == [[0, 2], [1, 3], [4, 6], [5, 7]]


# -- limiting cases --------------------------------------------------------------------------------

def test_limiting_cases():
    x = torch.randn(2, 2, 50, 16, dtype=torch.float64)
    pos = torch.arange(1000, 1050)
    rope = RotaryEmbedding(16, base=100.0)(x, pos)
    expected = reference_rope(x.numpy(), pos.numpy().astype(float), rope_freqs(16, 100.0), half_pairs(16))
    np.testing.assert_allclose(rope.numpy(), expected, atol=1e-12)
    for kwargs in ({"p": 1.0, "truncate": "low"}, {"p": 1.0, "truncate": "high"}, {"p": 1.0, "truncate": "prefix"}):
        assert torch.equal(RotaryEmbedding(16, base=100.0, **kwargs)(x, pos), rope), kwargs
    for kwargs in ({"p": 0.0, "truncate": "low"}, {"p": 0.0, "truncate": "high"}, {"p": 0.0, "truncate": "prefix"}):
        assert torch.equal(RotaryEmbedding(16, base=100.0, **kwargs)(x, pos), x), kwargs


def test_nope_pairs_are_untouched_and_chunk_norms_preserved():
    rope = RotaryEmbedding(16, base=100.0, p=0.75)
    x = torch.randn(3, 4, 64, 16)
    y = rope(x, torch.arange(1500, 1564))
    nope = [6, 7, 14, 15]
    assert torch.equal(y[..., nope], x[..., nope])  # cos = 1, sin = 0 exactly
    pairs = rope.pair_indices()
    norm = lambda t: t[..., pairs].norm(dim=-1)  # (..., d/2, 2) -> (..., d/2)
    torch.testing.assert_close(norm(y), norm(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y[..., :6], x[..., :6])


# -- the relative-position property ------------------------------------------------------------------

@pytest.mark.parametrize("p,truncate,layout", [(1.0, "low", "half"), (0.75, "low", "interleaved"),
                                               (0.75, "high", "half"), (0.5, "prefix", "half")])
def test_scores_depend_only_on_offset_up_to_4096(p, truncate, layout):
    rope = RotaryEmbedding(64, base=1e4, p=p, truncate=truncate, layout=layout)
    q, k = torch.randn(1, 1, 32, 64), torch.randn(1, 1, 32, 64)
    pos = torch.arange(0, 32 * 3, 3)
    base_scores = rope(q, pos) @ rope(k, pos).transpose(-1, -2)
    for shift in (1, 700, 2000, 4096 - 96):
        shifted = rope(q, pos + shift) @ rope(k, pos + shift).transpose(-1, -2)
        torch.testing.assert_close(shifted, base_scores, atol=2e-4 * base_scores.abs().max().item(), rtol=0)


def test_batched_positions_equal_per_row():
    rope = RotaryEmbedding(16, base=100.0, p=0.75)
    x = torch.randn(3, 2, 10, 16)
    positions = torch.stack([torch.arange(10), torch.arange(100, 110), torch.arange(1000, 1010)])
    y = rope(x, positions)
    for b in range(3):
        torch.testing.assert_close(y[b:b + 1], rope(x[b:b + 1], positions[b]))


# -- conversions ------------------------------------------------------------------------------------

def test_prope_as_neox():
    base_p, p_p = prope_as_neox(1e4, 0.75, 64)
    assert p_p == 0.75 and math.isclose(base_p, 1e4 ** 0.75)


@pytest.mark.parametrize("d,p", [(16, 0.75), (64, 0.75), (64, 0.25), (16, 1.0)])
def test_prope_equals_neox_after_permutation(d, p):
    base = 100.0
    prope = RotaryEmbedding(d, base=base, p=p)
    base_p, p_p = prope_as_neox(base, p, d)
    neox = RotaryEmbedding(d, base=base_p, p=p_p, truncate="prefix")
    perm = prope_to_neox_permutation(d, p)
    assert sorted(perm.tolist()) == list(range(d))
    q, k = torch.randn(2, 40, d, dtype=torch.float64), torch.randn(2, 40, d, dtype=torch.float64)
    pos = torch.arange(0, 2000, 50)
    torch.testing.assert_close(neox(q[..., perm], pos), prope(q, pos)[..., perm], atol=1e-12, rtol=0)
    s_prope = prope(q, pos) @ prope(k, pos).transpose(-1, -2)
    s_neox = neox(q[..., perm], pos) @ neox(k[..., perm], pos).transpose(-1, -2)
    torch.testing.assert_close(s_neox, s_prope, atol=1e-10, rtol=0)


def test_prope_differs_from_neox_with_same_base():
    prope = RotaryEmbedding(16, base=100.0, p=0.75)
    neox = RotaryEmbedding(16, base=100.0, p=0.75, truncate="prefix")
    assert not torch.allclose(prope.inv_freq[:6], neox.inv_freq[:6])


def _split_qkv(attn):
    w = attn.qkv.weight.data  # (3 * heads * d, dim)
    return w.chunk(3, dim=0)


def _attention_pair(rope_a, rope_b, perm, dim=32, heads=2):
    torch.manual_seed(0)
    a = Attention(dim=dim, num_heads=heads, rope=rope_a).double()
    b = Attention(dim=dim, num_heads=heads, rope=rope_b).double()
    b.load_state_dict(a.state_dict())
    w_q, w_k, w_v = _split_qkv(a)
    w_q, w_k = permute_qk_rows(w_q, w_k, perm, heads)
    b.qkv.weight.data = torch.cat([w_q, w_k, w_v])
    for m in (a, b):
        m.record = True
    return a, b


@pytest.mark.parametrize("kind", ["neox", "interleaved"])
def test_attention_equivalence_after_weight_permutation(kind):
    d = 16
    if kind == "neox":
        base_p, p_p = prope_as_neox(100.0, 0.75, d)
        rope_a = RotaryEmbedding(d, base=100.0, p=0.75)
        rope_b = RotaryEmbedding(d, base=base_p, p=p_p, truncate="prefix")
        perm = prope_to_neox_permutation(d, 0.75)
    else:
        rope_a = RotaryEmbedding(d, base=100.0, p=0.75)
        rope_b = RotaryEmbedding(d, base=100.0, p=0.75, layout="interleaved")
        perm = half_to_interleaved_permutation(d)
    a, b = _attention_pair(rope_a, rope_b, perm)
    x = torch.randn(2, 60, 32, dtype=torch.float64)
    pos = torch.arange(1200, 1260)
    torch.testing.assert_close(b(x, pos), a(x, pos), atol=1e-12, rtol=0)
    torch.testing.assert_close(b.recorded["weights"], a.recorded["weights"], atol=1e-12, rtol=0)


def test_permute_rows_per_head_and_gqa():
    perm = torch.tensor([1, 0, 3, 2])
    w = torch.arange(8 * 3, dtype=torch.float32).view(8, 3)
    out = permute_head_rows(w, perm, 2)
    assert out[:4].tolist() == w[[1, 0, 3, 2]].tolist() and out[4:].tolist() == w[[5, 4, 7, 6]].tolist()
    w_q, w_k = permute_qk_rows(torch.randn(16, 5), torch.randn(4, 5), perm, n_heads=4, n_kv_heads=1)
    assert w_q.shape == (16, 5) and w_k.shape == (4, 5)
    with pytest.raises(ValueError, match="rows"):
        permute_head_rows(torch.randn(7, 3), perm, 2)


def hf_proportional_inv_freq(params, head_dim):
    """Hugging Face ``_compute_proportional_rope_parameters`` (transformers 5.x), re-derived in numpy."""
    rope_angles = int(params.get("partial_rotary_factor", 1.0) * head_dim // 2)
    rotated = 1.0 / params["rope_theta"] ** (np.arange(0, 2 * rope_angles, 2) / head_dim)
    inv = np.concatenate([rotated, np.zeros(head_dim // 2 - rope_angles)])
    return inv / params.get("factor", 1.0), head_dim  # frequencies, rotary dim (cos/sin cover the whole head)


def hf_default_inv_freq(params, head_dim):
    """Hugging Face ``_compute_default_rope_parameters`` with partial_rotary_factor (NeoX partial)."""
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    inv = 1.0 / params["rope_theta"] ** (np.arange(0, dim, 2) / dim)
    return inv / params.get("factor", 1.0), dim


def hf_apply(x, positions, inv_freq, rotary_dim):
    """Hugging Face ``apply_rotary_pos_emb``: rotate_half on the first rotary_dim dims."""
    freqs = positions[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)  # (seq, rotary_dim)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = np.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    return np.concatenate([x_rot * np.cos(emb) + rotated * np.sin(emb), x_pass], axis=-1)


@pytest.mark.parametrize("truncate,p,scale", [("low", 0.75, 1.0), ("low", 0.25, 2.0), ("prefix", 0.5, 1.0),
                                              ("prefix", 0.25, 4.0), ("low", 1.0, 1.0)])
def test_hf_rope_parameters_round_trip_and_scores(truncate, p, scale):
    d = 32
    rope = RotaryEmbedding(d, base=1e4, p=p, truncate=truncate, scale_factor=scale)
    params = rope.to_hf_rope_parameters()
    back = RotaryEmbedding.from_hf_rope_parameters(params, head_dim=d)
    assert torch.equal(back.inv_freq, rope.inv_freq)
    hf = hf_proportional_inv_freq if params["rope_type"] == "proportional" else hf_default_inv_freq
    inv_freq, rotary_dim = hf(params, d)
    q, k = np.random.default_rng(0).standard_normal((2, 30, d))
    pos = np.arange(700, 2050, 45)[:30].astype(np.float64)
    s_hf = hf_apply(q, pos, inv_freq, rotary_dim) @ hf_apply(k, pos, inv_freq, rotary_dim).T
    t = lambda a: torch.from_numpy(a)
    s_ours = rope(t(q), t(pos).long()) @ rope(t(k), t(pos).long()).T
    np.testing.assert_allclose(s_ours.numpy(), s_hf, atol=1e-10)


def test_hf_conversion_bad_input():
    with pytest.raises(ValueError, match="high"):
        RotaryEmbedding(16, p=0.5, truncate="high").to_hf_rope_parameters()
    with pytest.raises(ValueError, match="layout"):
        RotaryEmbedding(16, layout="interleaved").to_hf_rope_parameters()
    with pytest.raises(ValueError, match="rope_type"):
        RotaryEmbedding.from_hf_rope_parameters({"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}, 16)
    with pytest.raises(ValueError, match="rope_theta"):
        RotaryEmbedding.from_hf_rope_parameters({"rope_type": "default"}, 16)


def test_hf_parity_with_transformers_if_installed():
    pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: PLC0415

    class Config:
        head_dim, hidden_size, num_attention_heads = 32, 64, 2
        rope_parameters = {"rope_type": "proportional", "rope_theta": 1e4, "partial_rotary_factor": 0.75,
                           "factor": 1.0}

        def standardize_rope_params(self):
            pass

    inv_freq, _ = ROPE_INIT_FUNCTIONS["proportional"](Config(), "cpu")
    rope = RotaryEmbedding.from_hf_rope_parameters(Config.rope_parameters, head_dim=32)
    torch.testing.assert_close(rope.inv_freq, inv_freq.float())


# -- scaling, caching, dtypes ------------------------------------------------------------------------

def test_scale_factor_divides_angles_and_keeps_zeros():
    plain = RotaryEmbedding(16, base=100.0, p=0.75)
    scaled = RotaryEmbedding(16, base=100.0, p=0.75, scale_factor=4.0)
    torch.testing.assert_close(scaled.inv_freq, plain.inv_freq / 4)
    assert (scaled.inv_freq[6:] == 0).all()
    x = torch.randn(1, 1, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(scaled(x, torch.arange(400, 405) * 4), plain(x, torch.arange(400, 405)))


def test_cos_sin_are_the_float64_angles_at_any_position():
    rope = RotaryEmbedding(16, base=100.0, p=0.75, max_len=8)
    pos = torch.tensor([0, 3, 7, 9, 1500, 3000, 10**6])
    c, s = rope.cos_sin(pos)
    angles = pos.double()[:, None] * (100.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16))
    angles[:, rotating_pairs(16, 0.75):] = 0.0
    assert c.dtype == torch.float32 and c.shape == (7, 8)
    assert torch.equal(c, angles.cos().float()) and torch.equal(s, angles.sin().float())
    c64, _ = rope.cos_sin(pos.view(1, 7), torch.float64)
    assert c64.shape == (1, 7, 8) and torch.equal(c64[0], angles.cos())


def test_negative_positions_rotate_backwards():
    rope = RotaryEmbedding(16, base=100.0)
    x = torch.randn(1, 1, 1, 16, dtype=torch.float64)
    back = rope(rope(x, torch.tensor([5])), torch.tensor([-5]))
    torch.testing.assert_close(back, x)


def test_forward_makes_no_host_sync(device_reads):
    """No Tensor -> Python conversion (``.item()``, ``int(t)``) in the forward; the forward also keeps
    no Python-side cache keyed on positions."""
    rope = RotaryEmbedding(16, base=100.0, p=0.5)
    x = torch.randn(2, 2, 5, 16)
    for positions in (torch.arange(3, 8), torch.arange(10).view(2, 5)):
        with device_reads() as reads:
            rope(x, positions)
            assert reads() == 0
    assert not [name for name in vars(rope) if "cache" in name]


def test_angle_freqs_stay_float64_and_follow_the_module():
    rope = RotaryEmbedding(16, base=100.0).half()
    assert rope.angle_freqs.dtype == torch.float64 and rope.inv_freq.dtype == torch.float16
    x = torch.randn(1, 1, 3, 16)
    torch.testing.assert_close(rope(x, torch.arange(3)), RotaryEmbedding(16, base=100.0)(x, torch.arange(3)))


def test_bf16_inputs_keep_dtype_with_fp32_angles():
    rope = RotaryEmbedding(64, base=1e4, p=0.75)
    x = torch.randn(1, 2, 4, 64)
    pos = torch.arange(1500, 1504)
    y16 = rope(x.bfloat16(), pos)
    assert y16.dtype == torch.bfloat16
    y32 = rope(x.bfloat16().float(), pos)
    torch.testing.assert_close(y16.float(), y32.bfloat16().float())  # same up to the final cast
    assert (y16.float() - y32).abs().max() < 0.05


def test_module_dtype_cast_does_not_touch_the_angles():
    rope = RotaryEmbedding(16, base=100.0).to(torch.bfloat16)
    x = torch.randn(1, 1, 3, 16)
    torch.testing.assert_close(rope(x, torch.arange(1000, 1003)),
                               RotaryEmbedding(16, base=100.0)(x, torch.arange(1000, 1003)))


# -- inside attention: KV-cache decoding equals the full forward --------------------------------------

@pytest.mark.parametrize("p", [1.0, 0.75, 0.0])
def test_kv_cache_decoding_equals_full_forward(p):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=20, dim=32, num_layers=2, num_heads=2, pos_embedding="none")
    model = GPT(cfg, rope=RotaryEmbedding(16, base=100.0, p=p)).eval()
    tokens = torch.randint(0, 20, (2, 24))
    with torch.no_grad():
        full = model(tokens)
        caches = model.new_caches()
        prefix = model(tokens[:, :10], caches=caches)
        steps = [model(tokens[:, t:t + 1], caches=caches) for t in range(10, 24)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_keys_in_the_cache_are_rotated_once_at_absolute_positions():
    torch.manual_seed(0)
    attn = Attention(dim=16, num_heads=1, rope=RotaryEmbedding(16, base=100.0, p=0.5))
    x = torch.randn(1, 6, 16)
    from tenfold.nn.attention import KVCache  # noqa: PLC0415

    cache = KVCache()
    attn(x[:, :4], cache=cache)
    attn(x[:, 4:], cache=cache)
    k = attn.qkv(x).view(1, 6, 3, 1, 16)[:, :, 1].transpose(1, 2)  # (batch, seq, 3, heads, d) -> (batch, heads, seq, d)
    torch.testing.assert_close(cache.k, attn.rope(k, torch.arange(6)))


# -- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"head_dim": 15}, "head_dim"), ({"head_dim": 16, "base": 0.0}, "base"), ({"head_dim": 16, "p": 1.5}, "p must"),
    ({"head_dim": 16, "truncate": "mid"}, "truncate"), ({"head_dim": 16, "layout": "x"}, "layout"),
    ({"head_dim": 16, "scale_factor": 0.5}, "scale_factor"), ({"head_dim": 16, "max_len": 0}, "max_len"),
    ({"head_dim": 16, "p": 0.5625, "truncate": "prefix"}, "even rotary dim"),
])
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**kwargs)


def test_forward_validates_shapes_and_positions():
    rope = RotaryEmbedding(16)
    with pytest.raises(ValueError, match="head_dim|16"):
        rope(torch.randn(1, 1, 4, 8), torch.arange(4))
    with pytest.raises(ValueError, match="positions"):
        rope(torch.randn(1, 1, 4, 16), torch.arange(5))
    with pytest.raises(ValueError, match="integer"):
        rope(torch.randn(1, 1, 2, 16), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="batch"):
        rope(torch.randn(4, 16), torch.arange(4).view(1, 4))


def test_gradients_flow_through_rotation():
    rope = RotaryEmbedding(16, base=100.0, p=0.75)
    x = torch.randn(1, 1, 5, 16, requires_grad=True)
    rope(x, torch.arange(5)).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())  # rotation is orthogonal: d||Rx||^2/dx = 2x
