"""Adaptive-temperature softmax and log-n scaling (Veličković et al., 2024, "softmax is not enough
(for sharp out-of-distribution)", arXiv 2410.01104; ICML 2025).

Softmax with bounded logits disperses: for n logits in [m, M], delta = M - m, every coefficient lies
in [e^-delta / n, e^delta / n] (Lemma 2.1). As an inference-time fix the paper picks, per softmax row,
an inverse temperature beta >= 1 from the row's Shannon entropy (in nats):

    p    = softmax(e)                       e: one row of (already scaled) logits
    H    = -sum_i p_i log p_i               computed here exactly as lse(e) - sum_i p_i e_i, in fp32
    beta = max(poly(H), 1) if H > 0.5 else 1
    poly(H) = -0.037 H^4 + 0.481 H^3 - 2.3 H^2 + 4.917 H - 1.791     (coefficients highest degree first)
    out  = softmax(beta * e)

For long sequences the same result comes from two passes (``two_pass_attention``): a streaming pass
over key chunks computes each row's entropy without the full score matrix, then
``scaled_dot_product_attention`` runs on beta-scaled queries, since softmax(beta q.k) = SDPA(beta q, k, v).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAPER_COEFFS: tuple[float, ...] = (-0.037, 0.481, -2.3, 4.917, -1.791)  # highest degree first (np.polyval)


# ---------------------------------------------------------------------------------------------------
# the polynomial


def polyval(coeffs: Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Evaluate the polynomial with ``coeffs`` listed highest degree first at ``x`` (Horner), like
    ``numpy.polyval`` / ``jnp.polyval`` used by the paper's code."""
    coeffs = [float(c) for c in coeffs]
    if not coeffs:
        raise ValueError("coeffs must hold at least one coefficient")
    result = torch.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        result = result * x + c
    return result


def fit_polynomial(entropy, beta, *, degree: int = 4, weights=None) -> tuple[float, ...]:
    """Least-squares fit of beta = poly(H) to (entropy, best beta) pairs, as the paper fitted its
    quartic on the max-retrieval model. Returns coefficients highest degree first (for ``polyval``)."""
    h = np.asarray(torch.as_tensor(entropy, dtype=torch.float64).flatten())
    b = np.asarray(torch.as_tensor(beta, dtype=torch.float64).flatten())
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    if h.shape != b.shape or h.size < degree + 1:
        raise ValueError(f"need equal numbers of entropies and betas, at least degree + 1 = {degree + 1}; "
                         f"got {h.size} and {b.size}")
    w = None if weights is None else np.asarray(weights, dtype=float).flatten()
    return tuple(float(c) for c in np.polyfit(h, b, degree, w=w))


def adaptive_beta(entropy: torch.Tensor, *, coeffs: Sequence[float] = PAPER_COEFFS, threshold: float = 0.5,
                  min_beta: float = 1.0) -> torch.Tensor:
    """beta = max(poly(H), min_beta) where H > threshold, else 1 ("don't overcorrect low-entropy heads",
    "never increase entropy")."""
    beta = polyval(coeffs, entropy).clamp_min(min_beta)
    return torch.where(entropy > threshold, beta, torch.ones_like(beta))


