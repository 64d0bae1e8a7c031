"""Normalize-and-Project (Lyle et al., NeurIPS 2024; arXiv 2407.01800) at CPU scale.

Part 1, plasticity (the paper's random-label plasticity benchmark): an MLP
64-128-128-10 memorises 256 fixed Gaussian inputs under 30 successive sets of fresh random labels
(150 Adam steps each, one optimizer for the whole run). Arms, all from the same initial weights:

- ``base``: no normalization;  ``ln``: LayerNorm before each ReLU (bias-free hidden linears);
- ``nap``: ``ln`` + projection after every step (hidden weights to their initial norm, each LN's
  (γ, β) jointly to √128; head free);  ``nap_all``: ``nap`` with the head projected too (report only);
- optional, report only: ``ln_l2init`` (``ln`` + L2-Init, Kumar et al. 2023) and ``base_sp``
  (``base`` + Shrink & Perturb, Ash & Adams 2020), from ``tenfold.optim.baselines``;
- report only: ``ln_matched``, ``ln`` given NaP's compute: ``matched_cost`` updates per incoming batch
  on average (NaP's training step with its projection costs that many ``ln`` steps; see
  ``tenfold.compute_matched``).

The metric is the mean online (pre-update) minibatch accuracy over each task: how fast the network
fits a new labelling. Per task the run also logs the weight norm (all weight matrices, head
included), the dead-ReLU fraction (hidden units silent on all 256 inputs) and the per-layer effective
learning rate η/‖W_l‖ (Adam form).

Part 2, stationary: a small CNN classifies generated 16x16 images of oriented bars in noise, with
a cosine learning-rate decay; NaP should match the unnormalized baseline (the paper: NaP "recovers
and in some cases even slightly improves" stationary performance). ``base_matched`` (report only)
trains the baseline for ``stat_matched_cost`` times the steps, NaP's cost per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tenfold import plotting
from tenfold.analysis.effective_lr import effective_lr
from tenfold.compute_matched import matched_row, matched_steps, updates_at
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, seed_stats
from tenfold.models.normalized import NormCNN, NormMLP
from tenfold.optim.nap import NaP
from tenfold.tasks.streams import RandomLabelStream
from tenfold.train.loop import compare_convergence, fit, online_updates, warmup_cosine
from tenfold.tuning import ArmTuning, TuningSpec
from tenfold.utils.checks import check_range

ARMS = ("base", "ln", "nap", "nap_all", "ln_l2init", "base_sp", "ln_matched")
STAT_ARMS = ("base", "ln", "nap", "base_matched")


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    # part 1: iterated random-label memorisation
    arms: tuple[str, ...] = ARMS
    tasks: int = 30
    steps_per_task: int = 150
    n_inputs: int = 256
    in_features: int = 64
    hidden: tuple[int, ...] = (128, 128)
    n_classes: int = 10
    batch_size: int = 64
    # each compared arm's Adam lr, chosen from one grid on development seeds (TUNING below); the
    # report-only arms take their parent's (nap_all: nap; ln_l2init, ln_matched: ln; base_sp: base)
    lr_base: float = 1e-3
    lr_ln: float = 3e-3
    lr_nap: float = 3e-3
    bias_before_norm: bool = False
    l2init_strength: float = 1e-2
    sp_shrink: float = 0.999
    sp_noise: float = 0.01  # times each tensor's initial std
    # compute-matched ln: CPU time of a nap training step (projection included) over an ln step, this
    # MLP at this batch, one thread, interleaved in one process (1.25, 1.26, 1.25 in three measurements)
    matched_cost: float = 1.25
    # part 2: stationary CNN
    stat_arms: tuple[str, ...] = STAT_ARMS
    stat_steps: int = 600
    stat_lr: float = 3e-3  # the report-only ln arm's (not tuned)
    stat_lr_base: float = 1e-2  # the compared arms' (and base_matched's), tuned as lr_* above
    stat_lr_nap: float = 3e-2
    stat_batch: int = 64
    stat_train: int = 2048
    stat_test: int = 2048
    stat_noise: float = 0.35
    stat_channels: tuple[int, ...] = (16, 32)
    # compute-matched base: CPU time of a nap CNN training step over a base step, measured as matched_cost
    # (1.16, 1.17, 1.16)
    stat_matched_cost: float = 1.16


PRESETS = {
    "smoke": Config(seeds=(0,), tasks=3, steps_per_task=10, stat_steps=10, stat_train=64, stat_test=64),
    "quick": Config(),
    "full": Config(seeds=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9), stat_steps=1500),
}


CLAIMS = (  # thresholds as fixed before the first runs; the statements name the tuning and the shared budgets
    ClaimSpec("nap.plasticity", "NaP's mean online accuracy on the last five tasks exceeds LayerNorm's by >= 0.05, "
              "each arm's lr chosen from one grid on development seeds; the arms share the benchmark's fixed "
              "budget of `steps_per_task` steps per task on purpose",
              "NaP stays plastic where LayerNorm alone slowly loses plasticity (random-label benchmark)", ">= 0.05"),
    ClaimSpec("nap.ln-beats-base", "LayerNorm's mean online accuracy on the last five tasks exceeds no-norm's by "
              ">= 0.2, each arm's lr chosen from one grid on development seeds; the arms share the benchmark's "
              "fixed budget of `steps_per_task` steps per task on purpose",
              "normalization alone already mitigates plasticity loss", ">= 0.2"),
    ClaimSpec("nap.no-decay", "NaP's last-five-tasks mean is within 0.02 of (or above) its tasks 2-4 mean",
              "with NaP the effective learning rate is constant, so performance on new tasks does not decay",
              ">= -0.02"),
    ClaimSpec("nap.ln-norm-grows", "LayerNorm's total weight norm grows more than 1.5x over the run",
              "parameter-norm growth is the hidden effective-learning-rate decay of normalized nets", "> 1.5"),
    ClaimSpec("nap.nap-norm-fixed", "NaP's total weight norm (free head included) grows less than 1.1x",
              "NaP fixes the parameter norm (the free head aside)", "< 1.1"),
    ClaimSpec("nap.stationary", "On a stationary CNN task NaP's test accuracy is no more than 0.03 below no-norm's, "
              "each arm's lr chosen from one grid on development seeds; both share a fixed budget of `stat_steps` "
              "cosine-decayed steps on purpose",
              "NaP recovers and in some cases slightly improves the base model's performance on stationary benchmarks",
              ">= -0.03"),
)

# ------------------------------------------------------------------------------------------------
# part 1: plasticity under iterated random labels
# ------------------------------------------------------------------------------------------------

def plasticity_mlp(cfg: Config, arm: str, seed: int) -> NormMLP:
    """The part-1 MLP of ``arm`` (no norm for the base arms, LayerNorm otherwise), initialised from ``seed``."""
    torch.manual_seed(seed)  # the same initial weights in every arm
    norm = "none" if arm.startswith("base") else "layer"  # ln_matched: layer
    return NormMLP(in_features=cfg.in_features, hidden_features=list(cfg.hidden), out_features=cfg.n_classes,
                   norm=norm, bias_before_norm=cfg.bias_before_norm)


def _weight_norm(model: nn.Module) -> float:
    """Frobenius norm of all weight matrices together (head included; biases and norm affines excluded)."""
    return math.sqrt(sum(float(m.weight.detach().pow(2).sum()) for m in model.modules() if isinstance(m, nn.Linear)))


@torch.no_grad()
def _dead_fraction(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    """Per hidden layer, the fraction of ReLU units that are zero on every input in ``x``."""
    fractions, h = [], x
    for module in model:
        h = module(h)
        if isinstance(module, nn.ReLU):
            fractions.append(float((~(h > 0).any(dim=0)).float().mean()))
    return fractions


def _hidden_linears(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)][:-1]


def _hooks(cfg: Config, arm: str, model: nn.Module, seed: int, device: torch.device):
    """The per-step extras of an arm: (before_step, after_step) callables or None."""
    from tenfold.optim.baselines import L2Init, ShrinkPerturb  # optional arms only

    if arm in ("nap", "nap_all"):
        proj = NaP(model, project_head=arm == "nap_all")
        return None, proj.project
    if arm == "ln_l2init":
        return L2Init(model, strength=cfg.l2init_strength).add_grad_, None
    if arm == "base_sp":
        sp = ShrinkPerturb(model, shrink=cfg.sp_shrink, noise_scale=cfg.sp_noise, noise_std="init",
                           generator=torch.Generator(device=device).manual_seed(seed + 17))
        return None, sp.apply_
    return None, None


PARENT = {"nap_all": "nap", "ln_l2init": "ln", "ln_matched": "ln", "base_sp": "base"}  # whose lr an arm takes


def arm_lr(cfg: Config, arm: str) -> float:
    """Part 1's Adam learning rate of ``arm``: its own tuned value, or its parent's for a report-only arm."""
    return getattr(cfg, f"lr_{PARENT.get(arm, arm)}")


def stat_arm_lr(cfg: Config, arm: str) -> float:
    """Part 2's Adam learning rate of ``arm``: tuned for base (and base_matched) and nap, ``stat_lr`` for ln."""
    return cfg.stat_lr if arm == "ln" else getattr(cfg, f"stat_lr_{arm.removesuffix('_matched')}")


