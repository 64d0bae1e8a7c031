"""What an experiment is: a config dataclass with presets, a function that runs one seed, a table of
the claims it checks, and a function that turns the seeds' records into metrics, figures and the
measured value of each claim.

An experiment module in ``tenfold.experiments`` defines a module-level ``EXPERIMENT``::

    @dataclass
    class Config:
        seeds: tuple[int, ...] = (0, 1, 2)
        steps: int = 500

    PRESETS = {"smoke": Config(seeds=(0,), steps=5), "quick": Config(), "full": Config(seeds=tuple(range(10)))}

    CLAIMS = (
        ClaimSpec("tam.stable-lr", "TAM stays stable where SGD with momentum diverges",
                  paper="...", threshold=">= 1.3"),
        ...
    )

    def run_seed(cfg: Config, ctx: RunContext) -> dict: ...   # JSON-able record of one seed
    def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
        ...
        return Evaluation(measured={"tam.stable-lr": 2.4, ...}, metrics=..., figures=[...])

    EXPERIMENT = Experiment(name="tam", paper="...", presets=PRESETS, run_seed=run_seed,
                            evaluate=evaluate, quick_minutes=2.5, claims=CLAIMS)

``run_seed`` and ``evaluate`` must be module-level functions (seeds run in worker processes).
Each claim's id, statement, paper statement and threshold are declared once, in the ``ClaimSpec``
table; ``evaluate`` only measures, and the runner fills the table (:func:`fill_claims`), refusing an
evaluation that measures a different set of claims (no claim is silently dropped). A claim that is
conditional in the paper itself names its premise with ``requires``: where the premise failed, it is
reported as "n/a: premise absent" (neither a pass nor a failure) - never a way around a failing claim.
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

from tenfold.tuning import TuningSpec

PRESET_NAMES = ("smoke", "quick", "full")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
_THRESHOLD = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+|inf|-inf)\s*$")


@dataclass
class Claim:
    """A predicate on a measured number: ``measured <op> bound``, e.g. ``2.4 >= 1.3``.

    ``passed`` is ``None`` where the claim could not be decided because its premise (``requires``)
    failed; ``note`` says why a value is what it is (e.g. NaN, or the premise's measurement).
    """

    id: str
    statement: str
    paper: str
    measured: float
    threshold: str
    passed: bool | None
    note: str = ""
    requires: str | None = None

    @property
    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"n/a"``."""
        return "n/a" if self.passed is None else ("pass" if self.passed else "fail")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if out["requires"] is None:
            del out["requires"]
        return out


def _parse_threshold(threshold: str) -> tuple[str, str]:
    match = _THRESHOLD.match(threshold)
    if match is None:
        raise ValueError(f"threshold must look like '>= 1.3' (ops {sorted(_OPS)}), got {threshold!r}")
    return match.group(1), match.group(2)


def check(id: str, statement: str, paper: str, measured: float, threshold: str, note: str = "") -> Claim:
    """Evaluate ``measured`` against ``threshold`` (one of ``>= x``, ``<= x``, ``> x``, ``< x``, ``== x``).

    A non-finite measurement fails every threshold.
    """
    op, bound = _parse_threshold(threshold)
    measured = float(measured)
    passed = math.isfinite(measured) and _OPS[op](measured, float(bound))
    return Claim(id, statement, paper, measured, f"{op} {bound}", bool(passed), note)


@dataclass(frozen=True)
class ClaimSpec:
    """One row of an experiment's claim table: what is claimed and the threshold, fixed before any run.

    ``requires`` names the id of a premise claim of the same experiment (declared earlier in the
    table), for claims that the paper itself states conditionally.
    """

    id: str
    statement: str
    paper: str
    threshold: str
    requires: str | None = None

    def __post_init__(self) -> None:
        _parse_threshold(self.threshold)

    def check(self, measured: float, note: str = "") -> Claim:
        claim = check(self.id, self.statement, self.paper, measured, self.threshold, note)
        claim.requires = self.requires
        return claim


def fill_claims(specs: Sequence[ClaimSpec], measured: dict[str, float],
                notes: dict[str, str] | None = None) -> list[Claim]:
    """The claims of ``specs`` checked against ``measured`` (one value per id, no more, no fewer);
    a claim whose premise failed or was undecided becomes "n/a: premise absent"."""
    notes = notes or {}
    declared = [spec.id for spec in specs]
    if sorted(measured) != sorted(declared):
        missing = sorted(set(declared) - set(measured))
        extra = sorted(set(measured) - set(declared))
        raise ValueError(f"measured claims differ from the table: missing {missing}, undeclared {extra}")
    unknown_notes = sorted(set(notes) - set(declared))
    if unknown_notes:
        raise ValueError(f"notes for undeclared claims {unknown_notes}")
    claims: dict[str, Claim] = {}
    for spec in specs:
        claim = spec.check(measured[spec.id], notes.get(spec.id, ""))
        premise = claims.get(spec.requires) if spec.requires else None
        if premise is not None and not premise.passed:
            claim.passed = None
            why = (f"n/a: premise absent ({premise.id} measured {premise.measured:.4g}, "
                   f"needs {premise.threshold})")
            claim.note = f"{why}; {claim.note}" if claim.note else why
        claims[spec.id] = claim
    return list(claims.values())


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
    """What ``evaluate`` returns: the measured value of each claim of the experiment's table (and an
    optional note per claim), metrics (JSON-able) and figure file names. The runner fills the table
    from ``measured`` (:func:`fill_claims`).

    ``convergence`` (optional) maps a comparison claim's id to the convergence of its arms,
    ``tenfold.train.loop.compare_convergence({arm: losses per seed, ...})``; the runner writes it to
    result.json and notes a claim whose arms are mixed (one still improving, another converged)."""

    metrics: dict[str, Any]
    figures: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    convergence: dict[str, dict] = field(default_factory=dict)


@dataclass
class RunContext:
    """What one seed's run gets besides its config."""

    seed: int
    device: torch.device
    workdir: Path  # a per-seed scratch folder for checkpoints (for resuming inside a seed)
    show_progress: bool = False
    tracker: Any = None  # the runner's step counter (tenfold.progress.SeedTracker), for progress lines

    def progress(self, iterable, **kwargs):
        """Wrap ``iterable`` in tqdm when progress is shown (a terminal), and count its steps for the
        runner's progress lines; ``kwargs`` are tqdm's (``desc``, ``total``)."""
        kwargs.setdefault("total", _length(iterable))
        if self.tracker is not None:
            iterable = self.tracker.wrap(iterable, total=kwargs["total"], desc=kwargs.get("desc"))
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, leave=False, **kwargs)


