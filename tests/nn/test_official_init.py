"""Initialisation statistics pinned to the official code (docs/methods/trecvit.md, docs/methods/lram.md).

Each test builds a fresh layer and checks a statistic of its parameters against the official
initialiser: a standard deviation to within 10 %, or exact values where the official init is deterministic.
"""

import math

import pytest
import torch

from tenfold.nn.rglru import RGLRU


def _std_close(tensor: torch.Tensor, expected: float, rel: float = 0.10) -> None:
    std = tensor.detach().float().std().item()
    assert abs(std - expected) <= rel * expected, f"std {std:.4g}, expected {expected:.4g} (+-{rel:.0%})"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_rglru_gates_count_the_whole_width_as_fan_in():
    # recurrentgemma BlockDiagonalLinear: variance_scaling(1, fan_in) on a [heads, W/h, W/h] kernel -> 1/W
    layer = RGLRU(width=256, num_heads=8)
    for gate in (layer.input_gate, layer.a_gate):
        _std_close(gate.weight, 1.0 / math.sqrt(256))
        assert torch.all(gate.bias == 0)


def test_rglru_old_gate_init_is_an_option():
    layer = RGLRU(width=256, num_heads=8, w_init_variance_scale=8.0)  # fan-in = block width (32)
    _std_close(layer.a_gate.weight, 1.0 / math.sqrt(32))


def test_rglru_rejects_bad_gate_scale():
    with pytest.raises(ValueError, match="w_init_variance_scale"):
        RGLRU(width=8, num_heads=2, w_init_variance_scale=0.0)


# ---------------------------------------------------------------------------------------------- xLSTM (NX-AI)

from tenfold.nn.xlstm import MLSTMBlock, SLSTMBlock, XLSTMStack, powerlaw_forget_bias  # noqa: E402


def test_mlstm_qkv_small_init_uses_the_model_width():
    block = MLSTMBlock(dim=64, num_heads=4)
    expected = math.sqrt(2.0 / (5.0 * 64))  # 0.079; torch's default on the 4x4 blocks gave 0.29
    for proj in (block.q, block.k, block.v):
        _std_close(proj.weight, expected)
    _std_close(block.up.weight, expected)


def test_mlstm_conv_is_torch_conv1d_default():
    block = MLSTMBlock(dim=64, num_heads=4, conv_taps=4)
    bound = 1.0 / math.sqrt(4)  # U(-1/sqrt(taps), 1/sqrt(taps)) for weight and bias
    _std_close(block.conv.weight, bound / math.sqrt(3.0))
    _std_close(block.conv.bias, bound / math.sqrt(3.0))
    assert block.conv.weight.abs().max() <= bound and block.conv.bias.abs().max() <= bound


def test_mlstm_gates_as_official():
    block = MLSTMBlock(dim=64, num_heads=4)
    assert torch.all(block.gates.weight == 0)
    assert torch.allclose(block.gates.bias[4:], torch.linspace(3.0, 6.0, 4))


@pytest.mark.parametrize("dim, proj_factor, inner", [(64, 2.0, 128), (48, 2.0, 128), (16, 2.0, 64), (100, 1.3, 192)])
def test_mlstm_inner_width_rounds_up_to_64(dim, proj_factor, inner):
    assert MLSTMBlock(dim=dim, num_heads=4, proj_factor=proj_factor).inner == inner


def test_mlstm_inner_width_unrounded_option():
    assert MLSTMBlock(dim=48, num_heads=4, round_inner_to=1).inner == 96
    with pytest.raises(ValueError, match="round_inner_to"):
        MLSTMBlock(dim=48, num_heads=4, round_inner_to=0)


def test_slstm_gates_small_init_and_powerlaw_forget_bias():
    block = SLSTMBlock(dim=64, num_heads=4, num_blocks=4, block_idx=2)
    expected = math.sqrt(2.0 / (5.0 * 64))
    for gates in (block.gate_if, block.gate_zo):
        _std_close(gates.weight, expected)
    input_bias, forget_bias = block._per_gate(block.gate_if.bias)  # (dim,) each, in gate order
    assert torch.all(input_bias == 0) and torch.all(block.gate_zo.bias == 0)  # i, z, o: no bias
    forget = forget_bias.view(4, 16)  # (heads, head_dim): the same ramp in every head
    j = torch.arange(16) / 15
    assert torch.allclose(forget, (5.0 - 12.0 * j ** (0.3 + 1.3 * 2 / 3)).expand(4, 16), atol=1e-6)
    assert torch.all(block.cell.recurrent == 0)
    assert block.ffn_down.in_features == 128  # 1.3 * 64 = 83.2 rounded up to a multiple of 64


def test_powerlaw_forget_bias_endpoints_and_block_dependence():
    first, last = powerlaw_forget_bias(8, 0, 3), powerlaw_forget_bias(8, 2, 3)
    assert first[0] == 5.0 and torch.isclose(first[-1], torch.tensor(-7.0))
    assert torch.all(last[1:-1] > first[1:-1])  # a larger exponent: later blocks' gates stay more open
    assert powerlaw_forget_bias(1, 0, 1).tolist() == [5.0]


def test_stack_passes_block_index_to_slstm():
    stack = XLSTMStack(dim=16, num_blocks=3, num_heads=2, slstm_at=(0, 2))
    first, last = (stack.blocks[i]._per_gate(stack.blocks[i].gate_if.bias)[1] for i in (0, 2))  # forget gates
    assert torch.allclose(first, powerlaw_forget_bias(8, 0, 3).repeat(2))
    assert torch.allclose(last, powerlaw_forget_bias(8, 2, 3).repeat(2))


def test_slstm_rejects_bad_block_index():
    with pytest.raises(ValueError, match="block_idx"):
        SLSTMBlock(dim=16, num_heads=2, num_blocks=2, block_idx=2)


# ---------------------------------------------------------------------------------------------- LRAM (HF DT)

from tenfold.models.lram import LRAM, LRAMConfig  # noqa: E402


def test_lram_embeddings_and_head_are_normal_002():
    model = LRAM(LRAMConfig(dim=256, actions_in_context=True))
    for linear in (model.state_embed, model.head):
        _std_close(linear.weight, 0.02)
    _std_close(model.action_embed.weight[:-1], 0.02)
    assert torch.all(model.action_embed.weight[-1] == 0)  # the padding id
    assert torch.all(model.head.bias == 0)
    _std_close(model.embed_norm.bias, 0.02, rel=0.25)  # embed_bias_init="normal" (256 values)
    assert torch.all(model.embed_norm.weight == 1)


def test_lram_torch_init_option_and_bad_value():
    model = LRAM(LRAMConfig(dim=64, init="torch"))
    _std_close(model.state_embed.weight, 1.0 / math.sqrt(39) / math.sqrt(3.0))  # torch Linear default
    with pytest.raises(ValueError, match="init"):
        LRAMConfig(init="gpt")


def test_slstm_gates_of_a_head_see_only_that_heads_inputs():
    """NX-AI's sLSTM projects each gate head-wise: changing head 0's inputs leaves the other heads'
    gate pre-activations unchanged."""
    torch.manual_seed(0)
    block = SLSTMBlock(dim=16, num_heads=4)
    x = torch.randn(1, 16)
    changed = x.clone()
    changed[:, :4] += 1.0  # head 0's inputs only
    for gates in (block.gate_if, block.gate_zo):
        before, after = block._per_gate(gates(x)), block._per_gate(gates(changed))  # (1, 2, 16)
        assert not torch.allclose(before[..., :4], after[..., :4])
        assert torch.equal(before[..., 4:], after[..., 4:])
