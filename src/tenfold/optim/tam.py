"""Torque-Aware Momentum: TAM (SGD form) and AdaTAM / AdaTAMW (Adam form).

Malviya, Mordido, Baratin, Babanezhad Harikandeh, Dziugaite, Pascanu, Chandar, *Torque-Aware
Momentum*, arXiv 2412.18790 (2024). Momentum is damped by the angle between the previous momentum
and the new gradient: a gradient that points against the momentum (an oscillation across a ravine)
barely enters it, an aligned one enters fully. Method card: ``docs/methods/tam.md``.

Per parameter tensor (or per parameter group with ``granularity="global"``), step t = 1, 2, ...::

    s_t = <m_{t-1}, g_t> / (||m_{t-1}|| ||g_t||)      (0 when either norm is 0)
    ŝ_t = γ ŝ_{t-1} + (1 - γ) s_t,   ŝ_0 = 0
    d_t = (1 + ŝ_t) / 2                                damping in [0, 1]
    TAM:    m_t = β m_{t-1} + (ε + d_t) g_t,   θ ← θ - η m_t
    AdaTAM: m_t = β1 m_{t-1} + (1 - β1)(ε_d + d_t) g_t,   v_t = β2 v_{t-1} + (1 - β2) g_t²,
            θ ← θ - η m̂_t / (sqrt(v̂_t) + ε)   (bias-corrected, torch.optim.Adam's conventions)

``damping=False`` replaces the coefficient (ε + d_t) by exactly 1: TAM is then
``torch.optim.SGD(momentum=β, dampening=0)``, AdaTAM is ``torch.optim.Adam`` (coupled weight decay)
or ``torch.optim.AdamW`` (decoupled), complex parameters included (they are treated as real pairs,
``torch.view_as_real``, as torch does). Dot products and norms accumulate in float32 whatever the
parameter dtype (float64 for float64 parameters); the cosines, ŝ and d are float64 tensors on the
parameters' device, so a step makes no host synchronisation. The optimizers run a loop over tensors
or, with ``foreach=True`` (the default for CUDA tensors, as in torch), ``torch._foreach_*`` kernels
over the tensors of each device and dtype. The pure functions :func:`tam_update` and
:func:`adatam_update` state the rule on one tensor; the optimizers are tested against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _default_to_fused_or_foreach, _get_scalar_dtype, _get_value

from tenfold.utils.checks import check_bool, check_choice, check_range

GRANULARITIES = ("tensor", "global")


# ----------------------------------------------------------------------------------------------
# Pure functions: the torque cosine, the smoothed damping, and one step of each rule on a tensor.
# ----------------------------------------------------------------------------------------------

_ACCUMULATE = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.float32: torch.float32,
               torch.float64: torch.float64}


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    acc = _ACCUMULATE.get(dtype)  # a dict: torch.promote_types costs a dispatch per call
    return acc if acc is not None else torch.promote_types(dtype, torch.float32)


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


def torque_cosines(dots: Tensor, m_norms: Tensor, g_norms: Tensor) -> Tensor:
    """:func:`cosine_from_norms` on tensors (elementwise, on the device, no host synchronisation):
    ``dots / (m_norms * g_norms)`` clamped to [-1, 1], 0 where a norm is 0 or a value is not finite."""
    cosines = dots / (m_norms * g_norms)  # not finite exactly where the host rule gives 0
    return torch.where(torch.isfinite(cosines), cosines.clamp(-1.0, 1.0), 0.0)


def smoothed_s_hat(s_hat: Tensor, cosines: Tensor, decay: float) -> Tensor:
    """ŝ_t = γ ŝ_{t-1} + (1 - γ) s_t on tensors (the same float64 operations as :func:`smoothed_damping`)."""
    return s_hat * decay + cosines * (1.0 - decay)


# ----------------------------------------------------------------------------------------------
# Shared optimizer machinery.
# ----------------------------------------------------------------------------------------------

def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if torch.is_complex(t) else t


def _norms(tensors: list[Tensor], acc: torch.dtype) -> list[Tensor]:
    """Euclidean norm of each tensor, accumulated in ``acc`` (one foreach kernel)."""
    if tensors[0].dtype == acc:
        return list(torch._foreach_norm(tensors))
    return list(torch._foreach_norm(tensors, 2, dtype=acc))


def _masked(ok: Tensor, value: float | Tensor, neutral: float) -> Tensor:
    """A float64 scalar tensor on ``ok``'s device: ``value`` where ``ok`` else ``neutral``."""
    if isinstance(value, Tensor):
        value = value.to(device=ok.device, dtype=torch.float64)
    else:
        value = torch.full((), value, dtype=torch.float64, device=ok.device)
    return torch.where(ok, value, neutral)


