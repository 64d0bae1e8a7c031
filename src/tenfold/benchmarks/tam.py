"""TAM benchmarks: optimizer step time of TAM against SGD with momentum and of AdaTAM against AdamW on
a ~5.3M-parameter MLP (512-2048-2048-10), granularity global against tensor, and a whole training
step of the online-shift student (see docs/methods/tam.md)."""

from __future__ import annotations

import torch
from torch import nn

from tenfold.experiments.tam import Config, _student, _task_stream
from tenfold.optim.tam import TAM, AdaTAM
from tenfold.utils.bench import BenchRow, compare

NAME = "tam"


def bench(quick: bool = True) -> list[BenchRow]:
    """Optimizer step time: TAM vs SGD(momentum) and AdaTAM vs AdamW on a ~5.3M-parameter MLP
    (512-2048-2048-10), plus granularity global vs tensor and a whole training step of the
    online-shift student."""
    repeats = 30 if quick else 200
    return [_bench_step("step 5.3M MLP", ("torch.optim.SGD(momentum=0.9)", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)),
                        ("TAM", lambda p: TAM(p, lr=1e-3)), repeats),
            _bench_step("step 5.3M MLP", ("torch.optim.AdamW", lambda p: torch.optim.AdamW(p, lr=1e-3)),
                        ("AdaTAM", lambda p: AdaTAM(p, lr=1e-3)), repeats),
            _bench_step("step 5.3M MLP", ("TAM granularity=tensor", lambda p: TAM(p, lr=1e-3)),
                        ("TAM granularity=global", lambda p: TAM(p, lr=1e-3, granularity="global")), repeats),
            _bench_train_step(repeats * 5)]


def _bench_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    for p in model.parameters():
        p.grad = 1e-3 * torch.randn_like(p)
    return model


def _bench_step(name, baseline, method, repeats) -> BenchRow:
    base_params, meth_params = list(_bench_model().parameters()), list(_bench_model().parameters())
    base_opt, meth_opt = baseline[1](base_params), method[1](meth_params)
    count = sum(p.numel() for p in base_params)
    return compare(name, (baseline[0], base_opt.step), (method[0], meth_opt.step), warmup=3, repeats=repeats,
                   params=count, threads=torch.get_num_threads())


def _bench_train_step(repeats) -> BenchRow:
    cfg = Config()
    stream = _task_stream(cfg, 0)
    x, y = stream[0][0, stream[2][0, 0]], stream[1][0, stream[2][0, 0]]

    def trainer(make):
        model = _student(cfg, 0)
        optimizer = make(model.parameters())

        def step():
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step

    return compare("train step, TAM-2 student (batch 16)",
                   ("torch.optim.SGD(momentum=0.9)", trainer(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9))),
                   ("TAM", trainer(lambda p: TAM(p, lr=0.02))), warmup=10, repeats=repeats, inner=5,
                   threads=torch.get_num_threads())
