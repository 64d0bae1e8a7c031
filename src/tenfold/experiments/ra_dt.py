"""RA-DT (Schmied et al., "Retrieval-Augmented Decision Transformer: External Memory for In-context
RL", arXiv 2410.07071) on Dark-Room: in-context RL on held-out goals.

Per seed: a seeded train / held-out goal split of a Dark-Room (quick: 7x7, H = 20; full: 9x9, H = 30); a tabular Q-learning
history per train goal; a Decision Transformer (single-episode context), Algorithm Distillation
(context of several consecutive history episodes) and RA-DT (DT + cross-attention to one retrieved
sub-trajectory, retriever = a frozen domain-agnostic embedder) trained on the histories; RA-DT without
own-trajectory exclusion retrained as an ablation. Evaluation: every method runs the held-out goals in
parallel for ``eval_episodes`` consecutive episodes; RA-DT's per-task memory starts empty and fills
with its own episodes. Eval-time ablations of the trained RA-DT: retrieval by similarity only (no
re-scoring) and random retrieval from the memory. Returns are normalised by each goal's optimal return.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tenfold import plotting
from tenfold.envs.dark_room import DarkRoomVecEnv, goal_split, optimal_return
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, paired_wins, seed_stats, stack_seeds
from tenfold.models.radt import RADT, AlgorithmDistillation, DecisionTransformer
from tenfold.models.retrieval import (EpisodicMemory, HopfieldEmbedder, TrajectoryMemory, embed_batched,
                                      query_dropout_mask, rescore)
from tenfold.tasks.learning_histories import STEP_FIELDS, episode_steps, q_learning_history, right_padded, slice_steps
from tenfold.train.loop import fit, warmup_cosine


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 7
    horizon: int = 20
    n_eval_goals: int = 12
    history_episodes: int = 100
    q_lr: float = 1.0
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    context: int = 8  # DT / RA-DT context in steps (4 tokens each)
    mem_past: int = 8  # retrieved window: past steps (incl. the anchor) ...
    mem_future: int = 8  # ... and future steps
    stride: int = 4  # cache stride (also the number of pooled steps of a key)
    min_seq_len: int = 4  # training: contexts with t < min_seq_len get a random same-task window
    eval_random_early: bool = False  # True: also at evaluation (t < min_seq_len -> random window); official: False
    candidates: int = 50
    top_k: int = 1
    w_task: float = 1.0
    w_util: float = 1.0
    sim_cutoff: float = 0.98
    query_dropout: float = 0.2
    dedup: bool = True
    p_empty_memory: float = 0.1
    radt_init: str = "scratch"  # "dt": start RA-DT from the trained DT's weights (config-only path, see card)
    embed_dim: int = 64
    embed_layers: int = 1
    embed_vocab: int = 512
    hopfield_beta: float = 100.0  # paper: 10 over BERT's vocabulary; a random 64-d codebook needs a sharper lookup (see card)
    ad_episodes: int = 2  # AD context in episodes of the (sub-sampled) history
    ad_every: int = 2  # AD keeps every n-th history episode
    train_steps: int = 1800
    ad_train_steps: int = 1800
    batch: int = 16
    lr: float = 1e-3  # 3e-4 left every model (AD included) under-trained at this budget; see the card
    weight_decay: float = 0.01
    clip: float = 0.25
    warmup: int = 100
    pool: int = 8192  # pre-computed RA-DT training queries (+ retrieved neighbours)
    eval_episodes: int = 20
    top_p: float = 0.5


PRESETS = {
    "smoke": Config(seeds=(0,), size=5, horizon=12, n_eval_goals=5, history_episodes=20, dim=32, context=6,
                    mem_past=4, mem_future=4, stride=3, min_seq_len=3, embed_dim=32, ad_episodes=2, ad_every=2,
                    train_steps=20, ad_train_steps=20, batch=8, pool=256, eval_episodes=4, candidates=10),
    "quick": Config(),
    "full": Config(seeds=(0, 1, 2, 3, 4), size=9, horizon=30, n_eval_goals=21, history_episodes=150, context=10,
                   mem_past=10, mem_future=10, stride=5, min_seq_len=5, ad_episodes=3, ad_every=3, train_steps=4000,
                   ad_train_steps=4000, batch=32, pool=65536, eval_episodes=40),
}

ARMS = ("dt", "ad", "radt", "radt_no_rescore", "radt_random", "radt_no_exclusion")


# ----------------------------------------------------------------------------- data
def _history_steps(hist) -> dict:
    tasks, episodes, horizon = hist.actions.shape
    return episode_steps(hist.states.reshape(tasks * episodes, horizon, 2),
                         hist.actions.reshape(tasks * episodes, horizon), hist.rewards.reshape(tasks * episodes, horizon))


def _ad_steps(hist, every: int) -> dict:
    """The sub-sampled history of each task as one long sequence: (tasks, episodes'*H)."""
    sub = hist.subsample(every)
    tasks, episodes, horizon = sub.actions.shape
    steps = episode_steps(sub.states.reshape(tasks * episodes, horizon, 2), sub.actions.reshape(-1, horizon),
                          sub.rewards.reshape(-1, horizon))
    return {n: v.reshape(tasks, episodes * horizon, *v.shape[2:]) for n, v in steps.items()}


# ----------------------------------------------------------------------------- training
def _train(model, batch_fn, steps: int, cfg: Config, gen: torch.Generator) -> list[float]:
    """AdamW with the Decision-Transformer schedule (warm-up multiplied into a cosine from step 0)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = fit(model, opt, lambda step: model.loss(*batch_fn(gen)), steps, clip=cfg.clip,
                 schedule=lambda step: warmup_cosine(step, warmup=cfg.warmup, decay_steps=steps, overlap=True))
    model.eval()
    return losses


def _dt_batches(steps: dict, cfg: Config):
    n_rows, horizon = steps["actions"].shape

    def batch(gen):
        rows = torch.randint(n_rows, (cfg.batch,), generator=gen)
        ends = torch.randint(horizon, (cfg.batch,), generator=gen)
        return (right_padded(steps, rows, ends, cfg.context),)
    return batch


def _ad_batches(ad: dict, cfg: Config):
    tasks, length = ad["actions"].shape
    ctx = cfg.ad_episodes * cfg.horizon

    def batch(gen):
        rows = torch.randint(tasks, (cfg.batch,), generator=gen)
        ends = torch.randint(length, (cfg.batch,), generator=gen)
        return (right_padded(ad, rows, ends, ctx),)
    return batch


def build_training_memory(steps: dict, episodes_per_task: int, embedder, cfg: Config) -> TrajectoryMemory:
    """All training episodes in one memory (task = goal, trajectory = episode), de-duplicated."""
    memory = TrajectoryMemory(embedder=embedder, dim=cfg.embed_dim, stride=cfg.stride, context=cfg.context,
                              past=cfg.mem_past, future=cfg.mem_future)
    rows = torch.arange(steps["actions"].shape[0])
    memory.add_episodes(steps, task=rows // episodes_per_task, traj=rows, returns=steps["rewards"].sum(-1))
    if cfg.dedup:
        memory.deduplicate(k=10, threshold=cfg.sim_cutoff)
    return memory


def precompute_retrieval(steps: dict, memory: TrajectoryMemory, episodes_per_task: int, cfg: Config,
                         gen: torch.Generator, *, exclude_own: bool = True) -> dict:
    """A pool of training contexts with their retrieved neighbour ids (the retriever is frozen, so
    queries, with seeded query dropout, and searches are done once)."""
    n_rows, horizon = steps["actions"].shape
    rows = torch.randint(n_rows, (cfg.pool,), generator=gen)
    ends = torch.randint(horizon, (cfg.pool,), generator=gen)
    task = rows // episodes_per_task
    keep = query_dropout_mask(cfg.pool, cfg.stride, cfg.query_dropout, gen)
    queries = embed_batched(memory.embedder, slice_steps(steps, rows, ends, cfg.context), keep)
    sim, cand = memory.index.search(queries, cfg.candidates, exclude_traj=rows if exclude_own else None,
                                    sim_cutoff=cfg.sim_cutoff)
    valid = cand >= 0
    same = (memory.index.task[cand.clamp_min(0)] == task[:, None]) & valid
    _, chosen = rescore(sim, valid, same_task=same, w_task=cfg.w_task, top_k=cfg.top_k)
    ids = torch.where(chosen >= 0, cand.gather(1, chosen.clamp_min(0)), -1)  # (P, k)
    # t < min_seq_len: a random window of the same task (another trajectory when excluding)
    early = ends < cfg.min_seq_len
    for i in torch.nonzero(early).flatten().tolist():
        pool = torch.nonzero((memory.index.task == task[i])
                             & ((memory.index.traj != rows[i]) if exclude_own else True)).flatten()
        if len(pool):
            ids[i] = pool[torch.randint(len(pool), (cfg.top_k,), generator=gen)]
    empty = torch.rand(cfg.pool, generator=gen) < cfg.p_empty_memory
    ids[empty] = -1
    chosen_ids = ids[:, 0].clamp_min(0)
    got = ids[:, 0] >= 0
    same = memory.index.task[chosen_ids] == task
    rewarded = memory.values["rewards"][chosen_ids].sum(-1) > 0  # the window shows the goal
    stats = {"same_task_fraction": float(same[got].float().mean()),
             "same_task_rewarded_fraction": float((same & rewarded)[got].float().mean()),
             "memory_rewarded_fraction": float((memory.values["rewards"].sum(-1) > 0).float().mean()),
             "same_traj_fraction": float((memory.index.traj[chosen_ids] == rows)[got].float().mean())}
    return {"rows": rows, "ends": ends, "ids": ids, "stats": stats}


def _radt_batches(steps: dict, memory: TrajectoryMemory, pool: dict, cfg: Config):
    size = len(pool["rows"])

    def batch(gen):
        pick = torch.randint(size, (cfg.batch,), generator=gen)
        ctx = right_padded(steps, pool["rows"][pick], pool["ends"][pick], cfg.context)
        return ctx, memory.windows(pool["ids"][pick])
    return batch


# ----------------------------------------------------------------------------- evaluation
def _empty_episode(n: int, horizon: int) -> dict:
    return {"states": torch.zeros(n, horizon, 2, dtype=torch.long), "actions": torch.zeros(n, horizon, dtype=torch.long),
            "rewards": torch.zeros(n, horizon, dtype=torch.long), "rtg": torch.zeros(n, horizon, dtype=torch.long),
            "timesteps": torch.arange(horizon).expand(n, horizon).clone(), "mask": torch.ones(n, horizon, dtype=torch.bool)}


def evaluate_in_context(kind: str, model, goals: np.ndarray, cfg: Config, target: int, gen: torch.Generator, *,
                        embedder=None, mode: str = "rescore", episodes: int | None = None,
                        prefill: dict | None = None) -> tuple[list[list[float]], list[list[bool]]]:
    """Run ``episodes`` (default ``eval_episodes``) consecutive episodes on every goal in parallel.

    Returns (raw returns (episodes, goals), repeated (episodes, goals): the episode's action sequence
    equals the previous episode's on that goal). ``prefill`` (steps shaped (goals, H)) is written into
    RA-DT's episodic memory before the first episode (the oracle-memory diagnostic)."""
    n, horizon = len(goals), cfg.horizon
    env = DarkRoomVecEnv(goals=goals, size=cfg.size, horizon=horizon)
    memory = None
    if kind == "radt":
        memory = EpisodicMemory(num_tasks=n, embedder=embedder, dim=cfg.embed_dim, stride=cfg.stride,
                                context=cfg.context, past=cfg.mem_past, future=cfg.mem_future)
        if prefill is not None:
            memory.add_episodes(prefill)
    history: list[dict] = []  # AD: all past episodes
    returns, repeated = [], []
    rows = torch.arange(n)
    for _ in range(episodes or cfg.eval_episodes):
        ep = _empty_episode(n, horizon)
        obs, _ = env.reset()
        got = torch.zeros(n, dtype=torch.long)
        for t in range(horizon):
            ep["states"][:, t] = torch.from_numpy(obs)
            ep["rtg"][:, t] = (target - got).clamp_min(0)
            action = _policy_step(kind, model, ep, history, t, cfg, gen, memory, mode, rows)
            obs, reward, _, _, _ = env.step(action.numpy())
            ep["actions"][:, t] = action
            ep["rewards"][:, t] = torch.from_numpy(reward).long()
            got += ep["rewards"][:, t]
        returns.append(got.float().tolist())
        same = (ep["actions"] == history[-1]["actions"]).all(-1) if history else torch.zeros(n, dtype=torch.bool)
        repeated.append(same.tolist())
        done = episode_steps(ep["states"], ep["actions"], ep["rewards"])
        history.append(done)
        if memory is not None:
            memory.add_episodes(done)
    return returns, repeated


def optimal_episodes(goals: np.ndarray, cfg: Config) -> dict:
    """One optimal episode per goal (x first, then y, then stay): steps shaped (goals, H)."""
    env = DarkRoomVecEnv(goals=goals, size=cfg.size, horizon=cfg.horizon)
    obs, _ = env.reset()
    states, actions, rewards = [], [], []
    goal = np.asarray(goals)
    for _ in range(cfg.horizon):
        dx, dy = goal[:, 0] - obs[:, 0], goal[:, 1] - obs[:, 1]
        act = np.where(dx > 0, 1, np.where(dx < 0, 3, np.where(dy > 0, 2, np.where(dy < 0, 0, 4))))
        states.append(obs.copy())
        obs, rew, _, _, _ = env.step(act)
        actions.append(act)
        rewards.append(rew)
    return episode_steps(np.stack(states, 1), np.stack(actions, 1), np.stack(rewards, 1))


def found_before(raw: np.ndarray) -> np.ndarray:
    """(episodes, goals) raw returns -> True where an earlier episode on that goal had a reward."""
    found = np.maximum.accumulate(raw > 0, axis=0)
    return np.vstack([np.zeros((1, raw.shape[1]), dtype=bool), found[:-1]])


def _policy_step(kind, model, ep, history, t, cfg, gen, memory, mode, rows):
    n = len(rows)
    ends = torch.full((n,), t)
    if kind == "ad":
        ctx_len = cfg.ad_episodes * cfg.horizon
        past = [h for h in history[-(cfg.ad_episodes):]]
        seq = {f: torch.cat([h[f] for h in past] + [ep[f][:, :t + 1]], dim=1) for f in STEP_FIELDS}
        seq = {f: v[:, -ctx_len:] for f, v in seq.items()}
        last = torch.full((n,), seq["actions"].shape[1] - 1)
        return model.act(seq, last, top_p=cfg.top_p, generator=gen)
    ctx = right_padded(ep, rows, ends, cfg.context)
    last = torch.full((n,), min(t, cfg.context - 1))
    mem = None
    if kind == "radt" and len(memory):
        if mode == "random" or (cfg.eval_random_early and t < cfg.min_seq_len):
            mem = memory.retrieve(None, mode="random", top_k=cfg.top_k, generator=gen)
        else:
            query = memory.embedder(slice_steps(ep, rows, ends, cfg.context))
            mem = memory.retrieve(query, candidates=cfg.candidates, top_k=cfg.top_k, w_util=cfg.w_util, mode=mode)
    return model.act(ctx, last, mem, top_p=cfg.top_p, generator=gen)


# ----------------------------------------------------------------------------- one seed
def run_seed(cfg: Config, ctx: RunContext) -> dict:
    if cfg.radt_init not in ("scratch", "dt"):
        raise ValueError(f"radt_init must be 'scratch' or 'dt', got {cfg.radt_init!r}")
    gen = torch.Generator().manual_seed(ctx.seed)
    cpu0 = time.process_time()
    train_goals, eval_goals = goal_split(cfg.size, cfg.n_eval_goals, seed=ctx.seed)
    hist = q_learning_history(train_goals, size=cfg.size, horizon=cfg.horizon, episodes=cfg.history_episodes,
                              lr=cfg.q_lr, seed=ctx.seed)
    steps = _history_steps(hist)
    ad_steps = _ad_steps(hist, cfg.ad_every)
    opt_train = np.array([optimal_return(cfg.size, cfg.horizon, g) for g in train_goals], dtype=float)
    opt_eval = np.array([optimal_return(cfg.size, cfg.horizon, g) for g in eval_goals], dtype=float)
    target = int(round(opt_train.mean()))
    size = (cfg.size, cfg.size)
    common = dict(size=size, horizon=cfg.horizon, max_rtg=cfg.horizon, dim=cfg.dim, num_layers=cfg.num_layers,
                  num_heads=cfg.num_heads)
    record = {"history_return_first10": float((hist.returns[:, :10] / opt_train[:, None]).mean()),
              "history_return_last10": float((hist.returns[:, -10:] / opt_train[:, None]).mean()),
              "target_return": target, "timing": {}}

    def timed(name, fn):
        start = time.process_time()
        out = fn()
        record["timing"][name] = time.process_time() - start
        return out

    torch.manual_seed(ctx.seed)
    dt = DecisionTransformer(context=cfg.context, **common)
    record["loss_dt"] = timed("train_dt", lambda: _train(dt, _dt_batches(steps, cfg), cfg.train_steps, cfg, gen))[-50:]
    ad = AlgorithmDistillation(context=cfg.ad_episodes * cfg.horizon, **common)
    record["loss_ad"] = timed("train_ad", lambda: _train(ad, _ad_batches(ad_steps, cfg), cfg.ad_train_steps, cfg, gen))[-50:]

    embedder = HopfieldEmbedder(size=size, max_rtg=cfg.horizon, dim=cfg.embed_dim, vocab=cfg.embed_vocab,
                                beta=cfg.hopfield_beta, num_layers=cfg.embed_layers, max_steps=cfg.context,
                                pool_steps=cfg.stride, seed=ctx.seed)
    memory = timed("build_memory", lambda: build_training_memory(steps, hist.num_episodes, embedder, cfg))
    record["memory_size"] = len(memory)
    record["memory_size_before_dedup"] = hist.num_tasks * hist.num_episodes * (cfg.horizon // cfg.stride)
    models = {}
    for name, exclude in (("radt", True), ("radt_no_exclusion", False)):
        pool = timed(f"retrieve_{name}", lambda: precompute_retrieval(steps, memory, hist.num_episodes, cfg, gen,
                                                                       exclude_own=exclude))
        record[f"retrieval_{name}"] = pool["stats"]
        model = RADT(context=cfg.context, memory_steps=cfg.top_k * (cfg.mem_past + cfg.mem_future), **common)
        if cfg.radt_init == "dt":
            model.load_decision_transformer(dt)
        record[f"loss_{name}"] = timed(f"train_{name}", lambda: _train(
            model, _radt_batches(steps, memory, pool, cfg), cfg.train_steps, cfg, gen))[-50:]
        models[name] = model

    runs = {"dt": ("dt", dt, "rescore"), "ad": ("ad", ad, "rescore"), "radt": ("radt", models["radt"], "rescore"),
            "radt_no_rescore": ("radt", models["radt"], "similarity"),
            "radt_random": ("radt", models["radt"], "random"),
            "radt_no_exclusion": ("radt", models["radt_no_exclusion"], "rescore")}
    record["found_last5"], record["repeat_last5"] = {}, {}
    for arm, (kind, model, mode) in runs.items():
        raw, rep = timed(f"eval_{arm}", lambda: evaluate_in_context(kind, model, eval_goals, cfg, target, gen,
                                                                    embedder=embedder, mode=mode))
        raw = np.asarray(raw)
        record[arm] = (raw / opt_eval[None, :]).mean(axis=1).tolist()  # (episodes,)
        record["found_last5"][arm] = float(found_before(raw)[-5:].mean())
        record["repeat_last5"][arm] = float(np.asarray(rep)[-5:].mean())
    # diagnostic: RA-DT with one optimal episode per held-out goal already in its memory
    raw, _ = timed("eval_oracle", lambda: evaluate_in_context(
        "radt", models["radt"], eval_goals, cfg, target, gen, embedder=embedder, episodes=2,
        prefill=optimal_episodes(eval_goals, cfg)))
    record["radt_oracle_memory"] = float((np.asarray(raw) / opt_eval[None, :]).mean())
    record["tokens"] = {"dt": 4 * cfg.context, "radt_own": 4 * cfg.context,
                        "radt_memory": 4 * cfg.top_k * (cfg.mem_past + cfg.mem_future),
                        "ad": 3 * cfg.ad_episodes * cfg.horizon}
    record["cpu_s"] = time.process_time() - cpu0
    return record


# ----------------------------------------------------------------------------- evaluation over seeds
def _last5(curves: np.ndarray) -> np.ndarray:
    return curves[:, -5:].mean(axis=1)


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    curves = {arm: stack_seeds(records, arm) for arm in ARMS}  # (seeds, episodes)
    last5 = {arm: _last5(c) for arm, c in curves.items()}
    first = {arm: c[:, 0] for arm, c in curves.items()}
    tokens = records[sorted(records)[0]]["tokens"]
    fraction = tokens["radt_own"] / tokens["ad"]
    metrics = {
        "last5": {arm: seed_stats(v) for arm, v in last5.items()},
        "episode1": {arm: seed_stats(v) for arm, v in first.items()},
        "curves_mean": {arm: c.mean(axis=0).tolist() for arm, c in curves.items()},
        "tokens": tokens,
        "context_fraction_own": fraction,
        "context_fraction_with_memory": (tokens["radt_own"] + tokens["radt_memory"]) / tokens["ad"],
        "history_return": {"first10": seed_stats([r["history_return_first10"] for r in records.values()]),
                           "last10": seed_stats([r["history_return_last10"] for r in records.values()])},
        "memory_size": seed_stats([r["memory_size"] for r in records.values()]),
        "retrieval_same_task": seed_stats([r["retrieval_radt"]["same_task_fraction"] for r in records.values()]),
        "retrieval_same_task_rewarded": seed_stats(
            [r["retrieval_radt"].get("same_task_rewarded_fraction", math.nan) for r in records.values()]),
        "memory_rewarded": seed_stats([r["retrieval_radt"].get("memory_rewarded_fraction", math.nan)
                                       for r in records.values()]),
        "found_before_last5": {arm: seed_stats([r["found_last5"][arm] for r in records.values()]) for arm in ARMS},
        "repeat_last5": {arm: seed_stats([r["repeat_last5"][arm] for r in records.values()]) for arm in ARMS},
        "radt_oracle_memory": seed_stats([r["radt_oracle_memory"] for r in records.values()]),
        "retrieval_same_traj_no_exclusion": seed_stats(
            [r["retrieval_radt_no_exclusion"]["same_traj_fraction"] for r in records.values()]),
        "radt_wins_over_dt": paired_wins(last5["radt"], last5["dt"] + 0.2),
        "cpu_s": seed_stats([r["cpu_s"] for r in records.values()]),
        "timing": {k: seed_stats([r["timing"][k] for r in records.values()]) for k in records[sorted(records)[0]]["timing"]},
    }
    mean = {arm: float(v.mean()) for arm, v in last5.items()}
    dt_curve = curves["dt"]
    measured = {
        "ra-dt.icl": mean["radt"],
        "ra-dt.beats-dt": mean["radt"] - mean["dt"],
        "ra-dt.vs-ad": mean["radt"] - mean["ad"],
        "ra-dt.context-fraction": fraction,
        "ra-dt.dt-flat": float((_last5(dt_curve) - dt_curve[:, :5].mean(1)).mean()),
        "ra-dt.ablation-no-rescore": mean["radt"] - mean["radt_no_rescore"],
        "ra-dt.ablation-no-exclusion": mean["radt"] - mean["radt_no_exclusion"],
        "ra-dt.ablation-random": mean["radt"] - mean["radt_random"],
    }
    fig, ax = plotting.figure(width=6.0)
    episodes = np.arange(1, curves["dt"].shape[1] + 1)
    labels = {"dt": "DT", "ad": "AD", "radt": "RA-DT", "radt_no_rescore": "RA-DT no re-scoring",
              "radt_random": "RA-DT random retrieval", "radt_no_exclusion": "RA-DT no exclusion"}
    for arm in ARMS:
        plotting.band(ax, episodes, curves[arm], label=labels[arm])
    ax.set(xlabel="evaluation episode", ylabel="return / optimal", title="Dark-Room held-out goals")
    ax.legend(fontsize=7)
    return Evaluation(measured=measured, metrics=metrics, figures=[plotting.save(fig, out_dir, "returns.png")])


# ----------------------------------------------------------------------------- bench
def bench(quick: bool = True) -> list:
    """Retrieval latency per evaluation step against memory size: exact torch search (top-50 of a batch
    of 21 queries) vs the RA-DT policy forward at batch 21, and faiss IndexFlatIP vs torch where installed."""
    from tenfold.models.retrieval import ExactIndex, faiss_available
    from tenfold.utils.bench import compare

    torch.manual_seed(0)
    cfg = Config()
    model = RADT(size=(9, 9), horizon=30, max_rtg=30, context=10, memory_steps=20).eval()
    batch = 21
    ctx = {"states": torch.randint(0, 9, (batch, 10, 2)), "actions": torch.randint(0, 5, (batch, 10)),
           "rewards": torch.zeros(batch, 10, dtype=torch.long), "rtg": torch.randint(0, 30, (batch, 10)),
           "timesteps": torch.arange(10).expand(batch, 10), "mask": torch.ones(batch, 10, dtype=torch.bool)}
    mem = {k: torch.cat([v, v], 1) for k, v in ctx.items()}
    rows = []
    sizes = (1_000, 10_000, 50_000) if quick else (1_000, 10_000, 100_000, 500_000)
    for n in sizes:
        keys, queries = torch.randn(n, cfg.embed_dim), torch.randn(batch, cfg.embed_dim)
        index = ExactIndex(dim=cfg.embed_dim)
        index.add(keys)
        with torch.no_grad():
            rows.append(compare(f"retrieval_step_N{n}", ("policy_forward_b21", lambda: model(ctx, mem)),
                                ("torch_exact_top50", lambda: index.search(queries, 50)), repeats=7, memory_size=n))
        if faiss_available():
            import faiss
            fidx = faiss.IndexFlatIP(cfg.embed_dim)
            fidx.add(torch.nn.functional.normalize(keys, dim=-1).numpy())
            qn = torch.nn.functional.normalize(queries, dim=-1).numpy()
            rows.append(compare(f"faiss_vs_torch_N{n}", ("torch_exact_top50", lambda: index.search(queries, 50)),
                                ("faiss_flatip_top50", lambda: fidx.search(qn, 50)), repeats=7, memory_size=n))
    return rows


CLAIMS = (
    ClaimSpec("ra-dt.icl", "RA-DT's mean normalised return over the last 5 of the consecutive evaluation episodes on "
              "held-out goals is at least half the optimal return",
              "RA-DT improves in-context over 40 trials on held-out Dark-Room goals and ends highest", ">= 0.5"),
    ClaimSpec("ra-dt.beats-dt", "RA-DT last-5 return minus plain DT last-5 return (fractions of optimal)",
              "DT without in-context learning stays low; RA-DT ends far above it", ">= 0.2"),
    ClaimSpec("ra-dt.vs-ad", "RA-DT last-5 return minus AD last-5 return",
              "RA-DT outperforms baselines (incl. AD) on grid worlds", ">= 0.0"),
    ClaimSpec("ra-dt.context-fraction", "RA-DT's own context tokens / AD's context tokens",
              "RA-DT uses only a fraction of the baselines' context length", "<= 0.5"),
    ClaimSpec("ra-dt.dt-flat", "DT last-5 minus DT mean of episodes 1-5 (no in-context improvement)",
              "DT cannot improve in-context", "<= 0.1"),
    ClaimSpec("ra-dt.ablation-no-rescore", "full RA-DT last-5 minus RA-DT retrieving by similarity only (no "
              "utility re-scoring at evaluation)", "re-weighting by utility helps", ">= 0.0"),
    ClaimSpec("ra-dt.ablation-no-exclusion", "full RA-DT last-5 minus RA-DT trained without excluding the query's "
              "own trajectory", "without exclusion the model copies its own future and in-context learning suffers",
              ">= 0.0"),
    ClaimSpec("ra-dt.ablation-random", "full RA-DT last-5 minus RA-DT with random retrieval from the memory",
              "retrieval beats random retrieval", ">= 0.0"),
)

EXPERIMENT = Experiment(
    name="ra-dt", paper="Retrieval-Augmented Decision Transformer: External Memory for In-context RL "
    "(Schmied et al., arXiv 2410.07071)", presets=PRESETS, run_seed=run_seed, evaluate=evaluate, quick_minutes=6.0,
    claims=CLAIMS,
    bench=bench,
)