@dataclass
class _Bucket:
    """The tensors of one parameter group on one device with one dtype (as real views)."""
    params: list[Tensor]
    grads: list[Tensor]  # effective gradients: after maximize and coupled weight decay
    moments: list[Tensor]  # m_{t-1}: momentum_buffer (TAM) or exp_avg (AdaTAM)
    states: list[dict]
    g_norms: Tensor | None = None  # (n,) float64
    m_norms: Tensor | None = None
    dots: Tensor | None = None
    ok: Tensor | None = None  # all gradients finite (0-dim bool), when the step is guarded

    @property
    def device(self) -> torch.device:
        return self.params[0].device


def read_group_dampings(logs: Sequence[Sequence[Tensor | None]]) -> list[list[float | None]]:
    """The :attr:`~TAM.last_group_damping` of each step whose :attr:`~TAM.last_damping_log` is in
    ``logs`` (the mean d_t of each group, None where damping is off), with one read from the device
    for all of them."""
    tensors = [d for log in logs for d in log if d is not None]
    values = torch.cat([d.to(tensors[0].device) for d in tensors]).tolist() if tensors else []  # (sum of n,)
    steps, at = [], 0
    for log in logs:
        group_means = []
        for d in log:
            if d is None:
                group_means.append(None)
            else:
                group_means.append(sum(values[at:at + d.numel()]) / d.numel())
                at += d.numel()
        steps.append(group_means)
    return steps


def read_dampings(logs: Sequence[Sequence[Tensor | None]]) -> list[float | None]:
    """The :attr:`~TAM.last_damping` of each step in ``logs`` (the mean over the groups with damping of
    :func:`read_group_dampings`; None where no group has damping), with one read from the device."""
    dampings = []
    for group_means in read_group_dampings(logs):
        logged = [m for m in group_means if m is not None]
        dampings.append(sum(logged) / len(logged) if logged else None)
    return dampings


