"""A tiny hidden experiment used by the test suite to exercise the runner, resume and the report:
least-squares regression by SGD, where a larger learning rate (within the stable range) should reach
a lower loss in a fixed number of steps. Registered for the tests through ``TENFOLD_EXPERIMENTS``
(tests/conftest.py); hidden from ``tenfold list`` and ``tenfold reproduce``."""

from dataclasses import dataclass
from pathlib import Path

import torch

from tenfold import plotting
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, paired_wins, seed_stats, stack_seeds


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 50
    dim: int = 8
    slow_lr: float = 0.01
    fast_lr: float = 0.1
    use_bias: bool = False
    note: str = "toy"


PRESETS = {
    "smoke": Config(seeds=(0, 1), steps=10),
    "quick": Config(),
    "full": Config(seeds=tuple(range(10)), steps=200),
}

CLAIMS = (
    ClaimSpec("toy.fast-wins", "The larger learning rate reaches a lower final loss", "toy: no paper", ">= 1.0"),
    ClaimSpec("toy.paired", "The larger learning rate wins on every seed (fraction of seeds won)", "toy: no paper",
              ">= 1"),
)


def _train(cfg: Config, lr: float, generator: torch.Generator, ctx: RunContext, arm: str) -> list[float]:
    x = torch.randn(64, cfg.dim, generator=generator)
    y = x @ torch.randn(cfg.dim, 1, generator=generator) + 0.1 * torch.randn(64, 1, generator=generator)
    x, y = x.to(ctx.device), y.to(ctx.device)
    w = torch.zeros(cfg.dim, 1, device=ctx.device, requires_grad=True)
    losses = []
    for _ in ctx.progress(range(cfg.steps), desc=arm):
        loss = ((x @ w - y) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= lr * grad
        losses.append(loss.item())
    return losses


def run_seed(cfg: Config, ctx: RunContext) -> dict:
    return {arm: _train(cfg, lr, torch.Generator().manual_seed(ctx.seed), ctx, arm)
            for arm, lr in (("slow", cfg.slow_lr), ("fast", cfg.fast_lr))}


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    slow, fast = stack_seeds(records, "slow"), stack_seeds(records, "fast")
    metrics = {"final_loss": {"slow": seed_stats(slow[:, -1]), "fast": seed_stats(fast[:, -1])}}
    measured = {
        "toy.fast-wins": metrics["final_loss"]["slow"]["mean"] / metrics["final_loss"]["fast"]["mean"],
        "toy.paired": paired_wins(-fast[:, -1], -slow[:, -1]) / len(records),
    }
    fig, ax = plotting.figure()
    steps = list(range(cfg.steps))
    plotting.band(ax, steps, slow, label=f"lr={cfg.slow_lr}")
    plotting.band(ax, steps, fast, label=f"lr={cfg.fast_lr}")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="toy regression")
    ax.legend()
    return Evaluation(measured=measured, metrics=metrics, figures=[plotting.save(fig, out_dir, "loss.png")])


EXPERIMENT = Experiment(
    name="toy", paper="none (a test fixture)", presets=PRESETS, run_seed=run_seed, evaluate=evaluate,
    quick_minutes=0.05, claims=CLAIMS, hidden=True, devices=("cpu", "cuda"),
)