# ---------------------------------------------------------------------------------------------------
# entropy and masked softmax in fp32


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _valid(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """True where a logit takes part: not -inf (a masked score) and allowed by ``mask``."""
    valid = logits > float("-inf")
    return valid if mask is None else valid & mask.to(torch.bool)


def _entropy_keepdim(e: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Exact entropy H = log Z - sum p (e - m) (m the row max), NaN-free for masked/fully masked rows."""
    has = valid.any(dim, keepdim=True)
    m = e.masked_fill(~valid, float("-inf")).amax(dim, keepdim=True)
    m = torch.where(has, m, torch.zeros_like(m)).detach()  # H does not depend on the shift m
    d = torch.where(valid, e - m, torch.zeros_like(e))
    z = torch.where(valid, d.exp(), torch.zeros_like(e))
    total = z.sum(dim, keepdim=True)
    total = torch.where(has, total, torch.ones_like(total))
    h = total.log() - (z * d).sum(dim, keepdim=True) / total
    return torch.where(has, h, torch.zeros_like(h))


def entropy_from_logits(logits: torch.Tensor, *, dim: int = -1, mask: torch.Tensor | None = None,
                        eps: float | None = None) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) along ``dim``, computed in fp32 (fp64 for fp64 input).

    ``mask`` (bool, True = valid) and -inf logits exclude entries; a fully masked row has entropy 0.
    ``eps=None`` uses the exact form lse(e) - sum p e; ``eps=1e-9`` gives the paper's -sum p log(p + eps)."""
    _check_floating(logits=logits)
    e = logits.to(_compute_dtype(logits))
    valid = _valid(e, mask)
    if eps is None:
        return _entropy_keepdim(e, valid, dim).squeeze(dim)
    p = _masked_softmax(e, valid, dim)
    return -(p * (p + eps).log()).sum(dim)


def _masked_softmax(e: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over valid entries; invalid entries and fully masked rows get weight 0 (no NaN, also in
    the backward pass)."""
    has = valid.any(dim, keepdim=True)
    e = torch.where(valid, e, torch.full_like(e, float("-inf")))
    e = torch.where(has, e, torch.zeros_like(e))  # fully masked rows: a finite dummy row
    return torch.softmax(e, dim) * has


# ---------------------------------------------------------------------------------------------------
# the softmax variants


def adaptive_temperature_softmax(logits: torch.Tensor, dim: int = -1, *, mask: torch.Tensor | None = None,
                                 coeffs: Sequence[float] = PAPER_COEFFS, threshold: float = 0.5,
                                 min_beta: float = 1.0, beta_grad: bool = True, return_stats: bool = False):
    """Adaptive-temperature softmax (Veličković et al., 2024, Fig. 4 ICML / §5 arXiv):
    softmax(beta(H) * e) with H the row entropy of softmax(e) and beta = max(poly(H), 1) if H > 0.5.

    Args:
        logits: scores, any shape; entries equal to -inf count as masked.
        dim: the softmax dimension. mask: bool, broadcastable to ``logits``, True where valid.
        coeffs: the polynomial, highest degree first (default: the paper's quartic).
        threshold: beta = 1 at or below this entropy. min_beta: lower clamp of the polynomial.
        beta_grad: let gradients flow through beta (the paper's function does); False stops them.
        return_stats: also return {"entropy", "beta", "max_weight"} with ``dim`` removed.

    Entropy and weights are computed in fp32 and cast back to ``logits.dtype``. Fully masked rows give
    zeros and beta = 1.
    """
    _check_floating(logits=logits)
    e = logits.to(_compute_dtype(logits))
    valid = _valid(e, mask)
    entropy = _entropy_keepdim(e if beta_grad else e.detach(), valid, dim)
    beta = adaptive_beta(entropy, coeffs=coeffs, threshold=threshold, min_beta=min_beta)
    weights = _masked_softmax(torch.where(valid, e, torch.zeros_like(e)) * beta, valid, dim)
    return _finish(weights, logits.dtype, entropy, beta, dim, return_stats)


def log_n_scaled_softmax(logits: torch.Tensor, dim: int = -1, *, mask: torch.Tensor | None = None,
                         n_ref: int = 16, return_stats: bool = False):
    """Length-scaled softmax, softmax(beta * e) with beta = log(n) / log(n_ref) and n the number of valid
    entries of the row (Chiang & Cholak 2022; "Scalable-Softmax"): the ablation baseline of the paper's
    adaptive temperature. beta = 1 at n = n_ref (the training set size)."""
    if n_ref < 2:
        raise ValueError(f"n_ref must be >= 2, got {n_ref}")
    _check_floating(logits=logits)
    e = logits.to(_compute_dtype(logits))
    valid = _valid(e, mask)
    count = valid.sum(dim, keepdim=True).clamp_min(1).to(e.dtype)
    beta = count.log() / math.log(n_ref)
    weights = _masked_softmax(torch.where(valid, e, torch.zeros_like(e)) * beta, valid, dim)
    entropy = _entropy_keepdim(e, valid, dim) if return_stats else None
    return _finish(weights, logits.dtype, entropy, beta, dim, return_stats)


def _finish(weights, dtype, entropy, beta, dim, return_stats):
    weights = weights.to(dtype)
    if not return_stats:
        return weights
    return weights, {"entropy": entropy.squeeze(dim), "beta": beta.squeeze(dim),
                     "max_weight": weights.amax(dim).float()}


class AdaptiveSoftmax(nn.Module):
    """Module form of :func:`adaptive_temperature_softmax` (Veličković et al., 2024): softmax(beta(H) e),
    beta = max(poly(H), min_beta) for H > threshold, else 1."""

    def __init__(self, *, dim: int = -1, coeffs: Sequence[float] = PAPER_COEFFS, threshold: float = 0.5,
                 min_beta: float = 1.0, beta_grad: bool = True):
        super().__init__()
        coeffs = tuple(float(c) for c in coeffs)
        if not coeffs or not all(math.isfinite(c) for c in coeffs):
            raise ValueError(f"coeffs must be a non-empty sequence of finite numbers, got {coeffs}")
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        if not (min_beta > 0 and math.isfinite(min_beta)):
            raise ValueError(f"min_beta must be a finite number > 0, got {min_beta}")
        self.dim, self.coeffs, self.threshold, self.min_beta, self.beta_grad = dim, coeffs, threshold, min_beta, beta_grad

    def forward(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return adaptive_temperature_softmax(logits, self.dim, mask=mask, coeffs=self.coeffs, threshold=self.threshold,
                                            min_beta=self.min_beta, beta_grad=self.beta_grad)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, coeffs={self.coeffs}, threshold={self.threshold}, min_beta={self.min_beta}"


# The hook of ``tenfold.nn.attention.attention_weights``: fn(scores) -> weights over the last dim.
SOFTMAX_FUNCTIONS = {
    "adaptive": partial(adaptive_temperature_softmax, dim=-1),
    "log-n": partial(log_n_scaled_softmax, dim=-1),
}


# ---------------------------------------------------------------------------------------------------
# two-pass attention: streaming row statistics, then SDPA on beta-scaled queries


STATS_METHODS = ("auto", "chunked", "kernel")


@dataclass
class RowStats:
    """Per-row softmax statistics of attention scores, each shaped (..., L_q): log-sum-exp (-inf for a
    fully masked row), entropy in nats (0 there) and the number of valid keys."""

    lse: torch.Tensor
    entropy: torch.Tensor
    count: torch.Tensor


def _chunk_mask(attn_mask, is_causal, start, stop, lq, device):
    """Bool validity and float bias of the key chunk [start, stop) (None where absent)."""
    valid = bias = None
    if attn_mask is not None:
        part = attn_mask if attn_mask.shape[-1] == 1 else attn_mask[..., start:stop]
        if part.dtype == torch.bool:
            valid = part
        else:
            bias = part
    if is_causal:  # top-left aligned, as in scaled_dot_product_attention
        causal = torch.arange(start, stop, device=device) <= torch.arange(lq, device=device)[:, None]
        valid = causal if valid is None else valid & causal
    return valid, bias


def _chunked_row_stats(q, k, scale, attn_mask, is_causal, chunk_size) -> RowStats:
    """Online pass over key chunks: running max m, Z = sum e^(s-m) and centred U = sum e^(s-m)(s-m);
    when m grows to m', Z <- a Z and U <- a (U + (m - m') Z) with a = e^(m - m')."""
    dtype = _compute_dtype(q)
    qf, kf = q.to(dtype) * scale, k.to(dtype)
    shape = torch.broadcast_shapes(qf.shape[:-1], kf.shape[:-2] + qf.shape[-2:-1])  # (..., L_q)
    m = torch.full(shape, float("-inf"), dtype=dtype, device=q.device)
    total, centred, count = torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)
    for start in range(0, k.shape[-2], chunk_size):
        stop = min(start + chunk_size, k.shape[-2])
        s = qf @ kf[..., start:stop, :].transpose(-1, -2)  # (..., L_q, C)
        valid, bias = _chunk_mask(attn_mask, is_causal, start, stop, q.shape[-2], q.device)
        if bias is not None:
            s = s + bias.to(dtype)
        if valid is not None:
            s = s.masked_fill(~valid, float("-inf"))
        new_m = torch.maximum(m, s.amax(-1))
        safe_m = torch.where(torch.isfinite(new_m), new_m, torch.zeros_like(new_m))
        shift = torch.where(torch.isfinite(m), m - safe_m, torch.zeros_like(m))  # <= 0; 0 before any key
        a = torch.where(torch.isfinite(m), shift.exp(), torch.zeros_like(m))
        valid = s > float("-inf")
        d = torch.where(valid, s - safe_m.unsqueeze(-1), torch.zeros_like(s))  # finite, so gradients stay finite
        w = torch.where(valid, d.exp(), torch.zeros_like(s))
        centred = a * (centred + shift * total) + (w * d).sum(-1)
        total = a * total + w.sum(-1)
        count = count + valid.sum(-1)
        m = new_m
    has = total > 0
    safe_total = torch.where(has, total, torch.ones_like(total))
    entropy = torch.where(has, safe_total.log() - centred / safe_total, torch.zeros_like(total))
    lse = torch.where(has, m, torch.full_like(m, float("-inf"))) + safe_total.log()
    return RowStats(lse=lse, entropy=entropy, count=count)


def _fused_attention_with_lse(q, k, scale, bias, is_causal):
    """softmax(scale q k^T + bias) k and the rows' log-sum-exp from one fused attention call: the CPU
    flash kernel, or on CUDA the memory-efficient kernel (:func:`_efficient_attention_with_lse`)."""
    if q.device.type == "cuda":
        return _efficient_attention_with_lse(q, k, scale, bias, is_causal)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, k, is_causal=is_causal, attn_mask=bias,
                                                                       scale=scale)[:2]


def _efficient_attention_with_lse(q, k, scale, bias, is_causal, kernel=None):
    """The CUDA memory-efficient attention kernel with ``compute_log_sumexp=True`` (fp32 or half inputs
    shaped (batch, heads, L, d)), prepared as ``scaled_dot_product_attention`` prepares it: the additive
    bias padded so that its rows start 16-element aligned, then expanded to (batch, heads, L_q, L_k); the
    kernel returns the log-sum-exp padded to a multiple of 32 queries, cut back here. ``kernel`` stands in
    for the aten op in tests (this path is not exercised on CPU otherwise)."""
    kernel = torch.ops.aten._scaled_dot_product_efficient_attention if kernel is None else kernel
    lq, lk = q.shape[-2], k.shape[-2]
    if bias is not None:
        bias = _aligned_rows(bias).expand(q.shape[0], q.shape[1], lq, lk)
    out, lse = kernel(q, k, k, bias, True, 0.0, is_causal, scale=scale)[:2]
    return out, lse[..., :lq]


def _aligned_rows(bias: torch.Tensor, alignment: int = 16) -> torch.Tensor:
    """``bias`` (..., L_k) as a tensor whose rows start ``alignment``-element aligned (unit last stride)."""
    if bias.stride(-1) == 1 and all(stride % alignment == 0 for stride in bias.stride()[:-1]):
        return bias  # also broadcast (stride 0) dims
    lk = bias.shape[-1]
    if lk % alignment == 0:
        return bias.contiguous()
    return F.pad(bias, (0, -lk % alignment))[..., :lk]  # (..., L_k + pad) storage, viewed as (..., L_k)


def _kernel_row_stats(q, k, scale, attn_mask, is_causal, fused=_fused_attention_with_lse) -> RowStats:
    """Entropy from one fused attention call with the keys as values: s is linear in k, so
    E_p[s] = scale q . (sum_j p_j k_j) and H = lse - E_p[s]; lse comes from the fused kernel."""
    dtype = _compute_dtype(q)
    qf, kf = q.to(dtype), k.to(dtype)
    lq, lk = q.shape[-2], k.shape[-2]
    bias = None
    if attn_mask is not None:
        valid = attn_mask.to(torch.bool)
        count = torch.broadcast_to(valid, valid.shape[:-2] + (lq, lk)).sum(-1).to(dtype)
        bias = torch.zeros(valid.shape, dtype=dtype, device=q.device).masked_fill(~valid, float("-inf"))
    elif is_causal:
        count = (torch.arange(lq, device=q.device) + 1).clamp_max(lk).to(dtype)
    else:
        count = torch.full((lq,), float(lk), dtype=dtype, device=q.device)
    out, lse = fused(qf, kf, scale, bias, is_causal)
    mean_score = scale * (qf * out).sum(-1)  # (..., L_q)
    count = torch.broadcast_to(count, lse.shape)
    has = count > 0
    entropy = torch.where(has, (lse - mean_score).clamp_min(0), torch.zeros_like(lse))
    lse = torch.where(has, lse, torch.full_like(lse, float("-inf")))
    return RowStats(lse=lse, entropy=entropy, count=count)


def _kernel_available(q, k, attn_mask, is_causal) -> bool:
    """Whether a fused kernel that returns the log-sum-exp serves these inputs: the CPU flash kernel
    (float inputs, bool mask or none), or on CUDA the memory-efficient kernel (also: not float64,
    (batch, heads, L, d) inputs with equal batch and heads, and causal only for L_q = L_k, where the
    kernel's causal alignment cannot differ from scaled_dot_product_attention's top-left one)."""
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        return False
    if q.device.type == "cpu":
        return (q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
                and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"))
    if q.device.type == "cuda":
        return (q.dtype in (torch.float32, torch.bfloat16, torch.float16) and q.dim() == 4 and k.dim() == 4
                and q.shape[:2] == k.shape[:2] and (not is_causal or q.shape[-2] == k.shape[-2])
                and hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"))
    return False


def _check_floating(**tensors) -> None:
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def attention_row_stats(q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None,
                        attn_mask: torch.Tensor | None = None, is_causal: bool = False, chunk_size: int = 1024,
                        method: str = "auto") -> RowStats:
    """Log-sum-exp, entropy (nats) and valid-key count of each row of softmax(scale q k^T + mask), in fp32,
    without the full (L_q, L_k) score matrix.

    q: (..., L_q, d); k: (..., L_k, d); attn_mask: bool (True = allowed) or additive float, broadcastable to
    (..., L_q, L_k); is_causal: key j visible to query i iff j <= i (top-left, as SDPA).
    ``method="chunked"``: an online pass over key chunks of ``chunk_size`` (differentiable, any mask).
    ``method="kernel"``: one fused attention call with the keys as values plus its log-sum-exp (private aten
    ops: the CPU flash kernel, on CUDA the memory-efficient kernel; no float bias, no gradient through lse).
    ``"auto"``: the kernel where it applies and no gradient is needed, else chunked (the fallback)."""
    _check_floating(q=q, k=k)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if method not in STATS_METHODS:
        raise ValueError(f"method must be one of {STATS_METHODS}, got {method!r}")
    if attn_mask is not None and is_causal:
        raise ValueError("give either attn_mask or is_causal=True, not both (as scaled_dot_product_attention)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    while attn_mask is not None and attn_mask.dim() < 2:  # (L_k,) -> (1, L_k)
        attn_mask = attn_mask.unsqueeze(0)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    kernel = _kernel_available(q, k, attn_mask, is_causal) and not needs_grad
    if method == "kernel" and not kernel:
        raise ValueError("method='kernel' needs a fused kernel for these inputs (CPU, or CUDA with (batch, heads, "
                         "L, d) inputs, not float64, causal only for L_q = L_k), a bool mask or none, and no gradient")
    if method == "kernel" or (method == "auto" and kernel):
        return _kernel_row_stats(q, k, scale, attn_mask, is_causal)
    return _chunked_row_stats(q, k, scale, attn_mask, is_causal, chunk_size)


def two_pass_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, kind: str = "adaptive",
                       attn_mask: torch.Tensor | None = None, is_causal: bool = False, scale: float | None = None,
                       chunk_size: int = 1024, coeffs: Sequence[float] = PAPER_COEFFS, threshold: float = 0.5,
                       min_beta: float = 1.0, n_ref: int = 16, beta_grad: bool = True, stats_method: str = "auto",
                       return_stats: bool = False):
    """softmax_kind(scale q k^T + mask) v without the (L_q, L_k) weight matrix (Veličković et al., 2024):
    pass 1 gives each row's entropy (``attention_row_stats``), beta = AT(H) (``kind="adaptive"``) or
    log(n_valid) / log(n_ref) (``kind="log-n"``); pass 2 is ``scaled_dot_product_attention(beta q, k, v)``, with
    an additive float mask scaled by beta too. Fully masked rows give zeros.

    q: (..., L_q, d); k, v: (..., L_k, d). ``beta_grad=False`` treats beta as a constant in backward (pass 1
    then runs without autograd)."""
    if kind not in ("adaptive", "log-n"):
        raise ValueError(f"kind must be 'adaptive' or 'log-n', got {kind!r}")
    _check_floating(q=q, k=k, v=v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    while attn_mask is not None and attn_mask.dim() < 2:  # (L_k,) -> (1, L_k), as SDPA needs
        attn_mask = attn_mask.unsqueeze(0)
    with torch.set_grad_enabled(beta_grad and torch.is_grad_enabled() and kind == "adaptive"):
        stats = attention_row_stats(q, k, scale=scale, attn_mask=attn_mask, is_causal=is_causal,
                                    chunk_size=chunk_size, method=stats_method)
    if kind == "adaptive":
        beta = adaptive_beta(stats.entropy, coeffs=coeffs, threshold=threshold, min_beta=min_beta)
    else:
        beta = stats.count.clamp_min(1).log() / math.log(n_ref)
    beta = beta.unsqueeze(-1)  # (..., L_q, 1)
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask * beta.to(attn_mask.dtype)
    out = F.scaled_dot_product_attention(q * beta.to(q.dtype), k, v, attn_mask=attn_mask, is_causal=is_causal,
                                         scale=scale)
    out = torch.where(stats.count.unsqueeze(-1) > 0, out, torch.zeros_like(out))  # fully masked rows
    if not return_stats:
        return out
    return out, {"entropy": stats.entropy, "beta": beta.squeeze(-1), "lse": stats.lse}
