"""ViViT baselines for TRecViT (Arnab et al., 2021, arXiv 2103.15691).

* :class:`ViViTJoint` (ViViT model 1, joint space-time attention): tubelet embedding (t, p, p), learned
  space-time position embedding, pre-LN ViT blocks over all T/t * h*w tokens at once, head on a CLS
  token. ``cls="frame"`` puts one CLS per tubelet group instead (head averaged over groups);
  ``causal=True`` masks attention block-causally (group g sees groups <= g), which makes the model
  streamable with a KV cache (``step``), the baseline for TRecViT's constant-cost streaming.
* :class:`ViViTFactorised` (ViViT model 3 / TimeSformer "divided" attention): the TRecViT skeleton
  with the recurrent temporal block replaced by residual temporal self-attention (bidirectional or
  causal) and a learned time embedding, so that only the temporal mixer differs from TRecViT.
* :class:`PerFrameViT`: the TRecViT skeleton with no temporal mixer (a bag of frames; no-time control).

Sizes: ``ViViTJoint.from_variant("L")`` is ViViT-L (D 1024, depth 24, MLP 4096, 16 heads, tubelet
2x16x16, 32 frames: 3137 tokens; 307,508,624 parameters with 400 classes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from tenfold.nn.attention import KVCache
from tenfold.models.trecvit import TRecViT, TRecViTConfig, ViTBlock, lecun_normal_

VIVIT_VARIANTS: dict[str, tuple[int, int, int, int]] = {  # width, depth, mlp_dim, heads
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
}
CLS_KINDS = ("global", "frame")


@dataclass
class ViViTConfig:
    width: int = 1024
    depth: int = 24
    mlp_dim: int = 4096
    num_heads: int = 16
    num_frames: int = 32
    tubelet: int = 2
    patch: int = 16
    image_size: int = 224
    in_chans: int = 3
    num_classes: int = 400
    causal: bool = False
    cls: str = "global"  # "global": one CLS for the clip; "frame": one CLS per tubelet group

    def __post_init__(self) -> None:
        for name in ("width", "depth", "mlp_dim", "num_heads", "num_frames", "tubelet", "patch", "image_size",
                     "in_chans", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        if self.image_size % self.patch or self.num_frames % self.tubelet:
            raise ValueError(f"patch must divide image_size and tubelet must divide num_frames, got patch={self.patch}, "
                             f"image_size={self.image_size}, tubelet={self.tubelet}, num_frames={self.num_frames}")
        if self.cls not in CLS_KINDS:
            raise ValueError(f"cls must be one of {CLS_KINDS}, got {self.cls!r}")
        if self.causal and self.cls != "frame":
            raise ValueError("causal=True needs cls='frame' (a global CLS would see the whole clip)")

    @property
    def groups(self) -> int:
        return self.num_frames // self.tubelet

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch) ** 2


class ViViTStreamState(NamedTuple):
    """KV caches (one per layer), running sum of per-frame logits (B, classes), frames seen."""

    caches: list
    logit_sum: torch.Tensor | None
    t: int

    def nbytes(self) -> int:
        return sum(cache.nbytes() for cache in self.caches)


class ViViTJoint(nn.Module):
    """ViViT model 1: joint space-time self-attention over all tubelet tokens (Arnab et al., 2021, §3.3).

    ``forward(video (B, T, C, H, W)) -> logits (B, classes)`` with T = ``num_frames``. With ``causal``
    (and ``cls="frame"``, ``tubelet=1``): ``step(frame, state) -> (online logits, state)`` with a
    KV cache that grows by one frame of keys and values per step.
    """

    def __init__(self, cfg: ViViTConfig | None = None, **kwargs):
        super().__init__()
        if cfg is None:
            cfg = ViViTConfig(**kwargs)
        elif kwargs:
            cfg = dataclasses.replace(cfg, **kwargs)
        self.cfg = cfg
        self.embedding = nn.Conv3d(cfg.in_chans, cfg.width, kernel_size=(cfg.tubelet, cfg.patch, cfg.patch),
                                   stride=(cfg.tubelet, cfg.patch, cfg.patch))
        lecun_normal_(self.embedding.weight, cfg.in_chans * cfg.tubelet * cfg.patch ** 2)
        nn.init.zeros_(self.embedding.bias)
        if cfg.cls == "global":
            self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
            self.pos_embedding = nn.Parameter(torch.randn(1, 1 + cfg.groups * cfg.patches, cfg.width) * 0.02)
        else:
            self.cls = nn.Parameter(torch.zeros(1, 1, 1, cfg.width))
            self.pos_embedding = nn.Parameter(torch.randn(1, cfg.groups, 1 + cfg.patches, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(width=cfg.width, num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, cfg.num_classes)
        lecun_normal_(self.head.weight, cfg.width)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_variant(cls, name: str, num_frames: int = 32, num_classes: int = 400, **overrides) -> "ViViTJoint":
        if name not in VIVIT_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VIVIT_VARIANTS)}, got {name!r}")
        width, depth, mlp_dim, heads = VIVIT_VARIANTS[name]
        return cls(ViViTConfig(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads, num_frames=num_frames,
                               num_classes=num_classes, **overrides))

    def _embed(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> patch tokens (B, T/t, h*w, D)."""
        cfg = self.cfg
        expected = (cfg.num_frames, cfg.in_chans, cfg.image_size, cfg.image_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(f"video must be shaped (B, {', '.join(map(str, expected))}), got {tuple(video.shape)}")
        x = self.embedding(video.transpose(1, 2))  # (B, D, T/t, h, w)
        return x.flatten(3).permute(0, 2, 3, 1)  # (B, T/t, h*w, D)

    def group_mask(self, device=None) -> torch.Tensor:
        """Bool (S, S) block-causal mask over the flattened (group, token) sequence, True = allowed."""
        per_group = 1 + self.cfg.patches
        group = torch.arange(self.cfg.groups * per_group, device=device) // per_group  # (S,)
        return group[:, None] >= group[None, :]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self._embed(video)
        batch, groups, patches, width = x.shape
        mask = None
        if self.cfg.cls == "global":
            x = torch.cat([self.cls.expand(batch, 1, width), x.reshape(batch, groups * patches, width)], dim=1)
            x = x + self.pos_embedding  # (B, 1 + G*P, D)
        else:
            x = torch.cat([self.cls.expand(batch, groups, 1, width), x], dim=2) + self.pos_embedding  # (B, G, 1+P, D)
            x = x.reshape(batch, groups * (patches + 1), width)  # (B, G*(1+P), D)
            mask = self.group_mask(x.device) if self.cfg.causal else None
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x)
        if self.cfg.cls == "global":
            return self.head(x[:, 0])
        cls_tokens = x.reshape(batch, groups, patches + 1, width)[:, :, 0]  # (B, G, D)
        return self.head(cls_tokens).mean(1)

    def step(self, frame: torch.Tensor, state: ViViTStreamState | None = None
             ) -> tuple[torch.Tensor, ViViTStreamState]:
        """One frame (B, C, H, W) -> (running-mean logits (B, classes), state) with per-layer KV caches."""
        cfg = self.cfg
        if not (cfg.causal and cfg.cls == "frame" and cfg.tubelet == 1):
            raise NotImplementedError("step needs causal=True, cls='frame' and tubelet=1")
        if frame.dim() != 4:
            raise ValueError(f"frame must be shaped (B, C, H, W), got {tuple(frame.shape)}")
        if state is None:
            state = ViViTStreamState([KVCache() for _ in self.blocks], None, 0)
        if state.t >= cfg.groups:
            raise ValueError(f"the position embedding covers {cfg.groups} frames; frame {state.t} is past it")
        x = self.embedding(frame.unsqueeze(2))  # (B, D, 1, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
        x = torch.cat([self.cls[0].expand(x.shape[0], 1, cfg.width), x], dim=1) + self.pos_embedding[:, state.t]
        for block, cache in zip(self.blocks, state.caches):
            x = block(x, cache=cache)  # keys: every cached frame and this one (block-causal)
        logits = self.head(self.norm(x)[:, 0])
        total = logits if state.logit_sum is None else state.logit_sum + logits
        return total / (state.t + 1), ViViTStreamState(state.caches, total, state.t + 1)


