"""Official TRecViT checkpoints: a tenfold model written in the official ``.npz`` layout is read back
with the right names, shapes and sizes, and the loaded model reproduces an independent NumPy
transcription of the official forward (``trecvit/modules.py`` + recurrentgemma's layers) to 1e-5."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from tenfold.models.trecvit import TRecViT, TRecViTConfig
from tenfold.models.trecvit_official import (infer_config, load_official_checkpoint, official_params,
                                             read_checkpoint, save_official_checkpoint)

SIZES = dict(width=8, mlp_dim=16, num_heads=2, patch=4, image_size=8, rep_size=6, num_classes=5,
             frames_per_clip=3)


def perturbed(depth=1, **overrides) -> TRecViT:
    """A model whose every parameter (norm scales, biases, CLS included) is away from its init."""
    torch.manual_seed(depth)
    model = TRecViT(TRecViTConfig(**{**SIZES, "depth": depth, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def official_video(batch=2, steps=6, seed=3) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, steps, 8, 8, 3)).astype(np.float32)  # (B, T, H, W, C)


# ---------------------------------------------------------------------------------------------- reference


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _layer_norm(x, p, name):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p[f"{name}/scale"] + p[f"{name}/bias"]


def _dense(x, p, name):
    return x @ p[f"{name}/kernel"] + p[f"{name}/bias"]


def _block_diag(x, p, name):
    heads = p[f"{name}/w"].shape[0]
    xs = x.reshape(*x.shape[:-1], heads, -1)
    y = np.einsum("...hi,hij->...hj", xs, p[f"{name}/w"]) + p[f"{name}/b"]
    return y.reshape(*x.shape[:-1], -1)


def _residual_block(x, p, name):
    """recurrentgemma ResidualBlock (use_mlp=False) on tubes (b*n, t, c) starting at segment position 0."""
    rec = f"{name}/recurrent_block"
    normed = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * (1.0 + p[f"{name}/temporal_pre_norm/scale"])
    y = _gelu(_dense(normed, p, f"{rec}/linear_y"))
    u = _dense(normed, p, f"{rec}/linear_x")
    w, steps = p[f"{rec}/conv_1d/w"], u.shape[1]
    conv = np.zeros_like(u) + p[f"{rec}/conv_1d/b"]
    for shift in range(w.shape[0]):  # w[taps - 1 - shift] multiplies x_{t - shift}
        conv[:, shift:] += u[:, :steps - shift] * w[w.shape[0] - 1 - shift]
    gate_x = 1.0 / (1.0 + np.exp(-_block_diag(conv, p, f"{rec}/rg_lru/input_gate")))
    gate_a = 1.0 / (1.0 + np.exp(-_block_diag(conv, p, f"{rec}/rg_lru/a_gate")))
    log_a = -8.0 * gate_a * np.log1p(np.exp(p[f"{rec}/rg_lru/a_param"]))
    a, multiplier = np.exp(log_a), np.sqrt(1.0 - np.exp(2.0 * log_a))
    a[:, 0], multiplier[:, 0] = 0.0, 1.0  # reset at segment position 0
    normalized = conv * gate_x * multiplier
    h, hs = np.zeros_like(normalized[:, 0]), []
    for t in range(steps):
        h = a[:, t] * h + normalized[:, t]
        hs.append(h)
    return x + _dense(np.stack(hs, 1) * y, p, f"{rec}/linear_out")


def _encoder_block(x, p, name):
    """big_vision Encoder1DBlock with Flax MultiHeadDotProductAttention on (b*t, n, c)."""
    att = f"{name}/MultiHeadDotProductAttention_0"
    y = _layer_norm(x, p, f"{name}/LayerNorm_0")
    q, k, v = (np.einsum("bnd,dhk->bnhk", y, p[f"{att}/{part}/kernel"]) + p[f"{att}/{part}/bias"]
               for part in ("query", "key", "value"))
    scores = np.einsum("bqhk,bshk->bhqs", q / math.sqrt(q.shape[-1]), k)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqs,bshk->bqhk", weights, v)
    x = x + np.einsum("bqhk,hkd->bqd", out, p[f"{att}/out/kernel"]) + p[f"{att}/out/bias"]
    y = _layer_norm(x, p, f"{name}/LayerNorm_1")
    y = _dense(_gelu(_dense(y, p, f"{name}/MlpBlock_0/Dense_0")), p, f"{name}/MlpBlock_0/Dense_1")
    return x + y


def reference_outputs(params, video, frames_per_clip):
    """The official ``model.apply(params, video)`` ("logits", "probs") in float64 NumPy."""
    p = {name: value.astype(np.float64) for name, value in params.items()}
    batch, steps = video.shape[:2]
    clips = max(steps // frames_per_clip, 1)
    x = video.astype(np.float64).reshape(batch * clips, steps // clips, *video.shape[2:])  # (b, t, H, W, C)
    b, t, height, width, chans = x.shape
    kernel = p["tokenizer/embedding/kernel"][0]  # (p, p, C, D)
    ps = kernel.shape[0]
    patches = x.reshape(b, t, height // ps, ps, width // ps, ps, chans)
    tokens = np.einsum("btgiwjc,ijcd->btgwd", patches, kernel) + p["tokenizer/embedding/bias"]
    tokens = tokens.reshape(b * t, -1, kernel.shape[-1]) + p["tokenizer/pos_embedding"]
    if "tokenizer/cls" in p:
        tokens = np.concatenate([np.tile(p["tokenizer/cls"], (b * t, 1, 1)), tokens], axis=1)
    n, c = tokens.shape[1:]
    depth = len({name.split("/")[1] for name in p if name.startswith("encoder/encoderblock_")})
    x = tokens
    for i in range(depth):
        tubes = x.reshape(b, t, n, c).transpose(0, 2, 1, 3).reshape(b * n, t, c)
        tubes = _residual_block(tubes, p, f"encoder/residualblock_{i:02d}")
        x = tubes.reshape(b, n, t, c).transpose(0, 2, 1, 3).reshape(b * t, n, c)
        x = _encoder_block(x, p, f"encoder/encoderblock_{i}")
    x = _layer_norm(x, p, "encoder/encoder_norm")
    pooled = x[:, 0] if "tokenizer/cls" in p else x.mean(1)
    features = np.tanh(_dense(pooled, p, "decoder/pre_logits")).reshape(batch, clips, t, -1).mean(2)
    logits = _dense(features, p, "decoder/cls_head")  # (B, n, classes)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return logits.mean(1), probs.mean(1)


# ---------------------------------------------------------------------------------------------- tests


def test_exported_names_and_shapes_follow_the_official_layout():
    params = official_params(perturbed(depth=1))
    rec, vit = "encoder/residualblock_00/recurrent_block", "encoder/encoderblock_0"
    att = f"{vit}/MultiHeadDotProductAttention_0"
    expected = {
        "tokenizer/embedding/kernel": (1, 4, 4, 3, 8), "tokenizer/embedding/bias": (8,),
        "tokenizer/pos_embedding": (1, 4, 8), "tokenizer/cls": (1, 1, 8),
        "encoder/residualblock_00/temporal_pre_norm/scale": (8,),
        f"{rec}/linear_y/kernel": (8, 16), f"{rec}/linear_y/bias": (16,),
        f"{rec}/linear_x/kernel": (8, 16), f"{rec}/linear_x/bias": (16,),
        f"{rec}/linear_out/kernel": (16, 8), f"{rec}/linear_out/bias": (8,),
        f"{rec}/conv_1d/w": (4, 16), f"{rec}/conv_1d/b": (16,), f"{rec}/rg_lru/a_param": (16,),
        f"{rec}/rg_lru/input_gate/w": (2, 8, 8), f"{rec}/rg_lru/input_gate/b": (2, 8),
        f"{rec}/rg_lru/a_gate/w": (2, 8, 8), f"{rec}/rg_lru/a_gate/b": (2, 8),
        f"{vit}/LayerNorm_0/scale": (8,), f"{vit}/LayerNorm_0/bias": (8,),
        f"{att}/query/kernel": (8, 2, 4), f"{att}/query/bias": (2, 4),
        f"{att}/key/kernel": (8, 2, 4), f"{att}/key/bias": (2, 4),
        f"{att}/value/kernel": (8, 2, 4), f"{att}/value/bias": (2, 4),
        f"{att}/out/kernel": (2, 4, 8), f"{att}/out/bias": (8,),
        f"{vit}/LayerNorm_1/scale": (8,), f"{vit}/LayerNorm_1/bias": (8,),
        f"{vit}/MlpBlock_0/Dense_0/kernel": (8, 16), f"{vit}/MlpBlock_0/Dense_0/bias": (16,),
        f"{vit}/MlpBlock_0/Dense_1/kernel": (16, 8), f"{vit}/MlpBlock_0/Dense_1/bias": (8,),
        "encoder/encoder_norm/scale": (8,), "encoder/encoder_norm/bias": (8,),
        "decoder/pre_logits/kernel": (8, 6), "decoder/pre_logits/bias": (6,),
        "decoder/cls_head/kernel": (6, 5), "decoder/cls_head/bias": (5,),
    }
    assert {name: value.shape for name, value in params.items()} == expected


@pytest.mark.parametrize("depth, pool", [(1, "tok"), (12, "tok"), (2, "gap")])
def test_round_trip_infers_every_size_and_restores_every_weight(tmp_path, depth, pool):
    model = perturbed(depth=depth, pool=pool)
    save_official_checkpoint(model, tmp_path / "ckpt.npz")
    names = read_checkpoint(tmp_path / "ckpt.npz")
    assert f"encoder/residualblock_{depth - 1:02d}/temporal_pre_norm/scale" in names
    assert f"encoder/encoderblock_{depth - 1}/LayerNorm_0/scale" in names
    loaded = TRecViT.from_official_checkpoint(tmp_path / "ckpt.npz", frames_per_clip=3)
    assert loaded.cfg == dataclasses.replace(model.cfg, lru_width=16)
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name


@pytest.mark.parametrize("depth, pool, steps", [(1, "tok", 6), (2, "tok", 4), (2, "gap", 6)])
def test_loaded_model_reproduces_the_official_forward(tmp_path, depth, pool, steps):
    save_official_checkpoint(perturbed(depth=depth, pool=pool), tmp_path / "ckpt.npz")
    model = load_official_checkpoint(tmp_path / "ckpt.npz", frames_per_clip=3, channels_last=True)
    video = official_video(steps=steps)  # 6 frames: two clips; 4 frames: one clip of 4
    logits, probs = reference_outputs(read_checkpoint(tmp_path / "ckpt.npz"), video, frames_per_clip=3)
    with torch.no_grad():
        out = model.predict(torch.from_numpy(video))
        channels_first = TRecViT.from_official_checkpoint(tmp_path / "ckpt.npz", frames_per_clip=3)
        plain = channels_first(torch.from_numpy(video).permute(0, 1, 4, 2, 3))
    assert np.abs(out["logits"].double().numpy() - logits).max() <= 1e-5
    assert np.abs(out["probs"].double().numpy() - probs).max() <= 1e-5
    assert torch.allclose(plain, out["logits"], atol=1e-6)
    assert np.abs(logits).max() > 0.1  # a non-trivial check


def test_bad_checkpoints_are_refused_with_the_names(tmp_path):
    params = official_params(perturbed(depth=2))
    broken = dict(params)
    del broken["encoder/encoderblock_1/LayerNorm_1/bias"]
    broken["encoder/residualblock_00/mlp_block/ffw_up/w"] = np.zeros((2, 8, 16), np.float32)
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(ValueError, match=r"missing encoder/encoderblock_1/LayerNorm_1/bias.*unexpected "
                                         r"encoder/residualblock_00/mlp_block"):
        load_official_checkpoint(tmp_path / "broken.npz", frames_per_clip=3)
    with pytest.raises(ValueError, match="inferred from the checkpoint"):
        infer_config(params, frames_per_clip=3, width=16)
    tubelet = dict(params, **{"tokenizer/embedding/kernel": np.zeros((2, 4, 4, 3, 8), np.float32)})
    with pytest.raises(ValueError, match="no tubelets"):
        infer_config(tubelet, frames_per_clip=3)
    skipped = {k: v for k, v in params.items() if "encoderblock_1/" not in k}
    with pytest.raises(ValueError, match="numbered 0..depth-1"):
        infer_config(skipped, frames_per_clip=3)
    with pytest.raises(ValueError, match="only the official architecture"):
        official_params(perturbed(readout="last"))


def test_a_b_sized_checkpoint_gives_the_released_config():
    with torch.device("meta"):
        model = TRecViT.from_variant("B", num_frames=32, num_classes=400)
    cfg = infer_config(_official_shapes(model), frames_per_clip=32)
    assert cfg == TRecViTConfig.variant("B", frames_per_clip=32, num_classes=400, lru_width=1536)


def _official_shapes(model: TRecViT) -> dict[str, np.ndarray]:
    """Zero-stride stand-ins (no memory) for the official arrays of a meta-device model: only shapes are read."""
    from tenfold.models.trecvit_official import checkpoint_entries

    out = {}
    for entry in checkpoint_entries(model.cfg):
        ours = np.broadcast_to(np.float32(0), tuple(model.state_dict()[entry.ours].shape))
        for name, array in zip(entry.official, entry.to_official(ours)):
            out[name] = array
    return out
