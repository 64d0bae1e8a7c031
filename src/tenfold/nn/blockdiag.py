"""The block-diagonal linear map, shared by the structured feed-forward layers (BlockDense,
BlockShuffle; Wei et al., 2024), by TRecViT's RG-LRU gates and by xLSTM's q/k/v projections.

    x = concat(x_1, ..., x_B)            x_k has in_features / blocks entries
    y = concat(W_1 x_1, ..., W_B x_B) + b   W_k is (out_features / blocks, in_features / blocks)

i.e. y = blockdiag(W_1, ..., W_B) x + b, with B times fewer parameters and multiply-adds than a dense
``nn.Linear(in_features, out_features)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def block_diagonal_matmul(x_blocks: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Apply ``weight`` (blocks, out_b, in_b) block by block to ``x_blocks`` (..., blocks, in_b).

    Returns (..., blocks, out_b): ``y[..., k, :] = weight[k] @ x_blocks[..., k, :]``.
    """
    blocks, out_b, in_b = weight.shape
    if x_blocks.shape[-2:] != (blocks, in_b):
        raise ValueError(f"expected input shaped (..., {blocks}, {in_b}), got {tuple(x_blocks.shape)}")
    lead = x_blocks.shape[:-2]
    flat = x_blocks.reshape(-1, blocks, in_b).transpose(0, 1)  # (blocks, tokens, in_b)
    out = torch.bmm(flat, weight.transpose(1, 2))  # (blocks, tokens, out_b)
    return out.transpose(0, 1).reshape(*lead, blocks, out_b)  # (..., blocks, out_b)


def block_diagonal_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The functional form of :class:`BlockDiagonalLinear`: x (..., in) -> (..., out) for ``weight``
    (blocks, out/blocks, in/blocks) and ``bias`` (out,) or None."""
    blocks, out_b, in_b = weight.shape
    x_blocks = x.reshape(*x.shape[:-1], blocks, in_b)  # (..., B, in/B)
    y = block_diagonal_matmul(x_blocks, weight).reshape(*x.shape[:-1], blocks * out_b)  # (..., out)
    return y if bias is None else y + bias


def block_diagonal_linear_backward(x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor,
                                   needs: tuple[bool, bool, bool]):
    """Gradients (dx, dweight, dbias) of :func:`block_diagonal_linear` at ``x`` for upstream ``dy``
    (..., out); None where ``needs`` (for x, weight, bias) is False. For hand-written backwards that
    recompute the layer instead of saving its autograd graph."""
    blocks, out_b, in_b = weight.shape
    dx = dw = db = None
    dy_blocks = dy.reshape(-1, blocks, out_b)  # (tokens, B, out/B)
    if needs[0]:
        dx = block_diagonal_matmul(dy_blocks, weight.transpose(1, 2)).reshape(x.shape)  # (..., in)
    if needs[1]:
        x_blocks = x.reshape(-1, blocks, in_b).transpose(0, 1)  # (B, tokens, in/B)
        dw = torch.bmm(dy_blocks.transpose(0, 1).transpose(1, 2), x_blocks)  # (B, out/B, in/B)
    if needs[2]:
        db = dy.reshape(-1, dy.shape[-1]).sum(0)  # (out,)
    return dx, dw, db


def small_block_diagonal_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                few_tokens: int = 64) -> torch.Tensor:
    """:func:`block_diagonal_linear` for many tiny blocks (xLSTM's 4 x 4 q/k/v blocks), computed the fast
    way on CPU, where a batched product of many tiny blocks is slow: for at most ``few_tokens`` rows
    (recurrent steps) a broadcast multiply-and-sum over the block inputs; for more, one matmul with the
    dense block-diagonal matrix. x (..., in) -> (..., out); ``weight`` (*stack, blocks, out/blocks,
    in/blocks), where leading ``stack`` dims (several layers' weights stacked) broadcast against x's
    trailing batch dims, e.g. x (batch, 3, in) with weight (3, blocks, out_b, in_b) gives (batch, 3, out)."""
    blocks, out_b, in_b = weight.shape[-3:]
    if x.numel() // x.shape[-1] <= few_tokens:
        x_blocks = x.unflatten(-1, (blocks, in_b)).unsqueeze(-2)  # (..., blocks, 1, in_b)
        y = (x_blocks * weight).sum(-1).flatten(-2)  # (..., blocks, out_b) -> (..., out)
    else:
        eye = torch.eye(blocks, dtype=x.dtype, device=x.device)
        dense = (weight.unsqueeze(-2) * eye[:, None, :, None]).flatten(-4, -3).flatten(-2)  # (*stack, out, in)
        y = F.linear(x, dense) if weight.dim() == 3 else (x.unsqueeze(-2) @ dense.transpose(-1, -2)).squeeze(-2)
    return y if bias is None else y + bias


class BlockDiagonalLinear(nn.Module):
    """y = blockdiag(W_1, ..., W_B) x + b (a linear layer whose weight is block-diagonal).

    Args:
        in_features, out_features: widths; both must be divisible by ``blocks``.
        blocks: number of diagonal blocks B (B = 1 is a dense linear layer).
        bias: add a learned bias of size ``out_features`` after the product.

    ``weight`` is shaped (B, out_features / B, in_features / B); it is initialised like
    ``nn.Linear`` (uniform in ±1/sqrt(fan_in) with fan_in = in_features / B).
    """

    def __init__(self, in_features: int, out_features: int, blocks: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features), ("blocks", blocks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if in_features % blocks or out_features % blocks:
            raise ValueError(f"blocks ({blocks}) must divide in_features ({in_features}) and "
                             f"out_features ({out_features})")
        self.in_features, self.out_features, self.blocks = in_features, out_features, blocks
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(blocks, out_features // blocks, in_features // blocks, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features // self.blocks)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def blocked(self, x_blocks: torch.Tensor) -> torch.Tensor:
        """(..., B, in/B) -> (..., B, out/B), without the bias."""
        return block_diagonal_matmul(x_blocks, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected input shaped (..., {self.in_features}), got {tuple(x.shape)}")
        return block_diagonal_linear(x, self.weight, self.bias)

    def to_dense(self) -> torch.Tensor:
        """The full (out_features, in_features) weight matrix."""
        return torch.block_diag(*self.weight.unbind(0))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, blocks={self.blocks}, "
                f"bias={self.bias is not None}")
