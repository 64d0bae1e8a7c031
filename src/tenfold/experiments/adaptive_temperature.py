"""Adaptive temperature on max retrieval (Veličković et al., 2024, "softmax is not enough (for sharp
out-of-distribution)", arXiv 2410.01104, §3 and §5).

A single attention head with a learned query is trained to return the class of the max-priority item
in sets of 16 items, then tested on sets of 16 ... 4096 items. Softmax disperses as the set grows
(Lemma 2.1: n * max_k alpha_k <= e^delta for a row of spread delta), so accuracy falls; adaptive
temperature, applied at inference only, sharpens each row by beta(H) and should delay the fall. The
same evaluation sets are used for every arm (paired comparison). Ablations: log-n scaling
(beta = log n / log 16), an oracle beta per n (grid-searched on the test sets: an upper reference), and
a quartic refitted on this model's (entropy, best beta) pairs from separate fitting sets.

Fair baseline (docs/methods/adaptive-temperature.md): both readouts share one softmax-trained network,
whose learning rate is chosen from a grid on development seeds by the baseline's (softmax)
out-of-distribution accuracy on development sets (``TUNING``); the training loss's convergence is
reported beside the comparison claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tenfold import plotting
from tenfold.experiment import ClaimSpec, Evaluation, Experiment, RunContext, seed_stats, stack_seeds
from tenfold.nn.adaptive_temperature import (
    PAPER_COEFFS, adaptive_beta, adaptive_temperature_softmax, fit_polynomial, log_n_scaled_softmax,
)
from tenfold.models.max_retrieval import MaxRetrievalNet
from tenfold.tasks.max_retrieval import sample_max_retrieval
from tenfold.train.loop import compare_convergence, fit, warmup_cosine
from tenfold.tuning import ArmTuning, TuningSpec, final_loss


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train_n: int = 16
    steps: int = 2000
    batch: int = 128
    lr: float = 0.032  # chosen from LR_GRID on development seeds by the baseline's accuracy (TUNING below)
    d_hidden: int = 64
    sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    eval_sets: int = 1024  # test sets per size, identical for every arm
    fit_sets: int = 256  # separate sets per size for refitting the polynomial
    max_items: int = 2**18  # items per evaluation chunk (memory)
    beta_grid: tuple[float, ...] = tuple(round(2 ** (k / 8), 4) for k in range(25))  # 1 ... 8


PRESETS = {
    "smoke": Config(seeds=(0,), steps=60, sizes=(16, 64, 256), eval_sets=64, fit_sets=32),
    "quick": Config(),
    "full": Config(seeds=tuple(range(10)), steps=4000, sizes=tuple(2**k for k in range(4, 15)), eval_sets=4096,
                   fit_sets=1024),
}

PAIRED_SIZES = (256, 512, 1024)  # where the paper reports its clearest gains
DEV_SET_OFFSET = 30_000  # the development sets of tuning trials: generator 30_000 + seed (tests use 20_000 + seed)


# ---------------------------------------------------------------------------------------------------
# training and evaluation of one seed


def _train(cfg: Config, generator: torch.Generator, device: torch.device,
           progress=None) -> tuple[MaxRetrievalNet, list[float]]:
    """The max-retrieval network trained with plain softmax at ``cfg.lr``, and its loss at every step."""
    net = MaxRetrievalNet(d_hidden=cfg.d_hidden, d_k=cfg.d_hidden).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def loss_fn(step: int) -> torch.Tensor:
        feats, target, _ = _on(device, sample_max_retrieval(cfg.batch, cfg.train_n, generator=generator))
        return F.cross_entropy(net(feats), target)

    losses = fit(net, opt, loss_fn, cfg.steps, progress=progress,
                 schedule=partial(warmup_cosine, warmup=0, decay_steps=cfg.steps))  # cosine to 0, no warm-up
    return net.eval(), losses


def _on(device: torch.device, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Sets drawn on the CPU with the seed's generator (identical on every device), moved to ``device``."""
    return tuple(t.to(device) for t in tensors)


