import pytest
import torch

from tenfold.models.gpt import GPT, MLP, GPTConfig
from tenfold.nn.structured import LowRankLinear, SelfGuidedTraining, StructuredMLP, structured_ffn


def _cfg(**kw):
    return GPTConfig(vocab_size=11, dim=16, num_layers=3, num_heads=2, max_seq_len=16, **kw)


def test_default_gpt_forward_shapes_and_dense_mlp():
    model = GPT(_cfg())
    assert all(isinstance(b.ffn, MLP) for b in model.blocks)
    tokens = torch.randint(0, 11, (2, 7))
    assert model(tokens).shape == (2, 7, 11)
    assert model.loss(tokens, tokens).ndim == 0


def test_structured_ffn_factory_plugs_in_and_layer_zero_stays_dense():
    torch.manual_seed(0)
    model = GPT(_cfg(bias=True), ffn=structured_ffn("lowrank", rank_fraction=0.25))
    assert isinstance(model.blocks[0].ffn.up, torch.nn.Linear)
    for block in model.blocks[1:]:
        assert isinstance(block.ffn, StructuredMLP) and isinstance(block.ffn.up, LowRankLinear)
        assert block.ffn.up.rank == 4
    dense = GPT(_cfg(bias=True))
    ffn_weights = lambda m: sum(p.numel() for b in m.blocks for p in b.ffn.parameters() if p.dim() == 2)  # noqa: E731
    assert ffn_weights(model) == 2 * 16 * 64 + 2 * (4 * (16 + 64) * 2)
    assert ffn_weights(dense) == 3 * 2 * 16 * 64
    tokens = torch.randint(0, 11, (2, 5))
    model.loss(tokens, tokens).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gpt_init_keeps_the_svd_init_of_structured_layers():
    torch.manual_seed(1)
    model = GPT(_cfg(), ffn=structured_ffn("lowrank", rank=4))
    layer = model.blocks[1].ffn.up
    s = torch.linalg.svdvals(layer.merge())
    assert torch.count_nonzero(s > 1e-6) == 4  # still exactly rank 4 (not re-drawn dense-normal)
    torch.testing.assert_close(layer.u.norm(dim=0), layer.v.norm(dim=1))  # balanced √σ factors


def test_guided_model_matches_unguided_at_start_and_cached_decoding_matches():
    torch.manual_seed(2)
    model = GPT(_cfg(), ffn=structured_ffn("blockshuffle", blocks=2)).eval()
    tokens = torch.randint(0, 11, (1, 6))
    with torch.no_grad():
        before = model(tokens)
        SelfGuidedTraining(model, total_steps=10)
        torch.testing.assert_close(model(tokens), before, atol=1e-5, rtol=1e-5)
        caches = model.new_caches()
        steps = torch.cat([model(tokens[:, i: i + 1], caches=caches) for i in range(6)], dim=1)
    torch.testing.assert_close(steps, before, atol=1e-5, rtol=1e-5)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="num_heads"):
        GPTConfig(vocab_size=5, dim=10, num_heads=3)
