"""The nap experiment's compute-matched arms: ln given NaP's cost per step makes more updates per
batch (and is ln itself at a ratio of one); base given NaP's cost trains more steps."""

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
