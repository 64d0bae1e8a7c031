import pytest
import torch

from tenfold.tasks.positional import IGNORE_INDEX, PositionalTask, SemanticTask


def test_positional_targets_are_the_token_offset_back():
    for offset in (1, 3):
        task = PositionalTask(vocab_size=32, offset=offset)
        tokens, targets = task.sample(4, 20, torch.Generator().manual_seed(0))
        assert tokens.shape == targets.shape == (4, 20)
        assert (targets[:, :offset] == IGNORE_INDEX).all()
        assert torch.equal(targets[:, offset:], tokens[:, :-offset])
        assert tokens.max() < 32 and tokens.min() >= 0
    assert PositionalTask().chance == 1 / 32


def test_semantic_needle_is_unique_and_is_the_target():
    task = SemanticTask(num_keys=16, num_values=8)
    assert task.vocab_size == 144
    tokens, targets, distance = task.sample(256, 40, torch.Generator().manual_seed(1))
    assert tokens.shape == (256, 40) and targets.shape == distance.shape == (256,)
    query_key = tokens[:, -1] - 128
    assert (tokens[:, -1] >= 128).all() and (tokens[:, :-1] < 128).all()
    keys = tokens[:, :-1] // 8
    matches = keys == query_key[:, None]
    assert (matches.sum(1) == 1).all()  # the queried key occurs exactly once
    position = matches.float().argmax(1)
    assert torch.equal(tokens[torch.arange(256), position], targets)
    assert torch.equal(distance, 39 - position)
    assert distance.min() >= 1 and distance.max() <= 39
    assert len(distance.unique()) > 20  # uniform needle position


def test_semantic_fixed_distance_and_determinism():
    task = SemanticTask()
    a = task.sample(8, 512, torch.Generator().manual_seed(2), distance=511)
    b = task.sample(8, 512, torch.Generator().manual_seed(2), distance=511)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert (a[2] == 511).all() and torch.equal(a[0][:, 0], a[1])


def test_bad_input():
    with pytest.raises(ValueError, match="offset"):
        PositionalTask(offset=0)
    with pytest.raises(ValueError, match="seq_len"):
        PositionalTask(offset=3).sample(1, 3)
    with pytest.raises(ValueError, match="num_keys"):
        SemanticTask(num_keys=1)
    with pytest.raises(ValueError, match="distance"):
        SemanticTask().sample(1, 10, distance=10)
