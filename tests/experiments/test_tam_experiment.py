"""The tam experiment's own pieces: the stable-range rule, paired streams, and the smoke preset's
claims being computed (not necessarily passing)."""

import dataclasses

import torch

from tenfold.experiment import RunContext, fill_claims
from tenfold.experiments import tam


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