def _length(iterable) -> int | None:
    return len(iterable) if hasattr(iterable, "__len__") else None


@dataclass
class Experiment:
    name: str
    paper: str
    presets: dict[str, Any]
    run_seed: Callable[[Any, RunContext], dict]
    evaluate: Callable[[Any, dict[int, dict], Path], Evaluation]
    quick_minutes: float
    claims: tuple[ClaimSpec, ...] = ()  # the claim table, declared before any run (at least one row)
    hidden: bool = False  # hidden experiments (test fixtures) are left out of list and reproduce
    devices: tuple[str, ...] = ("cpu",)  # devices run_seed honours through ctx.device; others are refused
    needs: Callable[[Any], dict[str, str]] | None = None  # cfg -> {optional module it imports: the pip extra}
    tuning: TuningSpec | None = None  # how the arms of its comparison claims are tuned (tenfold.tuning)

    def __post_init__(self) -> None:
        if not self.claims:
            raise ValueError(f"{self.name}: an experiment declares its claims (claims=(ClaimSpec(...), ...))")
        ids = self.claim_ids
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.name}: duplicate claim ids in {ids}")
        for index, spec in enumerate(self.claims):
            if spec.requires is not None and spec.requires not in ids[:index]:
                raise ValueError(f"{self.name}: claim {spec.id!r} requires {spec.requires!r}, "
                                 "which must be a claim declared before it")
        missing = [p for p in PRESET_NAMES if p not in self.presets]
        if missing:
            raise ValueError(f"experiment {self.name!r} lacks presets {missing}")
        for preset, cfg in self.presets.items():
            if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "seeds"):
                raise TypeError(f"{self.name}: preset {preset!r} must be a dataclass with a 'seeds' field")
        if self.tuning is not None:
            self.tuning.check(self.name, self.presets)
        unknown = [d for d in self.devices if d not in ("cpu", "cuda")]
        if "cpu" not in self.devices or unknown:
            raise ValueError(f"{self.name}: devices must include 'cpu' and be drawn from cpu, cuda; got {self.devices}")

    @property
    def claim_ids(self) -> tuple[str, ...]:
        """The ids of the claim table, in its order."""
        return tuple(spec.id for spec in self.claims)

    def config(self, preset: str, overrides: dict[str, str] | None = None, seeds: Sequence[int] | None = None):
        """The preset's config with ``--set`` overrides (strings parsed to the field types) and seeds."""
        if preset not in self.presets:
            raise KeyError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESET_NAMES)}")
        from tenfold.config import apply_overrides

        cfg = apply_overrides(self.presets[preset], overrides or {})
        if seeds is not None:
            cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds))
        return cfg
