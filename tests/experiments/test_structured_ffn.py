import dataclasses

import pytest

from tenfold.experiment import fill_claims
from tenfold.experiments.structured_ffn import (ARMS, CLAIMS, EXPERIMENT, PRESETS, comparison_convergence,
                                                dev_window, flop_ratio, premise_gap, tune_trial)
from tenfold.compute_matched import matched_steps

CONDITIONAL = ("structured-ffn.sgt-gap", "structured-ffn.sgt-vs-more-tokens")


def _measured(premise: float) -> dict:
    return {"structured-ffn.premise": premise, "structured-ffn.dense-beats-63": 0.01,
            "structured-ffn.63-beats-32": 0.01, "structured-ffn.sgt-gap": 0.5,
            "structured-ffn.sgt-vs-more-tokens": 0.01, "structured-ffn.speedup": 2.0}


def test_sgt_claim_is_conditional_on_the_premise():
    assert EXPERIMENT.claim_ids[0] == "structured-ffn.premise"
    spec = {c.id: c for c in CLAIMS}
    assert all(spec[claim].requires == "structured-ffn.premise" for claim in CONDITIONAL)
    assert all(c.requires is None for c in CLAIMS if c.id not in CONDITIONAL)
    held = {c.id: c for c in fill_claims(CLAIMS, _measured(0.05))}
    assert all(held[claim].status == "pass" for claim in CONDITIONAL)
    absent = {c.id: c for c in fill_claims(CLAIMS, _measured(0.01))}
    assert absent["structured-ffn.premise"].status == "fail"
    for claim in CONDITIONAL:
        assert absent[claim].status == "n/a" and absent[claim].note.startswith("n/a: premise absent")
    assert absent["structured-ffn.dense-beats-63"].status == "pass"


def test_premise_gap_is_the_first_quarter_mean_difference():
    cfg = PRESETS["smoke"].__class__(steps=8)
    records = {0: {"dense": {"losses": [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]},
                   "lowrank32": {"losses": [3.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}},
               1: {"dense": {"losses": [2.0] * 8}, "lowrank32": {"losses": [2.0] * 8}}}
    gap = premise_gap(cfg, records)
    assert gap["steps"] == 2 and gap["per_seed"] == [0.25, 0.0] and gap["mean"] == pytest.approx(0.125)


def test_more_tokens_arm_gets_the_sgt_runs_counted_flops():
    record = {"lowrank32": {"train_flops": 1.0e12}, "lowrank32_sgt": {"train_flops": 1.104e12}}
    assert flop_ratio(record) == pytest.approx(1.104)
    assert matched_steps(800, flop_ratio(record)) == 883


def test_development_windows_lie_after_the_claims_windows():
    cfg = PRESETS["smoke"]
    window = dev_window(cfg)
    assert window["eval_windows"] == cfg.dev_windows and window["eval_start"] >= cfg.eval_windows
    with pytest.raises(ValueError, match="dev_windows"):
        dev_window(dataclasses.replace(cfg, eval_windows=0))  # every window: nothing left to develop on
    with pytest.raises(ValueError, match="dev_windows"):
        dev_window(dataclasses.replace(cfg, dev_windows=10 ** 6))


def test_a_tuning_trial_trains_the_arm_at_its_own_lr_and_scores_the_development_windows():
    cfg = PRESETS["smoke"]
    base = tune_trial(cfg, "lowrank32", 1000)
    assert base["score"] < 0 and base["loss"] > 0
    assert tune_trial(cfg, "lowrank32", 1000) == base  # deterministic in the seed
    other_arm = tune_trial(dataclasses.replace(cfg, lr_dense=1e-1), "lowrank32", 1000)
    assert other_arm == base  # another arm's lr does not move this arm
    moved = tune_trial(dataclasses.replace(cfg, lr_lowrank32=1e-1), "lowrank32", 1000)
    assert moved["score"] != pytest.approx(base["score"])
    with pytest.raises(ValueError, match="arm"):
        tune_trial(cfg, "lowrank32_matched", 1000)


def test_every_comparison_claim_reports_its_arms_convergence_on_a_shared_budget():
    flat, falling = [1.0] * 50, [2.0 - 0.02 * i for i in range(50)]
    records = {s: {arm: {"losses": falling if arm == "lowrank32_sgt" else flat} for arm in ARMS} for s in (0, 1)}
    out = comparison_convergence(records, {arm: 1.0 for arm in ARMS})
    comparisons = {c.id for c in CLAIMS} - {"structured-ffn.premise", "structured-ffn.speedup"}
    assert set(out) == comparisons and all(entry["shared_budget"] for entry in out.values())
    assert set(out["structured-ffn.sgt-vs-more-tokens"]["arms"]) == {"lowrank32_sgt", "lowrank32_matched"}
    gap = out["structured-ffn.sgt-gap"]
    assert gap["mixed"] and gap["still_improving"] == ["lowrank32_sgt"]
    assert not out["structured-ffn.dense-beats-63"]["mixed"]
