"""LRAM, the Large Recurrent Action Model (Schmied et al., 2024, "A Large Recurrent Action Model:
xLSTM enables Fast Inference for Robotics Tasks"): one causal sequence model, xLSTM or Transformer,
trained by behaviour cloning on many domains at once.

Per timestep t the model reads the tokens (s_t, R^_t, r_t) (optionally a_t before r_t, the
"actions in context" ablation) and predicts a_t from its output at the R^_t token:

    e(s_t) = W_s pad(s_t)          vector states zero-padded to ``max_state_dim`` (or a small CNN for images)
    e(R^_t) = W_R (R^_t / c_d),  e(r_t) = W_r (r_t / c_d)      c_d: the domain's reward scale
    logits_t = W_head y(R^_t)      shaped (max_act_dim, vocab): every action dimension at once

The shared action vocabulary has ``num_discrete`` (18) ids for discrete actions and ``num_bins``
(256) uniform bins over [-1, 1] for continuous ones (id = bin + 18). The loss is cross-entropy on
the action ids of the valid dimensions and timesteps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.models.decision import CausalTransformer, make_backbone, new_backbone_state


class ActionTokenizer:
    """Discrete actions keep their ids; continuous actions in [low, high] map to ``num_bins`` uniform
    bins after the discrete ids. ``decode="center"`` returns bin centres (error <= half a bin);
    ``"lower_edge"`` reproduces the official code's inverse (biased by half a bin)."""

    def __init__(self, *, num_discrete: int = 18, num_bins: int = 256, low: float = -1.0, high: float = 1.0,
                 decode: str = "center"):
        if num_discrete < 1 or num_bins < 2 or not high > low:
            raise ValueError(f"need num_discrete >= 1, num_bins >= 2 and high > low; got {num_discrete}, "
                             f"{num_bins}, [{low}, {high}]")
        if decode not in ("center", "lower_edge"):
            raise ValueError(f"decode must be 'center' or 'lower_edge', got {decode!r}")
        self.num_discrete, self.num_bins, self.low, self.high, self.mode = num_discrete, num_bins, low, high, decode
        self.width = (high - low) / num_bins

    @property
    def vocab_size(self) -> int:
        return self.num_discrete + self.num_bins

    def encode_continuous(self, actions: torch.Tensor) -> torch.Tensor:
        bins = torch.floor((actions.clamp(self.low, self.high) - self.low) / self.width).long()
        return bins.clamp(0, self.num_bins - 1) + self.num_discrete

    def decode_continuous(self, ids: torch.Tensor) -> torch.Tensor:
        if ((ids < self.num_discrete) | (ids >= self.vocab_size)).any():
            raise ValueError(f"continuous action ids must lie in [{self.num_discrete}, {self.vocab_size})")
        offset = 0.5 if self.mode == "center" else 0.0
        return self.low + (ids - self.num_discrete + offset).float() * self.width


INIT_KINDS = ("hf", "torch")
INITIALIZER_RANGE = 0.02  # Hugging Face DecisionTransformerConfig.initializer_range
IGNORE = -100  # target id of the masked-out action dimensions in the loss


@dataclass
class LRAMConfig:
    backbone: str = "xlstm"  # "xlstm" | "transformer"
    dim: int = 64
    num_layers: int = 4
    num_heads: int = 4
    slstm_at: tuple[int, ...] = ()
    max_state_dim: int = 39
    max_act_dim: int = 4
    num_discrete: int = 18
    num_bins: int = 256
    context: int = 20  # timesteps per training sequence
    positions: str = "window"  # the Transformer's learned positions: "window" | "episode" (see LRAM.forward)
    max_timesteps: int = 512  # episode length covered by "episode" positions (3 tokens per timestep)
    actions_in_context: bool = False
    init: str = "hf"  # "hf": the official (Hugging Face DT) init of embeddings and head; "torch": torch defaults

    def __post_init__(self) -> None:
        if self.positions not in ("window", "episode"):
            raise ValueError(f"positions must be 'window' or 'episode', got {self.positions!r}")
        if self.init not in INIT_KINDS:
            raise ValueError(f"init must be one of {INIT_KINDS}, got {self.init!r}")

    @property
    def max_positions(self) -> int:
        span = self.context if self.positions == "window" else self.max_timesteps
        return self.tokens_per_step * span

    @property
    def tokens_per_step(self) -> int:
        return 4 if self.actions_in_context else 3


