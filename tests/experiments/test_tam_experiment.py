"""The tam experiment's own pieces: the stable-range rule, paired streams, the smoke preset's claims
being computed (not necessarily passing), and the tuning protocol (each optimizer's lr chosen on
development streams) with the convergence of each comparison's arms."""

import dataclasses
import math

import pytest
import torch

from tenfold.experiment import RunContext, fill_claims
from tenfold.experiments import tam
from tenfold.tuning import DEV_SEEDS, tuning_block


def test_largest_stable_needs_a_contiguous_stable_range():
    assert tam._largest_stable([1, 2, 3, 4], [0.5, 1.0, 200.0, 5.0], 100.0) == 2
    assert tam._largest_stable([1, 2], [1e30, 1.0], 100.0) == 0.0
    assert tam._largest_stable([1, 2], [1.0, 2.0], 100.0) == 2


def test_streams_and_init_are_paired_by_seed():
    cfg = dataclasses.replace(tam.PRESETS["smoke"])
    a, b, c = tam.task_stream(cfg, 3), tam.task_stream(cfg, 3), tam.task_stream(cfg, 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[1][0], a[1][1])  # each task has its own teacher
    first, second = tam.student(cfg, 3), tam.student(cfg, 3)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_sgdm_diverges_beyond_the_heavy_ball_bound_and_tam_does_not():
    cfg = dataclasses.replace(tam.PRESETS["quick"], quad_steps=150)
    sgdm = tam._quadratic_run(cfg, lambda p: torch.optim.SGD(p, lr=4.0, momentum=0.9), seed=0)
    tamed = tam._quadratic_run(cfg, lambda p: tam.TAM(p, lr=8.0), seed=0)
    assert sgdm["diverged"] and not tamed["diverged"]


def test_smoke_run_and_evaluate(tmp_path):
    cfg = tam.PRESETS["smoke"]
    records = {s: tam.run_seed(cfg, RunContext(seed=s, device=torch.device("cpu"), workdir=tmp_path)) for s in cfg.seeds}
    evaluation = tam.evaluate(cfg, records, tmp_path)
    claims = fill_claims(tam.EXPERIMENT.claims, evaluation.measured, evaluation.notes)
    assert [c.id for c in claims] == list(tam.EXPERIMENT.claim_ids)
    assert all((tmp_path / f).exists() for f in evaluation.figures)
    assert 0.0 < evaluation.metrics["shift"]["mean_damping"]["tam@0.02"]["mean"] < 1.0


def test_matched_baselines_at_ratio_one_are_the_plain_arms(tmp_path):
    cfg = dataclasses.replace(tam.PRESETS["smoke"], sgdm_matched_cost=1.0, adamw_matched_cost=1.0)
    shift = tam._shift(cfg, seed=0)
    assert shift["matched-sgdm@0.01"]["curve"] == shift["sgdm@0.01"]["curve"]
    assert shift["matched-adamw@0.003"]["curve"] == shift["adamw@0.003"]["curve"]
    more = tam._shift(dataclasses.replace(cfg, sgdm_matched_cost=2.15), seed=0)
    assert more["matched-sgdm@0.01"]["curve"] != shift["sgdm@0.01"]["curve"]


# ------------------------------------------------------------------ fair baselines: tuning and convergence

TINY = dataclasses.replace(tam.PRESETS["smoke"], tasks=2, steps_per_task=10, pool=64, window=5)


def test_defaults_are_the_recorded_choice():
    for arm, field in tam.ARM_LR.items():
        record = tam.TUNING.record[arm]
        assert set(record.seeds) <= set(DEV_SEEDS)
        assert record.grid == {"lr": tam.SGD_GRID if arm in ("sgdm", "tam") else tam.ADAM_GRID}
        assert tam.TUNING.fields[arm] == {"lr": field}
    for preset, cfg in tam.PRESETS.items():
        block = tuning_block(tam.TUNING, cfg, cfg.seeds)
        assert all(entry["as_chosen"] for entry in block["arms"].values()), preset
        assert block["seeds_tuned_on_in_this_run"] == []  # no claim seed was tuned on


