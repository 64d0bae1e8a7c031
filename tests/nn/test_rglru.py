"""RG-LRU, linear scans and the Griffin temporal block against their equations."""

import math

import pytest
import torch
import torch.nn.functional as F

from tenfold.nn.rglru import (
    FusedRGLRUFn, LinearScanFn, RGLRU, RGLRUState, RecurrentBlock, TemporalBlock, linear_scan, ring_init_,
    sqrt_bounded_grad,
)
from tenfold.utils import activation_bytes


def _ab(batch=3, steps=9, width=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, steps, width, generator=g, dtype=dtype)
    b = torch.randn(batch, steps, width, generator=g, dtype=dtype)
    h0 = torch.randn(batch, width, generator=g, dtype=dtype)
    return a, b, h0


@pytest.mark.parametrize("impl", ["custom", "doubling"])
@pytest.mark.parametrize("steps", [1, 7, 16, 33])
def test_scans_agree_with_loop(impl, steps):
    a, b, h0 = _ab(steps=steps)
    for init in (None, h0):
        ref = linear_scan(a, b, init, impl="loop")
        out = linear_scan(a, b, init, impl=impl)
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_loop_is_the_recurrence():
    a, b, h0 = _ab(steps=4, dtype=torch.float64)
    h = linear_scan(a, b, h0, impl="loop")
    assert torch.allclose(h[:, 0], a[:, 0] * h0 + b[:, 0])
    assert torch.allclose(h[:, 3], a[:, 3] * h[:, 2] + b[:, 3])


def test_custom_scan_gradcheck_float64():
    a, b, h0 = (t.requires_grad_() for t in _ab(batch=2, steps=6, width=3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda a, b, h: LinearScanFn.apply(a, b, h), (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b: LinearScanFn.apply(a, b, None), (a, b))


@pytest.mark.parametrize("impl", ["custom", "doubling"])
def test_scan_gradients_equal_loop(impl):
    grads = {}
    for name in ("loop", impl):
        a, b, h0 = (t.requires_grad_() for t in _ab(steps=12, dtype=torch.float64))
        out = linear_scan(a, b, h0, impl=name)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads[name] = (a.grad, b.grad, h0.grad)
    for g_ref, g in zip(grads["loop"], grads[impl]):
        assert torch.allclose(g, g_ref, atol=1e-12)


def test_custom_scan_saves_less_than_loop():
    a, b, _ = (t.requires_grad_() for t in _ab(steps=32, width=16))
    loop = activation_bytes(lambda: linear_scan(a * 1.0, b * 1.0, impl="loop"))
    custom = activation_bytes(lambda: linear_scan(a * 1.0, b * 1.0, impl="custom"))
    assert custom <= 2 * a.nbytes + 8  # a and h (h0 absent)
    assert custom < loop


def test_scan_bad_shapes():
    a, b, h0 = _ab()
    with pytest.raises(ValueError, match="equal shapes"):
        linear_scan(a, b[:, 1:])
    with pytest.raises(ValueError, match="h0"):
        linear_scan(a, b, h0[:, 1:])
    with pytest.raises(ValueError, match="impl"):
        linear_scan(a, b, impl="fft")


def test_sqrt_bounded_grad():
    x = torch.tensor([0.0, 1e-8, 0.25, 4.0], dtype=torch.float64, requires_grad=True)
    y = sqrt_bounded_grad(x)
    assert torch.equal(y.detach(), torch.sqrt(x.detach()))
    y.backward(torch.full_like(x, 2.0))
    assert torch.allclose(x.grad, torch.tensor([2000.0, 2000.0, 2.0, 0.5], dtype=torch.float64))


def test_ring_init():
    lam = ring_init_(torch.empty(100_000, dtype=torch.float64), 0.5, 0.999)
    a = torch.sigmoid(-lam)
    assert a.min() >= 0.5 - 1e-6 and a.max() <= 0.999 + 1e-6
    assert torch.allclose(F.softplus(lam), -torch.log(a), atol=1e-9)
    u = ((a ** 2 - 0.25) / (0.999 ** 2 - 0.25)).sort().values  # should be U[0, 1]
    n = u.numel()
    ks = torch.maximum(torch.arange(1, n + 1) / n - u, u - torch.arange(n) / n).max()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov at the 1% level


def _reference_rglru(lru: RGLRU, v: torch.Tensor) -> torch.Tensor:
    """Literal per-step RG-LRU of Griffin eq. (1)-(4) with the t = 0 reset, in float64."""
    h = torch.zeros(v.shape[0], v.shape[2], dtype=v.dtype)
    out = []
    for t in range(v.shape[1]):
        x = v[:, t]
        r = torch.sigmoid(lru.a_gate(x))
        i = torch.sigmoid(lru.input_gate(x))
        a = torch.sigmoid(-lru.a_param) ** (lru.c * r)
        if t == 0:
            h = i * x
        else:
            h = a * h + torch.sqrt(1 - a ** 2) * (i * x)
        out.append(h)
    return torch.stack(out, 1)


def _lru(scan="custom", fused=True, **kw):
    torch.manual_seed(0)
    return RGLRU(width=8, num_heads=2, scan=scan, fused=fused, **kw).double()


@pytest.mark.parametrize("scan,fused", [("loop", False), ("custom", False), ("doubling", False), ("custom", True)])
def test_rglru_matches_reference(scan, fused):
    lru = _lru(scan, fused)
    v = torch.randn(3, 7, 8, dtype=torch.float64)
    y, state = lru(v)
    assert torch.allclose(y, _reference_rglru(lru, v), atol=1e-10)
    assert state.t == 7 and torch.equal(state.h, y[:, -1])


def test_rglru_reset_ignores_incoming_state():
    lru = _lru()
    v = torch.randn(2, 3, 8, dtype=torch.float64)
    y, _ = lru(v, RGLRUState(torch.randn(2, 8, dtype=torch.float64) * 100, 0))
    i0 = torch.sigmoid(lru.input_gate(v[:, 0]))
    assert torch.allclose(y[:, 0], i0 * v[:, 0])


def test_rglru_chunks_and_steps_equal_full():
    lru = _lru()
    v = torch.randn(2, 10, 8, dtype=torch.float64)
    full, _ = lru(v)
    first, state = lru(v[:, :4])
    second, _ = lru(v[:, 4:], state)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-12)
    state, steps = None, []
    for t in range(10):
        y_t, state = lru.step(v[:, t], state)
        steps.append(y_t)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-12)


