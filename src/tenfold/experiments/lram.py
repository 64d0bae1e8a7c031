"""LRAM (Schmied et al., 2024): xLSTM as the backbone of a multi-domain action model.

Part 1, inference latency: per-step latency of an xLSTM stepping recurrently against a Transformer
of matched size stepping with a KV cache, over context lengths and batch sizes, at one thread.
Part 2, performance: both backbones trained by behaviour cloning on one multi-domain dataset (Meta-
World with scripted experts, classic control with heuristics, GridNav with a shortest-path expert, all
with noise), evaluated return-conditioned on held-out reset seeds, scored as normalised returns.
Part 3, reported: the actions-in-context ablation and xLSTM evaluated with its recurrent state over
whole episodes (longer than the training context) against a sliding window of the training context.
Fair baselines: each backbone's learning rate is chosen from one grid on development seeds, scored on
development reset seeds (``TUNING``); the convergence of both arms' training loss is reported beside
the two comparison claims.
Devices: with ``--device cuda`` the models train and act on the GPU; the dataset is drawn on the CPU
(micro-batches moved), the environments step on the CPU, and the latency of part 1 is always timed on
the CPU (one thread, CPU time).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tenfold import plotting
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, seed_stats
from tenfold.models.decision import CausalTransformer
from tenfold.models.lram import LRAM, LRAMAgent, LRAMConfig
from tenfold.nn.xlstm import XLSTMStack, state_nbytes
from tenfold.tasks.offline_rl import (EVAL_SEED_BASE, OfflineDataset, TaskSpec, build_dataset, default_suite,
                                      make_env)
from tenfold.train.amp import Amp, autocast
from tenfold.train.loop import compare_convergence, fit, warmup_cosine
from tenfold.tuning import ArmTuning, TuningSpec, final_loss
from tenfold.utils.bench import time_fn
from tenfold.utils.checks import check_choice
from tenfold.utils.params import count_parameters
from tenfold.utils.threads import one_thread

PAPER = "A Large Recurrent Action Model: xLSTM enables Fast Inference for Robotics Tasks (arXiv 2410.22391)"


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    # data (fixed across seeds: the seeds vary the models' initialisation and batches)
    metaworld_tasks: tuple[str, ...] = ("reach-v3", "push-v3", "button-press-topdown-v3", "drawer-close-v3")
    classic_tasks: tuple[str, ...] = ("CartPole-v1", "MountainCar-v0", "Acrobot-v1")
    grid_goals: int = 4
    metaworld_steps: int = 100
    classic_steps: int = 200
    episodes_per_task: int = 20
    reference_episodes: int = 5
    data_seed: int = 0
    # models (matched parameters: an mLSTM block has about half a Transformer layer's parameters)
    dim: int = 64
    xlstm_blocks: int = 4
    transformer_layers: int = 2
    num_heads: int = 4
    context: int = 20
    standardize_states: bool = True  # per-task state mean/std from the data, as the Decision Transformer does
    # training
    steps: int = 600
    batch_size: int = 16
    # each backbone's AdamW lr, chosen from one grid on development seeds (TUNING below); the
    # actions-in-context ablation takes the xLSTM's
    lr_xlstm: float = 2.5e-4
    lr_transformer: float = 1.6e-2
    weight_decay: float = 0.01
    warmup: int = 60
    grad_clip: float = 1.0
    amp: Amp = "off"  # "bf16": training and evaluation forwards under bfloat16 autocast (tenfold.train.amp)
    # evaluation
    eval_episodes: int = 3
    ablation_seeds: int = 1  # the first this many seeds also run the ablations (actions in context, window)
    dev_eval_seed_base: int = 20_000  # tuning trials are scored on reset seeds from here (the claims': EVAL_SEED_BASE)
    # latency
    latency_dim: int = 128
    latency_xlstm_blocks: int = 4
    latency_transformer_layers: int = 2
    latency_contexts: tuple[int, ...] = (150, 600, 2400, 9600, 16384)
    latency_batches: tuple[int, ...] = (1, 16)
    latency_repeats: int = 25


PRESETS = {
    "smoke": Config(seeds=(0,), metaworld_tasks=(), classic_tasks=("CartPole-v1",), grid_goals=1,
                    metaworld_steps=20, classic_steps=20, episodes_per_task=2, reference_episodes=1, steps=4,
                    batch_size=4, warmup=2, eval_episodes=1, latency_contexts=(16, 64),
                    latency_batches=(1,), latency_repeats=2, latency_dim=32, context=4),
    "quick": Config(),
    "full": Config(seeds=(0, 1, 2, 3, 4), episodes_per_task=40, steps=4000, dim=128, eval_episodes=5, ablation_seeds=5,
                   latency_contexts=(150, 600, 2400, 9600, 16384, 38400), latency_repeats=50),
}

CLAIMS = (  # thresholds as fixed before the first runs; the statements name the tuning and the shared budget
    ClaimSpec("lram.latency-flat", "xLSTM per-step latency is flat in context: t(longest) / t(shortest) at batch 1",
              "xLSTM inference latency stays constant as the context grows", "<= 1.25"),
    ClaimSpec("lram.latency-speedup", "Transformer-with-KV-cache / xLSTM step latency at the longest context, "
              "batch 1, one thread",
              "xLSTM is faster than the Transformer at long contexts (latency grows with context for the Transformer)",
              ">= 3"),
    ClaimSpec("lram.state-memory", "KV-cache bytes / xLSTM state bytes at the longest context",
              "the Transformer's cache grows with context; xLSTM's state does not", ">= 10"),
    ClaimSpec("lram.parity", "xLSTM normalised score minus the Transformer's (mean over seeds, domains averaged), "
              "each backbone's lr chosen from one grid on development seeds; both train the fixed budget of "
              "`steps` updates on purpose",
              "xLSTM compares favourably to Transformers in performance at matched size", ">= -0.05"),
    ClaimSpec("lram.bc-works", "the lower of the two backbones' mean normalised scores, each backbone's lr chosen "
              "from one grid on development seeds; both train the fixed budget of `steps` updates on purpose",
              "both backbones learn the multi-domain suite from offline data", ">= 0.6"),
)

GRID_GOALS = ((8, 8), (8, 2), (2, 8), (5, 5))
ARMS = ("xlstm", "transformer")


def suite(cfg: Config) -> list[TaskSpec]:
    return default_suite(cfg.metaworld_tasks, cfg.classic_tasks, GRID_GOALS[: cfg.grid_goals],
                         metaworld_steps=cfg.metaworld_steps, classic_steps=cfg.classic_steps)


def dataset(cfg: Config) -> tuple[OfflineDataset, list[TaskSpec]]:
    tasks = suite(cfg)
    root = build_dataset(tasks, episodes=cfg.episodes_per_task, reference_episodes=cfg.reference_episodes,
                         seed=cfg.data_seed)
    return OfflineDataset(root), tasks


def model_config(cfg: Config, backbone: str, actions_in_context: bool = False) -> LRAMConfig:
    return LRAMConfig(backbone=backbone, dim=cfg.dim, num_heads=cfg.num_heads, context=cfg.context,
                      num_layers=cfg.xlstm_blocks if backbone == "xlstm" else cfg.transformer_layers,
                      max_timesteps=max(cfg.metaworld_steps, cfg.classic_steps, 64),
                      actions_in_context=actions_in_context)


# ---------------------------------------------------------------------------------------------
# training


def arm_lr(cfg: Config, backbone: str) -> float:
    """The AdamW learning rate of ``backbone`` ("xlstm" or "transformer"): the config field ``TUNING`` names."""
    return TUNING.value(cfg, backbone, name="backbone")


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on biases, norms or embeddings), as in the official recipe."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name.split(".")[0] else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: Config, data: OfflineDataset, model_cfg: LRAMConfig, seed: int, progress=lambda it: it,
          device: torch.device = torch.device("cpu")):
    """AdamW at the backbone's lr (:func:`arm_lr`) with gradient clipping and a linear warm-up multiplied
    into a cosine over all steps from step 0 (``warmup_cosine(overlap=True)``; see docs/methods/lram.md);
    each optimizer step sums one single-domain micro-batch per domain (domains cycled within the step, as
    in the official multi-domain loop). Micro-batches are drawn on the CPU and moved to ``device``."""
    torch.manual_seed(seed)
    model = LRAM(model_cfg).to(device)  # initialised on the CPU: the same weights on every device
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=arm_lr(cfg, model_cfg.backbone))
    generator = torch.Generator().manual_seed(seed)
    domains = sorted(data.domains)

    def accumulate(step: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64, device=device)  # the step's loss, summed in float64
        for domain in domains:
            batch = data.sample(domain, cfg.batch_size, cfg.context, model.tokenizer, model_cfg.max_act_dim, generator,
                                standardize_states=cfg.standardize_states)
            with autocast(cfg.amp, device):
                loss = model.loss(_on(batch, device)) / len(domains)
            loss.backward()
            total = total + loss.detach().double()  # on the device: no host sync per micro-batch
        return total

    losses = fit(model, optimizer, accumulate, cfg.steps, clip=cfg.grad_clip, progress=progress, backward=False,
                 schedule=partial(warmup_cosine, warmup=cfg.warmup, decay_steps=cfg.steps, overlap=True))
    return model.eval(), losses


def _on(batch: dict, device: torch.device) -> dict:
    """A micro-batch with its tensors moved to ``device`` (the reward scale stays a float)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


