"""Soft parameter resets: non-stationary learning with an Ornstein–Uhlenbeck drift toward the init.

A. Galashov, M. K. Titsias, A. György, C. Lyle, R. Pascanu, Y. W. Teh, M. Sahani, "Non-Stationary
Learning of Neural Networks with Automatic Soft Parameter Reset", NeurIPS 2024, arXiv 2411.04034.

Model (paper): between consecutive batches the parameters follow the drift

    p(θ_{t+1} | θ_t, γ_t) = N(γ_t θ_t + (1 − γ_t) μ0,  (1 − γ_t²) σ0² I),        γ_t ∈ [0, 1],

which pulls them toward the initialisation distribution N(μ0, σ0²); γ_t (per layer or per parameter)
is chosen online to maximise the predictive likelihood of the incoming batch. The update then "adjusts
the starting point θt of the update to a point θ̃t(γt), which is closer to the initialization and
increases the learning rate proportionally to the drift" (paper).

The method section of the paper was not available when this was written; everything below the
drift model's form is reconstructed from that model (see docs/methods/soft-reset.md):

- SGD variant (:class:`SoftReset`): the posterior width is a fixed fraction of the prior,
  σ_t² = s·σ0² (0 < s ≤ 1). γ is re-estimated from 1 at every step by ``gamma_steps`` projected
  gradient steps on the Jensen surrogate E_ε[L(θ(γ, ε))] of the negative log predictive likelihood,
  θ(γ, ε) = γθ_t + (1 − γ)μ0 + std(γ)·ε, std(γ)² = γ²sσ0² + (1 − γ²)σ0².  Then

      θ̃ = γθ_t + (1 − γ)μ0 + √(1 − γ²)·σ0·ξ          (OU noise, optional)
      θ_{t+1} = θ̃ − α·ρ(γ)·∇L(θ̃),   ρ(γ) = min(γ² + (1 − γ²)/s, ρ_max)

  ρ is the ratio of drifted to undrifted prior variance (the learning-rate increase).
- Proximal variant (:class:`SoftResetProximal`): K_θ steps on L(θ) + Σ (θ − θ̃)²/(2λv(γ)).
- Bayesian variant (:class:`BayesianSoftResetProximal`): a mean-field Gaussian posterior (μ, σ) with
  K_θ steps on the tempered ELBO E_q[L] + λ·KL(q ‖ q_{t+1|t}(γ)).

The three share :class:`SoftResetBase` (prior, counters, state, validation, the γ search); the drift
math is in :mod:`tenfold.optim.soft_reset_drift`.

Each optimizer needs a closure that zeroes the gradients, runs forward and backward on the **new**
batch at the current parameter values and returns the loss. The first closure call of every
``step`` is at the current parameters θ_t, before any drift or update (use it for online accuracy).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from tenfold.optim.soft_reset_drift import (
    SIGMA_RULES, diag_gaussian_kl_grads, drift_std, drifted_prior, gamma_grad_antithetic, gamma_grad_mc,
    init_sigma0, lr_multiplier, ou_drift_, soft_reset_sgd_,
)
from tenfold.utils.checks import check_choice, check_int, check_range

__all__ = ["SoftResetBase", "SoftReset", "SoftResetProximal", "BayesianSoftResetProximal"]

ESTIMATORS = ("antithetic", "mc")
GRANULARITIES = ("tensor", "parameter")
PRIOR_MEANS = ("init", "zero")


def _is_finite(loss, tensors: Iterable[Tensor | None]) -> bool:
    """True when ``loss`` and every tensor are finite (a sum is non-finite iff some entry is)."""
    if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
        return False
    sums = [t.sum() for t in tensors if t is not None]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())


def _grads(params: list[Tensor]) -> list[Tensor]:
    """Copies of the current gradients (zeros where a parameter got none)."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


# =============================================================================================
# the base class
# =============================================================================================

