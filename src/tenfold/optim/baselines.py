"""Plasticity baselines for non-stationary training: hard reset, L2-Init, Shrink & Perturb.

These are the baselines that Soft Reset (Galashov et al., "Non-Stationary Learning of Neural Networks
with Automatic Soft Parameter Reset", NeurIPS 2024, arXiv 2411.04034) and Normalize-and-Project are
compared against. Each is a small *hook* object that snapshots the parameters at construction (θ0)
and composes with any ``torch.optim`` optimizer, so it can be added to any training loop:

    model = MLP(...)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    l2 = L2Init(model, strength=0.01)            # Kumar et al. 2023: grad += λ (θ − θ0)
    sp = ShrinkPerturb(model, shrink=0.999, noise_scale=0.01)   # Ash & Adams 2020
    reset = HardReset(model, mode="init")         # oracle re-initialisation at a known boundary

    for batch in stream:
        if batch.is_boundary:
            reset.reset_(opt)                     # (hard-reset arm only)
        opt.zero_grad(); loss_fn(model(batch.x), batch.y).backward()
        l2.add_grad_()                            # before opt.step(): adds the gradient term
        opt.step()
        sp.apply_()                               # after opt.step(): θ ← shrink·θ + noise_scale·ε

Each hook has ``state_dict()`` / ``load_state_dict()`` (the θ0 snapshot and step counters), and the
update rules are pure tensor functions (``l2_init_grad``, ``shrink_perturb``) beside the classes.

References:
- L2-Init: S. Kumar, H. Marklund, B. Van Roy, "Maintaining Plasticity in Continual Learning via
  Regenerative Regularization" (2023): loss + (λ/2)‖θ − θ0‖², i.e. gradient + λ(θ − θ0).
- Shrink & Perturb: J. Ash, R. Adams, "On Warm-Starting Neural Network Training" (NeurIPS 2020):
  θ ← shrink·θ + noise_scale·ε.  Here ε ~ N(0, I), optionally scaled per tensor by the standard
  deviation of that tensor's initial values (``noise_std="init"``), a stand-in for Ash & Adams'
  "ε drawn from the initialisation distribution".
- Hard reset: re-initialise all parameters (and clear optimizer state) at the true task boundaries,
  an oracle that knows when the data changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from tenfold.utils.checks import check_choice, check_int, check_range

__all__ = ["l2_init_grad", "shrink_perturb", "L2Init", "ShrinkPerturb", "HardReset"]


# ---------------------------------------------------------------------------------------------
# pure update rules
# ---------------------------------------------------------------------------------------------

def l2_init_grad(grad: Tensor, theta: Tensor, theta0: Tensor, strength: float) -> Tensor:
    """L2-Init gradient (Kumar et al. 2023): ``g + λ (θ − θ0)``, the gradient of L + (λ/2)‖θ − θ0‖²."""
    return grad + strength * (theta - theta0)


def shrink_perturb(theta: Tensor, shrink: float, noise: Tensor | None) -> Tensor:
    """Shrink & Perturb (Ash & Adams 2020): ``shrink·θ + noise`` (``noise`` already scaled; None: no noise)."""
    out = theta * shrink
    return out if noise is None else out + noise


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _as_params(params: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    """The trainable parameters of a module, or the given iterable of tensors, as a list."""
    if isinstance(params, nn.Module):
        out = [p for p in params.parameters() if p.requires_grad]
    else:
        out = list(params)
    if not out:
        raise ValueError("params must contain at least one tensor")
    if not all(isinstance(p, Tensor) for p in out):
        raise ValueError("params must be an nn.Module or an iterable of tensors")
    return out


def _snapshot(params: list[Tensor]) -> list[Tensor]:
    return [p.detach().clone() for p in params]


def _load_snapshot(target: list[Tensor], source: list[Tensor], what: str) -> None:
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(target, source)):
        raise ValueError(f"{what}: state_dict does not match these parameters (count or shapes differ)")
    for a, b in zip(target, source):
        a.copy_(b)


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------

class L2Init:
    """L2-Init (Kumar, Marklund & Van Roy 2023): regularise toward the initial parameters.

    Adds ``strength · (θ − θ0)`` to each parameter's ``.grad`` (call :meth:`add_grad_` after
    ``backward()`` and before ``optimizer.step()``), the gradient of ``(strength/2)·‖θ − θ0‖²``;
    or add :meth:`penalty` to the loss instead (the same gradient through autograd). θ0 is the value
    of the parameters when the hook is built. Parameters whose ``.grad`` is None are skipped.

    Args:
        params: an ``nn.Module`` (all its trainable parameters) or an iterable of tensors.
        strength: λ ≥ 0 (Kumar et al. sweep 1e-4..1e-1; the Soft Reset CPU demo uses 0.01).
    """

    def __init__(self, params: nn.Module | Iterable[Tensor], *, strength: float = 0.01):
        check_range("strength", strength, 0.0)
        self.params = _as_params(params)
        self.strength = float(strength)
        self.anchors = _snapshot(self.params)

    @torch.no_grad()
    def add_grad_(self) -> None:
        """``p.grad ← p.grad + λ (p − p0)`` for every parameter that has a gradient."""
        for p, p0 in zip(self.params, self.anchors):
            if p.grad is not None:
                p.grad.copy_(l2_init_grad(p.grad, p, p0, self.strength))

    def penalty(self) -> Tensor:
        """``(λ/2) Σ ‖p − p0‖²``, differentiable in the parameters (add it to the loss)."""
        total = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.anchors))
        return 0.5 * self.strength * total

    def state_dict(self) -> dict:
        return {"strength": self.strength, "anchors": [a.clone() for a in self.anchors]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        _load_snapshot(self.anchors, state["anchors"], "L2Init")
        self.strength = float(state["strength"])


class ShrinkPerturb:
    """Shrink & Perturb (Ash & Adams 2020): ``θ ← shrink·θ + noise_scale·σ·ε``, ε ~ N(0, I).

    Call :meth:`apply_` after ``optimizer.step()``; it acts on every ``every``-th call (the plasticity
    benchmarks apply it every step). ``σ = 1`` with ``noise_std="absolute"``; with ``noise_std="init"``
    σ is the standard deviation of that tensor's initial values (so the noise has the scale of the
    initialisation distribution; a tensor whose initial values are constant, such as a LayerNorm
    weight, then gets no noise). With μ0 = 0 one OU drift step of Soft Reset with a fixed γ is exactly
    ``ShrinkPerturb(shrink=γ, noise_scale=√(1−γ²)·σ0)`` on the drifted tensors.

    Args:
        params: an ``nn.Module`` (all its trainable parameters) or an iterable of tensors.
        shrink: multiplier in [0, 1].
        noise_scale: ≥ 0.
        every: apply on every ``every``-th call of :meth:`apply_` (≥ 1).
        noise_std: ``"absolute"`` or ``"init"`` (see above).
        generator: optional ``torch.Generator`` for the noise (else the global RNG).
    """

    def __init__(self, params: nn.Module | Iterable[Tensor], *, shrink: float, noise_scale: float,
                 every: int = 1, noise_std: str = "absolute", generator: torch.Generator | None = None):
        check_range("shrink", shrink, 0.0, 1.0)
        check_range("noise_scale", noise_scale, 0.0)
        check_int("every", every, 1)
        check_choice("noise_std", noise_std, ("absolute", "init"))
        self.params = _as_params(params)
        self.shrink, self.noise_scale, self.every = float(shrink), float(noise_scale), every
        self.noise_std, self.generator = noise_std, generator
        self.sigmas = [float(p.detach().float().std()) if noise_std == "init" and p.numel() > 1 else 1.0
                       for p in self.params]
        self.calls = 0

    @torch.no_grad()
    def apply_(self) -> bool:
        """Shrink and perturb in place if this call is due; returns whether it acted."""
        self.calls += 1
        if self.calls % self.every:
            return False
        for p, sigma in zip(self.params, self.sigmas):
            scale = self.noise_scale * sigma
            noise = None
            if scale > 0:
                noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device) * scale
            p.copy_(shrink_perturb(p, self.shrink, noise))
        return True

    def state_dict(self) -> dict:
        return {"shrink": self.shrink, "noise_scale": self.noise_scale, "every": self.every,
                "noise_std": self.noise_std, "sigmas": list(self.sigmas), "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        if len(state["sigmas"]) != len(self.params):
            raise ValueError("ShrinkPerturb: state_dict does not match these parameters (count differs)")
        self.shrink, self.noise_scale, self.every = state["shrink"], state["noise_scale"], state["every"]
        self.noise_std, self.sigmas, self.calls = state["noise_std"], list(state["sigmas"]), state["calls"]


class HardReset:
    """Hard reset: re-initialise a model (and clear its optimizer's state) at a known task boundary.

    ``mode="init"`` copies back the parameters the model had when the hook was built (θ0, the same
    network each time); ``mode="fresh"`` draws a new initialisation, with ``init_fn(module)`` if given
    (e.g. the He-normal initialiser the model was built with), else by calling ``reset_parameters()``
    on every submodule that has one. With a ``generator`` the fresh draw is reproducible and leaves
    the global RNG untouched.

    Args:
        model: the ``nn.Module`` to reset.
        mode: ``"init"`` or ``"fresh"``.
        init_fn: optional callable ``(module) -> None`` initialising the model in place (``"fresh"`` only).
        generator: optional ``torch.Generator`` seeding the fresh draw.
    """

    def __init__(self, model: nn.Module, *, mode: str = "init", init_fn: Callable[[nn.Module], None] | None = None,
                 generator: torch.Generator | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        check_choice("mode", mode, ("init", "fresh"))
        if init_fn is not None and mode != "fresh":
            raise ValueError("init_fn is only used with mode='fresh'")
        self.model, self.mode, self.init_fn, self.generator = model, mode, init_fn, generator
        self.params = list(model.parameters())
        self.anchors = _snapshot(self.params) if mode == "init" else None
        self.resets = 0

    @torch.no_grad()
    def reset_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Re-initialise the parameters in place and clear ``optimizer``'s per-parameter state."""
        if self.mode == "init":
            for p, p0 in zip(self.params, self.anchors):
                p.copy_(p0)
        else:
            self._fresh_()
        if optimizer is not None:
            optimizer.state = defaultdict(dict)
        self.resets += 1

    def _fresh_(self) -> None:
        def draw() -> None:
            if self.init_fn is not None:
                self.init_fn(self.model)
                return
            for module in self.model.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()

        if self.generator is None:
            draw()
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draw()

    def state_dict(self) -> dict:
        return {"mode": self.mode, "resets": self.resets,
                "anchors": None if self.anchors is None else [a.clone() for a in self.anchors]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"HardReset: state_dict is for mode {state['mode']!r}, this hook is {self.mode!r}")
        if self.anchors is not None:
            _load_snapshot(self.anchors, state["anchors"], "HardReset")
        self.resets = state["resets"]
