"""TRecViT (arXiv 2412.14294) at CPU scale: accuracy on synthetic video tasks against ViViT baselines,
efficiency ratios as the number of frames grows, and constant-cost streaming.

Part 1, tasks (per seed): TRecViT-tiny, factorised ViViT (temporal MHSA + time embedding), joint
space-time ViViT and a no-time control (per-frame ViT, bag of frames) are trained on ``direction``
and ``count`` clips generated in code (fresh clips each step; a fixed held-out set). The baselines'
MLP widths are chosen so that every arm has TRecViT's parameter count (within a few percent). A
colour cue remembered over the clip (``memory``, TRecViT with the last frame's readout) is reported.

Part 2, efficiency (deterministic, once, on the meta device so no weights are allocated): forward
FLOPs and saved-activation bytes of the joint ViViT over TRecViT for T in ``efficiency_frames``;
and the paper-scale TRecViT-B vs ViViT-L ratios at 32 frames of 224^2, beside the paper's 3x/5x/12x.

Part 3, streaming (per seed): per-frame latency of ``TRecViT.step`` early and late in a stream, and
its state size, against a causal joint ViViT with a KV cache.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tenfold import plotting
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, seed_stats
from tenfold.models.trecvit import TRecViT, TRecViTConfig
from tenfold.models.vivit import PerFrameViT, ViViTFactorised, ViViTJoint
from tenfold.tasks.video import make_task, num_classes
from tenfold.train.amp import Amp, autocast
from tenfold.train.loop import compare_convergence, fit, warmup_cosine
from tenfold.tuning import ArmTuning, TuningSpec, final_loss
from tenfold.utils import activation_bytes, count_flops, count_parameters

ARMS = ("trecvit", "factorised", "joint", "no_time")
BASELINES = ("factorised", "joint")
CAPPED = "@cap"  # suffix of the baselines' runs at ``baseline_steps`` ("direction/factorised@cap")
CHANCE = {"direction": 0.25, "count": 0.2, "memory": 0.25}


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = ("direction", "count")
    arms: tuple[str, ...] = ARMS
    frames: int = 8
    size: int = 16
    patch: int = 4
    width: int = 32
    depth: int = 2
    num_heads: int = 2
    mlp_dim: int = 64
    rep_size: int = 64
    # TRecViT's Conv1D init variance * taps: 1.0 (LeCun) here, recurrentgemma's 0.01 leaves the temporal
    # conv ~10x attenuated and TRecViT on the direction plateau for 150 to 300+ steps (see the card)
    conv_init_scale: float = 1.0
    steps: int = 200  # training steps on 'direction'
    count_steps: int = 500  # training steps on 'count' (TRecViT's mean readout converges slower than the ViViTs)
    no_time_tasks: tuple[str, ...] = ("direction",)  # tasks that also train the no-time control
    batch: int = 32
    lr: float = 2e-3  # every arm on 'count', 'memory' and the no-time control (not tuned per arm)
    # 'direction': each compared arm's lr, chosen from one grid on development seeds (TUNING below)
    direction_lr_trecvit: float = 2e-3
    direction_lr_factorised: float = 1e-3
    direction_lr_joint: float = 5e-4
    # the ViViT baselines also train this many steps on 'direction' (the cap for "trained to convergence":
    # 4x TRecViT's steps); 0 skips those runs
    baseline_steps: int = 800
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    clip_norm: float = 1.0  # 0: no gradient clipping
    amp: Amp = "off"  # "bf16": training and evaluation forwards under bfloat16 autocast (tenfold.train.amp)
    flash_side: int = 4  # side of the flashing square in 'count'
    distractors: int = 1  # static distractor squares in 'direction'
    directions: int = 2  # 2 (+x, -x: a bag of frames is at chance) or 4 (+-x, +-y)
    min_speed: int = 1  # px per frame of the moving square in 'direction'
    eval_clips: int = 1024
    eval_seed: int = 12345
    dev_eval_seed: int = 54321  # the development set that tuning trials are scored on (not the claims' set)
    memory_frames: int = 8  # 0 skips the memory task
    memory_steps: int = 100
    efficiency_frames: tuple[int, ...] = (8, 16, 32, 64)
    paper_scale: bool = True  # TRecViT-B vs ViViT-L on meta
    stream_frames: int = 256  # 0 skips streaming
    stream_points: int = 16  # frames t at which a step is timed, spread evenly over the stream
    stream_repeats: int = 7


PRESETS = {
    "smoke": Config(seeds=(0,), steps=3, count_steps=3, baseline_steps=4, eval_clips=64, memory_steps=2,
                    efficiency_frames=(8, 16), paper_scale=False, stream_frames=24, stream_points=4, stream_repeats=1),
    "quick": Config(),
    "full": Config(seeds=(0, 1, 2, 3, 4), steps=600, count_steps=800, baseline_steps=2400, eval_clips=1024,
                   memory_frames=16,
                   memory_steps=400,
                   no_time_tasks=("direction", "count"),
                   efficiency_frames=(8, 16, 32, 64, 128, 256), stream_frames=512),
}


CLAIMS = (  # thresholds fixed before the final runs
    ClaimSpec("trecvit.direction-vs-vivit", "On 'direction', TRecViT is within 0.02 of the best ViViT baseline "
              "(factorised, joint) at matched parameter counts, each arm's lr chosen from one grid on development "
              "seeds, TRecViT after `steps` and the baselines trained to convergence or a cap of `baseline_steps` "
              "(4x; TRecViT acc - best baseline acc)",
              "TRecViT is on par with or better than ViViT-L on SSv2 / Kinetics-400", ">= -0.02"),
    ClaimSpec("trecvit.count-vs-vivit", "On 'count', TRecViT is within 0.02 of the best ViViT baseline (factorised, "
              "joint) at matched parameter counts; the arms share one lr and a fixed budget of `count_steps` on "
              "purpose, at which the slowest (TRecViT) reached the ViViTs' accuracy in development runs, its "
              "loss still falling slowly (TRecViT acc - best baseline acc)",
              "TRecViT is on par with or better than ViViT-L on SSv2 / Kinetics-400", ">= -0.02"),
    ClaimSpec("trecvit.no-time-near-chance", "The no-time control (bag of frames) cannot tell the direction's sign: "
              "its sign accuracy, given the right axis, stays near chance 0.5",
              "(control; order matters for direction)", "<= 0.6"),
    ClaimSpec("trecvit.ratios-grow", "Joint-ViViT/TRecViT FLOP and activation-memory ratios grow at every step in T "
              "(fraction of the steps between consecutive frame counts where they grow)",
              "joint attention is quadratic in T, TRecViT linear", ">= 1"),
    ClaimSpec("trecvit.flops-at-64", "Joint ViViT needs this many times TRecViT's forward FLOPs at 64 frames",
              "5x fewer FLOPs than ViViT-L", ">= 1.5"),
    ClaimSpec("trecvit.memory-at-64", "Joint ViViT saves this many times TRecViT's activation bytes at 64 frames "
              "(training forward, attention maps materialised)", "12x smaller memory footprint than ViViT-L", ">= 2.0"),
    ClaimSpec("trecvit.stream-latency-flat", "TRecViT per-frame step latency, late / early in a stream (median over "
              "the last / first quarter of the timed frames spread over the stream, timed interleaved after warm-up)",
              "constant per-frame cost (about 300 frames/s)", "<= 1.3"),
    ClaimSpec("trecvit.stream-state-flat", "TRecViT's streaming state bytes, largest / smallest over the stream",
              "constant memory in the number of frames", "<= 1.0"),
)

# ----------------------------------------------------------------------------------------------
# models at matched parameter counts


def _classes(cfg: Config, task: str) -> int:
    return cfg.directions if task == "direction" else num_classes(task)


def trecvit_config(cfg: Config, task: str, frames: int, **overrides) -> TRecViTConfig:
    fields = dict(width=cfg.width, depth=cfg.depth, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads, patch=cfg.patch,
                  image_size=cfg.size, rep_size=cfg.rep_size, num_classes=_classes(cfg, task), frames_per_clip=frames,
                  conv_init_scale=cfg.conv_init_scale)
    return TRecViTConfig(**{**fields, **overrides})


def _build(arm: str, cfg: Config, task: str, frames: int, mlp_dim: int):
    base = trecvit_config(cfg, task, frames, mlp_dim=mlp_dim)
    if arm == "trecvit":
        return TRecViT(base)
    if arm == "factorised":
        return ViViTFactorised(base)
    if arm == "no_time":
        return PerFrameViT(base)
    if arm == "joint":
        return ViViTJoint(width=cfg.width, depth=cfg.depth, mlp_dim=mlp_dim, num_heads=cfg.num_heads,
                          num_frames=frames, tubelet=1, patch=cfg.patch, image_size=cfg.size,
                          num_classes=_classes(cfg, task))
    raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")


def _params(arm: str, cfg: Config, task: str, frames: int, mlp_dim: int) -> int:
    return count_parameters(_build(arm, cfg, task, frames, mlp_dim))  # tiny models: cheap to build


def matched_mlp_dim(arm: str, cfg: Config, task: str, frames: int) -> int:
    """The MLP width giving ``arm`` TRecViT's parameter count (parameters are linear in mlp_dim)."""
    target = _params("trecvit", cfg, task, frames, cfg.mlp_dim)
    if arm == "trecvit":
        return cfg.mlp_dim
    p1, p2 = (_params(arm, cfg, task, frames, m) for m in (cfg.mlp_dim, cfg.mlp_dim + 1))
    return max(1, round(cfg.mlp_dim + (target - p1) / (p2 - p1)))