def train_random_labels(cfg: Config, arm: str, seed: int, device: torch.device = torch.device("cpu")) -> dict:
    """One arm of part 1 on ``device`` (the stream is drawn on the CPU, identical on every device);
    returns per-task curves."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    check_range("matched_cost", cfg.matched_cost, 1.0)
    model = plasticity_mlp(cfg, arm, seed).to(device)
    lr = arm_lr(cfg, arm)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    before, after = _hooks(cfg, arm, model, seed, device)
    stream = RandomLabelStream(n=cfg.n_inputs, in_features=cfg.in_features, n_classes=cfg.n_classes,
                               n_tasks=cfg.tasks, steps_per_task=cfg.steps_per_task, batch_size=cfg.batch_size,
                               generator=torch.Generator().manual_seed(seed))
    inputs = stream.x.to(device)  # (n_inputs, in_features), fixed for the whole run
    hits = torch.zeros(cfg.tasks, dtype=torch.long, device=device)  # online hits per task, read back once
    seen = np.zeros(cfg.tasks)
    losses = torch.zeros(cfg.tasks * cfg.steps_per_task, device=device)  # each batch's loss before its update
    ratio = cfg.matched_cost if arm == "ln_matched" else 1.0
    norms, dead, elr = [_weight_norm(model)], [], []
    start = time.process_time()
    for step, batch in enumerate(stream):
        x, y = batch.x.to(device), batch.y.to(device)
        # one update, or more for the compute-matched arm; accuracy and loss before any update
        logits, losses[step] = online_updates(model, opt, x, y, updates_at(step, ratio), before=before, after=after)
        hits[batch.task] += (logits.argmax(-1) == y).sum()
        seen[batch.task] += y.numel()
        if batch.step == cfg.steps_per_task - 1:  # end of a task
            norms.append(_weight_norm(model))
            dead.append(_dead_fraction(model, inputs))
            elr.append([effective_lr(m.weight, lr, "adam") for m in _hidden_linears(model)])
    with np.errstate(invalid="ignore", divide="ignore"):
        online = (hits.cpu().numpy() / seen).tolist()
    per_task = losses.view(cfg.tasks, cfg.steps_per_task)  # (tasks, steps_per_task)
    return {"online": online, "norm": norms, "dead": dead, "elr": elr, "cpu_s": time.process_time() - start,
            "task_loss": per_task.mean(dim=1).tolist(), "last_task_loss": per_task[-1].tolist()}


# ------------------------------------------------------------------------------------------------
# part 2: a stationary task
# ------------------------------------------------------------------------------------------------

BAR_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, diagonal, anti-diagonal


def oriented_bars(n: int, generator: torch.Generator, *, size: int = 16, noise: float = 0.35):
    """``n`` images (n, 1, size, size) of one bar each (length 5-8, random position wrapping around,
    contrast 0.5-1.5) in Gaussian noise; the label (n,) is the bar's orientation (4 classes)."""
    labels = torch.randint(0, len(BAR_DIRECTIONS), (n,), generator=generator)
    lengths = torch.randint(5, 9, (n,), generator=generator)
    starts = torch.randint(0, size, (n, 2), generator=generator)
    contrast = 0.5 + torch.rand(n, generator=generator)
    images = torch.zeros(n, 1, size, size)
    steps = torch.arange(8)
    for i in range(n):
        dr, dc = BAR_DIRECTIONS[int(labels[i])]
        t = steps[: int(lengths[i])]
        images[i, 0, (starts[i, 0] + dr * t) % size, (starts[i, 1] + dc * t) % size] = contrast[i]
    return images + noise * torch.randn(images.shape, generator=generator), labels


