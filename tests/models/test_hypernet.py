import io

import pytest
import torch

from tenfold.models.hypernet import (ENCODERS, BilinearSetEncoder, ContextEncoder, HypernetBottleneck, HypernetOracle,
                                     InContextTransformer, LinearHypernetMLP, SetEncoder, icl_attention_mask)
from tenfold.tasks.hyperteacher import Hyperteacher, ICLTaskSampler, make_split, r2_per_task

D_IN, D_OUT, M = 5, 3, 4
SMALL = dict(d_model=16, n_heads=2, n_layers=2, mlp_ratio=2.0)


def _data(n_context=6, n_query=4, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, n_context, D_IN, generator=g), torch.randn(batch, n_context, D_OUT, generator=g),
            torch.randn(batch, n_query, D_IN, generator=g), torch.rand(batch, M, generator=g))


def _models():
    torch.manual_seed(0)
    return {
        "transformer": InContextTransformer(d_in=D_IN, d_out=D_OUT, **SMALL),
        "bottleneck": HypernetBottleneck(d_in=D_IN, d_out=D_OUT, d_latent=M, hidden=7, **SMALL),
        "bottleneck_bilinear": HypernetBottleneck(d_in=D_IN, d_out=D_OUT, d_latent=M, hidden=7, encoder="bilinear",
                                                  d_model=16, n_layers=2),
        "bottleneck_deepset": HypernetBottleneck(d_in=D_IN, d_out=D_OUT, d_latent=M, hidden=7, encoder="deepset",
                                                 d_model=16, n_layers=2),
        "oracle": HypernetOracle(n_modules=M, k_max=2, d_in=D_IN, hidden=7, d_out=D_OUT),
        "oracle_deep": HypernetOracle(n_modules=M, k_max=2, d_in=D_IN, hidden=7, d_out=D_OUT, hypernet_layers=3),
        "bottleneck_deep": HypernetBottleneck(d_in=D_IN, d_out=D_OUT, d_latent=M, hidden=7, hypernet_layers=3,
                                              **SMALL),
    }


def _call(name, model, x_ctx, y_ctx, x_q, z):
    return model(z, x_q) if name.startswith("oracle") else model(x_ctx, y_ctx, x_q)


BOTTLENECKS = ["bottleneck", "bottleneck_bilinear", "bottleneck_deepset", "bottleneck_deep"]


@pytest.mark.parametrize("name", ["transformer", "oracle", "oracle_deep", *BOTTLENECKS])
def test_contracts(name):
    model = _models()[name]
    data = _data()
    out = _call(name, model, *data)
    assert out.shape == (3, 4, D_OUT) and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = _models()[name]
    for p in clone.parameters():
        torch.nn.init.zeros_(p)
    clone.load_state_dict(torch.load(buffer))
    assert torch.equal(_call(name, clone, *data), out.detach())
    assert torch.equal(_call(name, _models()[name], *data), out.detach())  # seeded determinism


@pytest.mark.parametrize("name", BOTTLENECKS)
def test_bottleneck_query_sees_context_only_through_latent(name):
    model = _models()[name]
    x_ctx, y_ctx, x_q, _ = _data()
    x_ctx2, y_ctx2, _, _ = _data(seed=1)
    fixed = torch.randn(3, M)
    handle = model.encoder.register_forward_hook(lambda mod, args, out: fixed)
    a, b = model(x_ctx, y_ctx, x_q), model(x_ctx2, y_ctx2, x_q)
    handle.remove()
    assert torch.equal(a, b)
    assert not torch.allclose(model(x_ctx, y_ctx, x_q), model(x_ctx2, y_ctx2, x_q))
    # with z_hat detached, no gradient flows from the prediction to the context
    x_ctx.requires_grad_(True)
    y_ctx.requires_grad_(True)
    z_hat = model.infer_latent(x_ctx, y_ctx).detach()
    out = model.hypernet(z_hat, x_q)
    assert not out.requires_grad or all(g is None for g in torch.autograd.grad(
        out.sum(), [x_ctx, y_ctx], allow_unused=True))


