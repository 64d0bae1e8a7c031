"""Official TRecViT checkpoints (``google-deepmind/trecvit``, JAX/Flax) in tenfold's :class:`TRecViT`
(Pătrăucean et al., 2024, arXiv 2412.14294; docs/methods/trecvit.md).

The released checkpoints (e.g. ``trecvit_B_k400.npz``) are ``np.savez`` archives of the Flax parameter
tree flattened with ``/``: ``tokenizer/...``, ``encoder/...``, ``decoder/...``, without a config. Per
layer i the encoder holds ``residualblock_{i:02d}`` (recurrentgemma's residual block: RMSNorm, then
the recurrent block) and ``encoderblock_{i}`` (the ViT block). Layouts that differ from ours:

    tokenizer/embedding/kernel                     (1, p, p, C, D)   ->  Conv2d weight (D, C, p, p)
    Dense kernels                                  (in, out)         ->  Linear weight (out, in)
    rg_lru/{input_gate,a_gate}/w                   [heads, in, out]  ->  (heads, out, in);  b [heads, out] -> (W,)
    conv_1d/w                                      (taps, W)         ->  the same; row taps-1 multiplies the current frame
    MultiHeadDotProductAttention_0/{query,key,value}/kernel (D, heads, head_dim) -> rows of the fused qkv weight
    MultiHeadDotProductAttention_0/out/kernel      (heads, head_dim, D) -> (D, heads * head_dim)
    LayerNorm scale / bias                         -> weight / bias (eps 1e-6);  RMSNorm scale -> scale (x (1 + scale))

:func:`load_official_checkpoint` infers every size from the arrays' shapes and checks every name and
shape; :func:`official_params` / :func:`save_official_checkpoint` write a tenfold model in the same
layout (how the loader is tested without JAX).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tenfold.models.trecvit import TRecViT, TRecViTConfig

ToOurs = Callable[[list[np.ndarray]], np.ndarray]
ToOfficial = Callable[[np.ndarray], list[np.ndarray]]
INFERRED = ("width", "depth", "mlp_dim", "num_heads", "lru_width", "conv_width", "patch", "image_size", "in_chans",
            "rep_size", "num_classes", "pool")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One of our parameters, made from one or more official arrays (the fused qkv from three)."""

    official: tuple[str, ...]
    ours: str
    to_ours: ToOurs
    to_official: ToOfficial


def _same(ours: str, official: str) -> Entry:
    return Entry((official,), ours, lambda a: a[0], lambda w: [w])


def _dense(ours: str, official: str) -> list[Entry]:
    """A Flax Dense (kernel (in, out), bias) as a torch Linear (weight (out, in), bias)."""
    return [Entry((f"{official}/kernel",), f"{ours}.weight", lambda a: a[0].T, lambda w: [w.T]),
            _same(f"{ours}.bias", f"{official}/bias")]


def _norm(ours: str, official: str) -> list[Entry]:
    return [_same(f"{ours}.weight", f"{official}/scale"), _same(f"{ours}.bias", f"{official}/bias")]


def _block_diagonal(ours: str, official: str, heads: int) -> list[Entry]:
    """recurrentgemma's BlockDiagonalLinear: w [heads, in/h, out/h], b [heads, out/h]."""
    return [Entry((f"{official}/w",), f"{ours}.weight", lambda a: a[0].transpose(0, 2, 1),
                  lambda w: [w.transpose(0, 2, 1)]),
            Entry((f"{official}/b",), f"{ours}.bias", lambda a: a[0].reshape(-1),
                  lambda b: [b.reshape(heads, -1)])]


def _attention(ours: str, official: str, heads: int) -> list[Entry]:
    """Flax MultiHeadDotProductAttention: q/k/v kernels (D, heads, head_dim), out kernel (heads, head_dim, D)."""
    names = [f"{official}/{part}" for part in ("query", "key", "value")]

    def qkv_weight(arrays):  # three (D, h, hd) -> (3*h*hd, D), rows ordered (q|k|v, head, head_dim)
        return np.concatenate([k.reshape(k.shape[0], -1).T for k in arrays], axis=0)

    def qkv_weight_back(w):
        return [part.T.reshape(w.shape[1], heads, -1) for part in np.split(w, 3, axis=0)]

    return [
        Entry(tuple(f"{n}/kernel" for n in names), f"{ours}.qkv.weight", qkv_weight, qkv_weight_back),
        Entry(tuple(f"{n}/bias" for n in names), f"{ours}.qkv.bias",
              lambda a: np.concatenate([b.reshape(-1) for b in a]),
              lambda b: [part.reshape(heads, -1) for part in np.split(b, 3)]),
        Entry((f"{official}/out/kernel",), f"{ours}.out.weight", lambda a: a[0].reshape(-1, a[0].shape[-1]).T,
              lambda w: [w.T.reshape(heads, -1, w.shape[0])]),
        _same(f"{ours}.out.bias", f"{official}/out/bias"),
    ]


