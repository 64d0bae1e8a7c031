import pytest
import torch

from tenfold.nn.blockdiag import (BlockDiagonalLinear, block_diagonal_linear, block_diagonal_linear_backward,
                                 block_diagonal_matmul, small_block_diagonal_linear)


@pytest.mark.parametrize("in_f,out_f,blocks", [(8, 12, 4), (12, 8, 2), (6, 6, 1), (16, 16, 16)])
def test_forward_equals_dense_block_diagonal_matrix(in_f, out_f, blocks):
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(in_f, out_f, blocks)
    x = torch.randn(3, 5, in_f)
    dense = layer.to_dense()
    assert dense.shape == (out_f, in_f)
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias, atol=1e-6, rtol=1e-5)


def test_off_diagonal_blocks_are_zero_and_block_k_sees_only_chunk_k():
    layer = BlockDiagonalLinear(6, 4, 2, bias=False)
    dense = layer.to_dense()
    assert torch.all(dense[:2, 3:] == 0) and torch.all(dense[2:, :3] == 0)
    x = torch.zeros(1, 6)
    x[0, 4] = 1.0  # only chunk 1 is non-zero
    y = layer(x)
    assert torch.all(y[0, :2] == 0) and torch.any(y[0, 2:] != 0)


def test_matmul_hand_computed():
    weight = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]]])  # (blocks=2, out_b=1, in_b=2)
    x = torch.tensor([[[1.0, 1.0], [2.0, 5.0]]])  # (1, blocks, in_b)
    assert block_diagonal_matmul(x, weight).tolist() == [[[3.0], [1.0]]]


def test_parameter_count_is_a_blocks_fraction_of_dense():
    layer = BlockDiagonalLinear(64, 128, 4, bias=True)
    assert sum(p.numel() for p in layer.parameters()) == 64 * 128 // 4 + 128


@pytest.mark.parametrize("kwargs,name", [
    ({"in_features": 10, "out_features": 8, "blocks": 4}, "blocks"),
    ({"in_features": 8, "out_features": 10, "blocks": 4}, "blocks"),
    ({"in_features": 0, "out_features": 8, "blocks": 1}, "in_features"),
    ({"in_features": 8, "out_features": 8, "blocks": 0}, "blocks"),
])
def test_bad_shapes_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BlockDiagonalLinear(**kwargs)


def test_wrong_input_width_raises():
    with pytest.raises(ValueError, match="expected input"):
        BlockDiagonalLinear(8, 8, 2)(torch.randn(2, 6))


def test_gradients_reach_every_block():
    layer = BlockDiagonalLinear(8, 8, 4)
    layer(torch.randn(5, 8)).square().sum().backward()
    assert layer.weight.grad.abs().sum(dim=(1, 2)).gt(0).all()


def test_functional_form_and_its_backward_match_the_layer_and_autograd():
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(12, 8, 4).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    y = block_diagonal_linear(x, layer.weight, layer.bias)
    assert torch.equal(y, layer(x))
    dy = torch.randn_like(y)
    dx, dw, db = torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)
    got = block_diagonal_linear_backward(x.detach(), layer.weight.detach(), dy, (True, True, True))
    for expected, actual in zip((dx, dw, db), got):
        assert torch.allclose(expected, actual)
    assert block_diagonal_linear_backward(x.detach(), layer.weight.detach(), dy, (False, True, False))[::2] == (None, None)


@pytest.mark.parametrize("tokens", [1, 3, 64, 65, 200])
@pytest.mark.parametrize("bias", [False, True])
def test_small_block_path_equals_the_layer_for_steps_and_sequences(tokens, bias):
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(32, 32, 8, bias=bias)
    x = torch.randn(tokens, 32)
    torch.testing.assert_close(small_block_diagonal_linear(x, layer.weight, layer.bias), layer(x),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 40])
def test_small_block_path_with_stacked_weights_applies_each_layer(batch):
    torch.manual_seed(0)
    layers = [BlockDiagonalLinear(16, 16, 4, bias=False) for _ in range(3)]
    x = torch.randn(batch, 3, 16)
    stacked = torch.stack([layer.weight for layer in layers])  # (3, blocks, out_b, in_b)
    y = small_block_diagonal_linear(x, stacked)
    assert y.shape == (batch, 3, 16)
    for i, layer in enumerate(layers):
        torch.testing.assert_close(y[:, i], layer(x[:, i]), atol=1e-6, rtol=1e-5)
