"""Adaptive-temperature softmax (Veličković et al., 2024): the polynomial and its coefficient order,
the identity outside its window, entropy never rising, the dispersion bounds (Lemma 2.1),
dH/dbeta = -beta Var_p(e), streaming entropy = dense entropy, two-pass = dense attention, masks and
low-precision inputs without NaN, gradients, log-n scaling and the polynomial fit."""

import math

import pytest
import torch

from tenfold.nn.adaptive_temperature import (
    PAPER_COEFFS, SOFTMAX_FUNCTIONS, AdaptiveSoftmax, adaptive_beta, adaptive_temperature_softmax,
    attention_row_stats, entropy_from_logits, fit_polynomial, log_n_scaled_softmax, polyval, two_pass_attention,
)


def _rows_with_entropy(target: float, n: int = 256) -> torch.Tensor:
    """A row of n logits (one spike of height h over zeros) whose softmax entropy is ``target``."""
    lo, hi = 0.0, 60.0
    for _ in range(100):
        h = (lo + hi) / 2
        row = torch.zeros(n, dtype=torch.float64)
        row[0] = h
        lo, hi = (h, hi) if entropy_from_logits(row) > target else (lo, h)
    return row.float()


# ---------------------------------------------------------------------------------------------------
# the polynomial


def test_beta_values_pin_the_coefficient_order():
    h = torch.tensor([1.0, 2.0, math.log(16), 4.41, math.log(256), math.log(1024)])
    expected = torch.tensor([1.270, 2.099, 2.227, 2.421, 1.783, 1.0])
    torch.testing.assert_close(adaptive_beta(h), expected, atol=1e-3, rtol=0)
    reversed_at_2 = polyval(PAPER_COEFFS[::-1], torch.tensor(2.0))
    assert abs(float(reversed_at_2) - 2.405) < 1e-3  # the ascending-powers bug gives a different number


def test_beta_peaks_near_2_42_at_h_4_41():
    h = torch.linspace(0, 10, 100_001, dtype=torch.float64)
    beta = adaptive_beta(h)
    assert abs(float(beta.max()) - 2.42) < 5e-3
    assert abs(float(h[beta.argmax()]) - 4.41) < 0.02


def test_window_where_beta_exceeds_one():
    h = torch.linspace(0, 10, 100_001, dtype=torch.float64)
    above = h[adaptive_beta(h) > 1]
    assert abs(float(above.min()) - 0.8486) < 1e-3 and abs(float(above.max()) - 5.9445) < 1e-3
    assert torch.all(adaptive_beta(h) >= 1)


def test_polyval_is_horner_highest_degree_first():
    x = torch.linspace(-2, 3, 11, dtype=torch.float64)
    torch.testing.assert_close(polyval((2.0, -1.0, 3.0), x), 2 * x**2 - x + 3)


def test_fit_polynomial_recovers_coefficients():
    h = torch.linspace(0.5, 6, 200, dtype=torch.float64)
    coeffs = fit_polynomial(h, polyval(PAPER_COEFFS, h))
    assert len(coeffs) == 5
    torch.testing.assert_close(torch.tensor(coeffs, dtype=torch.float64), torch.tensor(PAPER_COEFFS, dtype=torch.float64), atol=1e-8,
                               rtol=0)
    with pytest.raises(ValueError, match="degree"):
        fit_polynomial(h[:3], h[:3], degree=4)


# ---------------------------------------------------------------------------------------------------
# the softmax


@pytest.mark.parametrize("entropy", [0.3, 0.8, 6.0, 6.5])
def test_identity_outside_the_window(entropy):
    row = _rows_with_entropy(entropy, n=4096)
    assert abs(float(entropy_from_logits(row)) - entropy) < 1e-3
    out, stats = adaptive_temperature_softmax(row, return_stats=True)
    assert float(stats["beta"]) == 1.0
    torch.testing.assert_close(out, torch.softmax(row, -1), atol=0, rtol=0)


def test_inside_the_window_sharpens_by_beta():
    row = _rows_with_entropy(2.0, n=64)
    out = adaptive_temperature_softmax(row)
    torch.testing.assert_close(out, torch.softmax(2.099 * row, -1), atol=1e-3, rtol=0)