class SoftResetBase(Optimizer):
    """What every Soft Reset optimizer owns: the per-parameter prior (μ0, σ0), the drift mask, γ and ρ
    (in ``self.state[p]``), the validation of the shared hyperparameters, the counters and
    diagnostics, the γ search, and a ``state_dict`` that also carries the noise generator.

    Subclasses implement ``step`` and ``_posterior_var(group, p)`` (the variance the γ search
    assumes for the posterior) and may add to the saved state through ``_extra_state`` /
    ``_load_extra_state``.

    Counters and diagnostics: ``closure_calls`` (forward/backward passes so far), ``skipped_steps``
    (steps skipped for a non-finite loss or gradient), ``last_passes`` (passes of the last step),
    ``last_gammas`` (parameter name → γ of the last step, the minimum over elements),
    ``last_online_loss`` (the loss at θ_t of the last step).
    """

    def __init__(self, params, defaults: dict, *, prior_mean: str, sigma0, sigma0_floor: float,
                 fixed_gamma: float | None, generator: torch.Generator | None, persistent_gamma: bool = False):
        check_range("lr", defaults["lr"], 0.0)
        check_range("s", defaults["s"], 0.0, 1.0, low_open=True)
        check_range("gamma_lr", defaults["gamma_lr"], 0.0)
        check_int("gamma_steps", defaults["gamma_steps"], 1)
        check_int("gamma_samples", defaults["gamma_samples"], 1)
        check_choice("gamma_estimator", defaults["gamma_estimator"], ESTIMATORS)
        check_choice("granularity", defaults["granularity"], GRANULARITIES)
        check_range("gamma_min", defaults["gamma_min"], 0.0, 1.0, high_open=True)
        check_choice("prior_mean", prior_mean, PRIOR_MEANS)
        check_range("sigma0_floor", sigma0_floor, 0.0)
        if not (isinstance(sigma0, (int, float, dict)) or sigma0 in SIGMA_RULES):
            raise ValueError(f"sigma0 must be one of {SIGMA_RULES}, a float or a dict, got {sigma0!r}")
        if fixed_gamma is not None:
            check_range("fixed_gamma", fixed_gamma, 0.0, 1.0)
        super().__init__(params, {**defaults, "drift": None})
        self.prior_mean, self.fixed_gamma, self.persistent_gamma = prior_mean, fixed_gamma, persistent_gamma
        self.generator = generator
        self._names: dict[Tensor, str] = {}
        self._init_prior(prior_mean, sigma0, sigma0_floor)
        self.closure_calls, self.skipped_steps, self._passes = 0, 0, 0
        self.last_gammas: dict[str, float] = {}
        self.last_online_loss: float = float("nan")
        self.last_passes = 0

    def _init_prior(self, prior_mean: str, sigma0, sigma0_floor: float) -> None:
        """μ0, σ0, the drift mask, γ and ρ of every parameter (state), and its name."""
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names") or [f"group{gi}.param{j}" for j in range(len(group["params"]))]
            for name, p in zip(names, group["params"]):
                st = self.state[p]
                rule = sigma0.get(name, "auto") if isinstance(sigma0, dict) else sigma0
                st["sigma0"] = torch.tensor(init_sigma0(p, rule, sigma0_floor))
                auto = group["drift"] if group["drift"] is not None else p.dim() >= 2
                st["drift"] = bool(auto and st["sigma0"] > 0)
                st["mu0"] = p.detach().clone() if prior_mean == "init" else torch.zeros_like(p)
                shape = p.shape if self.defaults["granularity"] == "parameter" else ()
                st["gamma"] = torch.ones(shape, dtype=p.dtype, device=p.device)
                st["rho"] = torch.ones(shape, dtype=p.dtype, device=p.device)
                self._names[p] = name

    def _all(self) -> list[tuple[dict, Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"]]

    def _begin_step(self, closure: Callable[[], Tensor] | None):
        """The opening of every step: evaluate the closure at θ_t and return (entries, params, copies of
        θ_t, loss, gradients, drifting entries (group, param, index)); the caller checks finiteness."""
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure (zero grads, forward, backward, "
                             "return loss on the new batch)")
        self._passes = 0
        entries = self._all()
        params = [p for _, p in entries]
        theta = [p.detach().clone() for p in params]
        loss = self._call(closure)
        grads = _grads(params)
        self.last_online_loss = float(loss) if loss is not None else float("nan")
        drifting = [(g, p, i) for i, (g, p) in enumerate(entries) if self.state[p]["drift"]]
        return entries, params, theta, loss, grads, drifting

    def _call(self, closure: Callable[[], Tensor]):
        with torch.enable_grad():
            loss = closure()
        self.closure_calls += 1
        self._passes += 1
        return loss

    def _posterior_var(self, group: dict, p: Tensor) -> Tensor:
        raise NotImplementedError

    def _gammas(self, closure, drifting, theta, g0) -> dict:
        """γ of every drifting tensor: ``fixed_gamma``, or the γ search from 1 (from the previous γ
        with ``persistent_gamma``). Returns {index: γ}."""
        if self.fixed_gamma is not None:
            return {i: torch.full_like(self.state[p]["gamma"], self.fixed_gamma) for _, p, i in drifting}
        if not drifting:
            return {}
        keys = ("gamma_lr", "gamma_steps", "gamma_samples", "gamma_estimator")
        if len({tuple(g[k] for k in keys) for g, _, _ in drifting}) > 1:
            raise ValueError(f"{', '.join(keys)} must be equal across drifting param groups")
        post_var = {i: self._posterior_var(g, p) for g, p, i in drifting}
        start = {i: (self.state[p]["gamma"] if self.persistent_gamma else torch.ones_like(self.state[p]["gamma"]))
                 for _, p, i in drifting}
        group = drifting[0][0]
        return self._estimate_gammas(closure, drifting, {i: theta[i] for _, _, i in drifting},
                                     {i: g0[i] for _, _, i in drifting}, post_var, start, group["gamma_steps"],
                                     group["gamma_lr"], group["gamma_samples"], group["gamma_estimator"])

    def _reduce(self, terms: Tensor) -> Tensor:
        return terms if self.defaults["granularity"] == "parameter" else terms.sum()

    @torch.no_grad()
    def _estimate_gammas(self, closure, drifting, theta, g0, post_var, start, steps, lr, samples, estimator):
        """Projected gradient steps on γ for every drifting tensor; parameters are restored to θ_t.

        ``drifting``: list of (group, p, index); ``post_var[i]``: posterior variance of tensor i;
        ``start[i]``: starting γ. Returns {i: γ}.
        """
        gammas = {i: start[i].clone() for _, _, i in drifting}
        for k in range(steps):
            at_theta = all(bool((gammas[i] == 1).all()) for _, _, i in drifting)
            means = {i: theta[i] if at_theta else self._mean(p, theta[i], gammas[i]) for _, p, i in drifting}
            stds = {i: drift_std(gammas[i], post_var[i], self.state[p]["sigma0"] ** 2) for _, p, i in drifting}
            if estimator == "antithetic":
                if at_theta:
                    center = g0
                else:
                    for _, p, i in drifting:
                        p.copy_(means[i])
                    self._call(closure)
                    center = {i: _grads([p])[0] for _, p, i in drifting}
                ghat = {i: torch.zeros_like(gammas[i]) for _, _, i in drifting}
                for _ in range(samples):
                    eps = {i: torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)
                           for _, p, i in drifting}
                    plus = self._perturbed_grads(closure, drifting, means, stds, eps, +1.0)
                    minus = self._perturbed_grads(closure, drifting, means, stds, eps, -1.0)
                    for _, p, i in drifting:
                        st = self.state[p]
                        terms = gamma_grad_antithetic(center[i], plus[i], minus[i], eps[i], theta[i], st["mu0"],
                                                      st["sigma0"], None, gammas[i], post_var=post_var[i],
                                                      reduce=False)
                        ghat[i] += self._reduce(terms) / samples
            else:
                ghat = {i: torch.zeros_like(gammas[i]) for _, _, i in drifting}
                for _ in range(samples):
                    eps = {i: torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)
                           for _, p, i in drifting}
                    grads = self._perturbed_grads(closure, drifting, means, stds, eps, +1.0)
                    for _, p, i in drifting:
                        st = self.state[p]
                        terms = gamma_grad_mc([grads[i]], [eps[i]], theta[i], st["mu0"], st["sigma0"], None,
                                              gammas[i], post_var=post_var[i], reduce=False)
                        ghat[i] += self._reduce(terms) / samples
            for _, p, i in drifting:
                step = torch.nan_to_num(ghat[i], nan=0.0, posinf=0.0, neginf=0.0)
                gammas[i] = (gammas[i] - lr * step).clamp(self.defaults["gamma_min"], 1.0)
        for _, p, i in drifting:
            p.copy_(theta[i])
        return gammas

    def _mean(self, p: Tensor, theta: Tensor, gamma: Tensor) -> Tensor:
        return gamma * theta + (1 - gamma) * self.state[p]["mu0"]

    def _perturbed_grads(self, closure, drifting, means, stds, eps, sign):
        for _, p, i in drifting:
            p.copy_(means[i] + sign * stds[i] * eps[i])
        self._call(closure)
        return {i: _grads([p])[0] for _, p, i in drifting}

    @torch.no_grad()
    def _skip(self, params, theta, loss):
        for p, t in zip(params, theta):
            p.copy_(t)
        self.skipped_steps += 1
        self.last_passes = self._passes
        return loss

    def _record_gammas(self, gammas: dict, drifting) -> None:
        self.last_gammas = {self._names[p]: float(gammas[i].min()) for _, p, i in drifting}


    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, extra: dict) -> None:
        pass

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["soft_reset"] = {"generator": None if self.generator is None else self.generator.get_state(),
                            "counters": [self.closure_calls, self.skipped_steps], **self._extra_state()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        extra = state_dict.get("soft_reset", {})
        # deep copy: torch keeps references to the given tensors, and σ, γ, ρ are updated in place
        super().load_state_dict(copy.deepcopy({k: v for k, v in state_dict.items() if k != "soft_reset"}))
        if extra.get("generator") is not None and self.generator is not None:
            self.generator.set_state(extra["generator"])
        self._load_extra_state(extra)
        if "counters" in extra:
            self.closure_calls, self.skipped_steps = extra["counters"]


# =============================================================================================
# SGD variant (also wraps any base optimizer)
# =============================================================================================

class SoftReset(SoftResetBase):
    """Soft Reset (Galashov et al. 2024), SGD variant, or a wrapper around any base optimizer.

    Per step (closure required; the first call is at θ_t):
      1. g0 = ∇L_{t+1}(θ_t) on the incoming batch (pass 1).
      2. For every drifting tensor l, γ_l from 1 (or its previous value with ``persistent_gamma``)
         by ``gamma_steps`` projected steps γ ← clip(γ − α_γ·ĝ, γ_min, 1) on the Jensen surrogate of
         the negative log predictive likelihood, ĝ = :func:`gamma_grad_antithetic` (passes 2, 3)
         or :func:`gamma_grad_mc`.
      3. θ̃ = γθ + (1−γ)μ0 + √(1−γ²)σ0ξ (:func:`ou_drift_`), and the gradient at θ̃ (pass 4,
         skipped when no tensor drifted, since then θ̃ = θ_t exactly).
      4. θ ← θ̃ − α·ρ(γ)·∇L(θ̃), ρ = :func:`lr_multiplier`; or, with ``base``, ``base.step()`` on
         the gradient at θ̃ with its update scaled by ρ per tensor (≡ its learning rate × ρ for SGD,
         momentum SGD, Adam and AdamW, whose updates are linear in the learning rate).

    Drifting tensors: by default those with dim ≥ 2 (weights) and σ0 > 0; a param group may set
    ``drift=True/False``. A non-finite loss or gradient skips the step and leaves parameters and
    state untouched (``skipped_steps`` counts them). Diagnostics: ``last_gammas`` (name → γ, the
    minimum over elements with ``granularity="parameter"``), ``last_online_loss``, ``last_passes``.

    Args:
        params: parameters or named parameters (names key ``last_gammas``); None with ``base``.
        lr: α, the SGD learning rate (ignored with ``base``).
        base: optional optimizer over the same parameters (e.g. Adam) that makes the update.
        s: posterior/prior variance ratio in (0, 1].
        gamma_lr: α_γ ≥ 0 (0 keeps γ = 1: plain SGD).
        gamma_steps: K_γ ≥ 1.  gamma_estimator: "antithetic" (default) or "mc".
        gamma_samples: antithetic pairs or MC samples per γ step (M_γ ≥ 1).
        granularity: "tensor" (one γ per tensor, default) or "parameter".
        prior_mean: "init" (μ0 = θ0, stored) or "zero".
        ou_noise: add the OU noise √(1−γ²)σ0ξ to θ̃.
        lr_boost: multiply the step by ρ(γ).  rho_max: cap on ρ (≥ 1).
        gamma_min: lower clip of γ in [0, 1).
        sigma0: "auto" | "pytorch_default" | "he_normal" | float | {name: rule} (see
            :func:`~tenfold.optim.soft_reset_drift.init_sigma0`).
        sigma0_floor: lower bound on σ0 (a tensor with σ0 = 0, e.g. a constant init, never drifts
            unless the floor lifts it).
        persistent_gamma: start each step's γ search from the previous γ instead of 1 (ablation).
        fixed_gamma: use this γ for every drifting tensor instead of estimating it (no γ passes).
        moment_damping: with ``base``, multiply momentum/first-moment buffers by γ when drifting.
        generator: optional torch.Generator for ε and ξ.
    """

    def __init__(self, params=None, *, lr: float = 0.05, base: Optimizer | None = None, s: float = 0.1,
                 gamma_lr: float = 0.05, gamma_steps: int = 1, gamma_estimator: str = "antithetic",
                 gamma_samples: int = 1, granularity: str = "tensor", prior_mean: str = "init",
                 ou_noise: bool = True, lr_boost: bool = True, rho_max: float = 10.0, gamma_min: float = 0.0,
                 sigma0="auto", sigma0_floor: float = 0.0, persistent_gamma: bool = False,
                 fixed_gamma: float | None = None, moment_damping: bool = False,
                 generator: torch.Generator | None = None):
        check_range("rho_max", rho_max, 1.0)
        if base is not None and not isinstance(base, Optimizer):
            raise ValueError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        if base is not None and params is None:
            params = [{k: v for k, v in g.items() if k in ("params", "param_names")} for g in base.param_groups]
            params = [{"params": list(zip(g["param_names"], g["params"])) if "param_names" in g else g["params"]}
                      for g in params]
        if params is None:
            raise ValueError("params must be given (or a base optimizer whose parameters are used)")
        defaults = dict(lr=lr, s=s, gamma_lr=gamma_lr, gamma_steps=gamma_steps, gamma_estimator=gamma_estimator,
                        gamma_samples=gamma_samples, granularity=granularity, ou_noise=ou_noise,
                        lr_boost=lr_boost, rho_max=rho_max, gamma_min=gamma_min)
        super().__init__(params, defaults, prior_mean=prior_mean, sigma0=sigma0, sigma0_floor=sigma0_floor,
                         fixed_gamma=fixed_gamma, generator=generator, persistent_gamma=persistent_gamma)
        self.base, self.moment_damping = base, moment_damping

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One Soft Reset step on the batch the closure evaluates; returns the loss at θ_t."""
        entries, params, theta, loss, g0, drifting = self._begin_step(closure)
        if not _is_finite(loss, g0):
            return self._skip(params, theta, loss)
        gammas = self._gammas(closure, drifting, theta, g0)
        drifted = self._drift(drifting, gammas)
        grads = g0
        if drifted:
            self._call(closure)
            grads = _grads(params)
            if not _is_finite(None, grads):
                return self._skip(params, theta, loss)
        self._commit(drifting, gammas)
        self._update(closure, entries, grads, theta, drifting, gammas)
        self.last_passes = self._passes
        return loss

    def _posterior_var(self, group: dict, p: Tensor) -> Tensor:
        return group["s"] * self.state[p]["sigma0"] ** 2

    def _drift(self, drifting, gammas) -> bool:
        drifted = False
        for g, p, i in drifting:
            gamma = gammas[i]
            if bool((gamma < 1).any()):
                st = self.state[p]
                mu0 = st["mu0"] if self.prior_mean == "init" else None
                ou_drift_(p, mu0, st["sigma0"], gamma, noise=g["ou_noise"], generator=self.generator)
                drifted = True
        return drifted

    def _commit(self, drifting, gammas) -> None:
        for g, p, i in drifting:
            st = self.state[p]
            st["gamma"].copy_(gammas[i])
            st["rho"].copy_(lr_multiplier(gammas[i], g["s"], g["rho_max"]) if g["lr_boost"] else 1.0)
        self._record_gammas(gammas, drifting)

    def _update(self, closure, entries, grads, theta, drifting, gammas) -> None:
        if self.base is None:
            for (g, p), grad in zip(entries, grads):
                soft_reset_sgd_(p, grad, g["lr"], self.state[p]["rho"])
            return
        self._base_step(entries, grads, drifting, gammas)

    def _base_step(self, entries, grads, drifting, gammas) -> None:
        if self.moment_damping:
            for _, p, i in drifting:
                for key in ("exp_avg", "momentum_buffer"):
                    buf = self.base.state.get(p, {}).get(key)
                    if buf is not None:
                        buf.mul_(gammas[i])
        for (_, p), grad in zip(entries, grads):
            p.grad = grad
        start = {p: p.detach().clone() for _, p in entries if bool((self.state[p]["rho"] != 1).any())}
        with torch.enable_grad():
            self.base.step()
        for p, before in start.items():
            p.copy_(before + self.state[p]["rho"] * (p - before))

    def _extra_state(self) -> dict:
        return {"base": None if self.base is None else self.base.state_dict()}

    def _load_extra_state(self, extra: dict) -> None:
        if extra.get("base") is not None and self.base is not None:
            self.base.load_state_dict(extra["base"])


# =============================================================================================
# proximal variant
# =============================================================================================

class SoftResetProximal(SoftReset):
    """Soft Reset Proximal (Galashov et al. 2024): K_θ gradient steps, from θ̃, on

        L_{t+1}(θ) + Σ_i (θ_i − θ̃_i)² / (2λ·v_i(γ)),    v(γ) = (γ²s + 1 − γ²)·σ0² (drifted prior variance)

    with the per-tensor step size c·λ·v (a preconditioned step, c = ``prox_lr_scale``), which makes
    each step ``θ ← (1−c)θ + c(θ̃ − λ·v·∇L(θ))``. With K_θ = 1 and c = 1 this is the SGD variant with
    α = λ·s·σ0² (the linearised proximal solution). ``prox_temperature=None`` sets λ per tensor so
    that λ·s·σ0² = ``lr`` (so K_θ = 1 equals :class:`SoftReset` with the same ``lr``). Tensors that
    do not drift take the same fixed-point steps with step ``lr`` and anchor θ_t. ``lr_boost=False``
    keeps v = s·σ0². Costs K_θ − 1 passes more than :class:`SoftReset`. No ``base`` optimizer.
    """

    def __init__(self, params, *, prox_steps: int = 2, prox_temperature: float | None = None,
                 prox_lr_scale: float = 1.0, **kwargs):
        check_int("prox_steps", prox_steps, 1)
        if prox_temperature is not None:
            check_range("prox_temperature", prox_temperature, 0.0, low_open=True)
        check_range("prox_lr_scale", prox_lr_scale, 0.0, 1.0, low_open=True)
        if kwargs.get("base") is not None:
            raise ValueError("SoftResetProximal does not take a base optimizer")
        super().__init__(params, **kwargs)
        self.prox_steps, self.prox_temperature, self.prox_lr_scale = prox_steps, prox_temperature, prox_lr_scale

    def _step_size(self, g: dict, p: Tensor):
        st = self.state[p]
        if not st["drift"] or self.prox_temperature is None:
            return g["lr"] * st["rho"]
        return self.prox_temperature * g["s"] * st["sigma0"] ** 2 * st["rho"]

    def _update(self, closure, entries, grads, theta, drifting, gammas) -> None:
        params = [p for _, p in entries]
        anchor = [p.detach().clone() for p in params]  # θ̃ (θ_t for tensors that did not drift)
        c = self.prox_lr_scale
        for k in range(self.prox_steps):
            if k > 0:
                self._call(closure)
                grads = _grads(params)
                if not _is_finite(None, grads):
                    break  # keep the last finite iterate
            for (g, p), a, grad in zip(entries, anchor, grads):
                target = a - self._step_size(g, p) * grad
                if c == 1.0:
                    p.copy_(target)
                else:
                    p.mul_(1 - c).add_(target, alpha=c)


# =============================================================================================
# Bayesian variant
# =============================================================================================

class BayesianSoftResetProximal(SoftResetBase):
    """Bayesian Soft Reset Proximal (Galashov et al. 2024): a mean-field Gaussian posterior
    q = N(μ, diag σ²) per drifting tensor (the parameters hold μ; σ lives in the state).

    Per step: pass 1 at μ (online loss); γ by ``gamma_steps`` projected steps with ``gamma_samples``
    antithetic pairs on E_q(γ)[L], q(γ) = N(γμ + (1−γ)μ0, γ²σ² + (1−γ²)σ0²) (the drifted prior);
    then (μ, σ) start at the drifted prior (m_p, √v_p) and take K_θ steps on the tempered ELBO

        E_q[L_{t+1}(θ)] + λ·KL(q ‖ N(m_p, v_p))

    with ``theta_samples`` antithetic pairs of reparameterised samples θ = μ ± σε (∂/∂μ = g,
    ∂/∂σ = g·ε; 2 passes per pair; 0 evaluates L at μ), preconditioned like the proximal variant:
    μ ← (1−c)μ + c(m_p − (v_p/λ)·ḡ), and on log σ, log σ ← log σ − c_σ(σ·mean(g·ε)/λ + σ²/v_p − 1)
    (the KL part alone has its fixed point σ² = v_p), with σ kept in [10⁻³σ0, σ0].
    With σ held fixed (``learn_sigma=False``), ``theta_samples=0`` and a fixed γ, μ follows exactly
    :class:`SoftResetProximal` with ``prox_temperature = 1/λ``. ``kl_weight=None`` sets λ per tensor
    to s·σ0²/lr (then the first μ step is the SGD variant's with learning rate ``lr``). Tensors that
    do not drift (biases) are deterministic and take fixed-point steps with ``lr``.
    ``sample_()`` writes a posterior sample into the parameters, ``use_mean_()`` restores μ (e.g. to
    evaluate the posterior predictive by averaging over samples).

    Args:
        params: parameters or named parameters (names key ``last_gammas``).
        lr: step size of the tensors that do not drift, and λ's default (see ``kl_weight``).
        s: initial posterior/prior variance ratio in (0, 1] (σ starts at √s·σ0).
        kl_weight: λ > 0 for every tensor; None: per tensor s·σ0²/lr.
        sigma_init: initial σ of every drifting tensor instead of √s·σ0.
        gamma_lr, gamma_steps, gamma_samples, gamma_min, fixed_gamma: the γ search, as in :class:`SoftReset`.
        prox_steps: K_θ ≥ 1 ELBO steps per batch.  theta_samples: antithetic θ pairs per step (0: L at μ).
        prox_lr_scale: c in (0, 1], the μ step.  sigma_lr_scale: c_σ in [0, 1], the log σ step.
        learn_sigma: update σ (False holds it fixed: the equivalence with the proximal variant).
        prior_mean, sigma0, sigma0_floor, generator: as in :class:`SoftReset`.
    """

    def __init__(self, params, *, lr: float = 0.05, s: float = 0.1, kl_weight: float | None = None,
                 sigma_init: float | None = None, gamma_lr: float = 0.05, gamma_steps: int = 1,
                 gamma_samples: int = 1, gamma_min: float = 0.0, prox_steps: int = 1, theta_samples: int = 1,
                 prox_lr_scale: float = 1.0, sigma_lr_scale: float = 0.5, learn_sigma: bool = True,
                 prior_mean: str = "init", sigma0="auto", sigma0_floor: float = 0.0,
                 fixed_gamma: float | None = None, generator: torch.Generator | None = None):
        if kl_weight is not None:
            check_range("kl_weight", kl_weight, 0.0, low_open=True)
        if sigma_init is not None:
            check_range("sigma_init", sigma_init, 0.0, low_open=True)
        check_int("prox_steps", prox_steps, 1)
        check_int("theta_samples", theta_samples, 0)
        check_range("prox_lr_scale", prox_lr_scale, 0.0, 1.0, low_open=True)
        check_range("sigma_lr_scale", sigma_lr_scale, 0.0, 1.0)
        defaults = dict(lr=lr, s=s, gamma_lr=gamma_lr, gamma_steps=gamma_steps, gamma_samples=gamma_samples,
                        gamma_estimator="antithetic", gamma_min=gamma_min, granularity="tensor")
        super().__init__(params, defaults, prior_mean=prior_mean, sigma0=sigma0, sigma0_floor=sigma0_floor,
                         fixed_gamma=fixed_gamma, generator=generator)
        self.kl_weight, self.prox_steps, self.theta_samples = kl_weight, prox_steps, theta_samples
        self.prox_lr_scale, self.sigma_lr_scale, self.learn_sigma = prox_lr_scale, sigma_lr_scale, learn_sigma
        for g, p in self._all():
            st = self.state[p]
            sigma = sigma_init if sigma_init is not None else math.sqrt(g["s"]) * float(st["sigma0"])
            st["sigma"] = torch.full_like(p, sigma if st["drift"] else 0.0)
        self._saved_mean: list[Tensor] | None = None

    def _lambda(self, g: dict, p: Tensor) -> Tensor:
        st = self.state[p]
        if self.kl_weight is not None:
            return torch.tensor(self.kl_weight)
        return g["s"] * st["sigma0"] ** 2 / g["lr"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One Bayesian Soft Reset step on the closure's batch; returns the loss at μ_t."""
        entries, params, theta, loss, g0, drifting = self._begin_step(closure)
        if not _is_finite(loss, g0):
            return self._skip(params, theta, loss)
        gammas = self._gammas(closure, drifting, theta, g0)
        priors = {}
        for g, p, i in drifting:
            st = self.state[p]
            priors[i] = drifted_prior(theta[i], st["sigma"] ** 2, st["mu0"], st["sigma0"] ** 2, gammas[i])
            p.copy_(priors[i][0])
            st["gamma"].copy_(gammas[i])
        saved_sigma = {i: self.state[p]["sigma"].clone() for _, p, i in drifting}
        if self.learn_sigma:
            for _, p, i in drifting:
                self.state[p]["sigma"].copy_(priors[i][1].sqrt())
        if not self._elbo_steps(closure, entries, theta, drifting, priors):
            for _, p, i in drifting:
                self.state[p]["sigma"].copy_(saved_sigma[i])
            return self._skip(params, theta, loss)
        self._record_gammas(gammas, drifting)
        self.last_passes = self._passes
        return loss

    def _posterior_var(self, group: dict, p: Tensor) -> Tensor:
        return self.state[p]["sigma"] ** 2

    def _elbo_steps(self, closure, entries, theta, drifting, priors) -> bool:
        """K_θ preconditioned steps on the tempered ELBO; False if a gradient was non-finite."""
        params = [p for _, p in entries]
        drift_index = {i for _, _, i in drifting}
        c, c_sigma = self.prox_lr_scale, self.sigma_lr_scale
        for _ in range(self.prox_steps):
            mean_g, mean_ge = self._sample_grads(closure, params, drift_index)
            if not _is_finite(None, mean_g + mean_ge):
                return False
            for i, (g, p) in enumerate(entries):
                if i not in drift_index:
                    p.mul_(1 - c).add_(theta[i] - g["lr"] * mean_g[i], alpha=c)
                    continue
                st, (m_p, v_p), lam = self.state[p], priors[i], self._lambda(g, p)
                sigma = st["sigma"]
                kl_mu, kl_sigma = diag_gaussian_kl_grads(p, sigma, m_p, v_p)
                # μ ← μ − c·(v_p/λ)·(ḡ + λ·∂KL/∂μ) = (1−c)μ + c(m_p − (v_p/λ)ḡ)
                p.sub_((v_p / lam) * (mean_g[i] + lam * kl_mu), alpha=c)
                if self.learn_sigma and self.theta_samples > 0:
                    # log σ ← log σ − c_σ·(σ/λ)·(mean(g·ε) + λ·∂KL/∂σ)
                    step = c_sigma * sigma * (mean_ge[i] + lam * kl_sigma) / lam
                    sigma.mul_(torch.exp(-step.clamp(-1.0, 1.0)))
                    sigma.clamp_(1e-3 * st["sigma0"], st["sigma0"])  # never wider than the prior
        return True

    def _sample_grads(self, closure, params, drift_index):
        """Mean gradient and mean gradient·ε over ``theta_samples`` antithetic pairs θ = μ ± σε
        (L at μ itself if 0): ḡ = ½(g₊ + g₋), mean(g·ε) = ½⟨g₊ − g₋⟩·ε, which cancels the zero-mean
        first-order term ∇L(μ)·ε and leaves the curvature term σ·h·ε² (the same trick as for γ)."""
        mean = [p.detach().clone() for p in params]
        n = max(self.theta_samples, 1)
        mean_g = [torch.zeros_like(p) for p in params]
        mean_ge = [torch.zeros_like(p) for p in params]
        for _ in range(n):
            if self.theta_samples == 0:
                self._call(closure)
                for i, grad in enumerate(_grads(params)):
                    mean_g[i] += grad / n
                continue
            eps = {i: torch.randn(params[i].shape, generator=self.generator, dtype=params[i].dtype,
                                  device=params[i].device) for i in drift_index}
            pair = []
            for sign in (1.0, -1.0):
                for i in drift_index:
                    params[i].copy_(mean[i] + sign * self.state[params[i]]["sigma"] * eps[i])
                self._call(closure)
                pair.append(_grads(params))
            for i, (g_plus, g_minus) in enumerate(zip(*pair)):
                mean_g[i] += 0.5 * (g_plus + g_minus) / n
                if i in eps:
                    mean_ge[i] += 0.5 * (g_plus - g_minus) * eps[i] / n
            for i in drift_index:
                params[i].copy_(mean[i])
        return mean_g, mean_ge

    @torch.no_grad()
    def sample_(self, generator: torch.Generator | None = None) -> None:
        """Write θ ~ q into the drifting parameters (``use_mean_()`` restores μ)."""
        if self._saved_mean is None:
            self._saved_mean = [p.detach().clone() for _, p in self._all()]
        for (_, p), mean in zip(self._all(), self._saved_mean):
            eps = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            p.copy_(mean + self.state[p]["sigma"] * eps)

    @torch.no_grad()
    def use_mean_(self) -> None:
        """Restore the posterior mean μ after :meth:`sample_` (no-op otherwise)."""
        if self._saved_mean is not None:
            for (_, p), mean in zip(self._all(), self._saved_mean):
                p.copy_(mean)
            self._saved_mean = None