def _chunks(cfg: Config, n: int, sets: int, generator: torch.Generator, device: torch.device):
    per_chunk = max(1, min(sets, cfg.max_items // n))
    for start in range(0, sets, per_chunk):
        yield _on(device, sample_max_retrieval(min(per_chunk, sets - start), n, generator=generator))


def _fit_polynomial(cfg: Config, net: MaxRetrievalNet, generator: torch.Generator):
    """For each size, the beta of the grid with the lowest cross-entropy on fitting sets; then a quartic
    fitted to (row entropy, best beta of its size) over all rows, as the paper fitted its polynomial."""
    device = net.query.device
    grid = torch.tensor(cfg.beta_grid, device=device)
    entropies, betas, best = [], [], []
    for n in cfg.sizes:
        nll, rows = torch.zeros(len(grid), device=device), []
        for feats, target, _ in _chunks(cfg, n, cfg.fit_sets, generator, device):
            scores, values = net.encode(feats)
            rows.append(adaptive_temperature_softmax(scores, return_stats=True)[1]["entropy"])
            for g, beta in enumerate(grid):
                logits = net.readout(torch.softmax(beta * scores, -1), values)
                nll[g] += F.cross_entropy(logits, target, reduction="sum")
        best.append(float(grid[nll.argmin()]))
        entropies.append(torch.cat(rows))
        betas.append(torch.full_like(entropies[-1], best[-1]))
    coeffs = fit_polynomial(torch.cat(entropies).cpu(), torch.cat(betas).cpu(), degree=len(PAPER_COEFFS) - 1)
    return coeffs, best


def _evaluate_size(cfg: Config, net: MaxRetrievalNet, n: int, refit: tuple[float, ...],
                   generator: torch.Generator) -> dict:
    device = net.query.device
    grid = torch.tensor(cfg.beta_grid, device=device)
    correct = {"softmax": 0, "adaptive": 0, "log-n": 0, "refit": 0}
    grid_correct = torch.zeros(len(grid), device=device)
    sums = {"w_base": 0.0, "w_at": 0.0, "entropy": 0.0, "beta": 0.0, "beta_above_1": 0.0, "spread": 0.0}
    bound_gap = -math.inf
    for feats, target, argmax in _chunks(cfg, n, cfg.eval_sets, generator, device):
        scores, values = net.encode(feats)
        base = torch.softmax(scores, -1)
        at, stats = adaptive_temperature_softmax(scores, return_stats=True)
        arms = {"softmax": base, "adaptive": at, "log-n": log_n_scaled_softmax(scores, n_ref=cfg.train_n),
                "refit": adaptive_temperature_softmax(scores, coeffs=refit)}
        for arm, weights in arms.items():
            correct[arm] += int((net.readout(weights, values).argmax(-1) == target).sum())
        for g, beta in enumerate(grid):
            grid_correct[g] += (net.readout(torch.softmax(beta * scores, -1), values).argmax(-1) == target).sum()
        spread = scores.amax(-1) - scores.amin(-1)
        sums["w_base"] += float(base.gather(1, argmax[:, None]).sum())
        sums["w_at"] += float(at.gather(1, argmax[:, None]).sum())
        sums["entropy"] += float(stats["entropy"].sum())
        sums["beta"] += float(stats["beta"].sum())
        sums["beta_above_1"] += float((stats["beta"] > 1).sum())
        sums["spread"] += float(spread.sum())
        # Lemma 2.1 / Thm 2.2: log(n * max alpha) <= delta for every row
        bound_gap = max(bound_gap, float((math.log(n) + base.amax(-1).log() - spread).max()))
    best = int(grid_correct.argmax())
    out = {f"acc_{arm}": c / cfg.eval_sets for arm, c in correct.items()}
    out.update({k: v / cfg.eval_sets for k, v in sums.items()})
    out.update(acc_oracle=float(grid_correct[best]) / cfg.eval_sets, beta_oracle=float(grid[best]),
               bound_gap=bound_gap)
    return out


def run_seed(cfg: Config, ctx: RunContext) -> dict:
    net, losses = _train(cfg, torch.Generator().manual_seed(ctx.seed), ctx.device,
                         progress=lambda steps: ctx.progress(steps, desc="train"))
    with torch.no_grad():
        refit, best_beta = _fit_polynomial(cfg, net, torch.Generator().manual_seed(10_000 + ctx.seed))
        evaluation = torch.Generator().manual_seed(20_000 + ctx.seed)
        per_size = [_evaluate_size(cfg, net, n, refit, evaluation) for n in ctx.progress(cfg.sizes, desc="eval")]
    record = {key: [row[key] for row in per_size] for key in per_size[0]}
    record.update(refit_coeffs=list(refit), fit_best_beta=best_beta, losses=losses)
    return record


# ---------------------------------------------------------------------------------------------------
# claims, metrics and figures


def _paired_t(diff: np.ndarray) -> float:
    """Paired t statistic of per-seed differences (0 when they are all equal)."""
    sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
    return float(diff.mean() / (sd / math.sqrt(len(diff)))) if sd > 0 else 0.0


def _metrics(cfg: Config, records: dict[int, dict]) -> dict:
    keys = [k for k in records[min(records)] if k not in ("refit_coeffs", "fit_best_beta", "losses")]
    per_size = {key: stack_seeds(records, key) for key in keys}  # (seeds, sizes)
    metrics = {"sizes": list(cfg.sizes)}
    for key, values in per_size.items():
        metrics[key] = {str(n): seed_stats(values[:, i]) for i, n in enumerate(cfg.sizes)}
    diff = per_size["acc_adaptive"] - per_size["acc_softmax"]
    metrics["paired_diff"] = {str(n): {**seed_stats(diff[:, i]), "t": _paired_t(diff[:, i])}
                              for i, n in enumerate(cfg.sizes)}
    coeffs = stack_seeds(records, "refit_coeffs")
    metrics["refit_coeffs"] = {"mean": coeffs.mean(0).tolist(), "per_seed": coeffs.tolist(),
                               "paper": list(PAPER_COEFFS), "order": "highest degree first"}
    metrics["fit_best_beta"] = seed_stats(stack_seeds(records, "fit_best_beta").mean(1))
    metrics["fit_best_beta"]["per_size_mean"] = stack_seeds(records, "fit_best_beta").mean(0).tolist()
    return metrics


CLAIMS = (
    ClaimSpec("adaptive-temperature.in-distribution", "Baseline accuracy at the training size (16 items), seed mean",
              "98.6% at 16 items", ">= 0.95"),
    ClaimSpec("adaptive-temperature.accuracy-falls",
              "Baseline accuracy drop from 16 items to the largest test size, seed mean",
              "98.6% at 16 items -> 22.6% at 4096", ">= 0.1"),
    ClaimSpec("adaptive-temperature.max-weight-falls",
              "Sizes where the mean attention weight on the max item does not fall as the set doubles",
              "the max-retrieval head is sharp at 16 items and disperses at larger sizes (Fig. 2)", "<= 0"),
    ClaimSpec("adaptive-temperature.entropy-log-n",
              "Slope of mean attention entropy against log n for n >= 64 (uniform weights give 1)",
              "every softmax coefficient tends to Theta(1/n) (Lemma 2.1)", ">= 0.5"),
    ClaimSpec("adaptive-temperature.dispersion-bound",
              "max over seeds, sizes and rows of log(n * max_k alpha_k) - delta (Lemma 2.1: <= 0)",
              "e^-delta / n <= alpha_k <= e^delta / n for logits of spread delta", "<= 1e-4"),
    ClaimSpec("adaptive-temperature.not-worse",
              "Smallest seed-mean accuracy gain of adaptive temperature over softmax at any OOD size (both "
              "read out one network, trained with softmax at the lr that maximises softmax's development accuracy)",
              "adaptive temperature >= baseline at every OOD size (e.g. 81.3% -> 82.1% at 256)", ">= 0"),
    ClaimSpec("adaptive-temperature.paired-gain",
              "Smallest mean paired accuracy gain at 256, 512 and 1024 items (same network and test sets, per "
              "seed; the lr tuned for softmax)",
              "gains of +0.8 / +3.9 points at 256 / 1024 items, p < 1e-3 (paired t-test)", "> 0"),
)


def _measured(cfg: Config, records: dict[int, dict]) -> dict[str, float]:
    sizes = np.asarray(cfg.sizes)
    mean = {key: stack_seeds(records, key).mean(0) for key in
            ("acc_softmax", "acc_adaptive", "w_base", "entropy")}
    diff = (stack_seeds(records, "acc_adaptive") - stack_seeds(records, "acc_softmax")).mean(0)
    ood = sizes > cfg.train_n
    paired = np.isin(sizes, PAIRED_SIZES)
    tail = sizes >= 4 * cfg.train_n
    slope = float(np.polyfit(np.log(sizes[tail]), mean["entropy"][tail], 1)[0]) if tail.sum() >= 2 else math.nan
    i_train = int(np.flatnonzero(sizes == cfg.train_n)[0])
    return {
        "adaptive-temperature.in-distribution": mean["acc_softmax"][i_train],
        "adaptive-temperature.accuracy-falls": mean["acc_softmax"][i_train] - mean["acc_softmax"][-1],
        "adaptive-temperature.max-weight-falls": int((np.diff(mean["w_base"]) >= 0).sum()),
        "adaptive-temperature.entropy-log-n": slope,
        "adaptive-temperature.dispersion-bound": float(stack_seeds(records, "bound_gap").max()),
        "adaptive-temperature.not-worse": float(diff[ood].min()),
        "adaptive-temperature.paired-gain": float(diff[paired].min()) if paired.any() else math.nan,
    }


def _figures(cfg: Config, records: dict[int, dict], out_dir: Path) -> list[str]:
    sizes, names = list(cfg.sizes), []
    fig, ax = plotting.figure()
    for key, label in (("acc_softmax", "softmax"), ("acc_adaptive", "adaptive temperature"),
                       ("acc_log-n", "log-n scaling"), ("acc_refit", "refitted polynomial"),
                       ("acc_oracle", "oracle beta per n")):
        plotting.band(ax, sizes, stack_seeds(records, key), label=label, marker="o", markersize=3)
    ax.set(xscale="log", xlabel="items n (trained at 16)", ylabel="accuracy", title="max retrieval")
    ax.legend(fontsize=8)
    names.append(plotting.save(fig, out_dir, "accuracy_vs_n.png"))
    fig, ax = plotting.figure()
    plotting.band(ax, sizes, stack_seeds(records, "w_base"), label="softmax")
    plotting.band(ax, sizes, stack_seeds(records, "w_at"), label="adaptive temperature")
    ax.plot(sizes, 1 / np.asarray(sizes), "k:", label="uniform 1/n")
    ax.set(xscale="log", yscale="log", xlabel="items n", ylabel="weight on the max item", title="dispersion")
    ax.legend(fontsize=8)
    names.append(plotting.save(fig, out_dir, "max_weight_vs_n.png"))
    fig, ax = plotting.figure()
    log_n = np.log(sizes)
    plotting.band(ax, log_n, stack_seeds(records, "entropy"), label="attention entropy (softmax)", marker="o")
    ax.plot(log_n, log_n, "k:", label="log n (uniform)")
    ax.axhspan(0.8486, 5.9445, color="tab:green", alpha=0.08, label="window where the paper's beta > 1")
    ax.set(xlabel="log n", ylabel="entropy (nats)", title="entropy against log n")
    ax.legend(fontsize=8)
    names.append(plotting.save(fig, out_dir, "entropy_vs_log_n.png"))
    fig, axes = plotting.figure(ncols=2)
    plotting.band(axes[0], sizes, stack_seeds(records, "beta"), label="adaptive (paper's polynomial), mean")
    plotting.band(axes[0], sizes, stack_seeds(records, "beta_oracle"), label="oracle (test accuracy)")
    plotting.band(axes[0], sizes, stack_seeds(records, "fit_best_beta"), label="best cross-entropy (fitting sets)")
    axes[0].plot(sizes, np.log(sizes) / math.log(cfg.train_n), "k:", label="log n / log 16")
    axes[0].set(xscale="log", xlabel="items n", ylabel="beta = 1 / temperature", title="beta against n")
    axes[0].legend(fontsize=7)
    h = torch.linspace(0, 8, 161)
    axes[1].plot(h, adaptive_beta(h), "k", label="paper")
    for seed in sorted(records):
        axes[1].plot(h, adaptive_beta(h, coeffs=records[seed]["refit_coeffs"]), alpha=0.6, label=f"refit seed {seed}")
    axes[1].set(xlabel="entropy H (nats)", ylabel="beta(H)", title="polynomials (max(poly, 1))")
    axes[1].legend(fontsize=7)
    names.append(plotting.save(fig, out_dir, "beta.png"))
    return names


def _convergence(records: dict[int, dict]) -> dict:
    """The comparison claims' arms read out one trained network (softmax, and adaptive temperature at
    inference), so one training loss per seed stands for both; older records without losses give none."""
    if any("losses" not in r for r in records.values()):
        return {}
    losses = {SHARED_ARM: [records[s]["losses"] for s in sorted(records)]}
    entry = compare_convergence(losses, shared_budget=True)
    return {claim: entry for claim in ("adaptive-temperature.not-worse", "adaptive-temperature.paired-gain")}


def evaluate(cfg: Config, records: dict[int, dict], out_dir: Path) -> Evaluation:
    return Evaluation(measured=_measured(cfg, records), metrics=_metrics(cfg, records),
                      figures=_figures(cfg, records, out_dir), convergence=_convergence(records))


# ---------------------------------------------------------------------------------------------------
# tuning: the learning rate of the network both arms share, chosen for the baseline (softmax)


def dev_accuracy(cfg: Config, net: MaxRetrievalNet, seed: int) -> dict[str, float]:
    """Mean accuracy of softmax and of adaptive temperature over the out-of-distribution sizes of
    ``cfg.sizes`` (> ``train_n``), on ``eval_sets`` development sets per size drawn from generator
    ``DEV_SET_OFFSET + seed`` (not the sets the claims are measured on)."""
    generator = torch.Generator().manual_seed(DEV_SET_OFFSET + seed)
    device = net.query.device
    sizes = [n for n in cfg.sizes if n > cfg.train_n]
    if not sizes:
        raise ValueError(f"sizes must hold a size above train_n={cfg.train_n} to score a tuning trial, got {cfg.sizes}")
    correct = {"softmax": 0, "adaptive": 0}
    with torch.no_grad():
        for n in sizes:
            for feats, target, _ in _chunks(cfg, n, cfg.eval_sets, generator, device):
                scores, values = net.encode(feats)
                for arm, weights in (("softmax", torch.softmax(scores, -1)),
                                     ("adaptive", adaptive_temperature_softmax(scores))):
                    correct[arm] += int((net.readout(weights, values).argmax(-1) == target).sum())
    return {arm: c / (cfg.eval_sets * len(sizes)) for arm, c in correct.items()}


def tune_trial(cfg: Config, arm: str, seed: int) -> dict:
    """One tuning trial (on the CPU): the network trained at ``cfg.lr`` on seed ``seed``, scored by the
    baseline's (softmax) mean out-of-distribution accuracy on development sets (:func:`dev_accuracy`);
    ``loss`` is the mean training loss over the last 10 % of steps; ``adaptive`` is reported beside it."""
    if arm != SHARED_ARM:
        raise ValueError(f"arm must be {SHARED_ARM!r} (both readouts share one network), got {arm!r}")
    net, losses = _train(cfg, torch.Generator().manual_seed(seed), torch.device("cpu"))
    accuracy = dev_accuracy(cfg, net, seed)
    return {"score": accuracy["softmax"], "loss": final_loss(losses), "adaptive": accuracy["adaptive"]}


SHARED_ARM = "softmax"  # the tuned arm: the softmax-trained network that adaptive temperature reads out too
LR_GRID = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 0.016, 0.032, 0.064)  # x2 steps; 8e-3 and up added as the best moved up
TUNING = TuningSpec(
    fields={SHARED_ARM: {"lr": "lr"}},
    trial=tune_trial,
    metric="softmax accuracy, mean over the out-of-distribution sizes, on eval_sets development sets per size "
           "(the network adaptive temperature reads out at inference is the same one)",
    record={  # `tenfold tune adaptive-temperature --arm softmax --grid lr=<LR_GRID> --seeds 1000,1001`
        SHARED_ARM: ArmTuning(grid={"lr": LR_GRID}, seeds=(1000, 1001), preset="quick",
                              scores={"lr=0.00025": 0.386169, "lr=0.0005": 0.471191, "lr=0.001": 0.525818,
                                      "lr=0.002": 0.572388, "lr=0.004": 0.622559, "lr=0.008": 0.638794,
                                      "lr=0.016": 0.680359, "lr=0.032": 0.703491, "lr=0.064": 0.101868},
                              chosen={"lr": 0.032}),
    },
)


EXPERIMENT = Experiment(
    name="adaptive-temperature",
    paper="Softmax is not enough (for sharp out-of-distribution), Veličković et al. (arXiv 2410.01104)",
    presets=PRESETS, run_seed=run_seed, evaluate=evaluate, quick_minutes=3.0, claims=CLAIMS,
    devices=("cpu", "cuda"), tuning=TUNING,
)
