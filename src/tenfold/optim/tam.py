"""Torque-Aware Momentum: TAM (SGD form) and AdaTAM (Adam form).

Malviya, Mordido, Baratin, Babanezhad Harikandeh, Dziugaite, Pascanu, Chandar, *Torque-Aware
Momentum*, arXiv 2412.18790 (2024). Momentum is damped by the angle between the previous momentum
and the new gradient: a gradient that points against the momentum (an oscillation across a ravine)
barely enters it, an aligned one enters fully.

Per parameter tensor (or per parameter group with ``granularity="global"``), step t = 1, 2, ...::

    s_t = <m_{t-1}, g_t> / (||m_{t-1}|| ||g_t||)      (0 when either norm is 0)
    ŝ_t = γ ŝ_{t-1} + (1 - γ) s_t,   ŝ_0 = 0
    d_t = (1 + ŝ_t) / 2                                damping in [0, 1]
    TAM:    m_t = β m_{t-1} + (ε + d_t) g_t,   θ ← θ - η m_t
    AdaTAM: m_t = β1 m_{t-1} + (1 - β1)(ε_d + d_t) g_t,   v_t = β2 v_{t-1} + (1 - β2) g_t²,
            θ ← θ - η m̂_t / (sqrt(v̂_t) + ε)   (bias-corrected, torch.optim.Adam's conventions)

``damping=False`` replaces the coefficient (ε + d_t) by exactly 1: TAM is then
``torch.optim.SGD(momentum=β, dampening=0)``, AdaTAM is ``torch.optim.Adam`` (coupled weight decay)
or ``torch.optim.AdamW`` (decoupled). Cosines, ŝ and d are computed and stored in float32 whatever the
parameter dtype (bf16, fp16, fp32), and in float64 for float64 parameters. The pure functions :func:`tam_update` and :func:`adatam_update` state the rule on
one tensor; the optimizers apply the same rule in place (and are tested against them).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

GRANULARITIES = ("tensor", "global")


# ----------------------------------------------------------------------------------------------
# Pure functions: the torque cosine, the smoothed damping, and one step of each rule on a tensor.
# ----------------------------------------------------------------------------------------------

def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def cosine_from_norms(dot: Tensor, m_norm: Tensor, g_norm: Tensor) -> Tensor:
    """``dot / (m_norm * g_norm)`` clamped to [-1, 1], and 0 where a norm is 0 or a value is not
    finite (so a zero momentum, a zero gradient or an overflow never poisons ŝ). At least float32."""
    acc = _accumulate_dtype(torch.promote_types(dot.dtype, g_norm.dtype))
    dot, m_norm, g_norm = dot.to(acc), m_norm.to(acc), g_norm.to(acc)
    den = m_norm * g_norm
    valid = torch.isfinite(dot) & torch.isfinite(den) & (den > torch.finfo(acc).tiny)
    cosine = dot / torch.where(valid, den, torch.ones_like(den))
    return torch.where(valid, cosine, torch.zeros_like(cosine)).clamp(-1.0, 1.0)


def tensor_sums(momentum_buffer: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(<m, g>, ||m||, ||g||)`` of two same-shaped tensors, accumulated in at least float32."""
    acc = _accumulate_dtype(grad.dtype)
    m = momentum_buffer.reshape(-1).to(acc)  # (numel,)
    g = grad.reshape(-1).to(acc)  # (numel,)
    return torch.dot(m, g), torch.linalg.vector_norm(m), torch.linalg.vector_norm(g)


def torque_cosine(momentum_buffer: Tensor, grad: Tensor) -> Tensor:
    """s = cos(m_{t-1}, g_t) over the whole tensor (0-dim, float32 or float64 for float64 input;
    0 when either norm is 0)."""
    return cosine_from_norms(*tensor_sums(momentum_buffer, grad))