def test_entropy_never_rises_and_beta_at_least_one():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 16, 300, 5000):
        for scale in (0.1, 1.0, 5.0, 30.0):
            logits = torch.randn(64, n, generator=gen) * scale
            out, stats = adaptive_temperature_softmax(logits, return_stats=True)
            after = -(out * out.clamp_min(1e-30).log()).sum(-1)
            assert torch.all(stats["beta"] >= 1)
            assert torch.all(after <= stats["entropy"] + 1e-4)


def test_uniform_rows_stay_uniform_and_unit_coefficient_is_plain_softmax():
    torch.testing.assert_close(adaptive_temperature_softmax(torch.full((3, 50), 0.7)), torch.full((3, 50), 1 / 50))
    logits = torch.randn(8, 40) * 3
    out = adaptive_temperature_softmax(logits, coeffs=(0.0, 0.0, 0.0, 0.0, 1.0))
    torch.testing.assert_close(out, torch.softmax(logits, -1), atol=0, rtol=0)


def test_entropy_in_nats_and_exact_form_matches_epsilon_form():
    assert abs(float(entropy_from_logits(torch.zeros(16))) - math.log(16)) < 1e-6
    logits = torch.randn(32, 1000) * 4
    diff = entropy_from_logits(logits) - entropy_from_logits(logits, eps=1e-9)
    assert float(diff.abs().max()) <= 1000 * 1e-9 + 1e-5


def test_dispersion_bounds_on_bounded_logits():
    """Lemma 2.1: logits in [m, M] give e^-delta / n <= alpha_k <= e^delta / n, and the top item
    alpha_max <= e^delta / (e^delta + n - 1)."""
    gen = torch.Generator().manual_seed(1)
    for n in (4, 64, 1024, 16384):
        for delta in (0.5, 3.0, 10.0):
            logits = torch.rand(16, n, generator=gen, dtype=torch.float64) * delta - 2.0
            alpha = torch.softmax(logits, -1)
            assert torch.all(alpha <= math.exp(delta) / n) and torch.all(alpha >= math.exp(-delta) / n)
            assert torch.all(alpha.amax(-1) <= math.exp(delta) / (math.exp(delta) + n - 1))


def test_spread_bound_from_weight_norms():
    """Prop 3.1: delta <= 2 sigma_max(W_Q) sigma_max(W_K) ||y|| max_i ||x_i||."""
    gen = torch.Generator().manual_seed(2)
    wq, wk = torch.randn(8, 12, generator=gen), torch.randn(8, 12, generator=gen)
    y, x = torch.randn(12, generator=gen), torch.randn(500, 12, generator=gen)
    e = (x @ wk.T) @ (wq @ y)
    bound = 2 * torch.linalg.matrix_norm(wq, 2) * torch.linalg.matrix_norm(wk, 2) * y.norm() * x.norm(dim=-1).max()
    assert float(e.max() - e.min()) <= float(bound)


