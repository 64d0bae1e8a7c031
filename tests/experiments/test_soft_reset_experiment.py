"""The soft-reset experiment's fair baselines: each compared arm trains at its own tuned lr (the
report-only baselines at online SGD's), the tuning trial scores the claims' metric on a development
seed, and the last task's loss is kept for the convergence report beside each comparison."""

import dataclasses

import numpy as np
import pytest

from tenfold.experiments import soft_reset as sr

TINY = sr.PRESETS["smoke"]


def test_hard_reset_has_its_own_lr_and_the_other_baselines_take_sgds():
    cfg = dataclasses.replace(TINY, lr_sgd=0.1, lr_hard=0.2, lr_soft=0.3)
    assert [sr.baseline_lr(cfg, arm) for arm in sr.BASELINE_ARMS] == [0.1, 0.2, 0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match="arm must be one of"):
        sr.baseline_lr(cfg, "soft")


def test_soft_reset_is_built_at_its_own_lr():
    cfg = dataclasses.replace(TINY, lr_sgd=0.1, lr_soft=0.3)
    opt = sr.make_soft_reset(cfg, sr.make_model(cfg, 0), 0)
    assert {group["lr"] for group in opt.param_groups} == {0.3}


def test_the_lr_reaches_each_baseline():
    slow = sr.run_baseline(dataclasses.replace(TINY, lr_sgd=1e-4), 0, "sgd")
    fast = sr.run_baseline(dataclasses.replace(TINY, lr_sgd=0.1), 0, "sgd")
    assert slow["last_task_loss"] != fast["last_task_loss"]
    hard_only = sr.run_baseline(dataclasses.replace(TINY, lr_sgd=0.1, lr_hard=1e-4), 0, "sgd")
    assert hard_only["last_task_loss"] == fast["last_task_loss"]
    assert len(fast["last_task_loss"]) == TINY.steps_per_task


def test_a_tuning_trial_scores_the_claims_metric_on_the_development_seed():
    out = sr.tune_trial(TINY, "hard", 1000)
    run = sr.run_baseline(TINY, 1000, "hard")
    assert out["score"] == pytest.approx(float(np.mean(run["per_task"])))
    assert out["loss"] == pytest.approx(float(np.mean(run["last_task_loss"])))
    assert 0.0 <= sr.tune_trial(TINY, "soft", 1000)["score"] <= 1.0


def test_every_tuned_arm_has_a_record_that_chose_the_configs_default():
    spec = sr.TUNING
    assert sorted(spec.record) == sorted(spec.fields) == ["hard", "sgd", "soft"]
    for preset in ("quick", "full"):
        cfg = sr.PRESETS[preset]
        for arm, fields in spec.fields.items():
            assert getattr(cfg, fields["lr"]) == spec.record[arm].chosen["lr"], (preset, arm)


def test_convergence_is_reported_beside_both_comparisons():
    flat, falling = [1.0] * 100, [2.0 - 0.01 * i for i in range(100)]
    records = {0: {"soft": {"last_task_loss": flat}, "sgd": {"last_task_loss": falling},
                   "hard": {"last_task_loss": flat}, "sgd_matched": {"last_task_loss": flat}}}
    acc = {arm: {"mean": 0.5} for arm in ("soft", "sgd", "hard", "sgd_matched")}
    out = sr.comparison_convergence(records, acc)
    assert sorted(out) == ["soft-reset.beats-sgd", "soft-reset.matches-hard"]
    assert out["soft-reset.beats-sgd"]["mixed"] and out["soft-reset.beats-sgd"]["still_improving"] == ["sgd"]
    assert out["soft-reset.beats-sgd"]["reference"]["sgd_matched"]["converged"]
    assert not out["soft-reset.matches-hard"]["mixed"] and not out["soft-reset.matches-hard"]["reference"]
    assert out["soft-reset.matches-hard"]["shared_budget"]


def test_soft_reset_records_its_last_tasks_loss():
    run = sr.run_soft(TINY, 0)
    assert len(run["last_task_loss"]) == TINY.steps_per_task and all(np.isfinite(run["last_task_loss"]))
