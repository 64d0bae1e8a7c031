import dataclasses

import pytest

from tenfold.experiments import trecvit


def test_each_compared_arm_trains_direction_at_its_own_lr_and_the_rest_at_the_shared_one():
    cfg = dataclasses.replace(trecvit.PRESETS["smoke"], lr=0.5, direction_lr_trecvit=0.1,
                              direction_lr_factorised=0.2, direction_lr_joint=0.3)
    assert [trecvit.arm_lr(cfg, "direction", a) for a in ("trecvit", "factorised", "joint", "no_time")] == \
        [0.1, 0.2, 0.3, 0.5]
    assert {trecvit.arm_lr(cfg, "count", a) for a in trecvit.ARMS} == {0.5}


def test_a_tuning_trial_scores_on_the_development_set_at_the_arms_budget(monkeypatch):
    seen = []
    real_train = trecvit.train

    def spy(model, task, cfg, frames, steps, seed, lr=None, eval_seed=None):
        seen.append((type(model).__name__, steps, lr, eval_seed))
        return real_train(model, task, cfg, frames, steps, seed, lr, eval_seed)

    monkeypatch.setattr(trecvit, "train", spy)
    cfg = dataclasses.replace(trecvit.PRESETS["smoke"], direction_lr_joint=1e-3, direction_lr_trecvit=3e-3)
    out = trecvit.tune_trial(cfg, "joint", 1000)
    assert 0.0 <= out["score"] <= 1.0 and out["loss"] > 0
    trecvit.tune_trial(cfg, "trecvit", 1000)
    assert seen == [("ViViTJoint", cfg.baseline_steps, 1e-3, cfg.dev_eval_seed),
                    ("TRecViT", cfg.steps, 3e-3, cfg.dev_eval_seed)]
    assert cfg.dev_eval_seed != cfg.eval_seed


def test_the_comparisons_at_equal_steps_and_at_the_cap_are_both_reported():
    cfg = trecvit.PRESETS["smoke"]
    acc = {"direction/trecvit": 1.0, "direction/factorised": 0.5, "direction/joint": 0.6,
           "direction/factorised@cap": 0.9, "direction/joint@cap": 0.7}
    out = trecvit.direction_comparison(cfg, acc)
    assert out["equal_steps"]["margin"] == pytest.approx(0.4)
    assert out["baselines_at_cap"]["margin"] == pytest.approx(0.1)
    assert out["baselines_at_cap"]["baseline_steps"] == cfg.baseline_steps
