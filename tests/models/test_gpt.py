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


def test_swiglu_gpt_ffns_and_parameter_counts():
    torch.manual_seed(0)
    dense = GPT(_cfg(bias=True, ffn_act="swiglu"))
    assert all(b.ffn.up.out_features == 128 and b.ffn.down.in_features == 64 for b in dense.blocks)
    ffn_weights = lambda m: sum(p.numel() for b in m.blocks for p in b.ffn.parameters() if p.dim() == 2)  # noqa: E731
    assert ffn_weights(dense) == 3 * (16 * 128 + 64 * 16)
    lowrank = GPT(_cfg(bias=True, ffn_act="swiglu"), ffn=structured_ffn("lowrank", rank_fraction=0.25, act="swiglu"))
    assert ffn_weights(lowrank) == (16 * 128 + 64 * 16) + 2 * (4 * (16 + 128) + 4 * (64 + 16))
    tokens = torch.randint(0, 11, (2, 7))
    assert lowrank(tokens).shape == (2, 7, 11)


def test_gelu_stays_the_default_and_a_mismatched_factory_is_refused():
    assert _cfg().ffn_act == "gelu" and GPT(_cfg()).blocks[0].ffn.up.out_features == 64
    with pytest.raises(ValueError, match="ffn_act"):
        _cfg(ffn_act="relu")
    with pytest.raises(ValueError, match="act"):
        GPT(_cfg(), ffn=structured_ffn("lowrank", rank=4, act="swiglu"))


def test_cached_decoding_makes_no_device_reads(device_reads):
    torch.manual_seed(0)
    model = GPT(_cfg()).eval()
    caches = model.new_caches()
    with torch.no_grad():
        model(torch.randint(0, 11, (1, 4)), caches=caches)
        with device_reads() as reads:
            for _ in range(3):
                model(torch.randint(0, 11, (1, 1)), caches=caches)
            assert reads() == 0
    assert all(cache.next_position == 7 and len(cache) == 7 for cache in caches)
