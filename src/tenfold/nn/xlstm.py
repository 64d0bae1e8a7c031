"""xLSTM in plain PyTorch (Beck et al., 2024, "xLSTM: Extended Long Short-Term Memory"), the backbone
of LRAM (Schmied et al., 2024). Three formulations of the mLSTM cell, all stabilised in log space and
all taking and returning the state (C, n, m):

    log f_t = logsigmoid(f~_t),   i_t = exp(i~_t)                       (scalar gates per head)
    m_t  = max(log f_t + m_{t-1}, i~_t)                                   (stabiliser)
    C_t  = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(i~_t - m_t) v_t k_t^T / sqrt(d)
    n_t  = exp(log f_t + m_{t-1} - m_t) n_{t-1} + exp(i~_t - m_t) k_t / sqrt(d)
    h_t  = C_t q_t / max(|n_t^T q_t|, exp(-m_t))

C and n are stored scaled by exp(-m_t), so h_t does not depend on the stabiliser. A fresh state has
C = 0, n = 0 and m = -inf, which makes the recurrence agree with the parallel form exactly.

- ``mlstm_recurrent``: the loop above, one step at a time (inference).
- ``mlstm_parallel``: the whole sequence at once through the decay matrix
  log D_ts = sum_{j=s+1..t} log f_j + i~_s (s <= t), O(S^2) memory (training).
- ``mlstm_chunkwise``: the parallel form inside chunks, the state carried between chunks (linear cost).

The sLSTM cell (scalar memory, recurrent connections) and the mLSTM / sLSTM residual blocks and the
stack follow the NX-AI ``xlstm`` package's layout (see docs/methods/lram.md).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.nn.blockdiag import BlockDiagonalLinear, block_diagonal_matmul, small_block_diagonal_linear
from tenfold.nn.conv import CausalConv1D, causal_conv_step


class MLSTMState(NamedTuple):
    """mLSTM cell state: C (batch, heads, dv, dk), n (batch, heads, dk), m (batch, heads)."""

    C: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


def mlstm_initial_state(q: torch.Tensor, v: torch.Tensor) -> MLSTMState:
    """The empty state for q shaped (batch, heads, seq, dk) and v shaped (batch, heads, seq, dv)."""
    batch, heads, _, dk = q.shape
    dv = v.shape[-1]
    zeros = dict(dtype=q.dtype, device=q.device)
    return MLSTMState(torch.zeros(batch, heads, dv, dk, **zeros), torch.zeros(batch, heads, dk, **zeros),
                      torch.full((batch, heads), float("-inf"), **zeros))


def _check_cell_inputs(q, k, v, i_pre, f_pre) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k must be (batch, heads, seq, dk) and v (batch, heads, seq, dv); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if i_pre.shape != q.shape[:3] or f_pre.shape != q.shape[:3]:
        raise ValueError(f"gate pre-activations must be (batch, heads, seq) = {tuple(q.shape[:3])}, got "
                         f"{tuple(i_pre.shape)} and {tuple(f_pre.shape)}")


def mlstm_step(q_t, k_t, v_t, i_t, f_t, state: MLSTMState) -> tuple[torch.Tensor, MLSTMState]:
    """One recurrent step: q_t, k_t (batch, heads, dk), v_t (batch, heads, dv), i_t, f_t (batch, heads).

    Written with few tensor ops, since at batch 1 a step costs per-op overhead: the decay
    exp(log f_t + m_{t-1} - m_t), the input gain exp(i~_t - m_t) and the denominator floor exp(-m_t)
    come from one exp, k's 1/sqrt(d) rides on the multiply-adds that update C and n, and in-place
    ops act only on tensors made here (autograd through steps works)."""
    C, n, m = state
    carried = F.logsigmoid(f_t).add_(m)  # log f_t + m_{t-1}
    m_new = torch.maximum(carried, i_t)
    logs = torch.stack([carried, i_t, torch.zeros_like(m_new)], -1)  # (batch, heads, 3)
    scales = logs.sub_(m_new.unsqueeze(-1)).exp_().unsqueeze(-1)  # decay, input gain, exp(-m_t): (batch, heads, 3, 1)
    decay, gain, floor = scales.unbind(-2)  # (batch, heads, 1) each
    scale = 1.0 / math.sqrt(k_t.shape[-1])
    C = (decay.unsqueeze(-1) * C).addcmul_((gain * v_t).unsqueeze(-1), k_t.unsqueeze(-2), value=scale)
    n = (decay * n).addcmul_(gain, k_t, value=scale)
    numerator = (C * q_t.unsqueeze(-2)).sum(-1)  # (batch, heads, dv)
    denominator = torch.maximum((n * q_t).sum(-1, keepdim=True).abs(), floor)  # (batch, heads, 1)
    return numerator / denominator, MLSTMState(C, n, m_new)


def mlstm_recurrent(q, k, v, i_pre, f_pre, state: MLSTMState | None = None) -> tuple[torch.Tensor, MLSTMState]:
    """The mLSTM over a sequence by stepping: returns h (batch, heads, seq, dv) and the final state."""
    _check_cell_inputs(q, k, v, i_pre, f_pre)
    state = state if state is not None else mlstm_initial_state(q, v)
    outputs = []
    for t in range(q.shape[2]):
        h_t, state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i_pre[:, :, t], f_pre[:, :, t], state)
        outputs.append(h_t)
    return torch.stack(outputs, dim=2), state


def _mlstm_chunk(q, k, v, i_pre, f_pre, state: MLSTMState) -> tuple[torch.Tensor, MLSTMState]:
    """The parallel form on one chunk of length L, starting from ``state``."""
    C, n, m = state
    length, dk = q.shape[2], q.shape[3]
    k = k / math.sqrt(dk)
    b = F.logsigmoid(f_pre).cumsum(-1)  # (batch, heads, L): log-decay from the chunk start to tau
    intra = b.unsqueeze(-1) - b.unsqueeze(-2) + i_pre.unsqueeze(-2)  # (batch, heads, L_tau, L_sigma)
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    intra = intra.masked_fill(~causal, float("-inf"))
    inter = b + m.unsqueeze(-1)  # (batch, heads, L): log-weight of the carried state at tau
    m_row = torch.maximum(inter, intra.amax(-1))  # equals the recurrent m_tau
    weights = (q @ k.transpose(-1, -2)) * torch.exp(intra - m_row.unsqueeze(-1))  # (batch, heads, L, L)
    carried = torch.exp(inter - m_row)  # (batch, heads, L)
    numerator = weights @ v + carried.unsqueeze(-1) * (q @ C.transpose(-1, -2))  # (batch, heads, L, dv)
    denominator = weights.sum(-1) + carried * (q * n.unsqueeze(-2)).sum(-1)
    h = numerator / torch.maximum(denominator.abs(), torch.exp(-m_row)).unsqueeze(-1)
    # the state at the end of the chunk
    to_end = b[..., -1:] - b + i_pre  # (batch, heads, L): log-weight of step sigma in the final state
    m_new = torch.maximum(b[..., -1] + m, to_end.amax(-1))
    keep = torch.exp(b[..., -1] + m - m_new)  # (batch, heads)
    gain = torch.exp(to_end - m_new.unsqueeze(-1))  # (batch, heads, L)
    C_new = keep[..., None, None] * C + (v * gain.unsqueeze(-1)).transpose(-1, -2) @ k
    n_new = keep.unsqueeze(-1) * n + (k * gain.unsqueeze(-1)).sum(-2)
    return h, MLSTMState(C_new, n_new, m_new)


def mlstm_parallel(q, k, v, i_pre, f_pre, state: MLSTMState | None = None) -> tuple[torch.Tensor, MLSTMState]:
    """The mLSTM over the whole sequence at once (the decay matrix D); returns h and the final state."""
    _check_cell_inputs(q, k, v, i_pre, f_pre)
    return _mlstm_chunk(q, k, v, i_pre, f_pre, state if state is not None else mlstm_initial_state(q, v))


def mlstm_chunkwise(q, k, v, i_pre, f_pre, chunk_size: int = 64,
                    state: MLSTMState | None = None) -> tuple[torch.Tensor, MLSTMState]:
    """The mLSTM in chunks of ``chunk_size`` (parallel inside, state carried between): linear cost."""
    _check_cell_inputs(q, k, v, i_pre, f_pre)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    state = state if state is not None else mlstm_initial_state(q, v)
    outputs = []
    for start in range(0, q.shape[2], chunk_size):
        part = slice(start, start + chunk_size)
        h, state = _mlstm_chunk(q[:, :, part], k[:, :, part], v[:, :, part], i_pre[:, :, part],
                                f_pre[:, :, part], state)
        outputs.append(h)
    return torch.cat(outputs, dim=2), state


# ----------------------------------------------------------------------------------------------
# sLSTM


class SLSTMState(NamedTuple):
    """sLSTM cell state, each (batch, width): h output, c cell, n normaliser, m stabiliser."""

    h: torch.Tensor
    c: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


class SLSTMCell(nn.Module):
    """The stabilised sLSTM cell with exponential input gate and per-head recurrent matrices.

        (i~, f~, z~, o~) = W x_t + R h_{t-1} + b        R block-diagonal over heads, initialised to 0
        m_t = max(logsigmoid(f~) + m_{t-1}, i~);  i' = exp(i~ - m_t);  f' = exp(logsigmoid(f~) + m_{t-1} - m_t)
        c_t = f' c_{t-1} + i' tanh(z~);  n_t = f' n_{t-1} + i';  h_t = sigmoid(o~) c_t / n_t

    ``forward`` takes the input projections W x_t + b already computed, shaped (batch, seq, 4, width)
    in gate order (i, f, z, o), so the block can feed i, f from the convolution and z, o from the raw input.
    """

    def __init__(self, *, width: int, num_heads: int = 4):
        super().__init__()
        if width < 1 or num_heads < 1 or width % num_heads:
            raise ValueError(f"width ({width}) must be a positive multiple of num_heads ({num_heads})")
        self.width, self.num_heads = width, num_heads
        head = width // num_heads
        self.recurrent = nn.Parameter(torch.zeros(4, num_heads, head, head))  # R per gate and head

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> SLSTMState:
        zeros = torch.zeros(batch, self.width, device=device, dtype=dtype)
        return SLSTMState(zeros, zeros, zeros, torch.full_like(zeros, float("-inf")))

    def step(self, pre_t: torch.Tensor, state: SLSTMState | None = None) -> tuple[torch.Tensor, SLSTMState]:
        """pre_t: (batch, 4, width) input projections of one step."""
        if pre_t.dim() != 3 or pre_t.shape[1:] != (4, self.width):
            raise ValueError(f"expected pre-activations shaped (batch, 4, {self.width}), got {tuple(pre_t.shape)}")
        batch = pre_t.shape[0]
        h, c, n, m = state if state is not None else self.initial_state(batch, pre_t.device, pre_t.dtype)
        h_heads = h.view(batch, 1, self.num_heads, 1, -1)  # (batch, 1, heads, 1, head)
        recurrent = (h_heads @ self.recurrent.transpose(-1, -2)).reshape(batch, 4, self.width)  # (batch, 4, width)
        i_pre, f_pre, z_pre, o_pre = (pre_t + recurrent).unbind(1)
        log_f = F.logsigmoid(f_pre)
        m_new = torch.maximum(log_f + m, i_pre)
        i_gate, f_gate = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
        c = f_gate * c + i_gate * torch.tanh(z_pre)
        n = f_gate * n + i_gate
        h = torch.sigmoid(o_pre) * c / n
        return h, SLSTMState(h, c, n, m_new)

    def forward(self, pre: torch.Tensor, state: SLSTMState | None = None) -> tuple[torch.Tensor, SLSTMState]:
        """pre: (batch, seq, 4, width) -> h (batch, seq, width) and the final state."""
        outputs = []
        for t in range(pre.shape[1]):
            h, state = self.step(pre[:, t], state)
            outputs.append(h)
        return torch.stack(outputs, dim=1), state


# ----------------------------------------------------------------------------------------------
# blocks and the stack


class MultiHeadNorm(nn.Module):
    """Per-head layer normalisation (GroupNorm with one group per head), as after xLSTM cells."""

    def __init__(self, width: int, num_heads: int, eps: float = 1e-5):
        super().__init__()
        self.num_heads, self.eps = num_heads, eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., width), normalised within each head's slice."""
        heads = h.unflatten(-1, (self.num_heads, -1))  # (..., heads, head_dim)
        heads = F.layer_norm(heads, heads.shape[-1:], eps=self.eps)
        return heads.flatten(-2) * self.weight  # (..., width)


