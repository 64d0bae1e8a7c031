"""Soft Reset (Galashov et al. 2024): drift model and γ estimator (tenfold.optim.soft_reset_drift), the three
optimizers (tenfold.optim.soft_reset)."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tenfold.optim.baselines import ShrinkPerturb
from tenfold.optim.soft_reset import BayesianSoftResetProximal, SoftReset, SoftResetProximal
from tenfold.optim.soft_reset_drift import (
    diag_gaussian_kl, diag_gaussian_kl_grads, drift_std, drifted_prior, gamma_grad_antithetic, gamma_grad_mc,
    init_sigma0, lr_multiplier, ou_drift_,
)
from tenfold.tasks.streams import RandomLabelStream


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed=0, hidden=16, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, 3, bias=bias))


def _batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _closure(model, opt, x, y, calls=None, nan_on=None):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if calls is not None:
            calls.append(1)
            if nan_on is not None and len(calls) == nan_on:
                loss = loss * float("nan")
        loss.backward()
        return loss
    return closure


# ------------------------------------------------------------------------------ drift model
def test_ou_drift_stationary():
    g = torch.Generator().manual_seed(0)
    mu0, sigma0 = 0.5, 0.3
    theta = mu0 + sigma0 * torch.randn(400_000, generator=g)
    ou_drift_(theta, torch.full_like(theta, mu0), sigma0, 0.6, generator=g)
    assert abs(theta.mean().item() - mu0) < 0.003
    assert abs(theta.std().item() - sigma0) < 0.003


def test_ou_drift_one_step_mean_and_variance():
    g = torch.Generator().manual_seed(1)
    theta0, mu0, sigma0, gamma = 2.0, torch.full((300_000,), -1.0), 0.5, 0.8
    theta = torch.full((300_000,), theta0)
    ou_drift_(theta, mu0, sigma0, gamma, generator=g)
    assert abs(theta.mean().item() - (gamma * theta0 + (1 - gamma) * -1.0)) < 0.003
    assert abs(theta.var().item() - (1 - gamma ** 2) * sigma0 ** 2) < 0.002


def test_ou_drift_semigroup():
    theta, mu0 = torch.randn(1000), torch.randn(1000)
    two = ou_drift_(ou_drift_(theta.clone(), mu0, 1.0, 0.9, noise=False), mu0, 1.0, 0.7, noise=False)
    one = ou_drift_(theta.clone(), mu0, 1.0, 0.9 * 0.7, noise=False)
    torch.testing.assert_close(two, one)
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(300_000)
    ou_drift_(ou_drift_(x, None, 0.4, 0.9, generator=g), None, 0.4, 0.7, generator=g)
    assert abs(x.var().item() - (1 - (0.9 * 0.7) ** 2) * 0.16) < 0.002


def test_full_reset_and_gamma_one():
    theta, mu0 = torch.randn(200_000), torch.randn(200_000)
    torch.testing.assert_close(ou_drift_(theta.clone(), mu0, 0.5, 0.0, noise=False), mu0, rtol=0, atol=0)
    x = ou_drift_(theta.clone(), mu0, 0.5, 0.0, generator=torch.Generator().manual_seed(3))
    assert abs((x - mu0).std().item() - 0.5) < 0.005
    assert torch.equal(ou_drift_(theta.clone(), mu0, 0.5, 1.0), theta)  # γ = 1: no drift, no noise


def test_drifted_prior():
    mean, var = drifted_prior(torch.tensor([1.0]), 0.2, torch.tensor([0.0]), 1.0, 0.5)
    torch.testing.assert_close(mean, torch.tensor([0.5]))
    torch.testing.assert_close(var, torch.tensor(0.25 * 0.2 + 0.75))


def test_lr_multiplier():
    s = 0.1
    assert lr_multiplier(1.0, s).item() == 1.0
    assert lr_multiplier(0.0, s, rho_max=100.0).item() == pytest.approx(1 / s)
    assert lr_multiplier(0.0, s, rho_max=10.0).item() == pytest.approx(10.0)
    values = lr_multiplier(torch.linspace(0, 1, 50), s, rho_max=100.0)
    assert bool((values[1:] <= values[:-1]).all())
    assert lr_multiplier(0.0, 0.5, rho_max=1.5).item() == pytest.approx(1.5)


# ------------------------------------------------------------------------------ γ estimator
def _quadratic(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a_mat = torch.randn(d, d, generator=g)
    h = a_mat @ a_mat.T / d + 0.5 * torch.eye(d)
    return h, torch.randn(d, generator=g), torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g)


def _expected_loss(gamma, h, a, theta, mu0, sigma0, s):
    m = gamma * theta + (1 - gamma) * mu0
    v = (gamma ** 2 * s + 1 - gamma ** 2) * sigma0 ** 2
    return 0.5 * (m - a) @ h @ (m - a) + 0.5 * torch.trace(h) * v


@pytest.mark.parametrize("gamma", [1.0, 0.7])
def test_gamma_grad_antithetic_matches_analytic_derivative(gamma):
    h, a, theta, mu0 = _quadratic()
    sigma0, s, n = 0.8, 0.1, 40_000
    gam = torch.tensor(gamma, requires_grad=True)
    (exact,) = torch.autograd.grad(_expected_loss(gam, h, a, theta, mu0, sigma0, s), gam)
    m = gamma * theta + (1 - gamma) * mu0
    std = drift_std(gamma, s * sigma0 ** 2, sigma0 ** 2)
    eps = torch.randn(n, 6, generator=torch.Generator().manual_seed(4))  # (n, d)
    g0 = (m - a) @ h
    g_plus, g_minus = (m + std * eps - a) @ h, (m - std * eps - a) @ h  # (n, d)
    est = gamma_grad_antithetic(g0, g_plus, g_minus, eps, theta, mu0, sigma0, s, gamma, reduce=False).sum(-1)
    assert abs(est.mean().item() - exact.item()) < 4 * est.std().item() / math.sqrt(n) + 1e-5
    mc = gamma_grad_mc([(m + std * eps - a) @ h], [eps], theta, mu0, sigma0, s, gamma, reduce=False).sum(-1)
    assert abs(mc.mean().item() - exact.item()) < 4 * mc.std().item() / math.sqrt(n) + 1e-5
    assert est.std() < mc.std()  # the antithetic pair reduces variance
    if gamma == 1.0:  # second-order formula at γ = 1, exact in expectation for a quadratic
        formula = (g0 @ (theta - mu0) - (1 - s) * sigma0 ** 2 * torch.trace(h)).item()
        assert exact.item() == pytest.approx(formula, rel=1e-5)


def _quad_model(theta, target):
    """A one-tensor model whose loss is ½‖W − target‖² (Hessian I)."""
    model = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(theta)

    def make_closure(opt, calls=None):
        def closure():
            opt.zero_grad()
            loss = 0.5 * ((model.weight - target) ** 2).sum()
            loss.backward()
            if calls is not None:
                calls.append(1)
            return loss
        return closure
    return model, make_closure


def test_change_detector():
    mu0 = torch.zeros(4, 4)
    theta = 2.0 + torch.zeros(4, 4)
    # the new batch's optimum is where θ already is: γ stays 1
    model, make = _quad_model(theta, theta)
    opt = SoftReset(model.parameters(), sigma0=0.5, prior_mean="zero", generator=torch.Generator().manual_seed(0))
    opt.step(make(opt))
    assert opt.last_gammas["group0.param0"] == 1.0
    # the new batch's optimum is μ0 and θ is far from it: γ < 1 and the weights move toward μ0
    model, make = _quad_model(theta, mu0)
    calls = []
    opt = SoftReset(model.parameters(), sigma0=0.5, prior_mean="zero", ou_noise=False,
                    generator=torch.Generator().manual_seed(0))
    opt.step(make(opt, calls))
    assert opt.last_gammas["group0.param0"] < 0.5
    assert len(calls) == 4  # g0, the antithetic pair, the gradient at θ̃
    assert model.weight.abs().max() < 1.0


def test_change_detector_mc_estimator_and_parameter_granularity():
    mu0, theta = torch.zeros(4, 4), 2.0 + torch.zeros(4, 4)
    for kwargs in (dict(gamma_estimator="mc", gamma_samples=4), dict(granularity="parameter")):
        model, make = _quad_model(theta, mu0)
        opt = SoftReset(model.parameters(), sigma0=0.5, prior_mean="zero", ou_noise=False,
                        generator=torch.Generator().manual_seed(0), **kwargs)
        opt.step(make(opt))
        assert opt.last_gammas["group0.param0"] < 0.9
        assert opt.state[model.weight]["gamma"].shape == ((4, 4) if "granularity" in kwargs else ())


# ------------------------------------------------------------------------------ SoftReset optimizer
def test_gamma_one_is_sgd_bit_for_bit():
    a, b = _mlp(), _mlp()
    sgd = torch.optim.SGD(a.parameters(), lr=0.05)
    soft = SoftReset(b.parameters(), lr=0.05, gamma_lr=0.0)
    for k in range(5):
        x, y = _batch(k)
        _closure(a, sgd, x, y)()
        sgd.step()
        soft.step(_closure(b, soft, x, y))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert all(v == 1.0 for v in soft.last_gammas.values())


def test_shrink_perturb_equivalence():
    gamma = 0.9
    a, b = _mlp(bias=False), _mlp(bias=False)
    sigmas = [init_sigma0(p) for p in a.parameters()]
    soft = SoftReset(a.parameters(), lr=0.05, prior_mean="zero", fixed_gamma=gamma, lr_boost=False,
                     generator=torch.Generator().manual_seed(7))
    sgd = torch.optim.SGD(b.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(7)
    hooks = [ShrinkPerturb([p], shrink=gamma, noise_scale=math.sqrt(1 - gamma ** 2) * sig, generator=gen)
             for p, sig in zip(b.parameters(), sigmas)]
    for k in range(3):
        x, y = _batch(k)
        soft.step(_closure(a, soft, x, y))
        for hook in hooks:
            hook.apply_()
        _closure(b, sgd, x, y)()
        sgd.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_graph_hygiene_and_non_drifting_params_follow_sgd():
    model = _mlp()
    x, y = _batch()
    bias_before = model[0].bias.detach().clone()
    opt = SoftReset(model.named_parameters(), lr=0.05, fixed_gamma=0.5,
                    generator=torch.Generator().manual_seed(0))
    grads_at_drift = {}

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads_at_drift["bias"] = model[0].bias.grad.clone()
        return loss
    opt.step(closure)
    for p in model.parameters():
        assert p.is_leaf and p.grad_fn is None and p.requires_grad
    assert set(opt.last_gammas) == {"0.weight", "2.weight"}
    torch.testing.assert_close(model[0].bias.detach(), bias_before - 0.05 * grads_at_drift["bias"])
    assert opt.state[model[0].weight]["rho"].item() == pytest.approx(min(0.25 + 0.75 / 0.1, 10.0))


def test_seeded_runs_are_deterministic():
    def run():
        model = _mlp()
        opt = SoftReset(model.parameters(), gamma_lr=5.0, generator=torch.Generator().manual_seed(3))
        for k in range(4):
            opt.step(_closure(model, opt, *_batch(k)))
        return [p.detach().clone() for p in model.parameters()], dict(opt.last_gammas)
    (a, ga), (b, gb) = run(), run()
    assert ga == gb and all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("cls,kwargs", [(SoftReset, dict(gamma_lr=5.0, granularity="parameter")),
                                        (SoftResetProximal, dict(gamma_lr=5.0, prox_steps=2)),
                                        (BayesianSoftResetProximal, dict(gamma_lr=5.0))])
def test_state_dict_round_trip(cls, kwargs):
    model = _mlp()
    opt = cls(model.parameters(), generator=torch.Generator().manual_seed(5), **kwargs)
    for k in range(3):
        opt.step(_closure(model, opt, *_batch(k)))
    clone = copy.deepcopy(model)
    other = cls(clone.parameters(), generator=torch.Generator().manual_seed(99), **kwargs)
    other.load_state_dict(opt.state_dict())
    for k in range(3, 5):
        opt.step(_closure(model, opt, *_batch(k)))
        other.step(_closure(clone, other, *_batch(k)))
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("nan_on", [1, 2, 4])
def test_non_finite_loss_never_corrupts_state(nan_on):
    model = _mlp()
    opt = SoftReset(model.parameters(), fixed_gamma=None, gamma_lr=50.0, ou_noise=False,
                    generator=torch.Generator().manual_seed(0))
    x, y = _batch()
    with torch.no_grad():
        for p in model.parameters():  # far from init so that a reset fires (4 passes)
            p.mul_(3.0)
    before = [p.detach().clone() for p in model.parameters()]
    state_before = {k: v.clone() for k, v in opt.state[model[0].weight].items() if isinstance(v, torch.Tensor)}
    calls = []
    opt.step(_closure(model, opt, x, y, calls, nan_on=nan_on))
    for p in model.parameters():
        assert torch.isfinite(p).all()
    if nan_on in (1, 4):  # the online loss or the gradient at θ̃: the step is skipped, nothing changes
        assert opt.skipped_steps == 1
        assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
        for k, v in state_before.items():
            assert torch.equal(opt.state[model[0].weight][k], v)
    opt.step(_closure(model, opt, x, y))  # and the optimizer keeps working
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_adam_base_gamma_one_is_adam():
    a, b = _mlp(), _mlp()
    adam = torch.optim.Adam(a.parameters(), lr=0.01)
    soft = SoftReset(base=torch.optim.Adam(b.parameters(), lr=0.01), gamma_lr=0.0)
    for k in range(4):
        x, y = _batch(k)
        _closure(a, adam, x, y)()
        adam.step()
        soft.step(_closure(b, soft, x, y))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_adam_base_drift_scales_update_by_rho():
    gamma, s = 0.8, 0.1
    a = _mlp(bias=False)
    b = copy.deepcopy(a)
    soft = SoftReset(base=torch.optim.Adam(a.parameters(), lr=0.01), fixed_gamma=gamma, s=s, ou_noise=False,
                     moment_damping=True)
    mu0 = [p.detach().clone() for p in b.parameters()]
    rho = lr_multiplier(gamma, s).item()
    x, y = _batch()
    soft.step(_closure(a, soft, x, y))
    with torch.no_grad():  # reference: drift by hand, then Adam with lr × ρ
        for p, m in zip(b.parameters(), mu0):
            p.copy_(gamma * p + (1 - gamma) * m)
    ref = torch.optim.Adam(b.parameters(), lr=0.01 * rho)
    _closure(b, ref, x, y)()
    ref.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    soft.step(_closure(a, soft, *_batch(1)))  # second step: first moments were damped by γ
    assert all(torch.isfinite(p).all() for p in a.parameters())


def test_gamma_dips_at_task_switch_on_a_toy_stream():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    stream = RandomLabelStream(n=64, in_features=16, n_tasks=3, steps_per_task=120, batch_size=16,
                               generator=torch.Generator().manual_seed(0))
    opt = SoftReset(model.parameters(), lr=0.05, generator=torch.Generator().manual_seed(0))
    gammas = []
    for batch in stream:
        opt.step(_closure(model, opt, batch.x, batch.y))
        gammas.append(min(opt.last_gammas.values()))
    g = torch.tensor(gammas).reshape(3, 120)  # (tasks, steps)
    boundary = g[1:, :5].min(dim=1).values
    mid = g[:, 60:]
    assert boundary.mean() < 0.99
    assert (mid < 0.999).float().mean() <= 0.05


# ------------------------------------------------------------------------------ proximal and Bayesian
def test_proximal_one_step_equals_sgd_variant():
    lam, s, gamma, sigma0 = 3.0, 0.1, 0.7, 0.4
    a = _mlp(bias=False)
    b = copy.deepcopy(a)
    prox = SoftResetProximal(a.parameters(), prox_steps=1, prox_temperature=lam, s=s, fixed_gamma=gamma,
                             ou_noise=False, sigma0=sigma0, rho_max=1e6)
    sgd_variant = SoftReset(b.parameters(), lr=lam * s * sigma0 ** 2, s=s, fixed_gamma=gamma, ou_noise=False,
                            sigma0=sigma0, rho_max=1e6)
    for k in range(3):
        prox.step(_closure(a, prox, *_batch(k)))
        sgd_variant.step(_closure(b, sgd_variant, *_batch(k)))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_proximal_solves_linearised_problem():
    lam, s, gamma, sigma0 = 2.0, 0.2, 0.6, 0.5
    c = torch.randn(4, 4)
    model = nn.Linear(4, 4, bias=False)
    theta, mu0 = model.weight.detach().clone(), model.weight.detach().clone() * 0 + 0.1
    with torch.no_grad():
        model.weight.add_(1.0)
        theta = model.weight.detach().clone()
    opt = SoftResetProximal(model.parameters(), prox_steps=3, prox_temperature=lam, s=s, fixed_gamma=gamma,
                            ou_noise=False, sigma0=sigma0, prior_mean="zero", prox_lr_scale=0.5, rho_max=1e6)

    def closure():
        opt.zero_grad()
        loss = (c * model.weight).sum()  # linear loss: gradient c everywhere
        loss.backward()
        return loss
    opt.step(closure)
    v = (gamma ** 2 * s + 1 - gamma ** 2) * sigma0 ** 2
    optimum = gamma * theta - lam * v * c  # argmin ⟨c, θ⟩ + ‖θ − θ̃‖²/(2λv)
    # three damped steps (c = ½) from θ̃ close 1 − ½³ of the gap
    expected = optimum + 0.5 ** 3 * (gamma * theta - optimum)
    torch.testing.assert_close(model.weight.detach(), expected)
    del mu0


def test_bayesian_with_frozen_sigma_equals_proximal():
    kl_weight, gamma = 0.5, 0.8
    a = _mlp()
    b = copy.deepcopy(a)
    bayes = BayesianSoftResetProximal(a.parameters(), kl_weight=kl_weight, fixed_gamma=gamma, prox_steps=2,
                                      theta_samples=0, learn_sigma=False)
    prox = SoftResetProximal(b.parameters(), prox_temperature=1 / kl_weight, fixed_gamma=gamma, prox_steps=2,
                             ou_noise=False, rho_max=1e6)
    for k in range(3):
        bayes.step(_closure(a, bayes, *_batch(k)))
        prox.step(_closure(b, prox, *_batch(k)))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_diag_gaussian_kl_and_grads():
    g = torch.Generator().manual_seed(0)
    mu, mu_p = torch.randn(5, generator=g), torch.randn(5, generator=g)
    sigma, var_p = torch.rand(5, generator=g) + 0.2, torch.rand(5, generator=g) + 0.3
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                            torch.distributions.Normal(mu_p, var_p.sqrt())).sum()
    torch.testing.assert_close(diag_gaussian_kl(mu, sigma ** 2, mu_p, var_p), ref)
    mu_r, sigma_r = mu.clone().requires_grad_(), sigma.clone().requires_grad_()
    diag_gaussian_kl(mu_r, sigma_r ** 2, mu_p, var_p).backward()
    d_mu, d_sigma = diag_gaussian_kl_grads(mu, sigma, mu_p, var_p)
    torch.testing.assert_close(mu_r.grad, d_mu)
    torch.testing.assert_close(sigma_r.grad, d_sigma)


def test_bayesian_gamma_reaches_argmin_of_expected_loss():
    """Bayesian linear regression: E_q(γ)[½(y − Xθ)²] is analytic; the γ steps find its grid argmin."""
    d, n, s = 5, 40, 0.1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.full((d,), 0.5) + 0.1 * torch.randn(n, generator=g)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    opt = BayesianSoftResetProximal(model.parameters(), s=s, sigma0=1.0, gamma_lr=0.01, gamma_steps=300,
                                    gamma_samples=4, prox_steps=1, theta_samples=1,
                                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.weight.fill_(2.0)  # θ_t far from the batch optimum (0.5); μ0 = 0 (the init)
    theta = model.weight.detach().clone().squeeze(0)

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((model(x).squeeze(-1) - y) ** 2).mean()
        loss.backward()
        return loss
    opt.step(closure)
    grid = torch.linspace(0, 1, 2001)
    m = grid[:, None] * theta[None]  # (grid, d)
    v = grid ** 2 * s + 1 - grid ** 2  # (grid,)
    objective = 0.5 * (((x @ m.T) - y[:, None]) ** 2).mean(0) + 0.5 * (x ** 2).sum(1).mean() * v
    best = grid[objective.argmin()].item()
    assert 0.05 < best < 0.95
    assert opt.last_gammas["group0.param0"] == pytest.approx(best, abs=0.03)


def test_bayesian_sample_and_mean():
    model = _mlp()
    opt = BayesianSoftResetProximal(model.parameters())
    mean = [p.detach().clone() for p in model.parameters()]
    opt.sample_(torch.Generator().manual_seed(0))
    assert not torch.equal(model[0].weight, mean[0])
    assert torch.equal(model[0].bias, mean[1])  # biases do not drift: σ = 0
    opt.use_mean_()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), mean))


# ------------------------------------------------------------------------------ σ0 and arguments
def test_sigma0_from_initialiser():
    layer = nn.Linear(400, 300)
    assert init_sigma0(layer.weight) ** 2 == pytest.approx(1 / (3 * 400), rel=0.02)
    assert init_sigma0(layer.bias) ** 2 == pytest.approx(1 / (3 * 400), rel=0.2)
    assert init_sigma0(layer.weight, "pytorch_default") == pytest.approx(math.sqrt(1 / 1200))
    assert init_sigma0(layer.weight, "he_normal") == pytest.approx(math.sqrt(2 / 400))
    norm = nn.LayerNorm(8)
    assert init_sigma0(norm.weight) == 0.0
    opt = SoftReset([{"params": [norm.weight], "drift": True}, {"params": [layer.weight]}])
    assert opt.state[norm.weight]["drift"] is False and opt.state[layer.weight]["drift"] is True
    opt = SoftReset([norm.weight], sigma0_floor=0.01)
    assert opt.state[norm.weight]["drift"] is False  # 1-D: not drifting by default


def test_closure_required():
    model = _mlp()
    with pytest.raises(ValueError, match="closure"):
        SoftReset(model.parameters()).step()


@pytest.mark.parametrize("kwargs", [dict(s=0.0), dict(s=1.5), dict(gamma_lr=-1.0), dict(gamma_steps=0),
                                    dict(gamma_estimator="bogus"), dict(granularity="layer"),
                                    dict(prior_mean="mean"), dict(rho_max=0.5), dict(gamma_min=1.0),
                                    dict(sigma0="xavier"), dict(fixed_gamma=1.5), dict(lr=-0.1)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SoftReset(_mlp().parameters(), **kwargs)


@pytest.mark.parametrize("cls,kwargs", [(SoftResetProximal, dict(prox_steps=0)),
                                        (SoftResetProximal, dict(prox_temperature=0.0)),
                                        (BayesianSoftResetProximal, dict(theta_samples=-1)),
                                        (BayesianSoftResetProximal, dict(kl_weight=-1.0))])
def test_bad_arguments_variants(cls, kwargs):
    with pytest.raises(ValueError):
        cls(_mlp().parameters(), **kwargs)
