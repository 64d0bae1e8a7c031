import math

import pytest
import torch

from tenfold.nn.xlstm import (SLSTMCell, mlstm_chunkwise, mlstm_initial_state, mlstm_parallel,
                              mlstm_recurrent, mlstm_step)


def cell_inputs(batch=2, heads=3, seq=13, dk=4, dv=5, gate_scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, heads, seq, dk, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(batch, heads, seq, dv, generator=g, dtype=dtype)
    i_pre = gate_scale * torch.randn(batch, heads, seq, generator=g, dtype=dtype)
    f_pre = 2.0 + torch.randn(batch, heads, seq, generator=g, dtype=dtype)
    return q, k, v, i_pre, f_pre


def naive_mlstm(q, k, v, i_pre, f_pre):
    """Unstabilised mLSTM straight from the definition (fine for small gates in float64)."""
    batch, heads, seq, dk = q.shape
    C = torch.zeros(batch, heads, v.shape[-1], dk, dtype=q.dtype)
    n = torch.zeros(batch, heads, dk, dtype=q.dtype)
    out = []
    for t in range(seq):
        f, i = torch.sigmoid(f_pre[:, :, t]), torch.exp(i_pre[:, :, t])
        kt = k[:, :, t] / math.sqrt(dk)
        C = f[..., None, None] * C + i[..., None, None] * v[:, :, t, :, None] * kt[..., None, :]
        n = f[..., None] * n + i[..., None] * kt
        num = (C @ q[:, :, t, :, None])[..., 0]
        den = torch.clamp((n * q[:, :, t]).sum(-1).abs(), min=1.0)
        out.append(num / den[..., None])
    return torch.stack(out, 2)


def assert_states_equal(a, b, atol=1e-10):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


def test_recurrent_equals_the_unstabilised_definition():
    inputs = cell_inputs()
    h, _ = mlstm_recurrent(*inputs)
    torch.testing.assert_close(h, naive_mlstm(*inputs), atol=1e-10, rtol=0)


@pytest.mark.parametrize("gate_scale", [1.0, 30.0])  # 30: input gates up to ~e^100, naive exp would overflow
@pytest.mark.parametrize("chunk_size", [1, 4, 13, 64])
def test_parallel_chunkwise_and_recurrent_agree_with_equal_final_states(gate_scale, chunk_size):
    inputs = cell_inputs(gate_scale=gate_scale)
    h_rec, s_rec = mlstm_recurrent(*inputs)
    h_par, s_par = mlstm_parallel(*inputs)
    h_chk, s_chk = mlstm_chunkwise(*inputs, chunk_size=chunk_size)
    assert torch.isfinite(h_rec).all()
    torch.testing.assert_close(h_par, h_rec, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h_chk, h_rec, atol=1e-10, rtol=1e-10)
    assert_states_equal(s_par, s_rec)
    assert_states_equal(s_chk, s_rec)


def test_state_carries_across_calls():
    q, k, v, i_pre, f_pre = cell_inputs(seq=20)
    h_full, s_full = mlstm_parallel(q, k, v, i_pre, f_pre)
    cut = 7
    h_a, s_a = mlstm_chunkwise(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], i_pre[:, :, :cut], f_pre[:, :, :cut], 3)
    h_b, s_b = mlstm_parallel(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], i_pre[:, :, cut:], f_pre[:, :, cut:], s_a)
    torch.testing.assert_close(torch.cat([h_a, h_b], 2), h_full, atol=1e-10, rtol=0)
    assert_states_equal(s_b, s_full)


def test_output_does_not_depend_on_the_stabiliser_start():
    q, k, v, i_pre, f_pre = cell_inputs()
    fresh = mlstm_initial_state(q, v)
    shifted = fresh._replace(m=torch.full_like(fresh.m, -30.0))  # C = n = 0, so only m differs
    torch.testing.assert_close(mlstm_recurrent(q, k, v, i_pre, f_pre, shifted)[0],
                               mlstm_recurrent(q, k, v, i_pre, f_pre, fresh)[0], atol=1e-12, rtol=0)


