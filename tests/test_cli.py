import json

import pytest

from tenfold import registry
from tenfold.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_names_every_visible_experiment(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in registry.names():
        assert name in out
    assert "toy" not in out  # hidden test fixture


def test_unknown_experiment_exits_2_naming_valid_ones(capsys):
    code, _, err = run_cli(capsys, "run", "nosuch")
    assert code == 2
    assert "unknown experiment 'nosuch'" in err
    for name in registry.names():
        assert name in err


@pytest.mark.parametrize("argv, message", [
    (("run", "toy", "--preset", "huge"), "valid presets: smoke, quick, full"),
    (("run", "toy", "--set", "nope=1"), "valid keys: seeds, steps"),
    (("run", "toy", "--set", "steps=abc"), "expected int"),
    (("run", "toy", "--set", "use_bias=maybe"), "expected bool"),
    (("run", "toy", "--set", "steps"), "KEY=VALUE"),
    (("run", "toy", "--seeds", "1,x"), "--seeds"),
    (("run", "toy", "--seeds", "1,1"), "distinct"),
    (("run", "toy", "--device", "tpu"), "valid devices"),
    (("reproduce", "--only", "toy,nosuch"), "unknown experiment 'nosuch'"),
    (("bench", "toy"), "no benchmark"),
])
def test_bad_usage_exits_2_with_a_clear_message(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, *argv, *(("--out", str(tmp_path)) if argv[0] != "bench" else ()))
    assert code == 2
    assert message in err


def test_reproduce_on_cuda_names_the_cpu_only_experiments(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(registry.get("toy"), "devices", ("cpu",))
    code, _, err = run_cli(capsys, "reproduce", "--only", "toy,p-rope", "--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and "not supported by toy;" in err
    assert not any(tmp_path.iterdir())  # refused before anything was created


def test_list_shows_each_experiments_devices(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in registry.names():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert ",".join(registry.get(name).devices) in row


def test_report_of_missing_folder_exits_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "nothing"))
    assert code == 2 and "no such results folder" in err


def test_run_parses_set_to_field_types_and_writes_result(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--workers", "1",
                           "--set", "steps=7", "--set", "fast_lr=0.05", "--set", "use_bias=yes",
                           "--seeds", "3,4")
    assert code == 0
    assert "toy.fast-wins" in out and "PASS" in out
    result = json.loads((tmp_path / "toy" / "result.json").read_text())
    assert result["config"]["steps"] == 7 and result["config"]["fast_lr"] == 0.05
    assert result["config"]["use_bias"] is True and result["seeds"] == [3, 4]


def test_strict_exits_1_when_a_claim_fails(capsys, tmp_path):
    # with the "fast" rate made slower than the slow one, the toy's claims must fail
    code, out, _ = run_cli(capsys, "run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--workers", "1",
                           "--set", "fast_lr=0.001", "--strict")
    assert code == 1 and "FAIL" in out


def test_existing_results_are_never_overwritten(capsys, tmp_path):
    for _ in range(2):
        assert run_cli(capsys, "run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--workers", "1")[0] == 0
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and folders[0] == "toy" and folders[1].startswith("toy-")


def test_reproduce_writes_the_report(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "reproduce", "--preset", "smoke", "--only", "toy", "--out", str(tmp_path),
                           "--workers", "1")
    assert code == 0 and "claims passed" in out
    assert (tmp_path / "REPORT.md").exists() and (tmp_path / "report.html").exists()
    assert (tmp_path / "figures" / "toy" / "loss.png").exists()


def test_module_entry_point(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tenfold", "run", "nosuch"], capture_output=True, text=True)
    assert proc.returncode == 2 and "valid experiments" in proc.stderr
