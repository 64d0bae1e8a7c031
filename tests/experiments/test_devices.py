"""Every experiment declares CUDA: the declaration and ``tenfold list``, an explicit ``--device cpu`` smoke run
of each that keeps the golden metrics, the device-moving code on the ``meta`` device (no GPU needed: an op
that mixes a meta tensor with a CPU one fails as it would with a CUDA one), and (only where CUDA is present)
a smoke run on the GPU that completes with every claim."""

import json

import numpy as np
import pytest
import torch

from tenfold import registry
from tenfold.cli import main
from tenfold.experiments import compositional, lram
from tenfold.models.decision import CausalTransformer
from tenfold.models.lram import LRAM, LRAMAgent
from tenfold.runner import run_experiment

from tests.golden import smoke_metrics

NAMES = registry.names()
META = torch.device("meta")


@pytest.mark.parametrize("name", NAMES)
def test_declares_cpu_and_cuda(name):
    assert registry.get(name).devices == ("cpu", "cuda")


def test_list_shows_both_devices(capsys):
    assert main(["list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(row[0] for row in rows) == sorted(NAMES)
    assert all(row[4] == "cpu,cuda" for row in rows)


@pytest.mark.parametrize("name", NAMES)
def test_explicit_cpu_device_keeps_the_golden_metrics(name, tmp_path):
    code = main(["run", name, "--preset", "smoke", "--device", "cpu", "--workers", "1", "--out", str(tmp_path)])
    assert code == 0
    saved = json.loads((tmp_path / name / "result.json").read_text())
    assert saved["env"]["device"] == "cpu"
    assert not smoke_metrics.differences(name, saved["metrics"])


# --------------------------------------------------------------------------- device moves, on meta
def test_icl_batch_moves_every_tensor():
    cfg = compositional.PRESETS["smoke"]
    batch = compositional.make_samplers(cfg, 0)["connected"].sample(4, "id", torch.Generator().manual_seed(0))
    moved = batch.to(META)
    for name in ("x_ctx", "y_ctx", "x_q", "y_q", "z", "combo_idx"):
        assert getattr(moved, name).device == META
        assert getattr(moved, name).shape == getattr(batch, name).shape
        assert getattr(batch, name).device.type == "cpu"  # the CPU batch is untouched


@pytest.mark.parametrize("arm", [*compositional.ARMS, "bottleneck_transformer", "bottleneck_deepset"])
def test_compositional_arms_train_on_the_device_of_their_batch(arm):
    cfg = compositional.Config(**{**compositional.PRESETS["smoke"].__dict__, "ablations": ("transformer", "deepset")})
    batch = compositional.make_samplers(cfg, 0)["connected"].sample(4, "id", torch.Generator().manual_seed(0))
    model = compositional.build_model(arm, cfg).to(META)
    prediction = compositional.predict(arm, model, batch.to(META))
    loss = torch.nn.functional.mse_loss(prediction, batch.y_q.to(META))
    loss.backward()  # a tensor left on the CPU inside forward or backward would raise here
    assert prediction.device == META and prediction.shape == batch.y_q.shape
    assert all(p.grad is not None and p.grad.device == META for p in model.parameters())


def _lram_batch(backbone: str):
    cfg = lram.PRESETS["smoke"]
    data, _ = lram.dataset(cfg)
    model_cfg = lram.model_config(cfg, backbone)
    model = LRAM(model_cfg)
    batch = data.sample(sorted(data.domains)[0], 2, cfg.context, model.tokenizer, model_cfg.max_act_dim,
                        torch.Generator().manual_seed(0))
    return model, batch


@pytest.mark.parametrize("backbone", ["xlstm", "transformer"])
def test_lram_forward_on_the_device_of_its_batch(backbone):
    model, batch = _lram_batch(backbone)
    moved = lram._on(batch, META)
    assert all(v.device == META for v in moved.values() if isinstance(v, torch.Tensor))
    assert moved["scale"] == batch["scale"]  # the reward scale stays a float
    logits = model.to(META)(moved["states"], moved["returns"], moved["rewards"], moved["scale"],
                            timesteps=moved["timesteps"])
    assert logits.device == META and logits.shape[:2] == batch["states"].shape[:2]


@pytest.mark.parametrize("backbone, agent_kind", [("xlstm", LRAMAgent), ("transformer", lram.WindowAgent)])
def test_lram_agent_feeds_observations_on_the_models_device(backbone, agent_kind):
    """The agents the experiment scores (xLSTM stepping, the Transformer re-running its window): everything
    up to handing the action to the environment runs on the model's device; copying a meta tensor out to the
    CPU (the action) is the one step meta cannot do, so that is where it stops."""
    model, _ = _lram_batch(backbone)
    kwargs = {"window": 4} if agent_kind is lram.WindowAgent else {}
    agent = agent_kind(model.to(META), scale=1.0, discrete=True, n_actions=2, **kwargs)
    assert agent.allowed.device == META
    agent.reset(1.0)
    with pytest.raises(NotImplementedError, match="copy out of meta"):
        agent.act(np.zeros(4, dtype=np.float32))


def test_causal_transformer_reads_no_position_back_from_the_device():
    model = CausalTransformer(dim=8, num_layers=1, num_heads=2, max_positions=16).to(META)
    y, _ = model(torch.zeros(2, 5, 8, device=META))  # .item() on a meta tensor would raise
    assert y.shape == (2, 5, 8)
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.zeros(1, 17, 8, device=META))


# --------------------------------------------------------------------------- on a GPU
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_on_cuda(name, tmp_path):
    exp = registry.get(name)
    run_experiment(exp, exp.config("smoke"), "smoke", tmp_path, device="cuda", workers=1, log=lambda m: None)
    saved = json.loads((tmp_path / name / "result.json").read_text())
    assert saved["env"]["device"].startswith("cuda")
    assert sorted(c["id"] for c in saved["claims"]) == sorted(exp.claim_ids)
    golden = json.loads(smoke_metrics.golden_path(name).read_text())
    assert set(smoke_metrics.non_timing(saved["metrics"])) == set(golden)  # the same metrics, values may differ