# ---------------------------------------------------------------------------------------------
# evaluation


class WindowAgent(LRAMAgent):
    """Re-runs the model over the last ``window`` timesteps each step (the training-context form)."""

    def __init__(self, model: LRAM, *, window: int, **kwargs):
        super().__init__(model, **kwargs)
        self.window = window

    def reset(self, target_return: float) -> None:
        super().reset(target_return)
        self.history = deque(maxlen=self.window)

    @torch.no_grad()
    def act(self, obs):
        self.history.append([self.observation(obs), self.return_to_go, 0.0])
        states = torch.from_numpy(np.stack([h[0] for h in self.history]))[None]  # (1, T, state_dim)
        returns = torch.tensor([[h[1] for h in self.history]])
        rewards = torch.tensor([[h[2] for h in self.history]])
        states, returns, rewards = (t.to(self.device) for t in (states, returns, rewards))  # the window at once
        logits = self.model(states, returns, rewards, self.scale)[0, -1, : self.act_dim]  # (act_dim, vocab)
        ids = logits.masked_fill(~self.allowed, float("-inf")).argmax(-1).cpu()  # to the environment, on the CPU
        return ids[0] if self.discrete else self.model.tokenizer.decode_continuous(ids)

    def observe(self, reward: float) -> None:
        self.history[-1][2] = reward
        self.return_to_go -= reward
        self.t += 1


