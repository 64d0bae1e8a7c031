"""Mixed precision (``--set amp=bf16``): the autocast helper, its refusal of bad values, and a bf16 smoke run of
every experiment that trains a transformer (CPU autocast supports bfloat16). With the default (``off``) the
golden smoke metrics hold: tests/test_experiments_smoke.py checks them."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tenfold import registry
from tenfold.runner import run_experiment
from tenfold.train import amp as amp_module
from tenfold.train.amp import AMP_MODES, autocast

# experiment -> the module whose forwards run under autocast
AMP_EXPERIMENTS = {
    "compositional": "compositional", "lram": "lram", "p-rope": "p_rope", "ra-dt": "ra_dt",
    "structured-ffn": "structured_ffn_lm", "trecvit": "trecvit",
}
ROOT = Path(__file__).resolve().parents[2]


def test_off_is_no_autocast_at_all():
    layer = torch.nn.Linear(4, 3)
    with autocast("off", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_bf16_runs_matmuls_in_bfloat16_and_losses_in_float32():
    layer = torch.nn.Linear(4, 3)
    with autocast("bf16", torch.device("cpu")):
        out = layer(torch.randn(2, 4))
        loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 2]))
    assert out.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # parameters stay float32
    assert not torch.is_autocast_enabled("cpu")  # the context closes


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None])
def test_bad_amp_is_refused(bad):
    with pytest.raises(ValueError, match="amp must be one of"):
        autocast(bad, "cpu")


# full presets that train in bf16 on one GPU, as the official code does (use_amp / bf16)
BF16_FULL = ("ra-dt", "structured-ffn")


def test_amp_is_off_by_default_and_at_smoke_and_quick():
    for name in AMP_EXPERIMENTS:
        exp = registry.get(name)
        assert type(exp.config("quick")).amp == "off", name  # the field's default
        for preset in ("smoke", "quick"):
            assert exp.config(preset).amp == "off", (name, preset)
        assert exp.config("full").amp == ("bf16" if name in BF16_FULL else "off"), name
    assert AMP_MODES == ("off", "bf16")


def test_cli_refuses_a_bad_amp_in_one_line(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "tenfold", "run", "p-rope", "--preset", "smoke", "--set", "amp=fp8",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "amp" in lines[0] and "bf16" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(AMP_EXPERIMENTS))
def test_bf16_smoke_run_works_on_cpu(name, tmp_path, monkeypatch):
    module = importlib.import_module(f"tenfold.experiments.{AMP_EXPERIMENTS[name]}")
    calls = []

    def spy(amp, device):
        calls.append((amp, torch.device(device).type))
        return amp_module.autocast(amp, device)

    monkeypatch.setattr(module, "autocast", spy)
    exp = registry.get(name)
    run_experiment(exp, exp.config("smoke", {"amp": "bf16"}), "smoke", tmp_path, workers=1, log=lambda m: None)
    saved = json.loads((tmp_path / name / "result.json").read_text())
    assert saved["config"]["amp"] == "bf16"
    assert sorted(c["id"] for c in saved["claims"]) == sorted(exp.claim_ids)
    assert calls and set(calls) == {("bf16", "cpu")}  # every forward it wraps asked for bf16
