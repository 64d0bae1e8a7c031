"""Soft Reset benchmarks: the cost of one Soft Reset (and Bayesian Soft Reset) step against one plain
SGD step on the plasticity MLP (see docs/methods/soft-reset.md)."""

from __future__ import annotations

import torch

from tenfold.experiments.soft_reset import Config, make_model, make_soft_reset, online_closure
from tenfold.optim.soft_reset import BayesianSoftResetProximal
from tenfold.utils.bench import BenchRow, compare

NAME = "soft-reset"


def bench(quick: bool = True) -> list[BenchRow]:
    """Cost of one Soft Reset step against one plain SGD step (same MLP, same batch).

    On a repeated batch γ stays 1, so a step is 3 passes (a step where a reset fires adds a 4th)."""
    cfg = Config()
    x = torch.randn(cfg.batch_size, cfg.in_features, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, cfg.n_classes, (cfg.batch_size,), generator=torch.Generator().manual_seed(1))
    rows = []
    for name, factory in (("soft-reset", lambda m: make_soft_reset(cfg, m, 0)),
                          ("bayesian-soft-reset", lambda m: BayesianSoftResetProximal(
                              m.named_parameters(), lr=cfg.lr_soft, s=cfg.s, sigma0="he_normal"))):
        base_model, soft_model = make_model(cfg, 0), make_model(cfg, 0)
        sgd, soft = torch.optim.SGD(base_model.parameters(), lr=cfg.lr_sgd), factory(soft_model)

        def sgd_step():
            online_closure(base_model, sgd, x, y, [1])()
            sgd.step()

        def soft_step():
            soft.step(online_closure(soft_model, soft, x, y, [1]))

        soft_step()
        rows.append(compare(f"{name}.step", ("torch.optim.SGD", sgd_step), (name, soft_step),
                            repeats=10 if quick else 50, inner=5 if quick else 20,
                            mlp=f"{cfg.in_features}-{cfg.hidden}-{cfg.hidden}-{cfg.n_classes}",
                            batch=cfg.batch_size, passes_per_step=soft.last_passes,
                            threads=torch.get_num_threads()))
    return rows
