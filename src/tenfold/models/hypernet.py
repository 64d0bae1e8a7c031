"""In-context learners for compositional tasks (Kobayashi, Schug, Akram et al., "When can transformers
compositionally generalize in-context?", arXiv 2407.12275).

Three models that map N context pairs (x_i, y_i) and Q query inputs x_q to predictions y_q:

(a) :class:`InContextTransformer`: tokens [x, y, 0] (context) and [x_q, 0, 1] (query) go through
    pre-norm blocks without positional encoding; context attends to context, each query to the context
    and itself; a linear head reads y_q from each query token. Inference and execution share one
    residual stream.
(b) :class:`HypernetBottleneck`: an encoder reads **only** the context tokens [x, y], mean-pools and
    maps to a latent z_hat in R^{d_z} (encoders: :class:`ContextEncoder` (transformer blocks, the
    paper's), :class:`SetEncoder` (DeepSet), :class:`BilinearSetEncoder` (affine in the targets)); a
    linear hypernetwork generates the hidden layers of an MLP that is applied to the query (one layer:
    W_1(z_hat) = sum_k z_hat_k Phi[k],  b_1(z_hat) = sum_k z_hat_k phi[k],
    y_q = R_s^T ReLU(W_1^T x_q + b_1) + c  with the readout (R_s, c) shared by all tasks). The query sees
    the context only through z_hat (the bottleneck separating task inference from task execution).
(c) :class:`HypernetOracle`: the hypernetwork of (b) given the true z_bar = z / sqrt(K).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tenfold.models.gpt import Block, GPTConfig, make_norm
from tenfold.utils.checks import check_positive


def _block_config(d_model: int, n_heads: int, n_layers: int, mlp_ratio: float) -> GPTConfig:
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
    return GPTConfig(vocab_size=1, dim=d_model, num_layers=n_layers, num_heads=n_heads,
                     ffn_mult=mlp_ratio, pos_embedding="none", norm="layernorm", bias=True)


def _check_context(x_ctx: torch.Tensor, y_ctx: torch.Tensor, d_in: int, d_out: int) -> None:
    if x_ctx.dim() != 3 or x_ctx.shape[-1] != d_in:
        raise ValueError(f"expected x_ctx shaped (batch, N, {d_in}), got {tuple(x_ctx.shape)}")
    if y_ctx.shape != (*x_ctx.shape[:2], d_out):
        raise ValueError(f"expected y_ctx shaped {(*x_ctx.shape[:2], d_out)}, got {tuple(y_ctx.shape)}")


def _check_query(x_q: torch.Tensor, batch: int, d_in: int) -> None:
    if x_q.dim() != 3 or x_q.shape[0] != batch or x_q.shape[-1] != d_in:
        raise ValueError(f"expected x_q shaped ({batch}, Q, {d_in}), got {tuple(x_q.shape)}")


def icl_attention_mask(n_context: int, n_query: int, device=None) -> torch.Tensor:
    """Bool mask (N+Q, N+Q), True where attention is allowed: context <-> context; each query attends to
    every context token and to itself; no context -> query and no query -> other query."""
    total = n_context + n_query
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    mask[:, :n_context] = True
    mask[n_context:, n_context:] = torch.eye(n_query, dtype=torch.bool, device=device)
    return mask


class InContextTransformer(nn.Module):
    """(a) The plain in-context transformer (arXiv 2407.12275): pre-norm blocks over context tokens
    [x, y, 0] and query tokens [x_q, 0, 1], no positional encoding, mask of :func:`icl_attention_mask`,
    linear head on the query tokens. ``forward(x_ctx, y_ctx, x_q) -> y_q_hat`` (B, Q, d_out)."""

    def __init__(self, *, d_in: int, d_out: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 3,
                 mlp_ratio: float = 2.0):
        super().__init__()
        check_positive(d_in=d_in, d_out=d_out, d_model=d_model, n_heads=n_heads, n_layers=n_layers)
        cfg = _block_config(d_model, n_heads, n_layers, mlp_ratio)
        self.d_in, self.d_out = d_in, d_out
        self.embed = nn.Linear(d_in + d_out + 1, d_model)
        self.blocks = nn.ModuleList(Block(cfg, i, causal=False) for i in range(n_layers))
        self.norm = make_norm(cfg.norm, d_model, cfg.bias)
        self.head = nn.Linear(d_model, d_out)

    def tokens(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
        """(B, N+Q, d_in+d_out+1): context [x, y, 0] then queries [x_q, 0, 1]."""
        batch, n_query = x_q.shape[:2]
        ctx = torch.cat([x_ctx, y_ctx, x_ctx.new_zeros(*x_ctx.shape[:2], 1)], dim=-1)
        qry = torch.cat([x_q, x_q.new_zeros(batch, n_query, self.d_out), x_q.new_ones(batch, n_query, 1)], dim=-1)
        return torch.cat([ctx, qry], dim=1)

    def forward(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor, x_q: torch.Tensor,
                return_residuals: bool = False):
        """Returns y_q_hat (B, Q, d_out); with ``return_residuals`` also the residual stream after the
        embedding and after each block, a list of (B, N+Q, d_model)."""
        _check_context(x_ctx, y_ctx, self.d_in, self.d_out)
        _check_query(x_q, x_ctx.shape[0], self.d_in)
        n_context, n_query = x_ctx.shape[1], x_q.shape[1]
        mask = icl_attention_mask(n_context, n_query, x_q.device)
        h = self.embed(self.tokens(x_ctx, y_ctx, x_q))
        residuals = [h]
        for block in self.blocks:
            h = block(h, attn_mask=mask)
            residuals.append(h)
        y_hat = self.head(self.norm(h[:, n_context:]))
        return (y_hat, residuals) if return_residuals else y_hat


class ContextEncoder(nn.Module):
    """Task inference of the bottleneck model: pre-norm blocks (full attention, no positional encoding)
    over context tokens [x, y] only, mean-pool, Linear -> z_hat (B, d_latent)."""

    def __init__(self, *, d_in: int, d_out: int, d_latent: int, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 3, mlp_ratio: float = 2.0):
        super().__init__()
        check_positive(d_in=d_in, d_out=d_out, d_latent=d_latent, d_model=d_model, n_heads=n_heads,
                        n_layers=n_layers)
        cfg = _block_config(d_model, n_heads, n_layers, mlp_ratio)
        self.d_in, self.d_out = d_in, d_out
        self.embed = nn.Linear(d_in + d_out, d_model)
        self.blocks = nn.ModuleList(Block(cfg, i, causal=False) for i in range(n_layers))
        self.norm = make_norm(cfg.norm, d_model, cfg.bias)
        self.to_latent = nn.Linear(d_model, d_latent)

    def forward(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor) -> torch.Tensor:
        _check_context(x_ctx, y_ctx, self.d_in, self.d_out)
        h = self.embed(torch.cat([x_ctx, y_ctx], dim=-1))  # (B, N, d_model)
        for block in self.blocks:
            h = block(h)
        return self.to_latent(self.norm(h).mean(dim=1))


def _code_mlp(d_in: int, d_model: int, n_layers: int) -> nn.Sequential:
    """A set encoder's per-element code: ``n_layers`` ReLU layers of width ``d_model``, then a linear layer."""
    layers: list[nn.Module] = []
    width = d_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, d_model), nn.ReLU()]
        width = d_model
    return nn.Sequential(*layers, nn.Linear(d_model, d_model))


