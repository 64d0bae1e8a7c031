"""Structured feed-forward layers and self-guided training (Wei, Moalla, Pascanu, Gulcehre, "Building on
Efficient Foundations: Effectively Training LLMs with Structured Feedforward Layers", NeurIPS 2024,
arXiv 2406.16450; official code CLAIRE-Labo/StructuredFFN).

A dense weight W (M, N) is replaced by a structured map S, with one bias after the whole product:

    LowRank(R):        S(x) = U (V x)                         V (R, N), U (M, R)        R(N + M) params
    BlockDense(B, R):  S(x) = U blockdiag(V_1..V_B) x         V_k (R/B, N/B), U (M, R)  R(M + N/B)
    BlockShuffle(B):   S(x) = P_out blockdiag(W2) P_mid blockdiag(W1) x                 min(N, M)(N + M)/B

Self-guided training adds a dense guide W_g (M, N), initialised to the materialised S, and mixes

    o = α W_g x + (1 − α) S(x) + b,        α = ½(1 + cos(π c / T_g)) for c ≤ T_g, 0 after,

where c counts optimizer steps; after T_g steps the guide is deleted. With ``reduce_flop`` each call
draws u ~ U[0, 1) and skips the guide (o = S(x) + b) when u ≥ α. Two modes, as in the official
trainer: ``fixedstep`` (T_g = ratio · T inside the T training steps) and ``fixedflop`` (training runs
T + T_g steps, the last T_g replaying the first T_g batches, with ratio chosen so that the total
training FLOPs match a budget; see ``fixedflop_ratio``).

The FFN is fc2(act(fc1(x))) with act GELU, or SwiGLU (official ``fused_swiglu``): fc1 maps d → 2f and
act(y) = SiLU(y_1) ⊙ y_2 with y = (y_1, y_2) split in halves, so fc2 maps f → d.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.nn.blockdiag import BlockDiagonalLinear, block_diagonal_matmul
from tenfold.train.loop import warmup_cosine

GUIDE_INITS = ("exact", "official")
SCHEDULES = ("cosine", "linear")
SGT_MODES = ("fixedstep", "fixedflop")
FFN_KINDS = ("dense", "lowrank", "blockdense", "blockshuffle")
FFN_ACTS = ("gelu", "swiglu")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# initialisations


def svd_low_rank_init(out_features: int, in_features: int, rank: int, std: float = 0.02,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral init: draw W0 ~ N(0, std²) shaped (M, N), SVD W0 = P S Qᵀ, return
    U = P_R √S_R (M, R) and V = √S_R Q_Rᵀ (R, N), so U V is the best rank-R approximation of W0."""
    w0 = torch.randn(out_features, in_features, generator=generator, dtype=torch.float64) * std
    return svd_factors(w0, rank)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectral factors of a given dense ``weight`` (M, N): with weight = P S Qᵀ, return
    U = P_R √S_R (M, R) and V = √S_R Q_Rᵀ (R, N) in float32 (SVD in float64), so that U V is the best
    rank-R approximation of ``weight`` (Eckart–Young)."""
    p, s, qt = torch.linalg.svd(weight.detach().double(), full_matrices=False)  # p (M, K), s (K,), qt (K, N)
    root = s[:rank].sqrt()
    return (p[:, :rank] * root).float(), (root[:, None] * qt[:rank]).float()


def orthogonal_(weight: torch.Tensor, std: float = 0.02, generator: torch.Generator | None = None) -> torch.Tensor:
    """In place: each trailing (rows, cols) matrix of ``weight`` becomes P Qᵀ from the SVD of a
    N(0, std²) draw, i.e. a (semi-)orthogonal matrix with all singular values 1."""
    with torch.no_grad():
        draw = torch.randn(weight.shape, generator=generator, dtype=torch.float64) * std
        p, _, qt = torch.linalg.svd(draw, full_matrices=False)  # batched over leading dims
        weight.copy_((p @ qt).to(weight.dtype))
    return weight


def _normal_(weight: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    return weight


# ---------------------------------------------------------------------------------------------------
# base class


class StructuredLinear(nn.Module):
    """Base of the structured linears: ``forward(x) = S(x) + b``, or with a guide
    ``α W_g x + (1 − α) S(x) + b`` (Wei et al., 2024, self-guided training). Subclasses define
    ``structured(x)`` (S without bias), ``merge()`` (the dense (M, N) matrix equal to S) and
    ``num_params()`` (weights and bias, guide excluded unless asked)."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.guide: nn.Parameter | None = None
        self.alpha = 1.0
        self.reduce_flop = False
        self.guide_generator: torch.Generator | None = None
        self.guide_calls = 0  # forward calls that evaluated the guide (for FLOP accounting)

    # -- to be defined by subclasses
    def structured(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight_params(self) -> int:
        raise NotImplementedError

    def merge(self) -> torch.Tensor:
        """The dense (out_features, in_features) matrix W with W x = S(x)."""
        eye = torch.eye(self.in_features, dtype=self._dtype(), device=self._device())
        return self.structured(eye).T  # (N, M) -> (M, N)

    # -- shared
    def _dtype(self):
        return next(self.parameters()).dtype

    def _device(self):
        return next(self.parameters()).device

    def _use_guide(self) -> bool:
        if self.guide is None:
            return False
        if self.reduce_flop:
            u = torch.rand((), generator=self.guide_generator).item()
            if u >= self.alpha:
                return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected input shaped (..., {self.in_features}), got {tuple(x.shape)}")
        y = self.structured(x)
        if self._use_guide():
            self.guide_calls += 1
            y = self.alpha * F.linear(x, self.guide) + (1.0 - self.alpha) * y
        return y if self.bias is None else y + self.bias

    def num_params(self, include_guide: bool = False) -> int:
        """Weights plus bias; the guide only when ``include_guide`` and a guide is on."""
        guide = self.in_features * self.out_features if include_guide and self.guide is not None else 0
        return self.weight_params() + (self.out_features if self.bias is not None else 0) + guide

    def macs_per_token(self, include_guide: bool = False) -> int:
        """Multiply-adds per token of the weight products (params = MACs for every structure)."""
        guide = self.in_features * self.out_features if include_guide and self.guide is not None else 0
        return self.weight_params() + guide

    def enable_guide(self, init: str = "exact", reduce_flop: bool = False,
                     generator: torch.Generator | None = None) -> nn.Parameter:
        """Attach a dense guide W_g initialised to the structured map (``"exact"``: ``merge()``;
        ``"official"``: the official code's init, which differs only for BlockShuffle) and set α = 1."""
        _choice("init", init, GUIDE_INITS)
        with torch.no_grad():
            weight = self.merge() if init == "exact" else self.official_guide_init()
        self.guide = nn.Parameter(weight.detach().clone())
        self.alpha, self.reduce_flop, self.guide_generator = 1.0, bool(reduce_flop), generator
        self.guide_calls = 0
        return self.guide

    def official_guide_init(self) -> torch.Tensor:
        return self.merge()

    def disable_guide(self) -> None:
        """Delete the guide; the layer is the plain structured layer again."""
        self.guide = None
        self.alpha = 0.0

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ---------------------------------------------------------------------------------------------------
# the three structures


class LowRankLinear(StructuredLinear):
    """LowRank(R) linear (Wei et al., 2024, §2): y = U (V x) + b with V (R, N) and U (M, R);
    R(N + M) parameters. ``init="svd"`` (spectral): U V is the best rank-R approximation of a
    N(0, init_std²) dense draw; ``"normal"``: both factors N(0, init_std²)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, init: str = "svd",
                 init_std: float = 0.02, generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, bias)
        _positive_int("rank", rank)
        if rank > min(in_features, out_features):
            raise ValueError(f"rank must be in [1, min(in_features, out_features)] = "
                             f"[1, {min(in_features, out_features)}], got {rank}")
        self.rank, self.init = rank, _choice("init", init, ("svd", "normal"))
        self.v = nn.Parameter(torch.empty(rank, in_features))  # official name lr1
        self.u = nn.Parameter(torch.empty(out_features, rank))  # official name lr2
        if init == "svd":
            u, v = svd_low_rank_init(out_features, in_features, rank, init_std, generator)
            with torch.no_grad():
                self.u.copy_(u)
                self.v.copy_(v)
        else:
            _normal_(self.u, init_std, generator)
            _normal_(self.v, init_std, generator)

    def init_from_dense(self, weight: torch.Tensor) -> None:
        """Spectral init from a given dense draw: U V ← the best rank-R approximation of ``weight``
        (M, N), e.g. the initial weight of the dense model it is compared with."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must be shaped ({self.out_features}, {self.in_features}), "
                             f"got {tuple(weight.shape)}")
        u, v = svd_factors(weight, self.rank)
        with torch.no_grad():
            self.u.copy_(u)
            self.v.copy_(v)

    def structured(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.v), self.u)

    def merge(self) -> torch.Tensor:
        return self.u @ self.v

    def weight_params(self) -> int:
        return self.rank * (self.in_features + self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"


class BlockDenseLinear(StructuredLinear):
    """BlockDense(B, R) linear (Wei et al., 2024, §2): z = blockdiag(V_1..V_B) x ∈ R^R, y = U z + b,
    V_k (R/B, N/B), U (M, R); R(M + N/B) parameters. ``init="ortho"``: every V_k and U semi-orthogonal
    (all singular values 1), as in the official code; ``"normal"``: N(0, init_std²)."""

    def __init__(self, in_features: int, out_features: int, rank: int, blocks: int, bias: bool = True,
                 init: str = "ortho", init_std: float = 0.02, generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, bias)
        _positive_int("rank", rank)
        _positive_int("blocks", blocks)
        if rank > min(in_features, out_features):
            raise ValueError(f"rank must be in [1, min(in_features, out_features)] = "
                             f"[1, {min(in_features, out_features)}], got {rank}")
        if in_features % blocks or rank % blocks:
            raise ValueError(f"blocks ({blocks}) must divide in_features ({in_features}) and rank ({rank})")
        self.rank, self.blocks, self.init = rank, blocks, _choice("init", init, ("ortho", "normal"))
        self.blkdiag = BlockDiagonalLinear(in_features, rank, blocks, bias=False)
        self.u = nn.Parameter(torch.empty(out_features, rank))  # official name lr
        init_fn = orthogonal_ if init == "ortho" else _normal_
        init_fn(self.blkdiag.weight, init_std, generator)
        init_fn(self.u, init_std, generator)

    def structured(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.blkdiag(x), self.u)

    def merge(self) -> torch.Tensor:
        return self.u @ self.blkdiag.to_dense()

    def weight_params(self) -> int:
        return self.rank * (self.out_features + self.in_features // self.blocks)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, blocks={self.blocks}"


class BlockShuffleLinear(StructuredLinear):
    """BlockShuffle(B) linear (Wei et al., 2024, §2; Monarch-like): two block-diagonal stages with an
    interleaving shuffle between them and after them,

        z = blockdiag(W1) x                       W1 (B, q, N/B), q = N/B if N < M else M/B
        y_l = W2[l] (z[l], z[B + l], ..., z[(q-1)B + l])    W2 (B, M/B, q)
        y[i B + l] = y_l[i]                       (output block l interleaved)

    min(N, M)(N + M)/B parameters; the full map is dense. ``init="ortho"`` makes every block
    semi-orthogonal; ``"normal"`` draws N(0, init_std²)."""

    def __init__(self, in_features: int, out_features: int, blocks: int, bias: bool = True,
                 init: str = "ortho", init_std: float = 0.02, generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, bias)
        _positive_int("blocks", blocks)
        if in_features % blocks or out_features % blocks:
            raise ValueError(f"blocks ({blocks}) must divide in_features ({in_features}) and "
                             f"out_features ({out_features})")
        self.blocks, self.init = blocks, _choice("init", init, ("ortho", "normal"))
        mid = min(in_features, out_features)  # q * B
        self.blkdiag1 = BlockDiagonalLinear(in_features, mid, blocks, bias=False)
        self.blkdiag2 = BlockDiagonalLinear(mid, out_features, blocks, bias=False)
        init_fn = orthogonal_ if init == "ortho" else _normal_
        init_fn(self.blkdiag1.weight, init_std, generator)
        init_fn(self.blkdiag2.weight, init_std, generator)

    def structured(self, x: torch.Tensor) -> torch.Tensor:
        lead, b = x.shape[:-1], self.blocks
        z = self.blkdiag1(x)  # (..., q*B), index k*q + j
        q = z.shape[-1] // b
        z = z.reshape(*lead, q, b).transpose(-1, -2)  # (..., B, q): row l = z[l::B]
        y = self.blkdiag2.blocked(z)  # (..., B, M/B)
        return y.transpose(-1, -2).reshape(*lead, self.out_features)  # (..., M/B, B) -> (..., M): y_l[i] at i*B + l

    def official_guide_init(self) -> torch.Tensor:
        """The official code's guide init blockdiag(W2) blockdiag(W1), which omits both shuffles."""
        return self.blkdiag2.to_dense() @ self.blkdiag1.to_dense()

    def weight_params(self) -> int:
        return min(self.in_features, self.out_features) * (self.in_features + self.out_features) // self.blocks

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, blocks={self.blocks}"


# ---------------------------------------------------------------------------------------------------
# pre-merge


class PreMergedLinear(nn.Module):
    """Wraps a structured layer; in eval mode, calls with at most ``max_merged_tokens`` tokens use the
    merged dense weight (cached; rebuilt when a factor changes), larger calls the factored form
    (the paper's pre-merge trick for small token counts, e.g. decoding)."""

    def __init__(self, layer: StructuredLinear, max_merged_tokens: int = 16):
        super().__init__()
        if not isinstance(layer, StructuredLinear):
            raise ValueError(f"layer must be a StructuredLinear, got {type(layer).__name__}")
        if max_merged_tokens < 0:
            raise ValueError(f"max_merged_tokens must be >= 0, got {max_merged_tokens}")
        self.layer, self.max_merged_tokens = layer, max_merged_tokens
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def merged_weight(self) -> torch.Tensor:
        key = tuple(p._version for p in self.layer.parameters())
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.layer.merge().contiguous())
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // max(x.shape[-1], 1)
        if self.training or self.layer.guide is not None or tokens > self.max_merged_tokens:
            return self.layer(x)
        return F.linear(x, self.merged_weight(), self.layer.bias)


# ---------------------------------------------------------------------------------------------------
# the structured FFN


def make_structured_linear(kind: str, in_features: int, out_features: int, *, rank: int | None = None,
                           blocks: int | None = None, bias: bool = True, init: str | None = None,
                           init_std: float = 0.02) -> nn.Module:
    """One linear of the given ``kind`` ("dense" returns a plain ``nn.Linear``)."""
    _choice("kind", kind, FFN_KINDS)
    if kind == "dense":
        return nn.Linear(in_features, out_features, bias=bias)
    if kind in ("lowrank", "blockdense") and rank is None:
        raise ValueError(f"rank is required for kind={kind!r}")
    if kind in ("blockdense", "blockshuffle") and blocks is None:
        raise ValueError(f"blocks is required for kind={kind!r}")
    extra = {} if init is None else {"init": init}
    if kind == "lowrank":
        return LowRankLinear(in_features, out_features, rank, bias=bias, init_std=init_std, **extra)
    if kind == "blockdense":
        return BlockDenseLinear(in_features, out_features, rank, blocks, bias=bias, init_std=init_std, **extra)
    return BlockShuffleLinear(in_features, out_features, blocks, bias=bias, init_std=init_std, **extra)


def swiglu(y: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation (Shazeer, 2020; the official ``fused_swiglu`` in plain PyTorch): split the last
    dimension of ``y`` (..., 2f) in halves y_1, y_2 and return SiLU(y_1) ⊙ y_2 (..., f)."""
    gate, value = y.chunk(2, dim=-1)  # (..., f) each
    return F.silu(gate) * value


def ffn_activation(act: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The FFN activation named ``act`` ("gelu" or "swiglu")."""
    return F.gelu if _choice("act", act, FFN_ACTS) == "gelu" else swiglu


class StructuredMLP(nn.Module):
    """FFN with both linears structured (Wei et al., 2024): fc2(act(fc1(x))). GELU: fc1 d → f;
    SwiGLU (official ``fused_swiglu``): fc1 d → 2f, act = SiLU(first half) ⊙ second half; fc2 f → d."""

    def __init__(self, dim: int, hidden: int, kind: str, *, rank: int | None = None, blocks: int | None = None,
                 bias: bool = True, init: str | None = None, init_std: float = 0.02, act: str = "gelu"):
        super().__init__()
        kw = {"rank": rank, "blocks": blocks, "bias": bias, "init": init, "init_std": init_std}
        self.kind, self.act = kind, act
        self.activation = ffn_activation(act)
        self.up = make_structured_linear(kind, dim, hidden * (2 if act == "swiglu" else 1), **kw)
        self.down = make_structured_linear(kind, hidden, dim, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))


def structured_ffn(kind: str, *, rank: int | None = None, rank_fraction: float | None = None,
                   blocks: int | None = None, bias: bool = True, first_layer_dense: bool = True,
                   init: str | None = None, init_std: float = 0.02,
                   act: str = "gelu") -> Callable[[int, int, int], nn.Module]:
    """An FFN factory ``(dim, hidden, layer_index) -> module`` for ``tenfold.models.GPT(ffn=...)``.

    Both linears of every FFN use ``kind`` with the same ``rank`` (or ``rank = rank_fraction · dim``,
    e.g. 0.5 → 63% and 0.25 → 32% of a 4·dim GELU FFN's parameters) and ``blocks``; layer 0's FFN stays
    dense when ``first_layer_dense`` (as in the paper). ``act``: "gelu" or "swiglu" (the factory's
    ``act`` attribute; the GPT checks it against its config's ``ffn_act``).
    """
    _choice("kind", kind, FFN_KINDS)
    _choice("act", act, FFN_ACTS)
    if rank is not None and rank_fraction is not None:
        raise ValueError("give rank or rank_fraction, not both")
    if rank_fraction is not None and not 0 < rank_fraction <= 1:
        raise ValueError(f"rank_fraction must be in (0, 1], got {rank_fraction}")

    def factory(dim: int, hidden: int, layer_index: int) -> nn.Module:
        if kind == "dense" or (first_layer_dense and layer_index == 0):
            return StructuredMLP(dim, hidden, "dense", bias=bias, act=act)
        r = rank if rank_fraction is None else max(1, int(round(rank_fraction * dim)))
        return StructuredMLP(dim, hidden, kind, rank=r, blocks=blocks, bias=bias, init=init, init_std=init_std,
                             act=act)

    factory.act = act
    return factory


def structured_layers(model: nn.Module) -> list[StructuredLinear]:
    return [m for m in model.modules() if isinstance(m, StructuredLinear)]


@torch.no_grad()
def copy_dense_init(model: nn.Module, dense: nn.Module) -> int:
    """Paired initialisation for comparing ``model`` (with structured FFNs) against ``dense`` (the
    same architecture with dense FFNs, freshly initialised): every parameter of ``model`` whose name
    and shape match one of ``dense`` is copied, and every ``LowRankLinear`` whose name matches an
    ``nn.Linear`` of ``dense`` takes the spectral factors of that layer's weight (the paper's SVD
    init, applied to the dense model's own draw). Block structures keep their own (orthogonal) init.
    Returns the number of tensors set."""
    dense_modules = dict(dense.named_modules())
    dense_params = dict(dense.named_parameters())
    count = 0
    for name, module in model.named_modules():
        reference = dense_modules.get(name)
        if isinstance(module, LowRankLinear) and isinstance(reference, nn.Linear):
            module.init_from_dense(reference.weight)
            count += 1
    for name, param in model.named_parameters():
        reference = dense_params.get(name)
        if reference is not None and reference.shape == param.shape:
            param.copy_(reference)
            count += 1
    return count


# ---------------------------------------------------------------------------------------------------
# self-guided training


def guide_alpha(step: int, guided_steps: int, schedule: str = "cosine") -> float:
    """α after ``step`` optimizer steps: cosine ½(1 + cos(π step/T_g)) or linear 1 − step/T_g for
    step ≤ T_g, and 0 after (α = 1 at step 0)."""
    _choice("schedule", schedule, SCHEDULES)
    if guided_steps < 1:
        raise ValueError(f"guided_steps must be >= 1, got {guided_steps}")
    if step >= guided_steps:
        return 0.0
    if schedule == "cosine":
        return warmup_cosine(max(step, 0), warmup=0, decay_steps=guided_steps)
    return 1.0 - max(step, 0) / guided_steps


def sgt_steps(total_steps: int, ratio: float, mode: str = "fixedstep") -> tuple[int, int]:
    """(guided steps T_g, steps trained) of self-guided training over a run of ``total_steps`` (as the
    official ``set_self_guided_training``): T_g = max(1, int(ratio · total_steps)); ``fixedstep``
    trains ``total_steps``, ``fixedflop`` trains ``total_steps + T_g`` (the last T_g steps replay the
    first T_g batches, and the learning-rate schedule spans all of them)."""
    _positive_int("total_steps", total_steps)
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    _choice("mode", mode, SGT_MODES)
    guided = max(1, int(ratio * total_steps))
    return guided, total_steps + (guided if mode == "fixedflop" else 0)


def fixedflop_ratio(dense_macs: float, structured_macs: float, guide_macs: float, reduce_flop: bool = True) -> float:
    """The guided fraction g for which fixed-FLOP self-guided training costs what dense training does
    over the same number of steps T (multiply-adds per token of the dense model, of the structured
    model and of all its guides). Training runs T(1 + g) structured steps and evaluates the guides on
    gT steps, on average half of the calls with ``reduce_flop`` (mean α of the schedule = ½, as the
    official FLOP count assumes): (1 + g)·structured + c·g·guide = dense, c = ½ or 1."""
    if not dense_macs > structured_macs > 0 or not guide_macs > 0:
        raise ValueError(f"need dense_macs > structured_macs > 0 and guide_macs > 0, got {dense_macs}, "
                         f"{structured_macs}, {guide_macs}")
    share = 0.5 if reduce_flop else 1.0
    return (dense_macs - structured_macs) / (structured_macs + share * guide_macs)


class SelfGuidedTraining:
    """Self-guided training controller (Wei et al., 2024, §4): gives every structured layer of
    ``model`` a dense guide W_g = S (init ``"exact"``) with α = 1, lowers α after each backward
    (``after_backward``, before ``optimizer.step``) over ``guided_steps = int(ratio · total_steps)``,
    and at the end deletes the guides from the model and the optimizer (``maybe_close``).

    ``reduce_flop``: each layer call uses the guide with probability α (seeded by ``seed``).
    ``mode``: "fixedstep" or "fixedflop" (``train_steps`` = total_steps + guided_steps; the training
    loop replays the first ``guided_steps`` batches at the end; see ``sgt_steps``).
    """

    def __init__(self, model: nn.Module, *, total_steps: int, ratio: float = 0.5, schedule: str = "cosine",
                 reduce_flop: bool = False, init: str = "exact", seed: int = 0, mode: str = "fixedstep"):
        self.guided_steps, self.train_steps = sgt_steps(total_steps, ratio, mode)
        self.mode = mode
        self.schedule = _choice("schedule", schedule, SCHEDULES)
        _choice("init", init, GUIDE_INITS)
        self.layers = structured_layers(model)
        if not self.layers:
            raise ValueError("model has no structured layers to guide")
        self.count, self.closed, self.alpha = 0, False, 1.0
        for i, layer in enumerate(self.layers):
            generator = torch.Generator().manual_seed(seed * 1000 + i) if reduce_flop else None
            layer.enable_guide(init=init, reduce_flop=reduce_flop, generator=generator)

    def guides(self) -> list[nn.Parameter]:
        return [layer.guide for layer in self.layers if layer.guide is not None]

    def after_backward(self) -> float:
        """c ← c + 1; α ← schedule(c) on every guided layer; return α."""
        if self.closed:
            return 0.0
        self.count += 1
        self.alpha = guide_alpha(self.count, self.guided_steps, self.schedule)
        for layer in self.layers:
            layer.alpha = self.alpha
        return self.alpha

    def guide_params(self) -> int:
        return sum(g.numel() for g in self.guides())

    def maybe_close(self, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """After ``guided_steps`` steps delete the guides and their optimizer state; True when closed now."""
        if self.closed or self.count < self.guided_steps:
            return False
        guides = {id(g) for g in self.guides()}
        if optimizer is not None:
            remove_params(optimizer, guides)
        for layer in self.layers:
            layer.disable_guide()
        self.closed = True
        return True


def remove_params(optimizer: torch.optim.Optimizer, ids: set[int]) -> None:
    """Drop the parameters whose ``id`` is in ``ids`` from ``optimizer``'s groups and state."""
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]
    for p in [p for p in optimizer.state if id(p) in ids]:
        del optimizer.state[p]
