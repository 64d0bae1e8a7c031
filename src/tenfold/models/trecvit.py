"""TRecViT: a recurrent video transformer (Pătrăucean et al., 2024, arXiv 2412.14294).

Video mixing is factorised into time, space and channels. Per layer, on tokens x (B, T, N, D)
with N = h*w + 1 (a CLS token prepended to every frame):

    tubes  (B*N, T, D):  x <- x + RecurrentBlock(RMSNorm(x))     RG-LRU over time, causal (tenfold.nn.rglru)
    frames (B*T, N, D):  x <- x + MHSA(LN(x));  x <- x + MLP(LN(x))   ViT block over one frame's tokens

then LayerNorm; the decoder maps each frame's CLS (``pool="tok"``; ``"gap"``: the mean of the frame's
patch tokens, with no CLS) to tanh(Dense_rep(.)), averages over the frames of the clip ("mean" readout,
or takes the last frame: "last") and applies the classification head. As the official inference does,
a video of T frames is cut into n = max(T // frames_per_clip, 1) clips of T / n frames, each encoded
from a fresh state; their logits are averaged (``predict`` also averages their softmax probabilities).
``TRecViT.from_official_checkpoint`` loads the released ``.npz`` checkpoints
(``tenfold.models.trecvit_official``).

The model is causal in time, so it can run online: ``step(frame, state)`` costs the same at every t
and returns the running-mean prediction; its state (per layer and token: h and the last 3 conv
inputs) does not grow with t. Layout: video (B, T, C, H, W), or (B, T, H, W, C) with ``channels_last=True``
(the official layout).

The same skeleton with other temporal mixers gives the baselines in ``tenfold.models.vivit``:
``temporal="attention"``/``"causal_attention"`` (factorised self-attention) and ``"none"``
(per-frame ViT averaged over frames: an unordered bag of frames).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.nn.attention import Attention, KVCache
from tenfold.nn.rglru import RecurrentState, TemporalBlock

TEMPORAL_KINDS = ("lru", "attention", "causal_attention", "none")
READOUTS = ("mean", "last")
POOLS = ("tok", "gap")

# official trecvit utils.decode_variant / get_model: width, depth, mlp_dim, heads
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
}


@dataclass
class TRecViTConfig:
    """Hyper-parameters; defaults are the released TRecViT-B (official ``get_model``)."""

    width: int = 768
    depth: int = 12
    mlp_dim: int = 3072
    num_heads: int = 12
    lru_width: int | None = None  # None: state_multiplier * width = 2 * width
    conv_width: int = 4
    conv_init_scale: float = 0.01  # Conv1D weight variance * taps (recurrentgemma: 0.01)
    min_rad: float = 0.5
    max_rad: float = 0.999
    patch: int = 16
    image_size: int = 224
    in_chans: int = 3
    rep_size: int = 3072
    num_classes: int = 400
    frames_per_clip: int = 32
    readout: str = "mean"  # "mean": average tanh pre-logits over frames; "last": last frame only
    pool: str = "tok"  # "tok": each frame's CLS token; "gap": mean of the frame's patch tokens (no CLS)
    channels_last: bool = False  # input video (B, T, H, W, C) (the official layout) instead of (B, T, C, H, W)
    temporal: str = "lru"  # "lru" | "attention" | "causal_attention" | "none"
    time_posemb: bool = False  # learned (frames_per_clip, D) time embedding (for attention mixers)
    fused_rglru: bool = True  # RG-LRU gates + scan in one autograd Function (saves only v and h)
    scan: str = "custom"  # linear-scan implementation of the unfused RG-LRU (fused_rglru=False)

    def __post_init__(self) -> None:
        for name in ("width", "depth", "mlp_dim", "num_heads", "conv_width", "patch", "image_size", "in_chans",
                     "rep_size", "num_classes", "frames_per_clip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by patch ({self.patch})")
        if self.lru_width is not None and (self.lru_width < 1 or self.lru_width % self.num_heads):
            raise ValueError(f"lru_width must be >= 1 and divisible by num_heads, got {self.lru_width}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.temporal not in TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {TEMPORAL_KINDS}, got {self.temporal!r}")

    @property
    def lru(self) -> int:
        return 2 * self.width if self.lru_width is None else self.lru_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @classmethod
    def variant(cls, name: str, **overrides) -> "TRecViTConfig":
        if name not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {name!r}")
        width, depth, mlp_dim, heads = VARIANTS[name]
        return cls(**{"width": width, "depth": depth, "mlp_dim": mlp_dim, "num_heads": heads, **overrides})


# ----------------------------------------------------------------------------------------------
# initialisers (Flax defaults of the official code)


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Flax's default kernel init: truncated normal (+-2 std) with variance 1 / fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of a unit normal truncated at +-2
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def xavier_attention_(attn: Attention) -> None:
    """Xavier-uniform on each D x D projection (q, k, v, out), zero biases, as Flax's DenseGeneral does."""
    with torch.no_grad():
        for chunk in attn.qkv.weight.chunk(3, dim=0):  # three (D, D) slices of the fused (3D, D) weight
            nn.init.xavier_uniform_(chunk)
        nn.init.xavier_uniform_(attn.out.weight)
        for linear in (attn.qkv, attn.out):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)


