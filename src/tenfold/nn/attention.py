"""Multi-head self-attention shared by every transformer in tenfold, with a rotary-embedding hook,
softmax choices and a (growing or sliding-window) KV cache.

    q, k, v = x W_q, x W_k, x W_v              split into heads: (batch, heads, seq, head_dim)
    q, k    = rope(q, positions), rope(k, positions)          when a rotary embedding is given
    A       = softmax_kind(q k^T / sqrt(head_dim) + mask)     "softmax" | "adaptive" | "log-n"
    y       = (A v) W_o

Plain softmax without recorded weights runs through ``scaled_dot_product_attention``; the other
softmax kinds come from ``tenfold.nn.adaptive_temperature`` (Veličković et al., 2024), densely, or for
long key sequences (``two_pass_min_keys``) in two passes that never form the full weight matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SOFTMAX_KINDS = ("softmax", "adaptive", "log-n")


class KVCache:
    """Keys and values of earlier positions, shaped (batch, heads, seq, head_dim), with their positions.

    ``window=None`` grows without bound; ``window=W`` keeps the last W positions (sliding window).
    Keys are stored after the rotary embedding, so cached keys are never rotated twice.
    """

    def __init__(self, window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.window = window
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None  # (seq,) absolute positions of the cached keys
        self._last_position: torch.Tensor | None = None  # 0-dim, on the device
        self._next_position: int | None = 0

    @property
    def next_position(self) -> int:
        """The position after the last appended one. A caller that knows it on the host sets it after
        appending; otherwise it is read from the device when first asked (one synchronisation, not one
        per ``append``)."""
        if self._next_position is None:
            self._next_position = int(self._last_position) + 1
        return self._next_position

    @next_position.setter
    def next_position(self, value: int) -> None:
        self._next_position = int(value)

    def _appended(self, positions: torch.Tensor) -> None:
        """Remember the last appended position on the device; its host value is derived on demand."""
        self._last_position, self._next_position = positions[-1], None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Add new keys/values; return all keys, values and key positions the new queries may see."""
        if self.k is None:
            self.k, self.v, self.positions = k, v, positions
        else:
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
            self.positions = torch.cat([self.positions, positions])
        keys, values, key_positions = self.k, self.v, self.positions
        if self.window is not None and len(self) > self.window:
            # keep what the next query can see; this call still gets every key it may attend to
            self.k, self.v = self.k[..., -self.window:, :], self.v[..., -self.window:, :]
            self.positions = self.positions[-self.window:]
        self._appended(positions)
        return keys, values, key_positions

    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes


def continue_positions(caches: Sequence[KVCache] | None, seq: int,
                       device: torch.device) -> tuple[torch.Tensor, int]:
    """The (seq,) positions that continue what ``caches`` (one per layer) hold, 0, 1, ... without
    caches, and the last of them as a Python int: known on the host, so no device read-back."""
    start = caches[0].next_position if caches else 0
    return torch.arange(start, start + seq, device=device), start + seq - 1