class SetEncoder(nn.Module):
    """Task inference as a DeepSet (the ``deepsetmean`` encoder of the group's ``Setcoder``, ICLR 2024 code):
    each context pair [x, y] is encoded on its own by an MLP phi (``n_layers`` ReLU layers of width
    ``d_model``, then a linear layer), the codes are mean-pooled over the context and a linear map gives
    z_hat = A mean_i phi([x_i, y_i]) + a (B, d_latent). Permutation-invariant; pairs interact only
    through the pooled sum, so z_hat is additive over context pairs."""

    def __init__(self, *, d_in: int, d_out: int, d_latent: int, d_model: int = 64, n_layers: int = 2):
        super().__init__()
        check_positive(d_in=d_in, d_out=d_out, d_latent=d_latent, d_model=d_model, n_layers=n_layers)
        self.d_in, self.d_out = d_in, d_out
        self.phi = _code_mlp(d_in + d_out, d_model, n_layers)
        self.to_latent = nn.Linear(d_model, d_latent)

    def forward(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor) -> torch.Tensor:
        _check_context(x_ctx, y_ctx, self.d_in, self.d_out)
        codes = self.phi(torch.cat([x_ctx, y_ctx], dim=-1))  # (B, N, d_model)
        return self.to_latent(codes.mean(dim=1))


