"""The hyperteacher: a modular multitask regression benchmark with controlled compositional structure
(Schug et al., ICLR 2024, arXiv 2312.15001; used by Kobayashi, Schug, Akram et al., "When can
transformers compositionally generalize in-context?", arXiv 2407.12275).

A bank of M modules per generated layer; a task is a K-hot latent z in R^M (1..K active modules, the
active entries weighted by ``khot`` {1}, ``discrete`` {0.5, 0.6, ..., 1.0} or ``continuous`` weights).
The task's network is the MLP whose weights are the latent-weighted sum of the modules:

    z_bar = z / sqrt(K)                                  (K = the k_max setting: "invariance to num_hot")
    W_l(z_bar) = sum_m z_bar_m Theta_l[m],   b_l(z_bar) = sum_m z_bar_m beta_l[m]
    h_l = ReLU(W_l(z_bar)^T h_{l-1} + b_l(z_bar)),   y = R^T h_L,   h_0 = x ~ U[-1, 1]^{d_in}

Combinations of modules are split into in-distribution (training) and out-of-distribution (held-out)
sets by a *task support*; a hypernetwork can identify the modules only when the training support is
compositional (every module appears) and connected (the module co-occurrence graph is connected).
In-context sequences pair N context examples with Q queries of the same task.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

WEIGHTINGS = ("khot", "discrete", "continuous")
SUPPORTS = ("random", "connected", "disconnected", "non_compositional")
DISCRETE_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2] (Flax variance scaling)

Combo = tuple[int, ...]


# --------------------------------------------------------------------------- combinations and supports
def enumerate_combinations(n_modules: int, k_max: int) -> list[Combo]:
    """All sets of 1..k_max active modules out of ``n_modules``: sum_k C(M, k) of them, by size then
    lexicographically."""
    if n_modules < 1:
        raise ValueError(f"n_modules must be >= 1, got {n_modules}")
    if not 1 <= k_max <= n_modules:
        raise ValueError(f"k_max must be in [1, n_modules={n_modules}], got {k_max}")
    return [c for k in range(1, k_max + 1) for c in itertools.combinations(range(n_modules), k)]


def combos_to_khot(combos: Sequence[Combo], n_modules: int) -> torch.Tensor:
    """K-hot indicator matrix (len(combos), n_modules) with ones on each combination's modules."""
    khot = torch.zeros(len(combos), n_modules)
    for row, combo in enumerate(combos):
        khot[row, list(combo)] = 1.0
    return khot


def is_compositional(combos: Sequence[Combo], n_modules: int) -> bool:
    """Every module appears in at least one combination."""
    return set(range(n_modules)) <= {m for combo in combos for m in combo}


def co_occurrence_components(combos: Sequence[Combo], n_modules: int) -> list[set[int]]:
    """Connected components of the module co-occurrence graph over all ``n_modules`` nodes (an edge
    between modules active in a common combination), ordered by their smallest module."""
    neighbours: dict[int, set[int]] = {m: set() for m in range(n_modules)}
    for combo in combos:
        for m in combo:
            neighbours[m].update(combo)
    components: list[set[int]] = []
    unseen = set(range(n_modules))
    while unseen:
        start = min(unseen)
        seen, frontier = {start}, [start]
        while frontier:
            node = frontier.pop()
            for other in neighbours[node] - seen:
                seen.add(other)
                frontier.append(other)
        components.append(seen)
        unseen -= seen
    return components


def is_connected(combos: Sequence[Combo], n_modules: int) -> bool:
    """The module co-occurrence graph (edge between modules active in a common combination) is
    connected over all ``n_modules`` nodes."""
    return len(co_occurrence_components(combos, n_modules)) == 1


@dataclass(frozen=True)
class Split:
    """In-distribution (training) and out-of-distribution (held-out) module combinations."""

    id: list[Combo]
    ood: list[Combo]
    support: str