def build_arm(arm: str, cfg: Config, task: str, frames: int):
    return _build(arm, cfg, task, frames, matched_mlp_dim(arm, cfg, task, frames))


# ----------------------------------------------------------------------------------------------
# part 1: training on synthetic tasks


def task_kwargs(cfg: Config, task: str) -> dict:
    """The keyword arguments of ``make_task`` for ``task`` under ``cfg``."""
    if task == "direction":
        return {"distractors": cfg.distractors, "directions": cfg.directions, "min_speed": cfg.min_speed}
    return {"side": cfg.flash_side} if task == "count" else {}


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def evaluate_model(model, task: str, cfg: Config, frames: int, eval_seed: int | None = None) -> dict:
    """Accuracy on the fixed held-out set (``eval_seed``, default ``cfg.eval_seed``; drawn on the CPU, moved
    to the model's device), plus the sign accuracy for direction (right sign given the right axis)."""
    eval_seed = cfg.eval_seed if eval_seed is None else eval_seed
    video, labels = make_task(task, n=cfg.eval_clips, frames=frames, size=cfg.size, seed=eval_seed,
                              **task_kwargs(cfg, task))
    device = _device_of(model)
    video, labels = video.to(device), labels.to(device)
    model.eval()
    with torch.no_grad(), autocast(cfg.amp, device):
        preds = torch.cat([model(chunk).argmax(-1) for chunk in video.split(128)])
    model.train()
    result = {"acc": float((preds == labels).float().mean())}
    if task == "direction":  # labels 0,1 are the x axis, 2,3 the y axis
        same_axis = preds // 2 == labels // 2
        result["axis_acc"] = float(same_axis.float().mean())
        result["sign_acc"] = float((preds == labels)[same_axis].float().mean()) if same_axis.any() else 0.5
    return result