class SmallCNN(nn.Module):
    """Image state encoder (a small Impala-style CNN): (batch, 3, H, W) in [0, 1] -> (batch, dim)."""

    def __init__(self, dim: int, channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__()
        layers, previous = [], 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.MaxPool2d(3, 2, padding=1), nn.ReLU()]
            previous = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(previous, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(images))


class LRAM(nn.Module):
    """The multi-domain action model of LRAM around a swappable backbone (see the module docstring)."""

    def __init__(self, cfg: LRAMConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = ActionTokenizer(num_discrete=cfg.num_discrete, num_bins=cfg.num_bins)
        vocab = self.tokenizer.vocab_size
        self.state_embed = nn.Linear(cfg.max_state_dim, cfg.dim)
        self.image_embed = SmallCNN(cfg.dim)
        self.return_embed = nn.Linear(1, cfg.dim)
        self.reward_embed = nn.Linear(1, cfg.dim)
        self.action_embed = nn.Embedding(vocab + 1, cfg.dim, padding_idx=vocab) if cfg.actions_in_context else None
        self.embed_norm = nn.LayerNorm(cfg.dim)
        self.backbone = make_backbone(cfg.backbone, dim=cfg.dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                                      max_positions=cfg.max_positions,
                                      window=cfg.tokens_per_step * cfg.context, slstm_at=cfg.slstm_at)
        self.head = nn.Linear(cfg.dim, cfg.max_act_dim * vocab)
        if cfg.init == "hf":
            self._init_like_official()

    def _init_like_official(self) -> None:
        """The official model's ``post_init`` (Hugging Face DT ``_init_weights``: Linear and Embedding
        weights N(0, 0.02), Linear biases 0, LayerNorm (1, 0)), then ``embed_bias_init="normal"``: the
        biases of the state, return and reward embeddings and of the embedding LayerNorm N(0, 0.02).
        The backbone keeps its own initialisation (the official code re-initialises the xLSTM after
        ``post_init``); the image CNN's convolutions keep torch's default, as ``_init_weights`` skips them."""
        std = INITIALIZER_RANGE
        with torch.no_grad():
            for linear in (self.state_embed, self.return_embed, self.reward_embed, self.image_embed.out, self.head):
                linear.weight.normal_(0.0, std)
                linear.bias.zero_()
            if self.action_embed is not None:
                self.action_embed.weight.normal_(0.0, std)
                self.action_embed.weight[self.action_embed.padding_idx].zero_()
            self.embed_norm.weight.fill_(1.0)
            for bias in (self.embed_norm.bias, self.state_embed.bias, self.return_embed.bias, self.reward_embed.bias):
                bias.normal_(0.0, std)

    # ------------------------------------------------------------------ embeddings
    def embed_states(self, states: torch.Tensor) -> torch.Tensor:
        """(..., state_dim) vectors (padded here) or (..., 3, H, W) images -> (..., dim)."""
        if states.dim() >= 4 and states.shape[-3] == 3:
            lead = states.shape[:-3]
            return self.image_embed(states.reshape(-1, *states.shape[-3:])).reshape(*lead, self.cfg.dim)  # (..., dim)
        if states.shape[-1] > self.cfg.max_state_dim:
            raise ValueError(f"state dim {states.shape[-1]} exceeds max_state_dim={self.cfg.max_state_dim}")
        return self.state_embed(F.pad(states, (0, self.cfg.max_state_dim - states.shape[-1])))

    def embed_actions(self, action_ids: torch.Tensor) -> torch.Tensor:
        """(..., max_act_dim) ids, padded with ``vocab`` -> (..., dim): the sum over dimensions."""
        return self.action_embed(action_ids).sum(-2)

    def tokens(self, states, returns, rewards, scale: float, action_ids=None) -> torch.Tensor:
        """Interleave per-timestep tokens: (batch, T, ...) -> (batch, T * tokens_per_step, dim)."""
        parts = [self.embed_states(states), self.return_embed((returns / scale).unsqueeze(-1))]
        if self.cfg.actions_in_context:
            parts.append(self.embed_actions(action_ids))
        parts.append(self.reward_embed((rewards / scale).unsqueeze(-1)))
        stacked = torch.stack(parts, dim=2)  # (batch, T, tokens_per_step, dim)
        return self.embed_norm(stacked.flatten(1, 2))  # (batch, T * tokens_per_step, dim)

    def action_logits(self, y: torch.Tensor) -> torch.Tensor:
        """Backbone outputs (..., dim) -> logits (..., max_act_dim, vocab)."""
        return self.head(y).unflatten(-1, (self.cfg.max_act_dim, self.tokenizer.vocab_size))

    # ------------------------------------------------------------------ training
    def forward(self, states, returns, rewards, scale: float, action_ids=None, timesteps=None) -> torch.Tensor:
        """Action logits (batch, T, max_act_dim, vocab) for sequences of T timesteps.

        The Transformer's learned positions are, with ``positions="window"`` (the official
        ``global_pos_embds``), the token indices 0..S-1 within the input; with ``"episode"`` they come from
        ``timesteps`` (batch, T), the timesteps within the episode (3 tokens per timestep). xLSTM has no
        positions.
        """
        x = self.tokens(states, returns, rewards, scale, action_ids)
        positions = None
        if self.cfg.positions == "episode" and timesteps is not None and isinstance(self.backbone, CausalTransformer):
            per_step = self.cfg.tokens_per_step
            offsets = torch.arange(per_step, device=x.device)
            positions = (timesteps.unsqueeze(-1) * per_step + offsets).flatten(1)  # (batch, T * tokens_per_step)
        y, _ = self.backbone(x, None, positions) if positions is not None else self.backbone(x)
        y = y.unflatten(1, (-1, self.cfg.tokens_per_step))[:, :, 1]  # (batch, T, dim): outputs at the R^ tokens
        return self.action_logits(y)

    def loss(self, batch: dict) -> torch.Tensor:
        """Masked cross-entropy over the action ids of valid dimensions and timesteps.

        ``batch``: states (B, T, S), returns (B, T), rewards (B, T), actions (B, T, max_act_dim) ids,
        action_mask (B, T, max_act_dim) bool, scale (float), timesteps (B, T).
        """
        context_ids = batch["actions"].masked_fill(~batch["action_mask"], self.tokenizer.vocab_size)
        logits = self(batch["states"], batch["returns"], batch["rewards"], batch["scale"],
                      context_ids if self.cfg.actions_in_context else None, batch.get("timesteps"))
        # invalid ids are ignored rather than gathered out: no data-dependent shape, so no device read-back
        targets = batch["actions"].masked_fill(~batch["action_mask"], IGNORE)
        return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE)  # (B*T*A, vocab)