def smoothed_damping(s_hat: Tensor, cosine: Tensor, decay: float) -> tuple[Tensor, Tensor]:
    """ŝ_t = decay·ŝ_{t-1} + (1 - decay)·s_t and d_t = (1 + ŝ_t)/2, in at least float32."""
    acc = _accumulate_dtype(torch.promote_types(s_hat.dtype, cosine.dtype))
    s_hat = decay * s_hat.to(acc) + (1.0 - decay) * cosine.to(acc)
    return s_hat, (1.0 + s_hat) / 2.0


class TAMStep(NamedTuple):
    param: Tensor
    momentum_buffer: Tensor
    s_hat: Tensor
    damping: float  # d_t, or 1.0 (the coefficient used) when damping is off


def _effective_grad(param: Tensor, grad: Tensor, weight_decay: float, decoupled: bool,
                    maximize: bool) -> Tensor:
    grad = -grad if maximize else grad
    if weight_decay != 0 and not decoupled:
        grad = grad.add(param, alpha=weight_decay)  # coupled L2 enters the cosine
    return grad


def _damped_coefficient(momentum_buffer: Tensor, grad: Tensor, s_hat: Tensor, decay: float,
                        floor: float, damping: bool) -> tuple[Tensor, float, float]:
    """(new ŝ, d, coefficient of g). With damping off ŝ is reset to 0 and the coefficient is 1."""
    if not damping:
        return torch.zeros((), dtype=_accumulate_dtype(grad.dtype), device=grad.device), 1.0, 1.0
    s_hat, d = smoothed_damping(s_hat, torque_cosine(momentum_buffer, grad), decay)
    return s_hat, float(d), floor + float(d)


def tam_update(param: Tensor, grad: Tensor, momentum_buffer: Tensor, s_hat: Tensor, *, lr: float,
               momentum: float = 0.9, decay: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0,
               decoupled_weight_decay: bool = False, damping: bool = True,
               maximize: bool = False) -> TAMStep:
    """One TAM step on one tensor, out of place (inputs are not modified).

    ``momentum_buffer`` is m_{t-1} (zeros before the first step), ``s_hat`` is ŝ_{t-1} (0-dim).
    Returns the new parameter, m_t, ŝ_t and d_t. Equation: m_t = β m_{t-1} + (ε + d_t) g_t,
    θ ← θ - η m_t, with g_t the gradient after maximize and coupled L2.
    """
    grad = _effective_grad(param, grad, weight_decay, decoupled_weight_decay, maximize)
    if weight_decay != 0 and decoupled_weight_decay:
        param = param * (1 - lr * weight_decay)
    s_hat, d, coeff = _damped_coefficient(momentum_buffer, grad, s_hat, decay, eps, damping)
    buf = momentum_buffer * momentum + coeff * grad
    return TAMStep(param - lr * buf, buf, s_hat, d)


class AdaTAMStep(NamedTuple):
    param: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    s_hat: Tensor
    step: int
    damping: float


def adatam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, s_hat: Tensor,
                  step: int, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                  decay: float = 0.9, eps: float = 1e-8, damping_eps: float = 1e-8,
                  weight_decay: float = 0.0, decoupled_weight_decay: bool = True, damping: bool = True,
                  maximize: bool = False) -> AdaTAMStep:
    """One AdaTAM step (Adam convention) on one tensor, out of place.

    ``step`` is the number of steps already taken (0 before the first). Equations:
    m_t = β1 m_{t-1} + (1-β1)(ε_d + d_t) g_t; v_t = β2 v_{t-1} + (1-β2) g_t²;
    θ ← θ - η (m_t / (1-β1^t)) / (sqrt(v_t / (1-β2^t)) + ε).
    """
    beta1, beta2 = betas
    grad = _effective_grad(param, grad, weight_decay, decoupled_weight_decay, maximize)
    if weight_decay != 0 and decoupled_weight_decay:
        param = param * (1 - lr * weight_decay)
    s_hat, d, coeff = _damped_coefficient(exp_avg, grad, s_hat, decay, damping_eps, damping)
    step += 1
    exp_avg = exp_avg * beta1 + ((1 - beta1) * coeff) * grad
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)) + eps
    param = param - (lr / (1 - beta1**step)) * exp_avg / denom
    return AdaTAMStep(param, exp_avg, exp_avg_sq, s_hat, step, d)