def test_gradients_of_parallel_and_recurrent_agree():
    inputs = [t.clone().requires_grad_() for t in cell_inputs(seq=6)]
    torch.autograd.gradcheck(lambda *a: mlstm_parallel(*a)[0], inputs)
    grads_par = torch.autograd.grad(mlstm_parallel(*inputs)[0].square().sum(), inputs)
    grads_rec = torch.autograd.grad(mlstm_recurrent(*inputs)[0].square().sum(), inputs)
    for a, b in zip(grads_par, grads_rec):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_float32_large_gates_stay_finite():
    inputs = cell_inputs(gate_scale=60.0, dtype=torch.float32, seq=40)
    h, state = mlstm_chunkwise(*inputs, chunk_size=16)
    assert torch.isfinite(h).all() and all(torch.isfinite(s).all() for s in state)


def test_bad_shapes_raise():
    q, k, v, i_pre, f_pre = cell_inputs()
    with pytest.raises(ValueError, match="gate pre-activations"):
        mlstm_parallel(q, k, v, i_pre[..., :-1], f_pre)
    with pytest.raises(ValueError, match="dk"):
        mlstm_recurrent(q, k[..., :-1], v, i_pre, f_pre)
    with pytest.raises(ValueError, match="chunk_size"):
        mlstm_chunkwise(q, k, v, i_pre, f_pre, chunk_size=0)


def test_mlstm_step_matches_first_recurrent_output():
    q, k, v, i_pre, f_pre = cell_inputs(seq=1)
    h_t, _ = mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i_pre[:, :, 0], f_pre[:, :, 0], mlstm_initial_state(q, v))
    # one step from an empty state: C = v k^T/sqrt(d) * 1, n = k/sqrt(d), h = v (k.q/sqrt d)/max(|k.q/sqrt d|, e^-i)
    kq = (k[:, :, 0] * q[:, :, 0]).sum(-1) / 2.0
    expected = v[:, :, 0] * (kq / torch.maximum(kq.abs(), torch.exp(-i_pre[:, :, 0])))[..., None]
    torch.testing.assert_close(h_t, expected, atol=1e-12, rtol=0)


def naive_slstm(cell, pre):
    """sLSTM without the stabiliser: i = exp(i~), f = sigmoid(f~)."""
    batch, seq, _, width = pre.shape
    heads, head = cell.num_heads, width // cell.num_heads
    h = c = n = torch.zeros(batch, width, dtype=pre.dtype)
    out = []
    for t in range(seq):
        rec = torch.stack([torch.cat([h[:, j * head:(j + 1) * head] @ cell.recurrent[g, j].T for j in range(heads)], -1)
                           for g in range(4)], 1)
        i_pre, f_pre, z_pre, o_pre = (pre[:, t] + rec).unbind(1)
        i, f = torch.exp(i_pre), torch.sigmoid(f_pre)
        c, n = f * c + i * torch.tanh(z_pre), f * n + i
        h = torch.sigmoid(o_pre) * c / n
        out.append(h)
    return torch.stack(out, 1)


def test_slstm_matches_the_unstabilised_definition_and_steps_equal_sequence():
    torch.manual_seed(0)
    cell = SLSTMCell(width=8, num_heads=2).double()
    with torch.no_grad():
        cell.recurrent.normal_(0, 0.3)  # non-zero R to exercise the recurrent path
    pre = torch.randn(3, 9, 4, 8, dtype=torch.float64)
    h, state = cell(pre)
    torch.testing.assert_close(h, naive_slstm(cell, pre), atol=1e-10, rtol=0)
    s, stepped = None, []
    for t in range(9):
        h_t, s = cell.step(pre[:, t], s)
        stepped.append(h_t)
    torch.testing.assert_close(torch.stack(stepped, 1), h, atol=0, rtol=0)
    h_a, s_a = cell(pre[:, :4])
    h_b, _ = cell(pre[:, 4:], s_a)
    torch.testing.assert_close(torch.cat([h_a, h_b], 1), h, atol=1e-12, rtol=0)


