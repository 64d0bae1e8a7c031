"""Golden smoke metrics: every experiment's non-timing metrics at ``--preset smoke`` on the preset's
fixed seeds, kept as ``tests/golden/<name>.json``. A refactor keeps them bit-identical; a change
that is meant to move a number rewrites its file in the same commit and says why.

Rewrite every golden file (after an intended change) with::

    python tests/golden/smoke_metrics.py [NAME ...]
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent
# A metric is timing (and so machine-dependent) when any part of its path matches this.
TIMING = re.compile(r"cpu_s|wall_s|_ms\b|_ms_|timing|latency|speedup|s_per_step|cpu_ratio")


def flatten(value, path: str = "") -> dict[str, object]:
    """``{"a/b/0": leaf}`` for every leaf of nested dicts and lists."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {path: value}
    out: dict[str, object] = {}
    for key, child in items:
        out.update(flatten(child, f"{path}/{key}" if path else str(key)))
    return out


def non_timing(metrics: dict) -> dict[str, object]:
    """The metrics that must not depend on the machine's speed, flattened, NaN written as "nan"."""
    flat = flatten(metrics)
    return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
            for k, v in sorted(flat.items()) if not TIMING.search(k)}


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def differences(name: str, metrics: dict) -> list[str]:
    """Lines naming every golden metric of ``name`` that ``metrics`` does not reproduce exactly."""
    expected = json.loads(golden_path(name).read_text())
    got = non_timing(json.loads(json.dumps(metrics)))  # the same JSON round trip as result.json
    lines = [f"{k}: golden {expected[k]!r}, now {got.get(k, '<missing>')!r}"
             for k in expected if got.get(k, "<missing>") != expected[k]]
    lines += [f"{k}: new metric {got[k]!r}" for k in got if k not in expected]
    return lines


def write(names: list[str]) -> None:
    from tenfold import registry
    from tenfold.runner import run_experiment
    from tenfold.utils.threads import single_thread

    single_thread()
    for name in names:
        exp = registry.get(name)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_experiment(exp, exp.config("smoke"), "smoke", Path(tmp), workers=1, log=lambda m: None)
        golden_path(name).write_text(json.dumps(non_timing(json.loads(json.dumps(result["metrics"]))),
                                                indent=1, sort_keys=True) + "\n")
        print(f"wrote {golden_path(name)}")


if __name__ == "__main__":
    from tenfold import registry

    write(sys.argv[1:] or registry.names())
