"""The drift model of Soft Reset, as pure tensor functions (Galashov et al., "Non-Stationary Learning
of Neural Networks with Automatic Soft Parameter Reset", NeurIPS 2024, arXiv 2411.04034).

Between consecutive batches the parameters follow the Ornstein-Uhlenbeck drift toward the
initialisation distribution N(μ0, σ0²)

    p(θ_{t+1} | θ_t, γ_t) = N(γ_t θ_t + (1 − γ_t) μ0,  (1 − γ_t²) σ0² I),        γ_t ∈ [0, 1].

This module holds the drift step, the drifted prior, the learning-rate increase ρ(γ), the
estimators of dL/dγ, the Gaussian KL of the Bayesian variant and the σ0 rules; the optimizers that
use them are in :mod:`tenfold.optim.soft_reset` (see docs/methods/soft-reset.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ou_drift_", "drifted_prior", "lr_multiplier", "drift_std", "drift_std_grad",
    "gamma_grad_antithetic", "gamma_grad_mc", "diag_gaussian_kl", "diag_gaussian_kl_grads",
    "soft_reset_sgd_", "init_sigma0", "SIGMA_RULES",
]

SIGMA_RULES = ("auto", "pytorch_default", "he_normal")


def ou_drift_(p: Tensor, mu0: Tensor | None, sigma0: float | Tensor, gamma: float | Tensor, *,
              noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """One OU drift step in place: ``θ ← γθ + (1−γ)μ0 + √(1−γ²)·σ0·ξ``, ξ ~ N(0, I).

    ``mu0=None`` means μ0 = 0; ``gamma`` is a scalar or a tensor broadcastable to ``p``.
    Returns ``p``.
    """
    gamma = torch.as_tensor(gamma, dtype=p.dtype, device=p.device)
    p.mul_(gamma)
    if mu0 is not None:
        p.add_((1 - gamma) * mu0)
    if noise:
        xi = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
        p.add_(xi * (torch.sqrt((1 - gamma * gamma).clamp_min(0)) * sigma0))
    return p


def drifted_prior(mu: Tensor, var: Tensor | float, mu0: Tensor | float, var0: Tensor | float,
                  gamma: Tensor | float) -> tuple[Tensor, Tensor]:
    """Predictive prior after drift of a Gaussian N(μ, var) (docs/methods/soft-reset.md):
    ``(γμ + (1−γ)μ0,  γ²·var + (1−γ²)·var0)``."""
    gamma = torch.as_tensor(gamma, dtype=mu.dtype, device=mu.device)
    mean = gamma * mu + (1 - gamma) * mu0
    variance = gamma * gamma * var + (1 - gamma * gamma) * var0
    return mean, torch.as_tensor(variance, dtype=mu.dtype, device=mu.device)


def lr_multiplier(gamma: Tensor | float, s: float, rho_max: float = 10.0) -> Tensor:
    """Learning-rate increase ``ρ(γ) = min(γ² + (1−γ²)/s, ρ_max)``: drifted over undrifted prior
    variance when the posterior variance is s·σ0². ρ(1) = 1, ρ(0) = 1/s."""
    gamma = torch.as_tensor(gamma)
    return torch.clamp(gamma * gamma + (1 - gamma * gamma) / s, max=rho_max)


def drift_std(gamma: Tensor | float, post_var: Tensor | float, var0: Tensor | float) -> Tensor:
    """Std of the drifted predictive prior, ``√(γ²·post_var + (1−γ²)·var0)``."""
    gamma = torch.as_tensor(gamma)
    return torch.sqrt(gamma * gamma * post_var + (1 - gamma * gamma) * var0)


def drift_std_grad(gamma: Tensor | float, post_var: Tensor | float, var0: Tensor | float) -> Tensor:
    """``d std/dγ = γ(post_var − var0)/std(γ)``; with post_var = s·var0 and γ = 1: ``−σ0(1−s)/√s``."""
    gamma = torch.as_tensor(gamma)
    return gamma * (post_var - var0) / drift_std(gamma, post_var, var0)


def gamma_grad_antithetic(g0: Tensor, g_plus: Tensor, g_minus: Tensor, eps: Tensor, theta: Tensor,
                          mu0: Tensor | float, sigma0: float | Tensor, s: float | None,
                          gamma: Tensor | float = 1.0, *, post_var: Tensor | float | None = None,
                          reduce: bool = True) -> Tensor:
    """Antithetic estimate of ``d/dγ E_ε[L(θ(γ, ε))]`` (docs/methods/soft-reset.md):

        ĝ = ⟨g0, θ − μ0⟩ + ½⟨(g+ − g−)·std'(γ), ε⟩

    where g0 = ∇L(m(γ)), g± = ∇L(m(γ) ± std(γ)ε), m(γ) = γθ + (1−γ)μ0, and std'(γ) =
    :func:`drift_std_grad` with posterior variance ``post_var`` (default s·σ0², the SGD variant).
    The pair cancels the first-order noise and leaves the curvature term, so at γ = 1 for a
    quadratic L with Hessian H the expectation is ⟨∇L(θ), θ − μ0⟩ − (1−s)σ0²·tr H.
    ``reduce=True`` sums over the tensor (one γ per tensor); ``False`` returns the per-element terms.
    """
    var0 = sigma0 * sigma0
    post_var = s * var0 if post_var is None else post_var
    dstd = drift_std_grad(gamma, post_var, var0)
    terms = g0 * (theta - mu0) + 0.5 * (g_plus - g_minus) * dstd * eps
    return terms.sum() if reduce else terms


def gamma_grad_mc(grads: list[Tensor], eps: list[Tensor], theta: Tensor, mu0: Tensor | float,
                  sigma0: float | Tensor, s: float | None, gamma: Tensor | float = 1.0, *,
                  post_var: Tensor | float | None = None, reduce: bool = True) -> Tensor:
    """Plain reparameterised Monte-Carlo estimate, ``mean_k ⟨g_k, (θ − μ0) + std'(γ)·ε_k⟩`` with
    g_k = ∇L(m(γ) + std(γ)·ε_k) (posterior variance ``post_var``, default s·σ0²). Unbiased but
    high-variance (one sample swamps the signal)."""
    var0 = sigma0 * sigma0
    dstd = drift_std_grad(gamma, s * var0 if post_var is None else post_var, var0)
    terms = sum(g * ((theta - mu0) + dstd * e) for g, e in zip(grads, eps)) / len(grads)
    return terms.sum() if reduce else terms


def diag_gaussian_kl(mu: Tensor, var: Tensor | float, mu_p: Tensor | float, var_p: Tensor | float) -> Tensor:
    """``KL(N(μ, diag var) ‖ N(μ_p, diag var_p)) = ½Σ[var/var_p + (μ−μ_p)²/var_p − 1 + log(var_p/var)]``."""
    var, var_p = torch.as_tensor(var, dtype=mu.dtype), torch.as_tensor(var_p, dtype=mu.dtype)
    terms = var / var_p + (mu - mu_p) ** 2 / var_p - 1 + torch.log(var_p / var)
    return 0.5 * torch.broadcast_to(terms, mu.shape).sum()


def diag_gaussian_kl_grads(mu: Tensor, sigma: Tensor, mu_p: Tensor | float,
                           var_p: Tensor | float) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`diag_gaussian_kl` in (μ, σ): ``((μ−μ_p)/var_p,  σ/var_p − 1/σ)``."""
    return (mu - mu_p) / var_p, sigma / var_p - 1 / sigma