def tam_lr_from_sgdm(lr: float, mean_damping: float = 0.5) -> float:
    """The learning-rate transfer heuristic: η_TAM = η_SGDM / E[d] (×2 for E[d] = ½, the usual
    value in noisy minibatch training). The same mapping takes an Adam learning rate to AdaTAM."""
    if not 0 < mean_damping <= 1:
        raise ValueError(f"mean_damping must be in (0, 1], got {mean_damping}")
    return lr / mean_damping


# ----------------------------------------------------------------------------------------------
# Shared optimizer machinery.
# ----------------------------------------------------------------------------------------------

def _check_range(name: str, value: Any, low: float, high: float | None, high_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= low and (high is None or (value < high if high_open else value <= high))
    if not ok:
        bound = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{name} must be a number in [{low}, {bound}, got {value!r}")


def _check_common(group: dict) -> None:
    _check_range("lr", group["lr"], 0.0, None)
    _check_range("decay", group["decay"], 0.0, 1.0)
    _check_range("eps", group["eps"], 0.0, None)
    _check_range("weight_decay", group["weight_decay"], 0.0, None)
    for flag in ("decoupled_weight_decay", "damping", "maximize"):
        if not isinstance(group[flag], bool):
            raise ValueError(f"{flag} must be True or False, got {group[flag]!r}")
    if group["granularity"] not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {group['granularity']!r}")


class _TorqueOptimizer(Optimizer):
    """Common step structure: gather effective gradients, compute every cosine and d_t at once
    (one host synchronisation per step), skip the step if any gradient is non-finite, then apply
    the per-tensor update in place."""

    _momentum_key = "momentum_buffer"

    def __init__(self, params, defaults: dict) -> None:
        self.last_damping: float | None = None
        self.last_group_damping: list[float | None] = []
        self.skipped_steps = 0
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def _validate_group(self, group: dict) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _floor(self, group: dict) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def _init_state(self, p: Tensor, state: dict) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _apply(self, group: dict, p: Tensor, grad: Tensor, state: dict, coeff: float) -> None:  # pragma: no cover
        raise NotImplementedError

    def _gather(self, group: dict) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if self._momentum_key not in state or state[self._momentum_key] is None:
                self._init_state(p, state)
            if "s_hat" not in state:
                state["s_hat"] = torch.zeros((), dtype=_accumulate_dtype(p.dtype), device=p.device)
            params.append(p)
            grads.append(_effective_grad(p, p.grad, group["weight_decay"],
                                         group["decoupled_weight_decay"], group["maximize"]))
        return params, grads

    def _group_damping(self, group: dict, params: list[Tensor], grads: list[Tensor]):
        """(new ŝ per tensor, d per tensor, all-gradients-finite flag), in float32 (float64 if the
        group holds float64 parameters)."""
        acc = _accumulate_dtype(params[0].dtype)
        for p in params[1:]:
            acc = torch.promote_types(acc, p.dtype)
        g_norms = torch.stack([torch.linalg.vector_norm(g, dtype=_accumulate_dtype(g.dtype)).to(acc)
                               for g in grads])  # (n,)
        finite = torch.isfinite(g_norms).all().reshape(1).double()  # (1,)
        if not group["damping"]:
            return None, None, finite
        bufs = [self.state[p][self._momentum_key] for p in params]
        sums = [tensor_sums(m, g) for m, g in zip(bufs, grads)]
        dots = torch.stack([s[0].to(acc) for s in sums])  # (n,)
        m_norms = torch.stack([s[1].to(acc) for s in sums])  # (n,)
        if group["granularity"] == "global":
            cosine = cosine_from_norms(dots.sum(), m_norms.square().sum().sqrt(),
                                       g_norms.square().sum().sqrt()).expand(len(params))  # (n,)
            s_hat_prev = self.state[params[0]]["s_hat"].to(acc).expand(len(params))  # (n,)
        else:
            cosine = cosine_from_norms(dots, m_norms, g_norms)  # (n,)
            s_hat_prev = torch.stack([self.state[p]["s_hat"].to(acc) for p in params])  # (n,)
        s_hat, d = smoothed_damping(s_hat_prev, cosine, group["decay"])
        return s_hat, d, finite

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One optimizer step; returns the closure's loss. A step whose gradients contain a
        non-finite value is skipped entirely (no parameter or state changes) with a warning."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            params, grads = self._gather(group)
            if params:
                work.append((group, params, grads, *self._group_damping(group, params, grads)))
        if not work:
            return loss
        flat = torch.cat([w[5] for w in work] + [w[4].double() for w in work if w[4] is not None]).tolist()
        if min(flat[:len(work)]) < 1:
            self.skipped_steps += 1
            warnings.warn(f"{type(self).__name__}: non-finite gradient, step skipped", RuntimeWarning,
                          stacklevel=2)
            return loss
        self._apply_all(work, flat[len(work):])
        return loss

    def _apply_all(self, work: list, damping_values: list[float]) -> None:
        means, offset = [], 0
        for group, params, grads, s_hat, _, _ in work:
            if s_hat is None:
                coeffs, means_d = [1.0] * len(params), None
                for p in params:
                    self.state[p]["s_hat"].zero_()  # damping off: ŝ restarts from 0 when re-enabled
            else:
                ds = damping_values[offset:offset + len(params)]
                offset += len(params)
                coeffs, means_d = [self._floor(group) + d for d in ds], sum(ds) / len(ds)
                for i, p in enumerate(params):
                    self.state[p]["s_hat"].copy_(s_hat[i])
            for p, g, c in zip(params, grads, coeffs):
                self._apply(group, p, g, self.state[p], c)
            means.append(means_d)
        self.last_group_damping = means
        logged = [m for m in means if m is not None]
        self.last_damping = sum(logged) / len(logged) if logged else None

    def load_state_dict(self, state_dict: dict) -> None:
        """Load like :class:`torch.optim.Optimizer`, but keep ŝ in at least float32 (the base class
        casts floating state to the parameter dtype, which would round ŝ to bf16 under bf16 params)."""
        s_hats = {k: v["s_hat"].detach().clone() for k, v in state_dict["state"].items() if "s_hat" in v}
        super().load_state_dict(state_dict)
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            for pid, p in zip(saved["params"], group["params"]):
                if pid in s_hats:
                    self.state[p]["s_hat"] = s_hats[pid].to(device=p.device, dtype=_accumulate_dtype(p.dtype))


# ----------------------------------------------------------------------------------------------
# The optimizers.
# ----------------------------------------------------------------------------------------------

class TAM(_TorqueOptimizer):
    r"""Torque-Aware Momentum, SGD form (Malviya et al., arXiv 2412.18790).

    Per tensor (``granularity="tensor"``) or per parameter group (``"global"``)::

        s_t = cos(m_{t-1}, g_t)  (0 if a norm is 0);  ŝ_t = γ ŝ_{t-1} + (1-γ) s_t;  d_t = (1+ŝ_t)/2
        m_t = β m_{t-1} + (ε + d_t) g_t;   θ ← θ - η m_t

    ``momentum`` is β, ``decay`` is γ, ``eps`` the damping floor ε. ``weight_decay`` is coupled L2
    (added to g before the cosine, like ``torch.optim.SGD``) unless ``decoupled_weight_decay``
    (θ ← θ(1-ηλ), not seen by the cosine). ``damping=False`` gives exactly
    ``torch.optim.SGD(momentum=β, dampening=0)``. With noisy gradients E[d] ≈ ½, so start from
    twice a tuned SGDM learning rate (:func:`tam_lr_from_sgdm`). State: ``momentum_buffer`` (the
    key ``torch.optim.SGD`` uses) and ``s_hat`` (0-dim, float32; float64 for float64 params). ``last_damping`` is the mean d_t
    over tensors at the last step (``last_group_damping`` per group; None where damping is off).
    A non-finite gradient skips the whole step with a ``RuntimeWarning``.
    """

    def __init__(self, params: Iterable, lr: float, *, momentum: float = 0.9, decay: float = 0.9,
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 damping: bool = True, granularity: str = "tensor", maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, decay=decay, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, damping=damping,
                        granularity=granularity, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict) -> None:
        _check_common(group)
        _check_range("momentum", group["momentum"], 0.0, 1.0)

    def _floor(self, group: dict) -> float:
        return group["eps"]

    def _init_state(self, p: Tensor, state: dict) -> None:
        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _apply(self, group: dict, p: Tensor, grad: Tensor, state: dict, coeff: float) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        if wd != 0 and group["decoupled_weight_decay"]:
            p.mul_(1 - lr * wd)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(grad, alpha=coeff)
        p.add_(buf, alpha=-lr)


class AdaTAM(_TorqueOptimizer):
    r"""Torque-Aware Momentum, Adam form (the library's Adam convention; arXiv 2412.18790)::

        s_t, ŝ_t, d_t as in :class:`TAM`, with m_{t-1} the first moment
        m_t = β1 m_{t-1} + (1-β1)(ε_d + d_t) g_t;   v_t = β2 v_{t-1} + (1-β2) g_t²   (raw g)
        θ ← θ - η (m_t/(1-β1^t)) / (sqrt(v_t/(1-β2^t)) + ε)

    ``eps`` is Adam's denominator ε (torch semantics), ``damping_eps`` the damping floor ε_d.
    Weight decay is decoupled by default (AdamW, θ ← θ(1-ηλ)); ``decoupled_weight_decay=False``
    adds λθ to g before the cosine (Adam's L2). ``damping=False`` is exactly ``torch.optim.AdamW``
    (or ``torch.optim.Adam`` when coupled). Start from twice a tuned Adam learning rate. State keys
    ``step``, ``exp_avg``, ``exp_avg_sq`` are ``torch.optim.Adam``'s, plus ``s_hat``.
    """

    _momentum_key = "exp_avg"

    def __init__(self, params: Iterable, lr: float = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999),
                 decay: float = 0.9, eps: float = 1e-8, damping_eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = True, damping: bool = True, granularity: str = "tensor",
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=betas, decay=decay, eps=eps, damping_eps=damping_eps,
                        weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                        damping=damping, granularity=granularity, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict) -> None:
        _check_common(group)
        _check_range("damping_eps", group["damping_eps"], 0.0, None)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}")
        _check_range("betas[0]", betas[0], 0.0, 1.0)
        _check_range("betas[1]", betas[1], 0.0, 1.0)

    def _floor(self, group: dict) -> float:
        return group["damping_eps"]

    def _init_state(self, p: Tensor, state: dict) -> None:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _apply(self, group: dict, p: Tensor, grad: Tensor, state: dict, coeff: float) -> None:
        lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
        state["step"] += 1
        step = state["step"].item()
        if wd != 0 and group["decoupled_weight_decay"]:
            p.mul_(1 - lr * wd)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        if not group["damping"]:
            exp_avg.lerp_(grad, 1 - beta1)  # torch.optim.Adam's operation, bit for bit
        else:
            exp_avg.mul_(beta1).add_(grad, alpha=(1 - beta1) * coeff)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
