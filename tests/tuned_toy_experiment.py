"""A tiny hidden experiment with a tuning spec, for the tests of ``tenfold tune``, the runner's
``tuning`` and ``convergence`` blocks and the report's rows: two arms fit a least-squares problem by
gradient descent, each at its own learning rate. Registered through ``TENFOLD_EXPERIMENTS``
(tests/conftest.py)."""

from dataclasses import dataclass
from pathlib import Path

import torch

from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, seed_stats
from tenfold.train.loop import compare_convergence
from tenfold.tuning import ArmTuning, TuningSpec


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 40
    lr_a: float = 0.1
    lr_b: float = 0.02  # too small: arm b is still improving at the end
    dim: int = 4


PRESETS = {"smoke": Config(steps=20), "quick": Config(), "full": Config(seeds=(0, 1, 2))}
CLAIMS = (ClaimSpec("tuned-toy.a-vs-b", "Arm a reaches a final loss at most arm b's (b / a)", "toy: no paper", ">= 1"),)


def losses_of(cfg: Config, lr: float, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, cfg.dim, generator=generator)
    y = x @ torch.randn(cfg.dim, 1, generator=generator)
    w = torch.zeros(cfg.dim, 1)
    losses = []
    for _ in range(cfg.steps):
        residual = x @ w - y  # (32, 1)
        losses.append(float((residual ** 2).mean()))
        w = w - lr * 2 * x.T @ residual / len(x)
    return losses


def trial(cfg: Config, arm: str, seed: int) -> dict:
    losses = losses_of(cfg, getattr(cfg, f"lr_{arm}"), seed)
    return {"score": -losses[-1], "loss": losses[-1]}


def run_seed(cfg: Config, ctx: RunContext) -> dict:
    return {arm: losses_of(cfg, getattr(cfg, f"lr_{arm}"), ctx.seed) for arm in ("a", "b")}


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    final = {arm: seed_stats(records[s][arm][-1] for s in sorted(records)) for arm in ("a", "b")}
    convergence = {"tuned-toy.a-vs-b": compare_convergence(
        {arm: [records[s][arm] for s in sorted(records)] for arm in ("a", "b")})}
    return Evaluation(measured={"tuned-toy.a-vs-b": final["b"]["mean"] / final["a"]["mean"]},
                      metrics={"final": final}, convergence=convergence)


TUNING = TuningSpec(fields={"a": {"lr": "lr_a"}, "b": {"lr": "lr_b"}}, trial=trial, metric="minus the final loss",
                    record={"a": ArmTuning(grid={"lr": (0.01, 0.1)}, seeds=(1000, 1001), preset="quick",
                                           scores={"lr=0.01": -1.0, "lr=0.1": -0.001}, chosen={"lr": 0.1})})

EXPERIMENT = Experiment(name="tuned-toy", paper="none (a test fixture)", presets=PRESETS, run_seed=run_seed,
                        evaluate=evaluate, quick_minutes=0.01, claims=CLAIMS, hidden=True, tuning=TUNING)
