"""The tuning protocol of comparison claims: every arm of a comparison takes its hyperparameters (the
learning rate and, where it matters, warm-up or clipping) from the same grid, chosen on development
seeds that are never claim seeds, so that a baseline gets the same chance as the method.

An experiment declares a :class:`TuningSpec`: for each arm, the config field that holds each tuned
hyperparameter (the config's defaults are the chosen values), a ``trial`` that trains one arm on one
development seed and scores it on a development set (not the claim's held-out set), and the record
of the sweep that chose the defaults (:class:`ArmTuning`, one per arm). The runner writes the record,
beside the values a run actually used, into result.json under ``tuning`` (:func:`tuning_block`).

The sweep is repeatable from the command line (``tenfold tune NAME --arm ARM --grid lr=a,b,c``), which
calls :func:`sweep` and prints the :class:`ArmTuning` to paste into the experiment's record.

Selection rule (:func:`choose`): the grid point with the highest mean score over the development
seeds; a tie (equal mean score) goes to the lower mean final training loss, then to the first point
in grid order.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenfold.utils.checks import check_choice

DEV_SEEDS = tuple(range(1000, 1010))  # development (tuning) seeds: never claim seeds
DEFAULT_TUNE_SEEDS = DEV_SEEDS[:2]


@dataclass(frozen=True)
class ArmTuning:
    """The record of one arm's sweep: the grid (hyperparameter -> values), the development seeds, the
    preset whose config the trials used, the mean score of each grid point (label ``"lr=0.001"``, or
    ``"clip=1,lr=0.001"`` for several hyperparameters, names in sorted order) and the chosen values."""

    grid: dict[str, tuple[float, ...]]
    seeds: tuple[int, ...]
    preset: str
    scores: dict[str, float]
    chosen: dict[str, float]

    def __post_init__(self) -> None:
        if not self.grid or any(not values for values in self.grid.values()):
            raise ValueError(f"grid must name at least one hyperparameter with values, got {self.grid}")
        outside = [s for s in self.seeds if s not in DEV_SEEDS]
        if not self.seeds or outside:
            raise ValueError(f"seeds must be development seeds {DEV_SEEDS[0]}-{DEV_SEEDS[-1]}, got {self.seeds}")
        if sorted(self.chosen) != sorted(self.grid):
            raise ValueError(f"chosen must set every grid hyperparameter {sorted(self.grid)}, got {self.chosen}")
        off_grid = {k: v for k, v in self.chosen.items() if v not in self.grid[k]}
        if off_grid:
            raise ValueError(f"chosen values must lie on the grid {self.grid}, got {off_grid}")

    def to_dict(self) -> dict:
        return {"grid": {k: list(v) for k, v in self.grid.items()}, "seeds": list(self.seeds),
                "preset": self.preset, "scores": dict(self.scores), "chosen": dict(self.chosen)}


@dataclass(frozen=True)
class TuningSpec:
    """How an experiment's comparison arms are tuned.

    ``fields``: arm -> {hyperparameter: the config field holding it}. ``trial(cfg, arm, seed)`` trains
    ``arm`` once under ``cfg`` on development seed ``seed`` and returns ``{"score": higher is better,
    "loss": final training loss}``; ``metric`` says what the score is. ``record``: arm -> the sweep
    that chose the config's defaults (an arm without one is reported as untuned)."""

    fields: dict[str, dict[str, str]]
    trial: Callable[[Any, str, int], dict]
    metric: str
    record: dict[str, ArmTuning] = field(default_factory=dict)

    def value(self, cfg: Any, arm: str, param: str = "lr", name: str = "arm") -> float:
        """The value ``cfg`` gives ``arm``'s tuned hyperparameter ``param`` (the config field ``fields``
        names); ``ValueError`` naming ``name`` for an arm that is not tuned."""
        check_choice(name, arm, self.fields)
        return getattr(cfg, self.fields[arm][param])

    def check(self, name: str, presets: dict[str, Any]) -> None:
        """Every field exists in every preset's config, every record belongs to a tuned arm and tunes
        exactly its hyperparameters (``ValueError`` naming the experiment otherwise)."""
        for preset, cfg in presets.items():
            names = {f.name for f in dataclasses.fields(cfg)}
            unknown = sorted({f for params in self.fields.values() for f in params.values()} - names)
            if unknown:
                raise ValueError(f"{name}: tuning fields {unknown} are not fields of preset {preset!r}'s config")
        for arm, tuning in self.record.items():
            if arm not in self.fields:
                raise ValueError(f"{name}: tuning record for {arm!r}, which is not a tuned arm {sorted(self.fields)}")
            if sorted(tuning.grid) != sorted(self.fields[arm]):
                raise ValueError(f"{name}: the record of {arm!r} tunes {sorted(tuning.grid)}, "
                                 f"its fields are {sorted(self.fields[arm])}")


