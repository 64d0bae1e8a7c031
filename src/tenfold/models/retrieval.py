"""The retrieval stack of RA-DT (Schmied et al., "Retrieval-Augmented Decision Transformer: External
Memory for In-context RL", arXiv 2410.07071): frozen embedders, an exact cosine index with stable
tie-breaking (optional faiss backend), exclusion of the query's own trajectory, de-duplication,
relevance + utility re-scoring, query dropout, and the per-task episodic evaluation memory.

Sub-trajectories are dicts of tensors ("steps", see :mod:`tenfold.tasks.learning_histories`). Keys embed
the window *ending* at an anchor step i (steps i-C+1..i); values are the raw window of steps i-past+1 .. i+future (past and future).

Re-scoring (paper Sec. 3.2): s_j = minmax_l(sim_j) + w_task * 1[task_j = task_q] + w_util * minmax_l(u_j),
minmax over the l candidates, guarded to 0 when all candidates are equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.models.decision import CausalTransformer
from tenfold.tasks.learning_histories import cat_steps, index_steps, slice_steps
from tenfold.utils.checks import check_choice, check_int, check_positive


# ----------------------------------------------------------------------------- embedders
class FrozenHopfield(nn.Module):
    """FrozenHopfield (Paischer et al., 2022): a fixed random projection x P (P ~ N(0, in/out)), then a
    Hopfield retrieval over a frozen codebook E (V, D): out = softmax(beta * cos(x P, E)) E.

    beta -> 0 gives the codebook mean; beta -> inf the cosine-nearest codebook row. No parameters."""

    def __init__(self, *, in_dim: int, codebook: torch.Tensor, beta: float = 10.0, seed: int = 0):
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim}")
        if codebook.dim() != 2:
            raise ValueError(f"codebook must be (vocab, dim), got {tuple(codebook.shape)}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        out_dim = codebook.shape[1]
        gen = torch.Generator().manual_seed(seed)
        proj = torch.randn(in_dim, out_dim, generator=gen) * math.sqrt(in_dim / out_dim)
        self.register_buffer("proj", proj)
        self.register_buffer("codebook", codebook.detach().clone())
        self.beta = float(beta)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(x.float() @ self.proj, dim=-1)
        sim = z @ F.normalize(self.codebook, dim=-1).T  # (..., V)
        return torch.softmax(self.beta * sim, dim=-1) @ self.codebook


def pool_state_tokens(hidden: torch.Tensor, mask: torch.Tensor, pool_steps: int,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the state-token outputs hidden (B, L, D) over the last ``pool_steps`` steps that are
    valid; ``keep`` (B, pool_steps) zeroes whole tokens (query dropout) with no 1/(1-p) rescaling."""
    h, m = hidden[:, -pool_steps:], mask[:, -pool_steps:].float()  # (B, P, D), (B, P)
    weight = m if keep is None else m * keep.float()
    return (h * weight[..., None]).sum(1) / m.sum(1).clamp_min(1.0)[:, None]


