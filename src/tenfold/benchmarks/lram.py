"""LRAM benchmarks: the latency grid of the experiment as ratios, Transformer-with-KV-cache step time
over xLSTM recurrent step time (see docs/methods/lram.md)."""

from __future__ import annotations

from dataclasses import replace

from tenfold.experiments.lram import PRESETS, latency_grid
from tenfold.utils.bench import BenchRow

NAME = "lram"


def bench(quick: bool) -> list[BenchRow]:
    """The latency grid as ratios: Transformer-with-KV-cache step time over xLSTM step time."""
    cfg = PRESETS["quick"] if quick else PRESETS["full"]
    if quick:
        cfg = replace(cfg, latency_contexts=(150, 2400, 16384), latency_batches=(1,))
    rows = latency_grid(cfg)["rows"]
    return [BenchRow(f"step @ {r['context']} tokens, batch {r['batch']}", "xLSTM recurrent step",
                     "Transformer KV-cache step", r["xlstm_s"], r["transformer_s"],
                     {"context": r["context"], "batch": r["batch"]}) for r in rows]