def _skeleton_config(cfg: TRecViTConfig | None, kwargs: dict, **forced) -> TRecViTConfig:
    base = TRecViTConfig(**kwargs) if cfg is None else dataclasses.replace(cfg, **kwargs)
    return dataclasses.replace(base, **forced)


class ViViTFactorised(TRecViT):
    """Factorised self-attention (ViViT model 3; TimeSformer "divided"): TRecViT's skeleton with the
    temporal block replaced by x + MHSA_time(LN(x)) on (B*N, T, D) tubes (bidirectional, or causal
    with ``causal=True``), plus a learned time embedding (frames_per_clip, D). Takes TRecViT's config."""

    def __init__(self, cfg: TRecViTConfig | None = None, *, causal: bool = False, **kwargs):
        super().__init__(_skeleton_config(cfg, kwargs, temporal="causal_attention" if causal else "attention",
                                          time_posemb=True))


class PerFrameViT(TRecViT):
    """No-time control: TRecViT's skeleton without a temporal mixer or time embedding; frames are
    encoded independently and their tanh pre-logits averaged (an unordered bag of frames)."""

    def __init__(self, cfg: TRecViTConfig | None = None, **kwargs):
        super().__init__(_skeleton_config(cfg, kwargs, temporal="none", time_posemb=False))
