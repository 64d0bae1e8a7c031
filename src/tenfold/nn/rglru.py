"""The Real-Gated Linear Recurrent Unit (RG-LRU) of Griffin/Hawk (De et al., 2024, arXiv 2402.19427)
as TRecViT uses it over time (Pătrăucean et al., 2024, arXiv 2412.14294), with the causal depthwise
temporal convolution and the Griffin recurrent block around it.

RG-LRU, per channel, input v_t in R^W (c = 8):

    r_t = sigmoid(BD_a v_t),   i_t = sigmoid(BD_x v_t)             BD: block-diagonal, num_heads blocks
    log a_t = -c * r_t * softplus(Lambda)                          a_t = sigma(-Lambda)^(c r_t)
    m_t = sqrt(1 - a_t^2)                                          gradient of sqrt bounded by 1000
    h_t = a_t * h_{t-1} + m_t * (i_t * v_t)                        y_t = h_t (state kept in fp32)

with a reset at segment position 0 (a_0 = 0, m_0 = 1, so h_0 = i_0 * v_0). Lambda is initialised on a
ring: a^2 ~ U[min_rad^2, max_rad^2] (TRecViT: min_rad 0.5, max_rad 0.999).

The linear recurrence h_t = a_t h_{t-1} + b_t runs through :func:`linear_scan`, which has three
implementations: ``"loop"`` (a plain autograd loop over time), ``"custom"`` (the same loop without
autograd bookkeeping inside a ``torch.autograd.Function`` whose backward is the reverse-time
recurrence g_t = dy_t + a_{t+1} g_{t+1}; it saves only a and h) and ``"doubling"`` (Hillis-Steele,
log2(T) vectorised steps; autograd-native).

``RGLRU(fused=True)`` (the default) runs gates and scan as one ``torch.autograd.Function``
(:class:`FusedRGLRUFn`) that keeps only its input v and its output h for the backward and recomputes
the gates there, the way the paper's fused scan kernel does; ``fused=False`` is the plain autograd
graph of :meth:`RGLRU.gates` followed by :func:`linear_scan` (about 11 saved W-wide tensors per step).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from tenfold.nn.blockdiag import BlockDiagonalLinear, block_diagonal_linear, block_diagonal_linear_backward
from tenfold.nn.conv import CausalConv1D

SCAN_IMPLS = ("loop", "custom", "doubling")
MAX_SQRT_GRADIENT = 1000.0


# ----------------------------------------------------------------------------------------------
# bounded-gradient sqrt


class _SqrtBoundedGrad(torch.autograd.Function):
    """sqrt(x) whose backward evaluates d sqrt/dx at max(x, 1 / (4 max_grad^2))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, max_grad: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.max_grad = max_grad
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        x_pre = torch.clamp(x, min=1.0 / (4.0 * ctx.max_grad ** 2))
        return grad * 0.5 * torch.rsqrt(x_pre), None


def sqrt_bounded_grad(x: torch.Tensor, max_grad: float = MAX_SQRT_GRADIENT) -> torch.Tensor:
    """Square root with the derivative clipped at ``max_grad`` (recurrentgemma's sqrt_bound_derivative)."""
    return _SqrtBoundedGrad.apply(x, max_grad)


# ----------------------------------------------------------------------------------------------
# linear scan h_t = a_t * h_{t-1} + b_t over dim 1


def _scan_forward_loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """The recurrence without autograd bookkeeping; a, b (batch, T, width) -> h (batch, T, width)."""
    out = torch.empty_like(b)
    h = b[:, 0] if h0 is None else torch.addcmul(b[:, 0], a[:, 0], h0)
    out[:, 0] = h
    for t in range(1, b.shape[1]):
        h = torch.addcmul(b[:, t], a[:, t], h)
        out[:, t] = h
    return out


