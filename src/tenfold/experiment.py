"""What an experiment is: a config dataclass with presets, a function that runs one seed, and a
function that turns the seeds' records into metrics, figures and checked claims.

An experiment module in ``tenfold.experiments`` defines a module-level ``EXPERIMENT``::

    @dataclass
    class Config:
        seeds: tuple[int, ...] = (0, 1, 2)
        steps: int = 500

    PRESETS = {"smoke": Config(seeds=(0,), steps=5), "quick": Config(), "full": Config(seeds=tuple(range(10)))}

    def run_seed(cfg: Config, ctx: RunContext) -> dict: ...   # JSON-able record of one seed
    def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation: ...

    EXPERIMENT = Experiment(name="tam", paper="...", presets=PRESETS, run_seed=run_seed,
                            evaluate=evaluate, quick_minutes=2.5,
                            claim_ids=("tam.stable-lr", ...), bench=bench)

``run_seed`` and ``evaluate`` must be module-level functions (seeds run in worker processes).
Claims are built with :func:`check`, whose threshold is a literal in the experiment's code; the
runner refuses an evaluation whose claim ids differ from ``claim_ids`` (no claim is silently dropped).
``bench(quick: bool) -> list[BenchRow]`` is optional and runs under ``tenfold bench``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

PRESET_NAMES = ("smoke", "quick", "full")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
_THRESHOLD = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+|inf|-inf)\s*$")


@dataclass
class Claim:
    """A predicate on a measured number: ``measured <op> bound``, e.g. ``2.4 >= 1.3``."""

    id: str
    statement: str
    paper: str
    measured: float
    threshold: str
    passed: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check(id: str, statement: str, paper: str, measured: float, threshold: str) -> Claim:
    """Evaluate ``measured`` against ``threshold`` (one of ``>= x``, ``<= x``, ``> x``, ``< x``, ``== x``).

    A non-finite measurement fails every threshold.
    """
    match = _THRESHOLD.match(threshold)
    if match is None:
        raise ValueError(f"threshold must look like '>= 1.3' (ops {sorted(_OPS)}), got {threshold!r}")
    op, bound = match.group(1), float(match.group(2))
    measured = float(measured)
    passed = math.isfinite(measured) and _OPS[op](measured, bound)
    return Claim(id, statement, paper, measured, f"{op} {match.group(2)}", bool(passed))


def paired_wins(method: Sequence[float], baseline: Sequence[float]) -> int:
    """Number of seeds where ``method`` is strictly above ``baseline`` (values paired by seed)."""
    if len(method) != len(baseline):
        raise ValueError(f"paired values need equal lengths, got {len(method)} and {len(baseline)}")
    return int(sum(m > b for m, b in zip(method, baseline)))


def seed_stats(values: Iterable[float]) -> dict:
    """``{"mean", "std", "per_seed"}`` of one scalar measured on each seed (std with ddof=0)."""
    per_seed = [float(v) for v in values]
    array = np.asarray(per_seed, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std()), "per_seed": per_seed}


def stack_seeds(records: dict[int, dict], key: str) -> np.ndarray:
    """Stack a per-seed list ``record[key]`` into an array shaped (seeds, ...) in seed order."""
    return np.asarray([records[seed][key] for seed in sorted(records)], dtype=float)


@dataclass
class Evaluation:
    """What ``evaluate`` returns: checked claims, metrics (JSON-able) and figure file names."""

    claims: list[Claim]
    metrics: dict[str, Any]
    figures: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What one seed's run gets besides its config."""

    seed: int
    device: torch.device
    workdir: Path  # a per-seed scratch folder for checkpoints (for resuming inside a seed)
    show_progress: bool = False

    def progress(self, iterable, **kwargs):
        """Wrap ``iterable`` in tqdm when progress is shown, else return it unchanged."""
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, leave=False, **kwargs)


@dataclass
class Experiment:
    name: str
    paper: str
    presets: dict[str, Any]
    run_seed: Callable[[Any, RunContext], dict]
    evaluate: Callable[[Any, dict[int, dict], Path], Evaluation]
    quick_minutes: float
    claim_ids: tuple[str, ...] = ()  # every claim evaluate() returns, declared before any run
    bench: Callable[[bool], list] | None = None  # bench(quick) -> list[BenchRow]
    hidden: bool = False  # hidden experiments (test fixtures) are left out of list and reproduce
    devices: tuple[str, ...] = ("cpu",)  # devices run_seed honours through ctx.device; others are refused

    def __post_init__(self) -> None:
        missing = [p for p in PRESET_NAMES if p not in self.presets]
        if missing:
            raise ValueError(f"experiment {self.name!r} lacks presets {missing}")
        for preset, cfg in self.presets.items():
            if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "seeds"):
                raise TypeError(f"{self.name}: preset {preset!r} must be a dataclass with a 'seeds' field")
        unknown = [d for d in self.devices if d not in ("cpu", "cuda")]
        if "cpu" not in self.devices or unknown:
            raise ValueError(f"{self.name}: devices must include 'cpu' and be drawn from cpu, cuda; got {self.devices}")

    def config(self, preset: str, overrides: dict[str, str] | None = None, seeds: Sequence[int] | None = None):
        """The preset's config with ``--set`` overrides (strings parsed to the field types) and seeds."""
        if preset not in self.presets:
            raise KeyError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESET_NAMES)}")
        from tenfold.config import apply_overrides

        cfg = apply_overrides(self.presets[preset], overrides or {})
        if seeds is not None:
            cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds))
        return cfg