def query_dropout_mask(batch: int, pool_steps: int, p: float, generator: torch.Generator | None = None):
    """Keep-mask (batch, pool_steps) for query dropout: each token dropped with probability p."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"query dropout p must be in [0, 1), got {p}")
    return torch.rand(batch, pool_steps, generator=generator) >= p


class HopfieldEmbedder(nn.Module):
    """Domain-agnostic frozen embedder g (the paper's BERT + FrozenHopfield, with a random codebook
    and a randomly initialised frozen causal transformer standing in for BERT's vocabulary and
    weights, which cannot be downloaded). Each modality is one-hot discretised (x, y; RTG 0..max_rtg;
    action; reward 0/1), mapped through its own FrozenHopfield into the codebook's space, the tokens
    (s, R, a, r) per step are encoded by the frozen transformer and the state-token outputs of the
    last ``pool_steps`` steps are mean-pooled."""

    def __init__(self, *, size: tuple[int, int], max_rtg: int, dim: int = 64, vocab: int = 512,
                 beta: float = 10.0, num_layers: int = 1, num_heads: int = 4, max_steps: int = 64,
                 pool_steps: int = 5, seed: int = 0):
        super().__init__()
        if pool_steps < 1 or num_layers < 0 or max_rtg < 1:
            raise ValueError("pool_steps must be >= 1, num_layers >= 0 and max_rtg >= 1")
        self.width, self.height = size
        self.max_rtg, self.pool_steps, self.dim = int(max_rtg), int(pool_steps), dim
        gen = torch.Generator().manual_seed(seed)
        codebook = torch.randn(vocab, dim, generator=gen)
        ins = {"states": self.width + self.height, "rtg": self.max_rtg + 1, "actions": 5, "rewards": 2}
        self.hopfield = nn.ModuleDict({name: FrozenHopfield(in_dim=d, codebook=codebook, beta=beta, seed=seed + i + 1)
                                       for i, (name, d) in enumerate(ins.items())})
        self.encoder = None
        if num_layers:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.encoder = CausalTransformer(dim=dim, num_layers=num_layers, num_heads=num_heads,
                                                 max_positions=4 * max_steps)
        self._build_tables()
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def _build_tables(self) -> None:
        """Every modality is discrete, so FrozenHopfield(one-hot) is a lookup table per value
        (identical outputs, computed once)."""
        xs, ys = torch.meshgrid(torch.arange(self.width), torch.arange(self.height), indexing="ij")
        cells = torch.stack([xs.flatten(), ys.flatten()], -1)  # (W*H, 2), index x * H + y
        hot = self._one_hot({"states": cells, "rtg": torch.arange(self.max_rtg + 1), "actions": torch.arange(5),
                             "rewards": torch.arange(2)})
        for name in ("states", "rtg", "actions", "rewards"):
            self.register_buffer(f"table_{name}", self.hopfield[name](hot[name]))

    def _one_hot(self, steps: dict) -> dict:
        s = steps["states"]
        return {"states": torch.cat([F.one_hot(s[..., 0].clamp(0, self.width - 1), self.width),
                                     F.one_hot(s[..., 1].clamp(0, self.height - 1), self.height)], -1),
                "rtg": F.one_hot(steps["rtg"].clamp(0, self.max_rtg), self.max_rtg + 1),
                "actions": F.one_hot(steps["actions"].clamp(0, 4), 5),
                "rewards": F.one_hot(steps["rewards"].clamp(0, 1), 2)}

    def token_embeddings(self, steps: dict) -> torch.Tensor:
        """(B, L) steps -> (B, L, 4, dim): FrozenHopfield embeddings of the (s, R, a, r) tokens."""
        s = steps["states"]
        cell = s[..., 0].clamp(0, self.width - 1) * self.height + s[..., 1].clamp(0, self.height - 1)
        return torch.stack([self.table_states[cell], self.table_rtg[steps["rtg"].clamp(0, self.max_rtg)],
                            self.table_actions[steps["actions"].clamp(0, 4)],
                            self.table_rewards[steps["rewards"].clamp(0, 1)]], 2)

    @torch.no_grad()
    def state_outputs(self, steps: dict) -> torch.Tensor:
        """(B, L) steps -> (B, L, dim) outputs at the state tokens."""
        tokens = self.token_embeddings(steps) * steps["mask"][..., None, None]  # (B, L, 4, D)
        if self.encoder is None:
            return tokens[:, :, 0]
        batch, length = tokens.shape[:2]
        out, _ = self.encoder(tokens.reshape(batch, 4 * length, self.dim))  # (B, 4L, D)
        return out.reshape(batch, length, 4, self.dim)[:, :, 0]  # state tokens

    @torch.no_grad()
    def forward(self, steps: dict, keep: torch.Tensor | None = None) -> torch.Tensor:
        return pool_state_tokens(self.state_outputs(steps), steps["mask"], self.pool_steps, keep)


@torch.no_grad()
def embed_batched(embedder: nn.Module, steps: dict, keep: torch.Tensor | None = None, chunk: int = 2048):
    n = steps["actions"].shape[0]
    return torch.cat([embedder(index_steps(steps, slice(i, i + chunk)),
                               None if keep is None else keep[i:i + chunk]) for i in range(0, n, chunk)]) \
        if n else torch.zeros(0, getattr(embedder, "dim", 1))


# ----------------------------------------------------------------------------- exact search
def _stable_topk_full(scores: torch.Tensor, valid: torch.Tensor, k: int, decimals: int):
    n = scores.shape[1]
    q = torch.round(scores.double() * 10 ** decimals).long()  # (B, N) quantised
    composite = q * n + (n - 1 - torch.arange(n))  # unique per row: larger = better, ties by smaller id
    composite = composite.masked_fill(~valid, torch.iinfo(torch.long).min)
    top, ids = torch.topk(composite, min(k, n), dim=1)
    ok = top > torch.iinfo(torch.long).min
    out_scores = torch.where(ok, q.gather(1, ids).double() / 10 ** decimals, -math.inf).float()
    return out_scores, torch.where(ok, ids, -1)


def _stable_topk(scores: torch.Tensor, valid: torch.Tensor, k: int, decimals: int, slack: int = 16):
    """Top-k of each row ordered by (-score, id), scores quantised to 10**-decimals so that last-ulp
    differences between backends / batch sizes cannot flip ties. Returns (scores, ids) with -inf / -1
    where fewer than k candidates are valid. A float top-(k + slack) pre-selects; rows whose tie at
    the k-th score may reach beyond it are redone exactly on the full row."""
    n = scores.shape[1]
    kk = min(n, k + slack)
    masked = scores.masked_fill(~valid, -math.inf)
    vals, idx = torch.topk(masked, kk, dim=1)
    sub_valid = torch.isfinite(vals)
    # candidate order inside the pre-selection must follow ids, not topk's positions
    q = torch.round(vals.double() * 10 ** decimals).long()
    composite = torch.where(sub_valid, q * (n + 1) + (n - idx), torch.iinfo(torch.long).min)
    top, pos = torch.topk(composite, min(k, kk), dim=1)
    ok = top > torch.iinfo(torch.long).min
    ids = torch.where(ok, idx.gather(1, pos), -1)
    out_scores = torch.where(ok, q.gather(1, pos).double() / 10 ** decimals, -math.inf).float()
    if kk < n:
        kth = q[:, min(k, kk) - 1]
        redo = torch.nonzero(sub_valid[:, -1] & (q[:, -1] >= kth)).flatten()
        if len(redo):
            out_scores[redo], ids[redo] = _stable_topk_full(scores[redo], valid[redo], k, decimals)
    if k > n:
        out_scores = F.pad(out_scores, (0, k - n), value=-math.inf)
        ids = F.pad(ids, (0, k - n), value=-1)
    return out_scores, ids


class ExactIndex:
    """Exact maximum-inner-product index (torch matmul). With ``normalize=True`` keys and queries are
    L2-normalised, so scores are cosines. Each key carries ``task``, ``traj`` and ``utility`` metadata.

    ``search(queries, k, exclude_traj=, allow_task=, sim_cutoff=)`` returns (scores, ids) in stable
    (-score, id) order, never an excluded trajectory, never a candidate with score > sim_cutoff."""

    backend = "torch"

    def __init__(self, *, dim: int, normalize: bool = True, decimals: int = 6):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.normalize, self.decimals = dim, normalize, decimals
        self.keys = torch.zeros(0, dim)
        self.task = torch.zeros(0, dtype=torch.long)
        self.traj = torch.zeros(0, dtype=torch.long)
        self.utility = torch.zeros(0)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def add(self, keys: torch.Tensor, *, task=None, traj=None, utility=None) -> torch.Tensor:
        """Append keys (N, dim) with metadata (N,); returns their ids."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (N, {self.dim}), got {tuple(keys.shape)}")
        n = keys.shape[0]
        keys = F.normalize(keys.float(), dim=-1) if self.normalize else keys.float()
        fill = lambda v, dtype: torch.full((n,), -1, dtype=dtype) if v is None else torch.as_tensor(v, dtype=dtype).reshape(n)  # noqa: E731
        start = len(self)
        self.keys = torch.cat([self.keys, keys])
        self.task = torch.cat([self.task, fill(task, torch.long)])
        self.traj = torch.cat([self.traj, fill(traj, torch.long)])
        self.utility = torch.cat([self.utility, fill(utility, torch.float)])
        self._on_add(keys)
        return torch.arange(start, start + n)

    def _on_add(self, keys: torch.Tensor) -> None:
        pass

    def keep(self, mask: torch.Tensor) -> torch.Tensor:
        """Keep only the keys where mask is True (rebuilds the index; ids are renumbered). Returns
        the old ids of the kept keys."""
        old = torch.nonzero(mask).flatten()
        keys = self.keys[old]
        self.keys, self.task, self.traj, self.utility = keys[:0], self.task[old], self.traj[old], self.utility[old]
        self._reset()
        self.keys = keys
        self._on_add(keys)
        return old

    def _reset(self) -> None:
        pass

    def _scores(self, queries: torch.Tensor) -> torch.Tensor:
        return queries @ self.keys.T  # (B, N)

    def _valid(self, batch: int, exclude_traj, allow_task) -> torch.Tensor:
        valid = torch.ones(batch, len(self), dtype=torch.bool)
        if exclude_traj is not None:
            valid &= self.traj[None, :] != torch.as_tensor(exclude_traj).reshape(batch, 1)
        if allow_task is not None:
            valid &= self.task[None, :] == torch.as_tensor(allow_task).reshape(batch, 1)
        return valid

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, *, exclude_traj=None, allow_task=None,
               sim_cutoff: float | None = None, chunk: int = 1024):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = F.normalize(queries.float(), dim=-1) if self.normalize else queries.float()
        outs = []
        for i in range(0, queries.shape[0], chunk):
            q = queries[i:i + chunk]
            ex = None if exclude_traj is None else torch.as_tensor(exclude_traj)[i:i + chunk]
            al = None if allow_task is None else torch.as_tensor(allow_task)[i:i + chunk]
            scores = self._scores(q)
            valid = self._valid(q.shape[0], ex, al)
            if sim_cutoff is not None:
                valid &= torch.round(scores.double() * 10 ** self.decimals) <= round(sim_cutoff * 10 ** self.decimals)
            outs.append(_stable_topk(scores, valid, k, self.decimals))
        if not outs:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


