"""The results format shared by the runner (which writes it) and the report (which reads it).

One ``result.json`` per experiment run::

    {"experiment": "tam", "paper": "...", "preset": "quick", "seeds": [0, 1, 2],
     "evidence": true,                 # false at --preset smoke (see SMOKE_NOTE)
     "config": {...}, "claims": [{"id", "statement", "paper", "measured", "threshold", "passed", "note"}, ...],
     "metrics": {...}, "figures": ["loss.png"], "wall_s": 93.2, "env": {...},
     "tuning": {...},                  # optional: how each compared arm was tuned (tenfold.tuning.tuning_block)
     "convergence": {claim_id: {...}}} # optional: each compared arm's convergence (tenfold.train.loop.compare_convergence)

A claim's ``passed`` is ``true``, ``false`` or ``null`` (undecided: its premise was absent); its
``note`` says why a value is what it is (e.g. not finite). Results written before ``evidence``
existed are read as evidence unless their preset is ``smoke``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULT_FILE = "result.json"
SMOKE_PRESET = "smoke"
SMOKE_NOTE = "smoke preset: a check that the code runs, not evidence for or against the claims"
NOT_FINITE_NOTE = "measured value is not finite"

_RESULT_KEYS = {"experiment": str, "paper": str, "preset": str, "seeds": list, "config": dict, "claims": list,
                "figures": list, "wall_s": (int, float), "env": dict}
_CLAIM_KEYS = {"id": str, "statement": str, "paper": str, "measured": (int, float), "threshold": str,
               "passed": (bool, type(None))}


class ResultError(ValueError):
    """A result.json that cannot be read or lacks what the report needs."""


def is_evidence(result: dict) -> bool:
    """Whether a result counts as evidence for its claims (smoke runs do not)."""
    return bool(result.get("evidence", result.get("preset") != SMOKE_PRESET))


def evidence_fields(preset: str) -> dict:
    """The ``evidence`` flag (and, where it is false, the reason) for a run at ``preset``."""
    if preset == SMOKE_PRESET:
        return {"evidence": False, "evidence_note": SMOKE_NOTE}
    return {"evidence": True}


def default_note(measured: float, note: str) -> str:
    """``note``, or :data:`NOT_FINITE_NOTE` where the measurement is NaN or infinite and no note says why."""
    if note or math.isfinite(measured):
        return note
    return NOT_FINITE_NOTE


def read_result(path: Path) -> dict:
    """Read and check one result.json; raise :class:`ResultError` naming what is wrong with it."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ResultError(f"cannot read it ({error})") from None
    except json.JSONDecodeError as error:
        raise ResultError(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}; truncated?)") from None
    if not isinstance(result, dict):
        raise ResultError(f"expected a JSON object, got {type(result).__name__}")
    _check_fields(result, _RESULT_KEYS, "")
    for index, claim in enumerate(result["claims"]):
        if not isinstance(claim, dict):
            raise ResultError(f"claims[{index}] is not an object")
        _check_fields(claim, _CLAIM_KEYS, f"claims[{index}].")
    return result


def _check_fields(record: dict, fields: dict, where: str) -> None:
    missing = [key for key in fields if key not in record]
    if missing:
        raise ResultError(f"missing keys {', '.join(where + key for key in missing)}")
    for key, kind in fields.items():
        value = record[key]
        if not isinstance(value, kind) or (kind == (int, float) and isinstance(value, bool)):
            raise ResultError(f"{where}{key} has the wrong type ({type(value).__name__})")
