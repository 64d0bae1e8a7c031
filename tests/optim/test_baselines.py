"""Plasticity baselines: L2-Init, Shrink & Perturb, hard reset (tenfold.optim.baselines)."""

import pytest
import torch
from torch import nn

from tenfold.optim.baselines import HardReset, L2Init, ShrinkPerturb, l2_init_grad, shrink_perturb


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _loss(model: nn.Module) -> torch.Tensor:
    x = torch.linspace(-1, 1, 20).reshape(5, 4)  # (5, 4)
    return model(x).square().mean()


def test_l2_init_grad_formula():
    g, theta, theta0 = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]), torch.tensor([1.0, 1.0])
    assert torch.equal(l2_init_grad(g, theta, theta0, 0.5), torch.tensor([2.0, -2.25]))


def test_l2_init_hook_matches_penalty_gradient():
    model = _mlp()
    l2 = L2Init(model, strength=0.3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.zero_grad()
    _loss(model).backward()
    l2.add_grad_()
    hook_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (_loss(model) + l2.penalty()).backward()
    for a, p in zip(hook_grads, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_l2_init_zero_at_init_and_pulls_back():
    model = _mlp()
    l2 = L2Init(model, strength=1.0)
    assert l2.penalty().item() == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(20):  # gradient only from the penalty: θ − θ0 shrinks by (1 − lr·λ) per step
        opt.zero_grad()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        l2.add_grad_()
        opt.step()
    assert l2.penalty().item() < 1e-6 * 0.5 * sum(p.numel() for p in model.parameters())


def test_l2_init_state_dict_round_trip():
    model = _mlp()
    l2 = L2Init(model, strength=0.1)
    other = L2Init(_mlp(seed=1), strength=0.2)
    other.load_state_dict(l2.state_dict())
    assert other.strength == 0.1
    for a, b in zip(other.anchors, l2.anchors):
        assert torch.equal(a, b)


def test_shrink_perturb_rule_and_every():
    assert torch.equal(shrink_perturb(torch.tensor([2.0, -4.0]), 0.5, None), torch.tensor([1.0, -2.0]))
    p = nn.Parameter(torch.ones(1000))
    sp = ShrinkPerturb([p], shrink=0.9, noise_scale=0.0, every=3)
    assert [sp.apply_() for _ in range(6)] == [False, False, True, False, False, True]
    torch.testing.assert_close(p.detach(), torch.full((1000,), 0.81))


def test_shrink_perturb_noise_statistics():
    p = nn.Parameter(torch.zeros(200_000))
    sp = ShrinkPerturb([p], shrink=0.5, noise_scale=0.2, generator=torch.Generator().manual_seed(0))
    sp.apply_()
    assert abs(p.mean().item()) < 0.005
    assert abs(p.std().item() - 0.2) < 0.005


def test_shrink_perturb_init_scaled_noise():
    w = nn.Parameter(torch.randn(100_000) * 3.0)
    const = nn.Parameter(torch.ones(10))  # like a LayerNorm weight: initial std 0 → no noise
    sp = ShrinkPerturb([w, const], shrink=0.0, noise_scale=0.5, noise_std="init",
                       generator=torch.Generator().manual_seed(1))
    sp.apply_()
    assert abs(w.std().item() - 1.5) < 0.03
    assert torch.equal(const.detach(), torch.zeros(10))


def test_shrink_perturb_seeded_and_state_dict():
    def run():
        p = nn.Parameter(torch.ones(10))
        sp = ShrinkPerturb([p], shrink=0.9, noise_scale=0.1, generator=torch.Generator().manual_seed(3))
        sp.apply_()
        return p.detach().clone(), sp
    (a, sp), (b, _) = run(), run()
    assert torch.equal(a, b)
    other = ShrinkPerturb([nn.Parameter(torch.ones(10))], shrink=1.0, noise_scale=0.0)
    other.load_state_dict(sp.state_dict())
    assert other.state_dict() == sp.state_dict()


def test_hard_reset_init_mode_restores_and_clears_state():
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    reset = HardReset(model, mode="init")
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
    assert len(opt.state) > 0
    reset.reset_(opt)
    assert len(opt.state) == 0
    for a, p in zip(before, model.parameters()):
        assert torch.equal(a, p.detach())
    opt.zero_grad()  # the optimizer still works after its state was cleared
    _loss(model).backward()
    opt.step()


def test_hard_reset_fresh_mode_new_draw_seeded():
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    HardReset(model, mode="fresh", generator=torch.Generator().manual_seed(5)).reset_()
    first = [p.detach().clone() for p in model.parameters()]
    assert not torch.equal(before[0], first[0])
    HardReset(model, mode="fresh", generator=torch.Generator().manual_seed(5)).reset_()
    for a, p in zip(first, model.parameters()):
        assert torch.equal(a, p.detach())


def test_hard_reset_fresh_with_init_fn():
    model = _mlp()

    def zeros(m: nn.Module) -> None:
        for p in m.parameters():
            nn.init.zeros_(p)
    HardReset(model, mode="fresh", init_fn=zeros).reset_()
    assert all(p.abs().sum() == 0 for p in model.parameters())


@pytest.mark.parametrize("make", [
    lambda m: L2Init(m, strength=-1.0),
    lambda m: ShrinkPerturb(m, shrink=1.5, noise_scale=0.1),
    lambda m: ShrinkPerturb(m, shrink=0.9, noise_scale=-0.1),
    lambda m: ShrinkPerturb(m, shrink=0.9, noise_scale=0.1, every=0),
    lambda m: ShrinkPerturb(m, shrink=0.9, noise_scale=0.1, noise_std="bogus"),
    lambda m: HardReset(m, mode="bogus"),
    lambda m: HardReset(m, mode="init", init_fn=lambda _: None),
    lambda m: L2Init([], strength=0.1),
])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make(_mlp())