class FaissIndex(ExactIndex):
    """:class:`ExactIndex` with faiss ``IndexFlatIP`` (exact) computing the scores; the same masking,
    quantisation and stable ordering are applied, so both backends return the same neighbours.
    Needs the optional ``faiss-cpu`` package."""

    backend = "faiss"

    def __init__(self, *, dim: int, normalize: bool = True, decimals: int = 6):
        import faiss  # optional dependency

        super().__init__(dim=dim, normalize=normalize, decimals=decimals)
        self._faiss = faiss
        self._index = faiss.IndexFlatIP(dim)

    def _on_add(self, keys: torch.Tensor) -> None:
        self._index.add(keys.contiguous().numpy())

    def _reset(self) -> None:
        self._index.reset()

    def _scores(self, queries: torch.Tensor) -> torch.Tensor:
        n = len(self)
        scores, ids = self._index.search(queries.contiguous().numpy(), n)  # (B, N) sorted by score
        out = torch.empty(queries.shape[0], n)
        out.scatter_(1, torch.from_numpy(ids).long(), torch.from_numpy(scores))
        return out


def make_index(*, dim: int, backend: str = "torch", normalize: bool = True) -> ExactIndex:
    """``"torch"`` -> :class:`ExactIndex`; ``"faiss"`` -> :class:`FaissIndex` (needs faiss-cpu)."""
    if backend == "torch":
        return ExactIndex(dim=dim, normalize=normalize)
    if backend == "faiss":
        return FaissIndex(dim=dim, normalize=normalize)
    raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- dedup / re-scoring
