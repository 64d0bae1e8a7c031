"""NaP step 1: normalization before every nonlinearity, redundant biases dropped; group discovery."""

import math

import pytest
import torch
from torch import nn

from tenfold.models.normalized import NormCNN, NormMLP
from tenfold.nn.normalized import (ChannelRMSNorm, NormTransformerBlock, add_norm_before_activations, find_nap_groups,
                                   make_norm)


def test_helper_inserts_norm_before_every_activation_and_drops_biases():
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.GELU()), nn.Linear(8, 3))
    out = add_norm_before_activations(plain, norm="layer")
    assert [type(m) for m in out[:3]] == [nn.Linear, nn.LayerNorm, nn.ReLU]
    assert [type(m) for m in out[3]] == [nn.Linear, nn.LayerNorm, nn.GELU]
    assert out[0].bias is None and out[3][0].bias is None
    assert torch.equal(out[0].weight, plain[0].weight) and out[0].weight is not plain[0].weight
    assert out[-1].bias is not None  # the head is left as it is
    assert plain[0].bias is not None and len(plain) == 4  # input untouched
    kept = add_norm_before_activations(plain, norm="rms", bias_before_norm=True)
    assert kept[0].bias is not None and isinstance(kept[1], nn.RMSNorm)


def test_helper_on_a_cnn_uses_feature_map_norms():
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    layer = add_norm_before_activations(plain, norm="layer")
    rms = add_norm_before_activations(plain, norm="rms")
    assert isinstance(layer[1], nn.GroupNorm) and layer[1].num_groups == 1 and layer[0].bias is None
    assert isinstance(rms[1], ChannelRMSNorm)


def test_helper_validates():
    with pytest.raises(TypeError):
        add_norm_before_activations(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="norm"):
        add_norm_before_activations(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), norm="batch")


def test_norm_mlp_layouts():
    torch.manual_seed(0)
    base = NormMLP(in_features=64, hidden_features=[128, 128], out_features=10, norm="none")
    ln = NormMLP(in_features=64, hidden_features=[128, 128], out_features=10, norm="layer")
    assert not any(isinstance(m, (nn.LayerNorm, nn.RMSNorm)) for m in base.modules())
    assert all(m.bias is not None for m in base if isinstance(m, nn.Linear))
    linears = [m for m in ln if isinstance(m, nn.Linear)]
    assert [type(m) for m in ln] == [nn.Linear, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]
    assert all(m.bias is None for m in linears[:-1]) and linears[-1].bias is not None
    # He init N(0, 2/fan_in), head included; zero biases
    for m in linears:
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / m.in_features), rel=0.1)
    assert torch.equal(linears[-1].bias, torch.zeros(10))
    assert NormMLP(in_features=4, hidden_features=[8], out_features=2, head_bias=False).head.bias is None


def test_same_seed_same_weights_across_layouts():
    torch.manual_seed(3)
    base = NormMLP(in_features=6, hidden_features=[8], out_features=2, norm="none")
    torch.manual_seed(3)
    ln = NormMLP(in_features=6, hidden_features=[8], out_features=2, norm="layer")
    assert torch.equal(base[0].weight, ln[0].weight) and torch.equal(base.head.weight, ln.head.weight)


def test_groups_exclude_the_head():
    ln = NormMLP(in_features=4, hidden_features=[8, 8], out_features=2)
    groups = ln.nap_groups()
    assert groups.weights == [ln[0], ln[3]] and groups.affines == [ln[1], ln[4]] and groups.head == [ln[6]]
    assert find_nap_groups(NormMLP(in_features=4, hidden_features=[8], out_features=2, norm="none")).weights == []
    cnn = NormCNN(in_channels=1, channels=[4, 4], num_classes=3)
    assert len(cnn.nap_groups().weights) == 2 and len(cnn.nap_groups().affines) == 2


@pytest.mark.parametrize("kwargs", [
    {"in_features": 0, "hidden_features": [4], "out_features": 2},
    {"in_features": 3, "hidden_features": [4], "out_features": 2, "norm": "batch"},
    {"in_features": 3, "hidden_features": [4], "out_features": 2, "norm_eps": -1.0},
])
def test_norm_mlp_validates(kwargs):
    with pytest.raises(ValueError):
        NormMLP(**kwargs)


def test_channel_rms_norm_formula():
    norm = ChannelRMSNorm(3, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 3, 4, 4)
    rms = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    assert torch.allclose(norm(x), x / rms * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="expected x"):
        norm(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError):
        make_norm("layer", 0)


def test_cnn_forward_and_backward():
    cnn = NormCNN(in_channels=1, channels=[4, 8], num_classes=3, norm="rms")
    out = cnn(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in cnn.parameters())


def test_transformer_block_invariances_and_causality():
    torch.manual_seed(0)
    block = NormTransformerBlock(dim=16, num_heads=4, hidden=32, norm_eps=0.0).double()  # eps = 0: exact invariance
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    reference = block(x)
    assert reference.shape == x.shape
    for layer in (block.q_proj, block.k_proj, block.up):  # feed a norm: invariant
        with torch.no_grad():
            layer.weight.mul_(3)
        assert torch.allclose(block(x), reference, atol=1e-10)
        with torch.no_grad():
            layer.weight.div_(3)
    for layer in (block.v_proj, block.o_proj, block.down):  # write into the residual stream: not invariant
        with torch.no_grad():
            layer.weight.mul_(3)
        assert (block(x) - reference).abs().max() > 1e-2
        with torch.no_grad():
            layer.weight.div_(3)
    changed = x.clone()
    changed[:, -1] += 1.0
    assert torch.allclose(block(changed)[:, :-1], reference[:, :-1], atol=1e-12)  # causal
    with pytest.raises(ValueError, match="expected x"):
        block(torch.randn(2, 6, 8))
    with pytest.raises(ValueError):
        NormTransformerBlock(dim=10, num_heads=4)


def test_normalize_gpt_block():
    from tenfold.models.gpt import Block, GPTConfig
    from tenfold.nn.normalized import normalize_transformer_block

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, dim=16, num_heads=4, ffn_mult=2.0, bias=True)
    block = Block(cfg, 0).double()
    out = normalize_transformer_block(block, norm_eps=0.0).double()
    w_q, w_k, w_v = block.attn.qkv.weight.chunk(3)
    assert torch.equal(out.q_proj.weight, w_q) and torch.equal(out.v_proj.weight, w_v)
    assert torch.equal(out.up.weight, block.ffn.up.weight) and torch.equal(out.down.bias, block.ffn.down.bias)
    assert out.q_proj.bias is None and out.up.bias is None and out.v_proj.bias is not None
    assert isinstance(out.hidden_norm, nn.LayerNorm)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    # with q/k/hidden norms as identities the two blocks would agree; here they differ but stay causal
    changed = x.clone()
    changed[:, -1] += 1.0
    assert torch.allclose(out(changed)[:, :-1], out(x)[:, :-1], atol=1e-12)
    from tenfold.optim import NaP

    assert set(NaP(out, example_input=x).targets) == {"q_proj", "k_proj", "up"}  # numerically invariant
    with pytest.raises(ValueError, match="rope"):
        normalize_transformer_block(Block(GPTConfig(vocab_size=11, dim=16, num_heads=4), 0, rope=nn.Identity()))
