"""Effective learning rates of scale-invariant layers, and the layer-wise schedule that makes a
Normalize-and-Project network follow an unprojected normalized network.

Lyle et al., "Normalization and effective learning rates in reinforcement learning", NeurIPS 2024
(arXiv 2407.01800). For a weight W that a normalization makes scale-invariant, a step of learning
rate η moves W's direction like a step on the unit sphere of size

    ELR = η / ‖W‖²   (SGD: the gradient scales as 1/‖W‖)        ELR ≈ η / ‖W‖   (Adam: steps ≈ η per entry)

A NaP copy whose weight is held at norm ρ_l takes exactly the same steps in direction as a free
network whose weight has norm ‖W_l(t)‖ when its learning rate is

    η_l(t) = η · (ρ_l / ‖W_l(t)‖)^p,     p = 2 (SGD, exact) | 1 (Adam, approximate)

(:func:`layerwise_elr_lrs`); :func:`global_elr_lr` is the one-number version using the norms of all
projected weights together. :class:`LayerwiseELRSchedule` applies the per-layer rates to an
optimizer's parameter groups at each step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

OPTIMIZER_KINDS = ("sgd", "adam")

__all__ = ["effective_lr", "layer_effective_lrs", "matching_lr", "layerwise_elr_lrs", "global_elr_lr",
           "LayerwiseELRSchedule", "named_param_groups"]


def _power(optimizer: str) -> int:
    if optimizer not in OPTIMIZER_KINDS:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_KINDS}, got {optimizer!r}")
    return 2 if optimizer == "sgd" else 1


def _check_lr(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite float >= 0, got {lr!r}")


def effective_lr(weight: Tensor | float, lr: float, optimizer: str = "sgd") -> float:
    """η / ‖W‖² (``optimizer="sgd"``) or η / ‖W‖ (``"adam"``) for a scale-invariant weight (or its norm)."""
    _check_lr(lr)
    p = _power(optimizer)
    norm = float(torch.linalg.vector_norm(weight.detach().float())) if isinstance(weight, Tensor) else float(weight)
    if norm <= 0:
        raise ValueError(f"the weight norm must be > 0, got {norm}")
    return lr / norm**p


def layer_effective_lrs(norms: Mapping[str, float], lr: float, optimizer: str = "sgd") -> dict[str, float]:
    """Per-layer ELR from per-layer norms (e.g. ``NaP.norms()``)."""
    return {name: effective_lr(norm, lr, optimizer) for name, norm in norms.items()}


def matching_lr(reference_norm: float, target: float, base_lr: float, optimizer: str = "sgd") -> float:
    """η·(ρ/‖W_ref‖)^p: the learning rate that gives a weight held at norm ``target`` = ρ the ELR of a
    free weight of norm ``reference_norm`` trained at ``base_lr``."""
    _check_lr(base_lr)
    if reference_norm <= 0 or target <= 0:
        raise ValueError(f"reference_norm and target must be > 0, got {reference_norm} and {target}")
    return base_lr * (target / reference_norm) ** _power(optimizer)


def layerwise_elr_lrs(reference_norms: Mapping[str, float], targets: Mapping[str, float], base_lr: float,
                      optimizer: str = "sgd") -> dict[str, float]:
    """Per-layer learning rates η_l = η·(ρ_l/‖W_l^ref‖)^p, p = 2 (SGD) or 1 (Adam), for every layer in
    ``targets`` (ρ_l, e.g. ``NaP.targets``); ``reference_norms`` are the free network's current norms."""
    missing = sorted(set(targets) - set(reference_norms))
    if missing:
        raise ValueError(f"reference_norms lacks layers {missing}")
    return {name: matching_lr(reference_norms[name], rho, base_lr, optimizer) for name, rho in targets.items()}


def global_elr_lr(reference_norms: Mapping[str, float], targets: Mapping[str, float], base_lr: float,
                  optimizer: str = "sgd") -> float:
    """One learning rate η·(ρ/‖W^ref‖)^p with ρ and ‖W^ref‖ taken over all layers in ``targets`` together."""
    missing = sorted(set(targets) - set(reference_norms))
    if missing:
        raise ValueError(f"reference_norms lacks layers {missing}")
    rho = math.sqrt(sum(t**2 for t in targets.values()))
    ref = math.sqrt(sum(reference_norms[name] ** 2 for name in targets))
    return matching_lr(ref, rho, base_lr, optimizer)


def named_param_groups(model: torch.nn.Module, projector, **group_options) -> list[dict]:
    """Parameter groups for an optimizer: one per group registered in ``projector`` (a
    ``tenfold.optim.NaP``), each tagged with ``"name"``, plus one ``"name": None`` group of the rest."""
    seen: set[int] = set()
    groups = []
    for name in projector.targets:
        params = projector.tensors(name)
        seen.update(id(p) for p in params)
        groups.append({"params": params, "name": name, **group_options})
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        groups.append({"params": rest, "name": None, **group_options})
    return groups


class LayerwiseELRSchedule:
    """Set each named parameter group's learning rate to η·(ρ_l/‖W_l^ref(t)‖)^p before each step.

    Lyle et al. 2024 (§ on effective learning rates): a NaP network trained with this schedule
    follows an unprojected normalized network whose layer norms are ``‖W_l^ref(t)‖`` (exactly under
    SGD with p = 2). Groups without a ``"name"`` in ``targets`` keep ``base_lr``.

    Args:
        optimizer: a ``torch.optim`` optimizer whose groups carry ``"name"`` (:func:`named_param_groups`).
        targets: ρ_l per layer name (``NaP.targets``). base_lr: η. kind: ``"sgd"`` or ``"adam"``.
        mode: ``"layerwise"`` (η_l per layer) or ``"global"`` (one rate from the norms of all layers).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, targets: Mapping[str, float], base_lr: float,
                 kind: str = "sgd", mode: str = "layerwise"):
        _check_lr(base_lr)
        _power(kind)
        if mode not in ("layerwise", "global"):
            raise ValueError(f"mode must be 'layerwise' or 'global', got {mode!r}")
        names = [g.get("name") for g in optimizer.param_groups]
        unknown = sorted(set(targets) - set(names))
        if unknown:
            raise ValueError(f"the optimizer has no parameter group named {unknown}; build it with named_param_groups")
        self.optimizer, self.targets, self.base_lr = optimizer, dict(targets), float(base_lr)
        self.kind, self.mode = kind, mode

    def step(self, reference_norms: Mapping[str, float]) -> dict[str, float]:
        """Set the learning rates from the reference network's current norms; returns them by name."""
        if self.mode == "layerwise":
            lrs = layerwise_elr_lrs(reference_norms, self.targets, self.base_lr, self.kind)
        else:
            lr = global_elr_lr(reference_norms, self.targets, self.base_lr, self.kind)
            lrs = dict.fromkeys(self.targets, lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lrs.get(group.get("name"), self.base_lr)
        return lrs

    def state_dict(self) -> dict:
        return {"targets": dict(self.targets), "base_lr": self.base_lr, "kind": self.kind, "mode": self.mode}

    def load_state_dict(self, state: dict) -> None:
        self.targets, self.base_lr = dict(state["targets"]), float(state["base_lr"])
        self.kind, self.mode = state["kind"], state["mode"]
