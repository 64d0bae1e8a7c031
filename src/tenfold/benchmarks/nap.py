"""NaP benchmarks: training-step time of the plasticity MLP with and without Normalize-and-Project,
and the cost of one ``project()`` call (see docs/methods/nap.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tenfold.experiments.nap import Config, plasticity_mlp
from tenfold.optim.nap import NaP
from tenfold.utils.bench import BenchRow, compare

NAME = "nap"


def bench(quick: bool = True) -> list[BenchRow]:
    """Training-step time of the plasticity model: nap vs ln (projection included), ln vs base, and the
    cost of one ``project()`` call relative to an ln training step."""
    cfg = Config()
    x = torch.randn(cfg.batch_size, cfg.in_features)
    y = torch.randint(0, cfg.n_classes, (cfg.batch_size,))

    def stepper(arm: str):
        model = plasticity_mlp(cfg, arm, 0)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_ln)
        proj = NaP(model) if arm == "nap" else None

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if proj is not None:
                proj.project()
        return step, proj

    repeats, inner = (30, 10) if quick else (200, 20)
    base, _ = stepper("base")
    ln, _ = stepper("ln")
    nap, proj = stepper("nap")
    params = {"model": "64-128-128-10", "batch": cfg.batch_size, "optimizer": "adam"}
    return [
        compare("nap.step", ("ln step", ln), ("nap step (+ project)", nap), repeats=repeats, inner=inner, **params),
        compare("nap.ln-step", ("base step", base), ("ln step", ln), repeats=repeats, inner=inner, **params),
        compare("nap.project", ("ln step", ln), ("project() alone", proj.project), repeats=repeats, inner=inner, **params),
    ]