def test_rglru_limits():
    lru = _lru()
    with torch.no_grad():
        lru.a_gate.bias.fill_(-1e4)  # r_t = 0: a_t = 1 and m_t = 0, the state never changes after t = 0
    v = torch.randn(2, 6, 8, dtype=torch.float64)
    y, _ = lru(v)
    assert torch.allclose(y, y[:, :1].expand_as(y), atol=1e-12)
    fast = _lru(min_rad=1e-4, max_rad=1e-4)  # a -> 0 (with r_t = 1): h_t = i_t v_t
    with torch.no_grad():
        fast.a_gate.bias.fill_(1e4)
    y, _ = fast(v)
    assert torch.allclose(y, torch.sigmoid(fast.input_gate(v)) * v, atol=1e-6)


def test_rglru_init_and_args():
    lru = RGLRU(width=12, num_heads=3)
    assert lru.input_gate.weight.shape == (3, 4, 4)
    assert abs(float(lru.a_gate.weight.detach().std()) - 0.5) < 0.15  # N(0, 1/fan_in), fan_in = 4
    assert torch.all(lru.input_gate.bias == 0)
    with pytest.raises(ValueError, match="num_heads"):
        RGLRU(width=10, num_heads=3)
    with pytest.raises(ValueError, match="min_rad"):
        RGLRU(width=8, num_heads=2, min_rad=0.9, max_rad=0.5)
    with pytest.raises(ValueError, match="scan"):
        RGLRU(width=8, num_heads=2, scan="fft", fused=False)
    with pytest.raises(ValueError, match="fused=False"):
        RGLRU(width=8, num_heads=2, scan="loop")
    with pytest.raises(ValueError, match=r"\(batch, T, 12\)"):
        lru(torch.randn(2, 5, 11))


def _fused_inputs(seed=0):
    lru = _lru()
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 8, generator=g, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in (lru.input_gate.weight, lru.input_gate.bias,
                                                            lru.a_gate.weight, lru.a_gate.bias, lru.a_param)]
    return v, h0, params


@pytest.mark.parametrize("reset", [True, False])
def test_fused_rglru_gradcheck_float64(reset):
    v, h0, params = _fused_inputs()
    assert torch.autograd.gradcheck(lambda v, h0, *p: FusedRGLRUFn.apply(v, h0, reset, *p, 8.0, 1000.0),
                                    (v, h0, *params))
    assert torch.autograd.gradcheck(lambda v, *p: FusedRGLRUFn.apply(v, None, reset, *p, 8.0, 1000.0), (v, *params))


