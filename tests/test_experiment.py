import math
from dataclasses import dataclass

import pytest

from tenfold.config import ConfigError, apply_overrides, parse_value
from tenfold.experiment import check, paired_wins, seed_stats


@pytest.mark.parametrize("measured, threshold, passed", [
    (2.4, ">= 1.3", True), (1.3, ">= 1.3", True), (1.29, ">= 1.3", False), (0.5, "< 0.5", False),
    (0.49, "< 0.5", True), (-1, "> -2", True), (3, "== 3", True), (float("nan"), "<= 1", False),
    (float("inf"), ">= 0", False),
])
def test_check_evaluates_the_threshold(measured, threshold, passed):
    claim = check("x.y", "s", "p", measured, threshold)
    assert claim.passed is passed
    assert claim.threshold.split()[0] in (">=", "<=", ">", "<", "==")


def test_check_rejects_a_malformed_threshold():
    with pytest.raises(ValueError, match="threshold"):
        check("x", "s", "p", 1.0, "about 3")


def test_paired_wins_and_seed_stats():
    assert paired_wins([1, 2, 3], [0, 2, 4]) == 1
    with pytest.raises(ValueError):
        paired_wins([1], [1, 2])
    stats = seed_stats([1.0, 3.0])
    assert stats == {"mean": 2.0, "std": 1.0, "per_seed": [1.0, 3.0]}


@dataclass
class _Cfg:
    seeds: tuple[int, ...] = (0,)
    lr: float = 0.1
    name: str = "a"
    flag: bool = False
    widths: tuple[int, ...] = (1, 2)
    maybe: int | None = None


def test_overrides_parse_to_field_types():
    cfg = apply_overrides(_Cfg(), {"lr": "3e-3", "name": "b", "flag": "true", "widths": "4,8,16", "maybe": "5"})
    assert cfg.lr == 0.003 and cfg.name == "b" and cfg.flag is True and cfg.widths == (4, 8, 16) and cfg.maybe == 5
    assert apply_overrides(_Cfg(), {"maybe": "none"}).maybe is None
    assert math.isclose(parse_value("1", float), 1.0)


@pytest.mark.parametrize("key, value, message", [
    ("nope", "1", "valid keys"), ("lr", "fast", "expected float"), ("flag", "2", "expected bool"),
    ("widths", "1,a", "expected tuple"),
])
def test_bad_overrides_raise(key, value, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(_Cfg(), {key: value})
