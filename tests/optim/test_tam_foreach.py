"""TAM / AdaTAM as torch.optim optimizers: the foreach path equals the loop path, no host
synchronisation in a step, group-level ŝ for granularity="global", complex parameters as real
pairs, tensor lr, AdaTAMW, loading torch's SGD / Adam / AdamW state dicts and older checkpoints,
copies that keep their diagnostics, torch's error wording and order of checks."""

import contextlib
import copy
import pickle

import pytest
import torch
from torch import nn

from tenfold.optim import TAM, AdaTAM, AdaTAMW
from tenfold.optim.tam import cosine_from_norms, torque_cosines

F64 = torch.float64
KWARGS = [{}, {"granularity": "global"}, {"damping": False}, {"skip_nonfinite": True},
          {"weight_decay": 0.1, "decoupled_weight_decay": True},
          {"weight_decay": 0.1, "decoupled_weight_decay": False, "maximize": True}]


def _params(dtypes=(torch.float32, F64, torch.float32), seed=0, complex_too=False):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((5, 3), (4,), (2, 2, 3))
    params = [nn.Parameter(torch.randn(s, generator=gen).to(d)) for s, d in zip(shapes, dtypes)]
    if complex_too:
        params.append(nn.Parameter(torch.randn(3, 2, generator=gen, dtype=torch.complex64)))
    return params


def _feed(pairs, steps=8, seed=1, drop=()):
    """The same random gradients (biased so that d varies) to every (optimizer, params) pair;
    ``drop``: (step, index) pairs where that parameter gets no gradient."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) + 0.3 for p in pairs[0][1]]
        for opt, params in pairs:
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = None if (t, i) in drop else g.clone()
            opt.step()


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
@pytest.mark.parametrize("kwargs", KWARGS)
def test_foreach_equals_loop(cls, kwargs):
    """Mixed dtypes (two device/dtype buckets) and a complex parameter in one group."""
    a, b = _params(complex_too=True), _params(complex_too=True)
    oa, ob = cls(a, lr=0.01, foreach=False, **kwargs), cls(b, lr=0.01, foreach=True, **kwargs)
    _feed([(oa, a), (ob, b)], drop={(3, 0)})
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(a, b):
        for key, value in oa.state[p].items():
            torch.testing.assert_close(value, ob.state[q][key], rtol=1e-6, atol=1e-7)
    assert oa.last_damping == pytest.approx(ob.last_damping) if oa.last_damping is not None else ob.last_damping is None


def test_foreach_defaults_to_off_on_cpu_and_the_guard_to_off():
    opt = TAM(_params(), lr=0.1)
    assert opt.defaults["foreach"] is None and opt.defaults["maximize"] is False
    assert AdaTAM(_params()).defaults["foreach"] is None
    assert not any(cls(_params()).defaults["skip_nonfinite"] for cls in (TAM, AdaTAM, AdaTAMW))  # as torch's


def test_vector_cosine_equals_host_cosine_bit_for_bit():
    dots = torch.tensor([0.3, -2.0, 0.0, float("inf"), 0.5, 1e-300, 1.0, float("nan"), 1e-310], dtype=F64)
    m = torch.tensor([1.0, 1.0, 0.0, 1.0, float("nan"), 1e-200, float("inf"), 1.0, 1e-160], dtype=F64)
    g = torch.tensor([0.7, 1.5, 2.0, 1.0, 1.0, 1e-200, 1.0, 1.0, 1e-160], dtype=F64)
    got = torque_cosines(dots, m, g).tolist()
    assert got == [cosine_from_norms(*v) for v in zip(dots.tolist(), m.tolist(), g.tolist())]


# ---------------------------------------------------------------- no host synchronisation

@contextlib.contextmanager
def _no_host_reads(allowed=()):
    """Fail on any Tensor -> Python conversion, except of the tensors in ``allowed`` (by id)."""
    allowed_ids = {id(t) for t in allowed}
    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def guard(name):
        def read(self, *args, **kwargs):
            if id(self) not in allowed_ids:
                raise AssertionError(f"host read Tensor.{name} inside step()")
            return originals[name](self, *args, **kwargs)
        return read

    for name in names:
        setattr(torch.Tensor, name, guard(name))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"granularity": "global"}, {"damping": False},
                                    {"lr": torch.tensor(0.01)}, {"weight_decay": 0.1}])
def test_step_reads_nothing_from_the_device(cls, foreach, kwargs):
    params = _params(complex_too=True)
    opt = cls(params, **({"lr": 0.01} | kwargs), foreach=foreach, skip_nonfinite=True)
    _feed([(opt, params)], steps=1)  # state exists
    steps = [opt.state[p]["step"] for p in params] if cls is AdaTAM else []
    for p in params:
        p.grad = torch.randn_like(p)
    params[0].grad[0, 0] = float("nan")
    with _no_host_reads(allowed=steps):  # only AdaTAM's CPU step counter, as torch.optim.Adam
        opt.step()
    assert opt.skipped_steps == 1


# ---------------------------------------------------------------- granularity="global"

def test_global_s_hat_lives_in_the_group_and_does_not_rewind():
    """Step 2 has no gradient for the group's first parameter: ŝ must still advance from ŝ_1."""
    a, b = (nn.Parameter(torch.randn(4, dtype=F64)) for _ in range(2))
    opt = TAM([a, b], lr=0.1, granularity="global")
    a.grad, b.grad = torch.randn(4, dtype=F64), torch.randn(4, dtype=F64)
    opt.step()
    s1 = float(opt.param_groups[0]["s_hat"])
    m_b = opt.state[b]["momentum_buffer"].clone()
    a.grad, b.grad = None, torch.randn(4, dtype=F64)
    opt.step()
    cos = float(torch.dot(m_b, b.grad) / (m_b.norm() * b.grad.norm()))
    assert float(opt.param_groups[0]["s_hat"]) == pytest.approx(0.9 * s1 + 0.1 * cos, rel=1e-12)
    assert "s_hat" not in opt.state[a] and "s_hat" not in opt.state[b]
    state = opt.state_dict()
    assert torch.is_tensor(state["param_groups"][0]["s_hat"])


