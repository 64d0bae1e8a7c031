"""Compute-matched budgets: fractional updates per batch, matched step counts, and the report row."""

import math

import pytest

from tenfold.compute_matched import matched_row, matched_steps, updates_at


@pytest.mark.parametrize("ratio", [1.0, 1.16, 1.25, 1.67, 2.0, 2.15, 4.0])
def test_updates_spread_a_fractional_ratio_over_the_batches(ratio):
    counts = [updates_at(step, ratio) for step in range(1000)]
    assert all(math.floor(ratio) <= c <= math.ceil(ratio) for c in counts)
    for n in (1, 7, 100, 1000):
        assert sum(counts[:n]) == math.floor(n * ratio)


def test_ratio_one_is_one_update_per_batch_and_a_quarter_more_is_every_fourth():
    assert [updates_at(step, 1.0) for step in range(5)] == [1] * 5
    assert [updates_at(step, 1.25) for step in range(8)] == [1, 1, 1, 2, 1, 1, 1, 2]


def test_matched_steps_rounds_and_refuses_a_ratio_below_one():
    assert matched_steps(800, 1.1) == 880
    assert matched_steps(10, 1.16) == 12
    assert matched_steps(5, 1.0) == 5
    with pytest.raises(ValueError, match="ratio"):
        matched_steps(800, 0.9)
    with pytest.raises(ValueError, match="steps"):
        matched_steps(0, 1.5)


def _stats(mean):
    return {"mean": mean, "std": 0.0, "per_seed": [mean]}


def test_row_signs_the_advantage_so_that_positive_means_the_method_is_better():
    higher = matched_row("M vs B", "accuracy", "higher", ("m", _stats(0.9)), ("b", _stats(0.8)),
                         ("b_matched", _stats(0.95)), 4.0, "4 updates per batch")
    assert higher["method_advantage"] == pytest.approx(-0.05)
    assert higher["method_advantage_same_steps"] == pytest.approx(0.1)
    assert higher["matched_baseline"] == {"arm": "b_matched", **_stats(0.95)} and higher["cost_ratio"] == 4.0
    lower = matched_row("M vs B", "loss", "lower", ("m", _stats(1.0)), ("b", _stats(1.2)),
                        ("b_matched", _stats(1.1)), 1.1, "more steps")
    assert lower["method_advantage"] == pytest.approx(0.1)
    assert lower["method_advantage_same_steps"] == pytest.approx(0.2)


def test_row_refuses_bad_direction_and_ratio():
    args = (("m", _stats(1.0)), ("b", _stats(1.0)), ("c", _stats(1.0)))
    with pytest.raises(ValueError, match="better"):
        matched_row("x", "y", "bigger", *args, 2.0, "z")
    with pytest.raises(ValueError, match="ratio"):
        matched_row("x", "y", "higher", *args, 0.5, "z")