def train_stationary(cfg: Config, arm: str, seed: int, device: torch.device = torch.device("cpu")) -> dict:
    """One arm of part 2 on ``device``: test accuracy of a small CNN after a cosine-decayed Adam run
    (images and batch indices drawn on the CPU, identical on every device). ``base_matched`` is
    ``base`` trained for ``stat_matched_cost`` times the steps (the first ``stat_steps`` batches are
    ``base``'s, the cosine spans the longer run)."""
    if arm not in STAT_ARMS:
        raise ValueError(f"stat arm must be one of {STAT_ARMS}, got {arm!r}")
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    x_train, y_train = oriented_bars(cfg.stat_train, data_gen, noise=cfg.stat_noise)
    x_test, y_test = oriented_bars(cfg.stat_test, data_gen, noise=cfg.stat_noise)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    torch.manual_seed(seed)
    model = NormCNN(in_channels=1, channels=list(cfg.stat_channels), num_classes=len(BAR_DIRECTIONS),
                    norm="none" if arm.startswith("base") else "layer", bias_before_norm=cfg.bias_before_norm).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=stat_arm_lr(cfg, arm))
    if arm == "nap":
        NaP(model).attach(opt)
    batch_gen = torch.Generator().manual_seed(20_000 + seed)

    def loss_fn(step: int) -> torch.Tensor:
        index = torch.randint(0, cfg.stat_train, (cfg.stat_batch,), generator=batch_gen).to(device)
        return F.cross_entropy(model(x_train[index]), y_train[index])

    steps = matched_steps(cfg.stat_steps, cfg.stat_matched_cost) if arm == "base_matched" else cfg.stat_steps
    start = time.process_time()
    losses = fit(model, opt, loss_fn, steps,  # cosine from step 0 to 0 one step after the last, no warm-up
                 schedule=partial(warmup_cosine, warmup=0, decay_steps=steps))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(-1) == y_test).float().mean())
    return {"test_acc": accuracy, "final_train_loss": float(np.mean(losses[-50:])), "steps": steps,
            "cpu_s": time.process_time() - start, "losses": losses}