@torch.no_grad()
def deduplicate(index: ExactIndex, *, k: int = 10, threshold: float = 0.98) -> torch.Tensor:
    """Greedy de-duplication: visiting keys in id order, each kept key deletes up to ``k`` of its
    nearest kept neighbours from the *same task* and *other trajectories* whose similarity exceeds
    ``threshold``. The index is rebuilt; returns the old ids of the kept keys."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keep = torch.ones(len(index), dtype=torch.bool)
    for task in torch.unique(index.task).tolist():
        ids = torch.nonzero(index.task == task).flatten()
        sims = index.keys[ids] @ index.keys[ids].T  # (n, n)
        sims = torch.round(sims.double() * 10 ** index.decimals) / 10 ** index.decimals
        other = index.traj[ids][:, None] != index.traj[ids][None, :]
        alive = torch.ones(len(ids), dtype=torch.bool)
        for i in range(len(ids)):
            if not alive[i]:
                continue
            row = torch.where(other[i] & alive, sims[i], -math.inf)
            top = torch.topk(row, min(k, len(ids))).indices
            alive[top[row[top] > threshold]] = False
        keep[ids] = alive
    return index.keep(keep)


def minmax(x: torch.Tensor, valid: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(x - min) / (max - min) over the valid entries of each row; 0 where max - min <= eps."""
    lo = torch.where(valid, x, math.inf).min(-1, keepdim=True).values
    hi = torch.where(valid, x, -math.inf).max(-1, keepdim=True).values
    span = hi - lo
    ok = torch.isfinite(span) & (span > eps)
    out = (x - lo) / torch.where(ok, span, torch.ones_like(span))
    return torch.where(ok & valid, out, torch.zeros_like(x))


