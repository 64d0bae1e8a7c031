"""ViViT baselines: ViViT-L/B parameter counts, block-causal KV-cache streaming, the factorised and
no-time skeletons, bad inputs."""

import pytest
import torch

from tenfold.models.trecvit import TRecViTConfig
from tenfold.models.vivit import PerFrameViT, ViViTConfig, ViViTFactorised, ViViTJoint
from tenfold.utils import count_parameters


@pytest.mark.parametrize("name,expected", [("L", 307_508_624), ("B", 88_954_000)])
def test_vivit_parameter_counts_on_meta(name, expected):
    with torch.device("meta"):
        model = ViViTJoint.from_variant(name, num_frames=32, num_classes=400)
    assert count_parameters(model) == expected
    assert model.cfg.groups * model.cfg.patches + 1 == 3137


def small_joint(**overrides):
    torch.manual_seed(0)
    fields = dict(width=16, depth=2, mlp_dim=32, num_heads=2, num_frames=5, tubelet=1, patch=4, image_size=8,
                  num_classes=3)
    return ViViTJoint(ViViTConfig(**{**fields, **overrides}))


def clip(batch=2, steps=5):
    return torch.rand(batch, steps, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def test_causal_kv_streaming_equals_forward_and_cache_grows():
    model = small_joint(causal=True, cls="frame")
    video = clip()
    state, sizes, outputs = None, [], []
    for t in range(5):
        logits, state = model.step(video[:, t], state)
        sizes.append(state.nbytes())
        outputs.append(logits)
    assert torch.allclose(logits, model(video), atol=1e-5)
    per_frame = 2 * 2 * 2 * 5 * 16 * 4  # batch 2, K and V, 2 layers, 5 tokens, D 16, fp32
    assert sizes == [per_frame * (t + 1) for t in range(5)]
    changed = video.clone()
    changed[:, 3:] = 0.0
    state = None
    for t in range(3):
        early, state = model.step(changed[:, t], state)
    assert torch.allclose(early, outputs[2], atol=1e-6)  # frames after t do not matter


def test_bidirectional_joint_sees_the_future():
    model = small_joint(cls="frame")
    video = clip()
    changed = video.clone()
    changed[:, -1] = 0.0
    assert not torch.allclose(model(video), model(changed))
    with pytest.raises(NotImplementedError):
        model.step(video[:, 0])


def test_per_frame_vit_ignores_frame_order_and_factorised_does_not():
    cfg = TRecViTConfig(width=16, depth=1, mlp_dim=32, num_heads=2, patch=4, image_size=8, rep_size=8,
                        num_classes=3, frames_per_clip=5)
    torch.manual_seed(0)
    bag, fact = PerFrameViT(cfg), ViViTFactorised(cfg)
    video = clip()
    shuffled = video[:, [4, 2, 0, 3, 1]]
    assert torch.allclose(bag(video), bag(shuffled), atol=1e-6)
    assert not torch.allclose(fact(video), fact(shuffled), atol=1e-4)
    assert fact.cfg.temporal == "attention" and fact.time_pos is not None
    assert ViViTFactorised(cfg, causal=True).cfg.temporal == "causal_attention"


def test_bad_inputs():
    with pytest.raises(ValueError, match="causal=True needs cls='frame'"):
        ViViTConfig(causal=True)
    with pytest.raises(ValueError, match="tubelet"):
        ViViTConfig(num_frames=5, tubelet=2)
    with pytest.raises(ValueError, match="variant"):
        ViViTJoint.from_variant("H")
    model = small_joint()
    with pytest.raises(ValueError, match=r"\(B, 5, 3, 8, 8\)"):
        model(clip(steps=4))
