"""Non-stationary task streams for continual-learning experiments, and the online-accuracy meter.

A stream yields :class:`StreamBatch` items ``(task, step, x, y, is_boundary)``; the true task
boundaries are known to the stream (for oracle baselines such as a hard reset) but a method that
claims to detect them must not read ``is_boundary``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StreamBatch:
    task: int
    step: int  # step within the task, from 0
    x: torch.Tensor  # (batch, in_features)
    y: torch.Tensor  # (batch,) int64 labels
    is_boundary: bool  # True on the first step of every task after the first


class RandomLabelStream:
    """Iterated random-label memorisation (Kumar et al.; NaP and Soft Reset plasticity benchmarks).

    ``n`` fixed Gaussian inputs in R^``in_features``, drawn once per seed; each task draws fresh
    uniform labels in {0..n_classes-1} for all of them; each step samples ``batch_size`` indices with
    replacement. Everything comes from ``generator``, so a seed fixes the whole stream.
    """

    def __init__(self, *, n: int = 256, in_features: int = 64, n_classes: int = 10, n_tasks: int = 30,
                 steps_per_task: int = 150, batch_size: int = 64, generator: torch.Generator | None = None):
        for name, value in (("n", n), ("in_features", in_features), ("n_classes", n_classes),
                            ("n_tasks", n_tasks), ("steps_per_task", steps_per_task), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.n, self.in_features, self.n_classes = n, in_features, n_classes
        self.n_tasks, self.steps_per_task, self.batch_size = n_tasks, steps_per_task, batch_size
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.x = torch.randn(n, in_features, generator=self.generator)  # (n, in_features), fixed
        self.labels = torch.empty(n, dtype=torch.long)

    @property
    def total_steps(self) -> int:
        return self.n_tasks * self.steps_per_task

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self) -> Iterator[StreamBatch]:
        for task in range(self.n_tasks):
            self.labels = torch.randint(0, self.n_classes, (self.n,), generator=self.generator)
            for step in range(self.steps_per_task):
                index = torch.randint(0, self.n, (self.batch_size,), generator=self.generator)
                yield StreamBatch(task, step, self.x[index], self.labels[index], task > 0 and step == 0)


class OnlineAccuracy:
    """Mean online (pre-update) accuracy per task: the accuracy of each incoming batch measured on
    the logits of the update's own forward pass, before the parameters change, averaged over a task.
    """

    def __init__(self, n_tasks: int):
        self.correct = np.zeros(n_tasks)
        self.count = np.zeros(n_tasks)

    def update(self, task: int, logits: torch.Tensor, y: torch.Tensor) -> float:
        """Record one batch; returns its accuracy."""
        hits = (logits.detach().argmax(-1) == y).sum().item()
        self.correct[task] += hits
        self.count[task] += y.numel()
        return hits / y.numel()

    def per_task(self) -> list[float]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.correct / self.count).tolist()

    def mean(self, tasks: slice = slice(None)) -> float:
        """Mean of the per-task accuracies over ``tasks`` (a slice of task indices from 0)."""
        return float(np.mean(self.per_task()[tasks]))