class _TorqueOptimizer(Optimizer):
    """Common step structure, without host synchronisation: (1) per parameter group and per device
    and dtype, the effective gradients and their sums (<m, g>, ||m||, ||g||) as float64 device
    vectors; (2) with ``skip_nonfinite``, one device flag "every gradient is finite"; (3) the
    cosines, ŝ and d on the device; (4) the update, in a loop over tensors or with ``torch._foreach_*``.
    A step whose gradients are not all finite changes no parameter and no moment (its scalars
    become neutral on the device: coefficients 0, decays 1; its gradients are zeroed in place);
    ``skipped_steps`` counts such steps.
    ``last_damping`` (the mean d_t of the last step) and ``skipped_steps`` read the device values
    only when asked."""

    _moment_key = "momentum_buffer"

    def __init__(self, params, defaults: dict) -> None:
        self._validate_group(defaults)  # before reading params, as torch's optimizers do
        self._damping_log: list[Tensor | None] = []
        self._skipped: Tensor | None = None
        super().__init__(params, defaults)

    # ---------------------------------------------------------------- plumbing

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_damping_log": self._damping_log, "_skipped": self._skipped}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_damping_log", [])
        self.__dict__.setdefault("_skipped", None)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                if key != "differentiable":  # torch's Optimizer adds it to defaults; not supported here
                    group.setdefault(key, value)  # e.g. an SGD / Adam / AdamW state dict
            self._restore_state_types(group)

    def _restore_state_types(self, group: dict) -> None:
        """Numbers saved by older versions (or loaded through :meth:`load_state_dict`) back to tensors:
        ŝ as float64 on the parameter's device, AdaTAM's ``step`` as a CPU tensor (as torch.optim.Adam)."""
        params = group["params"]
        for p in params:
            state = self.state.get(p)
            if not state:
                continue
            if "s_hat" in state and not torch.is_tensor(state["s_hat"]):
                state["s_hat"] = torch.tensor(float(state["s_hat"]), dtype=torch.float64, device=p.device)
            if "step" in state and not torch.is_tensor(state["step"]):
                state["step"] = torch.tensor(float(state["step"]), dtype=_get_scalar_dtype())
        if group.get("granularity") == "global" and params:
            s_hat = group.get("s_hat")
            if s_hat is None:  # a checkpoint that kept the global ŝ on every parameter
                s_hat = next((self.state[p]["s_hat"] for p in params if "s_hat" in self.state.get(p, {})), None)
            if s_hat is not None:
                group["s_hat"] = torch.as_tensor(s_hat, dtype=torch.float64).to(params[0].device).clone()

    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer.load_state_dict``; ŝ is kept in float64 (torch would cast it
        to the parameter's dtype) and missing TAM-only group keys take their defaults, so a
        ``torch.optim.SGD`` (for TAM) or ``Adam`` / ``AdamW`` (for AdaTAM) state dict loads."""
        state_dict = dict(state_dict)
        state_dict["state"] = {k: ({name: (float(v) if name == "s_hat" and torch.is_tensor(v) else v)
                                    for name, v in s.items()} if isinstance(s, dict) else s)
                               for k, s in state_dict["state"].items()}  # read once, at load time
        super().load_state_dict(state_dict)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # leave the optimizer as it was
            raise

    @property
    def last_group_damping(self) -> list[float | None]:
        """Mean d_t over the tensors of each group that took the last step (None where damping is
        off). Reading it copies a few numbers from the device."""
        return read_group_dampings([self._damping_log])[0]

    @property
    def last_damping(self) -> float | None:
        """Mean over groups of :attr:`last_group_damping` (None if damping is off everywhere)."""
        return read_dampings([self._damping_log])[0]

    @property
    def last_damping_log(self) -> list[Tensor | None]:
        """The d_t of every tensor of each group that took the last step (float64 device vectors; None
        where damping is off), not read from the device: keep them over many steps and read them once
        with :func:`read_dampings`."""
        return list(self._damping_log)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because a gradient was not finite (``skip_nonfinite=True``)."""
        return 0 if self._skipped is None else int(self._skipped)

    # ---------------------------------------------------------------- the step

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One optimizer step; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, *self._prepare(group)) for group in self.param_groups]
        work = [w for w in work if w[1]]
        if not work:
            return loss
        self._guard(work)
        self._damping_log = [self._apply_group(group, buckets, foreach) for group, buckets, foreach in work]
        return loss

    def _prepare(self, group: dict) -> tuple[list[_Bucket], bool]:
        """Phase 1 for one group: state, effective gradients and sums, per device and dtype; and
        whether this group runs the foreach path."""
        params, grads, states = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if state.get(self._moment_key) is None:
                self._init_state(p, state)
            if group["granularity"] == "tensor" and "s_hat" not in state:
                state["s_hat"] = torch.zeros((), dtype=torch.float64, device=p.device)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
        if not params:
            return [], False
        if group["foreach"] is None:
            group_foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1]
        else:
            group_foreach = group["foreach"]
        grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads], with_indices=True)
        buckets = []
        for (b_params, b_grads), indices in grouped.values():
            b_states = [states[i] for i in indices]
            b_grads = self._effective_grads(group, b_params, b_grads, group_foreach)
            bucket = _Bucket([_real(p) for p in b_params], [_real(g) for g in b_grads],
                             [_real(s[self._moment_key]) for s in b_states], b_states)
            self._sums(group, bucket)
            buckets.append(bucket)
        return buckets, group_foreach

    @staticmethod
    def _effective_grads(group: dict, params: list[Tensor], grads: list[Tensor], foreach: bool) -> list[Tensor]:
        """g ← -g (maximize), then g ← g + λθ (coupled weight decay); p.grad is never modified."""
        wd = group["weight_decay"]
        coupled = wd != 0 and not group["decoupled_weight_decay"]
        if foreach:
            if group["maximize"]:
                grads = torch._foreach_neg(grads)
            if coupled:
                grads = torch._foreach_add(grads, params, alpha=wd)
            return list(grads)
        if group["maximize"]:
            grads = [torch.neg(g) for g in grads]
        if coupled:
            grads = [g.add(p, alpha=wd) for g, p in zip(grads, params)]
        return grads

    @staticmethod
    def _sums(group: dict, bucket: _Bucket) -> None:
        """(<m_i, g_i>, ||m_i||, ||g_i||) as float64 vectors (n,), accumulated in at least float32."""
        if not (group["damping"] or group["skip_nonfinite"]):
            return
        acc = _accumulate_dtype(bucket.grads[0].dtype)
        sums = _norms(bucket.grads, acc)
        if group["damping"]:
            sums += _norms(bucket.moments, acc) + [_dot(m, g) for m, g in zip(bucket.moments, bucket.grads)]
        sums = torch.stack(sums).double()  # (n,) or (3n,): [||g_i||, ||m_i||, <m_i, g_i>]
        n = len(bucket.grads)
        bucket.g_norms = sums[:n]
        if group["damping"]:
            bucket.m_norms, bucket.dots = sums[n:2 * n], sums[2 * n:]
        if group["skip_nonfinite"]:
            bucket.ok = torch.isfinite(bucket.g_norms).all()

    def _guard(self, work: list) -> None:
        """One flag for the whole step: every gradient of every guarded group is finite."""
        flags = [b.ok for _, buckets, _ in work for b in buckets if b.ok is not None]
        if not flags:
            return
        home = flags[0].device
        ok = flags[0] if len(flags) == 1 else torch.stack([f.to(home, non_blocking=True) for f in flags]).all()
        if self._skipped is None or self._skipped.device != home:
            self._skipped = torch.zeros((), dtype=torch.int64, device=home) + self.skipped_steps
        self._skipped.add_(~ok)
        for _, buckets, _ in work:
            for b in buckets:
                if b.ok is not None:
                    b.ok = ok if b.device == home else ok.to(b.device, non_blocking=True)

    def _apply_group(self, group: dict, buckets: list[_Bucket], foreach: bool) -> Tensor | None:
        """Phase 2 for one group: ŝ and d on the device, then the update of every bucket.
        Returns the d_t of every tensor (float64, (n,)), or None when damping is off."""
        if not group["damping"]:
            self._reset_s_hat(group, buckets)
            for b in buckets:
                self._apply_bucket(group, b, None, foreach)
            return None
        if group["granularity"] == "global":
            dampings = self._global_dampings(group, buckets)
        else:
            dampings = [self._tensor_dampings(group, b) for b in buckets]
        floor = self._floor(group)
        for b, d in zip(buckets, dampings):
            self._apply_bucket(group, b, d + floor, foreach)
        return torch.cat([d.to(dampings[0].device) for d in dampings])  # (n,)

    @staticmethod
    def _tensor_dampings(group: dict, b: _Bucket) -> Tensor:
        """One ŝ per tensor: update them in place, return d_t, (n,)."""
        s_hats = [s["s_hat"] for s in b.states]
        old = torch.stack(s_hats)  # (n,)
        new = smoothed_s_hat(old, torque_cosines(b.dots, b.m_norms, b.g_norms), group["decay"])
        if b.ok is not None:
            new = torch.where(b.ok, new, old)
        torch._foreach_copy_(s_hats, list(new.unbind()))
        return (new + 1.0) / 2.0

    @staticmethod
    def _global_dampings(group: dict, buckets: list[_Bucket]) -> list[Tensor]:
        """One cosine over all tensors of the group (the sums of every bucket together), one ŝ in
        ``group["s_hat"]``; return d_t broadcast to each bucket."""
        home = buckets[0].device
        dot = sum(b.dots.sum().to(home, non_blocking=True) for b in buckets)
        m_sq = sum(b.m_norms.square().sum().to(home, non_blocking=True) for b in buckets)
        g_sq = sum(b.g_norms.square().sum().to(home, non_blocking=True) for b in buckets)
        s_hat = group.get("s_hat")
        if s_hat is None or s_hat.device != home:
            s_hat = torch.zeros((), dtype=torch.float64, device=home) if s_hat is None else s_hat.to(home)
            group["s_hat"] = s_hat
        new = smoothed_s_hat(s_hat, torque_cosines(dot, m_sq.sqrt(), g_sq.sqrt()), group["decay"])
        if buckets[0].ok is not None:
            new = torch.where(buckets[0].ok, new, s_hat)
        s_hat.copy_(new)
        d = (new + 1.0) / 2.0
        return [d.to(b.device, non_blocking=True).expand(len(b.params)) for b in buckets]

    @staticmethod
    def _reset_s_hat(group: dict, buckets: list[_Bucket]) -> None:
        """Damping off: ŝ restarts from 0 when damping is re-enabled."""
        s_hats = [s["s_hat"] for b in buckets for s in b.states if "s_hat" in s]
        if s_hats:
            torch._foreach_zero_(s_hats)
        if torch.is_tensor(group.get("s_hat")):
            group["s_hat"].zero_()

    @staticmethod
    def _update_scalars(group: dict, b: _Bucket, coeffs: Tensor | None, beta: float):
        """The step's scalars for one bucket: (β, per-tensor coefficients of g or None for exactly 1,
        decoupled decay factor or None, -lr). Python floats where possible; float64 device tensors
        where they depend on the device (the coefficients, a tensor lr, the non-finite guard)."""
        lr, wd, ok = group["lr"], group["weight_decay"], b.ok
        if isinstance(lr, Tensor):
            lr = lr.to(device=b.device, dtype=torch.float64, non_blocking=True)
        factor = 1 - lr * wd if wd != 0 and group["decoupled_weight_decay"] else None
        neg_lr = -lr
        if ok is not None:
            beta = _masked(ok, beta, 1.0)
            neg_lr = _masked(ok, neg_lr, 0.0)
            factor = None if factor is None else _masked(ok, factor, 1.0)
            if coeffs is None:
                coeffs = ok.double().expand(len(b.params))  # exactly 1, or 0 when skipped
            else:
                coeffs = torch.where(ok, coeffs, 0.0)
        return beta, coeffs, factor, neg_lr

    @staticmethod
    def _safe_grads(b: _Bucket) -> list[Tensor]:
        """The gradients, zeroed in place on a step that is skipped (so 0·inf never reaches a
        moment). In place: a new tensor per gradient would cost an allocation every step. The
        zeroed gradients are ``p.grad`` itself unless maximize or coupled decay made a copy."""
        if b.ok is None:
            return b.grads
        skipped = ~b.ok
        for g in b.grads:
            g.masked_fill_(skipped, 0.0)
        return b.grads

    def _validate_group(self, group: dict) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _floor(self, group: dict) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def _init_state(self, p: Tensor, state: dict) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _apply_bucket(self, group: dict, b: _Bucket, coeffs: Tensor | None, foreach: bool) -> None:  # pragma: no cover
        raise NotImplementedError


