"""The causal depthwise temporal convolution shared by Griffin's recurrent block (De et al., 2024, as
TRecViT uses it over time) and xLSTM's blocks (Beck et al., 2024):

    y_t = sum_{k=0}^{taps-1} w[taps-1-k] * x_{t-k} + bias          (per channel, zero left padding)

with a recurrent one-step form that carries the last taps-1 inputs as its state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CausalConv1D(nn.Module):
    """Causal depthwise convolution over time: y_t = sum_k w[taps-1-k] * x_{t-k} + bias (zero left padding).

    ``weight`` is (taps, W) in recurrentgemma's layout: row taps-1-k multiplies x_{t-k}. The state is
    the last taps-1 inputs, (batch, taps-1, W).
    """

    def __init__(self, *, width: int, taps: int = 4, init_variance_scale: float = 0.01):
        super().__init__()
        if width < 1 or taps < 1:
            raise ValueError(f"width and taps must be >= 1, got width={width}, taps={taps}")
        self.width, self.taps = width, taps
        self.weight = nn.Parameter(torch.empty(taps, width))
        self.bias = nn.Parameter(torch.zeros(width))
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(init_variance_scale / taps))  # fan_in = taps

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch, self.taps - 1, self.width, device=device, dtype=dtype)

    def _checked_state(self, state: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """``state`` (or a fresh zero state) for input ``x`` of ``x.shape[0]`` rows, in x's dtype."""
        batch = x.shape[0]
        if state is None:
            return self.initial_state(batch, x.device, x.dtype)
        if state.shape != (batch, self.taps - 1, self.width):
            raise ValueError(f"conv state must be shaped ({batch}, {self.taps - 1}, {self.width}), "
                             f"got {tuple(state.shape)}")
        return state.to(x.dtype)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_width(x, self.width, "x", 3)
        batch, steps, _ = x.shape
        padded = torch.cat([self._checked_state(state, x), x], dim=1)  # (batch, taps-1+T, W)
        y = self.bias.expand(batch, steps, self.width)
        for j in range(self.taps):
            y = y + self.weight[j] * padded[:, j:j + steps]
        return y, padded[:, steps:]  # new state: the last taps-1 inputs

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step, as ``forward`` on a length-1 sequence (:func:`causal_conv_step`)."""
        _check_width(x_t, self.width, "x_t", 2)
        return causal_conv_step(x_t, self._checked_state(state, x_t), self.weight, self.bias)


def causal_conv_step(x_t: torch.Tensor, state: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of :class:`CausalConv1D` as a function, in four tensor ops (a step costs per-op overhead):
    x_t (batch, W), state (batch, taps-1, W), weight (taps, W), bias (W) -> y_t (batch, W) and the new
    state (batch, taps-1, W), a view of the window. Unchecked: the caller checks shapes."""
    window = torch.cat([state, x_t.unsqueeze(1)], dim=1)  # (batch, taps, W)
    return (window * weight).sum(1).add_(bias), window[:, 1:]


def _check_width(x: torch.Tensor, width: int, name: str, ndim: int) -> None:
    if x.dim() != ndim or x.shape[-1] != width:
        shape = "(batch, T, {})" if ndim == 3 else "(batch, {})"
        raise ValueError(f"{name} must be shaped {shape.format(width)}, got {tuple(x.shape)}")