def run_seed(cfg: Config, ctx: RunContext) -> dict:
    arms = ctx.progress(cfg.arms, desc="nap arms")
    record = {arm: train_random_labels(cfg, arm, ctx.seed, ctx.device) for arm in arms}
    record["stationary"] = {arm: train_stationary(cfg, arm, ctx.seed, ctx.device) for arm in cfg.stat_arms}
    return record


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------

def _per_seed(records: dict[int, dict], arm: str, key: str) -> np.ndarray:
    return np.asarray([records[s][arm][key] for s in sorted(records)], dtype=float)


def _window_mean(online: np.ndarray, first: int, last: int) -> np.ndarray:
    """Per-seed mean online accuracy over tasks first..last (1-based, inclusive)."""
    return online[:, first - 1:last].mean(axis=1)


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    arms = [a for a in cfg.arms]
    online = {arm: _per_seed(records, arm, "online") for arm in arms}
    norm = {arm: _per_seed(records, arm, "norm") for arm in arms}
    last_lo = max(1, cfg.tasks - 4)
    late = {arm: _window_mean(online[arm], last_lo, cfg.tasks) for arm in arms}
    early = {arm: _window_mean(online[arm], min(2, cfg.tasks), min(4, cfg.tasks)) for arm in arms}
    growth = {arm: norm[arm][:, -1] / norm[arm][:, 0] for arm in arms}
    stat = {arm: np.asarray([records[s]["stationary"][arm]["test_acc"] for s in sorted(records)])
            for arm in cfg.stat_arms}
    metrics = {
        "online_acc_last5": {arm: seed_stats(late[arm]) for arm in arms},
        "online_acc_tasks2to4": {arm: seed_stats(early[arm]) for arm in arms},
        "online_acc_tasks1to3": {arm: seed_stats(_window_mean(online[arm], 1, min(3, cfg.tasks))) for arm in arms},
        "weight_norm_growth": {arm: seed_stats(growth[arm]) for arm in arms},
        "weight_norm_start_end": {arm: [float(norm[arm][:, 0].mean()), float(norm[arm][:, -1].mean())] for arm in arms},
        "dead_fraction_end": {arm: seed_stats(np.mean(_per_seed(records, arm, "dead")[:, -1], axis=-1)) for arm in arms},
        "online_curve_mean": {arm: online[arm].mean(axis=0).round(4).tolist() for arm in arms},
        "stationary_test_acc": {arm: seed_stats(stat[arm]) for arm in cfg.stat_arms},
        "cpu_s_per_run": {arm: seed_stats(_per_seed(records, arm, "cpu_s")) for arm in arms},
        "stationary_cpu_s_per_run": {arm: seed_stats([records[s]["stationary"][arm]["cpu_s"] for s in sorted(records)])
                                     for arm in cfg.stat_arms},
    }
    measured = {
        "nap.plasticity": late["nap"].mean() - late["ln"].mean(),
        "nap.ln-beats-base": late["ln"].mean() - late["base"].mean(),
        "nap.no-decay": late["nap"].mean() - early["nap"].mean(),
        "nap.ln-norm-grows": growth["ln"].mean(),
        "nap.nap-norm-fixed": growth["nap"].mean(),
        "nap.stationary": stat["nap"].mean() - stat["base"].mean(),
    }
    metrics["compute_matched"] = _compute_matched(cfg, late, stat, last_lo)
    window = f"tasks {last_lo}-{cfg.tasks}"
    notes = {"nap.plasticity": window, "nap.ln-beats-base": window, "nap.no-decay": f"{window} vs tasks 2-4"}
    return Evaluation(measured=measured, notes=notes, metrics=metrics,
                      convergence=comparison_convergence(cfg, records, late, stat),
                      figures=_figures(cfg, records, arms, online, norm, stat, out_dir))