# ----------------------------------------------------------------------------------------------
# building blocks


class Tokenizer(nn.Module):
    """Per-frame patch embedding (≡ Conv3d with kernel (1, p, p)), learned spatial position embedding
    shared by all frames, and a zero-initialised CLS token prepended to every frame (no position;
    ``cls=False`` leaves it out, as the official tokenizer does for ``pool_type="gap"``).

    (B, T, C, H, W), or (B, T, H, W, C) with ``channels_last``, -> (B, T, [1 +] (H/p)(W/p), D).
    """

    def __init__(self, *, width: int, patch: int, image_size: int, in_chans: int, cls: bool = True,
                 channels_last: bool = False):
        super().__init__()
        self.width, self.patch, self.image_size, self.in_chans = width, patch, image_size, in_chans
        self.channels_last = channels_last
        grid = image_size // patch
        self.embedding = nn.Conv2d(in_chans, width, kernel_size=patch, stride=patch)
        self.pos_embedding = nn.Parameter(torch.empty(1, grid * grid, width))
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if cls else None
        lecun_normal_(self.embedding.weight, in_chans * patch * patch)
        nn.init.zeros_(self.embedding.bias)
        nn.init.normal_(self.pos_embedding, std=1.0 / math.sqrt(width))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        chw = (self.in_chans, self.image_size, self.image_size)
        expected = chw[1:] + chw[:1] if self.channels_last else chw
        if video.dim() != 5 or tuple(video.shape[2:]) != expected:
            raise ValueError(f"video must be shaped (B, T, {', '.join(map(str, expected))}), got {tuple(video.shape)}")
        batch, steps = video.shape[:2]
        if self.channels_last:
            video = video.permute(0, 1, 4, 2, 3)  # (B, T, H, W, C) -> (B, T, C, H, W)
        x = self.embedding(video.reshape(batch * steps, *chw))  # (B*T, D, h, w)
        x = x.flatten(2).transpose(1, 2) + self.pos_embedding  # (B*T, h*w, D)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(batch * steps, 1, self.width), x], dim=1)  # (B*T, N, D)
        return x.reshape(batch, steps, x.shape[1], self.width)  # (B, T, N, D)


