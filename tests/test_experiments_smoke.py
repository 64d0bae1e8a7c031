"""Every registered experiment: its presets are valid configs, and a smoke run completes, writes a
result.json with the declared claims, its figures exist, and its non-timing metrics equal the golden
ones in ``tests/golden/`` (rewrite them with ``python tests/golden/smoke_metrics.py NAME``)."""

import dataclasses
import json

import pytest

from tenfold import registry
from tenfold.experiment import PRESET_NAMES
from tenfold.runner import run_experiment

from tests.golden import smoke_metrics

NAMES = registry.names()

@pytest.mark.parametrize("name", NAMES)
def test_presets_are_complete(name):
    exp = registry.get(name)
    assert exp.claim_ids, "claims are declared up front"
    assert len(set(exp.claim_ids)) == len(exp.claim_ids)
    for preset in PRESET_NAMES:
        cfg = exp.config(preset)
        assert dataclasses.is_dataclass(cfg) and len(cfg.seeds) >= 1
    assert len(exp.config("quick").seeds) <= len(exp.config("full").seeds)


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run(name, tmp_path):
    exp = registry.get(name)
    result = run_experiment(exp, exp.config("smoke"), "smoke", tmp_path, workers=1, log=lambda m: None)
    saved = json.loads((tmp_path / name / "result.json").read_text())
    assert sorted(c["id"] for c in saved["claims"]) == sorted(exp.claim_ids)
    for figure in saved["figures"]:
        assert (tmp_path / name / figure).exists()
    assert result["wall_s"] < 120
    assert smoke_metrics.golden_path(name).exists(), f"no golden metrics: run python tests/golden/smoke_metrics.py {name}"
    changed = smoke_metrics.differences(name, saved["metrics"])
    assert not changed, f"{name} smoke metrics moved:\n" + "\n".join(changed[:20])
