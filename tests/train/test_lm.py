import math

import pytest
import torch

from tenfold.train.lm import LMTrainConfig, count_loss_spikes, lr_at, train_gpt_on_text
from tenfold.utils.distributed import run_processes

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
MODEL = {"dim": 16, "num_layers": 2, "num_heads": 2, "max_seq_len": 8, "bias": True}


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = LMTrainConfig(steps=100, lr=1e-3, warmup_frac=0.1, min_lr_frac=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4)
    mid = 10 + 89 / 2
    assert lr_at(int(mid), cfg) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * int(mid - 10) / 89)))
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_loss_spike_counter():
    flat = [2.0] * 40
    assert count_loss_spikes(flat) == 0
    spiky = list(flat)
    spiky[25] = 2.5  # +0.5 over the running median
    spiky[30] = 2.2  # +0.2: not a spike
    spiky[5] = 9.0  # before step 20: not counted
    assert count_loss_spikes(spiky) == 1


def test_bad_config_raises():
    with pytest.raises(ValueError, match="steps"):
        LMTrainConfig(steps=0)
    with pytest.raises(ValueError, match="sgt_schedule"):
        LMTrainConfig(sgt_schedule="step")


def test_training_reduces_loss_and_sgt_closes_its_guides():
    train = {"steps": 16, "batch_size": 8, "context": 8, "lr": 2e-2, "sgt": True, "sgt_ratio": 0.5}
    record = train_gpt_on_text(MODEL, train, seed=0, ffn={"kind": "lowrank", "rank": 4}, text=TEXT)
    assert record["losses"][-1] < record["losses"][0] - 0.5
    assert record["alphas"][0] == 1.0 and record["alphas"][-1] == 0.0
    assert record["guide_flops"] > 0
    # deployed parameters exclude the (deleted) guides
    plain = train_gpt_on_text(MODEL, {**train, "steps": 1, "sgt": False}, ffn={"kind": "lowrank", "rank": 4},
                              text=TEXT)
    assert record["params"] == plain["params"]


def test_deterministic_given_the_seed():
    train = {"steps": 3, "batch_size": 4, "context": 8}
    a = train_gpt_on_text(MODEL, train, seed=3, text=TEXT)
    b = train_gpt_on_text(MODEL, train, seed=3, text=TEXT)
    assert a["losses"] == b["losses"] and a["val_loss"] == b["val_loss"]


def test_ddp_two_processes_equal_one_process_at_the_same_global_batch():
    kwargs = {"model": MODEL, "train": {"steps": 4, "batch_size": 8, "context": 8, "lr": 1e-2, "sgt": True,
                                        "sgt_ratio": 0.5}, "seed": 1, "ffn": {"kind": "lowrank", "rank": 4},
              "text": TEXT, "return_weights": True}
    single = train_gpt_on_text(**kwargs)
    order = ("model", "train", "seed", "ffn", "text", "rope", "return_weights")
    ranks = run_processes(train_gpt_on_text, 2, tuple({**kwargs, "rope": False}[k] for k in order))
    for record in ranks:
        assert record["world_size"] == 2
        torch.testing.assert_close(torch.tensor(record["losses"]), torch.tensor(single["losses"]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.tensor(record["weights"]), torch.tensor(single["weights"]), atol=1e-5,
                                   rtol=1e-4)
        assert record["val_loss"] == pytest.approx(single["val_loss"], abs=1e-5)


def test_paired_init_starts_every_arm_from_the_dense_model_of_the_seed():
    train = {"steps": 1, "batch_size": 4, "context": 8, "lr": 1e-9}  # one negligible step
    model = MODEL | {"num_layers": 3}
    lowrank = {"kind": "lowrank", "rank": 4}
    dense = train_gpt_on_text(model, train, seed=2, text=TEXT, return_weights=True)
    paired = train_gpt_on_text(model, train, seed=2, ffn=lowrank, text=TEXT, return_weights=True, paired_init=True)
    unpaired = train_gpt_on_text(model, train, seed=2, ffn=lowrank, text=TEXT, return_weights=True)
    embed = 28 * 16  # the token embedding (vocab, dim) comes first
    gap = torch.tensor(paired["weights"][:embed]) - torch.tensor(dense["weights"][:embed])
    assert gap.abs().max().item() < 1e-7
    assert (torch.tensor(unpaired["weights"][:embed]) - torch.tensor(dense["weights"][:embed])).abs().max() > 1e-3
