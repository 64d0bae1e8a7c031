"""Decision Transformer, Algorithm Distillation and the Retrieval-Augmented Decision Transformer
(RA-DT; Schmied et al., arXiv 2410.07071) for grid worlds with (x, y) states and 5 actions.

Steps are dicts of tensors (see :mod:`tenfold.tasks.learning_histories`); contexts are *right*-padded (valid steps
first), so causal attention never sees padding.

* :class:`DecisionTransformer` (Chen et al., 2021): tokens (s_t, R_t, a_t, r_t) per step; a_t is
  predicted from the output at R_t, the return-to-go R_t (integer bins 0..max_rtg, CE loss, as the
  official RA-DT code) from the output at s_t. Trunk: GPT-2 pre-LN blocks (:class:`DecisionBlock`).
* :class:`AlgorithmDistillation` (Laskin et al., 2022): tokens (s_t, a_t, r_t) over several consecutive
  episodes of a learning history; a_t predicted from the output at s_t; no return conditioning.
* :class:`RADT`: the Decision Transformer whose every block is self-attention -> cross-attention over
  the retrieved sub-trajectory -> MLP (pre-LN), the memory embedded by separate embedding layers,
  LayerNorm and position table; with no memory the cross-attention sub-layer is skipped.

As in the official RA-DT code for Dark-Room (HF GPT-2 with ``global_pos_embds`` and the model's default
``use_time_embds=True``): learned token positions plus a timestep embedding added to every token of the
context and of the memory (``time_embed=False``: token positions only); dropout 0.1 on the embeddings
and on every residual branch.
Actions are decoded by :func:`decode_actions`: ``"official"`` (the official ``sample_from_logits``:
sample at T = 1 among the logits strictly above their ``top_p`` quantile; RA-DT's default),
``"argmax"`` (the official DT and AD, ``stochastic_policy: False``) or ``"nucleus"`` (top-p sampling).
See docs/methods/ra-dt.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.models.gpt import MLP, GPTConfig, make_norm
from tenfold.nn.attention import Attention
from tenfold.utils.checks import check_choice, check_positive, check_range

NUM_ACTIONS = 5


class StepEmbedding(nn.Module):
    """Per-modality embeddings of a step (plus a timestep embedding when ``time_embed``) and LayerNorm:
    (B, L) steps -> (B, L, n_tokens, dim) for ``tokens`` drawn from "s", "R", "a", "r"."""

    def __init__(self, *, dim: int, size: tuple[int, int], max_rtg: int, horizon: int, time_embed: bool = True):
        super().__init__()
        self.width, self.height = size
        self.max_rtg = max_rtg
        self.x, self.y = nn.Embedding(self.width, dim), nn.Embedding(self.height, dim)
        self.rtg = nn.Embedding(max_rtg + 1, dim)
        self.action = nn.Embedding(NUM_ACTIONS, dim)
        self.reward = nn.Embedding(2, dim)
        self.time = nn.Embedding(horizon, dim) if time_embed else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, steps: dict, tokens: str = "sRar") -> torch.Tensor:
        s = steps["states"]
        table = {"s": lambda: self.x(s[..., 0].clamp(0, self.width - 1)) + self.y(s[..., 1].clamp(0, self.height - 1)),
                 "R": lambda: self.rtg(steps["rtg"].clamp(0, self.max_rtg)),
                 "a": lambda: self.action(steps["actions"].clamp(0, NUM_ACTIONS - 1)),
                 "r": lambda: self.reward(steps["rewards"].clamp(0, 1))}
        tokens = torch.stack([table[t]() for t in tokens], dim=2)  # (B, L, n, D)
        if self.time is not None:
            tokens = tokens + self.time(steps["timesteps"].clamp(0, self.time.num_embeddings - 1))[:, :, None]
        return self.norm(tokens)


def _flat(tokens: torch.Tensor) -> torch.Tensor:
    batch, length, n, dim = tokens.shape
    return tokens.reshape(batch, length * n, dim)  # (B, L*n, D): interleaved per step


def _masked_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    mask = mask.reshape(-1).float()
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def sample_top_p(logits: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nucleus sampling: sample from the smallest set of actions whose probability reaches p
    (the most likely action always included); p -> 0 is greedy. logits (B, A) -> (B,)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"top-p must be in [0, 1], got {p}")
    probs = torch.softmax(logits.float(), -1)
    sorted_p, order = torch.sort(probs, descending=True, stable=True)
    keep = (sorted_p.cumsum(-1) - sorted_p) < p
    keep[:, 0] = True
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    pick = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(1, pick).squeeze(1)


def sample_above_quantile(logits: torch.Tensor, q: float = 0.5, temperature: float = 1.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The official RA-DT decoding (``sample_from_logits(top_p=q)``): per row, keep the logits strictly
    above their q-quantile (linear interpolation, as ``torch.quantile``; with 5 actions and q = 0.5
    the median, so the top 2), or every logit where the quantile equals the maximum, and sample from
    softmax(temperature * kept logits). logits (B, A) -> (B,)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.double()
    cut = torch.quantile(logits, q, dim=-1, keepdim=True)  # (B, 1)
    keep = (logits > cut) | (cut >= logits.max(-1, keepdim=True).values)
    probs = torch.softmax(torch.where(keep, temperature * logits, -torch.inf), -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


DECODES = ("official", "nucleus", "argmax")


def decode_actions(logits: torch.Tensor, decode: str, *, top_p: float = 0.5,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Actions from logits (B, A): ``"official"`` -> :func:`sample_above_quantile` (q = ``top_p``),
    ``"nucleus"`` -> :func:`sample_top_p`, ``"argmax"`` -> the most likely action."""
    check_choice("decode", decode, DECODES)
    if decode == "argmax":
        return logits.argmax(-1)
    if decode == "nucleus":
        return sample_top_p(logits, top_p, generator)
    return sample_above_quantile(logits, top_p, generator=generator)


