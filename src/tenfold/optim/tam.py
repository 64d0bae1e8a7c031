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
or ``torch.optim.AdamW`` (decoupled). Cosines are computed in float32 whatever the parameter dtype
(bf16, fp16, fp32; float64 for float64 parameters); ŝ and d are Python floats (double), so loading a
state_dict under bf16 parameters never rounds them. The pure functions :func:`tam_update` and :func:`adatam_update` state the rule on
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


def cosine_from_norms(dot: float, m_norm: float, g_norm: float) -> float:
    """``dot / (m_norm * g_norm)`` clamped to [-1, 1]; 0 when a norm is 0 or a value is not finite
    (a zero momentum, a zero gradient or an overflow never poisons ŝ). The sums come from the
    device (accumulated in at least float32); the division is done on the host in double."""
    den = m_norm * g_norm
    if not (math.isfinite(dot) and math.isfinite(den)) or den <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, dot / den))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    acc = _accumulate_dtype(a.dtype)
    if a.dtype != acc:
        a, b = a.to(acc), b.to(acc)
    return torch.dot(a.reshape(-1), b.reshape(-1))  # (numel,) . (numel,)


def tensor_sums(momentum_buffer: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(<m, g>, ||m||, ||g||)`` of two same-shaped tensors, accumulated in at least float32."""
    acc = _accumulate_dtype(grad.dtype)
    norm = torch.linalg.vector_norm
    return _dot(momentum_buffer, grad), norm(momentum_buffer, dtype=acc), norm(grad, dtype=acc)


def torque_cosine(momentum_buffer: Tensor, grad: Tensor) -> float:
    """s = cos(m_{t-1}, g_t) over the whole tensor, computed in float32 (float64 for float64
    input); 0 when either norm is 0 or a value is not finite."""
    return cosine_from_norms(*(float(v) for v in tensor_sums(momentum_buffer, grad)))


def smoothed_damping(s_hat: float, cosine: float, decay: float) -> tuple[float, float]:
    """ŝ_t = decay·ŝ_{t-1} + (1 - decay)·s_t and d_t = (1 + ŝ_t)/2 (Python floats: double)."""
    s_hat = decay * s_hat + (1.0 - decay) * cosine
    return s_hat, (1.0 + s_hat) / 2.0


class TAMStep(NamedTuple):
    param: Tensor
    momentum_buffer: Tensor
    s_hat: float
    damping: float  # d_t, or 1.0 (the coefficient used) when damping is off


def _effective_grad(param: Tensor, grad: Tensor, weight_decay: float, decoupled: bool,
                    maximize: bool) -> Tensor:
    grad = -grad if maximize else grad
    if weight_decay != 0 and not decoupled:
        grad = grad.add(param, alpha=weight_decay)  # coupled L2 enters the cosine
    return grad


def _damped_coefficient(momentum_buffer: Tensor, grad: Tensor, s_hat: float, decay: float,
                        floor: float, damping: bool) -> tuple[float, float, float]:
    """(new ŝ, d, coefficient of g). With damping off ŝ is reset to 0 and the coefficient is 1."""
    if not damping:
        return 0.0, 1.0, 1.0
    s_hat, d = smoothed_damping(s_hat, torque_cosine(momentum_buffer, grad), decay)
    return s_hat, d, floor + d


def tam_update(param: Tensor, grad: Tensor, momentum_buffer: Tensor, s_hat: float, *, lr: float,
               momentum: float = 0.9, decay: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0,
               decoupled_weight_decay: bool = False, damping: bool = True,
               maximize: bool = False) -> TAMStep:
    """One TAM step on one tensor, out of place (inputs are not modified).

    ``momentum_buffer`` is m_{t-1} (zeros before the first step), ``s_hat`` is ŝ_{t-1} (0 at first).
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
    s_hat: float
    step: int
    damping: float


def adatam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, s_hat: float,
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
    """Common step structure: gather the effective gradients, compute every cosine on the device
    and bring them to the host together with an all-gradients-finite flag (one synchronisation per
    step), skip the step if a gradient is non-finite, update ŝ and d as Python floats, then apply
    the per-tensor update in place."""

    _momentum_key = "momentum_buffer"

    def __init__(self, params, defaults: dict) -> None:
        self.last_damping: float | None = None
        self.last_group_damping: list[float | None] = []
        self.skipped_steps = 0
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # leave the optimizer as it was
            raise

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
            if state.get(self._momentum_key) is None:
                self._init_state(p, state)
            state.setdefault("s_hat", 0.0)
            params.append(p)
            grads.append(_effective_grad(p, p.grad, group["weight_decay"],
                                         group["decoupled_weight_decay"], group["maximize"]))
        return params, grads

    def _group_sums(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> Tensor:
        """Per-tensor sums of one group, stacked: [||g_i||] and, with damping on, [<m_i, g_i>]
        and [||m_i||] (float32, float64 if the group holds float64 parameters)."""
        acc = _accumulate_dtype(params[0].dtype)
        for p in params[1:]:
            acc = torch.promote_types(acc, p.dtype)
        sums = _norms(grads, acc)
        if group["damping"]:
            bufs = [self.state[p][self._momentum_key] for p in params]
            sums += [_dot(m, g) for m, g in zip(bufs, grads)] + _norms(bufs, acc)
        return torch.stack([v.to(acc) if v.dtype != acc else v for v in sums]).double()  # (n or 3n,)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One optimizer step; returns the closure's loss. A step whose gradients contain a
        non-finite value is skipped entirely (no parameter or state changes) with a warning."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, *self._gather(group)) for group in self.param_groups]
        work = [w for w in work if w[1]]
        if not work:
            return loss
        host = torch.cat([self._group_sums(*w) for w in work]).tolist()  # the one sync per step
        sums, offset = [], 0
        for group, params, _ in work:
            size = len(params) * (3 if group["damping"] else 1)
            sums.append(host[offset:offset + size])
            offset += size
        if not all(math.isfinite(v) for group_sums, (_, params, _) in zip(sums, work)
                   for v in group_sums[:len(params)]):  # the gradient norms
            self.skipped_steps += 1
            warnings.warn(f"{type(self).__name__}: non-finite gradient, step skipped", RuntimeWarning,
                          stacklevel=2)
            return loss
        means = [self._apply_group(group, params, grads, group_sums)
                 for (group, params, grads), group_sums in zip(work, sums)]
        self.last_group_damping = means
        logged = [m for m in means if m is not None]
        self.last_damping = sum(logged) / len(logged) if logged else None
        return loss

    def _apply_group(self, group: dict, params: list[Tensor], grads: list[Tensor],
                     sums: list[float]) -> float | None:
        """Update ŝ, d and the parameters of one group from its sums [||g_i||, <m_i, g_i>, ||m_i||];
        return the mean d (None if damping is off)."""
        if not group["damping"]:
            for p, g in zip(params, grads):
                self.state[p]["s_hat"] = 0.0  # damping off: ŝ restarts from 0 when re-enabled
                self._apply(group, p, g, self.state[p], 1.0)
            return None
        n = len(params)
        g_norms, dots, m_norms = sums[:n], sums[n:2 * n], sums[2 * n:]
        if group["granularity"] == "global":
            cosine = cosine_from_norms(sum(dots), math.hypot(*m_norms), math.hypot(*g_norms))
            cosines = [cosine] * n
            s_hat, _ = smoothed_damping(self.state[params[0]]["s_hat"], cosine, group["decay"])
        else:
            cosines = [cosine_from_norms(*v) for v in zip(dots, m_norms, g_norms)]
        dampings = []
        for p, g, cosine in zip(params, grads, cosines):
            state = self.state[p]
            if group["granularity"] == "global":
                state["s_hat"] = s_hat
            else:
                state["s_hat"], _ = smoothed_damping(state["s_hat"], cosine, group["decay"])
            d = (1.0 + state["s_hat"]) / 2.0
            dampings.append(d)
            self._apply(group, p, g, state, self._floor(group) + d)
        return sum(dampings) / n


def _norms(tensors: list[Tensor], acc: torch.dtype) -> list[Tensor]:
    """Euclidean norm of each tensor in at least float32 (one foreach call when dtypes allow)."""
    if all(t.dtype == acc for t in tensors):
        return list(torch._foreach_norm(tensors))
    return [torch.linalg.vector_norm(t, dtype=_accumulate_dtype(t.dtype)) for t in tensors]


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
    key ``torch.optim.SGD`` uses) and ``s_hat`` (a Python float). ``last_damping`` is the mean d_t
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
    ``step``, ``exp_avg``, ``exp_avg_sq`` are ``torch.optim.Adam``'s, plus ``s_hat`` (a Python float).
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