def arm_lr(cfg: Config, task: str, arm: str) -> float:
    """The learning rate of ``arm`` on ``task``: its tuned value on 'direction', else the shared ``cfg.lr``."""
    if task == "direction" and arm in TUNING.fields:
        return TUNING.value(cfg, arm)
    return cfg.lr


def train(model, task: str, cfg: Config, frames: int, steps: int, seed: int, lr: float | None = None,
          eval_seed: int | None = None) -> dict:
    """Train ``model`` on its device at ``lr`` (default ``cfg.lr``); batches are drawn on the CPU from the
    seed's generator (identical on every device) and moved there. Evaluated on ``eval_seed``'s set."""
    generator = torch.Generator().manual_seed(10_000 * seed + sum(map(ord, task)))
    device = _device_of(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr if lr is None else lr,
                                  weight_decay=cfg.weight_decay)
    warmup = max(1, round(cfg.warmup_frac * steps))  # then a cosine to 0 one step after the last

    def loss_fn(step: int) -> torch.Tensor:
        video, labels = make_task(task, n=cfg.batch, frames=frames, size=cfg.size, generator=generator,
                                  **task_kwargs(cfg, task))
        with autocast(cfg.amp, device):
            return F.cross_entropy(model(video.to(device)), labels.to(device))

    start = time.process_time()
    losses = fit(model, optimizer, loss_fn, steps, clip=cfg.clip_norm,
                 schedule=partial(warmup_cosine, warmup=warmup, decay_steps=max(0, steps - warmup)))
    cpu_s = time.process_time() - start
    return {**evaluate_model(model, task, cfg, frames, eval_seed), "losses": losses,
            "cpu_s_per_step": cpu_s / max(1, steps), "params": count_parameters(model)}


