"""Normalize-before-nonlinearity networks for Normalize-and-Project (NaP).

Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu, Dabney, "Normalization and effective learning
rates in reinforcement learning", NeurIPS 2024 (arXiv 2407.01800), step 1 of NaP ("Normalize"):
insert a normalization layer (LayerNorm or RMSNorm) right after every linear/conv layer that feeds a
nonlinearity, and drop that layer's bias (the normalization's mean-centring and offset make it
redundant). Then the layer's weight W is scale-invariant, f(c·W) = f(W) for c > 0, which is what lets
``tenfold.optim.NaP`` project W back to a fixed norm without changing the function.

This module holds

- :func:`add_norm_before_activations`: the helper that rewrites an ``nn.Sequential`` MLP or CNN
  (the small builders :class:`~tenfold.models.normalized.NormMLP` and ``NormCNN`` use it);
- :class:`NormTransformerBlock`: a pre-norm transformer block whose two nonlinearities (the attention
  softmax and the MLP activation) are each preceded by normalization (QK-norm and a hidden-layer norm);
- :class:`NaPGroups` and :func:`find_nap_groups`: which tensors are scale-invariant, found from the
  structure of the network (never from parameter names).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

NORM_KINDS = ("layer", "rms", "none")
LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.CELU, nn.SELU,
                    nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.PReLU)
# f(c·x) = c·f(x) for c > 0: a joint scaling of a norm's (scale, offset) passes through these unchanged
HOMOGENEOUS_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d,
                     nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                     nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d)


class ChannelRMSNorm(nn.Module):
    """RMSNorm of a conv feature map over (channels, *spatial), with a per-channel scale γ:
    y = γ_c · x / sqrt(mean_{c,h,w}(x²) + eps). The RMS analogue of ``nn.GroupNorm(1, C)``."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected x shaped (batch, {self.num_channels}, ...), got {tuple(x.shape)}")
        dims = tuple(range(1, x.dim()))
        y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + self.eps)
        if self.weight is None:
            return y
        return y * self.weight.view(1, -1, *([1] * (x.dim() - 2)))  # (1, C, 1, ...) broadcast over space


NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, ChannelRMSNorm, nn.modules.batchnorm._BatchNorm)


def make_norm(kind: str, features: int, *, conv: bool = False, eps: float = 1e-5) -> nn.Module:
    """A normalization layer of ``kind`` ("layer" or "rms") for ``features`` features.

    For a conv feature map (``conv=True``) "layer" is ``GroupNorm(1, C)`` (LayerNorm over channels and
    space, per-channel affine) and "rms" is :class:`ChannelRMSNorm`. γ = 1, β = 0 at init.
    """
    if kind not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")
    if features < 1:
        raise ValueError(f"features must be >= 1, got {features}")
    if conv:
        return nn.GroupNorm(1, features, eps=eps) if kind == "layer" else ChannelRMSNorm(features, eps=eps)
    return nn.LayerNorm(features, eps=eps) if kind == "layer" else nn.RMSNorm(features, eps=eps)


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _without_bias(layer: nn.Module) -> nn.Module:
    """A copy of a linear/conv layer with the same weight and no bias."""
    clone = copy.deepcopy(layer)
    clone.bias = None  # nn.Linear / nn.ConvNd treat a None bias as "no bias"
    return clone


