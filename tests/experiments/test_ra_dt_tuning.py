"""The tuning protocol in the ra-dt experiment: DT's, AD's and RA-DT's learning rates are each chosen from
one grid on development seeds, scored on the development seed's own held-out goals, and the compared arms'
training-loss convergence is reported beside ra-dt.beats-dt and ra-dt.vs-ad."""

import dataclasses
import math

import numpy as np
import pytest

from tenfold.envs.dark_room import goal_split
from tenfold.experiments import ra_dt
from tenfold.tuning import DEV_SEEDS, tuning_block

SMOKE = ra_dt.PRESETS["smoke"]


def test_defaults_are_the_recorded_choice():
    assert set(ra_dt.TUNING.fields) == set(ra_dt.TUNED_ARMS) == {"dt", "ad", "radt"}
    quick = ra_dt.PRESETS["quick"]
    for arm in ra_dt.TUNED_ARMS:
        record = ra_dt.TUNING.record[arm]
        assert set(record.seeds) <= set(DEV_SEEDS) and record.preset == "quick"
        assert set(ra_dt.LR_GRID) <= set(record.grid["lr"])  # one grid for every arm (edges extended)
        assert record.chosen["lr"] == ra_dt.arm_lr(quick, arm)
    for preset, cfg in ra_dt.PRESETS.items():
        block = tuning_block(ra_dt.TUNING, cfg, cfg.seeds)
        assert all(block["arms"][arm]["as_chosen"] for arm in ra_dt.TUNED_ARMS), preset
        assert block["seeds_tuned_on_in_this_run"] == []  # no claim seed was tuned on


def test_each_arm_trains_at_its_own_lr():
    cfg = dataclasses.replace(SMOKE, lr_dt=1e-3, lr_ad=2e-3, lr_radt=3e-3)
    assert [ra_dt.arm_lr(cfg, arm) for arm in ("dt", "ad", "radt")] == [1e-3, 2e-3, 3e-3]
    with pytest.raises(ValueError, match="arm must be one of"):
        ra_dt.arm_lr(cfg, "radt_random")
    base = ra_dt.tune_trial(cfg, "dt", 1000)
    assert ra_dt.tune_trial(dataclasses.replace(cfg, lr_ad=5e-3, lr_radt=5e-3), "dt", 1000) == base
    assert ra_dt.tune_trial(dataclasses.replace(cfg, lr_dt=5e-3), "dt", 1000)["loss"] != base["loss"]


def test_trial_scores_on_the_development_seeds_own_held_out_goals(monkeypatch):
    seen = []
    evaluate_in_context = ra_dt.evaluate_in_context

    def spy(kind, model, goals, *args, **kwargs):
        seen.append((kind, np.asarray(goals).copy()))
        return evaluate_in_context(kind, model, goals, *args, **kwargs)

    monkeypatch.setattr(ra_dt, "evaluate_in_context", spy)
    out = ra_dt.tune_trial(SMOKE, "radt", 1001)
    _, held_out = goal_split(SMOKE.size, SMOKE.n_eval_goals, seed=1001)
    assert [kind for kind, _ in seen] == ["radt"] and np.array_equal(seen[0][1], held_out)
    assert math.isfinite(out["loss"]) and 0.0 <= out["score"] <= 1.0
    assert ra_dt.tune_trial(SMOKE, "radt", 1001) == out  # deterministic in the seed
    with pytest.raises(ValueError, match="arm must be one of"):
        ra_dt.tune_trial(SMOKE, "radt_no_exclusion", 1001)


def test_convergence_reported_beside_both_comparison_claims():
    falling = [2.0 - 0.01 * i for i in range(100)]
    flat = [0.5] * 100
    records = {0: {"train_loss": {"radt": falling, "dt": flat, "ad": flat}},
               1: {"train_loss": {"radt": flat, "dt": flat, "ad": flat}}}
    conv = ra_dt.comparison_convergence(records, {"radt": 0.3, "dt": 0.1, "ad": 0.05})
    assert set(conv) == {"ra-dt.beats-dt", "ra-dt.vs-ad"}
    assert set(conv["ra-dt.beats-dt"]["arms"]) == {"radt", "dt"} and set(conv["ra-dt.vs-ad"]["arms"]) == {"radt", "ad"}
    entry = conv["ra-dt.vs-ad"]
    assert entry["shared_budget"] is True and entry["mixed"] is True
    assert entry["arms"]["radt"]["converged_seeds"] == 1 and entry["arms"]["ad"]["converged"]
    assert entry["arms"]["ad"]["score"] == 0.05
    assert ra_dt.comparison_convergence({0: {"loss_dt": []}}, {}) == {}  # records from before every loss was kept