def test_global_old_checkpoint_with_s_hat_on_parameters_loads():
    params = _params(dtypes=(F64, F64, F64))
    opt = TAM(params, lr=0.1, granularity="global")
    _feed([(opt, params)], steps=3)
    state = copy.deepcopy(opt.state_dict())
    s_hat = float(state["param_groups"][0].pop("s_hat"))
    for entry in state["state"].values():
        entry["s_hat"] = s_hat  # the old format: a Python float on every parameter
    fresh = TAM(params, lr=0.1, granularity="global")
    fresh.load_state_dict(state)
    assert float(fresh.param_groups[0]["s_hat"]) == s_hat


# ---------------------------------------------------------------- complex parameters

@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("make,reference", [
    (lambda p: TAM(p, lr=0.05, damping=False), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda p: AdaTAM(p, lr=0.01, damping=False, decoupled_weight_decay=False, weight_decay=0.1),
     lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    (lambda p: AdaTAMW(p, lr=0.01, damping=False), lambda p: torch.optim.AdamW(p, lr=0.01)),
])
def test_damping_off_equals_torch_on_complex_parameters(make, reference, foreach):
    a, b = _params(complex_too=True), _params(complex_too=True)
    opt = make(a)
    for group in opt.param_groups:
        group["foreach"] = foreach
    _feed([(opt, a), (reference(b), b)])
    for p, q in zip(a, b):  # torch's complex arithmetic rounds differently from real pairs (no FMA)
        torch.testing.assert_close(p, q, rtol=0 if not p.is_complex() else 1e-6, atol=0 if not p.is_complex() else 1e-7)


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
def test_complex_parameter_is_a_real_pair(cls):
    z = nn.Parameter(torch.randn(5, 3, dtype=torch.complex128))
    r = nn.Parameter(torch.view_as_real(z.detach()).clone())
    oz, orr = cls([z], lr=0.01), cls([r], lr=0.01)
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        g = torch.randn(5, 3, 2, generator=gen, dtype=F64) + 0.2
        z.grad, r.grad = torch.view_as_complex(g.clone()), g.clone()
        oz.step()
        orr.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=0, atol=0)
    assert oz.last_damping == orr.last_damping


# ---------------------------------------------------------------- tensor lr, AdaTAMW, default lr