def _layer_entries(i: int, heads: int) -> list[Entry]:
    res, ours_t = f"encoder/residualblock_{i:02d}", f"temporal.{i}"
    rec, blk = f"{res}/recurrent_block", f"{ours_t}.block"
    vit, ours_s = f"encoder/encoderblock_{i}", f"spatial.{i}"
    return [
        _same(f"{ours_t}.norm.scale", f"{res}/temporal_pre_norm/scale"),
        *_dense(f"{blk}.linear_y", f"{rec}/linear_y"),
        *_dense(f"{blk}.linear_x", f"{rec}/linear_x"),
        _same(f"{blk}.conv1d.weight", f"{rec}/conv_1d/w"),
        _same(f"{blk}.conv1d.bias", f"{rec}/conv_1d/b"),
        _same(f"{blk}.rg_lru.a_param", f"{rec}/rg_lru/a_param"),
        *_block_diagonal(f"{blk}.rg_lru.input_gate", f"{rec}/rg_lru/input_gate", heads),
        *_block_diagonal(f"{blk}.rg_lru.a_gate", f"{rec}/rg_lru/a_gate", heads),
        *_dense(f"{blk}.linear_out", f"{rec}/linear_out"),
        *_norm(f"{ours_s}.ln1", f"{vit}/LayerNorm_0"),
        *_attention(f"{ours_s}.attn", f"{vit}/MultiHeadDotProductAttention_0", heads),
        *_norm(f"{ours_s}.ln2", f"{vit}/LayerNorm_1"),
        *_dense(f"{ours_s}.mlp.fc1", f"{vit}/MlpBlock_0/Dense_0"),
        *_dense(f"{ours_s}.mlp.fc2", f"{vit}/MlpBlock_0/Dense_1"),
    ]


def checkpoint_entries(cfg: TRecViTConfig) -> list[Entry]:
    """Every parameter of a TRecViT with ``cfg`` and the official arrays it corresponds to."""
    entries = [
        Entry(("tokenizer/embedding/kernel",), "tokenizer.embedding.weight",
              lambda a: a[0][0].transpose(3, 2, 0, 1),  # (1, p, p, C, D) -> (D, C, p, p)
              lambda w: [w.transpose(2, 3, 1, 0)[None]]),
        _same("tokenizer.embedding.bias", "tokenizer/embedding/bias"),
        _same("tokenizer.pos_embedding", "tokenizer/pos_embedding"),
    ]
    if cfg.pool == "tok":
        entries.append(_same("tokenizer.cls", "tokenizer/cls"))
    for i in range(cfg.depth):
        entries += _layer_entries(i, cfg.num_heads)
    entries += [*_norm("encoder_norm", "encoder/encoder_norm"), *_dense("pre_logits", "decoder/pre_logits"),
                *_dense("head", "decoder/cls_head")]
    return entries


# ----------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an official ``.npz`` checkpoint by name (a leading ``params/`` is dropped)."""
    with np.load(path, allow_pickle=False) as archive:
        return {name.removeprefix("params/"): archive[name] for name in archive.files}


def _shape(params: dict[str, np.ndarray], name: str, ndim: int) -> tuple[int, ...]:
    if name not in params:
        raise ValueError(f"not an official TRecViT checkpoint: no array {name!r}")
    shape = params[name].shape
    if len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {shape}")
    return shape


def _layer_indices(params: dict[str, np.ndarray], prefix: str) -> set[int]:
    """Indices of ``encoder/{prefix}{i}/...`` (numerically: ``residualblock_00`` and ``encoderblock_10`` alike)."""
    pattern = re.compile(rf"^encoder/{prefix}(\d+)/")
    return {int(m.group(1)) for name in params if (m := pattern.match(name))}