def allowed_vocab(tokenizer: ActionTokenizer, discrete: bool, n_actions: int = 0) -> torch.Tensor:
    """Bool mask over the vocabulary of the ids a domain may emit."""
    allowed = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    if discrete:
        if not 1 <= n_actions <= tokenizer.num_discrete:
            raise ValueError(f"n_actions must lie in [1, {tokenizer.num_discrete}], got {n_actions}")
        allowed[:n_actions] = True
    else:
        allowed[tokenizer.num_discrete:] = True
    return allowed


class LRAMAgent:
    """Return-conditioned inference for one episode at a time.

    xLSTM runs recurrently (constant cost per token, the state spans the whole episode); the
    Transformer steps through a sliding-window KV cache of ``context`` timesteps. With window positions
    the newest tokens take the window's last positions and cached keys keep the positions they were
    written with (Hugging Face's sliding cache, as in the official code): exact for the first
    ``context`` timesteps, an approximation after (``experiments/lram.py`` re-runs the window instead).
    ``reset(target_return)`` starts an episode; ``act(obs)`` returns the action; ``observe(reward)``
    feeds the reward and decrements the return-to-go. ``state_stats`` (mean, std): standardise each
    observation as the training data was (``OfflineDataset.state_stats``). The model may sit on any
    device: each observation is moved there, and the action comes back to the CPU (the environment's side).
    """

    def __init__(self, model: LRAM, *, scale: float, discrete: bool, n_actions: int = 0, act_dim: int = 1,
                 state_stats: tuple[np.ndarray, np.ndarray] | None = None):
        self.model, self.scale, self.discrete, self.act_dim = model, scale, discrete, act_dim
        self.state_stats = state_stats
        parameter = next(model.parameters())
        self.dtype, self.device = parameter.dtype, parameter.device
        self.allowed = allowed_vocab(model.tokenizer, discrete, n_actions).to(self.device)
        self.state, self.recurrent_step = None, None
        self.return_to_go, self.t = 0.0, 0

    def reset(self, target_return: float) -> None:
        backbone = self.model.backbone
        self.state = new_backbone_state(backbone)
        # the xLSTM's step with its parameters gathered once per episode (see XLSTMStepper)
        self.recurrent_step = None if isinstance(backbone, CausalTransformer) else backbone.stepper()
        self.return_to_go, self.t = float(target_return), 0

    def _feed(self, token: torch.Tensor, slot: int) -> torch.Tensor:
        backbone = self.model.backbone
        x = self.model.embed_norm(token)  # (1, dim)
        if isinstance(backbone, CausalTransformer):
            cfg = self.model.cfg
            step = self.t if cfg.positions == "episode" else min(self.t, cfg.context - 1)
            position = step * cfg.tokens_per_step + slot
            y, self.state = backbone.step(x, self.state, position)
        else:
            y, self.state = self.recurrent_step(x, self.state)
        return y

    def observation(self, obs) -> np.ndarray:
        """The observation as the model reads it: in the model's dtype, standardised when ``state_stats`` is set."""
        dtype = np.float64 if self.dtype == torch.float64 else np.float32
        obs = np.asarray(obs, dtype=np.float64)
        if self.state_stats is not None:
            mean, std = self.state_stats
            obs = (obs - mean) / std
        return obs.astype(dtype)

    @torch.no_grad()
    def act(self, obs) -> torch.Tensor:
        obs = torch.from_numpy(self.observation(obs)).unsqueeze(0).to(self.device)  # (1, state_dim)
        self._feed(self.model.embed_states(obs), 0)
        rtg = torch.tensor([[self.return_to_go / self.scale]], dtype=self.dtype, device=self.device)
        y = self._feed(self.model.return_embed(rtg), 1)
        logits = self.model.action_logits(y)[0, : self.act_dim]  # (act_dim, vocab)
        ids = logits.masked_fill(~self.allowed, float("-inf")).argmax(-1)
        self._last_ids = ids
        ids = ids.cpu()  # the action goes to the environment, on the CPU
        if self.discrete:
            return ids[0]
        return self.model.tokenizer.decode_continuous(ids)

    @torch.no_grad()
    def observe(self, reward: float) -> None:
        if self.model.cfg.actions_in_context:
            vocab = self.model.tokenizer.vocab_size
            ids = torch.full((1, self.model.cfg.max_act_dim), vocab, dtype=torch.long, device=self.device)
            ids[0, : self._last_ids.numel()] = self._last_ids
            self._feed(self.model.embed_actions(ids), 2)
        scaled = torch.tensor([[reward / self.scale]], dtype=self.dtype, device=self.device)
        reward_token = self.model.reward_embed(scaled)
        self._feed(reward_token, self.model.cfg.tokens_per_step - 1)
        self.return_to_go -= reward
        self.t += 1