def comparison_convergence(cfg: Config, records: dict[int, dict], late: dict, stat: dict) -> dict:
    """The convergence of each compared arm (training loss over the last 10 % of its steps), per claim.
    Part 1 takes each arm's last task (the benchmark restarts the loss at every task, so a window across
    task boundaries would fit the saw-tooth); part 2 the whole cosine-decayed run, with ``base_matched``
    (more steps) for reference. Both parts share their budgets on purpose."""
    def last_task(arm: str) -> list[list[float]]:
        return [records[s][arm]["last_task_loss"] for s in sorted(records)]

    def stationary(arm: str) -> list[list[float]]:
        return [records[s]["stationary"][arm]["losses"] for s in sorted(records)]

    out = {}
    for claim, pair in (("nap.plasticity", ("nap", "ln")), ("nap.ln-beats-base", ("ln", "base"))):
        if set(pair) <= set(late):
            out[claim] = compare_convergence({arm: last_task(arm) for arm in pair}, shared_budget=True,
                                             scores={arm: float(late[arm].mean()) for arm in pair})
    if {"nap", "base"} <= set(stat):
        reference = {"base_matched": stationary("base_matched")} if "base_matched" in stat else {}
        out["nap.stationary"] = compare_convergence(
            {arm: stationary(arm) for arm in ("nap", "base")}, shared_budget=True, reference=reference,
            scores={arm: float(stat[arm].mean()) for arm in stat})
    return out