def run_tasks(cfg: Config, ctx: RunContext) -> dict:
    """Train every run of :func:`training_runs`; progress (and its ETA) counts all of them."""
    results = {}
    for run in ctx.progress(training_runs(cfg), desc="runs"):
        torch.manual_seed(ctx.seed)
        model = run.build().to(ctx.device)
        results[run.key] = train(model, run.task, cfg, run.frames, run.steps, ctx.seed, run.lr)
    return results


class TrainingRun(NamedTuple):
    key: str  # "task/arm" in the results
    build: Callable[[], nn.Module]
    task: str
    frames: int
    steps: int
    lr: float | None  # None: cfg.lr


def training_runs(cfg: Config) -> list[TrainingRun]:
    """Each (task, arm) run; then the ViViT baselines on 'direction' trained to convergence or the
    cap (``baseline_steps``); then the memory run."""
    runs = []
    for task in cfg.tasks:
        steps = cfg.count_steps if task == "count" else cfg.steps
        for arm in cfg.arms:
            if arm == "no_time" and task not in cfg.no_time_tasks:
                continue
            runs.append(TrainingRun(f"{task}/{arm}", partial(build_arm, arm, cfg, task, cfg.frames), task,
                                    cfg.frames, steps, arm_lr(cfg, task, arm)))
    if "direction" in cfg.tasks and cfg.baseline_steps:
        for arm in (a for a in BASELINES if a in cfg.arms):
            runs.append(TrainingRun(f"direction/{arm}{CAPPED}", partial(build_arm, arm, cfg, "direction", cfg.frames),
                                    "direction", cfg.frames, cfg.baseline_steps, arm_lr(cfg, "direction", arm)))
    if cfg.memory_frames:
        build = partial(TRecViT, trecvit_config(cfg, "memory", cfg.memory_frames, readout="last"))
        runs.append(TrainingRun("memory/trecvit", build, "memory", cfg.memory_frames, cfg.memory_steps, None))
    return runs


# ----------------------------------------------------------------------------------------------
# part 2: efficiency, on the meta device


def _costs(build, video_shape, device: str) -> dict:
    """Forward FLOPs and saved-activation bytes of a training forward with attention maps materialised
    (math SDPA), for a model built on ``device`` ("meta": no weights are allocated)."""
    with torch.device(device):
        model = build()
        video = torch.rand(video_shape) if device == "cpu" else torch.empty(video_shape)
    flops = count_flops(lambda: model(video))
    with sdpa_kernel([SDPBackend.MATH]):
        saved = activation_bytes(lambda: model(video))
    return {"params": count_parameters(model), "flops": flops, "activation_bytes": saved}


def efficiency_tiny(cfg: Config) -> dict:
    """Joint ViViT over TRecViT at the same width, depth, heads and MLP as the trained tiny models (one clip,
    on CPU) for each number of frames. (Matching parameters instead would starve the joint model's MLP at
    large T, where its space-time position embedding alone has T * h*w * D parameters.)"""
    rows = []
    for frames in cfg.efficiency_frames:
        shape = (1, frames, 3, cfg.size, cfg.size)
        trec = _costs(lambda: _build("trecvit", cfg, "direction", frames, cfg.mlp_dim), shape, "cpu")
        joint = _costs(lambda: _build("joint", cfg, "direction", frames, cfg.mlp_dim), shape, "cpu")
        rows.append({"frames": frames, "trecvit": trec, "joint": joint,
                     "flop_ratio": joint["flops"] / trec["flops"],
                     "memory_ratio": joint["activation_bytes"] / trec["activation_bytes"]})
    return {"rows": rows}