def evaluate_model(model: LRAM, data: OfflineDataset, tasks: list[TaskSpec], episodes: int,
                   window: int | None = None, standardize_states: bool = False,
                   amp: str = "off", seed_base: int = EVAL_SEED_BASE) -> dict[str, dict[str, float]]:
    """Normalised return per domain and task on reset seeds ``seed_base + i`` (the evaluation seeds by
    default; tuning trials use development seeds), normalised by the expert's and a random policy's
    returns on the evaluation seeds (deterministic argmax; the model's forwards under ``autocast(amp)``
    on its device)."""
    import warnings

    warnings.filterwarnings("ignore")
    scores: dict[str, dict[str, float]] = {}
    for spec in tasks:
        info, entry = data.task_info(spec.domain, spec.name), data.domains[spec.domain]
        kwargs = dict(scale=entry["reward_scale"], discrete=spec.discrete, n_actions=spec.n_actions,
                      act_dim=spec.act_dim,
                      state_stats=data.state_stats(spec.domain, spec.name) if standardize_states else None)
        agent = WindowAgent(model, window=window, **kwargs) if window else LRAMAgent(model, **kwargs)
        env, returns = make_env(spec), []
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed_base + episode)
            agent.reset(info["target_return"])
            total = 0.0
            for _ in range(spec.max_steps):
                with autocast(amp, agent.device):
                    action = agent.act(obs)
                action = int(action) if spec.discrete else action.numpy()
                obs, reward, terminated, truncated, _ = env.step(action)
                with autocast(amp, agent.device):
                    agent.observe(float(reward))
                total += float(reward)
                if terminated or truncated:
                    break
            returns.append(total)
        env.close()
        span = info["expert_return"] - info["random_return"]  # no span: the task cannot be normalised (NaN)
        score = (float(np.mean(returns)) - info["random_return"]) / span if span > 0 else float("nan")
        scores.setdefault(spec.domain, {})[spec.name] = score
    return scores


