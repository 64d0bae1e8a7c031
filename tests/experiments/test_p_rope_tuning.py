"""The tuning protocol in the p-rope experiment: NoPE, RoPE and 0.75-RoPE each train each task at their own
learning rate, chosen from one grid on development seeds by the accuracy on a development set at the
training length, and the compared arms' training-loss convergence is reported beside the claims."""

import dataclasses

import pytest
import torch

from tenfold.experiment import RunContext
from tenfold.experiments import p_rope
from tenfold.tuning import DEV_SEEDS, final_loss, tuning_block

SMOKE = p_rope.PRESETS["smoke"]


def test_compared_arms_train_at_their_own_lr_per_task_and_the_rest_at_the_shared_one():
    cfg = dataclasses.replace(SMOKE, lr=0.5, lr_p_nope=0.1, lr_p_rope=0.2, lr_p_prope=0.3, lr_s_nope=0.4,
                              lr_s_rope=0.6, lr_s_prope=0.7)
    assert [p_rope.arm_lr(cfg, "positional", a) for a in ("NoPE", "RoPE", "0.75-RoPE", "0.25-RoPE")] == \
        [0.1, 0.2, 0.3, 0.5]
    assert [p_rope.arm_lr(cfg, "semantic", a) for a in ("NoPE", "RoPE", "0.75-RoPE", "0.75-partial")] == \
        [0.4, 0.6, 0.7, 0.5]
    with pytest.raises(ValueError, match="task must be one of"):
        p_rope.arm_lr(cfg, "copy", "RoPE")


def test_moving_one_arms_lr_moves_only_that_arm_on_that_task():
    cpu = torch.device("cpu")
    moved = dataclasses.replace(SMOKE, lr_p_rope=1e-2)
    _, _, base = p_rope.train_task(SMOKE, "positional", "RoPE", 1000, cpu)
    _, _, other = p_rope.train_task(moved, "positional", "RoPE", 1000, cpu)
    assert base[0] == other[0] and base[-1] != other[-1]  # same data and init, another lr
    for task, arm in (("positional", "NoPE"), ("semantic", "RoPE")):
        assert p_rope.train_task(SMOKE, task, arm, 1000, cpu)[2] == p_rope.train_task(moved, task, arm, 1000, cpu)[2]


def test_a_trial_trains_as_the_claim_run_does_and_scores_on_the_development_stream(monkeypatch, tmp_path):
    ctx = RunContext(seed=1000, device=torch.device("cpu"), workdir=tmp_path)
    record = p_rope.run_seed(dataclasses.replace(SMOKE, arms=("RoPE",)), ctx)
    seen = []
    real_stream = p_rope.stream

    def spy(seed, task, kind):
        seen.append((task, kind[task]))
        return real_stream(seed, task, kind)

    monkeypatch.setattr(p_rope, "stream", spy)
    out = p_rope.tune_trial(SMOKE, "semantic-RoPE", 1000)
    assert out["loss"] == final_loss(record["arms"]["RoPE"]["s_loss"])  # the claim run's training, exactly
    assert seen == [("semantic", p_rope.TRAIN_STREAM["semantic"]), ("semantic", p_rope.DEV_STREAM["semantic"])]
    assert set(p_rope.DEV_STREAM.values()).isdisjoint({*p_rope.TRAIN_STREAM.values(), *p_rope.TEST_STREAM.values()})
    assert 0.0 <= out["score"] <= 1.0
    assert p_rope.tune_trial(SMOKE, "semantic-RoPE", 1000) == out  # deterministic in the seed
    with pytest.raises(ValueError, match="arm must be one of"):
        p_rope.tune_trial(SMOKE, "semantic-0.25-RoPE", 1000)


def test_convergence_reported_beside_the_claims_of_each_task():
    falling = [2.0 - 0.01 * i for i in range(100)]
    flat = [0.5] * 100
    arms = {"NoPE": {"p_loss": falling, "s_loss": flat}, "RoPE": {"p_loss": flat, "s_loss": flat},
            "0.75-RoPE": {"p_loss": flat, "s_loss": flat}}
    scores = {"positional": {"NoPE": 0.2, "RoPE": 1.0, "0.75-RoPE": 1.0},
              "semantic": {"NoPE": 1.0, "RoPE": 0.1, "0.75-RoPE": 0.4}}
    conv = p_rope.comparison_convergence({0: {"arms": arms}}, list(arms), scores)
    assert set(conv) == {*p_rope.CONVERGENCE_CLAIMS["positional"], *p_rope.CONVERGENCE_CLAIMS["semantic"]}
    positional, semantic = conv["p-rope.nope-positional"], conv["p-rope.prope-semantic-long-range"]
    assert positional["shared_budget"] and positional["mixed"] and positional["still_improving"] == ["NoPE"]
    assert positional["arms"]["NoPE"]["score"] == 0.2
    assert set(semantic["arms"]) == {"RoPE", "0.75-RoPE"} and not semantic["mixed"]
    only_rope = p_rope.comparison_convergence({0: {"arms": {"RoPE": arms["RoPE"]}}}, ["RoPE"], scores)
    assert set(only_rope["p-rope.nope-positional"]["arms"]) == {"RoPE"}
    assert p_rope.comparison_convergence({0: {"arms": {"RoPE": {}}}}, ["RoPE"], scores) == {}  # older records


def test_defaults_are_the_recorded_choice_and_no_claim_seed_was_tuned_on():
    assert set(p_rope.TUNING.fields) == {f"{task}-{arm}" for task, arm in p_rope.ARM_LR}
    for name, record in p_rope.TUNING.record.items():
        task, _, arm = name.partition("-")
        assert set(record.seeds) <= set(DEV_SEEDS) and record.grid == {"lr": p_rope.LR_GRID}  # one grid for all
        assert record.chosen["lr"] == p_rope.arm_lr(p_rope.PRESETS["quick"], task, arm)
        best = max(record.scores.values())  # the rule: best score; ties (accuracy 1) go to the lower loss
        assert record.scores[f"lr={record.chosen['lr']:g}"] == best
    for preset, cfg in p_rope.PRESETS.items():
        block = tuning_block(p_rope.TUNING, cfg, cfg.seeds)
        assert all(entry["tuned"] and entry["as_chosen"] for entry in block["arms"].values()), preset
        assert block["seeds_tuned_on_in_this_run"] == []