def add_norm_before_activations(model: nn.Sequential, *, norm: str = "layer", eps: float = 1e-5,
                                bias_before_norm: bool = False) -> nn.Sequential:
    """Insert a normalization layer between every linear/conv layer and the activation that follows it.

    NaP step 1 (Lyle et al. 2024): ``Linear → act`` becomes ``Linear(bias=False) → Norm → act`` (and
    likewise for ``Conv1d/2d/3d``), so each such weight is scale-invariant. The bias is dropped unless
    ``bias_before_norm`` (LayerNorm's mean-centring removes it anyway; RMSNorm does not, but a bias
    before the norm breaks the invariance of the weight alone). Nested ``nn.Sequential`` containers
    are rewritten recursively; the last layer (the head, followed by no activation) is left as it is.
    Returns a new ``nn.Sequential`` holding copies; ``model`` is not modified.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    if norm not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
    children = list(model.children())
    out: list[nn.Module] = []
    for i, child in enumerate(children):
        nxt = children[i + 1] if i + 1 < len(children) else None
        if isinstance(child, nn.Sequential):
            out.append(add_norm_before_activations(child, norm=norm, eps=eps, bias_before_norm=bias_before_norm))
        elif isinstance(child, LINEAR_TYPES) and isinstance(nxt, ACTIVATION_TYPES):
            out.append(copy.deepcopy(child) if bias_before_norm else _without_bias(child))
            out.append(make_norm(norm, _out_features(child), conv=not isinstance(child, nn.Linear), eps=eps))
        else:
            out.append(copy.deepcopy(child))
    return nn.Sequential(*out)


def he_init_(model: nn.Module) -> nn.Module:
    """He initialisation N(0, 2/fan_in) of every linear/conv weight, zero biases (the NaP experiments' init)."""
    for module in model.modules():
        if isinstance(module, LINEAR_TYPES):
            fan_in = module.weight[0].numel()
            nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


# ------------------------------------------------------------------------------------------------
# which tensors are scale-invariant
# ------------------------------------------------------------------------------------------------

@dataclass
class NaPGroups:
    """The modules NaP acts on.

    - ``weights``: linear/conv layers followed by a normalization; their (weight, bias) are projected
      jointly to their initial norm (the bias is absent in the default bias-free layout).
    - ``affines``: normalization layers whose (scale, offset) are projected jointly to their initial
      norm (√d at γ = 1, β = 0).
    - ``head``: output layers; left free unless the projector is asked to project the head.
    """

    weights: list[nn.Module] = field(default_factory=list)
    affines: list[nn.Module] = field(default_factory=list)
    head: list[nn.Module] = field(default_factory=list)


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The modules of a (nested) ``nn.Sequential`` in execution order, nested Sequentials flattened."""
    if not isinstance(model, nn.Sequential):
        return [model]
    return [leaf for child in model.children() for leaf in _leaves(child)]


def _has_affine(norm: nn.Module) -> bool:
    return getattr(norm, "weight", None) is not None or getattr(norm, "bias", None) is not None


def find_nap_groups(model: nn.Module) -> NaPGroups:
    """Find NaP's groups from the structure of a (nested) ``nn.Sequential``.

    A linear/conv layer directly followed by a normalization layer is a scale-invariant weight. A
    normalization layer with an affine is registered when everything up to the next linear/conv layer
    is positively homogeneous (ReLU, pooling, flatten), so a joint scaling of (γ, β) only rescales the
    next layer's input. The last linear/conv layer not followed by a normalization is the head.
    """
    leaves = _leaves(model)
    groups = NaPGroups()
    for i, leaf in enumerate(leaves):
        nxt = leaves[i + 1] if i + 1 < len(leaves) else None
        if isinstance(leaf, LINEAR_TYPES) and isinstance(nxt, NORM_TYPES):
            groups.weights.append(leaf)
        elif isinstance(leaf, NORM_TYPES) and _has_affine(leaf) and _homogeneous_until_linear(leaves[i + 1:]):
            groups.affines.append(leaf)
    heads = [leaf for i, leaf in enumerate(leaves) if isinstance(leaf, LINEAR_TYPES)
             and not (i + 1 < len(leaves) and isinstance(leaves[i + 1], NORM_TYPES))]
    groups.head = heads[-1:]
    return groups


def _homogeneous_until_linear(rest: Sequence[nn.Module]) -> bool:
    for module in rest:
        if isinstance(module, LINEAR_TYPES):
            return True
        if not isinstance(module, HOMOGENEOUS_TYPES):
            return False
    return False


def follows_norm(model: nn.Module, layer: nn.Module) -> bool | None:
    """Whether ``layer`` is directly followed by a normalization inside ``model``'s Sequential chains:
    True / False when that can be read from the structure, None when it cannot (not in a Sequential)."""
    for container in [model, *model.modules()]:
        if not isinstance(container, nn.Sequential):
            continue
        leaves = _leaves(container)
        for i, leaf in enumerate(leaves):
            if leaf is layer:
                return i + 1 < len(leaves) and isinstance(leaves[i + 1], NORM_TYPES)
    return None


def homogeneous_after(model: nn.Module, norm: nn.Module) -> bool | None:
    """Whether the path from a norm layer to the next linear/conv layer is positively homogeneous
    (so that a joint scaling of the norm's affine is an invariance); None when it cannot be read."""
    for container in [model, *model.modules()]:
        if not isinstance(container, nn.Sequential):
            continue
        leaves = _leaves(container)
        for i, leaf in enumerate(leaves):
            if leaf is norm:
                return _homogeneous_until_linear(leaves[i + 1:])
    return None


# ------------------------------------------------------------------------------------------------
# builders
# ------------------------------------------------------------------------------------------------

def make_activation(name: str) -> nn.Module:
    """The activation module named ``name`` (relu, gelu, tanh, silu)."""
    table = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]()


class NormTransformerBlock(nn.Module):
    """Pre-norm transformer block with a normalization before each of its nonlinearities (NaP §transformers).

        h  = Norm_1(x);  q = Norm_q(h W_q), k = Norm_k(h W_k) per head;  v = h W_v
        x  = x + softmax(q kᵀ / √d_h) v W_o
        x  = x + act(Norm_h(Norm_2(x) W_up)) W_down

    The softmax is fed by normalized queries and keys (QK-norm) and the MLP activation by a normalized
    hidden layer, so W_q, W_k and W_up are scale-invariant (``nap_groups().weights``). W_v, W_o and
    W_down write into the un-normalized residual stream and are not invariant; they stay free, as do
    all norm affines (their outputs feed a softmax, a GELU or the residual stream, none of which is
    positively homogeneous in the affine). ``bias`` adds biases to W_v, W_o and W_down only (a bias
    before a norm would break the invariance). :func:`normalize_transformer_block` converts a
    ``tenfold.models.gpt.Block``.
    """

    def __init__(self, *, dim: int, num_heads: int, hidden: int | None = None, norm: str = "layer",
                 norm_eps: float = 1e-5, activation: str = "gelu", causal: bool = True, bias: bool = False):
        super().__init__()
        if norm not in ("layer", "rms"):
            raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        hidden = 4 * dim if hidden is None else hidden
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.dim, self.num_heads, self.head_dim, self.causal = dim, num_heads, dim // num_heads, causal
        self.norm1, self.norm2 = make_norm(norm, dim, eps=norm_eps), make_norm(norm, dim, eps=norm_eps)
        self.q_proj, self.k_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.v_proj, self.o_proj = nn.Linear(dim, dim, bias=bias), nn.Linear(dim, dim, bias=bias)
        self.q_norm = make_norm(norm, self.head_dim, eps=norm_eps)
        self.k_norm = make_norm(norm, self.head_dim, eps=norm_eps)
        self.up, self.down = nn.Linear(dim, hidden, bias=False), nn.Linear(hidden, dim, bias=bias)
        self.hidden_norm = make_norm(norm, hidden, eps=norm_eps)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x shaped (batch, seq, {self.dim}), got {tuple(x.shape)}")
        batch, seq, _ = x.shape
        h = self.norm1(x)
        heads = (batch, seq, self.num_heads, self.head_dim)
        q = self.q_norm(self.q_proj(h).view(heads)).transpose(1, 2)  # (batch, heads, seq, head_dim)
        k = self.k_norm(self.k_proj(h).view(heads)).transpose(1, 2)  # (batch, heads, seq, head_dim)
        v = self.v_proj(h).view(heads).transpose(1, 2)  # (batch, heads, seq, head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.o_proj(y.transpose(1, 2).reshape(batch, seq, self.dim))  # (batch, seq, dim)
        return x + self.down(self.act(self.hidden_norm(self.up(self.norm2(x)))))

    def nap_groups(self) -> NaPGroups:
        return NaPGroups(weights=[self.q_proj, self.k_proj, self.up])


@torch.no_grad()
def normalize_transformer_block(block: nn.Module, *, norm: str | None = None, norm_eps: float = 1e-5) -> NormTransformerBlock:
    """A :class:`NormTransformerBlock` with the weights of a pre-norm ``tenfold.models.gpt.Block``.

    NaP's "normalize" step for a transformer block: the block's fused ``attn.qkv`` is split into
    W_q, W_k, W_v; a per-head norm is inserted after W_q and W_k (before the softmax) and one after
    the MLP's W_up (before its GELU); the biases of W_q, W_k and W_up, redundant before a norm, are
    dropped; everything else (norms, W_v, W_o, W_down and their biases) is copied. ``norm`` defaults
    to the kind of the block's own norms. Plain softmax attention without rotary embedding or window
    only (others raise ValueError, since the converted block would silently compute something else).
    """
    attn, ffn = getattr(block, "attn", None), getattr(block, "ffn", None)
    if attn is None or not hasattr(attn, "qkv") or not all(hasattr(ffn, n) for n in ("up", "down")):
        raise ValueError("block must be a tenfold.models.gpt.Block with a dense MLP (attn.qkv, ffn.up, ffn.down)")
    if attn.rope is not None or attn.softmax != "softmax" or attn.window is not None:
        raise ValueError("only plain softmax attention without rope or window can be converted "
                         f"(got rope={attn.rope is not None}, softmax={attn.softmax!r}, window={attn.window})")
    dim = attn.dim
    if attn.num_heads * attn.head_dim != dim:
        raise ValueError(f"num_heads * head_dim must equal dim ({attn.num_heads} * {attn.head_dim} != {dim})")
    kind = norm if norm is not None else ("rms" if isinstance(block.norm1, nn.RMSNorm) else "layer")
    out = NormTransformerBlock(dim=dim, num_heads=attn.num_heads, hidden=ffn.up.out_features, norm=kind,
                               norm_eps=norm_eps, causal=attn.causal, bias=attn.out.bias is not None)
    w_q, w_k, w_v = attn.qkv.weight.chunk(3, dim=0)  # each (dim, dim): rows are (head, head_dim)
    for target, weight in ((out.q_proj, w_q), (out.k_proj, w_k), (out.v_proj, w_v), (out.o_proj, attn.out.weight),
                           (out.up, ffn.up.weight), (out.down, ffn.down.weight)):
        target.weight.copy_(weight)
    if attn.qkv.bias is not None:
        out.v_proj.bias.copy_(attn.qkv.bias.chunk(3)[2])
        out.o_proj.bias.copy_(attn.out.bias)
    if ffn.down.bias is not None and out.down.bias is not None:
        out.down.bias.copy_(ffn.down.bias)
    for mine, theirs in ((out.norm1, block.norm1), (out.norm2, block.norm2)):
        for name in ("weight", "bias"):
            if getattr(mine, name, None) is not None and getattr(theirs, name, None) is not None:
                getattr(mine, name).copy_(getattr(theirs, name))
    return out
