"""p-RoPE benchmarks: rotation time of p-RoPE and NoPE against RoPE, the rotary forward (angles on the
fly) against the previous cached-table forward, and a training step of each arm against NoPE (see
docs/methods/p-rope.md)."""

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
    rows += _previous_rotary_rows(shapes, quick)
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


class CachedTableRotary(RotaryEmbedding):
    """The previous forward, kept as the benchmark's baseline: a float32 cos/sin table grown by powers of
    two and indexed by position, after two host syncs per call (the positions' min and max)."""

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32):
        low, high = int(positions.min()), int(positions.max())
        if low < 0:
            raise ValueError(f"positions must be >= 0, got {low}")
        cache = getattr(self, "_table", {}).get(dtype)
        if cache is None or cache[0].shape[0] <= high:
            size = max(self.max_len, 1 << high.bit_length())
            angles = torch.arange(size, dtype=torch.float64)[:, None] * self.angle_freqs.cpu()  # (size, d/2)
            cache = (angles.cos().to(positions.device, dtype), angles.sin().to(positions.device, dtype))
            self._table = {**getattr(self, "_table", {}), dtype: cache}
        return cache[0][positions], cache[1][positions]


def _previous_rotary_rows(shapes, quick: bool) -> list[BenchRow]:
    rows = []
    for shape in shapes:
        x, pos = torch.randn(*shape), torch.arange(shape[2])
        for name, kwargs in (("RoPE", {}), ("0.75-RoPE", {"p": 0.75})):
            new, old = RotaryEmbedding(shape[-1], base=100.0, **kwargs), CachedTableRotary(shape[-1], base=100.0, **kwargs)
            assert torch.equal(new(x, pos), old(x, pos))
            rows.append(compare(f"{name} forward {shape}", ("cached table (previous)", lambda o=old: o(x, pos)),
                                ("angles on the fly", lambda n=new: n(x, pos)), repeats=5 if quick else 20,
                                shape=list(shape)))
    return rows
