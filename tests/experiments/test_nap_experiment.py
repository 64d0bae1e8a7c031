"""The nap experiment: compute-matched arms (ln given NaP's cost per step makes more updates per
batch, and is ln itself at a ratio of one; base given NaP's cost trains more steps), each compared
arm's tuned lr, the tuning trial and the loss curves behind the convergence report."""

import dataclasses

import pytest

from tenfold.experiments import nap

TINY = dataclasses.replace(nap.PRESETS["smoke"], tasks=2, steps_per_task=8, stat_steps=5)


def test_ln_matched_at_ratio_one_is_ln():
    cfg = dataclasses.replace(TINY, matched_cost=1.0)
    ln, matched = nap.train_random_labels(cfg, "ln", 0), nap.train_random_labels(cfg, "ln_matched", 0)
    assert matched["online"] == ln["online"] and matched["norm"] == ln["norm"]


def test_ln_matched_makes_more_updates_on_the_same_stream():
    cfg = dataclasses.replace(TINY, matched_cost=2.0)
    ln, matched = nap.train_random_labels(cfg, "ln", 0), nap.train_random_labels(cfg, "ln_matched", 0)
    assert matched["online"][0] != ln["online"][0] and matched["norm"][-1] != ln["norm"][-1]


def test_base_matched_trains_the_matched_steps():
    cfg = dataclasses.replace(TINY, stat_matched_cost=1.4)
    assert nap.train_stationary(cfg, "base", 0)["steps"] == 5
    assert nap.train_stationary(cfg, "base_matched", 0)["steps"] == 7


def test_a_matched_cost_below_one_is_refused():
    with pytest.raises(ValueError, match="matched_cost"):
        nap.train_random_labels(dataclasses.replace(TINY, matched_cost=0.5), "ln_matched", 0)


def test_each_compared_arm_trains_at_its_own_lr_and_a_report_only_arm_at_its_parents():
    cfg = dataclasses.replace(TINY, lr_base=0.1, lr_ln=0.2, lr_nap=0.3, stat_lr=0.4, stat_lr_base=0.5,
                              stat_lr_nap=0.6)
    assert [nap.arm_lr(cfg, a) for a in nap.ARMS] == [0.1, 0.2, 0.3, 0.3, 0.2, 0.1, 0.2]
    assert [nap.stat_arm_lr(cfg, a) for a in nap.STAT_ARMS] == [0.5, 0.4, 0.6, 0.5]


def test_the_lr_reaches_the_optimizer():
    slow = nap.train_random_labels(dataclasses.replace(TINY, lr_ln=1e-6), "ln", 0)
    fast = nap.train_random_labels(dataclasses.replace(TINY, lr_ln=1e-2), "ln", 0)
    assert slow["norm"][-1] == pytest.approx(slow["norm"][0], rel=1e-4)
    assert fast["norm"][-1] != pytest.approx(fast["norm"][0], rel=1e-4)


def test_a_tuning_trial_scores_the_claims_metric_on_the_development_seed():
    out = nap.tune_trial(TINY, "nap", 1000)
    run = nap.train_random_labels(TINY, "nap", 1000)
    assert out["score"] == pytest.approx(sum(run["online"][-5:]) / len(run["online"][-5:]))
    assert out["loss"] == pytest.approx(run["task_loss"][-1])
    stat = nap.tune_trial(TINY, "stat_base", 1000)
    assert stat["score"] == nap.train_stationary(TINY, "base", 1000)["test_acc"]


def test_every_tuned_arm_has_a_record_that_chose_the_configs_default():
    spec = nap.TUNING
    assert sorted(spec.record) == sorted(spec.fields)
    for preset in ("quick", "full"):
        cfg = nap.PRESETS[preset]
        for arm, fields in spec.fields.items():
            assert getattr(cfg, fields["lr"]) == spec.record[arm].chosen["lr"], (preset, arm)


def test_the_loss_curves_for_convergence_are_recorded_per_task():
    run = nap.train_random_labels(TINY, "ln", 0)
    assert len(run["task_loss"]) == TINY.tasks and len(run["last_task_loss"]) == TINY.steps_per_task
    assert run["task_loss"][-1] == pytest.approx(sum(run["last_task_loss"]) / TINY.steps_per_task)
    assert len(nap.train_stationary(TINY, "nap", 0)["losses"]) == TINY.stat_steps


def test_convergence_is_reported_beside_each_comparison_and_flags_a_mixed_pair():
    flat, falling = [1.0] * 100, [2.0 - 0.01 * i for i in range(100)]
    records = {0: {"nap": {"last_task_loss": flat}, "ln": {"last_task_loss": falling},
                   "base": {"last_task_loss": falling},
                   "stationary": {"nap": {"losses": flat}, "base": {"losses": flat},
                                  "base_matched": {"losses": falling}}}}
    late = {arm: nap.np.array([0.5]) for arm in ("nap", "ln", "base")}
    stat = {arm: nap.np.array([0.8]) for arm in ("nap", "base", "base_matched")}
    out = nap.comparison_convergence(TINY, records, late, stat)
    assert sorted(out) == ["nap.ln-beats-base", "nap.plasticity", "nap.stationary"]
    assert out["nap.plasticity"]["mixed"] and out["nap.plasticity"]["still_improving"] == ["ln"]
    assert not out["nap.ln-beats-base"]["mixed"] and out["nap.ln-beats-base"]["shared_budget"]
    assert not out["nap.stationary"]["mixed"] and not out["nap.stationary"]["reference"]["base_matched"]["converged"]