def connected_support(n_modules: int) -> list[Combo]:
    """One-hots plus two-hots (i, i+1) and (i, i+2) mod M (the official ``connected`` support)."""
    pairs = {tuple(sorted((i, (i + step) % n_modules))) for i in range(n_modules) for step in (1, 2)}
    return [(m,) for m in range(n_modules)] + sorted(pairs)


def disconnected_support(n_modules: int) -> list[Combo]:
    """One-hots plus the two-hots inside each half {0..M/2-1}, {M/2..M-1} (official ``disconnected``)."""
    half = n_modules // 2
    pairs = [c for c in itertools.combinations(range(n_modules), 2) if (c[0] < half) == (c[1] < half)]
    return [(m,) for m in range(n_modules)] + pairs


def make_split(n_modules: int, k_max: int, *, support: str = "random", frac_ood: float = 0.25,
               n_ood: int | None = None, holdout_min_k: int = 2, require_compositional: bool = True,
               require_connected: bool = True, seed: int = 0, max_attempts: int = 1000) -> Split:
    """Split all 1..k_max-hot combinations into training (ID) and held-out (OOD) combinations.

    ``random``: shuffle the combinations with at least ``holdout_min_k`` active modules, hold out
    ``n_ood`` of them (default ``int(frac_ood * #all)``), and reshuffle until the training support is
    compositional and connected (as required). ``holdout_min_k=1`` is the official behaviour (any
    combination may be held out). ``connected`` / ``disconnected`` (k_max = 2, even M > 4): the
    official fixed supports; OOD is every combination in neither of the two supports, so both share
    one OOD set. ``non_compositional``: training never uses the last module; OOD = all that do.
    """
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    combos = enumerate_combinations(n_modules, k_max)
    if support == "random":
        return _random_split(combos, n_modules, k_max, frac_ood, n_ood, holdout_min_k,
                             require_compositional, require_connected, seed, max_attempts)
    if support == "non_compositional":
        ood = [c for c in combos if n_modules - 1 in c]
        return Split([c for c in combos if n_modules - 1 not in c], ood, support)
    if k_max != 2 or n_modules <= 4 or n_modules % 2:
        raise ValueError(f"support={support!r} needs k_max=2 and an even n_modules > 4, "
                         f"got k_max={k_max}, n_modules={n_modules}")
    conn, disc = set(connected_support(n_modules)), set(disconnected_support(n_modules))
    chosen = conn if support == "connected" else disc
    return Split([c for c in combos if c in chosen], [c for c in combos if c not in conn | disc], support)


def _random_split(combos, n_modules, k_max, frac_ood, n_ood, holdout_min_k, require_compositional,
                  require_connected, seed, max_attempts) -> Split:
    if not 1 <= holdout_min_k <= k_max:
        raise ValueError(f"holdout_min_k must be in [1, k_max={k_max}], got {holdout_min_k}")
    candidates = [c for c in combos if len(c) >= holdout_min_k]
    if n_ood is None:
        if not 0.0 < frac_ood < 1.0:
            raise ValueError(f"frac_ood must be in (0, 1), got {frac_ood}")
        n_ood = int(len(combos) * frac_ood)
    if not 1 <= n_ood <= len(candidates):
        raise ValueError(f"n_ood must be in [1, {len(candidates)}] (combinations with >= {holdout_min_k} "
                         f"active modules), got {n_ood}")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max_attempts):
        order = torch.randperm(len(candidates), generator=generator).tolist()
        held = {candidates[i] for i in order[:n_ood]}
        train = [c for c in combos if c not in held]
        if ((not require_compositional or is_compositional(train, n_modules))
                and (not require_connected or is_connected(train, n_modules))):
            return Split(train, [c for c in combos if c in held], "random")
    raise ValueError(f"no random split with n_ood={n_ood} gave the required support in {max_attempts} tries")


