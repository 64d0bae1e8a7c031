import pytest
import torch

from tenfold.models.decision import CausalTransformer, PreallocatedKVCache, make_backbone, new_backbone_state


@pytest.mark.parametrize("kind", ["transformer", "xlstm"])
def test_step_equals_forward(kind):
    torch.manual_seed(0)
    backbone = make_backbone(kind, dim=16, num_layers=2, num_heads=2, max_positions=64).double().eval()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    full, _ = backbone(x)
    state, steps = new_backbone_state(backbone), []
    for t in range(20):
        y_t, state = backbone.step(x[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=0)


def test_chunked_prefill_then_steps_equals_forward():
    torch.manual_seed(0)
    model = CausalTransformer(dim=16, num_layers=2, num_heads=2, max_positions=64).double().eval()
    x = torch.randn(1, 30, 16, dtype=torch.float64)
    full, _ = model(x)
    state = model.new_state()
    head, state = model(x[:, :17], state)  # crosses the preallocated buffer's first growth (16)
    tail = [model.step(x[:, t], state)[0] for t in range(17, 30)]
    torch.testing.assert_close(torch.cat([head, torch.stack(tail, 1)], 1), full, atol=1e-10, rtol=0)


def test_sliding_window_equals_full_forward_over_the_window():
    torch.manual_seed(0)
    window = 6
    model = CausalTransformer(dim=16, num_layers=1, num_heads=2, max_positions=64, window=window).double().eval()
    for block in model.blocks:
        block.attn.window = window  # the reference: full forward with local attention over `window` keys
    x = torch.randn(1, 15, 16, dtype=torch.float64)
    reference, _ = model(x)
    state, steps = model.new_state(), []
    for t in range(15):
        y_t, state = model.step(x[:, t], state)
        steps.append(y_t)
        assert len(state[0]) <= window
    torch.testing.assert_close(torch.stack(steps, 1), reference, atol=1e-10, rtol=0)


def test_preallocated_cache_matches_concatenating_cache():
    from tenfold.nn.attention import KVCache

    grow, cat = PreallocatedKVCache(), KVCache()
    for t in range(40):
        k, v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
        a = grow.append(k, v, torch.tensor([t]))
        b = cat.append(k, v, torch.tensor([t]))
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    grow.fill(torch.randn(1, 2, 100, 4), torch.randn(1, 2, 100, 4))
    assert len(grow) == 100 and grow.next_position == 100


def test_bad_input_and_position_overflow_raise():
    model = CausalTransformer(dim=8, num_layers=1, num_heads=2, max_positions=4)
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="batch, seq"):
        model(torch.randn(5, 8))
    with pytest.raises(ValueError, match="backbone kind"):
        make_backbone("mamba", dim=8, num_layers=1, num_heads=2)


def test_padding_mask_hides_left_padding():
    torch.manual_seed(0)
    model = CausalTransformer(dim=16, num_layers=2, num_heads=2, max_positions=64, pos_embedding="none").eval()
    x = torch.randn(1, 6, 16)
    padded = torch.cat([torch.randn(1, 3, 16), x], 1)  # three padding tokens on the left
    keys_allowed = torch.tensor([False] * 3 + [True] * 6)[None, None, None, :]  # (1, 1, 1, keys)
    y_padded, _ = model(padded, attn_mask=keys_allowed)
    y, _ = model(x)
    torch.testing.assert_close(y_padded[:, 3:], y, atol=1e-5, rtol=0)


def test_kv_cache_steps_make_no_device_reads(device_reads):
    """Positions known on the host (the next one, or a given one) never come back from the device."""
    model = CausalTransformer(dim=8, num_layers=2, num_heads=2, max_positions=32)
    state = model.new_state()
    _, state = model(torch.randn(1, 5, 8), state)  # a prefix
    with device_reads() as reads:
        for _ in range(3):
            _, state = model.step(torch.randn(1, 8), state)
        _, state = model.step(torch.randn(1, 8), state, position=20)
        assert reads() == 0
    assert all(cache.next_position == 21 and len(cache) == 9 for cache in state)
    cache = PreallocatedKVCache()
    cache.append(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.tensor([4, 9, 7]))
    assert cache.next_position == 8  # not said by a caller: read from the device once, on demand
