"""The one training loop and the one learning-rate schedule that every experiment uses.

``warmup_cosine`` is the linear warm-up plus cosine decay of the papers' recipes, with the two
variants they use as parameters (decay after the warm-up, as in most LM recipes, or decay from step
0 with the warm-up multiplied in, as in the Decision-Transformer recipe). ``fit`` is the AdamW-style
loop: loss, backward, optional gradient clipping, step, schedule; it keeps the losses on the device
and reads them back once at the end (no host sync per step). ``online_updates`` is one batch of an
online (streaming) run, its accuracy measured before the update. ``loss_convergence`` says whether a
loss curve was still falling at the end, and ``compare_convergence`` does so for the arms of a
comparison claim (reported beside the claim).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

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


def online_updates(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   updates: int, *, before: Callable[[], None] | None = None,
                   after: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One incoming batch of an online (streaming) classification run: ``updates`` cross-entropy
    updates of ``model`` on (x, y), ``before()`` / ``after()`` around each ``optimizer.step()`` (e.g.
    NaP's projection). Returns the logits and loss of the first forward, detached: online accuracy and
    loss are measured before any update on the batch. ``updates`` is 1 for a plain run; a
    compute-matched baseline takes ``tenfold.compute_matched.updates_at(step, ratio)``."""
    check_int("updates", updates, 1)
    first = None
    for _ in range(updates):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        if first is None:
            first = (logits.detach(), loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before is not None:
            before()
        optimizer.step()
        if after is not None:
            after()
    return first


CONVERGENCE_WINDOW = 0.1  # the last 10 % of the steps
CONVERGENCE_REL_TOL = 0.05  # converged: the fitted line loses at most 5 % of its level over the window ...
CONVERGENCE_ABS_TOL = 0.01  # ... or at most 0.01 (nats for a cross-entropy), whichever is larger


def loss_convergence(losses: Sequence[float], *, window: float = CONVERGENCE_WINDOW,
                     rel_tol: float = CONVERGENCE_REL_TOL, abs_tol: float = CONVERGENCE_ABS_TOL) -> dict:
    """Whether a training loss was still falling at the end of training.

    Over the last ``window`` fraction of the steps (at least 2) a least-squares line is fitted to the
    loss; ``drop = -slope · (n - 1)`` is what the line loses across the window and ``level`` the mean
    loss there. The loss has converged when ``drop <= max(rel_tol · level, abs_tol)`` (a loss that rises
    or is flat has converged in this sense; a non-finite loss has not). Under a schedule that decays
    the learning rate to 0 the last steps move little whatever the model: compare such an arm with a
    longer run too.
    """
    check_range("window", window, 0.0, 1.0, low_open=True)
    check_range("rel_tol", rel_tol, 0.0)
    check_range("abs_tol", abs_tol, 0.0)
    if len(losses) < 2:
        raise ValueError(f"losses must hold at least 2 steps to fit a slope, got {len(losses)}")
    n = max(2, round(window * len(losses)))
    tail = [float(x) for x in losses[-n:]]
    if not all(math.isfinite(x) for x in tail):
        return {"steps": len(losses), "window": n, "slope": math.nan, "drop": math.nan, "level": math.nan,
                "tolerance": math.nan, "converged": False}
    mean_x, level = (n - 1) / 2, sum(tail) / n
    slope = sum((i - mean_x) * (y - level) for i, y in enumerate(tail)) / sum((i - mean_x) ** 2 for i in range(n))
    drop = -slope * (n - 1)
    tolerance = max(rel_tol * abs(level), abs_tol)
    return {"steps": len(losses), "window": n, "slope": slope, "drop": drop, "level": level,
            "tolerance": tolerance, "converged": drop <= tolerance}


def compare_convergence(arms: dict[str, Sequence[Sequence[float]]], *, shared_budget: bool = False,
                        reference: dict[str, Sequence[Sequence[float]]] | None = None,
                        scores: dict[str, float] | None = None, **thresholds) -> dict:
    """The convergence of each arm of a comparison (``arms``: arm -> its training losses on each seed), for
    a claim's ``Evaluation.convergence`` entry.

    Per arm: the steps, on how many seeds it converged (:func:`loss_convergence`, ``thresholds`` passed
    on), the mean drop and tolerance. ``mixed`` is true when an arm is still improving on some seed while
    another arm converged on every seed: the comparison then measures training speed as much as the
    end point. ``shared_budget`` records that the arms share a fixed step budget on purpose.
    ``reference`` arms (e.g. the baselines at the method's step count, beside the claim's converged
    ones) are summarised the same way but take no part in ``mixed``; ``scores`` (arm -> the arm's
    measured score, e.g. mean accuracy) are shown beside them."""
    if not arms:
        raise ValueError("arms must name at least one arm with its losses per seed")
    summary = {arm: _arm_convergence(arm, per_seed, (scores or {}).get(arm), thresholds)
               for arm, per_seed in arms.items()}
    done = [a for a, s in summary.items() if s["converged"]]
    improving = [a for a, s in summary.items() if not s["converged"]]
    references = {arm: _arm_convergence(arm, per_seed, (scores or {}).get(arm), thresholds)
                  for arm, per_seed in (reference or {}).items()}
    return {"arms": summary, "reference": references, "mixed": bool(done and improving), "still_improving": improving,
            "shared_budget": shared_budget,
            "rule": (f"drop of the fitted loss over the last {thresholds.get('window', CONVERGENCE_WINDOW):g} "
                     f"of steps <= max({thresholds.get('rel_tol', CONVERGENCE_REL_TOL):g} x level, "
                     f"{thresholds.get('abs_tol', CONVERGENCE_ABS_TOL):g})")}


def _arm_convergence(arm: str, per_seed: Sequence[Sequence[float]], score: float | None, thresholds: dict) -> dict:
    checks = [loss_convergence(losses, **thresholds) for losses in per_seed]
    if not checks:
        raise ValueError(f"arm {arm!r} has no seeds")
    summary = {"steps": checks[0]["steps"], "seeds": len(checks),
               "converged_seeds": sum(c["converged"] for c in checks),
               "converged": all(c["converged"] for c in checks),
               "drop": sum(c["drop"] for c in checks) / len(checks),
               "tolerance": sum(c["tolerance"] for c in checks) / len(checks),
               "drop_per_seed": [c["drop"] for c in checks]}
    if score is not None:
        summary["score"] = float(score)
    return summary
