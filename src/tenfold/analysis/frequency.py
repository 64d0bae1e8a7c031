"""Frequency-usage analysis of rotary attention (Barbero et al., 2025, "Round and Round We Go!", Sec. 4-5).

For every layer, head and chunk k (the 2-D pair rotated with frequency g_k) the mean over tokens of
||q^(k)|| and ||k^(k)||. Rotations preserve chunk norms, so reading q, k before or after RoPE gives
the same numbers; by Cauchy-Schwarz |<q^(k), k^(k)>| <= ||q^(k)|| ||k^(k)||, so a chunk with small norms
cannot move the attention logits. Values v carry no rotation and serve as the control. Per head, the
diagonal mass mean_i alpha_{i,i} and the previous-token mass mean_i alpha_{i,i-1} find positional heads.

Works on any model built from ``tenfold.nn.Attention``: :func:`collect_qkv` sets ``attn.record = True``
(which keeps q, k before rotation and the attention weights) and hooks the fused qkv projection for v.
Chunks are read in the model's layout: pass ``pairs=rope.pair_indices()`` or ``"half"`` / ``"interleaved"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tenfold.nn.attention import Attention


def attention_layers(model: nn.Module) -> list[Attention]:
    """Every ``tenfold.nn.Attention`` in ``model``, in module order (the model itself if it is one)."""
    return [m for m in model.modules() if isinstance(m, Attention)]


def collect_qkv(model: nn.Module, run: Callable[[], object]) -> list[dict[str, torch.Tensor]]:
    """Call ``run()`` (e.g. ``lambda: model(tokens)``) with recording on; return one dict per attention
    layer with q, k, v (batch, heads, seq, head_dim; q and k before rotation) and weights
    (batch, heads, seq, keys). Recording flags are restored afterwards."""
    layers = attention_layers(model)
    if not layers:
        raise ValueError("model contains no tenfold.nn.Attention module")
    values: dict[int, torch.Tensor] = {}
    hooks, flags = [], [layer.record for layer in layers]
    for index, layer in enumerate(layers):
        hooks.append(layer.qkv.register_forward_hook(_value_hook(layer, index, values)))
        layer.record = True
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
        for layer, flag in zip(layers, flags):
            layer.record = flag
    return [{**layer.recorded, "v": values[i]} for i, layer in enumerate(layers)]


def _value_hook(layer: Attention, index: int, store: dict[int, torch.Tensor]):
    def hook(module, inputs, output):
        batch, seq, _ = output.shape
        qkv = output.view(batch, seq, 3, layer.num_heads, layer.head_dim)  # (batch, seq, 3*h*d) -> (b, s, 3, h, d)
        store[index] = qkv[:, :, 2].transpose(1, 2).detach()  # (batch, heads, seq, head_dim)
    return hook


def resolve_pairs(pairs: torch.Tensor | str, head_dim: int) -> torch.Tensor:
    """(d/2, 2) pair indices from a tensor (e.g. ``rope.pair_indices()``) or a layout name."""
    if isinstance(pairs, torch.Tensor):
        if pairs.shape != (head_dim // 2, 2):
            raise ValueError(f"pairs must be shaped ({head_dim // 2}, 2), got {tuple(pairs.shape)}")
        return pairs
    idx = torch.arange(head_dim // 2)
    if pairs == "half":
        return torch.stack([idx, idx + head_dim // 2], dim=-1)
    if pairs == "interleaved":
        return torch.stack([2 * idx, 2 * idx + 1], dim=-1)
    raise ValueError(f"pairs must be a (d/2, 2) tensor, 'half' or 'interleaved', got {pairs!r}")


def chunk_norms(x: torch.Tensor, pairs: torch.Tensor | str = "half") -> torch.Tensor:
    """Mean over batch and tokens of the chunk norms ||x^(k)||: x (batch, heads, seq, d) -> (heads, d/2)."""
    if x.dim() != 4:
        raise ValueError(f"expected x shaped (batch, heads, seq, head_dim), got {tuple(x.shape)}")
    pairs = resolve_pairs(pairs, x.shape[-1])
    return x[..., pairs].norm(dim=-1).mean(dim=(0, 2))  # (b, h, s, d/2, 2) -> (h, d/2)


def frequency_usage(records: list[dict[str, torch.Tensor]], pairs: torch.Tensor | str = "half"
                    ) -> dict[str, torch.Tensor]:
    """{"q", "k", "v"} -> (layers, heads, d/2) mean chunk norms (v is the no-frequency control)."""
    return {name: torch.stack([chunk_norms(r[name], pairs) for r in records]) for name in ("q", "k", "v")}


def positional_head_scores(records: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{"diag": mean_i alpha_{i,i}, "prev": mean_{i>=1} alpha_{i,i-1}}, each (layers, heads)."""
    diag, prev = [], []
    for r in records:
        weights = r["weights"]  # (batch, heads, seq, seq)
        if weights.shape[-1] != weights.shape[-2]:
            raise ValueError("positional head scores need a full-sequence forward (square attention weights)")
        diag.append(weights.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2)))
        prev.append(weights.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)))
    return {"diag": torch.stack(diag), "prev": torch.stack(prev)}


def band_share(usage: dict[str, torch.Tensor], chunks) -> torch.Tensor:
    """Share of sum_k ||q^(k)|| ||k^(k)|| (the Cauchy-Schwarz bound of each chunk's logit) that lies on
    ``chunks`` (indices into the pairs): (layers, heads)."""
    bound = usage["q"] * usage["k"]  # (layers, heads, d/2)
    return bound[..., chunks].sum(-1) / bound.sum(-1).clamp_min(1e-30)


def cs_bound(q: torch.Tensor, k: torch.Tensor, i: int, j: int, pairs: torch.Tensor | str = "half",
             rope: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activation a_{i,j} = (R^i q_i)^T (R^j k_j) with its bounds sum_k ||q_i^(k)|| ||k_j^(k)|| and ||q_i|| ||k_j||.

    q, k: (..., seq, d) before rotation (as recorded); returns tensors shaped (...)."""
    qi, kj = q[..., i:i + 1, :], k[..., j:j + 1, :]  # (..., 1, d)
    if rope is not None:
        qi, kj = rope(qi, torch.tensor([i])), rope(kj, torch.tensor([j]))
    activation = (qi * kj).sum(-1).squeeze(-1)
    pairs = resolve_pairs(pairs, q.shape[-1])
    chunk = (qi[..., pairs].norm(dim=-1) * kj[..., pairs].norm(dim=-1)).sum(-1).squeeze(-1)
    full = (qi.norm(dim=-1) * kj.norm(dim=-1)).squeeze(-1)
    return activation, chunk, full
