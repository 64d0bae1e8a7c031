"""Sequence backbones for decision models (Decision Transformer, Algorithm Distillation, LRAM, RA-DT):
a GPT-2-style causal Transformer over embeddings with a KV cache, and the xLSTM stack, behind one
interface so an action model can swap them.

    backbone.forward(x, state=None) -> (y, state)     x: (batch, seq, dim) embeddings
    backbone.step(x_t, state)       -> (y_t, state)   one token, constant cost for xLSTM, O(context) for the Transformer

For the Transformer the state is the per-layer KV caches (growing, or a sliding window of ``window``
tokens); for xLSTM it is the per-block recurrent state.
"""

from __future__ import annotations

import torch
from torch import nn

from tenfold.models.gpt import Block, GPTConfig, make_norm, position_embedding
from tenfold.nn.attention import KVCache, continue_positions, tell_next_position
from tenfold.nn.xlstm import XLSTMStack


class PreallocatedKVCache(KVCache):
    """A growing KV cache that writes into a buffer doubled when full, instead of concatenating
    (O(1) amortised per token rather than a copy of the whole cache each step)."""

    def append(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        if self.window is not None:
            return super().append(k, v, positions)
        new = k.shape[-2]
        used = 0 if self.k is None else self._length
        if self.k is None or used + new > self._k_buffer.shape[-2]:
            self._grow(k, v, max(2 * (used + new), 16))
        self._k_buffer[..., used:used + new, :] = k
        self._v_buffer[..., used:used + new, :] = v
        self._pos_buffer[used:used + new] = positions
        self._length = used + new
        self.k, self.v = self._k_buffer[..., :self._length, :], self._v_buffer[..., :self._length, :]
        self.positions = self._pos_buffer[:self._length]
        self._appended(positions)
        return self.k, self.v, self.positions

    def _grow(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
        batch, heads, _, head_dim = k.shape
        k_buffer = k.new_zeros(batch, heads, capacity, head_dim)
        v_buffer = v.new_zeros(batch, heads, capacity, v.shape[-1])
        pos_buffer = torch.zeros(capacity, dtype=torch.long, device=k.device)
        if self.k is not None:
            k_buffer[..., :self._length, :] = self.k
            v_buffer[..., :self._length, :] = self.v
            pos_buffer[:self._length] = self.positions
        self._k_buffer, self._v_buffer, self._pos_buffer = k_buffer, v_buffer, pos_buffer

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def fill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Start the cache with ``k``, ``v`` (batch, heads, seq, head_dim) at positions 0..seq-1
        (used to time a step at a given context length without running the prefix)."""
        self.k = self.v = None
        self.append(k, v, torch.arange(k.shape[-2], device=k.device))


class CausalTransformer(nn.Module):
    """GPT-2-style pre-norm causal Transformer over embeddings (the Decision Transformer backbone,
    Chen et al., 2021), with learned absolute positions over token positions and a KV cache.

    ``window`` (tokens) makes ``new_state`` return sliding-window caches; positions keep counting.
    """

    def __init__(self, *, dim: int, num_layers: int, num_heads: int, max_positions: int = 1024,
                 pos_embedding: str = "learned", ffn_mult: float = 4.0, window: int | None = None):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=1, dim=dim, num_layers=num_layers, num_heads=num_heads,
                             ffn_mult=ffn_mult, max_seq_len=max_positions, pos_embedding=pos_embedding)
        self.dim, self.window = dim, window
        self.pos = nn.Embedding(max_positions, dim) if pos_embedding == "learned" else None
        self.blocks = nn.ModuleList(Block(self.cfg, i) for i in range(num_layers))
        self.norm = make_norm(self.cfg.norm, dim)

    def new_state(self) -> list[KVCache]:
        return [KVCache(self.window) if self.window else PreallocatedKVCache() for _ in self.blocks]

    def forward(self, x: torch.Tensor, state: list[KVCache] | None = None, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None):
        """x: (batch, seq, dim) -> (y, caches). ``positions`` (seq,) or (batch, seq) default to
        continuing from what the caches hold (0, 1, ... without caches); ``attn_mask`` (bool,
        broadcastable to (batch, heads, seq, keys), True where allowed) is combined with causality,
        e.g. to mask the padding of left-padded contexts."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x shaped (batch, seq, {self.dim}), got {tuple(x.shape)}")
        last = None
        if positions is None:
            positions, last = continue_positions(state, x.shape[1], x.device)
        return self._run(x, state, positions, last, attn_mask)

    def _run(self, x: torch.Tensor, state: list[KVCache] | None, positions: torch.Tensor, last: int | None,
             attn_mask: torch.Tensor | None = None):
        """``forward`` with ``last``, the last and highest of ``positions`` when the caller knows it on
        the host (None: read from the device where needed)."""
        if self.pos is not None:
            x = x + position_embedding(self.pos, positions, last, "max_positions",
                                       "; use a sliding window or a larger max_positions")
        for i, block in enumerate(self.blocks):
            x = block(x, positions, state[i] if state else None, attn_mask)
        tell_next_position(state, last)
        return self.norm(x), state

    def step(self, x_t: torch.Tensor, state: list[KVCache] | None = None, position: int | None = None):
        """x_t: (batch, dim) -> (y_t, caches); ``position`` defaults to the next one."""
        state = state if state is not None else self.new_state()
        if position is None:
            y, state = self(x_t.unsqueeze(1), state)
        else:  # a kernel, not a host-to-device copy of a Python list (which would wait for the device)
            positions = torch.arange(position, position + 1, device=x_t.device)
            y, state = self._run(x_t.unsqueeze(1), state, positions, position)
        return y[:, 0], state


def make_backbone(kind: str, *, dim: int, num_layers: int, num_heads: int, max_positions: int = 1024,
                  window: int | None = None, slstm_at: tuple[int, ...] = ()) -> nn.Module:
    """``"transformer"`` -> :class:`CausalTransformer`; ``"xlstm"`` -> ``XLSTMStack`` (mLSTM blocks,
    sLSTM at ``slstm_at``). Both give ``forward(x, state) -> (y, state)`` and ``step``."""
    if kind == "transformer":
        return CausalTransformer(dim=dim, num_layers=num_layers, num_heads=num_heads,
                                 max_positions=max_positions, window=window)
    if kind == "xlstm":
        return XLSTMStack(dim=dim, num_blocks=num_layers, num_heads=num_heads, slstm_at=slstm_at)
    raise ValueError(f"backbone kind must be 'transformer' or 'xlstm', got {kind!r}")


def new_backbone_state(backbone: nn.Module):
    """The empty state of either backbone (None means 'fresh' for xLSTM)."""
    return backbone.new_state() if isinstance(backbone, CausalTransformer) else None
