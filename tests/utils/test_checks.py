import numpy as np
import pytest

from tenfold.utils.checks import check_bool, check_choice, check_int, check_positive, check_range


def test_check_range_names_the_argument_and_the_interval():
    check_range("lr", 0.0, 0.0)
    check_range("decay", 0.5, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, 1\), got 1"):
        check_range("decay", 1, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"eps must be a number in \(0.0, inf\)"):
        check_range("eps", 0.0, 0.0, low_open=True)
    for bad in (float("nan"), float("inf"), True, "1", None):
        with pytest.raises(ValueError):
            check_range("x", bad)


def test_check_int_and_positive():
    check_int("n", np.int64(3), 1)
    check_positive(width=4, depth=1)
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        check_positive(width=4, depth=0)
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 3\]"):
        check_int("k", 4, 0, 3)
    for bad in (2.0, True, "2"):
        with pytest.raises(ValueError):
            check_int("n", bad)


def test_check_choice_and_bool():
    check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        check_choice("mode", "c", ("a", "b"))
    check_bool("flag", False)
    with pytest.raises(ValueError, match="flag must be True or False"):
        check_bool("flag", 1)