def tell_next_position(caches: Sequence[KVCache] | None, last: int | None) -> None:
    """After a forward over positions ending at ``last`` (known on the host), tell every cache the
    next position, so that none derives it from the device; ``last=None`` leaves them to derive it."""
    if caches and last is not None:
        for cache in caches:
            cache.next_position = last + 1


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al., 2017) with optional rotary embedding, KV cache and
    grouped-query attention (Ainslie et al., 2023).

    Args:
        dim: model width. num_heads: number of query heads; ``head_dim`` defaults to ``dim // num_heads``
            (then ``num_heads`` must divide ``dim``).
        num_kv_heads: key/value heads (grouped-query attention), dividing ``num_heads``; query head h reads
            key/value head ``h // (num_heads // num_kv_heads)``. Default ``num_heads`` (multi-head attention).
        rope: a module applied as ``rope(x, positions)`` to queries and keys shaped
            (batch, heads, seq, head_dim), e.g. ``tenfold.nn.RotaryEmbedding``; None for no rotation.
        softmax: ``"softmax"``, ``"adaptive"`` (adaptive temperature) or ``"log-n"`` (log-length scaling).
        causal: mask future positions. window: local attention over the last ``window`` keys.
        bias: biases on the projections.

    The input projection ``qkv`` outputs [q | k | v] with num_heads, num_kv_heads and num_kv_heads heads
    (3 * num_heads * head_dim features without grouping). A KV cache stores the num_kv_heads heads.
    Set ``record = True`` to keep the last call's queries, keys (before rotation) and attention
    weights in ``self.recorded`` for analysis.
    """

    def __init__(self, *, dim: int, num_heads: int, head_dim: int | None = None, num_kv_heads: int | None = None,
                 rope: nn.Module | None = None, softmax: str = "softmax", causal: bool = True,
                 window: int | None = None, bias: bool = False):
        super().__init__()
        if dim < 1 or num_heads < 1:
            raise ValueError(f"dim and num_heads must be >= 1, got dim={dim}, num_heads={num_heads}")
        if head_dim is None and dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim}), or give head_dim explicitly")
        head_dim = head_dim if head_dim is not None else dim // num_heads
        if head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads must be >= 1 and divide num_heads ({num_heads}), got {num_kv_heads}")
        if softmax not in SOFTMAX_KINDS:
            raise ValueError(f"softmax must be one of {SOFTMAX_KINDS}, got {softmax!r}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.dim, self.num_heads, self.head_dim, self.num_kv_heads = dim, num_heads, head_dim, num_kv_heads
        self.rope, self.softmax, self.causal, self.window = rope, softmax, causal, window
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * head_dim, bias=bias)
        self.out = nn.Linear(num_heads * head_dim, dim, bias=bias)
        self.record = False
        self.recorded: dict[str, torch.Tensor] = {}
        # "adaptive"/"log-n" with at least this many keys (and record off) run in two passes: streaming
        # row entropy over key chunks of ``two_pass_chunk``, then SDPA on beta-scaled queries (same result)
        self.two_pass_min_keys, self.two_pass_chunk = 4096, 1024

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, seq, dim) floating point; positions: (seq,) or (batch, seq) ints, default continuing
        the cache; attn_mask: bool, broadcastable to (batch, heads, seq, keys), True where attention is allowed."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x shaped (batch, seq, {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor (embeddings), got dtype {x.dtype}")
        batch, seq, _ = x.shape
        start = None
        if positions is None:
            start = cache.next_position if cache is not None else 0
            positions = torch.arange(start, start + seq, device=x.device)
        q, k, v = self._split_heads(self.qkv(x))  # (batch, heads or kv heads, seq, head_dim)
        if self.record:
            self.recorded = {"q": q.detach(), "k": k.detach()}
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        key_positions = positions
        if cache is not None:
            if positions.dim() != 1:
                raise ValueError("a KV cache needs positions shaped (seq,), shared by the batch")
            k, v, key_positions = cache.append(k, v, positions)
            if start is not None:
                cache.next_position = start + seq  # known on the host: no device read
        mask = self._mask(positions, key_positions, attn_mask, x.device)
        y = self._attend(q, k, v, mask)  # (batch, heads, seq, head_dim)
        return self.out(y.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))

    def _split_heads(self, qkv: torch.Tensor):
        """(batch, seq, (heads + 2 kv_heads) * head_dim) -> q (batch, heads, seq, head_dim), k and v
        (batch, kv_heads, seq, head_dim)."""
        batch, seq, _ = qkv.shape
        if self.num_kv_heads == self.num_heads:
            return qkv.view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, b, h, s, d)
        sizes = (self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim)
        q, k, v = qkv.split(sizes, dim=-1)
        heads = lambda t: t.unflatten(-1, (-1, self.head_dim)).transpose(1, 2)  # (b, s, h*d) -> (b, h, s, d)
        return heads(q), heads(k), heads(v)

    def _mask(self, q_pos, k_pos, attn_mask, device) -> torch.Tensor | None:
        """Bool mask broadcastable to (batch, heads, seq, keys), True where attention is allowed."""
        mask = None
        if self.causal or self.window is not None:
            offset = k_pos.unsqueeze(-2) - q_pos.unsqueeze(-1)  # (..., seq, keys): key minus query position
            mask = offset <= 0 if self.causal else torch.ones_like(offset, dtype=torch.bool)
            if self.window is not None:
                mask = mask & (offset > -self.window)
            if mask.dim() == 3:  # per-batch positions: (batch, seq, keys) -> (batch, 1, seq, keys)
                mask = mask.unsqueeze(1)
        if attn_mask is not None:
            attn_mask = attn_mask.to(device=device, dtype=torch.bool)
            while attn_mask.dim() < 2:  # e.g. a (keys,) padding mask: (keys,) -> (1, keys), as SDPA needs
                attn_mask = attn_mask.unsqueeze(0)
            mask = attn_mask if mask is None else mask & attn_mask
        return mask

    def _attend(self, q, k, v, mask) -> torch.Tensor:
        grouped = self.num_kv_heads != self.num_heads
        if self.softmax == "softmax" and not self.record:
            if grouped:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if grouped:  # each key/value head serves num_heads // num_kv_heads consecutive query heads
            group = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (b, heads, keys, d)
        if not self.record and k.shape[-2] >= self.two_pass_min_keys:
            from tenfold.nn.adaptive_temperature import two_pass_attention

            return two_pass_attention(q, k, v, kind=self.softmax, attn_mask=mask, scale=1 / math.sqrt(self.head_dim),
                                      chunk_size=self.two_pass_chunk)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (batch, heads, seq, keys)
        weights = attention_weights(scores, self.softmax, mask)
        if self.record:
            self.recorded["weights"] = weights.detach()
        return weights @ v


def attention_weights(scores: torch.Tensor, kind: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise attention ``scores`` over the last dim with softmax ``kind``; masked entries get 0
    and a fully masked row gives all zeros, never NaN."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = _softmax_fn(kind)(scores.float()).to(scores.dtype)
    return torch.nan_to_num(weights, nan=0.0) if mask is not None else weights


def _softmax_fn(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "softmax":
        return lambda s: torch.softmax(s, dim=-1)
    if kind not in SOFTMAX_KINDS:
        raise ValueError(f"softmax must be one of {SOFTMAX_KINDS}, got {kind!r}")
    from tenfold.nn import adaptive_temperature  # the adaptive-temperature paper's module

    return adaptive_temperature.SOFTMAX_FUNCTIONS[kind]
