"""Compute-matched baselines: a baseline given the compute budget of a method that costs more per step.

Where a method costs more per training step than its baseline (Soft Reset's extra passes, NaP's
projection, TAM's cosine, self-guided training's dense guides), comparing both at the same number of
steps favours the method. Each such experiment also trains the baseline with the method's budget and
reports it. The budget is a number fixed before the run (counted FLOPs or passes, or a per-step cost
ratio measured once and written into the config), never a live clock, so results stay deterministic.

How the budget is spent depends on the protocol:

- an online stream (one incoming batch per step, accuracy measured before the update): the baseline
  makes ``ratio`` updates per incoming batch on average, :func:`updates_at` spreading a fractional
  ratio over the steps (e.g. 1.25: a second update on every fourth batch);
- a fixed training set: the baseline trains :func:`matched_steps` steps, its schedule spanning them.

Each comparison becomes one row of ``metrics["compute_matched"]`` (:func:`matched_row`), which the
report shows in its table of compute-matched baselines. A row is reported, not checked: a claim on
it exists only where the paper claims a compute-matched win (see the experiment's claim table).
"""

from __future__ import annotations

import math

from tenfold.utils.checks import check_int, check_range

BETTER = ("higher", "lower")


def updates_at(step: int, ratio: float) -> int:
    """Updates to make on incoming batch ``step`` (0-based) so that the first ``n`` batches get
    ``floor(n · ratio)`` updates in all: ``floor((step + 1) · ratio) − floor(step · ratio)``, at least
    one for every ``ratio >= 1`` (``ratio = 1``: one update per batch, the plain baseline)."""
    return math.floor((step + 1) * ratio) - math.floor(step * ratio)


def matched_steps(steps: int, ratio: float) -> int:
    """Steps of the baseline given ``ratio`` times the budget of ``steps`` steps (rounded)."""
    check_int("steps", steps, 1)
    check_range("ratio", ratio, 1.0)
    return max(steps, round(steps * ratio))


def matched_row(comparison: str, metric: str, better: str, method: tuple[str, dict], baseline: tuple[str, dict],
                matched: tuple[str, dict], ratio: float, budget: str) -> dict:
    """One row of ``metrics["compute_matched"]``.

    ``method``, ``baseline`` (same steps) and ``matched`` (same compute) are ``(arm, stats)`` with
    ``stats`` a :func:`tenfold.experiment.seed_stats` dict of ``metric``; ``better`` says which
    direction of ``metric`` is better (``"higher"`` or ``"lower"``); ``ratio`` is the method's cost per
    step over the baseline's, as fixed in the config; ``budget`` says in words how it was matched.
    ``method_advantage`` is the method's mean minus the matched baseline's mean, signed so that a
    positive value means the method is better; ``method_advantage_same_steps`` the same against the
    baseline at equal steps.
    """
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    check_range("ratio", ratio, 1.0)
    sign = 1.0 if better == "higher" else -1.0

    def arm(entry: tuple[str, dict]) -> dict:
        name, stats = entry
        return {"arm": name, **stats}

    return {"comparison": comparison, "metric": metric, "better": better,
            "method": arm(method), "baseline": arm(baseline), "matched_baseline": arm(matched),
            "cost_ratio": float(ratio), "budget": budget,
            "method_advantage": sign * (method[1]["mean"] - matched[1]["mean"]),
            "method_advantage_same_steps": sign * (method[1]["mean"] - baseline[1]["mean"])}