def _compute_matched(cfg: Config, late: dict, stat: dict, last_lo: int) -> list[dict]:
    """The compute-matched rows: NaP against ln given NaP's compute (plasticity), and against base
    (stationary), where each arm is present."""
    rows = []
    if {"nap", "ln", "ln_matched"} <= set(late):
        rows.append(matched_row(
            "NaP vs LayerNorm (plasticity)", f"mean online accuracy, tasks {last_lo}-{cfg.tasks}", "higher",
            ("nap", seed_stats(late["nap"])), ("ln", seed_stats(late["ln"])),
            ("ln_matched", seed_stats(late["ln_matched"])), cfg.matched_cost,
            f"ln makes {cfg.matched_cost:g} updates per incoming batch on average (a second update on a "
            "share of the batches; online accuracy before the first): the CPU-time ratio of a nap training "
            "step, projection included, over an ln step, measured once and fixed in the config"))
    if {"nap", "base", "base_matched"} <= set(stat):
        rows.append(matched_row(
            "NaP vs no normalization (stationary CNN)", "test accuracy", "higher",
            ("nap", seed_stats(stat["nap"])), ("base", seed_stats(stat["base"])),
            ("base_matched", seed_stats(stat["base_matched"])), cfg.stat_matched_cost,
            f"base trains {matched_steps(cfg.stat_steps, cfg.stat_matched_cost)} steps against "
            f"{cfg.stat_steps} (its cosine over all of them): the CPU-time ratio of a nap CNN training step "
            "over a base step, measured once and fixed in the config"))
    return rows


def _figures(cfg, records, arms, online, norm, stat, out_dir) -> list[str]:
    tasks = list(range(1, cfg.tasks + 1))
    names = []
    fig, ax = plotting.figure()
    for arm in arms:
        plotting.band(ax, tasks, online[arm], label=arm)
    ax.set(xlabel="task", ylabel="mean online accuracy", title="NaP: iterated random labels")
    ax.legend(fontsize=7)
    names.append(plotting.save(fig, out_dir, "online_accuracy.png"))
    fig, ax = plotting.figure()
    for arm in arms:
        plotting.band(ax, list(range(cfg.tasks + 1)), norm[arm], label=arm)
    ax.set(xlabel="task (end)", ylabel="‖W‖ (all weight matrices)", title="weight norm")
    ax.legend(fontsize=7)
    names.append(plotting.save(fig, out_dir, "weight_norm.png"))
    fig, ax = plotting.figure()
    for arm in arms:
        plotting.band(ax, tasks, _per_seed(records, arm, "dead").mean(axis=-1), label=arm)
    ax.set(xlabel="task (end)", ylabel="dead ReLU fraction", title="dead units (mean over hidden layers)")
    ax.legend(fontsize=7)
    names.append(plotting.save(fig, out_dir, "dead_units.png"))
    fig, ax = plotting.figure()
    for arm in arms:
        plotting.band(ax, tasks, _per_seed(records, arm, "elr").mean(axis=-1), label=arm)
    ax.set(xlabel="task (end)", ylabel="η / ‖W_l‖ (Adam form), hidden-layer mean", yscale="log",
           title="effective learning rate")
    ax.legend(fontsize=7)
    names.append(plotting.save(fig, out_dir, "effective_lr.png"))
    fig, ax = plotting.figure()
    for i, arm in enumerate(cfg.stat_arms):
        ax.bar(i, stat[arm].mean(), yerr=stat[arm].std(), color=f"C{i}", alpha=0.6)
        ax.scatter(np.full(len(stat[arm]), i), stat[arm], color="k", s=12, zorder=3)
    ax.set(xticks=range(len(cfg.stat_arms)), xticklabels=list(cfg.stat_arms), ylabel="test accuracy",
           title="stationary: oriented bars, small CNN")
    names.append(plotting.save(fig, out_dir, "stationary.png"))
    return names