def _small_init_(weight: torch.Tensor, dim: int) -> None:
    """NX-AI ``small_init_init_`` (Nguyen & Salazar, 2019): N(0, 2 / (5 dim)), dim = the model width."""
    nn.init.normal_(weight, std=math.sqrt(2.0 / (5.0 * dim)))


def _wang_init_(weight: torch.Tensor, dim: int, num_blocks: int) -> None:
    """NX-AI ``wang_init_``: N(0, (2 / (num_blocks sqrt(dim)))^2) for the projections back to the residual."""
    nn.init.normal_(weight, std=2.0 / (num_blocks * math.sqrt(dim)))


def _torch_conv_init_(conv: CausalConv1D) -> None:
    """The NX-AI causal conv is a depthwise ``torch.nn.Conv1d`` with its default init: weight and bias
    U(-1/sqrt(taps), 1/sqrt(taps)) (fan-in = taps per channel)."""
    bound = 1.0 / math.sqrt(conv.taps)
    with torch.no_grad():
        conv.weight.uniform_(-bound, bound)
        conv.bias.uniform_(-bound, bound)


def round_up_width(width: float, multiple: int = 64) -> int:
    """NX-AI ``UpProjConfigMixin``: an up-projected width rounded up to a multiple of ``multiple`` (64)."""
    return int(math.ceil(width / multiple) * multiple)