def overall(scores: dict[str, dict[str, float]]) -> float:
    """Mean over domains of the mean over each domain's tasks."""
    return float(np.nanmean([np.nanmean(list(tasks.values())) for tasks in scores.values()]))


def evaluation_modes(arm: str, context: int, ablations: bool) -> dict[str, int | None]:
    """Label -> sliding window (timesteps) or None (stepping with the state). xLSTM is scored
    recurrently over whole episodes (its deployment form); the Transformer over a window of its training
    context re-run each step, which gives every token the position it had in training (its KV-cache
    stepping keeps stale positions once the window slides; scored as an ablation)."""
    if arm == "transformer":
        return {arm: context, **({"transformer-kv": None} if ablations else {})}
    return {arm: None, **({"xlstm-window": context} if ablations and arm == "xlstm" else {})}


def run_seed(cfg: Config, ctx: RunContext) -> dict:
    data, tasks = dataset(cfg)
    record: dict = {"scores": {}, "overall": {}, "loss": {}, "train_loss": {}, "params": {}, "train_s": {}}
    ablations = ctx.seed in cfg.seeds[: cfg.ablation_seeds]
    arms = [(arm, model_config(cfg, arm)) for arm in ARMS]
    if ablations:
        arms.append(("xlstm+actions", model_config(cfg, "xlstm", actions_in_context=True)))
    for name, model_cfg in arms:
        start = time.process_time()
        model, losses = train(cfg, data, model_cfg, ctx.seed, lambda it: ctx.progress(it, desc=name), ctx.device)
        record["train_s"][name] = time.process_time() - start
        record["loss"][name] = losses[:: max(1, len(losses) // 100)]
        if name in ARMS:
            record["train_loss"][name] = losses  # every step, for the convergence test
        record["params"][name] = count_parameters(model)
        evaluations = evaluation_modes(name, cfg.context, ablations)
        for label, window in evaluations.items():
            scores = evaluate_model(model, data, tasks, cfg.eval_episodes, window, cfg.standardize_states, cfg.amp)
            record["scores"][label], record["overall"][label] = scores, overall(scores)
    return record


# ---------------------------------------------------------------------------------------------
# latency


def latency_grid(cfg: Config) -> dict:
    """Per-token step latency of xLSTM (recurrent) and a matched Transformer (KV cache) per context
    length and batch size. The xLSTM state is built by running the context through the chunkwise
    form; the Transformer's cache is filled with random keys and values of the context's length
    (the cost of a step does not depend on the cached values). One thread, inference mode, CPU time
    of this thread. Settings are timed in rounds (each round: two warm-up steps, then the median of
    three back-to-back steps, so caches are warm as in deployment), and the median over rounds is
    kept, so a busy phase of the machine hits all context lengths alike."""
    torch.manual_seed(0)
    xlstm = XLSTMStack(dim=cfg.latency_dim, num_blocks=cfg.latency_xlstm_blocks, num_heads=4,
                       backend="chunkwise", chunk_size=64).eval()
    transformer = CausalTransformer(dim=cfg.latency_dim, num_layers=cfg.latency_transformer_layers, num_heads=4,
                                    max_positions=max(cfg.latency_contexts) + 5 * (cfg.latency_repeats + 2)).eval()
    with torch.inference_mode():
        settings = _latency_settings(cfg, xlstm, transformer)
        xlstm_step = xlstm.stepper()  # parameters gathered once, as an inference loop holds them
        steps = {"xlstm": lambda s: xlstm_step(s["x_t"], s["state"]),
                 "transformer": lambda s: transformer.step(s["x_t"], s["caches"])}
        times = {(i, arm): [] for i in range(len(settings)) for arm in steps}
        for _ in range(cfg.latency_repeats):  # rounds
            for i, setting in enumerate(settings):
                for arm, step in steps.items():
                    times[(i, arm)].append(time_fn(lambda: step(setting), warmup=2, repeats=3, clock="cpu"))
    rows = []
    for i, setting in enumerate(settings):
        xlstm_s, transformer_s = (float(np.median(times[(i, arm)])) for arm in steps)
        rows.append({"context": setting["context"], "batch": setting["batch"], "xlstm_s": xlstm_s,
                     "transformer_s": transformer_s, "ratio": transformer_s / xlstm_s,
                     "xlstm_state_bytes": state_nbytes(setting["state"]),
                     "kv_cache_bytes": sum(c.nbytes() for c in setting["caches"])})
    return {"rows": rows, "xlstm_params": count_parameters(xlstm), "transformer_params": count_parameters(transformer)}


def _latency_settings(cfg: Config, xlstm: XLSTMStack, transformer: CausalTransformer) -> list[dict]:
    """Per (context, batch): the xLSTM state after ``context`` tokens, filled KV caches, an input."""
    heads, head_dim = 4, cfg.latency_dim // 4
    settings, state, seen = [], None, 0
    for context in sorted(cfg.latency_contexts):
        _, state = xlstm(torch.randn(1, context - seen, cfg.latency_dim), state)  # continue to `context` tokens
        seen = context
        for batch in cfg.latency_batches:
            caches = transformer.new_state()
            for cache in caches:
                cache.fill(torch.randn(batch, heads, context, head_dim), torch.randn(batch, heads, context, head_dim))
            settings.append({"context": context, "batch": batch, "state": _expand_state(state, batch),
                             "caches": caches, "x_t": torch.randn(batch, cfg.latency_dim)})
    return settings


def _expand_state(state, batch: int):
    if isinstance(state, torch.Tensor):
        return state.expand(batch, *state.shape[1:]).contiguous()
    if isinstance(state, tuple):
        return type(state)(*(_expand_state(s, batch) for s in state))
    return [_expand_state(s, batch) for s in state]


# ---------------------------------------------------------------------------------------------
# evaluation of the seeds


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    with one_thread():
        latency = latency_grid(cfg)
    rows = latency["rows"]
    longest, shortest = max(cfg.latency_contexts), min(cfg.latency_contexts)
    at = {(r["context"], r["batch"]): r for r in rows}
    flat = at[(longest, 1)]["xlstm_s"] / at[(shortest, 1)]["xlstm_s"]
    ratio_long = at[(longest, 1)]["ratio"]
    memory_ratio = at[(longest, 1)]["kv_cache_bytes"] / at[(longest, 1)]["xlstm_state_bytes"]
    crossover = {b: next((r["context"] for r in sorted(rows, key=lambda r: r["context"])
                          if r["batch"] == b and r["ratio"] > 1), None) for b in cfg.latency_batches}

    seeds = sorted(records)
    arms = sorted({arm for s in seeds for arm in records[s]["overall"]})  # ablation arms: first seeds only
    runs = {arm: [s for s in seeds if arm in records[s]["overall"]] for arm in arms}
    overall_scores = {arm: [records[s]["overall"][arm] for s in runs[arm]] for arm in arms}
    mean = {arm: float(np.mean(v)) for arm, v in overall_scores.items()}
    metrics = {
        "normalized_score": {arm: {**seed_stats(v), "seeds": runs[arm]} for arm, v in overall_scores.items()},
        "per_domain": {arm: {d: seed_stats([np.nanmean(list(records[s]["scores"][arm][d].values())) for s in runs[arm]])
                             for d in records[runs[arm][0]]["scores"][arm]} for arm in arms},
        "params": records[seeds[0]]["params"],
        "train_cpu_s": {arm: seed_stats([records[s]["train_s"][arm] for s in seeds if arm in records[s]["train_s"]])
                        for arm in records[seeds[0]]["train_s"]},
        "latency": latency, "crossover_context": crossover,
    }
    measured = {
        "lram.latency-flat": flat,
        "lram.latency-speedup": ratio_long,
        "lram.state-memory": memory_ratio,
        "lram.parity": mean["xlstm"] - mean["transformer"],
        "lram.bc-works": min(mean["xlstm"], mean["transformer"]),
    }
    notes = {"lram.latency-flat": f"t({longest}) / t({shortest})",
             "lram.latency-speedup": f"at {longest} tokens", "lram.state-memory": f"at {longest} tokens"}
    figures = [_plot_latency(rows, cfg, out_dir), _plot_scores(records, out_dir), _plot_loss(records, out_dir)]
    return Evaluation(measured=measured, notes=notes, metrics=metrics, figures=figures,
                      convergence=comparison_convergence(records, mean))


def comparison_convergence(records: dict[int, dict], mean: dict[str, float]) -> dict:
    """The convergence of both backbones' training loss (last 10 % of the updates, every update kept),
    beside each comparison claim, with each arm's mean normalised score; the arms share the fixed budget
    of ``steps`` updates on purpose. Records from before every step's loss was kept give none."""
    if any("train_loss" not in r for r in records.values()):
        return {}
    losses = {arm: [records[s]["train_loss"][arm] for s in sorted(records)] for arm in ARMS}
    entry = compare_convergence(losses, shared_budget=True, scores={arm: mean[arm] for arm in ARMS})
    return {"lram.parity": entry, "lram.bc-works": entry}


def _plot_latency(rows, cfg: Config, out_dir: Path) -> str:
    fig, axes = plotting.figure(ncols=2)
    for batch in cfg.latency_batches:
        part = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["context"])
        contexts = [r["context"] for r in part]
        axes[0].plot(contexts, [1e3 * r["xlstm_s"] for r in part], "o-", label=f"xLSTM, batch {batch}")
        axes[0].plot(contexts, [1e3 * r["transformer_s"] for r in part], "s--", label=f"Transformer+KV, batch {batch}")
        axes[1].plot(contexts, [r["kv_cache_bytes"] / 2**20 for r in part], "s--", label=f"KV cache, batch {batch}")
        axes[1].plot(contexts, [r["xlstm_state_bytes"] / 2**20 for r in part], "o-", label=f"xLSTM state, batch {batch}")
    axes[0].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="ms per token", title="step latency, 1 thread")
    axes[1].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="MiB", title="inference state")
    for ax in axes:
        ax.legend(fontsize=7)
    return plotting.save(fig, out_dir, "latency.png")