@torch.no_grad()
def soft_reset_sgd_(p: Tensor, grad: Tensor, lr: float, rho: Tensor | float) -> Tensor:
    """The SGD-variant update in place, ``θ ← θ̃ − α·ρ·g`` (ρ = 1 is exactly ``torch.optim.SGD``)."""
    if isinstance(rho, Tensor) and rho.numel() > 1:
        return p.add_(grad * rho, alpha=-lr)
    return p.add_(grad, alpha=-lr * float(rho))


def init_sigma0(p: Tensor, rule: str | float = "auto", floor: float = 0.0) -> float:
    """Std σ0 of the initialisation distribution of tensor ``p`` (at its initial value).

    ``"auto"``: the empirical std of the tensor's values (consistent for any i.i.d. initialiser;
    0 for constant tensors such as LayerNorm weights or zero biases). ``"pytorch_default"``:
    nn.Linear/Conv default kaiming_uniform(a=√5) = U(±1/√fan_in), σ0 = √(1/(3·fan_in)).
    ``"he_normal"``: σ0 = √(2/fan_in). Fan-in rules need dim ≥ 2 (1-D tensors fall back to
    ``"auto"``). A float is used as is. The result is at least ``floor``.
    """
    if isinstance(rule, (int, float)):
        value = float(rule)
    elif rule == "auto" or p.dim() < 2:
        value = float(p.detach().float().std()) if p.numel() > 1 else 0.0
    else:
        fan_in = p[0].numel()
        value = math.sqrt(1.0 / (3 * fan_in)) if rule == "pytorch_default" else math.sqrt(2.0 / fan_in)
    return max(value, floor)
