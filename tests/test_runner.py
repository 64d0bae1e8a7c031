import dataclasses
import json
import re

import pytest

from tenfold import registry
from tenfold.runner import RunError, output_dir, run_experiment

RESULT_KEYS = {"experiment", "paper", "preset", "evidence", "seeds", "config", "claims", "metrics", "figures", "wall_s",
               "env"}  # and "evidence_note" where "evidence" is false
CLAIM_KEYS = {"id", "statement", "paper", "measured", "threshold", "passed", "note"}  # optional: "requires"


def run_toy(tmp_path, seeds=(0, 1, 2), resume=False, workers=1, **overrides):
    exp = registry.get("toy")
    cfg = exp.config("smoke", {k: str(v) for k, v in overrides.items()}, seeds)
    return run_experiment(exp, cfg, "smoke", tmp_path, workers=workers, resume=resume, log=lambda m: None)


def test_result_json_has_the_design_schema(tmp_path):
    result = run_toy(tmp_path)
    saved = json.loads((tmp_path / "toy" / "result.json").read_text())
    assert set(saved) == RESULT_KEYS | {"evidence_note"}
    assert saved["evidence"] is False and "not evidence" in saved["evidence_note"]  # a smoke run
    assert saved["experiment"] == "toy" and saved["preset"] == "smoke" and saved["seeds"] == [0, 1, 2]
    for claim in saved["claims"]:
        assert set(claim) - {"requires"} == CLAIM_KEYS
        assert isinstance(claim["measured"], float) and isinstance(claim["passed"], bool)
    assert set(saved["env"]) >= {"tenfold", "torch", "python", "device", "threads"}
    assert saved["env"]["threads"] == 1
    assert saved["metrics"]["final_loss"]["fast"]["per_seed"].__len__() == 3
    assert all((tmp_path / "toy" / f).exists() for f in saved["figures"])
    assert result["claims"] == saved["claims"]


def test_each_seed_is_saved_as_a_record(tmp_path):
    run_toy(tmp_path)
    for seed in (0, 1, 2):
        record = json.loads((tmp_path / "toy" / "seeds" / f"seed_{seed}.json").read_text())
        assert record["seed"] == seed and "fast" in record["record"]


def test_same_seeds_give_the_same_metrics(tmp_path):
    first = run_toy(tmp_path / "a")
    second = run_toy(tmp_path / "b")
    assert first["metrics"] == second["metrics"]


def test_parallel_workers_give_the_same_metrics_as_one_process(tmp_path):
    serial = run_toy(tmp_path / "serial", seeds=(0, 1))
    parallel = run_toy(tmp_path / "parallel", seeds=(0, 1), workers=2)
    assert serial["metrics"] == parallel["metrics"]
    assert parallel["env"]["workers"] == 2


def test_interrupted_run_resumed_equals_uninterrupted(tmp_path):
    whole = run_toy(tmp_path / "whole")
    run_toy(tmp_path / "cut")
    folder = tmp_path / "cut" / "toy"
    (folder / "seeds" / "seed_2.json").unlink()  # as if killed before seed 2 finished
    (folder / "result.json").unlink()
    saved_seed_0 = (folder / "seeds" / "seed_0.json").stat().st_mtime_ns
    resumed = run_toy(tmp_path / "cut", resume=True)
    assert resumed["_dir"] == str(folder)
    assert (folder / "seeds" / "seed_0.json").stat().st_mtime_ns == saved_seed_0  # not rerun
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["claims"] == whole["claims"]
    assert set(resumed["env"]["cpu_s_per_seed"]) == {"0", "1", "2"}  # finished seeds keep their CPU time


def test_resume_refuses_a_changed_config(tmp_path):
    run_toy(tmp_path)
    with pytest.raises(RunError, match="steps"):
        run_toy(tmp_path, resume=True, steps=11)


def test_output_dir_keeps_old_results(tmp_path):
    assert output_dir(tmp_path, "toy", resume=False) == tmp_path / "toy"
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "result.json").write_text("{}")
    fresh = output_dir(tmp_path, "toy", resume=False)
    assert fresh != tmp_path / "toy" and fresh.name.startswith("toy-")
    assert output_dir(tmp_path, "toy", resume=True) == tmp_path / "toy"


def test_cuda_request_without_cuda_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    exp = registry.get("toy")
    with pytest.raises(RunError, match="CUDA"):
        run_experiment(exp, exp.config("smoke"), "smoke", tmp_path, device="cuda")