def test_fused_rglru_bounded_sqrt_gradient():
    # with r_t = 1 and a -> 1 the multiplier's derivative hits the bound; the fused and plain paths agree there
    grads = {}
    for fused in (True, False):
        lru = _lru(fused=fused, min_rad=0.999999, max_rad=0.999999)
        with torch.no_grad():
            lru.a_gate.bias.fill_(1e4)
        v = torch.randn(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y, _ = lru(v)
        grads[fused] = torch.autograd.grad(y.sum(), [v, lru.a_param])
    for g_fused, g_plain in zip(grads[True], grads[False]):
        assert torch.allclose(g_fused, g_plain, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_fused_rglru_equals_plain_outputs_and_gradients(dtype, tol):
    torch.manual_seed(0)
    fused = RGLRU(width=16, num_heads=4).to(dtype)
    plain = RGLRU(width=16, num_heads=4, fused=False, scan="loop").to(dtype)
    plain.load_state_dict(fused.state_dict())
    v = torch.randn(3, 11, 16, dtype=dtype, requires_grad=True)
    for state in (None, RGLRUState(torch.randn(3, 16, dtype=dtype, requires_grad=True), 5)):
        results = []
        for lru in (fused, plain):
            y, new_state = lru(v, state)
            weight = torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)
            inputs = [v, *lru.parameters()] + ([state.h] if state is not None else [])
            results.append((y, new_state.h, torch.autograd.grad((y * weight).sum(), inputs)))
        (y_f, h_f, g_f), (y_p, h_p, g_p) = results
        assert torch.allclose(y_f, y_p, rtol=tol, atol=tol) and torch.allclose(h_f, h_p, rtol=tol, atol=tol)
        for a, b in zip(g_f, g_p):
            assert torch.allclose(a, b, rtol=tol, atol=tol)


def test_fused_rglru_saves_only_input_and_output():
    torch.manual_seed(0)
    fused = RGLRU(width=16, num_heads=2)
    plain = RGLRU(width=16, num_heads=2, fused=False)
    v = torch.randn(4, 32, 16, requires_grad=True)
    saved = activation_bytes(lambda: fused(v * 1.0))
    assert saved <= 2 * v.nbytes + 64  # v and h (h is the output, also kept by the next layer)
    assert activation_bytes(lambda: plain(v * 1.0)) > 4 * saved


@pytest.mark.parametrize("cls", [RecurrentBlock, TemporalBlock])
def test_blocks_step_equals_forward(cls):
    torch.manual_seed(0)
    block = cls(width=8, lru_width=16, num_heads=2, depth=4).double()
    x = torch.randn(3, 9, 8, dtype=torch.float64)
    full, state_full = block(x)
    first, state = block(x[:, :5])
    second, state = block(x[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-12)
    state, steps = None, []
    for t in range(9):
        y_t, state = block.step(x[:, t], state)
        steps.append(y_t)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-12)
    assert state.t == 9 and state.conv.shape == (3, 3, 16) and state.h.shape == (3, 16)


def test_recurrent_block_conv_init_scale():
    torch.manual_seed(0)
    official = RecurrentBlock(width=64, lru_width=1024, num_heads=4)
    wide = RecurrentBlock(width=64, lru_width=1024, num_heads=4, conv_init_scale=1.0)
    assert abs(float(official.conv1d.weight.detach().std()) - 0.05) < 0.005  # N(0, 0.01 / 4)
    assert abs(float(wide.conv1d.weight.detach().std()) - 0.5) < 0.05  # N(0, 1 / 4)
    with pytest.raises(ValueError, match="conv_init_scale"):
        RecurrentBlock(width=8, lru_width=16, num_heads=2, conv_init_scale=0.0)


def test_recurrent_block_parameter_count():
    width, lru, heads = 24, 48, 4
    block = TemporalBlock(width=width, lru_width=lru, num_heads=heads)
    expected = 3 * width * lru + 2 * lru ** 2 // heads + 10 * lru + 2 * width  # projections, block-diagonal gates, per-channel vectors
    assert sum(p.numel() for p in block.parameters()) == expected
    out_std = float(block.block.linear_out.weight.detach().std())
    assert abs(out_std - math.sqrt(2 / 12 / lru)) < 0.2 * math.sqrt(2 / 12 / lru)
