"""Normalize-and-Project (NaP): keep every scale-invariant weight at a fixed norm, so the effective
learning rate is the explicit one.

Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu, Dabney, "Normalization and effective learning
rates in reinforcement learning", NeurIPS 2024 (arXiv 2407.01800).

With a normalization right after a bias-free layer, f(c·W) = f(W) for c > 0, so ∇L(c·W) = ∇L(W)/c and
⟨W, ∇L(W)⟩ = 0. A step of SGD with learning rate η then moves the *direction* of W like a step of
η/‖W‖² (≈ η/‖W‖ under Adam): the effective learning rate (ELR). Plain training grows ‖W‖ (under SGD
exactly ‖W_{t+1}‖² = ‖W_t‖² + η²‖g_t‖²), so the ELR decays on its own. NaP (step 2, "Project")
undoes the growth after every optimizer step:

    W_l ← ρ_l · W_l / ‖W_l‖_F,        ρ_l = ‖W_l^{(0)}‖_F          (per layer, Frobenius)
    (γ, β) ← ρ_γβ · (γ, β) / ‖(γ, β)‖,  ρ_γβ = ‖(γ^{(0)}, β^{(0)})‖ = √d   (each norm layer, jointly)

The weight projection changes nothing the network computes (a re-parameterization) but holds the
ELR at η_t/ρ_l² (SGD) or ≈ η_t/ρ_l (Adam). The joint (γ, β) projection is a re-parameterization
only for a norm whose next linear layer is itself followed by a norm (an *inner* norm): the scale is
then absorbed. For the last norm, which feeds the head, it changes the output: there it acts as a
constraint on the output scale, not as a re-parameterization (``affine="inner"`` leaves it free).
Output heads are not scale-invariant and stay free by default.

Usage::

    model = NormMLP(in_features=64, hidden_features=[128, 128], out_features=10)   # tenfold.models.normalized
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    proj = NaP(model)                     # records ρ_l now, from the initial weights
    ...
    opt.step(); proj.project()            # or once: proj.attach(opt) (an optimizer post-step hook)

The update is the pure function :func:`project_to_norm`; :class:`NaP` applies it in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tenfold.nn.normalized import (LINEAR_TYPES, NaPGroups, _leaves, find_nap_groups, follows_norm,
                                   homogeneous_after)

__all__ = ["NaP", "NaPGroups", "joint_norm", "project_to_norm"]

AFFINE_MODES = ("auto", "joint", "inner", "none")


# ------------------------------------------------------------------------------------------------
# the update rule
# ------------------------------------------------------------------------------------------------

def _norm(t: Tensor) -> Tensor:
    """Frobenius norm in at least fp32 (bf16/fp16 weights are normed in fp32, fp64 stays fp64);
    for a sharded DTensor, the norm of the whole tensor (all-reduced)."""
    n = torch.linalg.vector_norm(t.detach(), dtype=torch.promote_types(t.dtype, torch.float32))
    return n.full_tensor() if hasattr(n, "full_tensor") else n


def joint_norm(tensors: Sequence[Tensor]) -> Tensor:
    """‖(t_1, ..., t_k)‖: the Frobenius norm of the tensors taken together, as an fp32 scalar."""
    if not tensors:
        raise ValueError("tensors must be non-empty")
    return torch.linalg.vector_norm(torch.stack([_norm(t) for t in tensors]))


def _scale(norm: Tensor, target: float) -> Tensor:
    """target / norm, or 1 where the norm is zero or not finite (a zero tensor stays zero)."""
    ok = torch.isfinite(norm) & (norm > 0)
    return torch.where(ok, target / torch.where(ok, norm, torch.ones_like(norm)), torch.ones_like(norm))


def project_to_norm(tensors: Sequence[Tensor], target: float) -> list[Tensor]:
    """Rescale ``tensors`` jointly to Frobenius norm ``target``: t_i · target / ‖(t_1, ..., t_k)‖.

    The NaP projection (Lyle et al. 2024), for one layer's weight (k = 1) or one norm layer's
    (scale, offset) (k = 2). An all-zero group is returned unchanged (no NaN).
    """
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    scale = _scale(joint_norm(tensors), float(target))
    return [t * scale.to(t.dtype) for t in tensors]


@torch.no_grad()
def _project_(tensors: Sequence[Tensor], target: float) -> None:
    scale = _scale(joint_norm(tensors), target)
    for t in tensors:
        t.mul_(float(scale) if hasattr(t, "device_mesh") else scale.to(device=t.device, dtype=t.dtype))


# ------------------------------------------------------------------------------------------------
# the projector
# ------------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    name: str
    kind: str  # "weight" | "affine" | "head"
    tensors: list[Tensor]
    target: float


class NaP:
    """Normalize-and-Project projector (Lyle et al., NeurIPS 2024; arXiv 2407.01800).

    After each optimizer step, :meth:`project` rescales every registered scale-invariant weight to
    its target norm (W ← ρ·W/‖W‖_F, per layer) and each registered normalization layer's (γ, β)
    jointly to its initial norm (√d at γ = 1, β = 0). Targets are recorded once, at construction,
    and live in this object's ``state_dict``: loading a checkpoint never recomputes them.

    The weight projection leaves the network's function unchanged. The (γ, β) projection does so
    only for inner norms (whose next linear layer is followed by a norm); for the last norm before
    the head it constrains the output scale and so changes the output (``affine="inner"`` avoids it).

    Args:
        model: the network (a ``DistributedDataParallel`` wrapper is unwrapped). It must already
            have a normalization after each layer to project (``tenfold.nn.normalized``).
        groups: which modules to project (:class:`NaPGroups`); default ``model.nap_groups()`` when
            the model defines it, else :func:`~tenfold.nn.normalized.find_nap_groups` on its
            ``nn.Sequential`` structure. Never chosen by parameter name.
        project_head: also project the head weights to their initial norm (not an invariance; off
            by default, as in the paper's description of NaP).
        affine: which norm layers' (γ, β) are projected jointly. ``"auto"`` (default): the registered
            ones (``groups.affines``; none if there are none). ``"joint"``: the same, but refuses
            (ValueError) a model where no affine can be projected (norms without affines, or only
            non-homogeneous paths such as GELU). ``"inner"``: only the registered norms whose next
            linear layer is followed by a norm, where the projection is a re-parameterization (the
            last norm before the head stays free). ``"none"``: all stay free (use with GELU, tanh).
        target: ``"init"`` (each layer's initial norm) or a positive float used for every hidden
            weight (affines and head keep their initial norms).
        every: project on every ``every``-th call of :meth:`project` (1: after every step, the
            default; larger values let Adam's moments drift from the projected weights).
        example_input: if given, each registered weight is checked numerically: scaling it by 3 must
            leave ``model(example_input)`` unchanged (to ``invariance_tol``, relative), else ValueError.
        check_structure: refuse a weight that the model's ``nn.Sequential`` structure shows is not
            followed by a normalization, and an affine followed by a non-homogeneous path.
    """

    def __init__(self, model: nn.Module, *, groups: NaPGroups | None = None, project_head: bool = False,
                 affine: str = "auto", target: str | float = "init", every: int = 1,
                 example_input: Tensor | None = None, check_structure: bool = True,
                 invariance_tol: float = 1e-3):
        if affine not in AFFINE_MODES:
            raise ValueError(f"affine must be one of {AFFINE_MODES}, got {affine!r}")
        if not (target == "init" or (isinstance(target, (int, float)) and not isinstance(target, bool) and target > 0)):
            raise ValueError(f"target must be 'init' or a positive float, got {target!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if invariance_tol <= 0:
            raise ValueError(f"invariance_tol must be > 0, got {invariance_tol}")
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        self.model, self.project_head, self.affine, self.every = model, project_head, affine, every
        groups = groups if groups is not None else _default_groups(model)
        if not groups.weights:
            raise ValueError("no scale-invariant weights to project: put a normalization after each layer "
                             "first (tenfold.nn.normalized.add_norm_before_activations); projection without "
                             "normalization is not NaP")
        self._entries = self._build(model, groups, target, check_structure)
        self._fused: _Fused | None | bool = None  # built on the first projection
        self.calls = 0
        if example_input is not None:
            self.check_invariance(example_input, tol=invariance_tol)

    # -- construction -----------------------------------------------------------------------------
    def _build(self, model: nn.Module, groups: NaPGroups, target, check_structure: bool) -> list[_Entry]:
        names = _qualified_names(model)
        entries: list[_Entry] = []
        kinds = [("weight", groups.weights)]
        if self.affine == "joint" and not groups.affines:
            raise ValueError(f"affine='joint' but {type(model).__name__} has no normalization (scale, offset) to "
                             "project jointly (its norms have no affine, or only a non-homogeneous path such as "
                             "GELU follows them); use affine='none' (or 'auto', which projects the ones there are)")
        if self.affine in ("auto", "joint"):
            kinds.append(("affine", groups.affines))
        elif self.affine == "inner":
            kinds.append(("affine", [a for a in groups.affines if _feeds_normalized_layer(model, a)]))
        if self.project_head:
            kinds.append(("head", groups.head))
        for kind, items in kinds:
            for item in items:
                name = _name_of(item, names)
                if check_structure:
                    _check_structure(model, item, kind, name)
                tensors = _tensors(item, kind, name)
                init = float(joint_norm(tensors))
                entries.append(_Entry(name, kind, tensors, float(target) if kind == "weight" and target != "init" else init))
        seen = [e.name for e in entries]
        if len(set(seen)) != len(seen):
            raise ValueError(f"a module is registered twice: {sorted(n for n in seen if seen.count(n) > 1)}")
        return entries

    # -- projection -------------------------------------------------------------------------------
    @torch.no_grad()
    def project(self, force: bool = False) -> bool:
        """Project every registered group to its target norm (on every ``every``-th call, or now
        when ``force``). Call right after ``optimizer.step()``. Returns whether it projected."""
        self.calls += 1
        if not force and self.calls % self.every:
            return False
        if self._fused is None or (self._fused and not self._fused.matches()):  # first call, or model moved
            self._fused = _Fused.build(self._entries)
        if self._fused:
            self._fused.project_()
        else:
            for entry in self._entries:
                _project_(entry.tensors, entry.target)
        return True

    def attach(self, optimizer: torch.optim.Optimizer):
        """Call :meth:`project` after every ``optimizer.step()`` (a post-step hook); returns the
        hook handle (``handle.remove()`` detaches it)."""
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.project())

    @torch.no_grad()
    def check_invariance(self, example_input: Tensor, tol: float = 1e-3) -> None:
        """Raise ValueError if scaling a registered weight by 3 changes ``model(example_input)``."""
        reference = self.model(example_input)
        bound = tol * max(float(reference.abs().max()), 1.0)
        for entry in self._entries:
            if entry.kind != "weight":
                continue
            saved = [t.clone() for t in entry.tensors]
            for t in entry.tensors:
                t.mul_(3.0)
            change = float((self.model(example_input) - reference).abs().max())
            for t, s in zip(entry.tensors, saved):
                t.copy_(s)
            if change > bound:
                raise ValueError(f"{entry.name} is not scale-invariant: scaling it by 3 changed the output by "
                                 f"{change:.3g} (> {bound:.3g}); it needs a normalization right after it")

    # -- inspection -------------------------------------------------------------------------------
    @property
    def targets(self) -> dict[str, float]:
        """Target norm of each registered group, by module name."""
        return {e.name: e.target for e in self._entries}

    @property
    def kinds(self) -> dict[str, str]:
        return {e.name: e.kind for e in self._entries}

    def tensors(self, name: str) -> list[Tensor]:
        for entry in self._entries:
            if entry.name == name:
                return list(entry.tensors)
        raise KeyError(f"no registered group {name!r}; registered: {list(self.targets)}")

    @torch.no_grad()
    def norms(self) -> dict[str, float]:
        """Current joint norm of each registered group, by module name."""
        return {e.name: float(joint_norm(e.tensors)) for e in self._entries}

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"targets": self.targets, "kinds": self.kinds, "every": self.every, "calls": self.calls,
                "affine": self.affine, "project_head": self.project_head}

    def load_state_dict(self, state: dict) -> None:
        """Restore targets (as saved: never recomputed from the current weights) and the call count."""
        saved, mine = set(state["targets"]), set(self.targets)
        if saved != mine:
            raise ValueError(f"NaP state_dict does not match this projector: missing {sorted(mine - saved)}, "
                             f"unexpected {sorted(saved - mine)}")
        for entry in self._entries:
            if state["kinds"][entry.name] != entry.kind:
                raise ValueError(f"{entry.name}: saved as {state['kinds'][entry.name]!r}, registered as {entry.kind!r}")
            entry.target = float(state["targets"][entry.name])
        self.every, self.calls = int(state["every"]), int(state["calls"])
        self._fused = None  # rebuilt with the loaded targets

    def __repr__(self) -> str:
        counts = {k: sum(e.kind == k for e in self._entries) for k in ("weight", "affine", "head")}
        return f"NaP(weights={counts['weight']}, affines={counts['affine']}, heads={counts['head']}, every={self.every})"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

class _Fused:
    """All groups projected with a fixed handful of ``torch._foreach`` ops, whatever their number.

    Same rule as :func:`project_to_norm` per group; used when every tensor is a plain fp32/fp64
    tensor on one device (else :class:`NaP` falls back to the per-group loop)."""

    def __init__(self, entries: list[_Entry]):
        self.tensors = [t for e in entries for t in e.tensors]
        device, dtype = self.tensors[0].device, self.tensors[0].dtype
        self.segment = torch.tensor([i for i, e in enumerate(entries) for _ in e.tensors], device=device)
        self.targets = torch.tensor([e.target for e in entries], dtype=dtype, device=device)

    @staticmethod
    def build(entries: list[_Entry]) -> _Fused | bool:
        tensors = [t for e in entries for t in e.tensors]
        first = tensors[0]
        if (first.dtype not in (torch.float32, torch.float64) or hasattr(first, "device_mesh")
                or any(t.dtype != first.dtype or t.device != first.device or type(t) not in (Tensor, nn.Parameter)
                       for t in tensors)):
            return False
        return _Fused(entries)

    def matches(self) -> bool:
        """Whether the tensors are still on the device and dtype this was built for."""
        first = self.tensors[0]
        return first.device == self.targets.device and first.dtype == self.targets.dtype

    @torch.no_grad()
    def project_(self) -> None:
        squares = torch.stack(torch._foreach_norm(self.tensors)).square()  # (tensors,)
        norms = torch.zeros_like(self.targets).index_add_(0, self.segment, squares).sqrt()  # (groups,)
        ok = torch.isfinite(norms) & (norms > 0)
        scales = torch.where(ok, self.targets / torch.where(ok, norms, torch.ones_like(norms)), torch.ones_like(norms))
        torch._foreach_mul_(self.tensors, list(scales[self.segment].unbind()))


def _default_groups(model: nn.Module) -> NaPGroups:
    if hasattr(model, "nap_groups"):
        return model.nap_groups()
    if isinstance(model, nn.Sequential):
        return find_nap_groups(model)
    raise ValueError(f"{type(model).__name__} has no nap_groups() and is not an nn.Sequential: pass groups=NaPGroups(...)")


def _feeds_normalized_layer(model: nn.Module, norm: nn.Module) -> bool:
    """Whether the next linear/conv layer after ``norm`` in ``model``'s Sequential structure is
    itself followed by a normalization (so a joint scaling of ``norm``'s affine is absorbed there);
    False when the structure does not show it."""
    for container in [model, *model.modules()]:
        if not isinstance(container, nn.Sequential):
            continue
        leaves = _leaves(container)
        if not any(leaf is norm for leaf in leaves):
            continue
        after = leaves[[id(leaf) for leaf in leaves].index(id(norm)) + 1:]
        following = next((leaf for leaf in after if isinstance(leaf, LINEAR_TYPES)), None)
        return following is not None and follows_norm(model, following) is True
    return False


def _qualified_names(model: nn.Module) -> dict[int, str]:
    names = {id(m): n or "<root>" for n, m in model.named_modules()}
    names.update({id(p): n for n, p in model.named_parameters()})
    return names


def _name_of(item: nn.Module | Tensor, names: dict[int, str]) -> str:
    if id(item) not in names:
        raise ValueError(f"a registered {type(item).__name__} is not part of the model")
    return names[id(item)]


def _tensors(item: nn.Module | Tensor, kind: str, name: str) -> list[Tensor]:
    if isinstance(item, Tensor):
        return [item]
    weight, bias = getattr(item, "weight", None), getattr(item, "bias", None)
    tensors = [weight] if kind == "head" else [t for t in (weight, bias) if t is not None]
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        raise ValueError(f"{name} ({type(item).__name__}) has no weight to project")
    return tensors


def _check_structure(model: nn.Module, item: nn.Module | Tensor, kind: str, name: str) -> None:
    if not isinstance(item, nn.Module):
        return
    if kind == "weight" and follows_norm(model, item) is False:
        raise ValueError(f"{name} is not followed by a normalization layer, so its weight is not scale-invariant "
                         "and projecting it would change the function (projection without normalization is not "
                         "NaP); insert one with add_norm_before_activations or leave it out of groups.weights")
    if kind == "affine" and homogeneous_after(model, item) is False:
        raise ValueError(f"{name}: the path to the next layer is not positively homogeneous (e.g. GELU), so a "
                         "joint scaling of its (scale, offset) is not an invariance; use affine='none' or leave "
                         "it out of groups.affines")
