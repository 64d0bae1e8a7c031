"""The tuning protocol in the compositional experiment: the transformer's and the bottleneck's lr each come
from one grid on development seeds, scored on development tasks of the training combinations, and the
convergence of each comparison claim's arms is reported beside it."""

import dataclasses
import math

import pytest
import torch

from tenfold.experiments import compositional as C
from tenfold.tuning import DEV_SEEDS, tuning_block

SMOKE = C.PRESETS["smoke"]


def test_each_arm_trains_at_its_own_lr():
    cfg = dataclasses.replace(SMOKE, lr_transformer=1e-3, lr_bottleneck=2e-3, lr_oracle=4e-3)
    assert [C.arm_lr(cfg, arm) for arm in ("transformer", "bottleneck", "oracle", "bottleneck_deepset")] == \
        [1e-3, 2e-3, 4e-3, 2e-3]  # an encoder ablation is a bottleneck


def test_quick_and_full_use_the_chosen_lrs_and_record_the_sweep():
    C.TUNING.check("compositional", C.PRESETS)
    assert set(C.TUNING.fields) == set(C.TUNED_ARMS) == set(C.TUNING.record)
    for preset in ("quick", "full"):
        cfg = C.PRESETS[preset]
        block = tuning_block(C.TUNING, cfg, cfg.seeds)
        assert block["seeds_tuned_on_in_this_run"] == []  # no claim seed was tuned on
        for arm, record in C.TUNING.record.items():
            assert set(record.seeds) <= set(DEV_SEEDS) and record.preset == "quick"
            assert record.chosen["lr"] == C.arm_lr(cfg, arm) and block["arms"][arm]["as_chosen"]


def test_development_tasks_are_apart_from_the_claims_sets():
    sampler = C.make_samplers(SMOKE, 1000)["connected"]
    dev = C.dev_sets(SMOKE, sampler, 1000)
    claim_id = sampler.sample(SMOKE.eval_tasks, "id", torch.Generator().manual_seed(1000 + 15485863),
                              n_query=SMOKE.eval_queries)
    assert dev["id"].x_ctx.shape[0] == SMOKE.dev_tasks
    assert not torch.equal(dev["id"].x_ctx[:8], claim_id.x_ctx[:8])
    trained_on = {tuple(sorted(c)) for c in sampler.split.id}
    active = [tuple(torch.nonzero(z).flatten().tolist()) for z in dev["ood"].z]
    assert active and not trained_on & set(active)  # the OOD development tasks are unseen combinations
    assert {tuple(torch.nonzero(z).flatten().tolist()) for z in dev["id"].z} <= trained_on


def test_a_tuning_trial_scores_development_id_tasks_at_the_arm_lr():
    out = C.tune_trial(SMOKE, "bottleneck", 1000)
    assert set(out) == {"score", "loss", "r2_ood"} and all(math.isfinite(v) for v in out.values())
    assert C.tune_trial(SMOKE, "bottleneck", 1000) == out  # deterministic in the seed
    assert C.tune_trial(dataclasses.replace(SMOKE, lr_transformer=1e-1), "bottleneck", 1000) == out
    assert C.tune_trial(dataclasses.replace(SMOKE, lr_bottleneck=1e-2), "bottleneck", 1000) != out
    with pytest.raises(ValueError, match="arm"):
        C.tune_trial(SMOKE, "oracle", 1000)


def test_convergence_reported_beside_each_comparison_claim():
    falling = [2.0 - 0.01 * i for i in range(100)]
    flat = [0.5] * 100

    def arm(losses):
        return {"train_loss": losses}

    records = {s: {"connected": {"transformer": arm(falling if s == 0 else flat), "bottleneck": arm(flat)},
                   "disconnected": {"bottleneck": arm(flat)}} for s in (0, 1)}
    means = {"connected": {"transformer": {"r2_ood": 0.6}, "bottleneck": {"r2_ood": 0.9}},
             "disconnected": {"bottleneck": {"r2_ood": 0.7}}}
    conv = C.comparison_convergence(SMOKE, records, means)
    assert set(conv) == {"compositional.gap", "compositional.transformer-drop", "compositional.disconnected"}
    gap = conv["compositional.gap"]
    assert gap["shared_budget"] and gap["mixed"] and gap["still_improving"] == ["transformer (connected)"]
    assert gap["arms"]["transformer (connected)"]["converged_seeds"] == 1
    assert gap["arms"]["bottleneck (connected)"]["score"] == 0.9
    assert not conv["compositional.disconnected"]["mixed"]
    no_control = dataclasses.replace(SMOKE, negative_control=False)
    assert "compositional.disconnected" not in C.comparison_convergence(no_control, records, means)
    old = {s: {"connected": {"transformer": {}, "bottleneck": {}}, "disconnected": {"bottleneck": {}}} for s in (0,)}
    assert C.comparison_convergence(SMOKE, old, means) == {}  # records from before every loss was kept