# --------------------------------------------------------------------------- the teacher
def variance_scaling_(tensor: torch.Tensor, fan_in: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Flax ``variance_scaling(scale, "fan_in", "truncated_normal")``: a normal truncated to +-2 std
    whose variance after truncation is ``scale / fan_in`` (``scale`` multiplies the variance)."""
    std = math.sqrt(scale / fan_in) / _TRUNC_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std, generator=generator)


class Hyperteacher(nn.Module):
    """Teacher MLPs generated from a module bank by a task latent (Schug et al., ICLR 2024).

    ``fixed_input=False`` (the one-hidden-layer teacher): every hidden layer is generated.
    ``fixed_input=True`` (the deeper teacher of the ICLR 2024 code, ``num_hidden > 1``): the input layer
    d_in -> hidden[0] is fixed and shared by all tasks, ``h_1 = ReLU(W_in^T x + b_in)``, and only the
    layers after it are generated; needs at least two hidden widths. Every generated layer reads the
    same latent (as the 2025 code; the 2023 code draws one combination per layer).

    Buffers: ``bank_l`` (M, d_{l-1}, d_l), ``bias_l`` (M, d_l) for every generated layer l, the
    fixed ``readout`` (d_L, d_out) and, with ``fixed_input``, ``input_weight`` (d_in, hidden[0]) and
    ``input_bias`` (hidden[0],). ``forward(z, x)``: z (B, M), x (B, T, d_in) -> y (B, T, d_out).
    """

    def __init__(self, *, d_in: int = 8, d_out: int = 4, hidden: Sequence[int] = (16,), n_modules: int = 6,
                 k_max: int = 2, weighting: str = "discrete", module_bias: bool = True,
                 scale: float = 3 ** 0.5, fixed_input: bool = False, seed: int = 0):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        for name, value in (("d_in", d_in), ("d_out", d_out), ("n_modules", n_modules)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of widths >= 1, got {hidden}")
        if not 1 <= k_max <= n_modules:
            raise ValueError(f"k_max must be in [1, n_modules={n_modules}], got {k_max}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if fixed_input and len(hidden) < 2:
            raise ValueError(f"fixed_input needs at least two hidden widths (one generated layer), got {hidden}")
        self.d_in, self.d_out, self.hidden = d_in, d_out, hidden
        self.n_modules, self.k_max, self.weighting = n_modules, k_max, weighting
        self.fixed_input = fixed_input
        generator = torch.Generator().manual_seed(seed)
        widths = hidden if fixed_input else (d_in, *hidden)
        for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            bank = variance_scaling_(torch.empty(n_modules, fan_in, fan_out), fan_in, scale, generator)
            bias = 0.5 * torch.rand(n_modules, fan_out, generator=generator) if module_bias \
                else torch.zeros(n_modules, fan_out)
            self.register_buffer(f"bank_{layer}", bank)
            self.register_buffer(f"bias_{layer}", bias)
        readout = variance_scaling_(torch.empty(hidden[-1], d_out), hidden[-1], scale, generator)
        self.register_buffer("readout", readout)
        if fixed_input:  # drawn last: the stream of the one-layer teacher is unchanged by the option
            self.register_buffer("input_weight",
                                 variance_scaling_(torch.empty(d_in, hidden[0]), d_in, scale, generator))
            self.register_buffer("input_bias", 2 * torch.rand(hidden[0], generator=generator) - 1)  # U[-1, 1]

    @property
    def num_layers(self) -> int:
        """Number of hidden layers (fixed input layer included)."""
        return len(self.hidden)

    @property
    def num_generated(self) -> int:
        """Number of generated layers: all hidden layers, or all but the fixed input layer."""
        return self.num_layers - int(self.fixed_input)

    def bank(self, layer: int) -> torch.Tensor:
        return getattr(self, f"bank_{layer}")

    def bias(self, layer: int) -> torch.Tensor:
        return getattr(self, f"bias_{layer}")

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """z_bar = z / sqrt(K), K the k_max setting (as the official generator: not the task's count)."""
        return z / math.sqrt(self.k_max)

    def layer_params(self, z: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """W_l(z_bar) (B, d_{l-1}, d_l) and b_l(z_bar) (B, d_l) of generated layer l for latents z (B, M)."""
        z_bar = self.normalize(z)
        return (torch.einsum("bm,mio->bio", z_bar, self.bank(layer)),
                torch.einsum("bm,mo->bo", z_bar, self.bias(layer)))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.n_modules:
            raise ValueError(f"expected z shaped (batch, {self.n_modules}), got {tuple(z.shape)}")
        if x.dim() != 3 or x.shape[0] != z.shape[0] or x.shape[2] != self.d_in:
            raise ValueError(f"expected x shaped ({z.shape[0]}, seq, {self.d_in}), got {tuple(x.shape)}")
        h = torch.relu(x @ self.input_weight + self.input_bias) if self.fixed_input else x
        for layer in range(self.num_generated):
            weight, bias = self.layer_params(z, layer)
            h = torch.relu(torch.einsum("bti,bio->bto", h, weight) + bias[:, None, :])
        return h @ self.readout

    def sample_latents(self, combos: Sequence[Combo], batch: int,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch`` tasks: a combination uniformly from ``combos``, then weights of its active
        modules. Returns z (batch, M) and the chosen combination indices (batch,)."""
        idx = torch.randint(len(combos), (batch,), generator=generator)
        khot = combos_to_khot(combos, self.n_modules)[idx]  # (batch, M)
        return weight_latents(khot, self.weighting, generator), idx

    def sample_inputs(self, batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ U[-1, 1]^{d_in}, shaped (batch, length, d_in)."""
        return 2 * torch.rand(batch, length, self.d_in, generator=generator) - 1


def weight_latents(khot: torch.Tensor, weighting: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Weights on the active entries of K-hot rows (official ``sample_latents``):
    ``khot``: 1; ``discrete``: uniform on {0.5, ..., 1.0}; ``continuous``: e ~ Exp(1) on active
    entries, w = e / (sum e + 1) (a point of the simplex, Willms 2021), shifted to 0.5 w + 0.5."""
    if weighting == "khot":
        return khot.clone()
    if weighting == "discrete":
        choice = torch.randint(len(DISCRETE_WEIGHTS), khot.shape, generator=generator)
        return torch.tensor(DISCRETE_WEIGHTS)[choice] * khot
    if weighting == "continuous":
        expo = -torch.log1p(-torch.rand(khot.shape, generator=generator)) * khot  # Exp(1) on active entries
        weights = expo / (expo.sum(-1, keepdim=True) + 1)
        return (0.5 * weights + 0.5) * khot
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def teacher_free_parameters(d_in: int, hidden: Sequence[int], d_out: int) -> int:
    """Numbers needed to identify a generic teacher of this shape from scratch (weights, biases, readout)."""
    widths = (d_in, *hidden)
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:])) + widths[-1] * d_out


def check_identifiability(*, n_modules: int, n_context: int, d_in: int, hidden: Sequence[int], d_out: int) -> None:
    """Design rule: M <= N d_out (the context pins down z) < free teacher parameters (it cannot pin
    down a generic teacher, so out-of-distribution success needs module reuse). Raises ValueError."""
    observed, free = n_context * d_out, teacher_free_parameters(d_in, hidden, d_out)
    if not n_modules <= observed < free:
        raise ValueError(f"need n_modules ({n_modules}) <= n_context*d_out ({observed}) < free teacher "
                         f"parameters ({free}); change n_context")


# --------------------------------------------------------------------------- in-context sequences
@dataclass
class ICLBatch:
    """One batch of in-context tasks: N context pairs and Q queries per task (targets standardised)."""

    x_ctx: torch.Tensor  # (B, N, d_in)
    y_ctx: torch.Tensor  # (B, N, d_out)
    x_q: torch.Tensor  # (B, Q, d_in)
    y_q: torch.Tensor  # (B, Q, d_out)
    z: torch.Tensor  # (B, M) raw task latents (not divided by sqrt K)
    combo_idx: torch.Tensor  # (B,) index into the split's combination list

    def to(self, device: torch.device | str) -> ICLBatch:
        """The same batch with every tensor on ``device`` (drawn on the CPU, so identical on every device)."""
        return ICLBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


class ICLTaskSampler:
    """Sequences of context pairs followed by queries, from ID or OOD combinations of a split.

    Targets are standardised per output dimension with a mean and std estimated once from
    ``stats_tasks`` tasks of ``stats_combos`` (default: the split's ID combinations; a fixed generator),
    so they never depend on the OOD set. Two samplers whose splits share an OOD set and that are given
    the same teacher, ``stats_combos`` and ``stats_seed`` produce identical OOD batches from equal generators.
    """

    def __init__(self, teacher: Hyperteacher, split: Split, *, n_context: int = 12, n_query: int = 8,
                 standardize: bool = True, stats_tasks: int = 4096, stats_seed: int = 0,
                 stats_combos: Sequence[Combo] | None = None):
        if n_context < 1 or n_query < 1:
            raise ValueError(f"n_context and n_query must be >= 1, got {n_context}, {n_query}")
        if not split.id or not split.ood:
            raise ValueError("the split needs non-empty ID and OOD sets")
        self.teacher, self.split = teacher, split
        self.n_context, self.n_query = n_context, n_query
        self.y_mean, self.y_std = torch.zeros(teacher.d_out), torch.ones(teacher.d_out)
        if standardize:
            generator = torch.Generator().manual_seed(stats_seed)
            z, _ = teacher.sample_latents(split.id if stats_combos is None else stats_combos, stats_tasks, generator)
            with torch.no_grad():
                y = teacher(z, teacher.sample_inputs(stats_tasks, 16, generator))  # (tasks, 16, d_out)
            self.y_mean = y.mean(dim=(0, 1))
            self.y_std = y.std(dim=(0, 1)).clamp_min(1e-6)

    def combos(self, which: str) -> list[Combo]:
        if which not in ("id", "ood"):
            raise ValueError(f"which must be 'id' or 'ood', got {which!r}")
        return self.split.id if which == "id" else self.split.ood

    def sample(self, batch: int, which: str = "id", generator: torch.Generator | None = None,
               n_query: int | None = None) -> ICLBatch:
        """Fresh tasks (combination + weights) and fresh inputs; ``n_query`` overrides Q (evaluation)."""
        n_query = self.n_query if n_query is None else n_query
        z, idx = self.teacher.sample_latents(self.combos(which), batch, generator)
        x = self.teacher.sample_inputs(batch, self.n_context + n_query, generator)
        with torch.no_grad():
            y = (self.teacher(z, x) - self.y_mean) / self.y_std  # (B, N+Q, d_out)
        n = self.n_context
        return ICLBatch(x[:, :n], y[:, :n], x[:, n:], y[:, n:], z, idx)


# --------------------------------------------------------------------------- metric
def r2_per_task(y_hat: torch.Tensor, y: torch.Tensor, per_unit: bool = False) -> torch.Tensor:
    """Coefficient of determination of each task over its queries: y_hat, y (B, Q, d_out) -> (B,).

    Default (per task, summed over queries and outputs): R2_j = 1 - sum_{q,d} (y_hat - y)^2 / sum_{q,d} (y - mean_q y)^2.
    ``per_unit=True`` (the 2025 official code): mean over q, d of (y_hat - y)^2 / var_q(y)_{j,d}.
    Average the result over tasks; never pool tasks.
    """
    if y_hat.shape != y.shape or y.dim() != 3:
        raise ValueError(f"expected equal shapes (tasks, queries, d_out), got {tuple(y_hat.shape)}, {tuple(y.shape)}")
    err = (y_hat - y) ** 2
    dev = (y - y.mean(dim=1, keepdim=True)) ** 2
    if per_unit:
        return 1 - (err / dev.mean(dim=1, keepdim=True).clamp_min(1e-12)).mean(dim=(1, 2))
    return 1 - err.sum(dim=(1, 2)) / dev.sum(dim=(1, 2)).clamp_min(1e-12)
