"""Effective learning rate and the layer-wise schedule that makes NaP follow an unprojected LN net."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tenfold.analysis.effective_lr import (LayerwiseELRSchedule, effective_lr, global_elr_lr, layer_effective_lrs,
                                           layerwise_elr_lrs, matching_lr, named_param_groups)
from tenfold.models.normalized import NormMLP
from tenfold.optim import NaP


def test_effective_lr_values():
    w = torch.full((2, 2), 1.5)  # ‖w‖ = 3
    assert effective_lr(w, 0.9, "sgd") == pytest.approx(0.1)
    assert effective_lr(w, 0.9, "adam") == pytest.approx(0.3)
    assert layer_effective_lrs({"a": 2.0, "b": 4.0}, 1.0, "sgd") == pytest.approx({"a": 0.25, "b": 1 / 16})
    with pytest.raises(ValueError, match="optimizer"):
        effective_lr(w, 0.1, "rmsprop")
    with pytest.raises(ValueError, match="lr"):
        effective_lr(w, -0.1)
    with pytest.raises(ValueError, match="norm"):
        effective_lr(torch.zeros(3), 0.1)


def test_matching_lrs():
    assert matching_lr(4.0, 2.0, 1.0, "sgd") == pytest.approx(0.25)
    assert matching_lr(4.0, 2.0, 1.0, "adam") == pytest.approx(0.5)
    lrs = layerwise_elr_lrs({"a": 2.0, "b": 6.0}, {"a": 1.0, "b": 3.0}, 0.1, "sgd")
    assert lrs == pytest.approx({"a": 0.025, "b": 0.025})
    # global: ρ = √(1 + 9), ‖W‖ = √(4 + 36)
    assert global_elr_lr({"a": 2.0, "b": 6.0}, {"a": 1.0, "b": 3.0}, 0.1, "sgd") == pytest.approx(0.1 * 10 / 40)
    with pytest.raises(ValueError, match="lacks"):
        layerwise_elr_lrs({"a": 1.0}, {"a": 1.0, "b": 1.0}, 0.1)
    # equal ELR by construction: η_l/ρ_l² == η/‖W_ref‖²
    assert effective_lr(1.0, lrs["a"], "sgd") == pytest.approx(effective_lr(2.0, 0.1, "sgd"))


def follow(eps: float, mode: str, steps: int = 100, lr: float = 1.0):
    """Max |L_NaP(t) - L_LN(t)| over ``steps`` plain-SGD steps, float64, from the same init and batches.

    The NaP copy projects hidden weights only (affines and head free) and takes its per-layer
    learning rates from the LN network's current norms (``mode``), or a constant ``lr`` (``"constant"``)."""
    torch.manual_seed(0)
    ln = NormMLP(in_features=16, hidden_features=[32, 32], out_features=5, norm_eps=eps).double()
    nap = copy.deepcopy(ln)
    proj = NaP(nap, affine="none")
    opt_ln = torch.optim.SGD(ln.parameters(), lr=lr)
    opt_nap = torch.optim.SGD(named_param_groups(nap, proj), lr=lr)
    schedule = LayerwiseELRSchedule(opt_nap, targets=proj.targets, base_lr=lr, kind="sgd",
                                    mode="layerwise" if mode == "constant" else mode)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (64,), generator=g)
    gap, start = 0.0, {name: float(ln.get_submodule(name).weight.detach().norm()) for name in proj.targets}
    for _ in range(steps):
        index = torch.randint(0, 64, (32,), generator=g)
        reference = {name: float(ln.get_submodule(name).weight.detach().norm()) for name in proj.targets}
        if mode != "constant":
            schedule.step(reference)
        losses = []
        for model, opt in ((ln, opt_ln), (nap, opt_nap)):
            loss = F.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        proj.project()
        gap = max(gap, abs(losses[0] - losses[1]))
    growth = max(float(ln.get_submodule(n).weight.detach().norm()) / start[n] for n in start)
    return gap, growth


def test_layerwise_schedule_makes_nap_follow_layernorm():
    exact, growth = follow(eps=0.0, mode="layerwise")
    assert growth > 1.05  # the LN network's norms did grow, so the schedule had work to do
    assert exact <= 1e-10
    with_eps, _ = follow(eps=1e-5, mode="layerwise")
    assert with_eps <= 1e-5
    constant, _ = follow(eps=0.0, mode="constant")
    global_, _ = follow(eps=0.0, mode="global")
    assert constant > 1e-3 and constant > 1e4 * exact
    assert global_ > exact


def test_schedule_validates_group_names():
    model = NormMLP(in_features=4, hidden_features=[8], out_features=2)
    proj = NaP(model)
    with pytest.raises(ValueError, match="no parameter group"):
        LayerwiseELRSchedule(torch.optim.SGD(model.parameters(), lr=0.1), targets=proj.targets, base_lr=0.1)
    opt = torch.optim.SGD(named_param_groups(model, proj), lr=0.1)
    schedule = LayerwiseELRSchedule(opt, targets=proj.targets, base_lr=0.1, kind="adam")
    lrs = schedule.step({name: 2 * t for name, t in proj.targets.items()})
    assert all(lr == pytest.approx(0.05) for lr in lrs.values())
    assert opt.param_groups[-1]["name"] is None and opt.param_groups[-1]["lr"] == 0.1
    restored = LayerwiseELRSchedule(opt, targets={}, base_lr=1.0)
    restored.load_state_dict(schedule.state_dict())
    assert restored.state_dict() == schedule.state_dict()
    with pytest.raises(ValueError, match="mode"):
        LayerwiseELRSchedule(opt, targets=proj.targets, base_lr=0.1, mode="per-unit")
    assert math.isclose(sum(p.numel() for g in opt.param_groups for p in g["params"]),
                        sum(p.numel() for p in model.parameters()))