def rescore(sim: torch.Tensor, valid: torch.Tensor, *, same_task: torch.Tensor | None = None,
            utility: torch.Tensor | None = None, w_task: float = 1.0, w_util: float = 1.0,
            top_k: int = 1, relevance: bool = True):
    """Relevance + utility re-scoring of l candidates (B, l): s = minmax(sim) + w_task * same_task +
    w_util * minmax(utility). Returns (scores (B, l), chosen (B, top_k) candidate positions, -1 where
    none is valid); ties go to the earlier candidate (candidates arrive in (-sim, id) order)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    score = minmax(sim, valid) if relevance else torch.zeros_like(sim)
    if same_task is not None:
        score = score + w_task * same_task.float()
    if utility is not None:
        score = score + w_util * minmax(utility.float(), valid)
    score = torch.where(valid, score, -math.inf)
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :top_k]  # (B, top_k)
    chosen = torch.where(torch.gather(valid, 1, order), order, -1)
    return score, chosen


# ----------------------------------------------------------------------------- memories
class TrajectoryMemory:
    """Keys (in an index) and value windows of sub-trajectories, with task / trajectory / return
    metadata. ``add_episodes`` walks each episode of length H with stride ``stride``:

    * ``anchors="official"`` (the official cache): anchors i = 0, stride, 2*stride, ... < H; key =
      g(steps max(0, i-C) .. max(2, i)-1), i.e. the context *before* step i (at least 2 steps); value =
      the past + future steps i-past .. i+future-1, shifted to lie inside the episode at full length
      (``full_context_len``).
    * ``anchors="end"``: anchors i = stride-1, 2*stride-1, ...; key = g(steps i-C+1..i); value = steps
      i-past+1..i+future, padded outside the episode."""

    def __init__(self, *, embedder: nn.Module, dim: int, stride: int, context: int, past: int, future: int,
                 backend: str = "torch", normalize: bool = True, anchors: str = "official"):
        check_positive(stride=stride, context=context, past=past)
        check_int("future", future, 0)
        check_choice("anchors", anchors, ("official", "end"))
        self.embedder, self.stride, self.context, self.past, self.future = embedder, stride, context, past, future
        self.anchors = anchors
        self.index = make_index(dim=dim, backend=backend, normalize=normalize)
        self.values: dict | None = None
        self.anchor = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.index)

    def add_episodes(self, steps: dict, *, task, traj, returns) -> None:
        """steps: (E, H) episodes; task, traj, returns: (E,)."""
        episodes, horizon = steps["actions"].shape
        key_ends, value_ends, anchors = self.anchor_steps(horizon)
        rows = torch.arange(episodes).repeat_interleave(len(anchors))  # (E*A,)
        ends = anchors.repeat(episodes)
        keys = embed_batched(self.embedder, slice_steps(steps, rows, key_ends.repeat(episodes), self.context))
        values = slice_steps(steps, rows, value_ends.repeat(episodes), self.past, self.future)
        expand = lambda v: torch.as_tensor(v).reshape(episodes).repeat_interleave(len(anchors))  # noqa: E731
        self.index.add(keys, task=expand(task), traj=expand(traj), utility=expand(returns).float())
        self.values = values if self.values is None else cat_steps([self.values, values])
        self.anchor = torch.cat([self.anchor, ends])

    def anchor_steps(self, horizon: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(last step of each key window, step at which each value window ends its past part, anchors)."""
        if self.anchors == "end":
            anchors = torch.arange(self.stride - 1, horizon, self.stride)
            return anchors, anchors, anchors
        anchors = torch.arange(0, horizon, self.stride)
        key_ends = anchors.clamp_min(min(2, horizon)) - 1
        value_starts = (anchors - self.past).clamp(0, max(0, horizon - self.past - self.future))
        return key_ends, value_starts + self.past - 1, anchors

    def keep(self, mask: torch.Tensor) -> None:
        old = self.index.keep(mask)
        self.values, self.anchor = index_steps(self.values, old), self.anchor[old]

    def deduplicate(self, *, k: int = 10, threshold: float = 0.98) -> None:
        old = deduplicate(self.index, k=k, threshold=threshold)
        self.values, self.anchor = index_steps(self.values, old), self.anchor[old]

    def windows(self, ids: torch.Tensor) -> dict:
        """Value windows for ids (B, k) concatenated along time in ascending (return, anchor) order;
        id -1 gives an empty (all-padding) window."""
        batch, k = ids.shape
        ret = torch.where(ids >= 0, self.index.utility[ids.clamp_min(0)], -math.inf)
        anchor = torch.where(ids >= 0, self.anchor[ids.clamp_min(0)], -1)
        order = torch.argsort(ret.double() * 1e6 + anchor.double(), dim=1, stable=True)
        ids = ids.gather(1, order)
        win = index_steps(self.values, ids.clamp_min(0).flatten())  # (B*k, W, ...)
        win["mask"] = win["mask"] & (ids.flatten() >= 0)[:, None]
        length = self.past + self.future
        return {n: v.reshape(batch, k * length, *v.shape[2:]) for n, v in win.items()}  # (B, k*W, ...)