def test_slstm_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        SLSTMCell(width=10, num_heads=4)
    with pytest.raises(ValueError, match="pre-activations"):
        SLSTMCell(width=8, num_heads=2).step(torch.randn(2, 3, 8))


@pytest.mark.parametrize("slstm_at, backend", [((), "parallel"), ((1,), "chunkwise")])
def test_stack_step_equals_forward_and_state_carries(slstm_at, backend):
    from tenfold.nn.xlstm import XLSTMStack

    torch.manual_seed(0)
    stack = XLSTMStack(dim=16, num_blocks=3, num_heads=2, slstm_at=slstm_at, backend=backend, chunk_size=4).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    y, _ = stack(x)
    state, stepped = None, []
    for t in range(11):
        y_t, state = stack.step(x[:, t], state)
        stepped.append(y_t)
    torch.testing.assert_close(torch.stack(stepped, 1), y, atol=1e-10, rtol=0)
    y_a, s_a = stack(x[:, :5])
    y_b, _ = stack(x[:, 5:], s_a)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y, atol=1e-10, rtol=0)


def test_stack_trains_every_parameter():
    from tenfold.nn.xlstm import XLSTMStack

    torch.manual_seed(0)
    stack = XLSTMStack(dim=16, num_blocks=2, num_heads=2, slstm_at=(1,))
    with torch.no_grad():
        for block in stack.blocks:  # the default zero init leaves R and the gate weights without gradient paths
            for p in block.parameters():
                p.add_(0.01 * torch.randn_like(p))
    y, _ = stack(torch.randn(2, 7, 16))
    y.square().mean().backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    with pytest.raises(ValueError, match="slstm_at"):
        XLSTMStack(dim=16, num_blocks=2, slstm_at=(2,))
    with pytest.raises(ValueError, match="batch, seq"):
        stack(torch.randn(2, 16))


def test_stack_step_gradients_equal_the_forward_gradients():
    """The step's in-place multiply-adds act on fresh tensors only: autograd through stepping works and
    gives the gradients of the parallel form."""
    from tenfold.nn.xlstm import XLSTMStack

    torch.manual_seed(0)
    stack = XLSTMStack(dim=8, num_blocks=2, num_heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y, _ = stack(x)
    forward_grads = torch.autograd.grad(y.square().sum(), list(stack.parameters()))
    state, stepped = None, []
    for t in range(5):
        y_t, state = stack.step(x[:, t], state)
        stepped.append(y_t)
    step_grads = torch.autograd.grad(torch.stack(stepped, 1).square().sum(), list(stack.parameters()))
    for a, b in zip(forward_grads, step_grads):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_step_leaves_the_given_state_unchanged():
    from tenfold.nn.xlstm import XLSTMStack

    torch.manual_seed(0)
    stack = XLSTMStack(dim=8, num_blocks=2, num_heads=2)
    _, state = stack(torch.randn(1, 6, 8))
    before = [t.clone() for t in _flat(state)]
    stack.step(torch.randn(1, 8), state)
    assert all(torch.equal(a, b) for a, b in zip(before, _flat(state)))


def _flat(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in _flat(s)]


@pytest.mark.parametrize("slstm_at", [(), (1,)])
def test_stepper_equals_step_and_sees_in_place_parameter_updates(slstm_at):
    from tenfold.nn.xlstm import XLSTMStack

    torch.manual_seed(0)
    stack = XLSTMStack(dim=8, num_blocks=2, num_heads=2, slstm_at=slstm_at)
    stepper = stack.stepper()
    x = torch.randn(3, 4, 8)
    state_a = state_b = None
    for t in range(4):
        y_a, state_a = stack.step(x[:, t], state_a)
        y_b, state_b = stepper(x[:, t], state_b)
        assert torch.equal(y_a, y_b)
    with torch.no_grad():  # an optimizer-style in-place update after the stepper was made
        for p in stack.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert torch.equal(stepper(x[:, 0], state_b)[0], stack.step(x[:, 0], state_b)[0])
    with pytest.raises(ValueError, match="x_t"):
        stepper(torch.randn(3, 7))