class BilinearSetEncoder(nn.Module):
    """Task inference that is affine in the context targets: each pair gives the code
    f(x_i) * (B y_i + b) (elementwise; f an MLP of ``n_layers`` ReLU layers of width ``d_model``, then a
    linear layer), the codes are mean-pooled and a linear map gives

        z_hat = A mean_i [ f(x_i) * (B y_i + b) ] + a                                   (B, d_latent)

    This is the form of one gradient step on the context loss of a predictor linear in z,
    z_hat = z_0 - eta sum_i J(x_i)^T (y_hat(x_i; z_0) - y_i), i.e. the least-squares read-out a linear
    self-attention layer computes in context (von Oswald et al., ICML 2023). Because z_hat is additive over
    pairs and affine in y, a task whose targets are a superposition of module outputs gets (to first order)
    the superposed latent, whichever combination it is. Permutation-invariant over context pairs."""

    def __init__(self, *, d_in: int, d_out: int, d_latent: int, d_model: int = 64, n_layers: int = 2):
        super().__init__()
        check_positive(d_in=d_in, d_out=d_out, d_latent=d_latent, d_model=d_model, n_layers=n_layers)
        self.d_in, self.d_out = d_in, d_out
        self.input_code = _code_mlp(d_in, d_model, n_layers)
        self.target_code = nn.Linear(d_out, d_model)
        self.to_latent = nn.Linear(d_model, d_latent)

    def forward(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor) -> torch.Tensor:
        _check_context(x_ctx, y_ctx, self.d_in, self.d_out)
        codes = self.input_code(x_ctx) * self.target_code(y_ctx)  # (B, N, d_model)
        return self.to_latent(codes.mean(dim=1))


ENCODERS = ("transformer", "deepset", "bilinear")
_SET_ENCODERS = {"deepset": SetEncoder, "bilinear": BilinearSetEncoder}


