"""One contract over the library's layers and models (timm style): forward is finite, every trainable
parameter that takes part gets a finite gradient, a state_dict round trip reproduces the output, and
the same seed builds the same module."""

from collections.abc import Callable

import pytest
import torch
from torch import nn


def _video(frames=4, size=16):
    return (torch.randn(2, frames, 3, size, size),)


def _cases() -> dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple], Callable]]:
    """name -> (build, example inputs, output -> tensor)."""
    from tenfold.models.decision import CausalTransformer
    from tenfold.models.gpt import GPT, GPTConfig
    from tenfold.models.hypernet import HypernetBottleneck, InContextTransformer
    from tenfold.models.lram import LRAM, LRAMConfig
    from tenfold.models.trecvit import TRecViT
    from tenfold.models.vivit import ViViTJoint
    from tenfold.nn.attention import Attention
    from tenfold.nn.blockdiag import BlockDiagonalLinear
    from tenfold.models.normalized import NormMLP
    from tenfold.nn.rglru import RGLRU
    from tenfold.nn.rope import RotaryEmbedding
    from tenfold.nn.structured import BlockDenseLinear, BlockShuffleLinear, LowRankLinear
    from tenfold.nn.xlstm import XLSTMStack
    from tenfold.models.max_retrieval import MaxRetrievalNet

    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    seq = lambda: (torch.randn(2, 7, 16),)  # noqa: E731
    tiny_video = dict(width=16, depth=1, mlp_dim=32, num_heads=2, patch=8, image_size=16, rep_size=16,
                      num_classes=3, frames_per_clip=4)
    lram_batch = lambda: (torch.randn(2, 5, 6), torch.randn(2, 5), torch.randn(2, 5), 10.0)  # noqa: E731
    return {
        "attention": (lambda: Attention(dim=16, num_heads=2), seq, first),
        "attention-p-rope": (lambda: Attention(dim=16, num_heads=2, rope=RotaryEmbedding(8, p=0.75)), seq, first),
        "attention-adaptive": (lambda: Attention(dim=16, num_heads=2, softmax="adaptive"), seq, first),
        "gpt": (lambda: GPT(GPTConfig(vocab_size=11, dim=16, num_layers=2, num_heads=2)),
                lambda: (torch.randint(0, 11, (2, 7)),), first),
        "block-diagonal": (lambda: BlockDiagonalLinear(16, 24, 4), seq, first),
        "low-rank": (lambda: LowRankLinear(16, 24, rank=4), seq, first),
        "block-dense": (lambda: BlockDenseLinear(16, 24, rank=8, blocks=4), seq, first),
        "block-shuffle": (lambda: BlockShuffleLinear(16, 16, blocks=4), seq, first),
        "rglru": (lambda: RGLRU(width=16, num_heads=2), seq, first),
        "xlstm": (lambda: XLSTMStack(dim=16, num_blocks=2, num_heads=2, slstm_at=(1,)), seq, first),
        "causal-transformer": (lambda: CausalTransformer(dim=16, num_layers=2, num_heads=2), seq, first),
        "lram-xlstm": (lambda: LRAM(LRAMConfig(dim=16, num_layers=2, num_heads=2, max_state_dim=6)), lram_batch, first),
        "lram-transformer": (lambda: LRAM(LRAMConfig(backbone="transformer", dim=16, num_layers=1, num_heads=2,
                                                     max_state_dim=6)), lram_batch, first),
        "trecvit": (lambda: TRecViT(**tiny_video), _video, first),
        "vivit-joint": (lambda: ViViTJoint(width=16, depth=1, mlp_dim=32, num_heads=2, num_frames=4, patch=8,
                                           image_size=16, num_classes=3), _video, first),
        "in-context-transformer": (lambda: InContextTransformer(d_in=3, d_out=2, d_model=16, n_heads=2, n_layers=1),
                                   lambda: (torch.randn(2, 6, 3), torch.randn(2, 6, 2), torch.randn(2, 4, 3)), first),
        "hypernet-bottleneck": (lambda: HypernetBottleneck(d_in=3, d_out=2, d_latent=4, d_model=16, n_heads=2,
                                                           n_layers=1),
                                lambda: (torch.randn(2, 6, 3), torch.randn(2, 6, 2), torch.randn(2, 4, 3)), first),
        "max-retrieval": (lambda: MaxRetrievalNet(d_hidden=16, d_k=16), lambda: (torch.randn(2, 9, 11),), first),
        "norm-mlp": (lambda: NormMLP(in_features=8, hidden_features=(16, 16), out_features=4),
                     lambda: (torch.randn(5, 8),), first),
    }


CASES = _cases()
UNUSED = {"lram-xlstm": ("image_embed",), "lram-transformer": ("image_embed",)}  # image encoder: image states only


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[name][0]()


def inputs(name: str) -> tuple:
    torch.manual_seed(123)
    return CASES[name][1]()


def output(name: str, module: nn.Module, args: tuple) -> torch.Tensor:
    return CASES[name][2](module(*args))


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_every_parameter_gets_a_finite_gradient(name):
    module = build(name)
    out = output(name, module, inputs(name))
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    skipped = UNUSED.get(name, ())
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and not n.startswith(skipped) and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_and_seeded_determinism(name):
    module, args = build(name).eval(), inputs(name)
    clone = build(name, seed=1).eval()
    clone.load_state_dict(module.state_dict())
    with torch.no_grad():
        expected = output(name, module, args)
        torch.testing.assert_close(output(name, clone, args), expected, atol=0, rtol=0)
        torch.testing.assert_close(output(name, build(name).eval(), args), expected, atol=0, rtol=0)
