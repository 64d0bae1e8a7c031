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
