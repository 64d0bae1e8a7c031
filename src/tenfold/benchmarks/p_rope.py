"""p-RoPE benchmarks: rotation time of p-RoPE and NoPE against RoPE, and a training step of each arm
against NoPE (see docs/methods/p-rope.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tenfold.experiments.p_rope import Config, build_model
from tenfold.nn.rope import RotaryEmbedding
from tenfold.utils.bench import BenchRow, compare

NAME = "p-rope"


def bench(quick: bool) -> list[BenchRow]:
    """Rotation time of p-RoPE and NoPE against RoPE, and a training step of each arm against NoPE."""
    rows = []
    shapes = [(32, 4, 512, 16)] if quick else [(32, 4, 512, 16), (1, 8, 2048, 128)]
    for shape in shapes:
        x = torch.randn(*shape)
        pos = torch.arange(shape[2])
        rope = RotaryEmbedding(shape[-1], base=100.0)
        for name, kwargs in (("0.75-RoPE", {"p": 0.75}), ("NoPE", {"p": 0.0})):
            other = RotaryEmbedding(shape[-1], base=100.0, **kwargs)
            rows.append(compare(f"rope-apply {shape}", ("RoPE", lambda: rope(x, pos)),
                                (name, lambda o=other: o(x, pos)), repeats=5 if quick else 20, shape=list(shape)))
    cfg = Config()
    tokens = torch.randint(0, cfg.p_vocab, (cfg.batch, cfg.p_len))
    steps = {arm: _train_step_fn(cfg, arm, tokens) for arm in ("NoPE", "RoPE", "0.75-RoPE")}
    for arm in ("RoPE", "0.75-RoPE"):
        rows.append(compare("p-rope train step (task P)", ("NoPE", steps["NoPE"]), (arm, steps[arm]),
                            repeats=5 if quick else 20, batch=cfg.batch, seq=cfg.p_len))
    return rows


def _train_step_fn(cfg: Config, arm: str, tokens: torch.Tensor):
    torch.manual_seed(0)
    model = build_model(cfg, arm, cfg.p_vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)

    def step():
        loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())  # (b*s, V)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step