@pytest.mark.parametrize("name", BOTTLENECKS)
def test_bottleneck_encoder_never_sees_queries(name):
    model = _models()[name]
    x_ctx, y_ctx, x_q, _ = _data()
    inputs = []
    model.encoder.register_forward_pre_hook(lambda mod, args: inputs.append(args))
    model(x_ctx, y_ctx, x_q)
    assert len(inputs) == 1 and inputs[0][0] is x_ctx and inputs[0][1] is y_ctx
    z1 = model.infer_latent(x_ctx, y_ctx)
    model(x_ctx, y_ctx, torch.randn_like(x_q))
    assert torch.equal(model.infer_latent(x_ctx, y_ctx), z1)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoders_shapes_and_permutation_invariance(encoder):
    """Every task-inference encoder maps (B, N, d_in), (B, N, d_out) to (B, d_latent), for any N, and is
    invariant to the order of the context pairs (a pair moves as a whole); changing one pair changes z."""
    torch.manual_seed(0)
    model = HypernetBottleneck(d_in=D_IN, d_out=D_OUT, d_latent=M, hidden=7, encoder=encoder, d_model=16,
                               n_heads=2, n_layers=2)
    expected = {"transformer": ContextEncoder, "deepset": SetEncoder, "bilinear": BilinearSetEncoder}[encoder]
    assert type(model.encoder) is expected
    for n_context in (1, 7):
        x_ctx, y_ctx, _, _ = _data(n_context=n_context)
        assert model.infer_latent(x_ctx, y_ctx).shape == (3, M)
    with torch.no_grad():
        z = model.infer_latent(x_ctx, y_ctx)
        for seed in range(3):
            perm = torch.randperm(7, generator=torch.Generator().manual_seed(seed))
            assert torch.allclose(model.infer_latent(x_ctx[:, perm], y_ctx[:, perm]), z, atol=1e-5)
        swapped = y_ctx.clone()
        swapped[:, [0, 1]] = y_ctx[:, [1, 0]]  # pairs broken up: not a permutation of pairs
        assert not torch.allclose(model.infer_latent(x_ctx, swapped), z, atol=1e-4)
        moved = y_ctx.clone()
        moved[:, 3] += 1.0
        assert not torch.allclose(model.infer_latent(x_ctx, moved), z, atol=1e-4)


def test_bilinear_encoder_is_affine_in_the_targets():
    """z_hat(x, a y1 + (1 - a) y2) = a z_hat(x, y1) + (1 - a) z_hat(x, y2) for fixed inputs (not so for DeepSet)."""
    torch.manual_seed(0)
    x_ctx, y1, _, _ = _data(n_context=7)
    y2 = torch.randn_like(y1)
    bilinear = BilinearSetEncoder(d_in=D_IN, d_out=D_OUT, d_latent=M, d_model=16, n_layers=2)
    deepset = SetEncoder(d_in=D_IN, d_out=D_OUT, d_latent=M, d_model=16, n_layers=2)
    for a in (0.3, 2.0, -1.5):
        mixed = bilinear(x_ctx, a * y1 + (1 - a) * y2)
        assert torch.allclose(mixed, a * bilinear(x_ctx, y1) + (1 - a) * bilinear(x_ctx, y2), atol=1e-5)
    mixed = deepset(x_ctx, 2.0 * y1 - y2)
    assert not torch.allclose(mixed, 2.0 * deepset(x_ctx, y1) - deepset(x_ctx, y2), atol=1e-3)