def _plot_scores(records, out_dir: Path) -> str:
    seeds = sorted(records)
    arms = list(records[seeds[0]]["scores"])
    domains = list(records[seeds[0]]["scores"][arms[0]])
    fig, ax = plotting.figure(width=7)
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        runs = [s for s in seeds if arm in records[s]["scores"]]
        values = np.array([[np.nanmean(list(records[s]["scores"][arm][d].values())) for d in domains] for s in runs])
        label = arm if len(runs) == len(seeds) else f"{arm} ({len(runs)} seed)"
        ax.bar(np.arange(len(domains)) + i * width, values.mean(0), width, yerr=values.std(0), label=label, capsize=2)
    ax.set_xticks(np.arange(len(domains)) + width * (len(arms) - 1) / 2, domains)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set(ylabel="normalised return (expert = 1)", title="returns per domain (mean ± std over seeds)")
    ax.legend(fontsize=7)
    return plotting.save(fig, out_dir, "returns.png")


def _plot_loss(records, out_dir: Path) -> str:
    seeds = sorted(records)
    fig, ax = plotting.figure()
    for arm in records[seeds[0]]["loss"]:
        curves = [records[s]["loss"][arm] for s in seeds if arm in records[s]["loss"]]
        plotting.band(ax, list(range(len(curves[0]))), curves, label=arm)
    ax.set(xlabel="training progress (1% steps)", ylabel="action cross-entropy", yscale="log", title="training loss")
    ax.legend()
    return plotting.save(fig, out_dir, "loss.png")