def test_entropy_derivative_in_beta():
    """D4: H(beta) = entropy of softmax(beta e) has dH/dbeta = -beta Var_p(e) (fp64 finite differences)."""
    e = torch.randn(5, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    for beta in (0.5, 1.0, 2.0):
        step = 1e-6
        fd = (entropy_from_logits((beta + step) * e) - entropy_from_logits((beta - step) * e)) / (2 * step)
        p = torch.softmax(beta * e, -1)
        var = (p * e**2).sum(-1) - (p * e).sum(-1) ** 2
        torch.testing.assert_close(fd, -beta * var, rtol=1e-5, atol=1e-9)
        assert torch.all(fd < 0)


# ---------------------------------------------------------------------------------------------------
# masks, precision, gradients


def test_masks_and_fully_masked_rows():
    logits = torch.randn(4, 10) * 3
    mask = torch.rand(4, 10) > 0.4
    mask[0] = False
    mask[1, 0] = True
    for fn in (adaptive_temperature_softmax, log_n_scaled_softmax):
        out = fn(logits, mask=mask)
        via_inf = fn(logits.masked_fill(~mask, float("-inf")))
        torch.testing.assert_close(out, via_inf)
        assert torch.isfinite(out).all() and torch.all(out[~mask] == 0) and torch.all(out[0] == 0)
        torch.testing.assert_close(out[1:].sum(-1), torch.ones(3))
    _, stats = adaptive_temperature_softmax(logits, mask=mask, return_stats=True)
    assert float(stats["beta"][0]) == 1.0 and float(stats["entropy"][0]) == 0.0
    # masking leaves the entropy of the remaining entries, not of the padded row
    torch.testing.assert_close(entropy_from_logits(logits, mask=mask)[1:],
                               torch.stack([entropy_from_logits(logits[i][mask[i]]) for i in range(1, 4)]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_no_nan(dtype):
    logits = (torch.randn(6, 300) * 8).to(dtype)
    logits[0] = float("-inf")
    logits[1, 5:] = float("-inf")
    for fn in SOFTMAX_FUNCTIONS.values():
        out = fn(logits)
        assert out.dtype == dtype and torch.isfinite(out).all() and torch.all(out[0] == 0)
        torch.testing.assert_close(out[1:].float().sum(-1), torch.ones(5), atol=2e-2, rtol=0)


def test_gradcheck_through_beta_and_stopped_beta():
    logits = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2
    weights = torch.randn(3, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda e: adaptive_temperature_softmax(e), (logits.clone().requires_grad_(),))
    e = logits.clone().requires_grad_()
    (adaptive_temperature_softmax(e, beta_grad=False) * weights).sum().backward()
    beta = adaptive_temperature_softmax(logits, return_stats=True)[1]["beta"].unsqueeze(-1)
    e2 = logits.clone().requires_grad_()
    (torch.softmax(beta * e2, -1) * weights).sum().backward()
    torch.testing.assert_close(e.grad, e2.grad)


def test_masked_rows_have_finite_gradients():
    logits = torch.randn(3, 6, requires_grad=True)
    mask = torch.tensor([[True] * 6, [False] * 6, [True, True, False, False, False, False]])
    for fn in SOFTMAX_FUNCTIONS.values():
        logits.grad = None
        (fn(logits.masked_fill(~mask, float("-inf"))) * torch.randn(3, 6)).sum().backward()
        assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[1] == 0)


def test_module_and_bad_arguments():
    logits = torch.randn(2, 5, 9)
    torch.testing.assert_close(AdaptiveSoftmax(dim=1)(logits), adaptive_temperature_softmax(logits, 1))
    with pytest.raises(ValueError, match="threshold"):
        AdaptiveSoftmax(threshold=-1)
    with pytest.raises(ValueError, match="min_beta"):
        AdaptiveSoftmax(min_beta=0)
    with pytest.raises(ValueError, match="coeffs"):
        AdaptiveSoftmax(coeffs=())
    with pytest.raises(ValueError, match="n_ref"):
        log_n_scaled_softmax(logits, n_ref=1)
    with pytest.raises(ValueError, match="kind"):
        two_pass_attention(logits[None], logits[None], logits[None], kind="softmax")
    with pytest.raises(ValueError, match="method"):
        attention_row_stats(logits, logits, method="flash")
    with pytest.raises(ValueError, match="chunk_size"):
        attention_row_stats(logits, logits, chunk_size=0)


def test_log_n_scaling():
    logits = torch.randn(2, 64)
    torch.testing.assert_close(log_n_scaled_softmax(logits), torch.softmax(1.5 * logits, -1))  # log 64 / log 16
    torch.testing.assert_close(log_n_scaled_softmax(logits[:, :16]), torch.softmax(logits[:, :16], -1))
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :16] = True
    torch.testing.assert_close(log_n_scaled_softmax(logits, mask=mask)[:, :16], torch.softmax(logits[:, :16], -1))


# ---------------------------------------------------------------------------------------------------
# streaming statistics and two-pass attention


def _dense_scores(q, k, attn_mask=None, is_causal=False):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    valid = None
    if is_causal:
        valid = torch.ones(s.shape[-2:], dtype=torch.bool).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        valid = attn_mask
    elif attn_mask is not None:
        s = s + attn_mask
    return s if valid is None else s.masked_fill(~valid, float("-inf"))


MASKS = {
    "none": lambda lq, lk: (None, False),
    "causal": lambda lq, lk: (None, True),
    "padding": lambda lq, lk: (torch.arange(lk) < lk - 5, False),
    "bool": lambda lq, lk: (torch.rand(lq, lk, generator=torch.Generator().manual_seed(5)) > 0.3, False),
    "float-bias": lambda lq, lk: (torch.randn(lq, lk, generator=torch.Generator().manual_seed(6)), False),
}


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("method,chunk_size", [("chunked", 7), ("chunked", 64), ("chunked", 1000), ("kernel", 0)])
def test_streaming_entropy_equals_dense(mask_name, method, chunk_size):
    gen = torch.Generator().manual_seed(7)
    q, k = torch.randn(2, 3, 45, 16, generator=gen) * 2, torch.randn(2, 3, 61, 16, generator=gen) * 2
    attn_mask, is_causal = MASKS[mask_name](45, 61)
    if method == "kernel" and mask_name == "float-bias":
        with pytest.raises(ValueError, match="kernel"):
            attention_row_stats(q, k, attn_mask=attn_mask, method="kernel")
        return
    stats = attention_row_stats(q, k, attn_mask=attn_mask, is_causal=is_causal, chunk_size=max(chunk_size, 1),
                                method=method)
    scores = _dense_scores(q, k, attn_mask, is_causal)
    torch.testing.assert_close(stats.entropy, entropy_from_logits(scores), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(stats.lse, torch.logsumexp(scores, -1), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(stats.count, torch.isfinite(scores).sum(-1).float())


def test_streaming_entropy_with_large_offset_stays_accurate():
    gen = torch.Generator().manual_seed(8)
    q, k = torch.randn(1, 2, 20, 8, generator=gen), torch.randn(1, 2, 50, 8, generator=gen)
    bias = torch.full((20, 50), 1e4)
    stats = attention_row_stats(q, k, attn_mask=bias, chunk_size=9)
    # same fp32 scores (offset by 1e4, whose rounding is ~1e-3) through the dense formula
    torch.testing.assert_close(stats.entropy, entropy_from_logits(_dense_scores(q, k, bias)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.entropy, entropy_from_logits(_dense_scores(q, k)), atol=1e-3, rtol=0)


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("kind", ["adaptive", "log-n"])
@pytest.mark.parametrize("method", ["auto", "chunked"])
def test_two_pass_equals_dense(mask_name, kind, method):
    gen = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 3, 33, 16, generator=gen) * s for s in (3, 3, 1))
    attn_mask, is_causal = MASKS[mask_name](33, 33)
    out = two_pass_attention(q, k, v, kind=kind, attn_mask=attn_mask, is_causal=is_causal, chunk_size=10,
                             stats_method=method)
    dense = SOFTMAX_FUNCTIONS[kind](_dense_scores(q, k, attn_mask, is_causal)) @ v
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)


def test_two_pass_gradients_match_dense():
    gen = torch.Generator().manual_seed(10)
    base = [torch.randn(1, 2, 24, 8, generator=gen, dtype=torch.float64) * 2 for _ in range(3)]
    grads = []
    for path in ("two-pass", "dense"):
        q, k, v = (t.clone().requires_grad_() for t in base)
        if path == "two-pass":
            out = two_pass_attention(q, k, v, is_causal=True, chunk_size=5)
        else:
            out = adaptive_temperature_softmax(_dense_scores(q, k, is_causal=True)) @ v
        (out * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        grads.append([q.grad, k.grad, v.grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["kernel", "chunked"])
def test_two_pass_fully_masked_rows(dtype, method):
    gen = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=gen).to(dtype) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[3] = False
    out, stats = two_pass_attention(q, k, v, attn_mask=mask, return_stats=True, stats_method=method)
    assert torch.isfinite(out).all() and torch.all(out[..., 3, :] == 0)
    assert torch.all(stats["beta"][..., 3] == 1)


# ---------------------------------------------------------------------------------------------------
# the CUDA statistics path, run on CPU with a stand-in for the memory-efficient kernel


def _emulated_efficient_attention(query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False,
                                  *, scale=None):
    """The calling convention of aten._scaled_dot_product_efficient_attention (on CUDA): (batch, heads, L, d)
    inputs, a bias already expanded to (batch, heads, L_q, L_k) with 16-element-aligned rows, the log-sum-exp
    padded to a multiple of 32 queries (the padding is garbage)."""
    assert query.dim() == key.dim() == value.dim() == 4 and compute_log_sumexp and dropout_p == 0.0
    lq, lk = query.shape[-2], key.shape[-2]
    if attn_bias is not None:
        assert attn_bias.shape == (query.shape[0], query.shape[1], lq, lk), "bias must be expanded"
        assert attn_bias.stride(-1) == 1 and all(s % 16 == 0 for s in attn_bias.stride()[:-1]), "rows unaligned"
    s = (query @ key.transpose(-1, -2)) * scale
    if attn_bias is not None:
        s = s + attn_bias
    if is_causal:
        s = s.masked_fill(~torch.ones(lq, lk, dtype=torch.bool).tril(), float("-inf"))
    lse = torch.full(query.shape[:2] + (-(-lq // 32) * 32,), float("nan"))
    lse[..., :lq] = torch.logsumexp(s, -1)
    return torch.softmax(s, -1) @ value, lse, torch.tensor(0), torch.tensor(0)


@pytest.mark.parametrize("mask_name", ["none", "causal-square", "padding", "bool"])
def test_cuda_kernel_wrapper_gives_the_chunked_statistics(mask_name):
    """The CUDA path's preparation (bias alignment and expansion, the padded log-sum-exp) against the chunked
    fallback; the CUDA kernel itself is untested here (no GPU)."""
    from functools import partial

    from tenfold.nn.adaptive_temperature import _chunked_row_stats, _efficient_attention_with_lse, _kernel_row_stats

    gen = torch.Generator().manual_seed(8)
    lk = 45 if mask_name == "causal-square" else 61
    q, k = torch.randn(2, 3, 45, 16, generator=gen) * 2, torch.randn(2, 3, lk, 16, generator=gen) * 2
    attn_mask, is_causal = (None, True) if mask_name == "causal-square" else MASKS[mask_name](45, lk)
    if attn_mask is not None:
        attn_mask = attn_mask.view((1,) * (4 - attn_mask.dim()) + attn_mask.shape)  # (.., L_k) -> 4-d, unaligned rows
    fused = partial(_efficient_attention_with_lse, kernel=_emulated_efficient_attention)
    stats = _kernel_row_stats(q, k, 0.25, attn_mask, is_causal, fused=fused)
    expected = _chunked_row_stats(q, k, 0.25, attn_mask, is_causal, chunk_size=16)
    assert stats.lse.shape == (2, 3, 45)
    torch.testing.assert_close(stats.entropy, expected.entropy, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(stats.lse, expected.lse, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(stats.count, expected.count)


def test_kernel_dispatch_and_forced_fallback():
    from tenfold.nn.adaptive_temperature import _kernel_available

    q, k = torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    assert _kernel_available(q, k, None, False)
    assert not _kernel_available(q, k, torch.zeros(9, 9), False)  # a float bias: chunked
    assert not _kernel_available(q.to("meta"), k.to("meta"), None, False)  # no fused kernel there
    fused = two_pass_attention(q, k, k, stats_method="kernel", return_stats=True)[1]
    fallback = two_pass_attention(q, k, k, stats_method="chunked", return_stats=True)[1]
    torch.testing.assert_close(fused["entropy"], fallback["entropy"], atol=1e-5, rtol=1e-5)


def test_integer_inputs_are_refused():
    ints = torch.ones(1, 2, 4, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="floating-point"):
        adaptive_temperature_softmax(ints)
    with pytest.raises(ValueError, match="floating-point"):
        log_n_scaled_softmax(ints)
    with pytest.raises(ValueError, match="floating-point"):
        entropy_from_logits(ints)
    with pytest.raises(ValueError, match="floating-point"):
        attention_row_stats(ints, ints)
    with pytest.raises(ValueError, match="floating-point"):
        two_pass_attention(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), ints)
