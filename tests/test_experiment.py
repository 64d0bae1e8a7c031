import math
from dataclasses import dataclass
from typing import Literal

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
    amp: Literal["off", "bf16"] = "off"


def test_overrides_parse_to_field_types():
    cfg = apply_overrides(_Cfg(), {"lr": "3e-3", "name": "b", "flag": "true", "widths": "4,8,16", "maybe": "5"})
    assert cfg.lr == 0.003 and cfg.name == "b" and cfg.flag is True and cfg.widths == (4, 8, 16) and cfg.maybe == 5
    assert apply_overrides(_Cfg(), {"maybe": "none"}).maybe is None
    assert math.isclose(parse_value("1", float), 1.0)


@pytest.mark.parametrize("key, value, message", [
    ("nope", "1", "valid keys"), ("lr", "fast", "expected float"), ("flag", "2", "expected bool"),
    ("widths", "1,a", "expected tuple"), ("amp", "fp8", r"^--set amp='fp8': expected one of 'off', 'bf16'$"),
])
def test_bad_overrides_raise(key, value, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(_Cfg(), {key: value})


# ---------------------------------------------------------------------------------- the claim table
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, fill_claims  # noqa: E402

_TABLE = (
    ClaimSpec("t.premise", "structured layers lag early", "paper: Fig. 3", ">= 0.05"),
    ClaimSpec("t.effect", "the method closes the gap", "paper: 0.5", ">= 0.3", requires="t.premise"),
    ClaimSpec("t.other", "something else", "paper", "<= 1"),
)


def test_fill_claims_checks_each_row_in_table_order():
    claims = fill_claims(_TABLE, {"t.other": 0.5, "t.premise": 0.1, "t.effect": 0.4})
    assert [c.id for c in claims] == ["t.premise", "t.effect", "t.other"]
    assert [c.status for c in claims] == ["pass", "pass", "pass"]
    assert claims[1].to_dict()["requires"] == "t.premise" and "requires" not in claims[2].to_dict()


def test_a_claim_whose_premise_failed_is_not_applicable_not_passed_nor_failed():
    claims = fill_claims(_TABLE, {"t.premise": 0.01, "t.effect": 0.9, "t.other": 2.0},
                         notes={"t.effect": "gap tiny"})
    premise, effect, other = claims
    assert premise.status == "fail" and other.status == "fail"
    assert effect.passed is None and effect.status == "n/a"
    assert effect.note.startswith("n/a: premise absent (t.premise measured 0.01, needs >= 0.05)")
    assert effect.note.endswith("gap tiny")


def test_a_premise_that_holds_leaves_a_failing_claim_failed():
    effect = fill_claims(_TABLE, {"t.premise": 0.2, "t.effect": 0.1, "t.other": 0.0})[1]
    assert effect.status == "fail" and effect.note == ""


def test_fill_claims_refuses_missing_or_undeclared_measurements():
    with pytest.raises(ValueError, match=r"missing \['t.other'\]"):
        fill_claims(_TABLE, {"t.premise": 0.2, "t.effect": 0.1})
    with pytest.raises(ValueError, match=r"undeclared \['t.new'\]"):
        fill_claims(_TABLE, {"t.premise": 0.2, "t.effect": 0.1, "t.other": 0.0, "t.new": 1.0})
    with pytest.raises(ValueError, match="notes for undeclared"):
        fill_claims(_TABLE, {"t.premise": 0.2, "t.effect": 0.1, "t.other": 0.0}, notes={"t.x": "?"})


def test_claim_spec_validates_its_threshold_when_declared():
    with pytest.raises(ValueError, match="threshold"):
        ClaimSpec("t.bad", "s", "p", "about 3")


def _experiment(claims):
    return Experiment(name="t", paper="p", presets={p: _Cfg() for p in ("smoke", "quick", "full")},
                      run_seed=lambda cfg, ctx: {}, evaluate=lambda cfg, records, out: Evaluation({}),
                      quick_minutes=0.1, claims=claims)


def test_experiment_derives_claim_ids_from_the_table_and_orders_premises_first():
    assert _experiment(_TABLE).claim_ids == ("t.premise", "t.effect", "t.other")
    with pytest.raises(ValueError, match="declared before it"):
        _experiment(tuple(reversed(_TABLE)))
    with pytest.raises(ValueError, match="duplicate"):
        _experiment(_TABLE + (_TABLE[0],))
    with pytest.raises(ValueError, match="declares its claims"):
        _experiment(())