def powerlaw_forget_bias(head_dim: int, block_idx: int, num_blocks: int) -> torch.Tensor:
    """NX-AI sLSTM ``bias_init="powerlaw_blockdependent"`` (LRAM's configs): per head, channel j of
    head_dim gets 5 - 12 (j / (head_dim - 1))^(0.3 + 1.3 block_idx / (num_blocks - 1)), so forget
    gates span from mostly open (5) to mostly closed (-7), later blocks more open."""
    ratio = block_idx / (num_blocks - 1) if num_blocks > 1 else 0.0
    positions = torch.linspace(0.0, 1.0, head_dim) if head_dim > 1 else torch.zeros(1)
    return 5.0 - 12.0 * positions ** (0.3 + 1.3 * ratio)


class MLSTMBlockState(NamedTuple):
    conv: torch.Tensor  # (batch, taps-1, inner)
    cell: MLSTMState


class MLSTMBlock(nn.Module):
    """Pre-LN residual mLSTM block (Beck et al., 2024, Fig. 10; NX-AI ``mLSTMBlock`` layout):

        x_in, z = split(W_up LN(x));  c = SiLU(conv(x_in));  q = BD_q c, k = BD_k c, v = BD_v x_in
        (i~, f~) = W_gates [q; k; v];  h = mLSTM(q, k, v, i~, f~)
        y = x + W_down((GroupNorm(h) + skip * c) * SiLU(z))

    ``backend`` picks the cell formulation used by ``forward``: "parallel" or "chunkwise". The inner
    width is proj_factor * dim rounded up to a multiple of ``round_inner_to`` (NX-AI: 64; 1 gives
    ceil(proj_factor * dim)). Initialisation as NX-AI's ``mLSTMLayer``: W_up and q, k, v small-init
    N(0, 2/(5 dim)), W_down Wang, the conv torch's ``Conv1d`` default, gate weights 0, input-gate bias
    N(0, 0.1), forget-gate bias linspace(3, 6) over heads.
    """

    def __init__(self, *, dim: int, num_heads: int = 4, proj_factor: float = 2.0, conv_taps: int = 4,
                 qkv_block_size: int = 4, backend: str = "parallel", chunk_size: int = 64, num_blocks: int = 1,
                 round_inner_to: int = 64):
        super().__init__()
        if round_inner_to < 1:
            raise ValueError(f"round_inner_to must be >= 1, got {round_inner_to}")
        inner = round_up_width(proj_factor * dim, round_inner_to)
        if dim < 1 or num_heads < 1 or inner % num_heads or inner % qkv_block_size:
            raise ValueError(f"need inner width {inner} (dim*proj_factor) divisible by num_heads ({num_heads}) "
                             f"and by qkv_block_size ({qkv_block_size})")
        if backend not in ("parallel", "chunkwise"):
            raise ValueError(f"backend must be 'parallel' or 'chunkwise', got {backend!r}")
        self.dim, self.inner, self.num_heads = dim, inner, num_heads
        self.backend, self.chunk_size = backend, chunk_size
        self.norm = nn.LayerNorm(dim, bias=False)
        self.up = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = CausalConv1D(width=inner, taps=conv_taps)
        blocks = inner // qkv_block_size
        self.q, self.k, self.v = (BlockDiagonalLinear(inner, inner, blocks, bias=False) for _ in range(3))
        self.gates = nn.Linear(3 * inner, 2 * num_heads)  # input and forget gate pre-activations per head
        self.cell_norm = MultiHeadNorm(inner, num_heads)
        self.skip = nn.Parameter(torch.ones(inner))
        self.down = nn.Linear(inner, dim, bias=False)
        self._init(num_blocks)

    def _init(self, num_blocks: int) -> None:
        _small_init_(self.up.weight, self.dim)
        for proj in (self.q, self.k, self.v):  # NX-AI small-inits q, k, v with the model width, not the block's
            _small_init_(proj.weight, self.dim)
        _torch_conv_init_(self.conv)
        _wang_init_(self.down.weight, self.dim, num_blocks)
        with torch.no_grad():
            self.gates.weight.zero_()
            self.gates.bias[: self.num_heads].normal_(0.0, 0.1)  # input gate
            self.gates.bias[self.num_heads:] = torch.linspace(3.0, 6.0, self.num_heads)  # forget gate

    def _qkv_gates(self, conv: torch.Tensor, x_in: torch.Tensor):
        """conv, x_in (..., inner) -> q, k, v (..., inner) and gate pre-activations i~, f~ (..., heads)."""
        q, k, v = (small_block_diagonal_linear(inputs, layer.weight, layer.bias)
                   for layer, inputs in ((self.q, conv), (self.k, conv), (self.v, x_in)))
        i_pre, f_pre = self.gates(torch.cat([q, k, v], -1)).chunk(2, dim=-1)
        return q, k, v, i_pre, f_pre

    def _project(self, x: torch.Tensor, conv_state):
        """x: (batch, seq, dim) -> q, k, v (batch, heads, seq, head), gates (batch, heads, seq), extras."""
        x_in, z = self.up(self.norm(x)).chunk(2, dim=-1)
        conv, conv_state = self.conv(x_in, conv_state)
        conv = F.silu(conv)
        q, k, v, i_pre, f_pre = self._qkv_gates(conv, x_in)
        split = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (batch, heads, seq, head)
        return split(q), split(k), split(v), i_pre.transpose(1, 2), f_pre.transpose(1, 2), conv, z, conv_state

    def _output(self, x, h, conv, z):
        h = h.transpose(1, 2).flatten(-2)  # (batch, seq, inner)
        return x + self.down(torch.addcmul(self.cell_norm(h), self.skip, conv) * F.silu(z))

    def forward(self, x: torch.Tensor, state: MLSTMBlockState | None = None):
        """x: (batch, seq, dim) -> (y, state)."""
        q, k, v, i_pre, f_pre, conv, z, conv_state = self._project(x, state.conv if state else None)
        cell_state = state.cell if state else None
        if self.backend == "parallel":
            h, cell_state = mlstm_parallel(q, k, v, i_pre, f_pre, cell_state)
        else:
            h, cell_state = mlstm_chunkwise(q, k, v, i_pre, f_pre, self.chunk_size, cell_state)
        return self._output(x, h, conv, z), MLSTMBlockState(conv_state, cell_state)

    def step(self, x_t: torch.Tensor, state: MLSTMBlockState | None = None):
        """x_t: (batch, dim) -> (y_t, state), the recurrent form (constant cost per step):
        :func:`mlstm_block_step` with this block's :meth:`step_weights`."""
        return mlstm_block_step(self.step_weights(), x_t, state)

    def step_weights(self) -> MLSTMStepWeights:
        """The parameters :func:`mlstm_block_step` reads, gathered once."""
        return MLSTMStepWeights(
            num_heads=self.num_heads, norm_weight=self.norm.weight, norm_eps=self.norm.eps, up=self.up.weight,
            conv_weight=self.conv.weight, conv_bias=self.conv.bias, qkv=(self.q.weight, self.k.weight, self.v.weight),
            gates_weight=self.gates.weight, gates_bias=self.gates.bias, cell_norm_weight=self.cell_norm.weight,
            cell_norm_eps=self.cell_norm.eps, skip=self.skip, down=self.down.weight)


