import ast
from pathlib import Path

import torch

from tenfold import benchmarks, registry
from tenfold.cli import main
from tenfold.utils.bench import BenchRow

EXPERIMENTS = Path(registry.__file__).parent / "experiments"


def test_every_benchmark_belongs_to_a_registered_experiment():
    names = benchmarks.names()
    assert {"tam", "nap", "soft-reset", "trecvit", "p-rope", "adaptive-temperature", "lram", "structured-ffn"} <= set(names)
    assert set(names) <= set(registry.names())
    for name in names:
        assert callable(benchmarks.get(name))


def test_unknown_benchmark_names_the_valid_ones():
    try:
        benchmarks.get("toy")
    except KeyError as error:
        assert "no benchmark for 'toy'" in error.args[0] and "tam" in error.args[0]
    else:
        raise AssertionError("toy has no benchmark")


def test_experiment_files_set_no_threads():
    """Thread pinning belongs to the runner and to ``tenfold bench`` (a timing inside ``evaluate``
    uses ``utils.threads.one_thread``), never to an experiment file."""
    for path in EXPERIMENTS.glob("*.py"):
        calls = [node.func.attr for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)]
        assert "set_num_threads" not in calls, path.name


def test_bench_pins_one_thread_once_and_writes_rows(monkeypatch, capsys, tmp_path):
    seen = []

    def fake(quick: bool) -> list[BenchRow]:
        seen.append((quick, torch.get_num_threads()))
        return [BenchRow("fake", "base", "method", 2.0, 1.0, {})]

    monkeypatch.setattr(benchmarks, "_discover", lambda: {"tam": fake})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # restored after the test
    previous = torch.get_num_threads()
    try:
        assert main(["bench", "tam", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(previous)
    assert seen == [(True, 1)]
    assert (tmp_path / "tam.json").exists()
    assert "0.500" in capsys.readouterr().out