def needs(cfg: Config) -> dict[str, str]:
    """Optional packages this config imports: Meta-World (with MuJoCo), from the ``rl`` extra."""
    return {"metaworld": "rl"} if cfg.metaworld_tasks else {}


# ---------------------------------------------------------------------------------------------
# tuning: each backbone's lr from one grid, on development seeds


def tune_trial(cfg: Config, arm: str, seed: int) -> dict:
    """One tuning trial on development seed ``seed`` (on the CPU): ``arm`` trained at its lr in ``cfg``,
    scored by its mean normalised score (its claim's scoring form: xLSTM recurrent over whole episodes,
    the Transformer on a sliding window of its context) on development reset seeds
    ``dev_eval_seed_base + i`` (not the claims' evaluation seeds); ``loss`` the mean training loss over
    the last 10 % of the updates."""
    check_choice("arm", arm, ARMS)
    data, tasks = dataset(cfg)
    model, losses = train(cfg, data, model_config(cfg, arm), seed)
    window = evaluation_modes(arm, cfg.context, ablations=False)[arm]
    scores = evaluate_model(model, data, tasks, cfg.eval_episodes, window, cfg.standardize_states, cfg.amp,
                            seed_base=cfg.dev_eval_seed_base)
    return {"score": overall(scores), "loss": final_loss(losses)}


