"""Structured-FFN benchmarks: the FFN forward (fp32, no grad) of each structure against dense at the
same width (see docs/methods/structured-ffn.md)."""

from __future__ import annotations

import torch

from tenfold.nn.structured import StructuredMLP
from tenfold.utils.bench import BenchRow, compare

NAME = "structured-ffn"


def bench(quick: bool = True) -> list[BenchRow]:
    """FFN forward (fp32, no grad) of each structure against dense at the same width;
    ratio = structured time / dense time."""
    if quick:
        return bench_rows((512, 1024), (1024, 8192), repeats=3)
    return bench_rows((256, 512, 1024, 1536), (512, 4096, 16384), repeats=7)


def bench_rows(widths: tuple[int, ...], tokens: tuple[int, ...], repeats: int) -> list[BenchRow]:
    variants = [("lowrank63", "lowrank", {"rank_frac": 2}), ("lowrank32", "lowrank", {"rank_frac": 4}),
                ("blockdense32", "blockdense", {"rank_frac": 8 / 3, "blocks": 4}),
                ("blockshuffle63", "blockshuffle", {"blocks": 2}), ("blockshuffle32", "blockshuffle", {"blocks": 4})]
    rows = []
    for width in widths:
        torch.manual_seed(0)
        dense = StructuredMLP(width, 4 * width, "dense")
        for name, kind, kw in variants:
            rank = None if "rank_frac" not in kw else int(width / kw["rank_frac"]) // 4 * 4
            module = StructuredMLP(width, 4 * width, kind, rank=rank, blocks=kw.get("blocks"))
            for n in tokens:
                x = torch.randn(n, width)
                with torch.no_grad():
                    rows.append(compare(f"ffn/{name}", ("dense", lambda: dense(x)), (name, lambda: module(x)),
                                        warmup=1, repeats=repeats, width=width, tokens=n, rank=rank))
    return rows
