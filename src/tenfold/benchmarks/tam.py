"""TAM benchmarks: optimizer step time of TAM against ``torch.optim.SGD(momentum)`` and of AdaTAM
against ``torch.optim.AdamW``, both sides multi-tensor (``foreach=True``), on large tensors (4 of
1024², memory-bound) and on a many-tensor model (a 12-layer GPT, 148 tensors); the default CPU
paths (loop); without the non-finite guard (default) and with it (``skip_nonfinite=True``); granularity global against tensor; a whole
training step of the online-shift student. Ratios of thread CPU time measured in one process (see
docs/methods/tam.md)."""

from __future__ import annotations

import torch
from torch import nn

from tenfold.experiments.tam import Config, student, task_stream
from tenfold.models.gpt import GPT, GPTConfig
from tenfold.optim.tam import TAM, AdaTAM
from tenfold.utils.bench import BenchRow, compare

NAME = "tam"

SGD_FOREACH = ("torch.optim.SGD(momentum=0.9, foreach=True)",
               lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True))
ADAMW_FOREACH = ("torch.optim.AdamW(foreach=True)", lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True))


def bench(quick: bool = True) -> list[BenchRow]:
    """TAM vs SGD and AdaTAM vs AdamW per model, then the loop path, granularity and a train step."""
    repeats = 15 if quick else 100
    rows = []
    for model_name, make_params in (("4 x 1024^2", _large_params), ("12-layer GPT, 148 tensors", _gpt_params)):
        rows += [
            _bench_step(f"step {model_name}", SGD_FOREACH,
                        ("TAM(foreach=True)", lambda p: TAM(p, lr=1e-3, foreach=True)), make_params, repeats),
            _bench_step(f"step {model_name}", SGD_FOREACH,
                        ("TAM(foreach=True, skip_nonfinite=True)",
                         lambda p: TAM(p, lr=1e-3, foreach=True, skip_nonfinite=True)), make_params, repeats),
            _bench_step(f"step {model_name}", ADAMW_FOREACH,
                        ("AdaTAM(foreach=True)", lambda p: AdaTAM(p, lr=1e-3, foreach=True)), make_params, repeats),
            _bench_step(f"step {model_name}", ADAMW_FOREACH,
                        ("AdaTAM(foreach=True, skip_nonfinite=True)",
                         lambda p: AdaTAM(p, lr=1e-3, foreach=True, skip_nonfinite=True)), make_params, repeats),
        ]
    rows += [
        _bench_step("step 4 x 1024^2, CPU defaults (loop)",
                    ("torch.optim.SGD(momentum=0.9)", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)),
                    ("TAM", lambda p: TAM(p, lr=1e-3)), _large_params, repeats),
        _bench_step("step 12-layer GPT", ("TAM(foreach=True) granularity=tensor", lambda p: TAM(p, lr=1e-3, foreach=True)),
                    ("TAM(foreach=True) granularity=global",
                     lambda p: TAM(p, lr=1e-3, foreach=True, granularity="global")), _gpt_params, repeats),
        _bench_train_step(repeats * 10),
    ]
    return rows


def _large_params() -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(1024, 1024, generator=gen)) for _ in range(4)]
    for p in params:
        p.grad = 1e-3 * torch.randn(p.shape, generator=gen)
    return params


def _gpt_params() -> list[nn.Parameter]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, dim=128, num_layers=12, bias=True))
    params = list(model.parameters())
    for p in params:
        p.grad = 1e-3 * torch.randn_like(p)
    return params


def _bench_step(name, baseline, method, make_params, repeats) -> BenchRow:
    base_params, meth_params = make_params(), make_params()
    base_opt, meth_opt = baseline[1](base_params), method[1](meth_params)
    return compare(name, (baseline[0], base_opt.step), (method[0], meth_opt.step), warmup=3, repeats=repeats,
                   clock="cpu", params=sum(p.numel() for p in base_params), tensors=len(base_params),
                   threads=torch.get_num_threads())


def _bench_train_step(repeats) -> BenchRow:
    cfg = Config()
    stream = task_stream(cfg, 0)
    x, y = stream[0][0, stream[2][0, 0]], stream[1][0, stream[2][0, 0]]

    def trainer(make):
        model = student(cfg, 0)
        optimizer = make(model.parameters())

        def step():
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step

    return compare("train step, TAM-2 student (batch 16)",
                   ("torch.optim.SGD(momentum=0.9)", trainer(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9))),
                   ("TAM", trainer(lambda p: TAM(p, lr=0.02))), warmup=10, repeats=repeats, inner=5, clock="cpu",
                   threads=torch.get_num_threads())