class LinearHypernetMLP(nn.Module):
    """Task execution: an MLP whose hidden layers are generated linearly from a latent z (B, d_latent).

    ``n_layers=1``: the first layer is generated, W_1 = sum_k z_k Phi[k] (d_in, hidden),
    b_1 = sum_k z_k phi[k]; y = ReLU(x W_1 + b_1) R_s + c. ``n_layers > 1`` (the shape of the deeper
    teacher): a learned input layer shared by all tasks, h_1 = ReLU(x W_in + b_in), then ``n_layers - 1``
    generated layers hidden -> hidden, then the shared readout.

    Initialisation (no source gives one): Phi ~ N(0, 1 / (d_latent fan_in)) so that W(z) has fan-in
    variance 1/fan_in for a unit-variance latent; phi = 0; the shared layers as ``nn.Linear``.
    """

    def __init__(self, *, d_latent: int, d_in: int, hidden: int = 16, d_out: int, n_layers: int = 1):
        super().__init__()
        check_positive(d_latent=d_latent, d_in=d_in, hidden=hidden, d_out=d_out, n_layers=n_layers)
        self.d_latent, self.d_in, self.hidden, self.d_out = d_latent, d_in, hidden, d_out
        self.n_layers = n_layers
        fan_ins = [d_in] if n_layers == 1 else [hidden] * (n_layers - 1)
        self.weight_banks = nn.ParameterList(
            nn.Parameter(torch.randn(d_latent, fan_in, hidden) / math.sqrt(d_latent * fan_in)) for fan_in in fan_ins)
        self.bias_banks = nn.ParameterList(nn.Parameter(torch.zeros(d_latent, hidden)) for _ in fan_ins)
        self.readout = nn.Linear(hidden, d_out)
        self.input = nn.Linear(d_in, hidden) if n_layers > 1 else None

    def generate(self, z: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """W_l(z) (B, fan_in, hidden) and b_l(z) (B, hidden) of generated layer ``layer``."""
        if z.dim() != 2 or z.shape[1] != self.d_latent:
            raise ValueError(f"expected z shaped (batch, {self.d_latent}), got {tuple(z.shape)}")
        return (torch.einsum("bk,kih->bih", z, self.weight_banks[layer]), z @ self.bias_banks[layer])

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_query(x, z.shape[0], self.d_in)
        h = x if self.input is None else torch.relu(self.input(x))
        for layer in range(len(self.weight_banks)):
            weight, bias = self.generate(z, layer)
            h = torch.relu(torch.einsum("bti,bih->bth", h, weight) + bias[:, None, :])
        return self.readout(h)


class HypernetBottleneck(nn.Module):
    """(b) The bottleneck model (arXiv 2407.12275): z_hat = encoder(x_ctx, y_ctx) and
    y_q = LinearHypernetMLP(z_hat, x_q); the query never attends to the context.

    ``encoder``: ``"transformer"`` (:class:`ContextEncoder`: pre-norm blocks over the context, mean-pool,
    linear), ``"deepset"`` (:class:`SetEncoder`) or ``"bilinear"`` (:class:`BilinearSetEncoder`, affine in
    the context targets); for the set encoders ``d_model`` is the code width and ``n_layers`` the MLP depth
    (``n_heads`` and ``mlp_ratio`` are then unused). ``hypernet_layers``: hidden layers of the generated MLP
    (:class:`LinearHypernetMLP`)."""

    def __init__(self, *, d_in: int, d_out: int, d_latent: int, hidden: int = 16, d_model: int = 64,
                 n_heads: int = 4, n_layers: int = 3, mlp_ratio: float = 2.0, encoder: str = "transformer",
                 hypernet_layers: int = 1):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if encoder == "transformer":
            self.encoder = ContextEncoder(d_in=d_in, d_out=d_out, d_latent=d_latent, d_model=d_model,
                                          n_heads=n_heads, n_layers=n_layers, mlp_ratio=mlp_ratio)
        else:
            self.encoder = _SET_ENCODERS[encoder](d_in=d_in, d_out=d_out, d_latent=d_latent, d_model=d_model,
                                                  n_layers=n_layers)
        self.hypernet = LinearHypernetMLP(d_latent=d_latent, d_in=d_in, hidden=hidden, d_out=d_out,
                                          n_layers=hypernet_layers)

    def infer_latent(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor) -> torch.Tensor:
        return self.encoder(x_ctx, y_ctx)

    def forward(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
        return self.hypernet(self.infer_latent(x_ctx, y_ctx), x_q)


class HypernetOracle(nn.Module):
    """(c) The oracle: LinearHypernetMLP on the true z_bar = z / sqrt(k_max). ``forward(z, x_q)``."""

    def __init__(self, *, n_modules: int, k_max: int, d_in: int, hidden: int = 16, d_out: int,
                 hypernet_layers: int = 1):
        super().__init__()
        check_positive(n_modules=n_modules, k_max=k_max)
        self.k_max = k_max
        self.hypernet = LinearHypernetMLP(d_latent=n_modules, d_in=d_in, hidden=hidden, d_out=d_out,
                                          n_layers=hypernet_layers)

    def forward(self, z: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
        return self.hypernet(z / math.sqrt(self.k_max), x_q)

    @torch.no_grad()
    def load_teacher(self, teacher, y_mean: torch.Tensor | None = None, y_std: torch.Tensor | None = None):
        """Copy a teacher of the same shape into the oracle: the generated layers' banks, the fixed input
        layer (if any), and the readout R / std with offset -mean / std, so it predicts the standardised
        targets exactly."""
        net = self.hypernet
        if teacher.num_layers != net.n_layers or set(teacher.hidden) != {net.hidden} \
                or teacher.fixed_input != (net.n_layers > 1):
            raise ValueError(f"needs a teacher of {net.n_layers} hidden layers of width {net.hidden} "
                             f"(fixed input layer iff more than one), got hidden={teacher.hidden}, "
                             f"fixed_input={teacher.fixed_input}")
        y_mean = torch.zeros(teacher.d_out) if y_mean is None else y_mean
        y_std = torch.ones(teacher.d_out) if y_std is None else y_std
        for layer in range(teacher.num_generated):
            net.weight_banks[layer].copy_(teacher.bank(layer))
            net.bias_banks[layer].copy_(teacher.bias(layer))
        if net.input is not None:
            net.input.weight.copy_(teacher.input_weight.T)  # (hidden, d_in)
            net.input.bias.copy_(teacher.input_bias)
        net.readout.weight.copy_((teacher.readout / y_std).T)  # (d_out, hidden)
        net.readout.bias.copy_(-y_mean / y_std)
        return self
