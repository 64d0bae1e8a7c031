"""The max-retrieval task: targets are the class of the max-priority item, sets are deterministic
under a generator and the max is unique."""

import pytest
import torch

from tenfold.tasks.max_retrieval import sample_max_retrieval


def test_target_is_class_of_max_priority_item():
    feats, target, argmax = sample_max_retrieval(64, 37, n_classes=7, generator=torch.Generator().manual_seed(0))
    assert feats.shape == (64, 37, 8) and target.shape == (64,) and argmax.shape == (64,)
    priority, onehot = feats[..., 0], feats[..., 1:]
    assert torch.all((priority >= 0) & (priority < 1))
    torch.testing.assert_close(onehot.sum(-1), torch.ones(64, 37))
    assert torch.equal(argmax, priority.argmax(-1))
    assert torch.equal(target, onehot[torch.arange(64), argmax].argmax(-1))


def test_max_is_unique_and_sampling_is_deterministic():
    a = sample_max_retrieval(16, 4096, generator=torch.Generator().manual_seed(1))
    b = sample_max_retrieval(16, 4096, generator=torch.Generator().manual_seed(1))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    top2 = a[0][..., 0].topk(2, dim=-1).values
    assert torch.all(top2[:, 0] > top2[:, 1])


def test_single_item_sets_and_bad_arguments():
    feats, target, argmax = sample_max_retrieval(3, 1, generator=torch.Generator().manual_seed(2))
    assert torch.all(argmax == 0) and torch.equal(target, feats[:, 0, 1:].argmax(-1))
    with pytest.raises(ValueError, match="n_classes"):
        sample_max_retrieval(2, 5, n_classes=1)
    with pytest.raises(ValueError, match="batch"):
        sample_max_retrieval(0, 5)
