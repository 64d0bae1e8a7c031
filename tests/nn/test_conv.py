"""The causal depthwise temporal convolution (shared by the Griffin/TRecViT and xLSTM blocks)."""

import pytest
import torch

from tenfold.nn.conv import CausalConv1D
from tenfold.nn.rglru import CausalConv1D as RGLRUConv


def test_conv_taps_causality_and_step():
    torch.manual_seed(0)
    conv = CausalConv1D(width=3, taps=4).double()
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    y, _ = conv(x)
    t = 5
    expected = conv.bias + sum(conv.weight[3 - k] * x[:, t - k] for k in range(4))  # row 3-k times x_{t-k}
    assert torch.allclose(y[:, t], expected)
    assert torch.allclose(y[:, 1], conv.bias + conv.weight[3] * x[:, 1] + conv.weight[2] * x[:, 0])
    x2 = x.clone()
    x2[:, 6:] += 1.0
    assert torch.equal(conv(x2)[0][:, :6], y[:, :6])
    state, steps = None, []
    for t in range(8):
        y_t, state = conv.step(x[:, t], state)
        steps.append(y_t)
    assert torch.allclose(torch.stack(steps, 1), y)
    assert state.shape == (2, 3, 3)
    assert abs(float(CausalConv1D(width=4096).weight.detach().std()) - 0.05) < 0.005


def test_one_shared_class():
    assert RGLRUConv is CausalConv1D


def test_bad_width_and_state_shapes_are_refused():
    conv = CausalConv1D(width=3, taps=4)
    with pytest.raises(ValueError, match="x must be shaped"):
        conv(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="x_t must be shaped"):
        conv.step(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="conv state"):
        conv.step(torch.randn(2, 3), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="width and taps"):
        CausalConv1D(width=0)
