"""The tuning protocol in the adaptive-temperature experiment: the lr of the network both readouts
share is chosen for the baseline (softmax) on development sets, and the training loss's convergence
is reported beside the comparison claims."""

import dataclasses
import math

import pytest
import torch

from tenfold.experiments import adaptive_temperature as at
from tenfold.tuning import DEV_SEEDS, tuning_block

TINY = at.Config(seeds=(0,), steps=6, batch=16, d_hidden=8, sizes=(16, 32), eval_sets=8, fit_sets=4)


def test_defaults_are_the_recorded_choice():
    record = at.TUNING.record[at.SHARED_ARM]
    assert set(record.seeds) <= set(DEV_SEEDS)
    assert record.grid == {"lr": at.LR_GRID}
    for preset, cfg in at.PRESETS.items():
        block = tuning_block(at.TUNING, cfg, cfg.seeds)
        assert block["arms"][at.SHARED_ARM]["as_chosen"], preset
        assert block["seeds_tuned_on_in_this_run"] == []  # no claim seed was tuned on


def test_trial_scores_softmax_on_development_sets():
    torch.manual_seed(0)
    out = at.tune_trial(TINY, at.SHARED_ARM, 1000)
    assert 0.0 <= out["score"] <= 1.0 and 0.0 <= out["adaptive"] <= 1.0
    assert math.isfinite(out["loss"])
    torch.manual_seed(0)
    assert at.tune_trial(TINY, at.SHARED_ARM, 1000) == out  # deterministic in the seed


def test_trial_rejects_other_arms_and_no_ood_size():
    with pytest.raises(ValueError, match="arm must be"):
        at.tune_trial(TINY, "adaptive", 1000)
    net = at.MaxRetrievalNet(d_hidden=8, d_k=8).eval()
    with pytest.raises(ValueError, match="sizes must hold a size above train_n"):
        at.dev_accuracy(dataclasses.replace(TINY, sizes=(16,)), net, 1000)


def test_development_sets_differ_from_the_claims_sets():
    net = at.MaxRetrievalNet(d_hidden=8, d_k=8).eval()
    dev = next(at._chunks(TINY, 32, TINY.eval_sets, torch.Generator().manual_seed(at.DEV_SET_OFFSET + 0), "cpu"))
    claims = next(at._chunks(TINY, 32, TINY.eval_sets, torch.Generator().manual_seed(20_000 + 0), "cpu"))
    assert not torch.equal(dev[0], claims[0])
    assert at.dev_accuracy(TINY, net, 0) == at.dev_accuracy(TINY, net, 0)


def test_convergence_reported_for_both_comparison_claims(tmp_path):
    steadily_falling = [1.0 - 0.01 * i for i in range(50)]
    flat = [0.1] * 50
    records = {0: {"losses": steadily_falling}, 1: {"losses": flat}}
    conv = at._convergence(records)
    assert set(conv) == {"adaptive-temperature.not-worse", "adaptive-temperature.paired-gain"}
    entry = conv["adaptive-temperature.paired-gain"]
    assert entry["shared_budget"] is True
    assert entry["arms"][at.SHARED_ARM]["converged_seeds"] == 1  # the falling seed is still improving
    assert at._convergence({0: {"acc_softmax": [1.0]}}) == {}  # records from before losses were kept