def test_trial_is_deterministic_and_scores_online_accuracy():
    out = tam.tune_trial(TINY, "tam", 1000)
    assert 0.0 <= out["score"] <= 1.0 and math.isfinite(out["loss"])
    assert tam.tune_trial(TINY, "tam", 1000) == out
    slower = tam.tune_trial(dataclasses.replace(TINY, tuned_tam_lr=1e-5), "tam", 1000)
    assert slower != out  # the trial trains at the arm's tuned field
    with pytest.raises(ValueError, match="arm must be one of"):
        tam.tune_trial(TINY, "adam", 1000)


def test_development_streams_are_not_claim_streams():
    dev = tam.task_stream(TINY, 1000)
    for claim_seed in (0, 9, 450, 999):
        claim = tam.task_stream(TINY, claim_seed)
        assert not torch.equal(dev[0], claim[0]) and not torch.equal(dev[2], claim[2])


def test_tuned_arms_run_once_or_beside_the_mapping_grid():
    same = tam._shift(TINY, seed=0)
    assert sum(name.startswith("sgdm@") for name in same) == len(TINY.sgdm_lrs)  # tuned lr on the grid: no rerun
    moved = tam._shift(dataclasses.replace(TINY, tuned_sgdm_lr=0.0075, tuned_adatam_lr=1.5e-3), seed=0)
    assert {"sgdm@0.0075", "adatam@0.0015"} <= set(moved)
    assert moved["sgdm@0.01"]["curve"] == same["sgdm@0.01"]["curve"]
    assert len(moved["sgdm@0.0075"]["losses"]) == TINY.tasks * TINY.steps_per_task


def test_tuned_comparisons_and_convergence_beside_the_claims(tmp_path):
    cfg = dataclasses.replace(TINY, tuned_sgdm_lr=0.0075, tuned_adatam_lr=1.5e-3, seeds=(0, 1))
    records = {s: tam.run_seed(cfg, RunContext(seed=s, device=torch.device("cpu"), workdir=tmp_path))
               for s in cfg.seeds}
    evaluation = tam.evaluate(cfg, records, tmp_path)
    tuned = evaluation.metrics["shift"]["tuned_vs_tuned"]["tam_vs_sgdm"]
    assert tuned["sgdm"] == "sgdm@0.0075" and tuned["tam"] == "tam@0.02"
    acc = evaluation.metrics["shift"]["online_accuracy"]
    assert evaluation.measured["tam.shift-tuned"] == pytest.approx(acc["tam@0.02"]["mean"] - acc["sgdm@0.0075"]["mean"])
    assert "SGDM 0.0075" in evaluation.notes["tam.shift-tuned"]
    conv = evaluation.convergence
    assert set(conv) == {"tam.quadratic-loss", "tam.shift-paired", "tam.adatam-shift", "tam.shift-tuned"}
    assert set(conv["tam.shift-tuned"]["arms"]) == {"sgdm@0.0075", "tam@0.02"}
    assert set(conv["tam.adatam-shift"]["reference"]) == {"adatam@0.0015"}  # the tuned arm off the mapping
    reported = evaluation.metrics["shift"]["tuned_vs_tuned"]["adatam_vs_adamw"]
    assert set(reported["convergence"]["arms"]) == {"adamw@0.003", "adatam@0.0015"}
    assert "reported, not claimed" in evaluation.notes["tam.adatam-shift"]
    assert all(entry["shared_budget"] for entry in conv.values())
    assert conv["tam.shift-paired"]["arms"]["sgdm@0.01"]["steps"] == cfg.tasks * cfg.steps_per_task
    old = {s: {**r, "quadratic": {k: v for k, v in r["quadratic"].items() if k != "losses"}}
           for s, r in records.items()}
    assert tam.comparison_convergence(cfg, old, {}, {}) == {}  # records from before the losses were kept


def test_make_optimizer_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        tam.make_optimizer(TINY, "lion", 1e-3, [torch.nn.Parameter(torch.zeros(1))])
