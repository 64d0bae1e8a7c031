import json
import math

import pytest

from tenfold import registry
from tenfold.cli import main
from tenfold.tuning import (ArmTuning, TuningSpec, apply_point, check_dev_seeds, choose, grid_points, parse_grid,
                            point_label, summarise, tuning_block)

ALLOWED = ("lr", "clip")


def test_parse_grid_reads_each_hyperparameter_in_order():
    grid = parse_grid(["lr=1e-3, 2e-3", "clip=0,1"], ALLOWED)
    assert grid == {"lr": (0.001, 0.002), "clip": (0.0, 1.0)}
    assert grid_points(grid) == [{"lr": 0.001, "clip": 0.0}, {"lr": 0.001, "clip": 1.0},
                                 {"lr": 0.002, "clip": 0.0}, {"lr": 0.002, "clip": 1.0}]
    assert point_label({"lr": 0.002, "clip": 1.0}) == "clip=1,lr=0.002"


@pytest.mark.parametrize("items, message", [
    ([], "--grid is required"),
    (["lr"], "NAME=v1,v2"),
    (["warmup=1,2"], "not a tuned hyperparameter of this arm; valid: lr, clip"),
    (["lr=1,x"], "comma-separated numbers"),
    (["lr=1,1"], "distinct finite"),
    (["lr=nan"], "distinct finite"),
    (["lr=1", "lr=2"], "given twice"),
])
def test_parse_grid_refuses_bad_items_naming_them(items, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(items, ALLOWED)


def test_only_development_seeds_are_tuned_on():
    assert check_dev_seeds([1000, 1009]) == (1000, 1009)
    for bad in ([0], [1000, 1000], [], [300]):
        with pytest.raises(ValueError, match="development seeds 1000-1009"):
            check_dev_seeds(bad)


def test_choose_takes_the_best_score_then_the_lower_loss_then_the_first():
    rows = [{"score": 0.5, "loss": 0.7}, {"score": 0.9, "loss": 0.3}, {"score": 0.9, "loss": 0.2},
            {"score": 0.9, "loss": 0.2}, {"score": math.nan, "loss": 0.0}]
    assert choose(rows) is rows[2]
    assert choose([{"score": math.nan, "loss": 1.0}, {"score": 0.1, "loss": math.inf}])["score"] == 0.1


def test_summarise_averages_over_seeds_and_records_the_choice():
    trials = {"lr=0.1": {1000: {"score": 0.4, "loss": 1.0}, 1001: {"score": 0.6, "loss": 1.0}},
              "lr=0.2": {1000: {"score": 0.7, "loss": 1.0}, 1001: {"score": 0.1, "loss": 1.0}}}
    rows, record = summarise({"lr": (0.1, 0.2)}, trials, (1000, 1001), "quick")
    assert [r["score"] for r in rows] == pytest.approx([0.5, 0.4])
    assert record.chosen == {"lr": 0.1} and record.scores == {"lr=0.1": 0.5, "lr=0.2": 0.4}


@pytest.mark.parametrize("kwargs, message", [
    ({"chosen": {"lr": 0.3}}, "on the grid"),
    ({"chosen": {}}, "every grid hyperparameter"),
    ({"seeds": (0, 1)}, "development seeds"),
    ({"grid": {"lr": ()}}, "at least one hyperparameter"),
])
def test_a_record_off_its_grid_or_on_claim_seeds_is_refused(kwargs, message):
    fields = {"grid": {"lr": (0.1, 0.2)}, "seeds": (1000,), "preset": "quick", "scores": {}, "chosen": {"lr": 0.1}}
    with pytest.raises(ValueError, match=message):
        ArmTuning(**{**fields, **kwargs})


def _spec(**kwargs):
    exp = registry.get("tuned-toy")
    return TuningSpec(**{"fields": exp.tuning.fields, "trial": exp.tuning.trial, "metric": "m",
                         "record": exp.tuning.record, **kwargs})


def test_a_spec_naming_a_missing_field_or_a_foreign_record_is_refused():
    exp = registry.get("tuned-toy")
    with pytest.raises(ValueError, match=r"tuning fields \['nope'\]"):
        _spec(fields={"a": {"lr": "nope"}}).check("x", exp.presets)
    record = exp.tuning.record["a"]
    with pytest.raises(ValueError, match="not a tuned arm"):
        _spec(record={"c": record}).check("x", exp.presets)
    with pytest.raises(ValueError, match="tunes"):
        _spec(fields={"a": {"clip": "steps"}, "b": {"lr": "lr_b"}}).check("x", exp.presets)


def test_apply_point_sets_the_arms_fields_with_their_types():
    exp = registry.get("tuned-toy")
    spec = _spec(fields={"a": {"lr": "lr_a", "steps": "steps"}})
    cfg = apply_point(spec, exp.config("quick"), "a", {"lr": 0.5, "steps": 7.0})
    assert cfg.lr_a == 0.5 and cfg.steps == 7 and isinstance(cfg.steps, int) and cfg.lr_b == 0.02


def test_value_reads_the_field_the_spec_names_for_a_tuned_arm_only():
    exp = registry.get("tuned-toy")
    spec = _spec(fields={"a": {"lr": "lr_a", "steps": "steps"}, "b": {"lr": "lr_b"}})
    cfg = apply_point(spec, exp.config("quick"), "a", {"lr": 0.5, "steps": 7.0})
    assert (spec.value(cfg, "a"), spec.value(cfg, "a", "steps"), spec.value(cfg, "b")) == (0.5, 7, 0.02)
    with pytest.raises(ValueError, match=r"backbone must be one of \('a', 'b'\), got 'c'"):
        spec.value(cfg, "c", name="backbone")


def test_tuning_block_reports_the_record_the_used_values_and_tuned_seeds():
    exp = registry.get("tuned-toy")
    block = tuning_block(exp.tuning, exp.config("quick", {"lr_a": "0.05"}, seeds=[1001, 7]), [1001, 7])
    assert block["arms"]["a"]["tuned"] and block["arms"]["a"]["chosen"] == {"lr": 0.1}
    assert block["arms"]["a"]["used"] == {"lr": 0.05} and block["arms"]["a"]["as_chosen"] is False
    assert block["arms"]["b"] == {"fields": {"lr": "lr_b"}, "used": {"lr": 0.02}, "tuned": False, "as_chosen": None}
    assert block["seeds_tuned_on_in_this_run"] == [1001]
    assert tuning_block(exp.tuning, exp.config("quick"), [0, 1])["arms"]["a"]["as_chosen"] is True


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tune_sweeps_writes_the_sweep_and_prints_the_record(capsys, tmp_path):
    code, out, err = run_cli(capsys, "tune", "tuned-toy", "--arm", "b", "--grid", "lr=0.003,0.1,0.03",
                             "--seeds", "1000,1002", "--preset", "smoke", "--out", str(tmp_path / "t"))
    assert code == 0, err
    saved = json.loads((tmp_path / "t" / "tuned-toy-b.json").read_text())
    assert saved["record"]["chosen"] == {"lr": 0.1} and saved["record"]["seeds"] == [1000, 1002]
    assert [r["label"] for r in saved["rows"]] == ["lr=0.003", "lr=0.1", "lr=0.03"]
    assert all(set(r["per_seed"]) == {"1000", "1002"} for r in saved["rows"])
    assert "lr=0.1" in out and "<- chosen" in out and "ArmTuning(grid={'lr': (0.003, 0.1, 0.03)}" in out


def test_tune_in_workers_matches_tune_in_process(capsys, tmp_path):
    for folder, workers in (("serial", "1"), ("parallel", "2")):
        assert run_cli(capsys, "tune", "tuned-toy", "--arm", "a", "--grid", "lr=0.01,0.1", "--preset", "smoke",
                       "--workers", workers, "--out", str(tmp_path / folder))[0] == 0
    serial, parallel = (json.loads((tmp_path / f / "tuned-toy-a.json").read_text())["rows"]
                        for f in ("serial", "parallel"))
    assert [r["score"] for r in serial] == [r["score"] for r in parallel]


@pytest.mark.parametrize("argv, message", [
    (("tune", "toy", "--arm", "fast", "--grid", "lr=1"), "toy declares no tuning; experiments that do:"),
    (("tune", "tuned-toy", "--arm", "c", "--grid", "lr=1"), "valid arms of tuned-toy: a, b"),
    (("tune", "tuned-toy", "--arm", "a"), "--grid is required"),
    (("tune", "tuned-toy", "--arm", "a", "--grid", "lr=1", "--seeds", "0,1"), "development seeds"),
    (("tune", "tuned-toy", "--arm", "a", "--grid", "lr=1", "--set", "lr_a=2"), "swept by --grid"),
    (("tune", "tuned-toy", "--arm", "a", "--grid", "lr=1", "--set", "nope=2"), "unknown config key"),
    (("tune", "tuned-toy", "--arm", "a", "--grid", "lr=1", "--preset", "huge"), "valid presets"),
    (("tune", "tuned-toy", "--arm", "a", "--grid", "lr=1", "--workers", "0"), "--workers"),
])
def test_tune_bad_input_is_one_line_exit_2_and_creates_nothing(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "t"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_a_run_writes_the_tuning_and_convergence_blocks_and_notes_a_mixed_comparison(tmp_path):
    from tenfold.runner import run_experiment

    exp = registry.get("tuned-toy")
    result = run_experiment(exp, exp.config("quick"), "quick", tmp_path, log=lambda _: None)
    saved = json.loads((tmp_path / "tuned-toy" / "result.json").read_text())
    assert saved["tuning"]["arms"]["a"]["chosen"] == {"lr": 0.1} and not saved["tuning"]["arms"]["b"]["tuned"]
    entry = saved["convergence"]["tuned-toy.a-vs-b"]
    assert entry["mixed"] and entry["still_improving"] == ["b"] and entry["arms"]["a"]["converged"]
    assert "arms still improving at the end: b" in saved["claims"][0]["note"]
    assert result["claims"] == saved["claims"]


def test_convergence_of_an_undeclared_claim_is_refused(tmp_path, monkeypatch):
    import dataclasses

    from tenfold import experiment as contract
    from tenfold.runner import RunError, run_experiment

    exp = registry.get("tuned-toy")

    def evaluate(cfg, records, out_dir):
        return contract.Evaluation(metrics={}, measured={"tuned-toy.a-vs-b": 1.0}, convergence={"other": {}})

    with pytest.raises(RunError, match=r"convergence reported for undeclared claims \['other'\]"):
        run_experiment(dataclasses.replace(exp, evaluate=evaluate), exp.config("smoke"), "smoke", tmp_path,
                       log=lambda _: None)


def test_the_report_shows_tuning_and_convergence_rows_and_flags_a_mixed_claim(tmp_path):
    from tenfold.report import write_report
    from tenfold.runner import run_experiment

    exp = registry.get("tuned-toy")
    run_experiment(exp, exp.config("quick", seeds=[1000, 3]), "quick", tmp_path, log=lambda _: None)
    write_report(tmp_path, warn=None)
    md = (tmp_path / "REPORT.md").read_text()
    html = (tmp_path / "report.html").read_text()
    claim_row = next(line for line in md.splitlines() if line.startswith("| tuned-toy | `tuned-toy.a-vs-b`"))
    assert "(arms: mixed convergence)" in claim_row and "(arms: mixed convergence)" in html
    assert "| a | lr=0.1 | lr=0.1 | lr in 0.01, 0.1 | 1000, 1001 | lr=0.01: -1, lr=0.1: -0.001 |" in md
    assert "| b | lr=0.02 | untuned |" in md
    assert "Seeds [1000] of this run were tuned on" in md
    rows = [line for line in md.splitlines() if line.startswith("| tuned-toy.a-vs-b | ")]
    assert len(rows) == 2 and "converged" in rows[0] and "still improving" in rows[1] and "MIXED" in rows[1]
    assert "<td>still improving; MIXED</td>" in html


@pytest.mark.parametrize("name", [n for n in registry.names(include_hidden=True) if registry.get(n).tuning])
def test_every_tuned_arm_runs_at_its_chosen_values_in_quick_and_full(name):
    exp = registry.get(name)
    for arm, record in exp.tuning.record.items():
        for preset in ("quick", "full"):
            cfg = exp.config(preset)
            used = {param: getattr(cfg, field) for param, field in exp.tuning.fields[arm].items()}
            assert used == pytest.approx(record.chosen), (name, preset, arm)


def test_final_loss_is_the_mean_of_the_last_tenth_of_steps():
    from tenfold.tuning import final_loss
    assert final_loss([9.0] * 90 + [1.0] * 5 + [3.0] * 5) == 2.0  # the last 10 of 100 steps
    assert final_loss([5.0, 4.0, 2.0]) == 2.0  # at least one step
    with pytest.raises(ValueError, match="at least one step"):
        final_loss([])
