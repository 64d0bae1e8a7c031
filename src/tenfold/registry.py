"""The experiment registry: every module in ``tenfold.experiments`` that defines ``EXPERIMENT``, and
every module named in the environment variable ``TENFOLD_EXPERIMENTS`` (comma-separated import paths,
for experiments that live outside the package: the test suite's ``toy`` fixture, or a user's own).

Adding an experiment means adding one module; nothing else is edited. The variable is read once per
process (worker processes inherit it, so a seed runs in a worker like any other).
"""

import importlib
import os
import pkgutil
from collections.abc import Iterator
from functools import cache
from types import ModuleType

from tenfold.experiment import Experiment

EXTRA_MODULES_VAR = "TENFOLD_EXPERIMENTS"


def _modules() -> Iterator[ModuleType]:
    import tenfold.experiments as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        yield importlib.import_module(f"{package.__name__}.{info.name}")
    for name in filter(None, (n.strip() for n in os.environ.get(EXTRA_MODULES_VAR, "").split(","))):
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as error:
            raise RuntimeError(f"{EXTRA_MODULES_VAR} names {name!r}, which cannot be imported: {error}") from None


@cache
def _discover() -> dict[str, Experiment]:
    found: dict[str, Experiment] = {}
    for module in _modules():
        experiment = getattr(module, "EXPERIMENT", None)
        if isinstance(experiment, Experiment):
            if experiment.name in found:
                raise RuntimeError(f"two experiments are named {experiment.name!r}")
            found[experiment.name] = experiment
    return found


def names(include_hidden: bool = False) -> list[str]:
    return [n for n, e in _discover().items() if include_hidden or not e.hidden]


def get(name: str) -> Experiment:
    experiments = _discover()
    if name not in experiments:
        raise KeyError(f"unknown experiment {name!r}; valid experiments: {', '.join(names()) or '(none)'}")
    return experiments[name]


def all_experiments(include_hidden: bool = False) -> list[Experiment]:
    return [get(n) for n in names(include_hidden)]