def test_a_device_the_experiment_does_not_support_is_refused_not_ignored(tmp_path, monkeypatch):
    exp = registry.get("toy")
    monkeypatch.setattr(exp, "devices", ("cpu",))
    with pytest.raises(RunError, match="'toy' runs on cpu only"):
        run_experiment(exp, exp.config("smoke"), "smoke", tmp_path, device="cuda")
    result = run_experiment(exp, exp.config("smoke"), "smoke", tmp_path, device="auto", log=lambda *_: None)
    assert result["env"]["device"] == "cpu"


def test_experiment_devices_are_validated():
    exp = registry.get("toy")
    with pytest.raises(ValueError, match="devices"):
        dataclasses.replace(exp, devices=("cuda",))
    with pytest.raises(ValueError, match="devices"):
        dataclasses.replace(exp, devices=("cpu", "tpu"))


def test_evaluation_must_return_the_declared_claims(tmp_path, monkeypatch):
    exp = registry.get("toy")
    table = (exp.claims[0], dataclasses.replace(exp.claims[1], id="toy.something-else"))
    monkeypatch.setattr(exp, "claims", table)
    with pytest.raises(RunError, match=r"missing \['toy.something-else'\], undeclared \['toy.paired'\]"):
        run_toy(tmp_path)


def test_progress_without_a_terminal_has_start_and_status_lines(tmp_path):
    exp = registry.get("toy")
    # ~0.6 s of steps against a line every 0.05 s: several lines, whatever the machine's speed within 10x
    cfg = exp.config("smoke", {"steps": "8000"}, (0,))
    lines = []
    run_experiment(exp, cfg, "smoke", tmp_path, workers=1, log=lines.append, progress_every=0.05)
    assert lines[0] == "[toy] seed 0 started"
    status = [line for line in lines if line.startswith("[toy] seed 0: ")]
    assert status, lines
    time_ = r"(\d+s|\d+m\d\ds)"
    pattern = (rf"\[toy\] seed 0: ((slow|fast) \d+/8000, ETA (unknown|{time_})|(slow|fast) 8000/8000 done); "
               rf"{time_} elapsed, 0/1 seeds done")
    assert all(re.fullmatch(pattern, line) for line in status), status
    assert any("ETA unknown" not in line for line in status), status  # the tracker sends every 0.025 s here
    assert lines[-1].startswith("[toy] seed 0 done (1/1")


def test_tracker_nests_loops_and_estimates_the_time_left():
    from tenfold.progress import SeedTracker

    sent = []
    tracker = SeedTracker(3, sent.append, send_every=0.0)
    for _ in tracker.wrap(range(4), desc="arms"):
        for step in tracker.wrap(range(10), desc="train"):
            if step == 5:
                assert tracker.status().startswith("arms 0/4 > train 5/10, ETA ")  # 5 % of the run done
                assert tracker._fraction() == pytest.approx(0.125)
        break
    assert tracker.status() == "arms 0/4 done" and sent[-1] == ("status", 3, "arms 0/4 done")
    assert [text for *_, text in sent[:2]] == ["arms 0/4, ETA unknown", "arms 0/4 > train 0/10, ETA unknown"]


def test_a_claim_measured_as_nan_gets_a_note(tmp_path, monkeypatch):
    import math

    exp = registry.get("toy")
    evaluate = exp.evaluate

    def nan_evaluate(cfg, records, out_dir):
        evaluation = evaluate(cfg, records, out_dir)
        evaluation.measured["toy.fast-wins"] = math.nan
        return evaluation

    monkeypatch.setattr(exp, "evaluate", nan_evaluate)
    result = run_toy(tmp_path, seeds=(0,))
    claims = {claim["id"]: claim for claim in result["claims"]}
    assert claims["toy.fast-wins"]["passed"] is False
    assert claims["toy.fast-wins"]["note"] == "measured value is not finite"
    assert claims["toy.paired"]["note"] == ""


def test_nothing_is_created_before_the_arguments_are_checked(tmp_path):
    with pytest.raises(RunError, match="--workers"):
        run_toy(tmp_path / "out", workers=0)
    with pytest.raises(RunError, match="seeds"):
        run_toy(tmp_path / "out", seeds=(1, 1))
    assert not (tmp_path / "out").exists()