class MLSTMStepWeights(NamedTuple):
    """An :class:`MLSTMBlock`'s parameters as its recurrent step reads them, gathered once: at batch 1 a
    block's step costs ~150 µs and an ``nn.Module`` attribute lookup ~1 µs, so looking up its 14
    parameters on every step costs a fifth of the step. The tensors are the Parameters themselves, so
    in-place updates (optimizer steps, ``load_state_dict``) show through; gather again after assigning
    new Parameters or moving the module to another device."""

    num_heads: int
    norm_weight: torch.Tensor  # (dim,)
    norm_eps: float
    up: torch.Tensor  # (2 inner, dim)
    conv_weight: torch.Tensor  # (taps, inner)
    conv_bias: torch.Tensor  # (inner,)
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # q, k, v block weights, (blocks, out_b, in_b) each
    gates_weight: torch.Tensor  # (2 heads, 3 inner)
    gates_bias: torch.Tensor  # (2 heads,)
    cell_norm_weight: torch.Tensor  # (inner,)
    cell_norm_eps: float
    skip: torch.Tensor  # (inner,)
    down: torch.Tensor  # (dim, inner)


def mlstm_block_step(w: MLSTMStepWeights, x_t: torch.Tensor, state: MLSTMBlockState | None = None):
    """One token through an :class:`MLSTMBlock` with weights ``w``: x_t (batch, dim) -> (y_t, state).

    The equations of ``MLSTMBlock.forward`` on one token, written for few tensor ops (at batch 1 a
    step costs per-op overhead): q, k, v in one batched product of their stacked block weights, their
    gates from the same tensor, the per-head norm as one group norm, the residual in the down
    projection's matmul. Equal to ``forward`` up to float rounding (tested)."""
    batch, heads = x_t.shape[0], w.num_heads
    normed = F.layer_norm(x_t, w.norm_weight.shape, w.norm_weight, None, w.norm_eps)
    x_in, z = F.linear(normed, w.up).chunk(2, dim=-1)  # (batch, inner) each
    taps, inner = w.conv_weight.shape
    conv_state = state.conv if state else x_in.new_zeros(batch, taps - 1, inner)
    conv, conv_state = causal_conv_step(x_in, conv_state, w.conv_weight, w.conv_bias)
    conv = F.silu(conv)
    qkv_weight = torch.cat(w.qkv)  # (3 blocks, out_b, in_b); no biases
    qkv_in = torch.stack([conv, conv, x_in], 1).view(batch, qkv_weight.shape[0], -1)  # (batch, 3 blocks, in_b)
    qkv = block_diagonal_matmul(qkv_in, qkv_weight).reshape(batch, 3, inner)  # (batch, 3, inner)
    i_t, f_t = F.linear(qkv.flatten(1), w.gates_weight, w.gates_bias).chunk(2, dim=-1)  # (batch, heads)
    q, k, v = qkv.unflatten(-1, (heads, -1)).unbind(1)  # (batch, 3, heads, head) -> 3 x (batch, heads, head)
    cell_state = state.cell if state else mlstm_initial_state(q.unsqueeze(2), v.unsqueeze(2))
    h, cell_state = mlstm_step(q, k, v, i_t, f_t, cell_state)
    h = torch.group_norm(h.flatten(1), heads, w.cell_norm_weight, None, w.cell_norm_eps)  # (batch, inner)
    y = torch.addmm(x_t, torch.addcmul(h, w.skip, conv) * F.silu(z), w.down.t())
    return y, MLSTMBlockState(conv_state, cell_state)


