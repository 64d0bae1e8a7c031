"""The one training loop and the one learning-rate schedule that every experiment uses.

``warmup_cosine`` is the linear warm-up plus cosine decay of the papers' recipes, with the two
variants they use as parameters (decay after the warm-up, as in most LM recipes, or decay from step
0 with the warm-up multiplied in, as in the Decision-Transformer recipe). ``fit`` is the AdamW-style
loop: loss, backward, optional gradient clipping, step, schedule; it keeps the losses on the device
and reads them back once at the end (no host sync per step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from tenfold.utils.checks import check_int, check_range


def warmup_cosine(step: int, *, warmup: int, decay_steps: int, floor: float = 0.0, overlap: bool = False) -> float:
    """Learning-rate multiplier at 0-based optimizer step ``step``.

    Warm-up: ``w = (step + 1) / warmup`` while ``step < warmup`` (none when ``warmup == 0``).
    Cosine: ``c = floor + (1 - floor) · ½(1 + cos(π · p))`` with progress ``p`` clamped to [0, 1].

    - ``overlap=False`` (warm-up, then decay): ``w`` during the warm-up, then ``c`` with
      ``p = (step - warmup) / decay_steps``; ``decay_steps = total - warmup`` reaches the floor one step
      after the last, ``total - 1 - warmup`` at the last step.
    - ``overlap=True`` (the Decision-Transformer recipe): ``min(1, w) · c`` with ``p = step / decay_steps``,
      the cosine running from step 0 while the warm-up scales it.
    """
    check_int("warmup", warmup, 0)
    check_int("decay_steps", decay_steps, 0)
    check_range("floor", floor, 0.0, 1.0)
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if not overlap and step < warmup:
        return ramp
    start = 0 if overlap else warmup
    progress = min(1.0, max(0.0, (step - start) / max(1, decay_steps)))
    cosine = floor + (1.0 - floor) * (0.5 * (1.0 + math.cos(math.pi * progress)))
    return ramp * cosine if overlap else cosine


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[int], torch.Tensor], steps: int, *,
        schedule: Callable[[int], float] | None = None, clip: float = 0.0,
        progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
        backward: bool = True) -> list[float]:
    """Train ``model`` for ``steps`` optimizer steps; return the loss of every step.

    Each step: ``loss = loss_fn(step)``; ``loss.backward()`` (unless ``backward=False``, for a
    ``loss_fn`` that accumulates gradients itself, e.g. one backward per micro-batch, and returns
    the detached total); the gradient norm clipped to ``clip`` when ``clip > 0``; ``optimizer.step()``;
    the learning rate of every group multiplied by ``schedule(step)`` (``LambdaLR``). The model is in
    train mode throughout; the caller switches it to eval.
    """
    check_int("steps", steps, 0)
    check_range("clip", clip, 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule is not None else None
    model.train()
    losses = []
    for step in (progress or iter)(range(steps)):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        if backward:
            loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
    return torch.stack(losses).tolist() if losses else []
