import math

import pytest
import torch

from tenfold.experiments.structured_ffn_lm import (LMTrainConfig, count_loss_spikes, evaluate_lm, lr_scale,
                                                    train_gpt_on_text)
from tenfold.utils.distributed import run_processes

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
MODEL = {"dim": 16, "num_layers": 2, "num_heads": 2, "max_seq_len": 8, "bias": True}


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = LMTrainConfig(steps=100, lr=1e-3, warmup_frac=0.1, min_lr_frac=0.1)
    lr_at = lambda step: cfg.lr * lr_scale(step, cfg)  # noqa: E731
    assert lr_at(0) == pytest.approx(1e-4)
    assert lr_at(9) == pytest.approx(1e-3)
    assert lr_at(99) == pytest.approx(1e-4)
    mid = 10 + 89 / 2
    assert lr_at(int(mid)) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * int(mid - 10) / 89)))
    assert all(lr_at(s) >= lr_at(s + 1) for s in range(10, 99))


def test_fixedflop_schedule_spans_the_extra_guided_steps():
    cfg = LMTrainConfig(steps=100, lr=1e-3, sgt=True, sgt_ratio=0.3, sgt_mode="fixedflop")
    assert cfg.train_steps() == 130
    assert lr_scale(129, cfg) == pytest.approx(0.1) and lr_scale(99, cfg) > 0.2
    assert LMTrainConfig(steps=100, sgt_mode="fixedflop").train_steps() == 100  # no SGT: no extra steps
    with pytest.raises(ValueError, match="sgt_mode"):
        LMTrainConfig(sgt_mode="fixedflops")


def test_fixedflop_sgt_costs_what_plain_lowrank_costs_at_the_matched_step_count():
    """Fixed-FLOP SGT at T steps with the guided fraction of fixedflop_ratio costs the dense model's T
    steps; plain LowRank trained for T·dense/structured steps costs the same (matrix-product FLOPs)."""
    from tenfold.models.gpt import GPT, GPTConfig
    from tenfold.experiments.structured_ffn_lm import matmul_macs_per_token
    from tenfold.nn.structured import fixedflop_ratio, structured_ffn, structured_layers

    steps, lowrank = 40, {"kind": "lowrank", "rank": 4}
    cfg = GPTConfig(vocab_size=28, **MODEL)
    dense_macs = matmul_macs_per_token(GPT(cfg))
    net = GPT(cfg, ffn=structured_ffn(**lowrank))
    structured_macs = matmul_macs_per_token(net)
    guide_macs = sum(layer.in_features * layer.out_features for layer in structured_layers(net))
    ratio = fixedflop_ratio(dense_macs, structured_macs, guide_macs, reduce_flop=False)
    train = {"steps": steps, "batch_size": 4, "context": 8, "sgt": True, "sgt_ratio": ratio, "sgt_mode": "fixedflop"}
    sgt = train_gpt_on_text(MODEL, train, seed=0, ffn=lowrank, text=TEXT)
    matched = round(steps * dense_macs / structured_macs)
    plain = train_gpt_on_text(MODEL, {"steps": matched, "batch_size": 4, "context": 8}, seed=0, ffn=lowrank, text=TEXT)
    dense = train_gpt_on_text(MODEL, {"steps": steps, "batch_size": 4, "context": 8}, seed=0, text=TEXT)
    assert sgt["train_steps"] == steps + int(ratio * steps) and len(sgt["losses"]) == sgt["train_steps"]
    one_step = 6.0 * max(dense_macs, structured_macs + guide_macs) * 4 * 8
    assert abs(sgt["train_flops"] - dense["train_flops"]) <= one_step
    assert abs(plain["train_flops"] - dense["train_flops"]) <= one_step
    assert sgt["guide_flops"] == 6.0 * guide_macs * 4 * 8 * int(ratio * steps)


def test_fixedflop_replays_the_first_guided_batches_at_the_end():
    train = {"steps": 8, "batch_size": 4, "context": 8, "lr": 1e-9, "sgt": True, "sgt_ratio": 0.5,
             "sgt_mode": "fixedflop", "warmup_frac": 0.0}
    record = train_gpt_on_text(MODEL, train, seed=5, ffn={"kind": "lowrank", "rank": 4}, text=TEXT)
    assert record["train_steps"] == 12 and record["alphas"][4:] == [0.0] * 8
    # at lr ~ 0 the model stays at its initial map: the replayed batches give the first batches' losses
    first = train_gpt_on_text(MODEL, {**train, "sgt": False, "steps": 4}, seed=5, ffn={"kind": "lowrank", "rank": 4},
                              text=TEXT)
    assert record["losses"][8:12] == pytest.approx(first["losses"][:4], abs=1e-4)


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
    with pytest.raises(ValueError, match="eval_start"):
        LMTrainConfig(eval_start=-1)


def test_evaluation_from_a_start_window_covers_exactly_its_windows():
    import random

    from tenfold.models.gpt import GPT, GPTConfig
    from tenfold.tasks.text import CharCorpus

    letters = random.Random(0)
    corpus = CharCorpus(TEXT + "".join(letters.choice("abcdefghij") for _ in range(600)))  # aperiodic validation
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, **MODEL))
    first, second = (evaluate_lm(model, corpus, 8, max_windows=5, start=start, batch_size=3) for start in (0, 5))
    both = evaluate_lm(model, corpus, 8, max_windows=10, batch_size=3)
    assert (first + second) / 2 == pytest.approx(both, rel=1e-6)
    assert first != pytest.approx(second, rel=1e-3)  # the two halves are different windows
    assert evaluate_lm(model, corpus, 8, max_windows=5, start=5, batch_size=64) == pytest.approx(second, rel=1e-6)


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
