"""Argument checks shared by every constructor: each raises ``ValueError`` naming the argument, the
valid range and the value it got."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, kind: str = "a number") -> None:
    """``value`` is a finite real in the interval from ``low`` to ``high`` (``None``: unbounded),
    each end closed unless ``low_open`` / ``high_open``; e.g. ``check_range("decay", d, 0, 1, high_open=True)``."""
    ok = _is_real(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
        right = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be {kind} in {left}, {right}, got {value!r}")


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    """``value`` is an integer (a Python or NumPy int, not a bool) with ``low <= value <= high`` where given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if high is None:
            bound = "" if low is None else f" >= {low}"
        else:
            bound = f" in [{'-inf' if low is None else low}, {high}]"
        raise ValueError(f"{name} must be an int{bound}, got {value!r}")


def check_positive(**values: Any) -> None:
    """Every keyword is an int >= 1 (sizes, counts, widths)."""
    for name, value in values.items():
        check_int(name, value, 1)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """``value`` is ``True`` or ``False`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
