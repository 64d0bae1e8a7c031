"""The tuning protocol in the lram experiment: each backbone's lr is chosen from one grid on development
seeds, scored on development reset seeds, and both backbones' training-loss convergence is reported
beside the two comparison claims."""

import dataclasses
import math

import pytest

from tenfold.experiments import lram
from tenfold.tasks.offline_rl import EVAL_SEED_BASE
from tenfold.tuning import DEV_SEEDS, tuning_block

SMOKE = lram.PRESETS["smoke"]


def test_defaults_are_the_recorded_choice():
    assert set(lram.TUNING.fields) == set(lram.ARMS)
    for arm in lram.ARMS:
        record = lram.TUNING.record[arm]
        assert set(record.seeds) <= set(DEV_SEEDS)
        assert record.grid == {"lr": lram.LR_GRID}  # the same grid for both backbones
        assert record.chosen["lr"] == lram.arm_lr(lram.PRESETS["quick"], arm)
    for preset, cfg in lram.PRESETS.items():
        block = tuning_block(lram.TUNING, cfg, cfg.seeds)
        assert all(block["arms"][arm]["as_chosen"] for arm in lram.ARMS), preset
        assert block["seeds_tuned_on_in_this_run"] == []  # no claim seed was tuned on


def test_each_backbone_trains_at_its_own_lr():
    cfg = dataclasses.replace(SMOKE, lr_xlstm=1e-3, lr_transformer=3e-3)
    assert lram.arm_lr(cfg, "xlstm") == 1e-3 and lram.arm_lr(cfg, "transformer") == 3e-3
    with pytest.raises(ValueError, match="backbone must be one of"):
        lram.arm_lr(cfg, "mamba")
    data, _ = lram.dataset(cfg)
    other = dataclasses.replace(cfg, lr_transformer=1e-2)
    _, base = lram.train(cfg, data, lram.model_config(cfg, "transformer"), 1000)
    _, moved = lram.train(other, data, lram.model_config(cfg, "transformer"), 1000)
    _, xlstm = lram.train(other, data, lram.model_config(cfg, "xlstm"), 1000)
    _, xlstm_base = lram.train(cfg, data, lram.model_config(cfg, "xlstm"), 1000)
    assert base[0] == moved[0] and base[-1] != moved[-1]  # same data and init, another lr
    assert xlstm == xlstm_base  # the Transformer's lr does not touch the xLSTM


def test_trial_scores_on_development_reset_seeds(monkeypatch):
    seen = []
    evaluate_model = lram.evaluate_model

    def spy(*args, **kwargs):
        seen.append(kwargs["seed_base"])
        return evaluate_model(*args, **kwargs)

    monkeypatch.setattr(lram, "evaluate_model", spy)
    out = lram.tune_trial(SMOKE, "transformer", 1000)
    assert seen == [SMOKE.dev_eval_seed_base] and SMOKE.dev_eval_seed_base != EVAL_SEED_BASE
    assert math.isfinite(out["loss"]) and not math.isnan(out["score"])
    assert lram.tune_trial(SMOKE, "transformer", 1000) == out  # deterministic in the seed
    with pytest.raises(ValueError, match="arm must be one of"):
        lram.tune_trial(SMOKE, "xlstm+actions", 1000)


def test_convergence_reported_beside_both_comparison_claims():
    falling = [2.0 - 0.01 * i for i in range(100)]
    flat = [0.5] * 100
    records = {0: {"train_loss": {"xlstm": falling, "transformer": flat}},
               1: {"train_loss": {"xlstm": flat, "transformer": flat}}}
    conv = lram.comparison_convergence(records, {"xlstm": 0.7, "transformer": 0.8})
    assert set(conv) == {"lram.parity", "lram.bc-works"}
    entry = conv["lram.parity"]
    assert entry["shared_budget"] is True and entry["mixed"] is True
    assert entry["arms"]["xlstm"]["converged_seeds"] == 1 and entry["arms"]["transformer"]["converged"]
    assert entry["arms"]["transformer"]["score"] == 0.8
    assert lram.comparison_convergence({0: {"loss": {}}}, {}) == {}  # records from before every loss was kept
