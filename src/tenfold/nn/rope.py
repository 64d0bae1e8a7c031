"""Rotary positional encodings (RoPE) and p-RoPE.

RoPE (Su et al., 2021) splits each query/key head vector into d/2 two-dimensional chunks and rotates
chunk i by the angle ``position * g_i`` with ``g_i = base^(-2i/d)`` (i = 0 fastest, 1 rad/token), so

    a_{m,n} = (R^m q)^T (R^n k) = sum_i q^(i)^T rho(g_i)^(n-m) k^(i)        (only n - m enters)

p-RoPE (Barbero et al., 2025, "Round and Round We Go! What makes Rotary Positional Encodings
useful?", arXiv 2410.06205, Sec. 6) keeps the fastest fraction p of the frequencies rotating, exactly
``base^(-2i/d)`` with the full head dimension d as denominator, and sets the slowest d/2 - r to zero,
r = int(p * d // 2): those chunks never rotate and act as robust semantic (NoPE) channels.
p = 1 is RoPE, p = 0 is NoPE.

Truncation modes (``truncate``):
    "low"    p-RoPE (Hugging Face ``rope_type="proportional"``): frequencies 0..r-1 rotate, the rest are 0.
    "high"   the paper's "reversed" ablation: the d/2 - r fastest frequencies are 0, the slowest r rotate.
    "prefix" NeoX / Phi partial rotary (HF ``rope_type="default"`` with ``partial_rotary_factor``):
             the first R = int(d * p) dims rotate with frequencies base^(-2j/R) over R, the rest pass.

Chunk layouts (``layout``): "half" pairs dim i with dim i + d/2 (rotate-half: Gemma, Hugging Face,
NeoX, the paper's code); "interleaved" pairs (2i, 2i+1) (GPT-J, Meta Llama). With "prefix" the
pairing is applied inside the first R dims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

TRUNCATE_MODES = ("low", "high", "prefix")
LAYOUTS = ("half", "interleaved")


def rotating_pairs(head_dim: int, p: float) -> int:
    """r = int(p * head_dim // 2), the number of rotating pairs of p-RoPE (as Gemma / Hugging Face)."""
    return int(p * head_dim // 2)


class RotaryEmbedding(nn.Module):
    """RoPE / p-RoPE applied as ``rope(x, positions)``.

    Barbero et al. (2025), Sec. 6, p-RoPE: ``g_i = base^(-2i/d)`` for the r = int(p*d//2) fastest pairs
    and ``g_i = 0`` for the others; each chunk x^(i) of a query or key at position m becomes
    ``rho(m * g_i / scale_factor) x^(i)`` with rho the 2x2 rotation.

    Args:
        head_dim: d, even. base: theta (the "max wavelength"), > 0. p: fraction of frequencies that
            rotate, in [0, 1]. truncate: "low" (p-RoPE), "high" (reversed ablation) or "prefix"
            (NeoX partial rotary). layout: "half" (rotate-half) or "interleaved".
        scale_factor: linear position interpolation (angles divided by it), >= 1.
        max_len: the longest sequence expected, >= 1 (informational: the angles are computed on the fly
            for any position, so nothing is cached or bounded by it).

    ``inv_freq`` (d/2,) holds one frequency per pair in pair order (zeros for pairs that do not rotate;
    for "prefix" the R/2 rotary pairs come first). ``n_rotating`` is the number of rotating pairs.
    ``forward(x, positions)``: x (..., seq, d), positions integer (seq,) or (batch, seq) with x
    (batch, heads, seq, d). Angles and cos/sin are computed in float64 on the fly (no cache, no host
    sync: the forward traces under ``torch.compile``); the rotation is done in float32 (float64 for
    float64 inputs) and cast back to x.dtype.
    """

    def __init__(self, head_dim: int, *, base: float = 10_000.0, p: float = 1.0, truncate: str = "low",
                 layout: str = "half", scale_factor: float = 1.0, max_len: int = 2048):
        super().__init__()
        _validate(head_dim, base, p, truncate, layout, scale_factor, max_len)
        self.head_dim, self.base, self.p = int(head_dim), float(base), float(p)
        self.truncate, self.layout, self.scale_factor = truncate, layout, float(scale_factor)
        self.rotary_dim = int(head_dim * p) if truncate == "prefix" else head_dim  # dims the pairing spans
        self._freqs64 = _frequencies(self.head_dim, self.base, self.p, truncate)  # (d/2,) float64, CPU
        self.n_rotating = int((self._freqs64 > 0).sum())
        self.register_buffer("inv_freq", (self._freqs64 / self.scale_factor).float(), persistent=False)
        # the angle frequencies in float64, on the module's device (kept float64 by ``_apply``)
        self.register_buffer("angle_freqs", self._freqs64 / self.scale_factor, persistent=False)
        self.max_len = int(max_len)

    def _apply(self, fn, recurse=True):
        """Moves follow ``inv_freq``'s device; ``angle_freqs`` stays float64 also under ``.half()`` etc."""
        super()._apply(fn, recurse)
        self.angle_freqs = (self._freqs64 / self.scale_factor).to(self.inv_freq.device)
        return self

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, base={self.base:g}, p={self.p:g}, truncate={self.truncate!r}, "
                f"layout={self.layout!r}, n_rotating={self.n_rotating}, scale_factor={self.scale_factor:g}")

    @property
    def wavelengths(self) -> torch.Tensor:
        """2 pi / g_i in tokens for each pair (inf for pairs that do not rotate)."""
        return 2 * math.pi / self.inv_freq.double()

    def pair_indices(self) -> torch.Tensor:
        """(d/2, 2) LongTensor: the two head dims forming each pair, in ``inv_freq`` order."""
        d, rot = self.head_dim, self.rotary_dim
        return torch.cat([_pairs(rot, self.layout), rot + _pairs(d - rot, self.layout)])  # (d/2, 2)

    # -- cos / sin -----------------------------------------------------------------------------
    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the angles ``positions * g_i / scale_factor`` (computed in float64 on the fly,
        on the device of ``positions``), in ``dtype`` (float32 or float64), shaped (*positions.shape, d/2).
        No host sync and no cache, so any integer position works (negative ones rotate backwards) and
        the call traces under ``torch.compile``."""
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
            raise ValueError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        freqs = self.angle_freqs.to(positions.device)  # a no-op when the module is on that device
        angles = positions.to(torch.float64).unsqueeze(-1) * freqs  # (*positions.shape, d/2), float64
        return angles.cos().to(dtype), angles.sin().to(dtype)

    # -- rotation ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x (..., seq, d) at integer ``positions`` (seq,) or (batch, seq)."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"expected x shaped (..., seq, {self.head_dim}), got {tuple(x.shape)}")
        if positions.dim() not in (1, 2) or positions.shape[-1] != x.shape[-2]:
            raise ValueError(f"positions must be shaped (seq,) or (batch, seq) with seq={x.shape[-2]}, "
                             f"got {tuple(positions.shape)}")
        if positions.dim() == 2 and (x.dim() != 4 or positions.shape[0] not in (1, x.shape[0])):
            raise ValueError("positions shaped (batch, seq) need x shaped (batch, heads, seq, head_dim), "
                             f"got x {tuple(x.shape)} and positions {tuple(positions.shape)}")
        if self.n_rotating == 0:
            return x  # NoPE: every frequency is 0
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.cos_sin(positions.to(x.device), compute)
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (batch, seq, d/2) -> (batch, 1, seq, d/2)
        return apply_rotation(x, cos, sin, self.layout, self.rotary_dim).to(x.dtype)

    # -- Hugging Face rope parameters ---------------------------------------------------------
    def to_hf_rope_parameters(self) -> dict:
        """The Hugging Face ``rope_parameters`` dict giving the same rotation (rotate-half layout only).

        "low" -> ``proportional`` (Gemma 4 / p-RoPE); "prefix" -> ``default`` (or ``linear`` when
        scale_factor > 1) with ``partial_rotary_factor``. "high" has no Hugging Face equivalent.
        """
        if self.layout != "half":
            raise ValueError("Hugging Face rope parameters assume layout='half' (rotate-half); "
                             f"this embedding has layout={self.layout!r}")
        if self.truncate == "low":
            return {"rope_type": "proportional", "rope_theta": self.base, "partial_rotary_factor": self.p,
                    "factor": self.scale_factor}
        if self.truncate == "prefix":
            params = {"rope_type": "default", "rope_theta": self.base, "partial_rotary_factor": self.p}
            if self.scale_factor != 1.0:
                params.update(rope_type="linear", factor=self.scale_factor)
            return params
        raise ValueError("truncate='high' (the reversed ablation) has no Hugging Face rope_type; "
                         "valid for conversion: 'low', 'prefix'")

    @classmethod
    def from_hf_rope_parameters(cls, params: Mapping, head_dim: int, **kwargs) -> RotaryEmbedding:
        """Inverse of :meth:`to_hf_rope_parameters` for rope types default, linear and proportional."""
        rope_type = params.get("rope_type", params.get("type", "default"))
        if "rope_theta" not in params:
            raise ValueError("rope parameters need 'rope_theta'")
        base, p = float(params["rope_theta"]), float(params.get("partial_rotary_factor", 1.0))
        if rope_type == "proportional":
            return cls(head_dim, base=base, p=p, truncate="low", scale_factor=float(params.get("factor", 1.0)),
                       **kwargs)
        if rope_type in ("default", "linear"):
            factor = float(params["factor"]) if rope_type == "linear" else 1.0
            truncate = "low" if p == 1.0 else "prefix"  # identical at p = 1
            return cls(head_dim, base=base, p=p, truncate=truncate, scale_factor=factor, **kwargs)
        raise ValueError(f"rope_type must be one of ('default', 'linear', 'proportional'), got {rope_type!r}")


def apply_rotation(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half",
                   rotary_dim: int | None = None) -> torch.Tensor:
    """Rotate the pairs of the first ``rotary_dim`` dims of x (..., d) by angles with cos/sin (..., d/2)
    (broadcastable; only the first rotary_dim/2 entries are used), in the dtype of cos."""
    d = x.shape[-1]
    rot = d if rotary_dim is None else rotary_dim
    half = rot // 2
    xf = x.to(cos.dtype)
    x_rot, x_pass = xf[..., :rot], xf[..., rot:]
    c, s = cos[..., :half], sin[..., :half]
    if layout == "half":
        x1, x2 = x_rot[..., :half], x_rot[..., half:]
        out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    elif layout == "interleaved":
        pairs = x_rot.unflatten(-1, (half, 2))  # (..., rot) -> (..., rot/2, 2)
        x1, x2 = pairs[..., 0], pairs[..., 1]
        out = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)  # (..., rot/2, 2) -> (..., rot)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return torch.cat([out, x_pass], dim=-1) if rot < d else out


def _validate(head_dim, base, p, truncate, layout, scale_factor, max_len) -> None:
    if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even integer >= 2, got {head_dim!r}")
    if not (base > 0 and math.isfinite(base)):
        raise ValueError(f"base must be a finite number > 0, got {base!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    if truncate not in TRUNCATE_MODES:
        raise ValueError(f"truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not (scale_factor >= 1.0 and math.isfinite(scale_factor)):
        raise ValueError(f"scale_factor must be >= 1, got {scale_factor!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len!r}")
    if truncate == "prefix" and int(head_dim * p) % 2:
        raise ValueError(f"truncate='prefix' needs an even rotary dim int(head_dim * p), got "
                         f"{int(head_dim * p)} for head_dim={head_dim}, p={p}")


def _frequencies(head_dim: int, base: float, p: float, truncate: str) -> torch.Tensor:
    """(d/2,) float64 frequency per pair; zeros are multiplied, never divided (no base**inf)."""
    n_pairs = head_dim // 2
    if truncate == "prefix":
        rot = int(head_dim * p)  # R rotary dims, R/2 pairs, denominator R
        freqs = torch.zeros(n_pairs, dtype=torch.float64)
        if rot:
            freqs[: rot // 2] = base ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)
        return freqs
    full = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (d/2,), denominator d
    r = rotating_pairs(head_dim, p)
    keep = torch.zeros(n_pairs, dtype=torch.bool)
    if truncate == "low":
        keep[:r] = True  # the r fastest rotate
    else:
        keep[n_pairs - r:] = True  # "high": the r slowest rotate
    return torch.where(keep, full, torch.zeros_like(full))


def _pairs(dims: int, layout: str) -> torch.Tensor:
    """(dims/2, 2) the pairing of ``dims`` consecutive dims in ``layout``."""
    idx = torch.arange(dims // 2)
    if layout == "half":
        return torch.stack([idx, idx + dims // 2], dim=-1)
    return torch.stack([2 * idx, 2 * idx + 1], dim=-1)


# -- conversions between layouts and between p-RoPE and NeoX partial rotary ---------------------------

def prope_as_neox(base: float, p: float, head_dim: int) -> tuple[float, float]:
    """(base', p') such that NeoX partial rotary with (base', p') has the same frequencies as
    p-RoPE(p, base): R = 2r rotary dims and base' = base^(2r/d), so base'^(-2j/R) = base^(-2j/d).
    With p*d/2 an integer, p' = p and base' = base^p. Use with :func:`prope_to_neox_permutation`."""
    r = rotating_pairs(head_dim, p)
    return float(base ** (2 * r / head_dim)), 2 * r / head_dim


def prope_to_neox_permutation(head_dim: int, p: float) -> torch.Tensor:
    """(d,) LongTensor ``perm`` with ``neox(x[..., perm]) == prope(x)[..., perm]`` (both in the "half"
    layout), where prope = RotaryEmbedding(d, base=b, p=p) and neox = RotaryEmbedding(d,
    base=b', p=p', truncate="prefix") with (b', p') = prope_as_neox(b, p, d).

    NeoX dim j <- p-RoPE dim j and NeoX dim r + j <- p-RoPE dim d/2 + j for the r rotating pairs; the
    NoPE dims follow in order. Permuting W_Q and W_K rows per head by ``perm`` maps one model onto the other.
    """
    half, r = head_dim // 2, rotating_pairs(head_dim, p)
    first, second = torch.arange(half), torch.arange(half, head_dim)
    return torch.cat([first[:r], second[:r], first[r:], second[r:]])


def half_to_interleaved_permutation(head_dim: int) -> torch.Tensor:
    """(d,) LongTensor ``perm`` with ``interleaved(x[..., perm]) == half(x)[..., perm]``:
    interleaved dim 2i <- half dim i, interleaved dim 2i+1 <- half dim i + d/2."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    idx = torch.arange(head_dim // 2)
    return torch.stack([idx, idx + head_dim // 2], dim=-1).flatten()  # (d/2, 2) -> (d,)


def permute_head_rows(weight: torch.Tensor, perm: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder the output rows of a projection weight (num_heads * d, in) inside every head by ``perm``."""
    head_dim = perm.numel()
    if weight.shape[0] != num_heads * head_dim:
        raise ValueError(f"weight must have {num_heads} * {head_dim} rows, got {tuple(weight.shape)}")
    per_head = weight.reshape(num_heads, head_dim, *weight.shape[1:])  # (heads*d, ...) -> (heads, d, ...)
    return per_head[:, perm].reshape(weight.shape)  # (heads, d, ...) -> (heads*d, ...)


def permute_qk_rows(w_q: torch.Tensor, w_k: torch.Tensor, perm: torch.Tensor, n_heads: int,
                    n_kv_heads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Permute W_Q and W_K rows per head (the same perm for every head, also for GQA's shared K heads)."""
    return permute_head_rows(w_q, perm, n_heads), permute_head_rows(w_k, perm, n_kv_heads or n_heads)