def _check_lr(lr: Any) -> None:
    """torch.optim's checks and wording for the learning rate (a float or a 1-element tensor)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        value = float(lr)  # construction time, not a step
    else:
        value = lr
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < math.inf):
        raise ValueError(f"Invalid learning rate: {lr}")


def _check_common(group: dict) -> None:
    _check_lr(group["lr"])
    wd = group["weight_decay"]
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not 0.0 <= wd < math.inf:
        raise ValueError(f"Invalid weight_decay value: {wd}")
    check_range("decay", group["decay"], 0.0, 1.0, high_open=True)
    for flag in ("decoupled_weight_decay", "damping", "maximize", "skip_nonfinite"):
        check_bool(flag, group[flag])
    if group["foreach"] is not None:
        check_bool("foreach", group["foreach"])
    check_choice("granularity", group["granularity"], GRANULARITIES)


def _check_eps(name: str, eps: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < math.inf:
        raise ValueError(f"Invalid {name} value: {eps}")


# ----------------------------------------------------------------------------------------------
# The optimizers.
# ----------------------------------------------------------------------------------------------

class TAM(_TorqueOptimizer):
    r"""Torque-Aware Momentum, SGD form (Malviya et al., arXiv 2412.18790; ``docs/methods/tam.md``).

    Per tensor (``granularity="tensor"``) or per parameter group (``"global"``: one cosine over all
    tensors of the group, i.e. over their concatenation, and one ŝ kept in the group as
    ``group["s_hat"]``)::

        s_t = cos(m_{t-1}, g_t)  (0 if a norm is 0);  ŝ_t = γ ŝ_{t-1} + (1-γ) s_t;  d_t = (1+ŝ_t)/2
        m_t = β m_{t-1} + (ε + d_t) g_t;   θ ← θ - η m_t

    ``lr`` is η (default 1e-3, ``torch.optim.SGD``'s; a 1-element tensor is accepted as SGD accepts
    one), ``momentum`` β, ``decay`` γ, ``eps`` the damping floor ε. ``weight_decay`` is coupled L2
    (added to g before the cosine, like ``torch.optim.SGD``) unless ``decoupled_weight_decay``
    (θ ← θ(1-ηλ), not seen by the cosine). ``damping=False`` gives exactly
    ``torch.optim.SGD(momentum=β, dampening=0)``. With noisy gradients E[d] ≈ ½, so start from twice
    a tuned SGDM learning rate (:func:`tam_lr_from_sgdm`). ``foreach`` (default: on for CUDA
    tensors) groups tensors by device and dtype and updates them with ``torch._foreach_*``.
    ``skip_nonfinite=True`` leaves parameters and state unchanged on a step whose gradients are not
    all finite, decided on the device; it costs one in-place pass over the gradients, and on such a
    step the gradients are left zeroed. Off by default, as in torch's optimizers and the paper (ŝ is
    never poisoned either way: a non-finite cosine counts as 0; under AMP ``GradScaler`` skips).
    State: ``momentum_buffer`` (``torch.optim.SGD``'s key) and ``s_hat`` (a float64 0-dim tensor).
    ``last_damping`` is the mean d_t at the last step (``last_group_damping`` per group).
    """

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, *, momentum: float = 0.9,
                 decay: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, damping: bool = True, granularity: str = "tensor",
                 maximize: bool = False, foreach: bool | None = None, skip_nonfinite: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, decay=decay, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, damping=damping,
                        granularity=granularity, maximize=maximize, foreach=foreach,
                        skip_nonfinite=skip_nonfinite)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict) -> None:
        _check_lr(group["lr"])
        m = group["momentum"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
            raise ValueError(f"Invalid momentum value: {m}")
        _check_eps("epsilon", group["eps"])
        _check_common(group)

    def _floor(self, group: dict) -> float:
        return group["eps"]

    def _init_state(self, p: Tensor, state: dict) -> None:
        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _apply_bucket(self, group: dict, b: _Bucket, coeffs: Tensor | None, foreach: bool) -> None:
        """θ ← θ(1-ηλ) (decoupled); m ← β m + c g; θ ← θ - η m."""
        beta, coeffs, factor, neg_lr = self._update_scalars(group, b, coeffs, group["momentum"])
        grads = self._safe_grads(b)
        params, bufs = b.params, b.moments
        if foreach:
            if factor is not None:
                torch._foreach_mul_(params, factor)
            torch._foreach_mul_(bufs, beta)
            if coeffs is None:
                torch._foreach_add_(bufs, grads)
            else:
                torch._foreach_addcmul_(bufs, grads, list(coeffs.unbind()))
            if isinstance(neg_lr, Tensor):
                torch._foreach_addcmul_(params, bufs, [neg_lr] * len(params))
            else:
                torch._foreach_add_(params, bufs, alpha=neg_lr)
            return
        coeff_list = None if coeffs is None else coeffs.unbind()
        for i, (p, g, buf) in enumerate(zip(params, grads, bufs)):
            if factor is not None:
                p.mul_(factor)
            buf.mul_(beta)
            if coeff_list is None:
                buf.add_(g)
            else:
                buf.addcmul_(g, coeff_list[i])  # the same rounding as add_(g, alpha=c)
            if isinstance(neg_lr, Tensor):
                p.addcmul_(buf, neg_lr)
            else:
                p.add_(buf, alpha=neg_lr)


class AdaTAM(_TorqueOptimizer):
    r"""Torque-Aware Momentum, Adam form (the library's Adam convention; arXiv 2412.18790;
    ``docs/methods/tam.md``)::

        s_t, ŝ_t, d_t as in :class:`TAM`, with m_{t-1} the first moment
        m_t = β1 m_{t-1} + (1-β1)(ε_d + d_t) g_t;   v_t = β2 v_{t-1} + (1-β2) g_t²   (raw g)
        θ ← θ - η (m_t/(1-β1^t)) / (sqrt(v_t/(1-β2^t)) + ε)

    ``eps`` is Adam's denominator ε (torch semantics), ``damping_eps`` the damping floor ε_d.
    Weight decay is decoupled by default (AdamW, θ ← θ(1-ηλ)); ``decoupled_weight_decay=False``
    adds λθ to g before the cosine (Adam's L2). ``damping=False`` is exactly ``torch.optim.AdamW``
    (or ``torch.optim.Adam`` when coupled). Start from twice a tuned Adam learning rate. State keys
    ``step`` (a CPU tensor, as torch.optim.Adam keeps it), ``exp_avg``, ``exp_avg_sq`` are Adam's,
    plus ``s_hat``. ``granularity``, ``foreach``, ``skip_nonfinite`` and a tensor ``lr`` as in
    :class:`TAM`; a skipped step leaves the moments unchanged but still counts in ``step`` (the
    counter lives on the CPU and cannot see the device's flag without a synchronisation).
    """

    _moment_key = "exp_avg"

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999),
                 decay: float = 0.9, eps: float = 1e-8, damping_eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = True, damping: bool = True, granularity: str = "tensor",
                 maximize: bool = False, foreach: bool | None = None, skip_nonfinite: bool = False) -> None:
        defaults = dict(lr=lr, betas=betas, decay=decay, eps=eps, damping_eps=damping_eps,
                        weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                        damping=damping, granularity=granularity, maximize=maximize, foreach=foreach,
                        skip_nonfinite=skip_nonfinite)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict) -> None:
        _check_lr(group["lr"])
        _check_eps("epsilon", group["eps"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}")
        for i, beta in enumerate(betas):
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        check_range("damping_eps", group["damping_eps"], 0.0)
        _check_common(group)

    def _floor(self, group: dict) -> float:
        return group["damping_eps"]

    def _init_state(self, p: Tensor, state: dict) -> None:
        state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _apply_bucket(self, group: dict, b: _Bucket, coeffs: Tensor | None, foreach: bool) -> None:
        """θ ← θ(1-ηλ) (decoupled); m ← β1 m + (1-β1) c g; v ← β2 v + (1-β2) g²;
        θ ← θ - η/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε). On a skipped step ε becomes inf, so
        the parameter moves by m/inf = 0."""
        beta1, beta2 = group["betas"]
        lr, wd, eps, ok = group["lr"], group["weight_decay"], group["eps"], b.ok
        if isinstance(lr, Tensor):
            lr = lr.to(device=b.device, dtype=torch.float64, non_blocking=True)
        factor = 1 - lr * wd if wd != 0 and group["decoupled_weight_decay"] else None
        lerp_weight = None if coeffs is not None else 1 - beta1  # damping off: torch.optim.Adam's lerp
        if coeffs is not None:
            coeffs = coeffs * (1 - beta1)  # (1-β1)(ε_d + d_t)
        if ok is not None:
            beta1, beta2_t, eps = _masked(ok, beta1, 1.0), _masked(ok, beta2, 1.0), _masked(ok, eps, math.inf)
            factor = None if factor is None else _masked(ok, factor, 1.0)
            coeffs = None if coeffs is None else torch.where(ok, coeffs, 0.0)
            lerp_weight = None if lerp_weight is None else _masked(ok, lerp_weight, 0.0)
        else:
            beta2_t = beta2
        update = self._foreach_update if foreach else self._loop_update
        update(b.params, self._safe_grads(b), b.moments, [_real(s["exp_avg_sq"]) for s in b.states],
               [s["step"] for s in b.states], beta1, beta2_t, group["betas"], coeffs, lerp_weight, factor, eps, lr)

    @staticmethod
    def _loop_update(params, grads, exp_avgs, exp_avg_sqs, steps, beta1_t, beta2_t, betas, coeffs,
                     lerp_weight, factor, eps, lr) -> None:
        beta1, beta2 = betas
        coeff_list = None if coeffs is None else coeffs.unbind()
        for i, (p, g, exp_avg, exp_avg_sq, step_t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
            step_t += 1
            step = _get_value(step_t)
            if factor is not None:
                p.mul_(factor)
            if coeff_list is None:
                exp_avg.lerp_(g, lerp_weight)
            else:
                exp_avg.mul_(beta1_t).addcmul_(g, coeff_list[i])  # the rounding of add_(g, alpha=c)
            exp_avg_sq.mul_(beta2_t).addcmul_(g, g, value=1 - beta2)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            step_size = lr / (1 - beta1**step)
            if isinstance(step_size, Tensor):  # a tensor lr, or under torch.compile
                p.addcdiv_(exp_avg, denom.div_(-step_size.to(denom.device)))
            else:
                p.addcdiv_(exp_avg, denom, value=-step_size)

    @staticmethod
    def _foreach_update(params, grads, exp_avgs, exp_avg_sqs, steps, beta1_t, beta2_t, betas, coeffs,
                        lerp_weight, factor, eps, lr) -> None:
        beta1, beta2 = betas
        if not torch.compiler.is_compiling() and steps[0].is_cpu:
            torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
        else:
            torch._foreach_add_(steps, 1)
        if factor is not None:
            torch._foreach_mul_(params, factor)
        if coeffs is not None:
            torch._foreach_mul_(exp_avgs, beta1_t)
            torch._foreach_addcmul_(exp_avgs, grads, list(coeffs.unbind()))
        elif isinstance(lerp_weight, Tensor):
            torch._foreach_lerp_(exp_avgs, grads, [lerp_weight] * len(params))
        else:
            torch._foreach_lerp_(exp_avgs, grads, lerp_weight)
        torch._foreach_mul_(exp_avg_sqs, beta2_t)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = [1 - beta1 ** _get_value(s) for s in steps]
        bias_correction2_sqrt = [(1 - beta2 ** _get_value(s)) ** 0.5 for s in steps]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, [eps] * len(denom) if isinstance(eps, Tensor) else eps)
        if isinstance(lr, Tensor) or torch.compiler.is_compiling():  # step sizes are tensors
            device = params[0].device
            torch._foreach_div_(denom, [torch.as_tensor((lr / bc) * -1).to(device) for bc in bias_correction1])
            torch._foreach_addcdiv_(params, exp_avgs, denom)
        else:
            torch._foreach_addcdiv_(params, exp_avgs, denom, [(lr / bc) * -1 for bc in bias_correction1])


class AdaTAMW(AdaTAM):
    """AdaTAM with decoupled weight decay and ``torch.optim.AdamW``'s default ``weight_decay=1e-2``
    (``AdaTAM`` itself defaults to no decay). ``damping=False`` is exactly ``torch.optim.AdamW``."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999),
                 decay: float = 0.9, eps: float = 1e-8, damping_eps: float = 1e-8, weight_decay: float = 1e-2,
                 damping: bool = True, granularity: str = "tensor", maximize: bool = False,
                 foreach: bool | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, lr, betas=betas, decay=decay, eps=eps, damping_eps=damping_eps,
                         weight_decay=weight_decay, decoupled_weight_decay=True, damping=damping,
                         granularity=granularity, maximize=maximize, foreach=foreach,
                         skip_nonfinite=skip_nonfinite)