class DecisionBlock(nn.Module):
    """Pre-LN GPT-2 block: x + Drop(SelfAttn(LN x)) (causal); with ``cross``, x + Drop(CrossAttn(LN x,
    memory)) (skipped when no memory is given); x + Drop(MLP(LN x)). Dropout on each residual branch
    as HF GPT-2's ``resid_pdrop``."""

    def __init__(self, *, dim: int, num_heads: int, cross: bool = False, dropout: float = 0.0, ffn_mult: float = 4.0):
        super().__init__()
        cfg = GPTConfig(vocab_size=1, dim=dim, num_heads=num_heads, ffn_mult=ffn_mult)
        self.norm1 = make_norm(cfg.norm, dim)
        self.attn = Attention(dim=dim, num_heads=num_heads, causal=True)
        if cross:
            self.norm_cross = make_norm(cfg.norm, dim)
            self.cross = CrossAttention(dim=dim, num_heads=num_heads)
        self.norm2 = make_norm(cfg.norm, dim)
        self.ffn = MLP(dim, cfg.hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, positions, memory=None, memory_mask=None):
        x = x + self.drop(self.attn(self.norm1(x), positions))
        if memory is not None:
            x = x + self.drop(self.cross(self.norm_cross(x), memory, memory_mask))
        return x + self.drop(self.ffn(self.norm2(x)))