def final_loss(losses: Sequence[float]) -> float:
    """A trial's ``loss`` (the tie-break of :func:`choose`): the mean training loss over the last 10 % of
    the steps (at least one)."""
    if not losses:
        raise ValueError("losses must hold at least one step")
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)


def point_label(point: dict[str, float]) -> str:
    """``"clip=1,lr=0.002"``: a grid point's name, hyperparameters in sorted order."""
    return ",".join(f"{k}={point[k]:g}" for k in sorted(point))


def grid_points(grid: dict[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of the grid's values, in grid order (the last hyperparameter varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def parse_grid(items: Sequence[str], allowed: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["lr=1e-3,2e-3", "clip=0,1"]`` -> ``{"lr": (0.001, 0.002), "clip": (0.0, 1.0)}``; ``ValueError``
    (one line, naming the item) for a name outside ``allowed``, a repeated name, or values that are not
    distinct finite numbers."""
    grid: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--grid expects NAME=v1,v2,..., got {item!r}")
        if name not in allowed:
            raise ValueError(f"--grid {name}: not a tuned hyperparameter of this arm; valid: {', '.join(allowed)}")
        if name in grid:
            raise ValueError(f"--grid {name} is given twice")
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--grid {name}: expected comma-separated numbers, got {text!r}") from None
        if not values or len(set(values)) != len(values) or not all(math.isfinite(v) for v in values):
            raise ValueError(f"--grid {name}: expected distinct finite numbers, got {text!r}")
        grid[name] = values
    if not grid:
        raise ValueError("--grid is required (e.g. --grid lr=1e-3,2e-3,4e-3)")
    return grid


def check_dev_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """The seeds, if they are distinct development seeds (``ValueError`` otherwise: claim seeds are never tuned on)."""
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(s not in DEV_SEEDS for s in seeds):
        raise ValueError(f"--seeds: tuning runs on distinct development seeds {DEV_SEEDS[0]}-{DEV_SEEDS[-1]} "
                         f"only (claim seeds are never tuned on), got {list(seeds)}")
    return seeds


def apply_point(spec: TuningSpec, cfg: Any, arm: str, point: dict[str, float]) -> Any:
    """``cfg`` with ``arm``'s fields set to the grid point (an int field gets an int)."""
    fields = spec.fields[arm]
    kinds = typing.get_type_hints(type(cfg))
    changes = {fields[k]: (int(v) if kinds[fields[k]] is int else v) for k, v in point.items()}
    return dataclasses.replace(cfg, **changes)


def choose(rows: Sequence[dict]) -> dict:
    """The chosen row of a sweep: highest ``score``, then lowest ``loss``, then the first in order
    (rows carry the mean over seeds; a non-finite score or loss ranks last)."""
    def key(indexed):
        index, row = indexed
        score = row["score"] if math.isfinite(row["score"]) else -math.inf
        loss = row["loss"] if math.isfinite(row["loss"]) else math.inf
        return (-score, loss, index)

    return min(enumerate(rows), key=key)[1]


def summarise(grid: dict[str, tuple[float, ...]], trials: dict[str, dict[int, dict]], seeds: Sequence[int],
              preset: str) -> tuple[list[dict], ArmTuning]:
    """Mean score and loss of each grid point over ``seeds`` (``trials[label][seed]``) and the record."""
    rows = []
    for point in grid_points(grid):
        label = point_label(point)
        per_seed = [trials[label][s] for s in seeds]
        rows.append({"point": point, "label": label,
                     "score": sum(t["score"] for t in per_seed) / len(per_seed),
                     "loss": sum(t["loss"] for t in per_seed) / len(per_seed),
                     "per_seed": {str(s): trials[label][s] for s in seeds}})
    best = choose(rows)
    record = ArmTuning(grid=grid, seeds=tuple(seeds), preset=preset,
                       scores={r["label"]: round(r["score"], 6) for r in rows}, chosen=dict(best["point"]))
    return rows, record


def tuning_block(spec: TuningSpec, cfg: Any, run_seeds: Sequence[int]) -> dict:
    """result.json's ``tuning``: per arm the sweep's record and the values this run used (``as_chosen``
    is false where ``--set`` moved them off the chosen values); the run's seeds that were tuned on."""
    arms = {}
    tuned_on: set[int] = set()
    for arm, fields in spec.fields.items():
        used = {param: getattr(cfg, name) for param, name in fields.items()}
        record = spec.record.get(arm)
        entry = {"fields": dict(fields), "used": used}
        if record is None:
            entry.update(tuned=False, as_chosen=None)
        else:
            tuned_on.update(record.seeds)
            entry.update(tuned=True, **record.to_dict(),
                         as_chosen=all(math.isclose(used[k], v) for k, v in record.chosen.items()))
        arms[arm] = entry
    overlap = sorted(tuned_on & set(run_seeds))
    return {"metric": spec.metric, "rule": "highest mean score on the development seeds; ties: lower final loss",
            "arms": arms, "seeds_tuned_on_in_this_run": overlap}


def run_trial(name: str, cfg: Any, arm: str, seed: int) -> dict:
    """One trial of experiment ``name``, deterministic in ``seed``, at one torch thread; adds its CPU seconds."""
    import time

    from tenfold import registry
    from tenfold.utils.seeding import seed_everything
    from tenfold.utils.threads import single_thread

    single_thread()
    seed_everything(seed)
    start = time.process_time()
    out = registry.get(name).tuning.trial(cfg, arm, seed)
    return {"score": float(out["score"]), "loss": float(out["loss"]), "cpu_s": round(time.process_time() - start, 2)}


def sweep(experiment: Any, arm: str, grid: dict[str, tuple[float, ...]], seeds: Sequence[int], preset: str,
          cfg: Any, workers: int = 1, log: Callable[[str], None] = print) -> tuple[list[dict], ArmTuning]:
    """Run ``arm``'s trials at every grid point on every seed (``workers`` spawned processes when > 1)
    and return the rows (:func:`summarise`) and the record."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = [(point_label(p), apply_point(experiment.tuning, cfg, arm, p), s) for p in grid_points(grid) for s in seeds]
    trials: dict[str, dict[int, dict]] = {label: {} for label, _, _ in jobs}
    if workers <= 1:
        results = (run_trial(experiment.name, c, arm, s) for _, c, s in jobs)
        for (label, _, seed), out in zip(jobs, results):
            trials[label][seed] = out
            log(f"[tune {experiment.name}/{arm}] {label} seed {seed}: score {out['score']:.4g}, "
                f"loss {out['loss']:.4g} ({out['cpu_s']:.0f} CPU-s)")
    else:
        from tenfold.runner import _stop_workers

        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_ignore_sigint)
        try:
            futures = [pool.submit(run_trial, experiment.name, c, arm, s) for _, c, s in jobs]
            for (label, _, seed), future in zip(jobs, futures):
                out = future.result()
                trials[label][seed] = out
                log(f"[tune {experiment.name}/{arm}] {label} seed {seed}: score {out['score']:.4g}, "
                    f"loss {out['loss']:.4g} ({out['cpu_s']:.0f} CPU-s)")
        except BaseException:  # Ctrl-C: the workers stop now, not after their trials
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)
    return summarise(grid, trials, seeds, preset)


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
