"""The experiments that declare CUDA: the declaration, an explicit ``--device cpu`` smoke run that keeps the
golden metrics, and (only where CUDA is present) a smoke run on the GPU that completes with every claim."""

import json

import pytest
import torch

from tenfold import registry
from tenfold.cli import main
from tenfold.runner import run_experiment

from tests.golden import smoke_metrics

ON_CUDA = ("adaptive-temperature", "nap", "p-rope", "soft-reset", "structured-ffn", "tam", "trecvit")


@pytest.mark.parametrize("name", ON_CUDA)
def test_declares_cpu_and_cuda(name):
    assert registry.get(name).devices == ("cpu", "cuda")


def test_explicit_cpu_device_keeps_the_golden_metrics(tmp_path, capsys):
    code = main(["run", "adaptive-temperature", "--preset", "smoke", "--device", "cpu", "--workers", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    saved = json.loads((tmp_path / "adaptive-temperature" / "result.json").read_text())
    assert saved["env"]["device"] == "cpu"
    assert not smoke_metrics.differences("adaptive-temperature", saved["metrics"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ON_CUDA)
def test_smoke_run_on_cuda(name, tmp_path):
    exp = registry.get(name)
    run_experiment(exp, exp.config("smoke"), "smoke", tmp_path, device="cuda", workers=1, log=lambda m: None)
    saved = json.loads((tmp_path / name / "result.json").read_text())
    assert saved["env"]["device"].startswith("cuda")
    assert sorted(c["id"] for c in saved["claims"]) == sorted(exp.claim_ids)
    golden = json.loads(smoke_metrics.golden_path(name).read_text())
    assert set(smoke_metrics.non_timing(saved["metrics"])) == set(golden)  # the same metrics, values may differ