class MlpBlock(nn.Module):
    """Dense -> GELU (tanh approximation) -> Dense, Xavier-uniform kernels, biases N(0, 1e-6^2)."""

    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)
        for linear in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.normal_(linear.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class ViTBlock(nn.Module):
    """Pre-LN ViT encoder block (big_vision): x + MHSA(LN(x)), then x + MLP(LN(x)); LN eps 1e-6,
    attention with q/k/v/out biases. ``causal`` masks later positions (used as a temporal mixer)."""

    def __init__(self, *, width: int, num_heads: int, mlp_dim: int, causal: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(dim=width, num_heads=num_heads, causal=causal, bias=True)
        self.ln2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MlpBlock(width, mlp_dim)
        xavier_attention_(self.attn)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache=cache, attn_mask=attn_mask)
        return x + self.mlp(self.ln2(x))


class TemporalAttention(nn.Module):
    """Residual temporal self-attention x + MHSA(LN(x)) over (B*N, T, D) tubes (factorised ViViT)."""

    def __init__(self, *, width: int, num_heads: int, causal: bool):
        super().__init__()
        self.ln = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(dim=width, num_heads=num_heads, causal=causal, bias=True)
        xavier_attention_(self.attn)

    def forward(self, x: torch.Tensor, state=None):
        return x + self.attn(self.ln(x)), None


class NoTemporalMixing(nn.Module):
    """The identity in time (no-time control)."""

    def forward(self, x: torch.Tensor, state=None):
        return x, None

    def step(self, x_t: torch.Tensor, state=None):
        return x_t, None


def make_temporal(cfg: TRecViTConfig) -> nn.Module:
    if cfg.temporal == "lru":
        return TemporalBlock(width=cfg.width, lru_width=cfg.lru, num_heads=cfg.num_heads, conv_width=cfg.conv_width,
                             min_rad=cfg.min_rad, max_rad=cfg.max_rad, depth=cfg.depth, scan=cfg.scan,
                             fused=cfg.fused_rglru, conv_init_scale=cfg.conv_init_scale)
    if cfg.temporal == "none":
        return NoTemporalMixing()
    return TemporalAttention(width=cfg.width, num_heads=cfg.num_heads, causal=cfg.temporal == "causal_attention")


class TRecViTState(NamedTuple):
    """Streaming state: per-layer temporal states, running sum of tanh pre-logits (B, rep), frames seen."""

    layers: list
    pre_sum: torch.Tensor
    t: int

    def nbytes(self) -> int:
        """Bytes of the recurrent state (h and conv buffers of every layer; the head's sum excluded)."""
        return sum(s.nbytes() for s in self.layers if isinstance(s, RecurrentState))


# ----------------------------------------------------------------------------------------------
# the model


class TRecViT(nn.Module):
    """TRecViT (Pătrăucean et al., 2024): RG-LRU over time per token position, ViT over space per frame.

    ``TRecViT(cfg)`` or ``TRecViT.from_variant("B", num_frames=32, num_classes=400)``.
    ``forward(video) -> logits`` (B, classes); ``encode(video) -> tokens`` (B, T, N, D);
    ``forward_frames(video, state=None) -> (logits (B, T, classes), state)`` gives the online prediction
    after each frame; ``step(frame, state=None) -> (logits, state)`` processes one frame (B, C, H, W).
    """

    def __init__(self, cfg: TRecViTConfig | None = None, **kwargs):
        super().__init__()
        if cfg is None:
            cfg = TRecViTConfig(**kwargs)
        elif kwargs:
            cfg = dataclasses.replace(cfg, **kwargs)
        self.cfg = cfg
        self.tokenizer = Tokenizer(width=cfg.width, patch=cfg.patch, image_size=cfg.image_size, in_chans=cfg.in_chans,
                                   cls=cfg.pool == "tok", channels_last=cfg.channels_last)
        self.time_pos = nn.Parameter(torch.randn(cfg.frames_per_clip, cfg.width) * 0.02) if cfg.time_posemb else None
        self.temporal = nn.ModuleList(make_temporal(cfg) for _ in range(cfg.depth))
        self.spatial = nn.ModuleList(ViTBlock(width=cfg.width, num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim)
                                     for _ in range(cfg.depth))
        self.encoder_norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.pre_logits = nn.Linear(cfg.width, cfg.rep_size)
        self.head = nn.Linear(cfg.rep_size, cfg.num_classes)
        for linear in (self.pre_logits, self.head):
            lecun_normal_(linear.weight, linear.in_features)
            nn.init.zeros_(linear.bias)

    @classmethod
    def from_variant(cls, name: str, num_frames: int = 32, num_classes: int = 400, **overrides) -> "TRecViT":
        """The paper's sizes mu, Ti, S, B (released) and L; ``num_frames`` sets ``frames_per_clip``."""
        return cls(TRecViTConfig.variant(name, frames_per_clip=num_frames, num_classes=num_classes, **overrides))

    @classmethod
    def from_official_checkpoint(cls, path, *, frames_per_clip: int, **overrides) -> "TRecViT":
        """A model with the weights of an official ``google-deepmind/trecvit`` ``.npz`` checkpoint (e.g.
        ``trecvit_B_k400.npz``; ``frames_per_clip`` 32 for it). Every size is inferred from the arrays'
        shapes; ``overrides`` set other config fields (e.g. ``channels_last=True``). See
        ``tenfold.models.trecvit_official``."""
        from tenfold.models.trecvit_official import load_official_checkpoint

        return load_official_checkpoint(path, frames_per_clip=frames_per_clip, **overrides)

    # --- encoder -------------------------------------------------------------------------------

    def tokens(self, video: torch.Tensor, t0: int = 0) -> torch.Tensor:
        x = self.tokenizer(video)  # (B, T, N, D)
        if self.time_pos is not None:
            if t0 + x.shape[1] > self.time_pos.shape[0]:
                raise ValueError(f"time_posemb covers {self.time_pos.shape[0]} frames, got frame {t0 + x.shape[1] - 1}")
            x = x + self.time_pos[t0:t0 + x.shape[1], None, :]  # (T, 1, D) broadcast over tokens
        return x

    def _layers(self, x: torch.Tensor, states: list | None) -> tuple[torch.Tensor, list]:
        """Run all layers on tokens (B, T, N, D); states: per-layer temporal states or None."""
        batch, steps, tokens, width = x.shape
        new_states = []
        for i, (temporal, spatial) in enumerate(zip(self.temporal, self.spatial)):
            tubes = x.permute(0, 2, 1, 3).reshape(batch * tokens, steps, width)  # (B*N, T, D)
            tubes, state = temporal(tubes, None if states is None else states[i])
            new_states.append(state)
            x = tubes.reshape(batch, tokens, steps, width).permute(0, 2, 1, 3)  # (B, T, N, D)
            frames = spatial(x.reshape(batch * steps, tokens, width))  # (B*T, N, D)
            x = frames.reshape(batch, steps, tokens, width)  # (B, T, N, D)
        return self.encoder_norm(x), new_states

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> normalised tokens (B, T, N, D), one clip starting at frame 0."""
        return self._layers(self.tokens(video), None)[0]

    # --- decoder -------------------------------------------------------------------------------

    def frame_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tanh pre-logits of each frame's CLS token (``pool="gap"``: mean token): (B, T, N, D) -> (B, T, rep)."""
        pooled = tokens[:, :, 0] if self.cfg.pool == "tok" else tokens.mean(2)  # (B, T, D)
        return torch.tanh(self.pre_logits(pooled))

    def _clip_logits(self, clip: torch.Tensor) -> torch.Tensor:
        features = self.frame_features(self.encode(clip))  # (B, T, rep)
        pooled = features.mean(1) if self.cfg.readout == "mean" else features[:, -1]
        return self.head(pooled)

    def clip_logits(self, video: torch.Tensor) -> torch.Tensor:
        """Logits of each clip (B, n, classes): n = max(T // frames_per_clip, 1) clips of T / n frames,
        each encoded from a fresh state (the official ``TRecViT.__call__``)."""
        if video.dim() != 5:
            raise ValueError(f"video must be shaped (B, T, C, H, W) or (B, T, H, W, C), got {tuple(video.shape)}")
        batch, steps = video.shape[:2]
        fpc = self.cfg.frames_per_clip
        num_clips = max(steps // fpc, 1)
        if steps % num_clips:
            raise ValueError(f"T={steps} frames make {num_clips} clips (frames_per_clip={fpc}): T must be divisible "
                             f"by {num_clips}")
        clips = video.reshape(batch * num_clips, steps // num_clips, *video.shape[2:])  # (B*n, T/n, ...)
        return self._clip_logits(clips).reshape(batch, num_clips, -1)  # (B, n, classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes), averaged over the clips of :meth:`clip_logits`."""
        return self.clip_logits(video).mean(1)

    def predict(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official decoder's outputs: ``logits`` (B, classes), the mean of the clips' logits, and
        ``probs`` (B, classes), the mean of the clips' softmax probabilities (which the official demo
        takes the argmax of)."""
        per_clip = self.clip_logits(video)  # (B, n, classes)
        return {"logits": per_clip.mean(1), "probs": per_clip.softmax(-1).mean(1)}

    # --- streaming -----------------------------------------------------------------------------

    def _require_causal(self) -> None:
        if self.cfg.temporal not in ("lru", "none"):
            raise NotImplementedError(f"streaming needs a recurrent temporal mixer, not {self.cfg.temporal!r}")

    def _online_logits(self, features: torch.Tensor, state: TRecViTState | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame online logits from features (B, T, rep); returns (logits (B, T, C), new pre_sum)."""
        t0 = 0 if state is None else state.t
        sums = torch.cumsum(features, dim=1)  # (B, T, rep)
        if state is not None:
            sums = sums + state.pre_sum.unsqueeze(1)
        counts = torch.arange(t0 + 1, t0 + features.shape[1] + 1, device=features.device, dtype=features.dtype)
        pooled = sums / counts[None, :, None] if self.cfg.readout == "mean" else features
        return self.head(pooled), sums[:, -1]

    def forward_frames(self, video: torch.Tensor, state: TRecViTState | None = None
                       ) -> tuple[torch.Tensor, TRecViTState]:
        """Online logits after each frame (B, T, classes), continuing from ``state`` (None: a new video)."""
        self._require_causal()
        t0 = 0 if state is None else state.t
        x, layer_states = self._layers(self.tokens(video, t0), None if state is None else state.layers)
        logits, pre_sum = self._online_logits(self.frame_features(x), state)
        return logits, TRecViTState(layer_states, pre_sum, t0 + video.shape[1])

    def step(self, frame: torch.Tensor, state: TRecViTState | None = None) -> tuple[torch.Tensor, TRecViTState]:
        """One frame (B, C, H, W) -> (online logits (B, classes), state); same cost at every t."""
        if frame.dim() != 4:
            raise ValueError(f"frame must be shaped (B, C, H, W), got {tuple(frame.shape)}")
        logits, state = self.forward_frames(frame.unsqueeze(1), state)  # (B, 1, classes)
        return logits[:, 0], state
