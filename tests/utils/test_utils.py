import math
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tenfold.utils import (activation_bytes, atomic_write_json, compare, count_flops, count_parameters,
                           load_checkpoint, save_checkpoint, seed_everything, time_fn)
from tenfold.utils.distributed import run_processes, world


def test_flops_count_attention_on_cpu():
    batch, heads, seq, dim = 2, 3, 16, 8
    q = torch.randn(batch, heads, seq, dim)
    flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * batch * heads * seq * seq * dim)  # QK^T and AV, 2 FLOPs per multiply-add


def test_flops_of_a_linear_forward_and_backward():
    layer, x = nn.Linear(32, 16, bias=False), torch.randn(4, 32)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 32 * 16
    assert count_flops(lambda: layer(x), backward=True) == 2 * 4 * 32 * 16 * 2  # grad wrt weight only


def test_activation_bytes_counts_saved_tensors_once_and_not_parameters():
    layer, x = nn.Linear(64, 64), torch.randn(8, 64)
    # linear saves its input (8x64), relu saves its output (8x64); the weight is a parameter
    assert activation_bytes(lambda: layer(x).relu()) == 2 * 8 * 64 * 4
    with torch.device("meta"):
        meta_layer, meta_x = nn.Linear(64, 64), torch.randn(8, 64)
    assert activation_bytes(lambda: meta_layer(meta_x).relu()) == 2 * 8 * 64 * 4


def test_count_parameters_counts_shared_tensors_once():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 3, bias=False))
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 3
    assert count_parameters(model, trainable_only=True) == 3 * 4 + 4
    tied = nn.ModuleList([model[0], model[0]])
    assert count_parameters(tied) == 16


def test_seeding_is_deterministic_and_validated():
    seed_everything(7)
    a = torch.randn(3)
    seed_everything(7)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_time_fn_and_compare_measure_a_ratio():
    big, small = torch.randn(200, 200), torch.randn(20, 20)
    assert time_fn(lambda: big @ big, warmup=1, repeats=3) > 0
    row = compare("matmul", ("small", lambda: small @ small), ("big", lambda: big @ big), warmup=1, repeats=5)
    assert row.ratio > 1 and row.to_dict()["ratio"] == row.ratio
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)


def test_checkpoints_and_json_are_written_atomically(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(3)})
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text().strip().startswith("{")
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"v": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"v": lambda: None})  # a lambda cannot be pickled
    assert load_checkpoint(path) == {"v": 1}
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]


def test_world_outside_a_process_group():
    assert world().rank == 0 and world().size == 1 and world().is_main


def test_run_processes_joins_a_gloo_group(monkeypatch):
    here = str(Path(__file__).parent)
    monkeypatch.syspath_prepend(here)
    monkeypatch.setenv("PYTHONPATH", here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import _dist_worker

    assert run_processes(_dist_worker.rank_sum, 2, (10,)) == [21.0, 21.0]


def test_cpu_clock_measures_work_not_sleep():
    import time

    assert time_fn(lambda: time.sleep(0.02), warmup=0, repeats=2, clock="cpu") < 0.01
    assert time_fn(lambda: time.sleep(0.02), warmup=0, repeats=2, clock="wall") >= 0.02
    with pytest.raises(ValueError, match="clock"):
        time_fn(lambda: None, clock="gpu")


def test_activation_bytes_with_math_attention_counts_the_attention_matrix():
    q = torch.randn(1, 2, 64, 8, requires_grad=True)
    attend = lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)  # noqa: E731
    assert activation_bytes(attend, math_attention=True) >= 2 * 64 * 64 * 4  # the (heads, seq, seq) weights
