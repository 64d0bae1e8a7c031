"""Benchmark helper: warm-up, median of repeats, and a ratio against a baseline measured in the same
process (never an absolute time compared across runs or machines)."""

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_fn(fn: Callable[[], object], warmup: int = 3, repeats: int = 10, inner: int = 1,
            clock: str = "wall") -> float:
    """Median time in seconds of ``inner`` calls of ``fn``, divided by ``inner``.

    ``clock="wall"`` measures elapsed time; ``clock="cpu"`` the calling thread's CPU time, which
    equals the latency of single-threaded CPU work on an idle machine and is not inflated by other
    processes' load (it misses work done in other threads or on a GPU: use it at one thread only).
    """
    if warmup < 0 or repeats < 1 or inner < 1:
        raise ValueError("need warmup >= 0, repeats >= 1 and inner >= 1")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    _sync()
    samples = []
    for _ in range(repeats):
        start = now()
        for _ in range(inner):
            fn()
        _sync()
        samples.append((now() - start) / inner)
    return statistics.median(samples)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class BenchRow:
    """One benchmark measurement: ``ratio = method_s / baseline_s`` (below 1 means faster)."""

    name: str
    baseline: str
    method: str
    baseline_s: float
    method_s: float
    params: dict

    @property
    def ratio(self) -> float:
        return self.method_s / self.baseline_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def compare(name: str, baseline: tuple[str, Callable[[], object]], method: tuple[str, Callable[[], object]],
            warmup: int = 3, repeats: int = 10, inner: int = 1, clock: str = "wall", **params) -> BenchRow:
    """Time ``baseline`` and ``method`` interleaved in this process and return their ratio.

    The two are timed in alternation (baseline, method, baseline, ...) and the median of each is
    taken, so a slow phase of the machine hits both alike.
    """
    (base_name, base_fn), (meth_name, meth_fn) = baseline, method
    for _ in range(warmup):
        base_fn()
        meth_fn()
    base_times, meth_times = [], []
    for _ in range(repeats):
        base_times.append(time_fn(base_fn, warmup=0, repeats=1, inner=inner, clock=clock))
        meth_times.append(time_fn(meth_fn, warmup=0, repeats=1, inner=inner, clock=clock))
    return BenchRow(name, base_name, meth_name, statistics.median(base_times),
                    statistics.median(meth_times), params)