class SLSTMBlockState(NamedTuple):
    conv: torch.Tensor  # (batch, taps-1, dim)
    cell: SLSTMState


class SLSTMBlock(nn.Module):
    """Pre-LN residual sLSTM block with a gated-GELU feed-forward (Beck et al., 2024, Fig. 9):

        c = SiLU(conv(LN x));  (i~, f~) = W_if c,  (z~, o~) = W_zo LN x   (block-diagonal per head)
        x = x + GroupNorm(sLSTM(i~, f~, z~, o~));   y = x + W_2 (GELU(W_g LN x) * W_u LN x)

    Initialisation as NX-AI's ``sLSTMLayer`` with LRAM's ``bias_init="powerlaw_blockdependent"``: the gate
    projections small-init N(0, 2/(5 dim)) without a bias of their own, the cell bias 0 except the forget
    gate's (:func:`powerlaw_forget_bias` of ``block_idx`` of ``num_blocks``; held here in ``gate_if.bias``),
    recurrent matrices 0, the conv torch's ``Conv1d`` default. The FFN width is ffn_factor * dim rounded
    up to a multiple of 64, as NX-AI's ``FeedForwardConfig``.
    """

    def __init__(self, *, dim: int, num_heads: int = 4, conv_taps: int = 4, ffn_factor: float = 1.3,
                 num_blocks: int = 1, block_idx: int = 0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if not 0 <= block_idx < num_blocks:
            raise ValueError(f"block_idx must lie in [0, num_blocks={num_blocks}), got {block_idx}")
        self.dim, self.num_heads = dim, num_heads
        self.norm = nn.LayerNorm(dim, bias=False)
        self.conv = CausalConv1D(width=dim, taps=conv_taps)
        self.gate_if = BlockDiagonalLinear(dim, 2 * dim, num_heads, bias=True)
        self.gate_zo = BlockDiagonalLinear(dim, 2 * dim, num_heads, bias=True)
        self.cell = SLSTMCell(width=dim, num_heads=num_heads)
        self.cell_norm = MultiHeadNorm(dim, num_heads)
        hidden = round_up_width(ffn_factor * dim)
        self.ffn_norm = nn.LayerNorm(dim, bias=False)
        self.ffn_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.ffn_down = nn.Linear(hidden, dim, bias=False)
        self._init(num_blocks, block_idx)

    def _init(self, num_blocks: int, block_idx: int) -> None:
        dim = self.dim
        _small_init_(self.ffn_up.weight, dim)
        _wang_init_(self.ffn_down.weight, dim, num_blocks)
        _torch_conv_init_(self.conv)
        for gates in (self.gate_if, self.gate_zo):
            _small_init_(gates.weight, dim)
        with torch.no_grad():  # gate order (i, f | z, o): only the forget gate has a non-zero bias
            self.gate_if.bias.zero_()
            self.gate_zo.bias.zero_()
            forget = powerlaw_forget_bias(dim // self.num_heads, block_idx, num_blocks)  # (head_dim,)
            self.gate_if.bias.view(self.num_heads, 2, dim // self.num_heads)[:, 1] = forget  # every head's f half

    def _per_gate(self, out: torch.Tensor) -> torch.Tensor:
        """Block h of a two-gate projection holds head h's (gate a, gate b) units: (..., 2 dim) laid out
        (heads, 2, head_dim) -> (..., 2, dim), so each head's gates see only that head's inputs, as NX-AI's
        head-wise gate projections."""
        heads = out.unflatten(-1, (self.num_heads, 2, self.dim // self.num_heads))  # (..., heads, 2, head_dim)
        return heads.transpose(-3, -2).flatten(-2)  # (..., 2, dim)

    def _cell_inputs(self, x: torch.Tensor, conv_state):
        """x: (batch, seq, dim) -> pre-activations (batch, seq, 4, dim) in gate order (i, f, z, o)."""
        normed = self.norm(x)
        conv, conv_state = self.conv(normed, conv_state)
        i_f = self._per_gate(self.gate_if(F.silu(conv)))  # (batch, seq, 2, dim)
        z_o = self._per_gate(self.gate_zo(normed))  # (batch, seq, 2, dim)
        return torch.cat([i_f, z_o], dim=-2), conv_state

    def _finish(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = x + self.cell_norm(h)
        gate, up = self.ffn_up(self.ffn_norm(x)).chunk(2, dim=-1)
        return x + self.ffn_down(F.gelu(gate) * up)

    def forward(self, x: torch.Tensor, state: SLSTMBlockState | None = None):
        pre, conv_state = self._cell_inputs(x, state.conv if state else None)
        h, cell_state = self.cell(pre, state.cell if state else None)
        return self._finish(x, h), SLSTMBlockState(conv_state, cell_state)

    def step(self, x_t: torch.Tensor, state: SLSTMBlockState | None = None):
        pre, conv_state = self._cell_inputs(x_t.unsqueeze(1), state.conv if state else None)
        h_t, cell_state = self.cell.step(pre[:, 0], state.cell if state else None)
        return self._finish(x_t, h_t), SLSTMBlockState(conv_state, cell_state)


class XLSTMStack(nn.Module):
    """A stack of mLSTM blocks with sLSTM blocks at the indices ``slstm_at`` (xLSTM[a:b]), then a
    final LayerNorm. ``forward(x, state) -> (y, state)`` trains in parallel; ``step(x_t, state)``
    runs the same network recurrently at constant cost per token."""

    def __init__(self, *, dim: int, num_blocks: int, num_heads: int = 4, slstm_at: tuple[int, ...] = (),
                 backend: str = "parallel", chunk_size: int = 64, proj_factor: float = 2.0):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if any(not 0 <= i < num_blocks for i in slstm_at):
            raise ValueError(f"slstm_at indices must lie in [0, {num_blocks}), got {slstm_at}")
        self.dim = dim
        self.blocks = nn.ModuleList(
            SLSTMBlock(dim=dim, num_heads=num_heads, num_blocks=num_blocks, block_idx=i) if i in slstm_at else
            MLSTMBlock(dim=dim, num_heads=num_heads, proj_factor=proj_factor, backend=backend,
                       chunk_size=chunk_size, num_blocks=num_blocks)
            for i in range(num_blocks))
        self.norm = nn.LayerNorm(dim, bias=False)

    def forward(self, x: torch.Tensor, state: list | None = None):
        """x: (batch, seq, dim) -> (y, per-block states)."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x shaped (batch, seq, {self.dim}), got {tuple(x.shape)}")
        states = []
        for i, block in enumerate(self.blocks):
            x, block_state = block(x, state[i] if state else None)
            states.append(block_state)
        return self.norm(x), states

    def step(self, x_t: torch.Tensor, state: list | None = None):
        """x_t: (batch, dim) -> (y_t, per-block states). For a loop of steps, :meth:`stepper` is faster."""
        return self.stepper()(x_t, state)

    def stepper(self) -> XLSTMStepper:
        """This stack's recurrent step with its parameters gathered once (see :class:`XLSTMStepper`)."""
        return XLSTMStepper(self)


class XLSTMStepper:
    """The recurrent step of an :class:`XLSTMStack`, ``stepper(x_t, state) -> (y_t, state)``, equal to
    ``stack.step(x_t, state)`` but with the mLSTM blocks' parameters gathered once
    (:class:`MLSTMStepWeights`): for inference loops and latency, where a step at batch 1 costs
    per-op and per-lookup overhead. It holds the Parameters themselves, so in-place updates show
    through; make a new one after assigning new Parameters or moving the stack to another device."""

    def __init__(self, stack: XLSTMStack):
        self.dim = stack.dim
        self.blocks = [functools.partial(mlstm_block_step, block.step_weights()) if isinstance(block, MLSTMBlock)
                       else block.step for block in stack.blocks]
        self.norm = (stack.norm.normalized_shape, stack.norm.weight, stack.norm.eps)

    def __call__(self, x_t: torch.Tensor, state: list | None = None):
        """x_t: (batch, dim) -> (y_t, per-block states)."""
        if x_t.dim() != 2 or x_t.shape[-1] != self.dim:
            raise ValueError(f"expected x_t shaped (batch, {self.dim}), got {tuple(x_t.shape)}")
        states = []
        for i, block_step in enumerate(self.blocks):
            x_t, block_state = block_step(x_t, state[i] if state else None)
            states.append(block_state)
        shape, weight, eps = self.norm
        return F.layer_norm(x_t, shape, weight, None, eps), states


def state_nbytes(state) -> int:
    """Bytes held by a (nested) recurrent state."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, (tuple, list)):
        return sum(state_nbytes(s) for s in state)
    return 0
