"""Performance benchmarks, one module per experiment that has one.

A module here defines ``NAME`` (the experiment's registered name) and ``bench(quick: bool) ->
list[BenchRow]``: each row a ratio against a baseline measured in the same process (see
:mod:`tenfold.utils.bench`). ``tenfold bench`` pins the process to one thread once, before any
benchmark runs; a benchmark sets no threads itself. Adding a benchmark means adding one module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache

from tenfold import registry
from tenfold.utils.bench import BenchRow

Bench = Callable[[bool], list[BenchRow]]


@cache
def _discover() -> dict[str, Bench]:
    found: dict[str, Bench] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "NAME", None)
        if name is None:
            continue
        if name in found:
            raise RuntimeError(f"two benchmarks are named {name!r}")
        found[name] = module.bench
    return found


def names() -> list[str]:
    """Experiments that have a benchmark, in the registry's order."""
    found = _discover()
    return [name for name in registry.names() if name in found]


def get(name: str) -> Bench:
    """The benchmark of experiment ``name``; ``KeyError`` naming the valid ones if it has none."""
    found = _discover()
    if name not in found:
        raise KeyError(f"no benchmark for {name!r}; experiments with benchmarks: {', '.join(names()) or '(none)'}")
    return found[name]