LR_GRID = (1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)  # both backbones (see the record)
TUNING = TuningSpec(
    fields={arm: {"lr": f"lr_{arm}"} for arm in ARMS},
    trial=tune_trial,
    metric="mean normalised score (domains averaged) on eval_episodes development reset seeds per task "
           "(dev_eval_seed_base), each backbone in its claim's scoring form",
    record={  # `tenfold tune lram --arm ARM --grid lr=... --seeds 1000,1001 --preset quick`
        # the first grid was 2.5e-4 .. 4e-3; 1.25e-4 was added after the xLSTM won at 2.5e-4, and 8e-3, 1.6e-2,
        # 3.2e-2 after the Transformer won at 4e-3, then at 8e-3 (each point run for both backbones; the xLSTM's
        # 8e-3 .. 3.2e-2 after its defaults were set and its claims run: they did not change its choice). The
        # xLSTM's 2.5e-4 .. 1e-3 scores come from the sweep's log, rounded to 4 digits; at 3.2e-2 its loss is NaN
        "xlstm": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                           scores={"lr=0.000125": 0.531204, "lr=0.00025": 0.9925, "lr=0.0005": 0.8673,
                                   "lr=0.001": 0.7373, "lr=0.002": 0.833202, "lr=0.004": 0.840817,
                                   "lr=0.008": 0.844322, "lr=0.016": 0.817656, "lr=0.032": -0.045393},
                           chosen={"lr": 0.00025}),
        "transformer": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                                 scores={"lr=0.000125": 0.369958, "lr=0.00025": 0.509149, "lr=0.0005": 0.751316,
                                         "lr=0.001": 0.717966, "lr=0.002": 0.768862, "lr=0.004": 0.782068,
                                         "lr=0.008": 0.795713, "lr=0.016": 0.841013, "lr=0.032": 0.579962},
                                 chosen={"lr": 0.016}),
    },
)


EXPERIMENT = Experiment(
    name="lram", paper=PAPER, presets=PRESETS, run_seed=run_seed, evaluate=evaluate, quick_minutes=9.5,
    claims=CLAIMS, needs=needs, devices=("cpu", "cuda"), tuning=TUNING,
)