def infer_config(params: dict[str, np.ndarray], *, frames_per_clip: int, **overrides) -> TRecViTConfig:
    """The TRecViTConfig of a checkpoint: every size from the arrays' shapes; ``overrides`` set the others."""
    fixed = sorted(set(overrides) & set(INFERRED))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} are inferred from the checkpoint and cannot be overridden")
    frames, patch_h, patch_w, in_chans, width = _shape(params, "tokenizer/embedding/kernel", 5)
    if frames != 1 or patch_h != patch_w:
        raise ValueError(f"the patch kernel must be (1, p, p, C, D) (no tubelets, square patches), got "
                         f"{(frames, patch_h, patch_w, in_chans, width)}")
    tokens = _shape(params, "tokenizer/pos_embedding", 3)[1]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise ValueError(f"tokenizer/pos_embedding covers {tokens} patches, not a square grid")
    depth_vit, depth_rec = _layer_indices(params, "encoderblock_"), _layer_indices(params, "residualblock_")
    depth = len(depth_vit)
    if depth == 0 or depth_vit != set(range(depth)) or depth_rec != depth_vit:
        raise ValueError(f"encoder layers must be numbered 0..depth-1 alike; encoderblock: {sorted(depth_vit)}, "
                         f"residualblock: {sorted(depth_rec)}")
    _, heads, head_dim = _shape(params, "encoder/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel", 3)
    if heads * head_dim != width:
        raise ValueError(f"attention heads x head_dim must equal the width: {heads} x {head_dim} != {width}")
    rec = "encoder/residualblock_00/recurrent_block"
    lru_heads = _shape(params, f"{rec}/rg_lru/input_gate/w", 3)[0]
    if lru_heads != heads:
        raise ValueError(f"the RG-LRU gates have {lru_heads} blocks but attention {heads} heads; tenfold's TRecViT "
                         f"uses one number for both, as the official model does")
    return TRecViTConfig(
        width=width, depth=depth, num_heads=heads, patch=patch_h, image_size=grid * patch_h, in_chans=in_chans,
        mlp_dim=_shape(params, "encoder/encoderblock_0/MlpBlock_0/Dense_0/kernel", 2)[1],
        lru_width=_shape(params, f"{rec}/linear_x/kernel", 2)[1],
        conv_width=_shape(params, f"{rec}/conv_1d/w", 2)[0],
        rep_size=_shape(params, "decoder/pre_logits/kernel", 2)[1],
        num_classes=_shape(params, "decoder/cls_head/kernel", 2)[1],
        pool="tok" if "tokenizer/cls" in params else "gap",
        frames_per_clip=frames_per_clip, **overrides)


def _listing(names) -> str:
    names = sorted(names)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def state_dict_from_official(params: dict[str, np.ndarray], cfg: TRecViTConfig) -> dict[str, torch.Tensor]:
    """Our state dict (float32) from the official arrays; every name must be used and none missing."""
    entries = checkpoint_entries(cfg)
    expected = {name for entry in entries for name in entry.official}
    missing, unexpected = expected - set(params), set(params) - expected
    if missing or unexpected:
        raise ValueError(f"checkpoint names do not match a TRecViT with {cfg.depth} layers: "
                         f"missing {_listing(missing) or 'none'}; unexpected {_listing(unexpected) or 'none'}")
    return {entry.ours: torch.from_numpy(np.ascontiguousarray(
        entry.to_ours([params[name].astype(np.float32) for name in entry.official]))) for entry in entries}


def load_official_checkpoint(path: str | Path, *, frames_per_clip: int, **overrides) -> TRecViT:
    """A :class:`TRecViT` with the weights of an official ``.npz`` checkpoint (see the module docstring).

    ``frames_per_clip``: the clip length the checkpoint was trained with (32 for ``trecvit_B_k400``);
    longer videos are split into clips whose logits are averaged. ``overrides``: other config fields,
    e.g. ``channels_last=True`` for (B, T, H, W, C) input as the official model takes.
    """
    params = read_checkpoint(path)
    cfg = infer_config(params, frames_per_clip=frames_per_clip, **overrides)
    state = state_dict_from_official(params, cfg)
    with torch.device("meta"):  # no random init of weights that are replaced at once
        model = TRecViT(cfg)
    ours = model.state_dict()
    for name, tensor in state.items():
        if name not in ours or ours[name].shape != tensor.shape:
            raise ValueError(f"{name}: the checkpoint gives shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(ours[name].shape) if name in ours else 'no such parameter'}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# writing (a tenfold model in the official layout)


def official_params(model: TRecViT) -> dict[str, np.ndarray]:
    """The arrays an official checkpoint of ``model`` holds, by name (float32)."""
    cfg = model.cfg
    if cfg.temporal != "lru" or cfg.time_posemb or cfg.readout != "mean":
        raise ValueError("only the official architecture can be exported: temporal='lru', time_posemb=False, "
                         f"readout='mean'; got {cfg.temporal!r}, {cfg.time_posemb}, {cfg.readout!r}")
    state = {name: tensor.detach().cpu().float().numpy() for name, tensor in model.state_dict().items()}
    params: dict[str, np.ndarray] = {}
    for entry in checkpoint_entries(cfg):
        for name, array in zip(entry.official, entry.to_official(state[entry.ours]), strict=True):
            params[name] = np.ascontiguousarray(array)
    return params


def save_official_checkpoint(model: TRecViT, path: str | Path) -> None:
    """Write ``model`` as an official-layout ``.npz`` (``np.savez``, names joined by ``/``)."""
    np.savez(path, **official_params(model))
