import math

import pytest
import torch

from tenfold.analysis.frequency import (
    band_share,
    chunk_norms,
    collect_qkv,
    cs_bound,
    frequency_usage,
    positional_head_scores,
    resolve_pairs,
)
from tenfold.models.gpt import GPT, GPTConfig
from tenfold.nn.attention import Attention
from tenfold.nn.rope import RotaryEmbedding


def small_gpt(rope):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, dim=32, num_layers=2, num_heads=2, pos_embedding="none"), rope=rope)


def test_collect_qkv_records_every_layer_and_restores_flags():
    rope = RotaryEmbedding(16, base=100.0, p=0.75)
    model = small_gpt(rope)
    tokens = torch.randint(0, 20, (3, 12))
    records = collect_qkv(model, lambda: model(tokens))
    assert len(records) == 2
    for r in records:
        assert r["q"].shape == r["k"].shape == r["v"].shape == (3, 2, 12, 16)
        assert r["weights"].shape == (3, 2, 12, 12)
        torch.testing.assert_close(r["weights"].sum(-1), torch.ones(3, 2, 12))
    assert not any(block.attn.record for block in model.blocks)
    # v is the third block of the fused projection of the first layer's (normed) input
    h = model.blocks[0].norm1(model.embed(tokens))
    v = model.blocks[0].attn.qkv(h).view(3, 12, 3, 2, 16)[:, :, 2].transpose(1, 2)  # (b, s, 3, h, d) -> (b, h, s, d)
    torch.testing.assert_close(records[0]["v"], v)


def test_chunk_norms_are_identical_before_and_after_rotation():
    rope = RotaryEmbedding(16, base=100.0, p=0.75)
    q = torch.randn(2, 3, 50, 16)
    rotated = rope(q, torch.arange(900, 950))
    torch.testing.assert_close(chunk_norms(rotated, rope.pair_indices()), chunk_norms(q, rope.pair_indices()))
    # and a wrong layout gives different numbers (the pairing matters)
    assert not torch.allclose(chunk_norms(rotated, "interleaved"), chunk_norms(q, "interleaved"))


def test_chunk_norms_hand_computed():
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, 0] = torch.tensor([3.0, 0.0, 4.0, 0.0])  # half layout: pair 0 = dims (0, 2) -> norm 5
    x[0, 0, 1] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # pair 1 = dims (1, 3) -> norm 1
    torch.testing.assert_close(chunk_norms(x, "half"), torch.tensor([[2.5, 0.5]]))
    torch.testing.assert_close(chunk_norms(x, "interleaved"), torch.tensor([[2.0, 2.0]]))


def test_frequency_usage_and_band_share():
    records = [{"q": torch.ones(1, 2, 3, 8), "k": torch.ones(1, 2, 3, 8), "v": torch.ones(1, 2, 3, 8)}]
    records[0]["q"][..., [0, 4]] = 3.0  # pair 0 carries a larger norm
    usage = frequency_usage(records, "half")
    assert usage["q"].shape == (1, 2, 4)
    torch.testing.assert_close(usage["q"][0, 0], torch.tensor([3 * math.sqrt(2), math.sqrt(2), math.sqrt(2),
                                                                math.sqrt(2)]))
    share = band_share(usage, [0])
    torch.testing.assert_close(share, torch.full((1, 2), 3 / 6))


def test_positional_head_scores_find_a_previous_token_head():
    seq = 6
    prev = torch.zeros(1, 1, seq, seq)
    prev[0, 0, 0, 0] = 1.0
    prev[0, 0, torch.arange(1, seq), torch.arange(seq - 1)] = 1.0
    diag = torch.eye(seq).view(1, 1, seq, seq)
    scores = positional_head_scores([{"weights": torch.cat([prev, diag], dim=1)}])
    torch.testing.assert_close(scores["prev"], torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(scores["diag"], torch.tensor([[1 / 6, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        positional_head_scores([{"weights": torch.zeros(1, 1, 1, 4)}])


def test_cs_bound_orders_activation_chunk_and_full_bounds():
    rope = RotaryEmbedding(16, base=100.0)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 10, 16, generator=gen), torch.randn(2, 10, 16, generator=gen)
    act, chunk, full = cs_bound(q, k, 7, 3, rope.pair_indices(), rope)
    assert act.shape == chunk.shape == full.shape == (2,)
    assert (act.abs() <= chunk + 1e-5).all() and (chunk <= full + 1e-5).all()
    expected = (rope(q[:, 7:8], torch.tensor([7])) * rope(k[:, 3:4], torch.tensor([3]))).sum(-1).squeeze(-1)
    torch.testing.assert_close(act, expected)
    # q = k at the same position with no rotation: activation = both bounds
    a, c, f = cs_bound(q, q, 2, 2)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, f)


def test_bad_input():
    with pytest.raises(ValueError, match="no tenfold.nn.Attention"):
        collect_qkv(torch.nn.Linear(2, 2), lambda: None)
    with pytest.raises(ValueError, match="pairs"):
        resolve_pairs("zigzag", 8)
    with pytest.raises(ValueError, match="shaped"):
        chunk_norms(torch.zeros(3, 8))


def test_works_on_a_bare_attention_module():
    attn = Attention(dim=16, num_heads=2)
    records = collect_qkv(attn, lambda: attn(torch.randn(1, 5, 16)))
    assert records[0]["v"].shape == (1, 2, 5, 8)
    assert not attn.record
