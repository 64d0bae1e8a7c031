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


# ---------------------------------------------------------------------------------------------
# the command line as a user runs it: a subprocess, its exit code, no traceback, nothing created
# ---------------------------------------------------------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import tenfold as _package  # noqa: E402

SRC = str(Path(_package.__file__).resolve().parents[1])  # the sources under test, also in the subprocesses


ROOT = str(Path(__file__).resolve().parents[1])  # where tests.toy_experiment (TENFOLD_EXPERIMENTS) imports from


def _env():
    paths = [SRC, ROOT, os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def tenfold(*argv, cwd, pre=None, timeout=240, **kwargs):
    """``python -m tenfold ARGV`` in a subprocess (``pre``: Python run before the CLI, e.g. to hide a package)."""
    command = [sys.executable, "-m", "tenfold", *argv] if pre is None else \
        [sys.executable, "-c", f"{pre}; import runpy; runpy.run_module('tenfold', run_name='__main__')", *argv]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_usage_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tenfold: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("workers", ["0", "-1"])
@pytest.mark.parametrize("command", [("run", "toy"), ("reproduce", "--only", "toy")])
def test_rejected_workers_create_nothing(tmp_path, command, workers):
    out = tmp_path / "out"
    proc = tenfold(*command, "--preset", "smoke", "--out", str(out), "--workers", workers, cwd=tmp_path)
    assert_usage_error(proc, "--workers")
    assert not out.exists()


def test_resume_after_a_rejected_run_continues_the_real_partial_run(tmp_path):
    out = tmp_path / "out"
    assert tenfold("run", "toy", "--preset", "smoke", "--out", str(out), "--workers", "1", cwd=tmp_path).returncode == 0
    (out / "toy" / "seeds" / "seed_1.json").unlink()  # as if interrupted before seed 1 finished
    (out / "toy" / "result.json").unlink()
    assert_usage_error(tenfold("run", "toy", "--preset", "smoke", "--out", str(out), "--workers", "0", cwd=tmp_path))
    proc = tenfold("run", "toy", "--preset", "smoke", "--out", str(out), "--workers", "1", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming in {out / 'toy'}: seeds [0] already done" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["toy"]


def test_resume_skips_an_empty_run_folder(tmp_path):
    from tenfold.runner import output_dir

    (tmp_path / "toy" / "seeds").mkdir(parents=True)
    (tmp_path / "toy" / "seeds" / "seed_0.json").write_text("{}")
    empty = tmp_path / "toy-20991231-000000"
    empty.mkdir()
    os.utime(empty, (4e9, 4e9))  # the newest folder, but it holds no results
    assert output_dir(tmp_path, "toy", resume=True) == tmp_path / "toy"


@pytest.mark.parametrize("command", [("run", "toy"), ("reproduce", "--only", "toy")])
def test_out_pointing_at_a_file_is_one_line(tmp_path, command):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    proc = tenfold(*command, "--preset", "smoke", "--out", str(target), "--workers", "1", cwd=tmp_path)
    assert_usage_error(proc, str(target), "not a folder")
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("command", [("run", "toy"), ("reproduce", "--only", "toy")])
def test_out_that_cannot_be_created_is_one_line(tmp_path, command):
    target = "/proc/tenfold-cannot-be-here/runs"
    proc = tenfold(*command, "--preset", "smoke", "--out", target, "--workers", "1", cwd=tmp_path)
    assert_usage_error(proc, "/proc/tenfold-cannot-be-here")
    assert not Path(target).exists()


def _good_result(folder, name):
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "experiment": name, "paper": "P", "preset": "quick", "seeds": [0], "config": {}, "metrics": {},
        "claims": [{"id": f"{name}.c", "statement": "s", "paper": "p", "measured": 1.0, "threshold": ">= 0.5",
                    "passed": True, "note": ""}],
        "figures": [], "wall_s": 1.0, "env": {}}))


def test_report_skips_broken_results_naming_them(tmp_path):
    _good_result(tmp_path / "alpha", "alpha")
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / "result.json").write_text('{"experiment": "beta", "claims": [')  # truncated
    (tmp_path / "gamma").mkdir()
    (tmp_path / "gamma" / "result.json").write_text('{"experiment": "gamma"}')  # keys missing
    proc = tenfold("report", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("tenfold: warning:")]
    assert len(warnings) == 2
    assert str(tmp_path / "beta" / "result.json") in warnings[0] and "not valid JSON" in warnings[0]
    assert str(tmp_path / "gamma" / "result.json") in warnings[1] and "missing keys" in warnings[1]
    text = (tmp_path / "REPORT.md").read_text()
    assert "alpha.c" in text and "beta" not in text


def test_report_with_nothing_valid_exits_2(tmp_path):
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / "result.json").write_text("{")
    proc = tenfold("report", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no valid result.json" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "REPORT.md").exists()


def test_outputs_get_the_mode_of_the_umask(tmp_path):
    out = tmp_path / "out"
    proc = tenfold("reproduce", "--only", "toy", "--preset", "smoke", "--out", str(out), "--workers", "1",
                   cwd=tmp_path, preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    files = [out / "toy" / "result.json", out / "toy" / "seeds" / "seed_0.json", out / "REPORT.md",
             out / "report.html", out / "toy" / "loss.png"]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def test_smoke_runs_say_they_are_not_evidence(tmp_path):
    out = tmp_path / "out"
    proc = tenfold("reproduce", "--only", "toy", "--preset", "smoke", "--out", str(out), "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not evidence" in proc.stdout.strip().splitlines()[-2]  # the claim count line
    result = json.loads((out / "toy" / "result.json").read_text())
    assert result["evidence"] is False and "not evidence" in result["evidence_note"]
    report = (out / "REPORT.md").read_text()
    assert "**Not evidence:**" in report and "PASS (smoke) |" in report
    assert "Not evidence:" in (out / "report.html").read_text()
    proc = tenfold("run", "toy", "--preset", "smoke", "--out", str(out), "--workers", "1", cwd=tmp_path)
    assert "not evidence" in proc.stdout.strip().splitlines()[-1]


def test_lram_without_the_rl_extra_names_it(tmp_path):
    out = tmp_path / "out"
    proc = tenfold("run", "lram", "--preset", "quick", "--out", str(out), cwd=tmp_path,
                   pre="import sys; sys.modules['metaworld'] = None")  # as if not installed
    assert_usage_error(proc, "metaworld", "pip install 'tenfold[rl]'")
    assert not out.exists()


def test_help_cites_no_file_outside_the_repository(tmp_path):
    proc = tenfold("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "DESIGN" not in proc.stdout


def _read_lines(stream, lines):
    for line in stream:
        lines.append(line)


def _default_sigint() -> None:
    """Ctrl-C as a terminal user has it: a suite started in the background by a non-interactive shell
    (a CI script, ``cmd &``) inherits SIGINT ignored, which the child would keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_with_two_workers_is_one_clean_message(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "run", "toy", "--preset", "smoke", "--out", str(out),
                             "--workers", "2", "--seeds", "0,1", "--set", "steps=20000000"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while sum("started" in line for line in lines) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # the seeds are inside their training loops
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    stderr = "".join(lines)
    assert sum("started" in line for line in lines) == 2, stderr  # a start line per seed, without a terminal
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == \
        "tenfold: interrupted; finished seeds are saved, continue with --resume"