def _scan_backward_loop(a: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """The gradient flowing into each h_t, g_t = dy_t + a_{t+1} g_{t+1}; a, dy (batch, T, width)."""
    g = torch.empty_like(dy)
    carry = dy[:, -1]
    g[:, -1] = carry
    for t in range(dy.shape[1] - 2, -1, -1):
        carry = torch.addcmul(dy[:, t], a[:, t + 1], carry)
        g[:, t] = carry
    return g


def _previous_states(h: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """h_{t-1} for every t: (batch, T, width), with h_{-1} = h0 (zeros when None)."""
    first = h0 if h0 is not None else torch.zeros_like(h[:, 0])
    return torch.cat([first.unsqueeze(1), h[:, :-1]], dim=1)  # (batch, T, width)


class LinearScanFn(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t with a reverse-time backward; saves only (a, h, h0).

    Backward, with g the gradient flowing into h_t:  g_t = dy_t + a_{t+1} g_{t+1},
    db_t = g_t,  da_t = g_t h_{t-1},  dh_{-1} = a_0 g_0.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
        h = _scan_forward_loop(a, b, h0)
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(a, h, h0 if h0 is not None else h.new_zeros(()))
        return h

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        a, h, h0 = ctx.saved_tensors
        g = _scan_backward_loop(a, dy)
        da = g * _previous_states(h, h0 if ctx.has_h0 else None)
        dh0 = a[:, 0] * g[:, 0] if ctx.has_h0 else None
        return da, g, dh0


def _scan_loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    hs = []
    h = h0
    for t in range(b.shape[1]):
        h = b[:, t] if h is None else a[:, t] * h + b[:, t]
        hs.append(h)
    return torch.stack(hs, dim=1)  # (batch, T, width)


def _scan_doubling(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """Hillis-Steele: after the step with offset k, (A_t, B_t) composes the 2k latest elements."""
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0.unsqueeze(1), b[:, 1:]], dim=1)
    steps = b.shape[1]
    offset = 1
    while offset < steps:
        b = torch.cat([b[:, :offset], a[:, offset:] * b[:, :-offset] + b[:, offset:]], dim=1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], dim=1)
        offset *= 2
    return b


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *,
                impl: str = "custom") -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t (h_{-1} = h0, or 0 when None).

    a, b: (batch, T, width); h0: (batch, width) or None. Returns h shaped (batch, T, width).
    ``impl``: "loop", "custom" (autograd Function with reverse-time backward) or "doubling".
    """
    if impl not in SCAN_IMPLS:
        raise ValueError(f"impl must be one of {SCAN_IMPLS}, got {impl!r}")
    if a.dim() != 3 or a.shape != b.shape or a.shape[1] < 1:
        raise ValueError(f"a and b must be equal shapes (batch, T>=1, width), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if h0 is not None and h0.shape != (a.shape[0], a.shape[2]):
        raise ValueError(f"h0 must be shaped ({a.shape[0]}, {a.shape[2]}), got {tuple(h0.shape)}")
    if impl == "loop":
        return _scan_loop(a, b, h0)
    if impl == "doubling":
        return _scan_doubling(a, b, h0)
    return LinearScanFn.apply(a, b, h0)


# ----------------------------------------------------------------------------------------------
# fused RG-LRU (gates + scan in one autograd Function; the gates are recomputed in backward)


def _fused_gates(v, reset, w_x, b_x, w_a, b_a, lam, c):
    """Gates i_t, r_t, decay a_t and multiplier m_t (batch, T, W) in at least fp32, and softplus(Lambda) (W,),
    with the same arithmetic as :meth:`RGLRU.gates`; ``reset``: the first step is a segment start."""
    acc = torch.promote_types(v.dtype, torch.float32)
    gate_x = torch.sigmoid(block_diagonal_linear(v, w_x, b_x)).to(acc)
    gate_a = torch.sigmoid(block_diagonal_linear(v, w_a, b_a)).to(acc)
    softplus = F.softplus(lam.to(acc))
    log_a = -c * gate_a * softplus
    multiplier = torch.expm1(2.0 * log_a).neg_().sqrt_()  # sqrt(1 - a_t^2)
    a = log_a.exp_()
    if reset:  # a_0 = 0, m_0 = 1
        a[:, 0] = 0.0
        multiplier[:, 0] = 1.0
    return gate_x, gate_a, softplus, a, multiplier


class FusedRGLRUFn(torch.autograd.Function):
    """The RG-LRU (gates and scan) with a hand-written backward that saves only v, h and h0.

    Forward: the same arithmetic as :meth:`RGLRU.gates` + the linear scan, without autograd.
    Backward: recompute the gates from v, run the reverse-time recurrence g_t = dh_t + a_{t+1} g_{t+1},
    then chain through b_t = m_t i_t v_t, log a_t = -c r_t softplus(Lambda) and the two block-diagonal
    gate linears. With m = sqrt(1 - a^2) and its derivative bounded as in :func:`sqrt_bounded_grad`,
    dm/dlog a = -a^2 / max(m, 1/(2 max_grad)), so dL/dlog a_t = g_t a_t (h_{t-1} - i_t v_t a_t / max(m_t, .)).
    """

    @staticmethod
    def forward(ctx, v, h0, reset, w_x, b_x, w_a, b_a, lam, c, max_grad):
        gate_x, _, _, a, multiplier = _fused_gates(v, reset, w_x, b_x, w_a, b_a, lam, c)
        h = _scan_forward_loop(a, v.to(a.dtype) * gate_x * multiplier, h0)  # (batch, T, W)
        ctx.c, ctx.max_grad, ctx.has_h0, ctx.reset = c, max_grad, h0 is not None, reset
        ctx.save_for_backward(v, h, h0 if h0 is not None else h.new_zeros(()), w_x, b_x, w_a, b_a, lam)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        v, h, h0, w_x, b_x, w_a, b_a, lam = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gate_x, gate_a, softplus, a, multiplier = _fused_gates(v, ctx.reset, w_x, b_x, w_a, b_a, lam, ctx.c)
        g = _scan_backward_loop(a, dh.to(h.dtype))  # gradient flowing into h_t, = dL/db_t
        h_prev = _previous_states(h, h0 if ctx.has_h0 else None)
        v_acc = v.to(h.dtype)
        g_m = g * multiplier
        d_pre_x = torch.ops.aten.sigmoid_backward(g_m * v_acc, gate_x).to(v.dtype)  # through b = v i m
        # dL/dlog a = g a (h_prev - v i a / max(m, 1/(2 max_grad))); zero at a reset, where a_0 = 0
        d_log_a = (v_acc * gate_x * a).div_(multiplier.clamp(min=0.5 / ctx.max_grad)).neg_().add_(h_prev)
        d_log_a.mul_(a).mul_(g)
        d_lam = None
        if needs[7]:  # log a = -c r softplus(Lambda), softplus' = sigmoid
            d_lam = ((d_log_a * gate_a).reshape(-1, h.shape[-1]).sum(0)
                     * (-ctx.c) * torch.sigmoid(lam.to(h.dtype))).to(lam.dtype)
        d_pre_a = torch.ops.aten.sigmoid_backward(d_log_a.mul_(-ctx.c * softplus), gate_a).to(v.dtype)
        dv_x, dw_x, db_x = block_diagonal_linear_backward(v, w_x, d_pre_x, (needs[0], needs[3], needs[4]))
        dv_a, dw_a, db_a = block_diagonal_linear_backward(v, w_a, d_pre_a, (needs[0], needs[5], needs[6]))
        dv = (g_m * gate_x).to(v.dtype).add_(dv_x).add_(dv_a) if needs[0] else None
        dh0 = a[:, 0] * g[:, 0] if ctx.has_h0 and needs[1] else None
        return dv, dh0, None, dw_x, db_x, dw_a, db_a, d_lam, None, None


# ----------------------------------------------------------------------------------------------
# RG-LRU


def ring_init_(lam: torch.Tensor, min_rad: float, max_rad: float, eps: float = 1e-8) -> torch.Tensor:
    """Fill Lambda so that a = sigmoid(-Lambda) has a^2 uniform on [min_rad^2, max_rad^2] (in place)."""
    with torch.no_grad():
        unif = torch.rand_like(lam)
        log_a = 0.5 * torch.log(unif * (max_rad ** 2 - min_rad ** 2) + min_rad ** 2 + eps)
        lam.copy_(torch.log(torch.expm1(-log_a)))  # inverse softplus of -log a
    return lam


class RGLRUState(NamedTuple):
    """h: (batch, width) fp32 last state; t: number of time steps seen (t = 0 means reset next)."""

    h: torch.Tensor
    t: int


def _check_width(x: torch.Tensor, width: int, name: str, ndim: int) -> None:
    if x.dim() != ndim or x.shape[-1] != width:
        shape = "(batch, T, {})" if ndim == 3 else "(batch, {})"
        raise ValueError(f"{name} must be shaped {shape.format(width)}, got {tuple(x.shape)}")


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit (Griffin, De et al. 2024, eq. 1-4) with a reset at t = 0.

    Args:
        width: number of channels W. num_heads: blocks of the block-diagonal gate linears (divides W).
        min_rad, max_rad: ring for the initial decay a = sigmoid(-Lambda), 0 < min_rad <= max_rad < 1.
        c: decay temperature (8 in Griffin).
        w_init_variance_scale: the gate weights are N(0, scale / W): recurrentgemma's ``BlockDiagonalLinear``
            counts the whole width W as fan-in (its [heads, W/h, W/h] kernel). ``scale=num_heads`` gives
            N(0, 1 / (W/h)), fan-in = block width, this library's initialisation before it matched.
        fused: True (default) runs gates and scan in :class:`FusedRGLRUFn`, which saves only v and h for
            the backward and recomputes the gates; False builds the plain autograd graph of :meth:`gates`
            and then calls :func:`linear_scan` with ``scan``. Both give the same outputs and gradients.
        scan: the linear-scan implementation of the unfused path, "custom" (default), "loop" or "doubling".

    ``forward(v, state=None) -> (y, state)`` on v (batch, T, W); ``state=None`` starts a new sequence
    (reset at its first step). ``step(v_t, state) -> (y_t, state)`` on v_t (batch, W).
    """

    def __init__(self, *, width: int, num_heads: int, min_rad: float = 0.5, max_rad: float = 0.999,
                 c: float = 8.0, scan: str = "custom", fused: bool = True, w_init_variance_scale: float = 1.0):
        super().__init__()
        if width < 1 or num_heads < 1 or width % num_heads:
            raise ValueError(f"width (>= 1) must be divisible by num_heads (>= 1), got width={width}, "
                             f"num_heads={num_heads}")
        if not 0.0 < min_rad <= max_rad < 1.0:
            raise ValueError(f"need 0 < min_rad <= max_rad < 1, got min_rad={min_rad}, max_rad={max_rad}")
        if c <= 0:
            raise ValueError(f"c must be > 0, got {c}")
        if scan not in SCAN_IMPLS:
            raise ValueError(f"scan must be one of {SCAN_IMPLS}, got {scan!r}")
        if w_init_variance_scale <= 0:
            raise ValueError(f"w_init_variance_scale must be > 0, got {w_init_variance_scale}")
        if fused and scan != "custom":
            raise ValueError(f"scan={scan!r} applies to the unfused path only: pass fused=False with it")
        self.width, self.num_heads, self.min_rad, self.max_rad, self.c, self.scan, self.fused = (
            width, num_heads, min_rad, max_rad, c, scan, fused)
        self.w_init_variance_scale = w_init_variance_scale
        self.input_gate = BlockDiagonalLinear(width, width, num_heads, bias=True)
        self.a_gate = BlockDiagonalLinear(width, width, num_heads, bias=True)
        self.a_param = nn.Parameter(torch.empty(width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(self.w_init_variance_scale / self.width)  # Flax variance_scaling: fan_in = heads * W/h
        for gate in (self.input_gate, self.a_gate):
            nn.init.normal_(gate.weight, std=std)
            nn.init.zeros_(gate.bias)
        ring_init_(self.a_param, self.min_rad, self.max_rad)

    def gates(self, v: torch.Tensor, reset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decay a_t and normalised input b_t = m_t i_t v_t, both (batch, T, W) in at least fp32; reset: (T,) bool."""
        acc = torch.promote_types(v.dtype, torch.float32)  # the recurrence runs in fp32 (or fp64)
        gate_x = torch.sigmoid(self.input_gate(v)).to(acc)
        gate_a = torch.sigmoid(self.a_gate(v)).to(acc)
        v = v.to(acc)
        log_a = -self.c * gate_a * F.softplus(self.a_param.to(acc))
        multiplier = sqrt_bounded_grad(-torch.expm1(2.0 * log_a))  # sqrt(1 - a_t^2)
        keep = (~reset).to(v.dtype)[None, :, None]  # (1, T, 1): 0 at a reset
        a = torch.exp(log_a) * keep
        multiplier = multiplier * keep + (1.0 - keep)
        return a, v * gate_x * multiplier

    def forward(self, v: torch.Tensor, state: RGLRUState | None = None) -> tuple[torch.Tensor, RGLRUState]:
        _check_width(v, self.width, "v", 3)
        t0 = 0 if state is None else state.t
        positions = torch.arange(t0, t0 + v.shape[1], device=v.device)
        h0 = None if state is None or t0 == 0 else state.h
        if self.fused:
            h = FusedRGLRUFn.apply(v, h0, t0 == 0, self.input_gate.weight, self.input_gate.bias, self.a_gate.weight,
                                   self.a_gate.bias, self.a_param, self.c, MAX_SQRT_GRADIENT)  # (batch, T, W)
        else:
            a, b = self.gates(v, positions == 0)
            h = linear_scan(a, b, h0, impl=self.scan)  # (batch, T, W) fp32
        return h.to(v.dtype), RGLRUState(h[:, -1], t0 + v.shape[1])

    def step(self, v_t: torch.Tensor, state: RGLRUState | None = None) -> tuple[torch.Tensor, RGLRUState]:
        _check_width(v_t, self.width, "v_t", 2)
        y, state = self.forward(v_t.unsqueeze(1), state)  # (batch, 1, W)
        return y[:, 0], state

    def extra_repr(self) -> str:
        return (f"width={self.width}, num_heads={self.num_heads}, min_rad={self.min_rad}, "
                f"max_rad={self.max_rad}, c={self.c}, fused={self.fused}, scan={self.scan!r}")


# ----------------------------------------------------------------------------------------------
# Griffin recurrent block and TRecViT's temporal residual block


class RecurrentState(NamedTuple):
    """State of a recurrent block: conv (batch, taps-1, W) inputs, h (batch, W) fp32, t steps seen."""

    conv: torch.Tensor
    h: torch.Tensor
    t: int

    def nbytes(self) -> int:
        return self.conv.nbytes + self.h.nbytes


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + scale), scale initialised at 0 (recurrentgemma's RMSNorm)."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.scale)


class RecurrentBlock(nn.Module):
    """Griffin's recurrent block: Linear_out( RG-LRU(Conv1D(Linear_x x)) * GELU(Linear_y x) ).

    Args:
        width: model width D. lru_width: recurrent width W (TRecViT: 2D). num_heads: gate blocks.
        conv_width: taps of the causal Conv1D (TRecViT: 4). min_rad, max_rad, c, fused, scan: see :class:`RGLRU`.
        conv_init_scale: the Conv1D weight is N(0, conv_init_scale / conv_width); recurrentgemma's 0.01 by default.
        depth: number of layers in the model (Linear_out is initialised with variance (2/depth)/W).
    """

    def __init__(self, *, width: int, lru_width: int, num_heads: int, conv_width: int = 4,
                 min_rad: float = 0.5, max_rad: float = 0.999, c: float = 8.0, depth: int = 12,
                 scan: str = "custom", fused: bool = True, conv_init_scale: float = 0.01):
        super().__init__()
        if width < 1 or lru_width < 1 or depth < 1:
            raise ValueError(f"width, lru_width and depth must be >= 1, got {width}, {lru_width}, {depth}")
        if conv_init_scale <= 0:
            raise ValueError(f"conv_init_scale must be > 0, got {conv_init_scale}")
        self.width, self.lru_width = width, lru_width
        self.linear_y = nn.Linear(width, lru_width)
        self.linear_x = nn.Linear(width, lru_width)
        self.conv1d = CausalConv1D(width=lru_width, taps=conv_width, init_variance_scale=conv_init_scale)
        self.rg_lru = RGLRU(width=lru_width, num_heads=num_heads, min_rad=min_rad, max_rad=max_rad, c=c,
                            scan=scan, fused=fused)
        self.linear_out = nn.Linear(lru_width, width)
        for linear, scale in ((self.linear_y, 1.0), (self.linear_x, 1.0), (self.linear_out, 2.0 / depth)):
            nn.init.normal_(linear.weight, std=math.sqrt(scale / linear.in_features))
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        _check_width(x, self.width, "x", 3)
        gate = F.gelu(self.linear_y(x), approximate="tanh")
        conv_state = None if state is None else state.conv
        lru_state = None if state is None else RGLRUState(state.h, state.t)
        u, conv_state = self.conv1d(self.linear_x(x), conv_state)
        r, lru_state = self.rg_lru(u, lru_state)
        return self.linear_out(r * gate), RecurrentState(conv_state, lru_state.h, lru_state.t)

    def step(self, x_t: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        _check_width(x_t, self.width, "x_t", 2)
        y, state = self.forward(x_t.unsqueeze(1), state)  # (batch, 1, D)
        return y[:, 0], state


class TemporalBlock(nn.Module):
    """TRecViT's temporal mixer (Griffin residual block without MLP): x + RecurrentBlock(RMSNorm(x)).

    Runs on (batch * tokens, T, D) "temporal tubes"; same arguments as :class:`RecurrentBlock`.
    """

    def __init__(self, **kwargs):
        super().__init__()
        self.norm = RMSNorm(kwargs["width"])
        self.block = RecurrentBlock(**kwargs)

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        y, state = self.block(self.norm(x), state)
        return x + y, state

    def step(self, x_t: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        y, state = self.block.step(self.norm(x_t), state)
        return x_t + y, state
