"""Decision Transformer, Algorithm Distillation and the Retrieval-Augmented Decision Transformer
(RA-DT; Schmied et al., arXiv 2410.07071) for grid worlds with (x, y) states and 5 actions.

Steps are dicts of tensors (see :mod:`tenfold.tasks.learning_histories`); contexts are *right*-padded (valid steps
first), so causal attention never sees padding.

* :class:`DecisionTransformer` (Chen et al., 2021): tokens (s_t, R_t, a_t, r_t) per step; a_t is
  predicted from the output at R_t, the return-to-go R_t (integer bins 0..max_rtg, CE loss, as the
  official RA-DT code) from the output at s_t. Backbone: the shared :class:`CausalTransformer`.
* :class:`AlgorithmDistillation` (Laskin et al., 2022): tokens (s_t, a_t, r_t) over several consecutive
  episodes of a learning history; a_t predicted from the output at s_t; no return conditioning.
* :class:`RADT`: the Decision Transformer whose every block is self-attention -> cross-attention over
  the retrieved sub-trajectory -> MLP (pre-LN), the memory embedded by separate embedding layers,
  LayerNorm and position table; with no memory the cross-attention sub-layer is skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.models.decision import CausalTransformer
from tenfold.models.gpt import MLP, GPTConfig, make_norm
from tenfold.nn.attention import Attention
from tenfold.utils.checks import check_positive

NUM_ACTIONS = 5


class StepEmbedding(nn.Module):
    """Per-modality embeddings of a step plus a timestep embedding and LayerNorm:
    (B, L) steps -> (B, L, n_tokens, dim) for ``tokens`` drawn from "s", "R", "a", "r"."""

    def __init__(self, *, dim: int, size: tuple[int, int], max_rtg: int, horizon: int):
        super().__init__()
        self.width, self.height = size
        self.max_rtg = max_rtg
        self.x, self.y = nn.Embedding(self.width, dim), nn.Embedding(self.height, dim)
        self.rtg = nn.Embedding(max_rtg + 1, dim)
        self.action = nn.Embedding(NUM_ACTIONS, dim)
        self.reward = nn.Embedding(2, dim)
        self.time = nn.Embedding(horizon, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, steps: dict, tokens: str = "sRar") -> torch.Tensor:
        s = steps["states"]
        table = {"s": lambda: self.x(s[..., 0].clamp(0, self.width - 1)) + self.y(s[..., 1].clamp(0, self.height - 1)),
                 "R": lambda: self.rtg(steps["rtg"].clamp(0, self.max_rtg)),
                 "a": lambda: self.action(steps["actions"].clamp(0, NUM_ACTIONS - 1)),
                 "r": lambda: self.reward(steps["rewards"].clamp(0, 1))}
        time = self.time(steps["timesteps"].clamp(0, self.time.num_embeddings - 1))
        return self.norm(torch.stack([table[t]() + time for t in tokens], dim=2))  # (B, L, n, D)


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


class DecisionTransformer(nn.Module):
    """Decision Transformer (Chen et al., 2021) over (s, R, a, r) tokens with RTG cross-entropy,
    as the RA-DT code's discrete DT: pi(a_t | s_<=t, R_<=t, a_<t, r_<t). ``context`` is in steps."""

    tokens = "sRar"

    def __init__(self, *, size: tuple[int, int], horizon: int, max_rtg: int, context: int, dim: int = 64,
                 num_layers: int = 2, num_heads: int = 4):
        super().__init__()
        check_positive(horizon=horizon, max_rtg=max_rtg, context=context, dim=dim, num_layers=num_layers,
                        num_heads=num_heads)
        self.context, self.dim, self.max_rtg = context, dim, max_rtg
        self.embed = StepEmbedding(dim=dim, size=size, max_rtg=max_rtg, horizon=horizon)
        self._build_trunk(dim=dim, num_layers=num_layers, num_heads=num_heads,
                          max_positions=len(self.tokens) * context)
        self.action_head = nn.Linear(dim, NUM_ACTIONS)
        self.rtg_head = nn.Linear(dim, max_rtg + 1)

    def _build_trunk(self, *, dim, num_layers, num_heads, max_positions) -> None:
        self.trunk = CausalTransformer(dim=dim, num_layers=num_layers, num_heads=num_heads,
                                       max_positions=max_positions)

    def _hidden(self, steps: dict, memory: dict | None = None) -> torch.Tensor:
        if steps["actions"].shape[1] > self.context:
            raise ValueError(f"context has {steps['actions'].shape[1]} steps, more than context={self.context}")
        tokens = self.embed(steps, self.tokens)  # (B, L, n, D)
        batch, length, n, dim = tokens.shape
        out, _ = self.trunk(_flat(tokens))
        return out.reshape(batch, length, n, dim)  # (B, L, n, D)

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
    def act(self, steps: dict, last: torch.Tensor, memory: dict | None = None, *, top_p: float = 0.5,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample a_t at the step index ``last`` (B,) of each (right-padded) context."""
        logits, _ = self(steps, memory)
        return sample_top_p(logits[torch.arange(len(last)), last], top_p, generator)


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


class RADTBlock(nn.Module):
    """Pre-LN block: x + SelfAttn(LN x) (causal); x + CrossAttn(LN x, memory); x + MLP(LN x)."""

    def __init__(self, *, dim: int, num_heads: int, ffn_mult: float = 4.0):
        super().__init__()
        cfg = GPTConfig(vocab_size=1, dim=dim, num_heads=num_heads, ffn_mult=ffn_mult)
        self.norm1 = make_norm(cfg.norm, dim)
        self.attn = Attention(dim=dim, num_heads=num_heads, causal=True)
        self.norm_cross = make_norm(cfg.norm, dim)
        self.cross = CrossAttention(dim=dim, num_heads=num_heads)
        self.norm2 = make_norm(cfg.norm, dim)
        self.ffn = MLP(dim, cfg.hidden)

    def forward(self, x, positions, memory=None, memory_mask=None):
        x = x + self.attn(self.norm1(x), positions)
        if memory is not None:
            x = x + self.cross(self.norm_cross(x), memory, memory_mask)
        return x + self.ffn(self.norm2(x))


class RADT(DecisionTransformer):
    """Retrieval-Augmented Decision Transformer (Schmied et al., 2024, Sec. 3): a DT whose every block
    reads the retrieved sub-trajectory (past and future of a neighbour, ``memory_steps`` steps) through
    cross-attention; the memory tokens (s, R, a, r) come from separate embeddings, LayerNorm and
    position table. ``memory=None`` (or an all-padding memory) skips the cross-attention."""

    def __init__(self, *, size: tuple[int, int], horizon: int, max_rtg: int, context: int, memory_steps: int,
                 dim: int = 64, num_layers: int = 2, num_heads: int = 4, separate_memory_embed: bool = True):
        check_positive(memory_steps=memory_steps)
        self.memory_steps = memory_steps
        super().__init__(size=size, horizon=horizon, max_rtg=max_rtg, context=context, dim=dim,
                         num_layers=num_layers, num_heads=num_heads)
        self.memory_embed = (StepEmbedding(dim=dim, size=size, max_rtg=max_rtg, horizon=horizon)
                             if separate_memory_embed else self.embed)
        self.memory_pos = nn.Embedding(len(self.tokens) * memory_steps, dim)

    def _build_trunk(self, *, dim, num_layers, num_heads, max_positions) -> None:
        self.pos = nn.Embedding(max_positions, dim)
        self.blocks = nn.ModuleList(RADTBlock(dim=dim, num_heads=num_heads) for _ in range(num_layers))
        self.norm = make_norm("layernorm", dim)

    def load_decision_transformer(self, dt: DecisionTransformer) -> list[str]:
        """Copy a trained :class:`DecisionTransformer`'s weights (step embeddings, positions, blocks,
        final norm, heads) into this model; the cross-attention sub-layers, the memory embeddings and
        the memory positions keep their fresh initialisation (as the official ``load_model_weights``
        with ``strict=False``: the DT checkpoint has no cross-attention keys). Returns the names of
        the parameters that were not loaded. With ``memory=None`` the result equals ``dt``."""
        if not isinstance(dt, DecisionTransformer) or isinstance(dt, (RADT, AlgorithmDistillation)):
            raise ValueError(f"dt must be a DecisionTransformer, got {type(dt).__name__}")
        weights = {name.removeprefix("trunk."): value for name, value in dt.state_dict().items()}
        missing, unexpected = self.load_state_dict(weights, strict=False)
        if unexpected:
            raise ValueError(f"dt has parameters this RADT lacks: {unexpected}")
        return list(missing)

    def _memory_tokens(self, memory: dict):
        if memory["actions"].shape[1] > self.memory_steps:
            raise ValueError(f"memory has {memory['actions'].shape[1]} steps, more than memory_steps={self.memory_steps}")
        tokens = _flat(self.memory_embed(memory, self.tokens))  # (B, M*4, D)
        tokens = tokens + self.memory_pos(torch.arange(tokens.shape[1]))
        mask = memory["mask"].repeat_interleave(len(self.tokens), dim=1)  # (B, M*4)
        return tokens, mask

    def _hidden(self, steps: dict, memory: dict | None = None) -> torch.Tensor:
        if steps["actions"].shape[1] > self.context:
            raise ValueError(f"context has {steps['actions'].shape[1]} steps, more than context={self.context}")
        tokens = self.embed(steps, self.tokens)
        batch, length, n, dim = tokens.shape
        x = _flat(tokens)
        positions = torch.arange(x.shape[1])
        x = x + self.pos(positions)
        mem, mem_mask = (None, None) if memory is None else self._memory_tokens(memory)
        for block in self.blocks:
            x = block(x, positions, mem, mem_mask)
        return self.norm(x).reshape(batch, length, n, dim)  # (B, L, n, D)