def test_attention_mask_layout():
    mask = icl_attention_mask(3, 2)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0], [1, 1, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_transformer_mask_and_permutation_invariance():
    model = _models()["transformer"].eval()
    x_ctx, y_ctx, x_q, _ = _data(n_context=6, n_query=5)
    with torch.no_grad():
        base, residuals = model(x_ctx, y_ctx, x_q, return_residuals=True)
        perm = torch.randperm(6)
        assert torch.allclose(model(x_ctx[:, perm], y_ctx[:, perm], x_q), base, atol=1e-5)
        changed = x_q.clone()
        changed[:, 2] += 1.0
        out = model(x_ctx, y_ctx, changed)
        keep = [0, 1, 3, 4]
        assert torch.allclose(out[:, keep], base[:, keep], atol=1e-5) and not torch.allclose(out[:, 2], base[:, 2])
        fewer, res_fewer = model(x_ctx, y_ctx, x_q[:, :2], return_residuals=True)
        assert torch.allclose(fewer, base[:, :2], atol=1e-5)
        for h, h_fewer in zip(residuals, res_fewer):  # context tokens do not depend on the queries
            assert torch.allclose(h[:, :6], h_fewer[:, :6], atol=1e-5)
    assert len(residuals) == SMALL["n_layers"] + 1 and residuals[-1].shape == (3, 11, 16)


def test_oracle_with_teacher_modules_is_exact():
    teacher = Hyperteacher(d_in=D_IN, d_out=D_OUT, hidden=(7,), n_modules=M, k_max=2, seed=3)
    sampler = ICLTaskSampler(teacher, make_split(M, 2, n_ood=2, seed=0), n_context=4, n_query=16, stats_tasks=256)
    oracle = HypernetOracle(n_modules=M, k_max=2, d_in=D_IN, hidden=7, d_out=D_OUT)
    oracle.load_teacher(teacher, sampler.y_mean, sampler.y_std)
    g = torch.Generator().manual_seed(0)
    for which in ("id", "ood"):
        batch = sampler.sample(64, which, g)
        pred = oracle(batch.z, batch.x_q)
        assert torch.allclose(pred, batch.y_q, atol=1e-4)
        assert torch.allclose(r2_per_task(pred, batch.y_q), torch.ones(64), atol=1e-4)


def test_deep_oracle_with_the_deep_teacher_is_exact():
    teacher = Hyperteacher(d_in=D_IN, d_out=D_OUT, hidden=(7, 7, 7), fixed_input=True, n_modules=8, k_max=2, seed=2)
    sampler = ICLTaskSampler(teacher, make_split(8, 2, support="connected"), n_context=4, n_query=16,
                             stats_tasks=256)
    oracle = HypernetOracle(n_modules=8, k_max=2, d_in=D_IN, hidden=7, d_out=D_OUT, hypernet_layers=3)
    oracle.load_teacher(teacher, sampler.y_mean, sampler.y_std)
    g = torch.Generator().manual_seed(0)
    for which in ("id", "ood"):
        batch = sampler.sample(64, which, g)
        assert torch.allclose(oracle(batch.z, batch.x_q), batch.y_q, atol=1e-4)
    shallow = HypernetOracle(n_modules=8, k_max=2, d_in=D_IN, hidden=7, d_out=D_OUT)
    with pytest.raises(ValueError, match="hidden layers"):
        shallow.load_teacher(teacher)


def test_linear_hypernet_is_linear_in_latent():
    hnet = LinearHypernetMLP(d_latent=M, d_in=D_IN, hidden=6, d_out=D_OUT)
    z1, z2 = torch.randn(2, M), torch.randn(2, M)
    w1, b1 = hnet.generate(z1)
    w2, b2 = hnet.generate(z2)
    w, b = hnet.generate(2 * z1 + z2)
    assert torch.allclose(w, 2 * w1 + w2, atol=1e-5) and torch.allclose(b, 2 * b1 + b2, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_model"):
        InContextTransformer(d_in=4, d_out=2, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="d_latent"):
        HypernetBottleneck(d_in=4, d_out=2, d_latent=0)
    with pytest.raises(ValueError, match="encoder"):
        HypernetBottleneck(d_in=4, d_out=2, d_latent=3, encoder="lstm")
    with pytest.raises(ValueError, match="n_layers"):
        BilinearSetEncoder(d_in=4, d_out=2, d_latent=3, n_layers=0)
    with pytest.raises(ValueError, match="hidden"):
        LinearHypernetMLP(d_latent=3, d_in=4, hidden=0, d_out=2)
    model = _models()["transformer"]
    x_ctx, y_ctx, x_q, _ = _data()
    with pytest.raises(ValueError, match="y_ctx"):
        model(x_ctx, y_ctx[..., :2], x_q)
    with pytest.raises(ValueError, match="x_q"):
        model(x_ctx, y_ctx, x_q[..., :2])
