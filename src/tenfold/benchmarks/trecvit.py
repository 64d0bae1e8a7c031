"""TRecViT benchmarks: the linear-scan implementations against a plain autograd loop, the fused RG-LRU
against the plain autograd graph, and per-frame streaming latency of TRecViT against causal joint
attention with a KV cache (see docs/methods/trecvit.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tenfold.experiments.trecvit import Config, copy_state, task_kwargs, trecvit_config
from tenfold.models.trecvit import TRecViT
from tenfold.models.vivit import ViViTJoint
from tenfold.nn.rglru import RGLRU, linear_scan
from tenfold.tasks.video import make_task
from tenfold.utils import BenchRow, activation_bytes, compare

NAME = "trecvit"


def _bench_fused_rglru(quick: bool) -> list[BenchRow]:
    """The RG-LRU layer (gates + scan), forward + backward: the fused Function against the plain autograd
    graph (custom scan), with the bytes each saves for backward."""
    rows = []
    for steps, seqs in ([(8, 544), (64, 68)] if quick else [(8, 544), (64, 68), (256, 17)]):
        torch.manual_seed(0)
        fused = RGLRU(width=64, num_heads=2)
        plain = RGLRU(width=64, num_heads=2, fused=False)
        plain.load_state_dict(fused.state_dict())
        v = torch.randn(seqs, steps, 64, requires_grad=True)
        saved = {name: activation_bytes(lambda: lru(v * 1.0)) for name, lru in (("fused", fused), ("plain", plain))}

        def fwd_bwd(lru):
            return lambda: lru(v)[0].sum().backward()

        rows.append(compare(f"RG-LRU fwd+bwd T={steps}", ("plain autograd", fwd_bwd(plain)), ("fused", fwd_bwd(fused)),
                            warmup=2, repeats=10 if quick else 20, clock="cpu", T=steps, seqs=seqs, width=64,
                            saved_bytes_plain=saved["plain"], saved_bytes_fused=saved["fused"]))
    cfg = Config()  # the experiment's training step: tiny TRecViT, batch 32, T = 8, forward + backward
    video, labels = make_task("direction", n=cfg.batch, frames=cfg.frames, size=cfg.size, seed=0,
                              **task_kwargs(cfg, "direction"))
    models = {}
    for fused in (True, False):
        torch.manual_seed(0)
        models[fused] = TRecViT(trecvit_config(cfg, "direction", cfg.frames, fused_rglru=fused))

    def step(model):
        return lambda: F.cross_entropy(model(video), labels).backward()

    rows.append(compare("TRecViT-tiny train step (fwd+bwd)", ("plain RG-LRU", step(models[False])),
                        ("fused RG-LRU", step(models[True])), warmup=2, repeats=10 if quick else 20, clock="cpu",
                        batch=cfg.batch, T=cfg.frames))
    return rows


def bench(quick: bool = True) -> list[BenchRow]:
    """Scan implementations against a plain autograd loop (forward + backward), and per-frame streaming
    latency of TRecViT against causal joint attention with a KV cache."""
    rows = []
    shapes = [(16, 256, 128), (64, 64, 128), (256, 16, 128)] if quick else [
        (16, 544, 128), (64, 128, 256), (256, 32, 256), (1024, 8, 256)]
    for steps, seqs, width in shapes:
        a = torch.rand(seqs, steps, width).mul_(0.5).add_(0.5).requires_grad_()
        b = torch.randn(seqs, steps, width, requires_grad=True)

        def fwd_bwd(impl):
            return lambda: linear_scan(a, b, impl=impl).sum().backward()

        for impl in ("custom", "doubling"):
            rows.append(compare(f"scan fwd+bwd T={steps}", ("loop", fwd_bwd("loop")), (impl, fwd_bwd(impl)),
                                warmup=1, repeats=5 if quick else 10, T=steps, seqs=seqs, width=width))
    rows += _bench_fused_rglru(quick)
    cfg = Config(stream_frames=128 if quick else 512)
    torch.manual_seed(0)
    trec = TRecViT(trecvit_config(cfg, "direction", cfg.stream_frames)).eval()
    kv = ViViTJoint(width=cfg.width, depth=cfg.depth, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads,
                    num_frames=cfg.stream_frames, tubelet=1, patch=cfg.patch, image_size=cfg.size, num_classes=4,
                    causal=True, cls="frame").eval()
    frame = torch.rand(1, 3, cfg.size, cfg.size)
    with torch.no_grad():
        trec_state, kv_state = None, None
        for _ in range(cfg.stream_frames - 1):
            _, trec_state = trec.step(frame, trec_state)
            _, kv_state = kv.step(frame, kv_state)

    def kv_step():
        with torch.no_grad():
            kv.step(frame, copy_state(kv_state))

    def trec_step():
        with torch.no_grad():
            trec.step(frame, trec_state)

    rows.append(compare(f"streaming step at t={cfg.stream_frames}", ("joint+KV cache", kv_step), ("TRecViT", trec_step),
                        warmup=2, repeats=10, clock="cpu", t=cfg.stream_frames, width=cfg.width, depth=cfg.depth))
    return rows
