"""A small GPT (nanoGPT-style, pre-norm) built from ``tenfold.nn.Attention``, with pluggable
feed-forward layers (dense by default; structured FFNs plug in through ``ffn``), optional rotary
embeddings and KV-cached decoding.

    h_0 = E[tokens] (+ P[positions] when pos_embedding="learned")
    h   = h + Attn(Norm(h));  h = h + FFN(Norm(h))      for each layer
    logits = Norm(h) E^T                                 (tied embeddings)

FFN(x) = W_2 GELU(W_1 x), or with ``ffn_act="swiglu"`` W_2 (SiLU(W_1 x) ⊙ W_3 x) (Shazeer, 2020), W_1
and W_3 stacked as one d → 2f linear as in the official StructuredFFN code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.nn.attention import Attention, KVCache, continue_positions, tell_next_position
from tenfold.nn.structured import FFN_ACTS, ffn_activation

FFNFactory = Callable[[int, int, int], nn.Module]  # (dim, hidden, layer_index) -> module


@dataclass
class GPTConfig:
    vocab_size: int
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    ffn_mult: float = 4.0
    max_seq_len: int = 256  # for learned positions
    pos_embedding: str = "learned"  # "learned" | "none" (use a rotary embedding instead, or NoPE)
    softmax: str = "softmax"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    bias: bool = False
    tie_embeddings: bool = True
    ffn_act: str = "gelu"  # "gelu" | "swiglu"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "num_layers", "num_heads", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.pos_embedding not in ("learned", "none"):
            raise ValueError(f"pos_embedding must be 'learned' or 'none', got {self.pos_embedding!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.ffn_act not in FFN_ACTS:
            raise ValueError(f"ffn_act must be one of {FFN_ACTS}, got {self.ffn_act!r}")

    @property
    def hidden(self) -> int:
        return int(round(self.ffn_mult * self.dim))


def make_norm(kind: str, dim: int, bias: bool = False) -> nn.Module:
    return nn.LayerNorm(dim, bias=bias) if kind == "layernorm" else nn.RMSNorm(dim)


class MLP(nn.Module):
    """The dense feed-forward layer: W_2 GELU(W_1 x), or W_2 SwiGLU(W_1 x) with W_1 (2·hidden, dim)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, act: str = "gelu"):
        super().__init__()
        self.activation = ffn_activation(act)
        self.up = nn.Linear(dim, hidden * (2 if act == "swiglu" else 1), bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(Norm(x)), then x + FFN(Norm(x))."""

    def __init__(self, cfg: GPTConfig, layer_index: int, rope: nn.Module | None = None,
                 ffn: FFNFactory | None = None, causal: bool = True):
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.dim, cfg.bias)
        self.attn = Attention(dim=cfg.dim, num_heads=cfg.num_heads, rope=rope, softmax=cfg.softmax,
                              causal=causal, bias=cfg.bias)
        self.norm2 = make_norm(cfg.norm, cfg.dim, cfg.bias)
        if ffn is not None and getattr(ffn, "act", cfg.ffn_act) != cfg.ffn_act:
            raise ValueError(f"the ffn factory's act ({ffn.act!r}) differs from ffn_act ({cfg.ffn_act!r})")
        self.ffn = (ffn(cfg.dim, cfg.hidden, layer_index) if ffn is not None
                    else MLP(cfg.dim, cfg.hidden, cfg.bias, cfg.ffn_act))

    def forward(self, x, positions=None, cache: KVCache | None = None, attn_mask=None):
        x = x + self.attn(self.norm1(x), positions, cache, attn_mask)
        return x + self.ffn(self.norm2(x))


def position_embedding(table: nn.Embedding, positions: torch.Tensor, last: int | None, size_name: str,
                       hint: str = "") -> torch.Tensor:
    """``table(positions)``, a learned absolute position embedding, after checking that the highest
    position fits the table (``last``: the highest when the caller knows it on the host; None reads it
    from the device). ``size_name`` and ``hint`` word the error."""
    highest = int(positions.max()) if last is None else last
    if highest >= table.num_embeddings:
        raise ValueError(f"position {highest} exceeds {size_name}={table.num_embeddings}{hint}")
    return table(positions)


class GPT(nn.Module):
    """Decoder-only transformer language model (Radford et al., 2019; nanoGPT layout).

    ``rope`` (one module shared by all layers) rotates queries and keys; ``ffn`` builds each layer's
    feed-forward module from ``(dim, hidden, layer_index)``.
    """

    def __init__(self, cfg: GPTConfig, rope: nn.Module | None = None, ffn: FFNFactory | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.pos_embedding == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, i, rope, ffn) for i in range(cfg.num_layers))
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.bias)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                caches: list[KVCache] | None = None) -> torch.Tensor:
        """tokens: (batch, seq) int64 -> logits (batch, seq, vocab). With ``caches`` (one per layer,
        from :meth:`new_caches`) positions continue from what the caches hold."""
        if tokens.dim() != 2:
            raise ValueError(f"expected tokens shaped (batch, seq), got {tuple(tokens.shape)}")
        last = None
        if positions is None:
            positions, last = continue_positions(caches, tokens.shape[1], tokens.device)
        h = self.embed(tokens)
        if self.pos is not None:
            h = h + position_embedding(self.pos, positions, last, "max_seq_len")
        for i, block in enumerate(self.blocks):
            h = block(h, positions, caches[i] if caches else None)
        tell_next_position(caches, last)
        h = self.norm(h)
        return h @ self.embed.weight.T if self.head is None else self.head(h)

    def new_caches(self, window: int | None = None) -> list[KVCache]:
        return [KVCache(window) for _ in self.blocks]

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))  # (batch*seq, vocab)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
