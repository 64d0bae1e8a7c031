"""TRecViT: parameter counts of the paper's variants, streaming == full forward, causality, the
reshape between tubes and frames, tokenizer and decoder semantics, FLOP accounting, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from tenfold.models.trecvit import TRecViT, TRecViTConfig, Tokenizer, ViTBlock
from tenfold.utils import count_flops, count_parameters


def tiny(**overrides) -> TRecViT:
    torch.manual_seed(0)
    fields = dict(width=16, depth=2, mlp_dim=32, num_heads=2, patch=4, image_size=8, rep_size=12, num_classes=5,
                  frames_per_clip=6)
    return TRecViT(TRecViTConfig(**{**fields, **overrides}))


def video(batch=2, steps=6, seed=1):
    return torch.rand(batch, steps, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,expected", [("B", 136_778_128), ("S", 37_154_704), ("L", 471_797_136)])
def test_variant_parameter_counts_on_meta(name, expected):
    with torch.device("meta"):
        model = TRecViT.from_variant(name, num_frames=32, num_classes=400)
    assert count_parameters(model) == expected
    assert model.pre_logits.weight.is_meta


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_streaming_equals_full_forward(readout):
    model = tiny(readout=readout)
    clip = video()
    online, _ = model.forward_frames(clip)
    state = None
    for t in range(clip.shape[1]):
        logits, state = model.step(clip[:, t], state)
        assert torch.allclose(logits, online[:, t], atol=1e-5)
        assert torch.allclose(logits, model(clip[:, :t + 1]), atol=1e-5)
    assert state.t == clip.shape[1]


def test_forward_frames_in_chunks_and_constant_state():
    model = tiny()
    clip = video(steps=6)
    full, _ = model.forward_frames(clip)
    first, state = model.forward_frames(clip[:, :2])
    sizes = [state.nbytes()]
    second, state = model.forward_frames(clip[:, 2:], state)
    sizes.append(state.nbytes())
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)
    # per layer and token: h (W floats) and 3 conv inputs (3W floats), fp32
    tokens, lru = 1 + 4, 32
    assert sizes == [2 * 2 * tokens * 4 * lru * 4] * 2


def test_causal_in_time():
    model = tiny()
    clip = video()
    changed = clip.clone()
    changed[:, 4:] = torch.rand_like(changed[:, 4:])
    a, _ = model.forward_frames(clip)
    b, _ = model.forward_frames(changed)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-4)


def test_videos_do_not_mix():
    model = tiny()
    clip = video(batch=3)
    changed = clip.clone()
    changed[1] = torch.rand_like(changed[1])
    a, b = model.encode(clip), model.encode(changed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.allclose(a[1], b[1])


def test_tube_reshape_round_trip_and_positions_do_not_mix():
    """Changing one patch in one frame at layer 0 only reaches that tube in time before spatial mixing."""
    model = tiny(depth=1)
    tokens = model.tokens(video())
    batch, steps, n, width = tokens.shape
    tubes = tokens.permute(0, 2, 1, 3).reshape(batch * n, steps, width)  # (B*N, T, D)
    assert torch.equal(tubes.reshape(batch, n, steps, width).permute(0, 2, 1, 3), tokens)
    temporal = model.temporal[0]
    out, _ = temporal(tubes)
    changed = tubes.clone()
    changed[3, 2] += 1.0  # video 0, token 3, frame 2
    out2, _ = temporal(changed)
    diff = (out2 - out).abs().sum(-1)  # (B*N, T)
    assert diff[3, 2:].gt(0).all() and diff[3, :2].eq(0).all()
    diff[3] = 0
    assert diff.eq(0).all()


def test_tokenizer_cls_and_shared_position_embedding():
    torch.manual_seed(0)
    tok = Tokenizer(width=8, patch=4, image_size=8, in_chans=3)
    with torch.no_grad():
        tok.cls.normal_()
    frame = torch.rand(1, 1, 3, 8, 8)
    clip = frame.expand(2, 5, 3, 8, 8)
    x = tok(clip)  # (2, 5, 5, 8)
    assert x.shape == (2, 5, 5, 8)
    assert torch.equal(x[:, :, 0], tok.cls[0, 0].expand(2, 5, 8))  # CLS gets no position embedding
    assert torch.allclose(x, x[:1, :1].expand_as(x))  # the same embedding for every frame
    conv3d = torch.nn.Conv3d(3, 8, (1, 4, 4), stride=(1, 4, 4))
    with torch.no_grad():
        conv3d.weight.copy_(tok.embedding.weight.unsqueeze(2))
        conv3d.bias.copy_(tok.embedding.bias)
    patches = conv3d(clip.transpose(1, 2)).flatten(3).permute(0, 2, 3, 1)  # (B, T, h*w, D)
    assert torch.allclose(x[:, :, 1:], patches + tok.pos_embedding, atol=1e-6)


def test_decoder_mean_readout_and_clip_averaging():
    model = tiny(frames_per_clip=3)
    clip = video(steps=6)
    first, second = clip[:, :3], clip[:, 3:]
    expected = 0.5 * (model(first) + model(second))
    assert torch.allclose(model(clip), expected, atol=1e-6)
    features = model.frame_features(model.encode(first))  # (B, T, rep)
    assert torch.allclose(model(first), model.head(features.mean(1)), atol=1e-6)
    # the official split: n = max(T // frames_per_clip, 1) clips of T / n frames
    assert torch.allclose(model(video(steps=5)), model._clip_logits(video(steps=5)), atol=1e-6)  # one 5-frame clip
    with pytest.raises(ValueError, match="divisible"):
        model(video(steps=7))  # 2 clips of 3.5 frames


def test_predict_averages_clip_probabilities():
    model = tiny(frames_per_clip=3)
    clip = video(steps=6)
    per_clip = torch.stack([model(clip[:, :3]), model(clip[:, 3:])], dim=1)  # (B, 2, classes)
    out = model.predict(clip)
    assert torch.allclose(out["logits"], per_clip.mean(1), atol=1e-6)
    assert torch.allclose(out["probs"], per_clip.softmax(-1).mean(1), atol=1e-6)
    assert not torch.allclose(out["probs"], out["logits"].softmax(-1), atol=1e-4)  # not the softmax of the mean


def test_channels_last_input_gives_the_same_logits():
    model = tiny()
    last = tiny(channels_last=True)
    clip = video()
    assert torch.equal(model(clip), last(clip.permute(0, 1, 3, 4, 2)))
    frame_logits, _ = last.step(clip[:, 0].permute(0, 2, 3, 1))
    assert torch.allclose(frame_logits, model.step(clip[:, 0])[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, T, 8, 8, 3\)"):
        last(clip)


def test_gap_pool_has_no_cls_and_averages_tokens():
    model = tiny(pool="gap")
    assert model.tokenizer.cls is None
    clip = video()
    tokens = model.encode(clip)
    assert tokens.shape == (2, 6, 4, 16)  # 2x2 patches, no CLS
    expected = model.head(torch.tanh(model.pre_logits(tokens.mean(2))).mean(1))
    assert torch.allclose(model(clip), expected, atol=1e-6)
    online, _ = model.forward_frames(clip)
    assert torch.allclose(online[:, -1], model(clip), atol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        tiny(pool="max")


def test_vit_block_flops():
    block = ViTBlock(width=16, num_heads=2, mlp_dim=64)
    n, d, m = 5, 16, 64
    flops = count_flops(lambda: block(torch.randn(1, n, d)))
    assert flops == 8 * n * d * d + 4 * n * n * d + 4 * n * d * m


def test_meta_and_cpu_flops_agree():
    model = tiny()
    cpu = count_flops(lambda: model(video()))
    with torch.device("meta"):
        meta_model = tiny()
        meta = count_flops(lambda: meta_model(torch.empty(2, 6, 3, 8, 8)))
    assert cpu == meta > 0


def test_training_step_reaches_every_parameter():
    model = tiny()
    loss = F.cross_entropy(model(video()), torch.tensor([0, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(B, T, 3, 8, 8\)"):
        model(torch.rand(2, 6, 1, 8, 8))
    with pytest.raises(ValueError, match="frame must be"):
        model.step(torch.rand(2, 6, 3, 8, 8))
    with pytest.raises(ValueError, match="variant"):
        TRecViT.from_variant("XL")
    with pytest.raises(ValueError, match="readout"):
        TRecViTConfig(readout="max")
    with pytest.raises(ValueError, match="num_heads"):
        TRecViTConfig(width=10, num_heads=3)
    with pytest.raises(ValueError, match="patch"):
        TRecViTConfig(image_size=30, patch=16)
    with pytest.raises(NotImplementedError):
        tiny(temporal="attention").step(torch.rand(2, 3, 8, 8))
