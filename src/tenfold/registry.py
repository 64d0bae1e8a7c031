"""The experiment registry: every module in ``tenfold.experiments`` that defines ``EXPERIMENT``.

Adding an experiment means adding one module; nothing else is edited.
"""

import importlib
import pkgutil
from functools import cache

from tenfold.experiment import Experiment


@cache
def _discover() -> dict[str, Experiment]:
    import tenfold.experiments as package

    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
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