class EpisodicMemory:
    """The evaluation memory of RA-DT: one :class:`TrajectoryMemory` per task, each starting empty and
    filled with the agent's own episodes (utility = episode return). ``retrieve`` re-scores the top
    ``candidates`` by minmax(sim) + w_util * minmax(return) and returns the best ``top_k`` windows.
    ``similarity="ip"`` (official: the eval cache is not normalised) scores by the raw inner product,
    ``"cosine"`` by the cosine; ``anchors`` as in :class:`TrajectoryMemory`."""

    def __init__(self, *, num_tasks: int, embedder: nn.Module, dim: int, stride: int, context: int, past: int,
                 future: int, backend: str = "torch", similarity: str = "ip", anchors: str = "official"):
        if similarity not in ("cosine", "ip"):
            raise ValueError(f"similarity must be 'cosine' or 'ip', got {similarity!r}")
        self.memories = [TrajectoryMemory(embedder=embedder, dim=dim, stride=stride, context=context, past=past,
                                          future=future, backend=backend, normalize=similarity == "cosine",
                                          anchors=anchors)
                         for _ in range(num_tasks)]
        self.embedder, self.episodes = embedder, 0

    def __len__(self) -> int:
        return sum(len(m) for m in self.memories)

    def add_episodes(self, steps: dict) -> None:
        """steps: (num_tasks, H), one finished episode per task."""
        returns = steps["rewards"].sum(-1)
        for task, memory in enumerate(self.memories):
            memory.add_episodes(index_steps(steps, slice(task, task + 1)), task=[task], traj=[self.episodes],
                                returns=returns[task:task + 1])
        self.episodes += 1

    @torch.no_grad()
    def retrieve(self, queries: torch.Tensor, *, candidates: int = 50, top_k: int = 1, w_util: float = 1.0,
                 mode: str = "rescore", generator: torch.Generator | None = None) -> dict | None:
        """queries (num_tasks, D) -> windows (num_tasks, top_k*W, ...), or None while memory is empty.
        ``mode``: "rescore" (relevance + utility), "similarity" (relevance only), "random"."""
        if mode not in ("rescore", "similarity", "random"):
            raise ValueError(f"mode must be 'rescore', 'similarity' or 'random', got {mode!r}")
        if len(self) == 0:
            return None
        out = []
        for task, memory in enumerate(self.memories):
            if mode == "random":
                ids = torch.randint(len(memory), (1, top_k), generator=generator)
            else:
                sim, cand = memory.index.search(queries[task:task + 1], candidates)
                valid = cand >= 0
                util = memory.index.utility[cand.clamp_min(0)] if mode == "rescore" else None
                _, chosen = rescore(sim, valid, utility=util, w_util=w_util, top_k=top_k)
                ids = torch.where(chosen >= 0, cand.gather(1, chosen.clamp_min(0)), -1)
            out.append(memory.windows(ids))
        return cat_steps(out)
