"""Compositional generalisation in-context (Kobayashi, Schug, Akram et al., arXiv 2407.12275).

Hyperteacher tasks (a module bank, K-hot task latents; some module combinations held out) are
presented in context: N (x, y) pairs then Q queries. Three models are trained on the training
combinations with the same fixed budget and evaluated on fresh tasks from training (ID) and held-out
(OOD) combinations:

  (a) ``transformer``: the plain in-context transformer (inference and execution entangled);
  (b) ``bottleneck``: context-only encoder -> latent -> linear hypernetwork -> MLP on the query; the
      encoder is ``cfg.encoder`` ("bilinear" by default: affine in the context targets);
  (c) ``oracle``: the linear hypernetwork given the true latent;
  ablation ``bottleneck_attn`` (random support, no claim): (b) with a transformer encoder instead.

Paper claim: (a) does well ID but poorly OOD; (b), which separates task inference from execution,
generalises to unseen combinations. Negative control: with a disconnected training support the
bottleneck also fails OOD (Schug et al., ICLR 2024 theory). A linear probe reads the task latent from
(a)'s residual stream per layer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tenfold import plotting
from tenfold.analysis.probe import linear_probe_r2
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, seed_stats
from tenfold.models.hypernet import HypernetBottleneck, HypernetOracle, InContextTransformer
from tenfold.tasks.hyperteacher import (ICLBatch, ICLTaskSampler, Hyperteacher, check_identifiability,
                                        make_split, r2_per_task)
from tenfold.train.loop import fit, warmup_cosine

ARMS = ("transformer", "bottleneck", "oracle")
ABLATION = "bottleneck_attn"  # (b) with the transformer encoder instead of the bilinear one (random support, no claim)


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    # hyperteacher (data_seed = the run seed: teacher and split are shared by all arms of a seed)
    d_in: int = 16
    d_out: int = 16
    hidden: int = 16  # the teacher's hidden width
    student_hidden: int = 64  # the hypernetwork MLP's hidden width (bottleneck, oracle): 4x the teacher, as the ICLR 2024 configs
    n_modules: int = 6
    k_max: int = 2
    weighting: str = "continuous"
    scale: float = 3 ** 0.5
    n_ood: int = 5  # held-out two-hot combinations of the random support
    n_context: int = 16  # < d_in + 1: in-context linear regression alone is underdetermined
    n_query: int = 8
    # models: (a) and the transformer encoders
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 3
    mlp_ratio: float = 2.0
    # (b)'s task-inference encoder: "bilinear" (affine in the context targets), "deepset" or "transformer"
    encoder: str = "bilinear"
    encoder_width: int = 64  # code width of a set encoder
    encoder_layers: int = 2  # MLP depth of a set encoder
    ablation_layers: int = 1  # blocks of the transformer encoder of the ablation arm; 0 = no ablation arm
    # training (one fixed budget for every arm)
    steps: int = 3000
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 100
    # evaluation
    eval_tasks: int = 256
    eval_queries: int = 32
    eval_every: int = 500
    curve_tasks: int = 64
    probe_tasks: int = 512
    negative_control: bool = True  # also train (b) and (c) on the disconnected support


PRESETS = {
    "smoke": Config(seeds=(0,), d_model=16, n_layers=1, n_heads=2, encoder_width=16, student_hidden=16, steps=20,
                    batch=16, eval_tasks=32, eval_queries=16, eval_every=10, curve_tasks=16, probe_tasks=64),
    "quick": Config(),
    "full": Config(seeds=tuple(range(5)), steps=10000),
}


# --------------------------------------------------------------------------- building blocks
def build_model(arm: str, cfg: Config) -> torch.nn.Module:
    common = dict(d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, mlp_ratio=cfg.mlp_ratio)
    if arm == "transformer":
        return InContextTransformer(d_in=cfg.d_in, d_out=cfg.d_out, **common)
    if arm == "bottleneck" and cfg.encoder != "transformer":
        return HypernetBottleneck(d_in=cfg.d_in, d_out=cfg.d_out, d_latent=cfg.n_modules, hidden=cfg.student_hidden,
                                  encoder=cfg.encoder, d_model=cfg.encoder_width, n_layers=cfg.encoder_layers)
    if arm in ("bottleneck", ABLATION):
        layers = cfg.ablation_layers if arm == ABLATION else cfg.n_layers
        return HypernetBottleneck(d_in=cfg.d_in, d_out=cfg.d_out, d_latent=cfg.n_modules, hidden=cfg.student_hidden,
                                  encoder="transformer", **{**common, "n_layers": layers})
    if arm == "oracle":
        return HypernetOracle(n_modules=cfg.n_modules, k_max=cfg.k_max, d_in=cfg.d_in, hidden=cfg.student_hidden,
                              d_out=cfg.d_out)
    raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")


def predict(arm: str, model: torch.nn.Module, batch: ICLBatch) -> torch.Tensor:
    if arm == "oracle":
        return model(batch.z, batch.x_q)
    return model(batch.x_ctx, batch.y_ctx, batch.x_q)


def make_sampler(cfg: Config, support: str, seed: int) -> ICLTaskSampler:
    teacher = Hyperteacher(d_in=cfg.d_in, d_out=cfg.d_out, hidden=(cfg.hidden,), n_modules=cfg.n_modules,
                           k_max=cfg.k_max, weighting=cfg.weighting, scale=cfg.scale, seed=seed)
    split = make_split(cfg.n_modules, cfg.k_max, support=support, n_ood=cfg.n_ood, seed=seed)
    return ICLTaskSampler(teacher, split, n_context=cfg.n_context, n_query=cfg.n_query, stats_seed=seed)


@torch.no_grad()
def evaluate_r2(arm: str, model: torch.nn.Module, batch: ICLBatch, chunk: int = 128) -> torch.Tensor:
    """Per-task R^2 (tasks,) of ``model`` on a fixed evaluation batch."""
    model.eval()
    parts = []
    for start in range(0, batch.z.shape[0], chunk):
        part = ICLBatch(*(getattr(batch, f.name)[start:start + chunk] for f in dataclasses.fields(ICLBatch)))
        parts.append(r2_per_task(predict(arm, model, part), part.y_q))
    model.train()
    return torch.cat(parts)


def _subset(batch: ICLBatch, n: int) -> ICLBatch:
    return ICLBatch(*(getattr(batch, f.name)[:n] for f in dataclasses.fields(ICLBatch)))


def train_arm(arm: str, cfg: Config, sampler: ICLTaskSampler, evals: dict[str, ICLBatch], seed: int,
              progress=lambda it: it) -> tuple[torch.nn.Module, dict]:
    """Adam with linear warm-up and cosine decay; MSE on standardised query targets; fresh ID tasks
    every step. Returns the model and a record with learning curves and final per-task R^2."""
    torch.manual_seed(seed)
    model = build_model(arm, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed + 7919)
    curve: dict[str, list] = {"step": [], "id": [], "ood": []}

    def record_curve(done: int) -> None:
        curve["step"].append(done)
        for which in ("id", "ood"):
            curve[which].append(evaluate_r2(arm, model, _subset(evals[which], cfg.curve_tasks)).mean().item())

    def loss_fn(step: int) -> torch.Tensor:
        if step > 0 and step % cfg.eval_every == 0:  # the curve after `step` optimizer steps
            record_curve(step)
        batch = sampler.sample(cfg.batch, "id", generator)
        return F.mse_loss(predict(arm, model, batch), batch.y_q)

    start = time.process_time()
    losses = fit(model, optimizer, loss_fn, cfg.steps, progress=progress,
                 schedule=lambda s: warmup_cosine(s, warmup=cfg.warmup, decay_steps=max(0, cfg.steps - cfg.warmup)))
    record_curve(cfg.steps)
    curve["loss"] = [losses[s - 1] for s in curve["step"]]
    record = {"curve": curve, "cpu_s": time.process_time() - start,
              "params": sum(p.numel() for p in model.parameters())}
    for which in ("id", "ood"):
        r2 = evaluate_r2(arm, model, evals[which])
        record[f"r2_{which}"] = r2.mean().item()
        record[f"r2_{which}_median"] = r2.median().item()
        record[f"r2_{which}_per_combo"] = _per_combo(r2, evals[which].combo_idx, len(sampler.combos(which)))
    return model, record


def _per_combo(r2: torch.Tensor, combo_idx: torch.Tensor, n_combos: int) -> list[float]:
    return [r2[combo_idx == c].mean().item() if bool((combo_idx == c).any()) else float("nan")
            for c in range(n_combos)]


@torch.no_grad()
def probe_layers(model: InContextTransformer, sampler: ICLTaskSampler, cfg: Config,
                 generator: torch.Generator) -> dict:
    """Ridge probe of z_bar from the mean query-token residual after each layer: R^2 ID and OOD."""
    feats, targets = {}, {}
    for which in ("id", "ood"):
        batch = sampler.sample(cfg.probe_tasks if which == "id" else cfg.probe_tasks // 2, which, generator)
        _, residuals = model(batch.x_ctx, batch.y_ctx, batch.x_q, return_residuals=True)
        feats[which] = [h[:, cfg.n_context:].mean(dim=1) for h in residuals]  # per layer: (tasks, d_model)
        targets[which] = sampler.teacher.normalize(batch.z)
    out = {"id": [], "ood": []}
    for layer in range(len(feats["id"])):
        r2_id, r2_ood = linear_probe_r2(feats["id"][layer], targets["id"], feats["ood"][layer], targets["ood"])
        out["id"].append(r2_id)
        out["ood"].append(r2_ood)
    return out


# --------------------------------------------------------------------------- experiment contract
def run_seed(cfg: Config, ctx: RunContext) -> dict:
    check_identifiability(n_modules=cfg.n_modules, n_context=cfg.n_context, d_in=cfg.d_in,
                          hidden=(cfg.hidden,), d_out=cfg.d_out)
    supports = ("random", "disconnected") if cfg.negative_control else ("random",)
    record: dict = {}
    for support in supports:
        sampler = make_sampler(cfg, support, ctx.seed)
        eval_gen = torch.Generator().manual_seed(ctx.seed + 104729)
        evals = {w: sampler.sample(cfg.eval_tasks, w, eval_gen, n_query=cfg.eval_queries) for w in ("id", "ood")}
        arms = ARMS if support == "random" else ("bottleneck", "oracle")
        if support == "random" and cfg.ablation_layers > 0:
            arms = (*arms, ABLATION)
        part = {"split": {"id": sampler.split.id, "ood": sampler.split.ood}}
        for arm in arms:
            model, part[arm] = train_arm(arm, cfg, sampler, evals, ctx.seed, ctx.progress)
            if arm == "transformer":
                part["probe"] = probe_layers(model, sampler, cfg, torch.Generator().manual_seed(ctx.seed + 31))
        record[support] = part
    return record


def _mean(records: dict[int, dict], *keys) -> dict:
    values = []
    for seed in sorted(records):
        value = records[seed]
        for key in keys:
            value = value[key]
        values.append(value)
    return seed_stats(values)


def _arms(cfg: Config) -> tuple[str, ...]:
    return (*ARMS, ABLATION) if cfg.ablation_layers > 0 else ARMS


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    metrics: dict = {"random": {}, "disconnected": {}}
    for arm in _arms(cfg):
        metrics["random"][arm] = {k: _mean(records, "random", arm, k) for k in ("r2_id", "r2_ood", "cpu_s", "params")}
    if cfg.negative_control:
        for arm in ("bottleneck", "oracle"):
            metrics["disconnected"][arm] = {k: _mean(records, "disconnected", arm, k) for k in ("r2_id", "r2_ood")}
    m = {arm: {k: metrics["random"][arm][k]["mean"] for k in ("r2_id", "r2_ood")} for arm in ARMS}
    neg_ood = metrics["disconnected"]["bottleneck"]["r2_ood"]["mean"] if cfg.negative_control else float("nan")
    measured = {
        "compositional.id-fit": min(m[a]["r2_id"] for a in ARMS),
        "compositional.oracle-ood": m["oracle"]["r2_ood"] - m["oracle"]["r2_id"],
        "compositional.bottleneck-ood": m["bottleneck"]["r2_ood"] - m["bottleneck"]["r2_id"],
        "compositional.gap": m["bottleneck"]["r2_ood"] - m["transformer"]["r2_ood"],
        "compositional.transformer-drop": m["transformer"]["r2_id"] - m["transformer"]["r2_ood"],
        "compositional.disconnected": m["bottleneck"]["r2_ood"] - neg_ood,
    }
    metrics["probe"] = {w: np.asarray([records[s]["random"]["probe"][w] for s in sorted(records)]).mean(0).tolist()
                        for w in ("id", "ood")}
    metrics["cpu_s_per_seed"] = seed_stats(
        sum(part[arm]["cpu_s"] for part in records[s].values() for arm in _arms(cfg) if arm in part)
        for s in sorted(records))
    return Evaluation(measured=measured, metrics=metrics, figures=_figures(cfg, records, out_dir))


def _figures(cfg: Config, records: dict[int, dict], out_dir: Path) -> list[str]:
    seeds = sorted(records)
    names = []
    fig, ax = plotting.figure()
    bars = [("random", a) for a in _arms(cfg)] + ([("disconnected", a) for a in ("bottleneck", "oracle")]
                                           if cfg.negative_control else [])
    for offset, which in ((-0.2, "id"), (0.2, "ood")):
        vals = np.asarray([[records[s][sup][arm][f"r2_{which}"] for s in seeds] for sup, arm in bars])
        ax.bar(np.arange(len(bars)) + offset, vals.mean(1), width=0.4, yerr=vals.std(1), label=which.upper())
    ax.set_xticks(np.arange(len(bars)), [f"{a}\n({sup})" for sup, a in bars], fontsize=7)
    ax.set(ylabel="per-task R^2", ylim=(min(-0.2, ax.get_ylim()[0]), 1.05), title="ID vs OOD combinations")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend()
    names.append(plotting.save(fig, out_dir, "r2_id_ood.png"))
    fig, axes = plotting.figure(ncols=2)
    for ax, which in zip(axes, ("id", "ood")):
        for sup, arm in bars:
            steps = records[seeds[0]][sup][arm]["curve"]["step"]
            plotting.band(ax, steps, [records[s][sup][arm]["curve"][which] for s in seeds], label=f"{arm} ({sup})")
        ax.set(xlabel="step", ylabel="R^2", ylim=(-0.5, 1.02), title=f"{which.upper()} R^2 during training")
    axes[0].legend(fontsize=7)
    names.append(plotting.save(fig, out_dir, "learning_curves.png"))
    fig, ax = plotting.figure()
    layers = list(range(cfg.n_layers + 1))
    for which in ("id", "ood"):
        plotting.band(ax, layers, [records[s]["random"]["probe"][which] for s in seeds], label=which.upper(), marker="o")
    ax.set(xlabel="layer (0 = embedding)", ylabel="probe R^2 of z_bar", title="Linear probe of the task latent")
    ax.legend()
    names.append(plotting.save(fig, out_dir, "probe.png"))
    return names


CLAIMS = (
    ClaimSpec("compositional.id-fit", "All three models fit the training combinations: min over models of mean ID R^2",
              paper="Transformers do well in distribution (qualitative; no number available)", threshold=">= 0.9"),
    ClaimSpec("compositional.oracle-ood", "The oracle hypernetwork's OOD R^2 minus its ID R^2",
              paper="Design sanity check: the true latent generalises to unseen combinations", threshold=">= -0.1"),
    ClaimSpec("compositional.bottleneck-ood", "The bottleneck's OOD R^2 minus its ID R^2",
              paper="A bottleneck separating task inference from execution generalises compositionally",
              threshold=">= -0.1"),
    ClaimSpec("compositional.gap", "Bottleneck OOD R^2 minus plain transformer OOD R^2",
              paper="Plain in-context transformers struggle to generalise compositionally; the bottleneck does",
              threshold=">= 0.2"),
    ClaimSpec("compositional.transformer-drop", "Plain transformer ID R^2 minus its OOD R^2",
              paper="The plain transformer does well ID but poorly on unseen combinations", threshold=">= 0.2"),
    ClaimSpec("compositional.disconnected", "Bottleneck OOD R^2 (random support) minus bottleneck OOD R^2 "
              "(disconnected support)", paper="Negative control (ICLR 2024 theory): without connected support "
              "the modules are not identifiable", threshold=">= 0.2"),
)

EXPERIMENT = Experiment(
    name="compositional",
    paper="When can transformers compositionally generalize in-context? (Kobayashi, Schug, Akram et al., "
          "arXiv 2407.12275)",
    presets=PRESETS, run_seed=run_seed, evaluate=evaluate, quick_minutes=3.0,
    claims=CLAIMS,
)
