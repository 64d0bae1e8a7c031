"""TAM / AdaTAM: equations, limiting cases (damping off == torch SGD / Adam / AdamW), robustness,
state_dict, param groups, closures, schedulers, and DDP == one process."""

import copy
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from tenfold.optim import TAM, AdaTAM
from tenfold.optim.tam import (adatam_update, cosine_from_norms, read_dampings, smoothed_damping, tam_lr_from_sgdm,
                               tam_update, torque_cosine)

F64 = torch.float64


def _params(seed=0, dtype=F64, shapes=((5, 3), (4,))):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=gen, dtype=dtype)) for s in shapes]


def _clone(params):
    return [nn.Parameter(p.detach().clone()) for p in params]


def _run(optimizers_and_params, steps, seed=1, scale=1.0):
    """Feed the same random gradients to every (optimizer, params) pair for ``steps`` steps."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ref = optimizers_and_params[0][1]
        grads = [scale * torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ref]
        for opt, params in optimizers_and_params:
            for p, g in zip(params, grads):
                p.grad = g.clone().to(p.dtype)
            opt.step()


# ---------------------------------------------------------------- pure functions

def test_cosine_is_zero_for_zero_or_nonfinite_and_clamped():
    g = torch.randn(10)
    assert torque_cosine(torch.zeros(10), g) == 0.0
    assert torque_cosine(g, torch.zeros(10)) == 0.0
    assert torque_cosine(g, torch.full((10,), float("nan"))) == 0.0
    assert torque_cosine(g, 3 * g) == pytest.approx(1.0, abs=1e-6)
    assert torque_cosine(g, -g) == pytest.approx(-1.0, abs=1e-6)
    assert cosine_from_norms(2.0, 1.0, 1.0) == 1.0 and cosine_from_norms(-3.0, 1.0, 2.0) == -1.0
    assert cosine_from_norms(float("inf"), 1.0, 1.0) == 0.0 and cosine_from_norms(1.0, 0.0, 1.0) == 0.0
    b = torch.randn(10).bfloat16()  # bf16 sums accumulate in float32
    assert torque_cosine(b, b) == pytest.approx(1.0, abs=1e-6)
    huge = torch.full((4,), 1e30)  # <m, g> overflows float32: treated as "no information", s = 0
    assert torque_cosine(huge, huge) == 0.0


def test_smoothed_damping_equation():
    s_hat, d = smoothed_damping(0.2, -0.5, 0.9)
    assert s_hat == pytest.approx(0.9 * 0.2 - 0.1 * 0.5, abs=1e-15)
    assert d == pytest.approx((1 + s_hat) / 2, abs=1e-15)


def test_pure_tam_update_matches_hand_computation():
    p, g, m = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)
    out = tam_update(p, g, m, 0.4, lr=0.1, momentum=0.9, decay=0.9, eps=0.0)
    cos = (0.5 - 1.0) / (math.sqrt(2) * math.sqrt(1.25))
    s_hat = 0.9 * 0.4 + 0.1 * cos
    d = (1 + s_hat) / 2
    expected_m = 0.9 * m + d * g
    assert out.s_hat == pytest.approx(s_hat, rel=1e-14)
    assert out.damping == pytest.approx(d, rel=1e-14)
    torch.testing.assert_close(out.momentum_buffer, expected_m, rtol=1e-14, atol=0)
    torch.testing.assert_close(out.param, p - 0.1 * expected_m, rtol=1e-14, atol=0)


def test_first_step_is_half_gradient():
    g = torch.randn(7, dtype=F64)
    out = tam_update(torch.zeros(7, dtype=F64), g, torch.zeros(7, dtype=F64), 0.0, lr=1.0, eps=1e-8)
    assert out.damping == 0.5
    torch.testing.assert_close(out.momentum_buffer, (0.5 + 1e-8) * g, rtol=1e-15, atol=0)
    ada = adatam_update(torch.zeros(7, dtype=F64), g, torch.zeros(7, dtype=F64), torch.zeros(7, dtype=F64),
                        0.0, 0, lr=1.0, damping_eps=1e-8)
    torch.testing.assert_close(ada.exp_avg / (1 - 0.9), (0.5 + 1e-8) * g, rtol=1e-12, atol=0)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.05, False), (0.05, True)])
def test_tam_optimizer_matches_pure_function(wd, decoupled):
    params = _params()
    opt = TAM(params, lr=0.05, weight_decay=wd, decoupled_weight_decay=decoupled)
    ref = [(p.detach().clone(), torch.zeros_like(p), 0.0) for p in params]
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=F64) + 0.3  # biased so that d varies
            p.grad = g
            out = tam_update(*ref[i][:1], g, *ref[i][1:], lr=0.05, weight_decay=wd, decoupled_weight_decay=decoupled)
            ref[i] = (out.param, out.momentum_buffer, out.s_hat)
        opt.step()
        for p, (rp, rm, rs) in zip(params, ref):
            torch.testing.assert_close(p.detach(), rp, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], rm, rtol=1e-12, atol=1e-14)
            assert float(opt.state[p]["s_hat"]) == pytest.approx(rs, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("wd,decoupled", [(0.0, True), (0.05, False), (0.05, True)])
def test_adatam_optimizer_matches_pure_function(wd, decoupled):
    params = _params()
    opt = AdaTAM(params, lr=0.01, weight_decay=wd, decoupled_weight_decay=decoupled)
    ref = [(p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p), 0.0, 0) for p in params]
    gen = torch.Generator().manual_seed(4)
    for _ in range(10):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=F64) + 0.3
            p.grad = g
            out = adatam_update(ref[i][0], g, *ref[i][1:], lr=0.01, weight_decay=wd, decoupled_weight_decay=decoupled)
            ref[i] = (out.param, out.exp_avg, out.exp_avg_sq, out.s_hat, out.step)
        opt.step()
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach(), r[0], rtol=1e-12, atol=1e-14)
            assert float(opt.state[p]["s_hat"]) == pytest.approx(r[3], rel=1e-12, abs=1e-15)


def test_lr_mapping():
    assert tam_lr_from_sgdm(0.01) == 0.02
    with pytest.raises(ValueError, match="mean_damping"):
        tam_lr_from_sgdm(0.01, 0.0)


# ---------------------------------------------------------------- limiting cases: damping off

@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_tam_without_damping_is_sgd_momentum(wd):
    a, b = _params(), _params()
    _run([(TAM(a, lr=0.1, momentum=0.9, damping=False, weight_decay=wd), a),
          (torch.optim.SGD(b, lr=0.1, momentum=0.9, dampening=0, weight_decay=wd), b)], 50)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("decoupled", [False, True])
def test_adatam_without_damping_is_adam_or_adamw(wd, decoupled):
    a, b = _params(), _params()
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    _run([(AdaTAM(a, lr=0.01, damping=False, weight_decay=wd, decoupled_weight_decay=decoupled), a),
          (ref_cls(b, lr=0.01, weight_decay=wd), b)], 50)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_switching_damping_off_continues_like_sgd():
    a = _params()
    opt = TAM(a, lr=0.05)
    _run([(opt, a)], 10)
    b = _clone(a)
    sgd = torch.optim.SGD(b, lr=0.05, momentum=0.9)
    for p, q in zip(a, b):
        sgd.state[q]["momentum_buffer"] = opt.state[p]["momentum_buffer"].clone()
    opt.param_groups[0]["damping"] = False
    _run([(opt, a), (sgd, b)], 10, seed=9)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert all(opt.state[p]["s_hat"] == 0.0 for p in a)
    assert opt.last_damping is None


# ---------------------------------------------------------------- behaviour

def test_constant_gradient_drives_damping_to_one():
    (w,) = _params(shapes=((20,),))
    opt = TAM([w], lr=0.01)
    (v,) = _clone([w])
    sgd = torch.optim.SGD([v], lr=0.01, momentum=0.9)
    g = torch.randn(20, dtype=F64)
    dampings = []
    for t in range(1, 301):
        w.grad, v.grad = g.clone(), g.clone()
        opt.step()
        sgd.step()
        dampings.append(opt.last_damping)
        assert float(opt.state[w]["s_hat"]) == pytest.approx(1 - 0.9 ** (t - 1), abs=1e-12)
    assert dampings[0] == 0.5 and dampings[-1] > 0.999999
    ratio = opt.state[w]["momentum_buffer"] / sgd.state[v]["momentum_buffer"]
    assert (ratio - 1).abs().max().item() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alternating_gradient_is_damped(dtype, seed):
    """g, -g, g, ...: every cosine is -1 in exact arithmetic, so d_t <= 1/2 and d_t -> 0 (float64).
    In float32 the near-cancellation of m at even steps leaves a rounding residue (~1e-8 relative,
    below the damping floor's scale) whose cosine with g is arbitrary, so d falls less far."""
    g = torch.randn(30, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    tam_norms, sgd_norms, dampings = [], [], []
    (w,), (v,) = _params(shapes=((30,),), dtype=dtype), _params(shapes=((30,),), dtype=dtype)
    opt, sgd = TAM([w], lr=0.01, momentum=0.9, decay=0.9), torch.optim.SGD([v], lr=0.01, momentum=0.9)
    for t in range(60):
        w.grad, v.grad = (g.clone(), g.clone()) if t % 2 == 0 else (-g, -g)
        opt.step()
        sgd.step()
        dampings.append(opt.last_damping)
        tam_norms.append(opt.state[w]["momentum_buffer"].norm().item())
        sgd_norms.append(sgd.state[v]["momentum_buffer"].norm().item())
    assert max(dampings) <= 0.5
    assert sum(dampings[10:]) / 50 < 0.2
    assert tam_norms[-1] < 1e-4 * tam_norms[0]
    assert sum(tam_norms[-20:]) < 0.5 * sum(sgd_norms[-20:])  # a shrinking update; SGDM keeps oscillating
    assert sgd_norms[-1] > 0.45 * g.norm().item()  # SGDM: ||m|| -> ||g|| / (1 + beta)
    if dtype == F64:
        assert dampings[-1] < 0.01


def test_loss_scale_does_not_change_damping():
    a, b = _params(), _params()
    oa, ob = TAM(a, lr=0.0), TAM(b, lr=0.0)
    gen = torch.Generator().manual_seed(5)
    for _ in range(15):
        grads = [torch.randn(p.shape, generator=gen, dtype=F64) + 0.2 for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g, 1000 * g
        oa.step()
        ob.step()
        assert ob.last_damping == pytest.approx(oa.last_damping, abs=1e-6)
    for p, q in zip(a, b):
        torch.testing.assert_close(ob.state[q]["momentum_buffer"], 1000 * oa.state[p]["momentum_buffer"], rtol=1e-6, atol=0)


def test_granularity_global_equals_tensor_for_one_tensor_and_differs_otherwise():
    a, b = _params(shapes=((6, 4),)), _params(shapes=((6, 4),))
    _run([(TAM(a, lr=0.05), a), (TAM(b, lr=0.05, granularity="global"), b)], 20)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    c, d = _params(), _params()
    oc, od = TAM(c, lr=0.05), TAM(d, lr=0.05, granularity="global")
    _run([(oc, c), (od, d)], 5)
    assert all("s_hat" not in od.state[p] for p in d)  # one ŝ for the group, kept in the group
    assert float(od.param_groups[0]["s_hat"]) != 0.0
    assert len({float(oc.state[p]["s_hat"]) for p in c}) == 2


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_zero_and_nonfinite_gradients_never_poison_state(cls):
    params = _params()
    opt = cls(params, lr=0.01, skip_nonfinite=True)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    _run([(opt, params)], 3)
    before = [p.detach().clone() for p in params]
    state_before = copy.deepcopy(opt.state_dict())
    params[0].grad = torch.full_like(params[0], float("nan"))
    params[1].grad = torch.full_like(params[1], float("inf"))
    opt.step()  # decided on the device: no warning, no host synchronisation
    assert opt.skipped_steps == 1
    for p, q in zip(params, before):
        assert torch.equal(p.detach(), q)
    for key, value in opt.state_dict()["state"].items():
        for name, tensor in value.items():
            if name != "step":  # AdaTAM's CPU step counter still counts the skipped step
                assert torch.equal(torch.as_tensor(tensor), torch.as_tensor(state_before["state"][key][name]))
    _run([(opt, params)], 3)
    assert all(torch.isfinite(p).all() for p in params)
    assert all(math.isfinite(float(opt.state[p]["s_hat"])) for p in params)


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_grad_not_modified_with_maximize_and_coupled_decay(cls):
    params = _params()
    opt = cls(params, lr=0.01, maximize=True, weight_decay=0.1, decoupled_weight_decay=False)
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    for p, g in zip(params, grads):
        assert torch.equal(p.grad, g)


def test_maximize_ascends():
    w = nn.Parameter(torch.zeros(3, dtype=F64))
    opt = TAM([w], lr=0.1, maximize=True)
    for _ in range(5):
        opt.zero_grad()
        (w.sum()).backward()
        opt.step()
    assert (w > 0).all()


# ---------------------------------------------------------------- optimizer plumbing

@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_state_dict_round_trip_resumes_identically(cls):
    a = _params(dtype=torch.float32)
    oa = cls(a, lr=0.01)
    _run([(oa, a)], 20, seed=1)
    saved_params = [p.detach().clone() for p in a]
    saved_state = copy.deepcopy(oa.state_dict())
    _run([(oa, a)], 20, seed=2)
    b = [nn.Parameter(p) for p in saved_params]
    ob = cls(b, lr=0.5)  # the loaded param_groups restore lr
    ob.load_state_dict(saved_state)
    _run([(ob, b)], 20, seed=2)
    for p, q in zip(a, b):
        assert torch.equal(p, q)


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_bf16_state_dict_keeps_s_hat_exact(cls):
    a = _params(dtype=torch.bfloat16)
    oa = cls(a, lr=0.01)
    _run([(oa, a)], 20, seed=1)
    saved_params = [p.detach().clone() for p in a]
    saved_state = copy.deepcopy(oa.state_dict())
    _run([(oa, a)], 20, seed=2)
    b = [nn.Parameter(p) for p in saved_params]
    ob = cls(b, lr=0.01)
    ob.load_state_dict(saved_state)
    for i, p in enumerate(b):
        assert ob.state[p]["s_hat"].dtype == F64 and float(ob.state[p]["s_hat"]) != 0.0
        assert torch.equal(ob.state[p]["s_hat"], saved_state["state"][i]["s_hat"])
    _run([(ob, b)], 20, seed=2)
    for p, q in zip(a, b):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q)


def test_param_groups_equal_separate_optimizers():
    a = _params()
    grouped = TAM([{"params": [a[0]]}, {"params": [a[1]], "lr": 0.2, "decay": 0.5}], lr=0.05)
    b = _params()
    first, second = TAM([b[0]], lr=0.05), TAM([b[1]], lr=0.2, decay=0.5)
    gen = torch.Generator().manual_seed(7)
    for _ in range(10):
        grads = [torch.randn(p.shape, generator=gen, dtype=F64) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        grouped.step()
        first.step()
        second.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    assert grouped.last_group_damping == [first.last_damping, second.last_damping]


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_damping_logs_read_once_equal_each_steps_last_damping(cls, device_reads):
    a = _params(shapes=((5, 3), (4,), (3,), (2, 2)))
    opt = cls([{"params": a[:2]}, {"params": [a[2]], "damping": False}, {"params": [a[3]], "decay": 0.5}], lr=0.05)
    gen = torch.Generator().manual_seed(11)
    logs, each = [], []
    for step in range(6):
        for i, p in enumerate(a):  # step 2: the last group has no gradient, the first only one
            p.grad = None if step == 2 and i in (1, 3) else torch.randn(p.shape, generator=gen, dtype=F64)
        opt.step()
        with device_reads() as reads:
            logs.append(opt.last_damping_log)
        assert reads() == 0
        groups = [sum(d.tolist()) / d.numel() for d in opt.last_damping_log if d is not None]  # step by step
        each.append(sum(groups) / len(groups))
    assert read_dampings(logs) == each  # the same floats
    assert opt.last_damping == each[-1] and opt.last_group_damping[1] is None
    assert len(set(each)) == 6 and read_dampings([]) == [] and read_dampings([[None]]) == [None]


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_closure_is_evaluated_with_grad(cls):
    w = nn.Parameter(torch.ones(3))
    opt = cls([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 3.0 and (w < 1).all()


def test_lr_scheduler_drives_the_step():
    a, b = _params(), _params()
    oa = TAM(a, lr=0.1, damping=False)
    ob = torch.optim.SGD(b, lr=0.1, momentum=0.9)
    sa, sb = torch.optim.lr_scheduler.StepLR(oa, 3, 0.5), torch.optim.lr_scheduler.StepLR(ob, 3, 0.5)
    gen = torch.Generator().manual_seed(8)
    for _ in range(10):
        grads = [torch.randn(p.shape, generator=gen, dtype=F64) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step(), ob.step(), sa.step(), sb.step()
    assert oa.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,name", [
    ({"lr": -1.0}, "Invalid learning rate: -1.0"), ({"lr": 0.1, "momentum": 1.0}, "Invalid momentum value: 1.0"),
    ({"lr": 0.1, "decay": -0.1}, "decay"), ({"lr": 0.1, "eps": -1.0}, "Invalid epsilon value"),
    ({"lr": 0.1, "weight_decay": -1.0}, "Invalid weight_decay value"),
    ({"lr": 0.1, "granularity": "layer"}, "granularity"), ({"lr": 0.1, "damping": 1}, "damping"),
    ({"lr": float("nan")}, "Invalid learning rate: nan"), ({"lr": 0.1, "foreach": 1}, "foreach"),
    ({"lr": 0.1, "skip_nonfinite": None}, "skip_nonfinite"),
])
def test_tam_invalid_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TAM(_params(), **kwargs)


@pytest.mark.parametrize("kwargs,name", [
    ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0"),
    ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1"), ({"betas": (0.9,)}, "betas"),
    ({"damping_eps": -1.0}, "damping_eps"), ({"decay": 1.0}, "decay"), ({"lr": -0.1}, "Invalid learning rate"),
])
def test_adatam_invalid_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdaTAM(_params(), **kwargs)


def test_invalid_param_group_option_raises():
    opt = TAM(_params()[:1], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group({"params": _params()[1:], "momentum": 2.0})
    assert len(opt.param_groups) == 1


def test_tam_trains_a_model():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.randn(5, 1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = TAM(model.parameters(), lr=0.05)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first
    assert 0.0 <= opt.last_damping <= 1.0


# ---------------------------------------------------------------- distributed

def test_ddp_two_processes_equal_one_process(monkeypatch):
    from tenfold.utils.distributed import run_processes

    here = str(Path(__file__).parent)
    monkeypatch.syspath_prepend(here)
    monkeypatch.setenv("PYTHONPATH", here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import _tam_ddp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks = run_processes(_tam_ddp.train_all, 2, (("tensor", "global"),))
    for granularity in ("tensor", "global"):
        single = _tam_ddp.train(granularity)
        for rank in ranks:
            result = rank[granularity]
            for p, q in zip(result["params"], single["params"]):
                torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
            assert result["s_hat"] == pytest.approx(single["s_hat"], abs=1e-6)
        assert ranks[0][granularity]["s_hat"] == ranks[1][granularity]["s_hat"]
        assert 0.0 < single["damping"] < 1.0