# ------------------------------------------------------------------------------------------------
# tuning: each compared arm's lr from one grid, on development seeds
# ------------------------------------------------------------------------------------------------

STAT_PREFIX = "stat_"  # tuning arms of part 2 ("stat_base", "stat_nap"); part 1's are the arm names


def tune_trial(cfg: Config, arm: str, seed: int) -> dict:
    """One tuning trial on development seed ``seed`` (the CPU). Part 1 (``base``, ``ln``, ``nap``): the
    claim's score on that seed's own stream, the mean online accuracy over the last five tasks; ``loss``
    the mean training loss of the last task. Part 2 (``stat_base``, ``stat_nap``): test accuracy on the
    seed's own generated test set; ``loss`` the final training loss."""
    if arm.startswith(STAT_PREFIX):
        out = train_stationary(cfg, arm.removeprefix(STAT_PREFIX), seed)
        return {"score": out["test_acc"], "loss": out["final_train_loss"]}
    out = train_random_labels(cfg, arm, seed)
    last = out["online"][max(0, cfg.tasks - 5):]
    return {"score": sum(last) / len(last), "loss": out["task_loss"][-1]}


LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
STAT_LR_GRID = (*LR_GRID, 1e-1)
TUNING = TuningSpec(
    fields={**{arm: {"lr": f"lr_{arm}"} for arm in ("base", "ln", "nap")},
            **{f"{STAT_PREFIX}{arm}": {"lr": f"stat_lr_{arm}"} for arm in ("base", "nap")}},
    trial=tune_trial,
    metric="part 1: mean online accuracy over the last five tasks on the development seed's stream; "
           "part 2 (stat_*): test accuracy on the development seed's generated test set",
    record={  # `tenfold tune nap --arm ARM --grid lr=... --seeds 1000,1001 --preset quick`
        "base": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                          scores={"lr=0.0003": 0.337365, "lr=0.001": 0.401885, "lr=0.003": 0.189802,
                                  "lr=0.01": 0.140385, "lr=0.03": 0.124594},
                          chosen={"lr": 0.001}),
        "ln": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                        scores={"lr=0.0003": 0.32076, "lr=0.001": 0.598865, "lr=0.003": 0.722042,
                                "lr=0.01": 0.559521, "lr=0.03": 0.124646},
                        chosen={"lr": 0.003}),
        "nap": ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                         scores={"lr=0.0003": 0.327406, "lr=0.001": 0.663594, "lr=0.003": 0.848854,
                                 "lr=0.01": 0.811781, "lr=0.03": 0.124583},
                         chosen={"lr": 0.003}),
        # part 2: the first grid's top point (3e-2) won for NaP, so the grid was extended to 1e-1 for both arms
        "stat_base": ArmTuning(grid={"lr": STAT_LR_GRID}, seeds=(1000, 1001), preset="quick",
                               scores={"lr=0.0003": 0.520752, "lr=0.001": 0.75, "lr=0.003": 0.830811,
                                       "lr=0.01": 0.89209, "lr=0.03": 0.634521, "lr=0.1": 0.51709},
                               chosen={"lr": 0.01}),
        "stat_nap": ArmTuning(grid={"lr": STAT_LR_GRID}, seeds=(1000, 1001), preset="quick",
                              scores={"lr=0.0003": 0.543457, "lr=0.001": 0.770508, "lr=0.003": 0.828857,
                                      "lr=0.01": 0.882812, "lr=0.03": 0.932129, "lr=0.1": 0.930176},
                              chosen={"lr": 0.03}),
    },
)


EXPERIMENT = Experiment(
    name="nap",
    paper="Lyle et al., Normalization and effective learning rates in reinforcement learning (NeurIPS 2024, arXiv 2407.01800)",
    presets=PRESETS, run_seed=run_seed, evaluate=evaluate, quick_minutes=2.5, claims=CLAIMS,
    devices=("cpu", "cuda"), tuning=TUNING,
)
