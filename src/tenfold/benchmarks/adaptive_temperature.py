"""Adaptive-temperature benchmarks: two-pass adaptive attention against plain SDPA, with fused and
chunked statistics, and the dense adaptive softmax against ``torch.softmax`` (see
docs/methods/adaptive-temperature.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tenfold.nn.adaptive_temperature import SOFTMAX_FUNCTIONS, two_pass_attention
from tenfold.nn.attention import Attention
from tenfold.utils.bench import BenchRow, compare

NAME = "adaptive-temperature"


def bench(quick: bool = True) -> list[BenchRow]:
    """Two-pass adaptive attention against plain SDPA, and the dense adaptive softmax against softmax."""
    rows = []
    lengths = (1024, 2048) if quick else (1024, 4096)
    for length in lengths:  # statistics from the fused CPU kernel ("auto"), then SDPA on beta-scaled queries
        for causal in (False, True):
            gen = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, 4, length, 64, generator=gen) for _ in range(3))
            with torch.no_grad():
                def plain():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                def two_pass():
                    return two_pass_attention(q, k, v, kind="adaptive", is_causal=causal)
                rows.append(compare(f"two-pass adaptive attention, L={length}, causal={causal}",
                                    ("sdpa", plain), ("two-pass adaptive", two_pass), warmup=1,
                                    repeats=3 if quick else 7, length=length, causal=causal, heads=4, head_dim=64))
    length = lengths[0]
    q, k, v = (torch.randn(1, 4, length, 64, generator=torch.Generator().manual_seed(2)) for _ in range(3))
    with torch.no_grad():
        rows.append(compare(f"two-pass adaptive attention with chunked statistics, L={length}",
                            ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v)),
                            ("two-pass adaptive, chunked", lambda: two_pass_attention(q, k, v, stats_method="chunked")),
                            warmup=1, repeats=3 if quick else 7, length=length, causal=False, heads=4, head_dim=64))
    rows.append(_attention_module_row(length, quick))
    scores = torch.randn(1, 4, length, length, generator=torch.Generator().manual_seed(1)) * 3
    rows.append(compare(f"dense adaptive softmax, L={length}", ("torch.softmax", lambda: torch.softmax(scores, -1)),
                        ("adaptive softmax", lambda: SOFTMAX_FUNCTIONS["adaptive"](scores)), warmup=1,
                        repeats=3 if quick else 7, length=length))
    return rows


def _attention_module_row(length: int, quick: bool) -> BenchRow:
    """The ``Attention`` layer with grouped-query attention (8 query heads, 2 key/value heads), causal:
    adaptive temperature (two passes from ``two_pass_min_keys``) against plain softmax (SDPA)."""
    torch.manual_seed(3)
    layers = {kind: Attention(dim=256, num_heads=8, num_kv_heads=2, softmax=kind).eval() for kind in ("softmax", "adaptive")}
    layers["adaptive"].load_state_dict(layers["softmax"].state_dict())
    layers["adaptive"].two_pass_min_keys = min(layers["adaptive"].two_pass_min_keys, length)
    x = torch.randn(1, length, 256)
    with torch.no_grad():
        return compare(f"Attention layer, GQA 8/2 heads, causal, L={length}", ("softmax (SDPA)", lambda: layers["softmax"](x)),
                       ("adaptive", lambda: layers["adaptive"](x)), warmup=1, repeats=3 if quick else 7,
                       length=length, heads=8, kv_heads=2, head_dim=32)
