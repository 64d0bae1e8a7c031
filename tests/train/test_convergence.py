import math

import pytest

from tenfold.train.loop import compare_convergence, loss_convergence


def test_a_loss_still_falling_at_the_end_has_not_converged():
    falling = [1.0 - 0.004 * i for i in range(200)]  # the last 20 steps lose 0.076 at a level of ~0.24
    check = loss_convergence(falling)
    assert check["window"] == 20 and check["slope"] == pytest.approx(-0.004)
    assert check["drop"] == pytest.approx(0.076) and not check["converged"]


def test_a_flat_or_rising_loss_has_converged():
    assert loss_convergence([0.7] * 100)["converged"]
    assert loss_convergence([0.1 + 0.001 * i for i in range(100)])["converged"]


def test_the_tolerance_is_relative_with_an_absolute_floor():
    # a tiny loss halving over the window loses 0.001: under the 0.01 floor
    assert loss_convergence([0.002 - 0.00001 * i for i in range(100)])["converged"]
    # a large loss losing 3 % of its level converges at rel_tol 0.05, not at 0.01
    slow = [10.0 - 0.3 / 9 * i for i in range(10)]
    assert loss_convergence(slow, window=1.0)["converged"]
    assert not loss_convergence(slow, window=1.0, rel_tol=0.01)["converged"]


def test_non_finite_losses_have_not_converged_and_bad_arguments_are_named():
    check = loss_convergence([1.0, 0.5, math.nan])
    assert not check["converged"] and math.isnan(check["slope"])
    with pytest.raises(ValueError, match="at least 2 steps"):
        loss_convergence([1.0])
    with pytest.raises(ValueError, match="window"):
        loss_convergence([1.0, 0.5], window=0.0)


def test_compare_flags_one_arm_still_improving_beside_a_converged_one():
    flat, falling = [0.5] * 50, [1.0 - 0.01 * i for i in range(50)]
    entry = compare_convergence({"method": [flat, flat], "baseline": [falling, flat]},
                                scores={"method": 1.0, "baseline": 0.5})
    assert entry["mixed"] and entry["still_improving"] == ["baseline"]
    assert entry["arms"]["baseline"]["converged_seeds"] == 1 and entry["arms"]["method"]["converged"]
    assert entry["arms"]["method"]["score"] == 1.0 and not entry["shared_budget"]
    both = compare_convergence({"a": [flat]}, reference={"b": [falling]}, shared_budget=True)
    assert not both["mixed"] and not both["reference"]["b"]["converged"] and both["shared_budget"]
    assert not compare_convergence({"a": [falling], "b": [falling]})["mixed"]
