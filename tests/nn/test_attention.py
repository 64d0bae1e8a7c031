"""The shared attention module: the SDPA path equals the dense path, masks, KV-cache decoding equals
the full forward (growing and sliding-window caches), the two-pass long-sequence path equals the dense
path for adaptive temperature and log-n scaling, and no NaN for fully masked rows."""

import pytest
import torch
from torch import nn

from tenfold.nn.attention import Attention, KVCache, attention_weights

KINDS = ("softmax", "adaptive", "log-n")


class ToyRotation(nn.Module):
    """A position-dependent rotation of channel pairs, standing in for a rotary embedding."""

    def forward(self, x, positions):
        angle = positions.to(x.dtype).unsqueeze(-1) * 0.3  # (..., seq, 1)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()], dim=-1)
        return out.flatten(-2)  # (..., seq, head_dim)


def _attention(seed=0, **kwargs):
    torch.manual_seed(seed)
    return Attention(dim=16, num_heads=2, **kwargs)


def _dense(attn, x, **kwargs):
    attn.record = True
    try:
        return attn(x, **kwargs)
    finally:
        attn.record = False


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 3])
def test_sdpa_path_equals_dense_path(causal, window):
    attn = _attention(causal=causal, window=window, rope=ToyRotation())
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(attn(x), _dense(attn, x), atol=1e-5, rtol=1e-5)


def test_record_keeps_unrotated_queries_keys_and_weights():
    attn = _attention(rope=ToyRotation())
    x = torch.randn(2, 5, 16)
    _dense(attn, x)
    q, k, _ = attn.qkv(x).view(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(attn.recorded["q"], q)
    torch.testing.assert_close(attn.recorded["k"], k)
    weights = attn.recorded["weights"]
    assert weights.shape == (2, 2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 5))
    assert torch.all(weights.triu(1) == 0)  # causal


