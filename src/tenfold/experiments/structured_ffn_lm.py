"""The character-LM training of the structured-ffn experiment (Wei et al., 2024; see
docs/methods/structured-ffn.md): AdamW, gradient clipping, linear warm-up then cosine decay to
``min_lr_frac · lr`` (``tenfold.train.loop.warmup_cosine``), the step loop of
``tenfold.train.loop.fit``, optional self-guided training of structured FFNs (fixed-step or
fixed-FLOP), loss-spike counting, and the same result in one process or under ``torchrun`` (DDP,
gloo on CPU). It lives beside the experiment because it serves only it.

Data parallelism: every rank draws the same global batch from a generator seeded with ``seed`` and
keeps its contiguous slice; DDP averages the gradients, so with equal slices the update equals one
process's update on the whole global batch. Run it with e.g.

    torchrun --nproc-per-node 2 -m your_script        # calls tenfold.utils.distributed.init_from_env()
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tenfold.nn.structured import SCHEDULES, SGT_MODES, SelfGuidedTraining, sgt_steps, structured_layers
from tenfold.tasks.text import CharCorpus
from tenfold.train.amp import AMP_MODES, Amp, autocast
from tenfold.train.loop import fit, warmup_cosine
from tenfold.utils.distributed import world


CORPORA = {"pydoc": CharCorpus.pydoc, "torch-source": CharCorpus.torch_source}


@dataclass
class LMTrainConfig:
    steps: int = 300
    batch_size: int = 32  # global, over all ranks
    context: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1  # on matrices (dim >= 2) only
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_frac: float = 0.1
    min_lr_frac: float = 0.1
    clip: float = 1.0
    eval_every: int = 0  # validation every n steps (0: only at the end)
    eval_windows: int | None = None  # cap on validation windows per evaluation (None: all)
    eval_start: int = 0  # first validation window evaluated (tuning trials score on windows after the claim's)
    sgt: bool = False  # self-guided training of the structured layers
    sgt_ratio: float = 0.5
    sgt_schedule: str = "cosine"
    sgt_reduce_flop: bool = False
    sgt_mode: str = "fixedstep"  # "fixedflop": steps + guided steps, the first guided batches replayed at the end
    amp: Amp = "off"  # "bf16": training and validation forwards under bfloat16 autocast (tenfold.train.amp)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.eval_start < 0:
            raise ValueError(f"eval_start must be >= 0, got {self.eval_start}")
        if not 0 <= self.warmup_frac < 1 or not 0 <= self.min_lr_frac <= 1:
            raise ValueError("warmup_frac must be in [0, 1) and min_lr_frac in [0, 1]")
        if self.sgt_schedule not in SCHEDULES:
            raise ValueError(f"sgt_schedule must be one of {SCHEDULES}, got {self.sgt_schedule!r}")
        if self.sgt_mode not in SGT_MODES:
            raise ValueError(f"sgt_mode must be one of {SGT_MODES}, got {self.sgt_mode!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")

    def train_steps(self) -> int:
        """Optimizer steps actually run: ``steps``, plus the guided steps in fixed-FLOP SGT."""
        return sgt_steps(self.steps, self.sgt_ratio, self.sgt_mode)[1] if self.sgt else self.steps


def lr_scale(step: int, cfg: LMTrainConfig) -> float:
    """Learning-rate multiplier of step ``step`` (0-based) over the ``cfg.train_steps()`` steps run:
    linear warm-up over ``int(warmup_frac · steps)`` steps, then cosine from 1 to ``min_lr_frac`` at
    the last step."""
    steps = cfg.train_steps()
    warmup = int(cfg.warmup_frac * steps)
    return warmup_cosine(step, warmup=warmup, decay_steps=max(steps - 1 - warmup, 1), floor=cfg.min_lr_frac)


def count_loss_spikes(losses, window: int = 10, threshold: float = 0.3, start: int = 20) -> int:
    """Steps t >= ``start`` whose loss exceeds the median of the previous ``window`` losses by more
    than ``threshold`` nats."""
    losses = [float(v) for v in losses]
    return sum(1 for t in range(max(start, window), len(losses))
               if losses[t] > statistics.median(losses[t - window: t]) + threshold)


def make_optimizer(model: nn.Module, cfg: LMTrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def matmul_macs_per_token(model: nn.Module) -> int:
    """Multiply-adds per token of every weight matrix (dim >= 2), guides excluded, learned position
    table excluded (a lookup), tied token embedding counted once (it is the output head).
    Attention scores are not included."""
    guides = {id(layer.guide) for layer in structured_layers(model) if layer.guide is not None}
    pos = getattr(model, "pos", None)
    skip = guides | ({id(pos.weight)} if pos is not None else set())
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2 and id(p) not in skip)


def deployed_params(model: nn.Module) -> int:
    """Parameters of the model without any self-guided-training guide."""
    guides = {id(layer.guide) for layer in structured_layers(model) if layer.guide is not None}
    return sum(p.numel() for p in model.parameters() if id(p) not in guides)


def _guide_macs(model: nn.Module) -> int:
    """Σ over structured layers of (guide calls so far) × (guide size)."""
    return sum(layer.guide_calls * layer.in_features * layer.out_features for layer in structured_layers(model))


def _all_reduce(values: list[float]) -> list[float]:
    if world().size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def evaluate_lm(model: nn.Module, corpus: CharCorpus, context: int, max_windows: int | None = None,
                batch_size: int = 64, amp: str = "off", start: int = 0) -> float:
    """Mean next-character cross-entropy (nats) over the validation windows from window ``start`` on
    (the first ``max_windows`` of them when given); windows are split over ranks and the sums
    all-reduced. Forwards run under ``autocast(amp)``."""
    rank, size = world().rank, world().size
    device = next(model.parameters()).device
    end = None if max_windows is None else start + max_windows
    was_training = model.training
    model.eval()
    total, count, index = 0.0, 0, 0
    for x, y in corpus.windows("val", context, batch_size):
        if end is not None and index >= end:
            break
        keep = [i for i in range(len(x)) if start <= index + i and (index + i) % size == rank
                and (end is None or index + i < end)]
        index += len(x)
        if not keep:
            continue
        target = y[keep].to(device)
        with autocast(amp, device):
            logits = model(x[keep].to(device))
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),  # (b*ctx, vocab)
                                     reduction="sum").item()
        count += y[keep].numel()
    model.train(was_training)
    total, count = _all_reduce([total, float(count)])
    return total / count


def _wrap(model: nn.Module, find_unused: bool) -> nn.Module:
    if world().size == 1:
        return model
    return DistributedDataParallel(model, find_unused_parameters=find_unused)


def train_lm(model: nn.Module, corpus: CharCorpus, cfg: LMTrainConfig, seed: int = 0, progress=None) -> dict:
    """Train ``model`` (a ``tenfold.models.GPT``) on ``corpus`` and return a JSON-able record:
    per-step training losses (global-batch mean), α per step, final validation loss, loss spikes,
    training FLOPs (matrix products, ×3 for backward, guides included), deployed parameters, timing.
    Runs on the device of ``model``'s parameters (batches are drawn on the CPU, so a seed gives the
    same batches on every device).

    The steps run through ``fit`` (zero grad, forward and backward here, clipping, AdamW step, the
    warm-up + cosine multiplier); the SGT hooks sit inside the step: α is lowered right after the
    backward (before the clipping and the optimizer step) and the guides are closed at the start of
    the first step after the last guided one. In fixed-FLOP SGT the batch generator restarts after
    ``cfg.steps`` steps, so the last guided-steps batches replay the first ones."""
    rank, size = world().rank, world().size
    device = next(model.parameters()).device
    if cfg.batch_size % size:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the world size ({size})")
    per_rank = cfg.batch_size // size
    sgt = (SelfGuidedTraining(model, total_steps=cfg.steps, ratio=cfg.sgt_ratio, schedule=cfg.sgt_schedule,
                              reduce_flop=cfg.sgt_reduce_flop, seed=seed, mode=cfg.sgt_mode) if cfg.sgt else None)
    optimizer = make_optimizer(model, cfg)
    state = {"net": _wrap(model, find_unused=sgt is not None), "generator": torch.Generator().manual_seed(seed),
             "guide_flops": 0.0}
    macs = matmul_macs_per_token(model)
    steps = cfg.train_steps()
    alphas, val_curve = [], []

    def step_loss(step: int) -> torch.Tensor:
        if sgt is not None and sgt.maybe_close(optimizer):
            state["net"] = _wrap(model, find_unused=False)
        if cfg.eval_every and step and step % cfg.eval_every == 0:
            val_curve.append((step, evaluate_lm(model, corpus, cfg.context, cfg.eval_windows, amp=cfg.amp,
                                                start=cfg.eval_start)))
        if step == cfg.steps:  # fixed-FLOP SGT: replay the first batches
            state["generator"] = torch.Generator().manual_seed(seed)
        x, y = corpus.batch("train", cfg.batch_size, cfg.context, state["generator"])
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        x, y = x[mine].to(device), y[mine].to(device)
        calls_before = _guide_macs(model)
        with autocast(cfg.amp, device):
            logits = state["net"](x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # (b*ctx, vocab)
        state["guide_flops"] += 6.0 * (_guide_macs(model) - calls_before) * per_rank * cfg.context * size
        loss.backward()
        alphas.append(sgt.alpha if sgt is not None and not sgt.closed else 0.0)
        if sgt is not None:
            sgt.after_backward()
        return loss

    wall0, cpu0 = time.perf_counter(), time.process_time()
    local = fit(model, optimizer, step_loss, steps, schedule=lambda step: lr_scale(step, cfg), clip=cfg.clip,
                progress=progress, backward=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    losses = [value / size for value in _all_reduce(local)]
    if sgt is not None and not sgt.closed:  # the guides close after the last guided step (ratio 1: the last step)
        sgt.count = max(sgt.count, sgt.guided_steps)
        sgt.maybe_close(optimizer)
    val = evaluate_lm(model, corpus, cfg.context, cfg.eval_windows, amp=cfg.amp, start=cfg.eval_start)
    val_curve.append((steps, val))
    return {
        "losses": losses, "alphas": alphas, "val_loss": val, "val_curve": val_curve,
        "spikes": count_loss_spikes(losses),
        "train_flops": 6.0 * macs * cfg.batch_size * cfg.context * steps + state["guide_flops"],
        "guide_flops": state["guide_flops"], "params": deployed_params(model), "train_steps": steps,
        "s_per_step": wall / steps, "cpu_s": cpu, "world_size": size,
    }


def train_gpt_on_text(model: dict, train: dict, seed: int = 0, ffn: dict | None = None, text: str | None = None,
                      rope: bool = False, return_weights: bool = False, paired_init: bool = False,
                      device: str = "cpu", corpus: str = "pydoc") -> dict:
    """Build a character corpus (``text``, or the pydoc topics when None), seed torch with ``seed``,
    build ``GPT(GPTConfig(vocab_size=..., **model), ffn=structured_ffn(**ffn))`` (with a shared
    ``RotaryEmbedding`` and no learned positions when ``rope``) and train it with
    ``LMTrainConfig(**train)``. Importable by name, so it also runs in ``run_processes`` workers or
    under torchrun (every rank builds the same model from the same seed).

    ``paired_init``: the structured model starts from the dense model of the same seed (every shared
    parameter copied, LowRank factors = the rank-R SVD of the dense FFN weights; see
    ``copy_dense_init``), so arms of one seed differ only in their FFN structure (the training batches
    are always the same for a seed). The model is built on the CPU (the same initial weights on every
    device) and trained on ``device``."""
    from tenfold.models.gpt import GPT, GPTConfig
    from tenfold.nn.structured import copy_dense_init, structured_ffn

    corpus = CORPORA[corpus]() if text is None else CharCorpus(text)
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=corpus.vocab_size, **({**model, "pos_embedding": "none"} if rope else model))
    rotary = None
    if rope:
        from tenfold.nn.rope import RotaryEmbedding

        rotary = RotaryEmbedding(cfg.dim // cfg.num_heads)
    if paired_init and ffn:
        reference = GPT(cfg, rope=rotary)  # the dense model of this seed
        net = GPT(cfg, rope=rotary, ffn=structured_ffn(**ffn))
        copy_dense_init(net, reference)
    else:
        net = GPT(cfg, rope=rotary, ffn=structured_ffn(**ffn) if ffn else None)
    record = train_lm(net.to(device), corpus, LMTrainConfig(**train), seed=seed)
    if return_weights:
        record["weights"] = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).tolist()  # (params,)
    return record
