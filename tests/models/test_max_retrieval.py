"""The max-retrieval network: its encode/readout split equals its forward; bad sizes are refused."""

import pytest
import torch

from tenfold.models.max_retrieval import MaxRetrievalNet
from tenfold.nn.adaptive_temperature import adaptive_temperature_softmax
from tenfold.tasks.max_retrieval import sample_max_retrieval


def test_bad_sizes():
    with pytest.raises(ValueError, match="d_hidden"):
        MaxRetrievalNet(d_hidden=0)


def test_model_encode_readout_equals_forward_and_trains():
    torch.manual_seed(0)
    net = MaxRetrievalNet(d_hidden=16, d_k=8)
    feats, target, _ = sample_max_retrieval(32, 10, generator=torch.Generator().manual_seed(3))
    scores, values = net.encode(feats)
    assert scores.shape == (32, 10) and values.shape == (32, 10, 16)
    torch.testing.assert_close(net(feats), net.readout(torch.softmax(scores, -1), values))
    torch.testing.assert_close(net(feats, adaptive_temperature_softmax),
                               net.readout(adaptive_temperature_softmax(scores), values))
    loss = torch.nn.functional.cross_entropy(net(feats), target)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError, match="feats"):
        net.encode(torch.randn(2, 3, 5))