def efficiency_paper_scale(frames: int = 32) -> dict:
    """TRecViT-B vs ViViT-L (400 classes, 224^2), built on meta: no weights are allocated."""
    shape = (1, frames, 3, 224, 224)
    trec = _costs(lambda: TRecViT.from_variant("B", num_frames=frames), shape, "meta")
    vivit = _costs(lambda: ViViTJoint.from_variant("L", num_frames=frames), shape, "meta")
    # analytic attention-map bytes (fp32) summed over layers: ViViT-L 16 heads x 24 layers over 1 + T/2*196
    # tokens; TRecViT-B 12 heads x 12 layers, T maps of 197 x 197 each
    vivit_maps = 24 * 16 * (1 + frames // 2 * 196) ** 2 * 4
    trec_maps = 12 * 12 * frames * 197 ** 2 * 4
    return {"frames": frames, "trecvit_b": trec, "vivit_l": vivit,
            "param_ratio": vivit["params"] / trec["params"], "flop_ratio": vivit["flops"] / trec["flops"],
            "memory_ratio": vivit["activation_bytes"] / trec["activation_bytes"],
            "attention_map_ratio": vivit_maps / trec_maps}


# ----------------------------------------------------------------------------------------------
# part 3: streaming


def copy_state(state):
    """A state safe to step from again: a ViViT's KV caches are copied (they grow in place); TRecViT's
    state is returned as is (its step never mutates it)."""
    from tenfold.models.vivit import ViViTStreamState
    from tenfold.nn.attention import KVCache

    if not isinstance(state, ViViTStreamState):
        return state  # TRecViT's step never mutates its state
    caches = []
    for cache in state.caches:
        copy = KVCache(cache.window)
        copy.k, copy.v, copy.positions, copy.next_position = cache.k, cache.v, cache.positions, cache.next_position
        caches.append(copy)  # append() rebinds k and v, so sharing the tensors is safe
    return ViViTStreamState(caches, state.logit_sum, state.t)


def stream_profile(model, frames: torch.Tensor, points: int, repeats: int) -> dict:
    """Run ``frames`` (T, 1, C, H, W) through ``model.step`` and record the state size after every frame;
    then time one ``step`` from the states at ``points`` frames spread evenly over the stream. The timed
    states are visited round-robin in a shuffled order, ``repeats`` times after one untimed warm-up
    round, so that warm-up and machine load fall on early and late frames alike. A step is timed in
    CPU time of this thread (one torch thread), so that time slices lost to other processes on a shared
    machine are not counted. Latency(t) is the median over repeats; the ratio compares the last quarter
    of the points with the first quarter."""
    total = frames.shape[0]
    timed = sorted({round(x) for x in np.linspace(1, total - 1, points)})
    state, states, state_bytes = None, {}, []
    with torch.no_grad():
        for t in range(total):
            if t in timed:
                states[t] = copy_state(state)  # the state before frame t (a KV cache is appended in place)
            _, state = model.step(frames[t], state)
            state_bytes.append(state.nbytes())
        times: dict[int, list[float]] = {t: [] for t in timed}
        order = list(timed)
        rng = np.random.default_rng(0)
        for round_ in range(repeats + 1):
            rng.shuffle(order)
            for t in order:
                start_state = copy_state(states[t])
                start = time.thread_time()
                model.step(frames[t], start_state)
                if round_:  # round 0 warms up
                    times[t].append(time.thread_time() - start)
    latency = [statistics.median(times[t]) for t in timed]
    quarter = max(1, len(timed) // 4)
    early, late = statistics.median(latency[:quarter]), statistics.median(latency[-quarter:])
    return {"t": timed, "latency_s": latency, "early_s": early, "late_s": late, "latency_ratio": late / early,
            "state_bytes": state_bytes}


def run_streaming(cfg: Config, ctx: RunContext) -> dict:
    """The streaming profile, on the CPU on every device: its latency is CPU time of one thread
    (see ``stream_profile``), which would not time asynchronous CUDA kernels."""
    torch.manual_seed(ctx.seed)
    trec = TRecViT(trecvit_config(cfg, "direction", cfg.stream_frames)).eval()
    kv = ViViTJoint(width=cfg.width, depth=cfg.depth, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads,
                    num_frames=cfg.stream_frames, tubelet=1, patch=cfg.patch, image_size=cfg.size,
                    num_classes=4, causal=True, cls="frame").eval()
    frames = torch.rand(cfg.stream_frames, 1, 3, cfg.size, cfg.size)
    return {"trecvit": stream_profile(trec, frames, cfg.stream_points, cfg.stream_repeats),
            "kv_cache": stream_profile(kv, frames, cfg.stream_points, cfg.stream_repeats)}


# ----------------------------------------------------------------------------------------------
# the experiment


def run_seed(cfg: Config, ctx: RunContext) -> dict:
    start = time.process_time()
    record = {"tasks": run_tasks(cfg, ctx)}
    if cfg.stream_frames:
        record["streaming"] = run_streaming(cfg, ctx)
    record["cpu_s"] = time.process_time() - start
    return record


def _mean(records: dict[int, dict], key: str, field: str = "acc") -> dict:
    return seed_stats(records[s]["tasks"][key][field] for s in sorted(records))


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    metrics: dict = {"accuracy": {}, "params": {}, "cpu_s": seed_stats(r["cpu_s"] for r in records.values())}
    for key in records[min(records)]["tasks"]:
        metrics["accuracy"][key] = _mean(records, key)
        metrics["params"][key] = records[min(records)]["tasks"][key]["params"]
        metrics.setdefault("cpu_s_per_step", {})[key] = _mean(records, key, "cpu_s_per_step")["mean"]
    if "direction" in cfg.tasks and "no_time" in cfg.arms:
        metrics["no_time_direction_sign_acc"] = _mean(records, "direction/no_time", "sign_acc")
        metrics["no_time_direction_axis_acc"] = _mean(records, "direction/no_time", "axis_acc")
    acc = {k: v["mean"] for k, v in metrics["accuracy"].items()}
    measured, notes = {}, {}
    capped = any(f"direction/{arm}{CAPPED}" in acc for arm in BASELINES)
    for task in ("direction", "count"):
        suffix = CAPPED if task == "direction" and capped else ""
        best = max(acc.get(f"{task}/{arm}{suffix}", -1.0) for arm in BASELINES)
        measured[f"trecvit.{task}-vs-vivit"] = acc.get(f"{task}/trecvit", float("nan")) - best
    if "direction" in cfg.tasks:
        metrics["direction_comparison"] = direction_comparison(cfg, acc)
    convergence = comparison_convergence(cfg, records, acc)
    measured["trecvit.no-time-near-chance"] = metrics.get("no_time_direction_sign_acc", {}).get("mean", float("nan"))

    eff = efficiency_tiny(cfg)
    metrics["efficiency_tiny"] = eff
    flop_ratios = [row["flop_ratio"] for row in eff["rows"]]
    memory_ratios = [row["memory_ratio"] for row in eff["rows"]]
    frames = [row["frames"] for row in eff["rows"]]
    growth = sum(b > a for a, b in zip(flop_ratios, flop_ratios[1:])) + sum(
        b > a for a, b in zip(memory_ratios, memory_ratios[1:]))
    steps = 2 * (len(frames) - 1)  # consecutive pairs of frame counts, for FLOPs and for memory
    measured["trecvit.ratios-grow"] = growth / steps if steps else float("nan")
    notes["trecvit.ratios-grow"] = f"{growth} of {steps} steps over T = {frames}"
    at64 = next((row for row in eff["rows"] if row["frames"] == 64), None)
    measured["trecvit.flops-at-64"] = at64["flop_ratio"] if at64 else float("nan")
    measured["trecvit.memory-at-64"] = at64["memory_ratio"] if at64 else float("nan")
    if cfg.paper_scale:
        metrics["paper_scale"] = efficiency_paper_scale(32)
        metrics["paper_scale"]["paper_ratios"] = {"params": 3.0, "flops": 5.0, "memory": 12.0}

    streams = [r["streaming"] for r in records.values() if "streaming" in r]
    if streams:
        metrics["streaming"] = {
            arm: {"latency_ratio": seed_stats(s[arm]["latency_ratio"] for s in streams),
                  "early_ms": seed_stats(1e3 * s[arm]["early_s"] for s in streams),
                  "late_ms": seed_stats(1e3 * s[arm]["late_s"] for s in streams),
                  "t": streams[0][arm]["t"],
                  "latency_ms_by_t": np.mean([[1e3 * x for x in s[arm]["latency_s"]] for s in streams], 0).tolist(),
                  "state_bytes_first": streams[0][arm]["state_bytes"][0],
                  "state_bytes_last": streams[0][arm]["state_bytes"][-1]}
            for arm in ("trecvit", "kv_cache")}
    trec_stream = metrics.get("streaming", {}).get("trecvit")
    measured["trecvit.stream-latency-flat"] = trec_stream["latency_ratio"]["mean"] if trec_stream else float("nan")
    notes["trecvit.stream-latency-flat"] = f"{cfg.stream_points} frames timed over a {cfg.stream_frames}-frame stream"
    measured["trecvit.stream-state-flat"] = (
        max(max(s["trecvit"]["state_bytes"]) / min(s["trecvit"]["state_bytes"]) for s in streams)
        if streams else float("nan"))
    return Evaluation(measured=measured, notes=notes, metrics=metrics, convergence=convergence,
                      figures=_figures(cfg, records, metrics, out_dir))


def direction_comparison(cfg: Config, acc: dict[str, float]) -> dict:
    """TRecViT minus the best baseline on 'direction' at equal steps and with the baselines at their cap."""
    trec = acc.get("direction/trecvit", float("nan"))
    out = {}
    for name, suffix, steps in (("equal_steps", "", cfg.steps), ("baselines_at_cap", CAPPED, cfg.baseline_steps)):
        baselines = {arm: acc[f"direction/{arm}{suffix}"] for arm in BASELINES if f"direction/{arm}{suffix}" in acc}
        if baselines:
            best = max(baselines.values())
            out[name] = {"trecvit_steps": cfg.steps, "baseline_steps": steps, "trecvit": trec, **baselines,
                         "margin": trec - best}
    return out


def comparison_convergence(cfg: Config, records: dict[int, dict], acc: dict[str, float]) -> dict:
    """The convergence of each compared arm (training loss over the last 10 % of steps), per claim; on
    'direction' the baselines at TRecViT's step count are listed for reference."""
    tasks = records[min(records)]["tasks"]

    def losses(key: str) -> list[list[float]]:
        return [records[s]["tasks"][key]["losses"] for s in sorted(records)]

    out = {}
    for task in ("direction", "count"):
        suffix = CAPPED if task == "direction" and any(f"direction/{a}{CAPPED}" in tasks for a in BASELINES) else ""
        keys = [f"{task}/trecvit", *(f"{task}/{arm}{suffix}" for arm in BASELINES)]
        compared = {key.split("/", 1)[1]: losses(key) for key in keys if key in tasks}
        if len(compared) < 2:
            continue
        reference = {key.split("/", 1)[1]: losses(key) for key in (f"{task}/{a}" for a in BASELINES)
                     if suffix and key in tasks}
        scores = {key.split("/", 1)[1]: acc[key] for key in acc if key.startswith(f"{task}/")}
        out[f"trecvit.{task}-vs-vivit"] = compare_convergence(compared, reference=reference, scores=scores,
                                                              shared_budget=task == "count")
    return out


def _figures(cfg: Config, records: dict[int, dict], metrics: dict, out_dir: Path) -> list[str]:
    figures = []
    fig, axes = plotting.figure(ncols=2)
    for ax, task in zip(axes, ("direction", "count")):
        for arm in (*cfg.arms, *(f"{a}{CAPPED}" for a in BASELINES)):
            key = f"{task}/{arm}"
            if key in records[min(records)]["tasks"]:
                losses = np.asarray([records[s]["tasks"][key]["losses"] for s in sorted(records)])
                plotting.band(ax, list(range(losses.shape[1])), losses, label=f"{arm} ({metrics['accuracy'][key]['mean']:.2f})")
        ax.set(xlabel="step", ylabel="training loss", title=task)
        ax.legend(fontsize=7)
    figures.append(plotting.save(fig, out_dir, "training_loss.png"))
    rows = metrics["efficiency_tiny"]["rows"]
    fig, ax = plotting.figure()
    frames = [r["frames"] for r in rows]
    ax.plot(frames, [r["flop_ratio"] for r in rows], marker="o", label="FLOPs")
    ax.plot(frames, [r["memory_ratio"] for r in rows], marker="o", label="saved activations")
    ax.set(xscale="log", yscale="log", xlabel="frames", ylabel="joint ViViT / TRecViT", title="cost ratio vs T")
    plotting.plain_log_axis(ax.xaxis, frames)  # plain tick labels: minor log labels overlapped
    plotting.plain_log_axis(ax.yaxis)
    ax.legend()
    figures.append(plotting.save(fig, out_dir, "efficiency_ratios.png"))
    streams = [records[s]["streaming"] for s in sorted(records) if "streaming" in records[s]]
    if streams:
        fig, ax = plotting.figure()
        for arm, label in (("trecvit", "TRecViT step"), ("kv_cache", "causal joint ViViT + KV cache")):
            per_seed = np.asarray([[1e3 * x for x in s[arm]["latency_s"]] for s in streams])
            plotting.band(ax, streams[0][arm]["t"], per_seed, label=label)
        ax.set(xlabel="frame t", ylabel="step latency (ms)", title="streaming latency vs t")
        ax.legend()
        figures.append(plotting.save(fig, out_dir, "streaming_latency.png"))
    return figures


def tune_trial(cfg: Config, arm: str, seed: int) -> dict:
    """One tuning trial on 'direction' (on the CPU): ``arm`` trained for its budget (TRecViT ``steps``, a
    baseline ``baseline_steps``) at its lr in ``cfg``, scored by accuracy on the development set
    (``dev_eval_seed``, not the claims' held-out set); ``loss`` is the mean over the last 10 % of steps."""
    steps = cfg.baseline_steps if arm in BASELINES and cfg.baseline_steps else cfg.steps
    torch.manual_seed(seed)
    model = build_arm(arm, cfg, "direction", cfg.frames)
    out = train(model, "direction", cfg, cfg.frames, steps, seed, arm_lr(cfg, "direction", arm), cfg.dev_eval_seed)
    return {"score": out["acc"], "loss": final_loss(out["losses"])}


LR_GRID = (1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3)
TUNING = TuningSpec(
    fields={arm: {"lr": f"direction_lr_{arm}"} for arm in ("trecvit", *BASELINES)},
    trial=tune_trial,
    metric="'direction' accuracy on eval_clips development clips (dev_eval_seed), TRecViT after steps, "
           "a ViViT after baseline_steps",
    record={  # `tenfold tune trecvit --arm ARM --grid lr=1.25e-4,2.5e-4,5e-4,1e-3,2e-3 --seeds 1000,1001`
        "trecvit": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                             scores={"lr=0.000125": 0.75293, "lr=0.00025": 0.915527, "lr=0.0005": 0.992188,
                                     "lr=0.001": 0.999512, "lr=0.002": 0.999512},
                             chosen={"lr": 0.002}),
        "factorised": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                                scores={"lr=0.000125": 0.709961, "lr=0.00025": 0.770508, "lr=0.0005": 0.877441,
                                        "lr=0.001": 0.987305, "lr=0.002": 0.5},
                                chosen={"lr": 0.001}),
        "joint": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                           scores={"lr=0.000125": 0.491211, "lr=0.00025": 0.495605, "lr=0.0005": 0.513184,
                                   "lr=0.001": 0.508301, "lr=0.002": 0.501953},
                           chosen={"lr": 0.0005}),
    },
)

EXPERIMENT = Experiment(
    name="trecvit", paper="TRecViT: A Recurrent Video Transformer (arXiv 2412.14294)", presets=PRESETS,
    run_seed=run_seed, evaluate=evaluate, quick_minutes=5.0, claims=CLAIMS,
    devices=("cpu", "cuda"), tuning=TUNING,
)