class DecisionTransformer(nn.Module):
    """Decision Transformer (Chen et al., 2021) over (s, R, a, r) tokens with RTG cross-entropy,
    as the RA-DT code's discrete DT: pi(a_t | s_<=t, R_<=t, a_<t, r_<t). ``context`` is in steps.

    GPT-2 trunk: learned token positions, pre-LN blocks, dropout ``dropout`` (official 0.1) on the
    embeddings and residual branches; a timestep embedding on every token (``time_embed``, official)."""

    tokens = "sRar"
    default_decode = "argmax"  # the official DT / AD: stochastic_policy False
    cross = False

    def __init__(self, *, size: tuple[int, int], horizon: int, max_rtg: int, context: int, dim: int = 64,
                 num_layers: int = 2, num_heads: int = 4, dropout: float = 0.1, time_embed: bool = True):
        super().__init__()
        check_positive(horizon=horizon, max_rtg=max_rtg, context=context, dim=dim, num_layers=num_layers,
                       num_heads=num_heads)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        self.context, self.dim, self.max_rtg = context, dim, max_rtg
        self.embed = StepEmbedding(dim=dim, size=size, max_rtg=max_rtg, horizon=horizon, time_embed=time_embed)
        self.pos = nn.Embedding(len(self.tokens) * context, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecisionBlock(dim=dim, num_heads=num_heads, cross=self.cross, dropout=dropout)
                                    for _ in range(num_layers))
        self.norm = make_norm("layernorm", dim)
        self.action_head = nn.Linear(dim, NUM_ACTIONS)
        self.rtg_head = nn.Linear(dim, max_rtg + 1)

    def _memory_tokens(self, memory: dict):
        raise ValueError(f"{type(self).__name__} reads no memory")

    def _hidden(self, steps: dict, memory: dict | None = None) -> torch.Tensor:
        if steps["actions"].shape[1] > self.context:
            raise ValueError(f"context has {steps['actions'].shape[1]} steps, more than context={self.context}")
        tokens = self.embed(steps, self.tokens)  # (B, L, n, D)
        batch, length, n, dim = tokens.shape
        x = _flat(tokens)
        positions = torch.arange(x.shape[1])
        x = self.drop(x + self.pos(positions))
        mem, mem_mask = (None, None) if memory is None else self._memory_tokens(memory)
        for block in self.blocks:
            x = block(x, positions, mem, mem_mask)
        return self.norm(x).reshape(batch, length, n, dim)  # (B, L, n, D)

    def state_outputs(self, steps: dict, memory: dict | None = None) -> torch.Tensor:
        return self._hidden(steps, memory)[:, :, 0]

    def forward(self, steps: dict, memory: dict | None = None):
        """-> (action logits (B, L, 5) read at R_t, RTG logits (B, L, max_rtg+1) read at s_t)."""
        h = self._hidden(steps, memory)
        return self.action_head(h[:, :, 1]), self.rtg_head(h[:, :, 0])

    def loss(self, steps: dict, memory: dict | None = None) -> torch.Tensor:
        action_logits, rtg_logits = self(steps, memory)
        mask = steps["mask"]
        return (_masked_ce(action_logits, steps["actions"], mask)
                + _masked_ce(rtg_logits, steps["rtg"].clamp(0, self.max_rtg), mask))

    @torch.no_grad()
    def act(self, steps: dict, last: torch.Tensor, memory: dict | None = None, *, decode: str | None = None,
            top_p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
        """a_t at the step index ``last`` (B,) of each (right-padded) context, decoded by
        :func:`decode_actions` (``decode=None``: the model's official rule, ``default_decode``)."""
        logits, _ = self(steps, memory)
        return decode_actions(logits[torch.arange(len(last)), last], decode or self.default_decode, top_p=top_p,
                              generator=generator)


class AlgorithmDistillation(DecisionTransformer):
    """Algorithm Distillation (Laskin et al., 2022): a causal transformer over (s, a, r) tokens of
    several consecutive episodes of a learning history, predicting the logged a_t from s_t; at test
    time the context persists across episodes. ``context`` in steps (e.g. 3 episodes x horizon)."""

    tokens = "sar"

    def forward(self, steps: dict, memory: dict | None = None):
        h = self._hidden(steps)
        return self.action_head(h[:, :, 0]), None

    def loss(self, steps: dict, memory: dict | None = None) -> torch.Tensor:
        logits, _ = self(steps)
        return _masked_ce(logits, steps["actions"], steps["mask"])


class CrossAttention(nn.Module):
    """Multi-head cross-attention (non-causal) from x (B, T, D) to memory (B, M, D) with a key padding
    mask (B, M); rows with no valid memory token get a zero output."""

    def __init__(self, *, dim: int, num_heads: int):
        super().__init__()
        check_positive(dim=dim, num_heads=num_heads)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        mem_len = memory.shape[1]
        q = self.q(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        k, v = self.kv(memory).view(batch, mem_len, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # k, v: (B, h, M, hd)
        has_any = mask.any(-1)  # (B,)
        safe = mask | ~has_any[:, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :])
        y = self.out(y.transpose(1, 2).reshape(batch, seq, dim))  # (B, T, D)
        return y * has_any[:, None, None].to(y.dtype)


class RADT(DecisionTransformer):
    """Retrieval-Augmented Decision Transformer (Schmied et al., 2024, Sec. 3): a DT whose every block
    reads the retrieved sub-trajectory (past and future of a neighbour, ``memory_steps`` steps) through
    cross-attention; the memory tokens (s, R, a, r) come from separate embeddings, LayerNorm and
    position table (``separate_ca_embed``). ``memory=None`` (or an all-padding memory) skips the
    cross-attention. Decodes with the official rule by default (:func:`sample_above_quantile`)."""

    default_decode = "official"
    cross = True

    def __init__(self, *, size: tuple[int, int], horizon: int, max_rtg: int, context: int, memory_steps: int,
                 dim: int = 64, num_layers: int = 2, num_heads: int = 4, separate_memory_embed: bool = True,
                 dropout: float = 0.1, time_embed: bool = True):
        check_positive(memory_steps=memory_steps)
        self.memory_steps = memory_steps
        super().__init__(size=size, horizon=horizon, max_rtg=max_rtg, context=context, dim=dim,
                         num_layers=num_layers, num_heads=num_heads, dropout=dropout, time_embed=time_embed)
        self.memory_embed = (StepEmbedding(dim=dim, size=size, max_rtg=max_rtg, horizon=horizon, time_embed=time_embed)
                             if separate_memory_embed else self.embed)
        self.memory_pos = nn.Embedding(len(self.tokens) * memory_steps, dim)

    def load_decision_transformer(self, dt: DecisionTransformer) -> list[str]:
        """Copy a trained :class:`DecisionTransformer`'s weights (step embeddings, positions, blocks,
        final norm, heads) into this model; the cross-attention sub-layers, the memory embeddings and
        the memory positions keep their fresh initialisation (as the official ``load_model_weights``
        with ``strict=False``: the DT checkpoint has no cross-attention keys). Returns the names of
        the parameters that were not loaded. With ``memory=None`` the result equals ``dt``."""
        if not isinstance(dt, DecisionTransformer) or isinstance(dt, (RADT, AlgorithmDistillation)):
            raise ValueError(f"dt must be a DecisionTransformer, got {type(dt).__name__}")
        missing, unexpected = self.load_state_dict(dt.state_dict(), strict=False)
        if unexpected:
            raise ValueError(f"dt has parameters this RADT lacks: {unexpected}")
        return list(missing)

    def _memory_tokens(self, memory: dict):
        if memory["actions"].shape[1] > self.memory_steps:
            raise ValueError(f"memory has {memory['actions'].shape[1]} steps, more than memory_steps={self.memory_steps}")
        tokens = _flat(self.memory_embed(memory, self.tokens))  # (B, M*4, D)
        tokens = self.drop(tokens + self.memory_pos(torch.arange(tokens.shape[1])))
        mask = memory["mask"].repeat_interleave(len(self.tokens), dim=1)  # (B, M*4)
        return tokens, mask