@pytest.mark.parametrize("kind", KINDS)
def test_padding_mask_ignores_masked_keys(kind):
    attn = _attention(softmax=kind, causal=False)
    x = torch.randn(2, 6, 16)
    keep = torch.tensor([True, True, True, True, False, False])
    y = attn(x, attn_mask=keep)
    y_short = attn(x[:, :4])
    torch.testing.assert_close(y[:, :4], y_short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fully_masked_rows_give_zeros_not_nan(kind, dtype):
    attn = _attention(softmax=kind, causal=False).to(dtype)
    x = torch.randn(1, 5, 16, dtype=dtype)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[2] = False  # query 2 sees nothing
    for record in (False, True):
        attn.record = record
        y = attn(x, attn_mask=mask)
        assert torch.isfinite(y).all()
        expected_row = attn.out(torch.zeros(attn.num_heads * attn.head_dim, dtype=dtype))
        torch.testing.assert_close(y[0, 2], expected_row)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("window", [None, 4])
def test_kv_cache_decoding_equals_full_forward(kind, window):
    attn = _attention(softmax=kind, window=window, rope=ToyRotation())
    x = torch.randn(2, 11, 16)
    full = attn(x)
    cache = KVCache(window=window)
    pieces = [attn(x[:, :3], cache=cache)] + [attn(x[:, t:t + 1], cache=cache) for t in range(3, 11)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    if window is not None:
        assert len(cache) == window


def test_sliding_window_attends_to_last_keys_only():
    attn = _attention(window=3)
    x = torch.randn(1, 8, 16)
    _dense(attn, x)
    weights = attn.recorded["weights"][0, 0]
    allowed = torch.ones(8, 8, dtype=torch.bool).tril() & ~torch.ones(8, 8, dtype=torch.bool).tril(-3)
    assert torch.all(weights[~allowed] == 0) and torch.all(weights[allowed] > 0)


@pytest.mark.parametrize("kind", ["adaptive", "log-n"])
@pytest.mark.parametrize("causal,window", [(True, None), (False, None), (True, 5)])
@pytest.mark.parametrize("grad", [True, False])  # chunked statistics under autograd, the fused kernel without
def test_two_pass_path_equals_dense_path(kind, causal, window, grad):
    attn = _attention(softmax=kind, causal=causal, window=window)
    attn.qkv.weight.data *= 3  # sharper rows, so beta varies
    x = torch.randn(2, 37, 16)
    mask = torch.rand(2, 1, 1, 37) > 0.2
    mask[1, ..., :] = False  # a fully masked batch element
    dense = _dense(attn, x, attn_mask=mask)
    attn.two_pass_min_keys, attn.two_pass_chunk = 1, 8  # chunks that do not divide 37
    with torch.set_grad_enabled(grad):
        two_pass = attn(x, attn_mask=mask)
    assert torch.isfinite(two_pass).all()
    torch.testing.assert_close(two_pass, dense, atol=1e-5, rtol=1e-5)


def test_two_pass_with_kv_cache_equals_full_forward():
    attn = _attention(softmax="adaptive", rope=ToyRotation())
    attn.two_pass_min_keys, attn.two_pass_chunk = 1, 4
    x = torch.randn(1, 9, 16)
    cache = KVCache()
    steps = torch.cat([attn(x[:, t:t + 1], cache=cache) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, _dense(attn, x), atol=1e-5, rtol=1e-5)


def test_attention_weights_masked_entries_are_zero():
    scores = torch.randn(3, 6)
    mask = torch.rand(3, 6) > 0.5
    mask[0] = False
    for kind in KINDS:
        w = attention_weights(scores, kind, mask)
        assert torch.isfinite(w).all() and torch.all(w[~mask] == 0)
        torch.testing.assert_close(w[1:].sum(-1), mask[1:].any(-1).float())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="softmax"):
        Attention(dim=8, num_heads=2, softmax="sparsemax")
    with pytest.raises(ValueError, match="window"):
        Attention(dim=8, num_heads=2, window=0)
    with pytest.raises(ValueError, match="num_heads"):
        Attention(dim=8, num_heads=0)
    with pytest.raises(ValueError, match="expected x"):
        Attention(dim=8, num_heads=2)(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="window"):
        KVCache(window=0)
    with pytest.raises(ValueError, match="divide dim"):
        Attention(dim=30, num_heads=4)  # would silently use head width 7
    assert Attention(dim=30, num_heads=4, head_dim=8).qkv.out_features == 3 * 4 * 8
    with pytest.raises(ValueError, match="num_kv_heads"):
        Attention(dim=16, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="num_kv_heads"):
        Attention(dim=16, num_heads=4, num_kv_heads=0)
    with pytest.raises(ValueError, match="floating-point"):
        Attention(dim=8, num_heads=2)(torch.ones(2, 3, 8, dtype=torch.long))


def _gqa_and_repeated(kind, num_kv_heads=2, **kwargs):
    """A grouped-query Attention and the multi-head Attention whose key/value heads repeat its kv heads."""
    torch.manual_seed(0)
    gqa = Attention(dim=16, num_heads=4, num_kv_heads=num_kv_heads, softmax=kind, **kwargs)
    mha = Attention(dim=16, num_heads=4, softmax=kind, **kwargs)
    hd, group = gqa.head_dim, 4 // num_kv_heads
    w_q, w_k, w_v = gqa.qkv.weight.detach().split([4 * hd, num_kv_heads * hd, num_kv_heads * hd])
    repeat = lambda w: w.view(num_kv_heads, hd, 16).repeat_interleave(group, dim=0).reshape(4 * hd, 16)
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([w_q, repeat(w_k), repeat(w_v)]))
        mha.out.weight.copy_(gqa.out.weight)
    return gqa, mha


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_query_attention_equals_repeated_kv_heads(kind, num_kv_heads):
    gqa, mha = _gqa_and_repeated(kind, num_kv_heads, rope=ToyRotation())
    assert gqa.qkv.out_features == (4 + 2 * num_kv_heads) * 4
    x = torch.randn(2, 9, 16)
    mask = torch.rand(2, 1, 1, 9) > 0.2
    torch.testing.assert_close(gqa(x, attn_mask=mask), mha(x, attn_mask=mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_dense(gqa, x), mha(x), atol=1e-5, rtol=1e-5)  # the recorded (dense) path
    if kind != "softmax":  # the two-pass long-sequence path
        gqa.two_pass_min_keys, gqa.two_pass_chunk = 1, 4
        torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=1e-5)


def test_grouped_query_kv_cache_holds_the_kv_heads_and_decodes_like_the_full_forward():
    gqa, _ = _gqa_and_repeated("softmax", 2, rope=ToyRotation())
    x = torch.randn(1, 7, 16)
    cache = KVCache()
    steps = torch.cat([gqa(x[:, t:t + 1], cache=cache) for t in range(7)], dim=1)
    assert cache.k.shape == (1, 2, 7, 4)
    torch.testing.assert_close(steps, gqa(x), atol=1e-5, rtol=1e-5)