@pytest.mark.parametrize("cls", [TAM, AdaTAM])
@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_lr_equals_float_lr(cls, foreach):
    a, b = _params(), _params()
    oa, ob = cls(a, lr=0.01, foreach=foreach), cls(b, lr=torch.tensor(0.01), foreach=foreach)
    _feed([(oa, a), (ob, b)])
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


def test_tensor_lr_follows_a_scheduler():
    a, b = _params(), _params()
    oa, ob = TAM(a, lr=0.1), TAM(b, lr=torch.tensor(0.1))
    sa, sb = (torch.optim.lr_scheduler.StepLR(o, 2, 0.5) for o in (oa, ob))
    gen = torch.Generator().manual_seed(3)
    for _ in range(6):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        oa.step(), ob.step(), sa.step(), sb.step()
    assert torch.is_tensor(ob.param_groups[0]["lr"])
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


def test_adatamw_is_adatam_with_adamw_decay():
    opt = AdaTAMW(_params())
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-2 and group["decoupled_weight_decay"] is True
    a, b = _params(), _params()
    _feed([(AdaTAMW(a, lr=0.01), a), (AdaTAM(b, lr=0.01, weight_decay=1e-2), b)])
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_tam_has_a_default_lr():
    params = _params()
    opt = TAM([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}])
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[1]["lr"] == 0.5
    _feed([(opt, params)], steps=2)


# ---------------------------------------------------------------- state dicts

@pytest.mark.parametrize("make,reference", [
    (lambda p: TAM(p, lr=0.5, damping=False), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda p: AdaTAM(p, lr=0.5, damping=False), lambda p: torch.optim.Adam(p, lr=0.01)),
    (lambda p: AdaTAMW(p, lr=0.5, damping=False), lambda p: torch.optim.AdamW(p, lr=0.01)),
])
def test_torch_state_dict_loads_and_continues_like_torch(make, reference):
    """TAM-only keys (decay, damping, granularity, ...) are missing from torch's state dicts."""
    a = _params()
    ref = reference(a)
    _feed([(ref, a)], steps=3)
    b = [nn.Parameter(p.detach().clone()) for p in a]
    opt = make(b)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    for group in opt.param_groups:
        assert group["decay"] == 0.9 and group["granularity"] == "tensor" and group["skip_nonfinite"] is False
        group["damping"] = False  # loaded groups keep torch's keys; TAM's own take their defaults
    _feed([(ref, a), (opt, b)], steps=3, seed=5)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    fresh = make([nn.Parameter(p.detach().clone()) for p in a])  # damping on: the next step runs
    fresh.load_state_dict(copy.deepcopy(ref.state_dict()))
    fresh.param_groups[0]["damping"] = True
    _feed([(fresh, fresh.param_groups[0]["params"])], steps=2)
    assert fresh.last_damping is not None


@pytest.mark.parametrize("foreach", [False, True])
def test_numeric_step_in_a_loaded_state_dict_becomes_a_tensor(foreach):
    a = _params()
    opt = AdaTAM(a, lr=0.01, foreach=foreach)
    _feed([(opt, a)], steps=3)
    state = copy.deepcopy(opt.state_dict())
    for entry in state["state"].values():
        entry["step"] = entry["step"].item()
        entry["s_hat"] = entry["s_hat"].item()  # the older format kept ŝ as a Python float
    b = [nn.Parameter(p.detach().clone()) for p in a]
    other = AdaTAM(b, lr=0.01, foreach=foreach)
    other.load_state_dict(state)
    assert all(torch.is_tensor(other.state[p]["step"]) and other.state[p]["step"].device.type == "cpu" for p in b)
    assert all(other.state[p]["s_hat"].dtype == F64 for p in b)
    _feed([(opt, a), (other, b)], steps=2, seed=4)
    for p, q in zip(a, b):
        assert torch.equal(p, q)


@pytest.mark.parametrize("granularity", ["tensor", "global"])
def test_loading_does_not_modify_the_given_s_hat(granularity):
    """ŝ (per tensor, or the group's) is copied on load; torch shares the moment tensors, as for SGD."""
    a = _params()
    opt = TAM(a, lr=0.01, granularity=granularity)
    _feed([(opt, a)], steps=2)
    state = copy.deepcopy(opt.state_dict())
    kept = copy.deepcopy(state)
    other = TAM(_params(), lr=0.01, granularity=granularity)
    other.load_state_dict(state)
    _feed([(other, other.param_groups[0]["params"])], steps=2)
    assert _same(state["param_groups"], kept["param_groups"])
    assert _same([s.get("s_hat") for s in state["state"].values()], [s.get("s_hat") for s in kept["state"].values()])


def _same(x, y) -> bool:
    if torch.is_tensor(x):
        return torch.is_tensor(y) and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    return x == y


# ---------------------------------------------------------------- copies keep their diagnostics

@pytest.mark.parametrize("cls", [TAM, AdaTAM])
@pytest.mark.parametrize("copier", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
def test_copies_keep_diagnostics_and_step(cls, copier):
    params = _params()
    opt = cls(params, lr=0.01, skip_nonfinite=True)
    _feed([(opt, params)], steps=3)
    params[0].grad = torch.full_like(params[0], float("inf"))
    opt.step()
    twin = copier(opt)
    assert twin.last_damping == opt.last_damping is not None
    assert twin.last_group_damping == opt.last_group_damping
    assert twin.skipped_steps == opt.skipped_steps == 1
    twin_params = twin.param_groups[0]["params"]
    for p in twin_params:
        p.grad = torch.full_like(p, float("nan"))
    twin.step()  # a non-finite gradient on a copy: skipped, counted
    assert twin.skipped_steps == 2 and opt.skipped_steps == 1


# ---------------------------------------------------------------- torch's error wording and order

class _Unreadable:
    def __iter__(self):
        raise AssertionError("params were read before the arguments were checked")


@pytest.mark.parametrize("cls", [TAM, AdaTAM, AdaTAMW])
@pytest.mark.parametrize("lr,message", [(torch.tensor([0.1, 0.2]), "Tensor lr must be 1-element"),
                                        (-0.1, "Invalid learning rate: -0.1")])
def test_lr_is_checked_before_params_with_torch_wording(cls, lr, message):
    with pytest.raises(ValueError, match=message):
        cls(_Unreadable(), lr=lr)


def test_sparse_gradient_is_refused():
    w = nn.Parameter(torch.randn(4))
    opt = TAM([w], lr=0.1)
    w.grad = torch.randn(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# ---------------------------------------------------------------- torch.compile (slow)

@pytest.mark.slow
@pytest.mark.parametrize("cls", [TAM, AdaTAM])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("skip_nonfinite", [True, False])
def test_compiled_step_has_no_graph_breaks_or_recompiles(cls, foreach, skip_nonfinite):
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    params = [nn.Parameter(torch.randn(8, 4)) for _ in range(6)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = cls(params, lr=0.01, foreach=foreach, skip_nonfinite=skip_nonfinite)
    opt.step()  # state exists
    explanation = torch._dynamo.explain(opt.step)()
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    torch._dynamo.reset()
    counter = CompileCounter()
    step = torch.compile(opt.step, backend=counter)
    for _ in range(4):
        for p in params:
            p.grad = torch.randn_like(p)
        step()
    assert counter.frame_count == 1  # one graph for every parameter and every step


@pytest.mark.parametrize("cls", [TAM, AdaTAM])
@pytest.mark.parametrize("foreach", [False, True])
def test_guard_zeroes_gradients_only_on_a_skipped_step(cls, foreach):
    params = _params()
    opt = cls(params, lr=0.01, foreach=foreach, skip_nonfinite=True)
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))  # a normal step leaves p.grad
    before = [p.detach().clone() for p in params]
    params[1].grad[0] = float("nan")
    opt.step()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)  # zeroed in place
    assert all(torch.equal(p, q) for p, q in zip(params, before)) and opt.skipped_steps == 1
    unguarded = cls(params, lr=0.01, foreach=foreach, skip_nonfinite=False)
    params[1].grad[0] = float("nan")
    unguarded.step()  # as torch's optimizers: the NaN reaches that parameter, ŝ stays finite
    assert torch.isnan(params[1]).any() and all(torch.isfinite(unguarded.state[p]["s_hat"]) for p in params)
