import math

import pytest
import torch
from torch import nn

from tenfold.nn.structured import (
    BlockDenseLinear,
    BlockShuffleLinear,
    LowRankLinear,
    PreMergedLinear,
    SelfGuidedTraining,
    StructuredMLP,
    copy_dense_init,
    fixedflop_ratio,
    guide_alpha,
    sgt_steps,
    structured_ffn,
    svd_low_rank_init,
    swiglu,
)
from tenfold.utils.flops import count_flops


def _layers():
    torch.manual_seed(0)
    return [
        LowRankLinear(16, 64, 4),
        BlockDenseLinear(16, 64, 8, 4),
        BlockShuffleLinear(16, 64, 4),  # N < M
        BlockShuffleLinear(64, 16, 4),  # N > M
        BlockShuffleLinear(32, 32, 2),  # N = M
    ]


# ---- parameter counts (the table of docs/methods/structured-ffn.md) -------------------------------

@pytest.mark.parametrize("n,m", [(128, 512), (512, 128)])
def test_parameter_counts_equal_the_formulas(n, m):
    r, b = 32, 4
    cases = [
        (LowRankLinear(n, m, r), r * (n + m)),
        (BlockDenseLinear(n, m, r, b), r * (m + n // b)),
        (BlockShuffleLinear(n, m, b), min(n, m) * (n + m) // b),
    ]
    for layer, weights in cases:
        assert layer.num_params() == weights + m
        assert sum(p.numel() for p in layer.parameters()) == weights + m
        assert layer.macs_per_token() == weights


def test_ffn_percentages_at_f_equal_4d():
    d = 256
    dense = 2 * 4 * d * d
    assert LowRankLinear(d, 4 * d, d // 2).weight_params() * 2 / dense == pytest.approx(0.625)
    assert LowRankLinear(d, 4 * d, d // 4).weight_params() * 2 / dense == pytest.approx(0.3125)
    shuffle = BlockShuffleLinear(d, 4 * d, 2).weight_params() + BlockShuffleLinear(4 * d, d, 2).weight_params()
    assert shuffle / dense == pytest.approx(0.625)


def test_flop_counter_sees_two_flops_per_mac():
    for layer in _layers():
        x = torch.randn(7, layer.in_features)
        with torch.no_grad():
            assert count_flops(lambda: layer.structured(x)) == 2 * 7 * layer.macs_per_token()


# ---- merged == factored; BlockShuffle == explicit permutation construction --------------------

def test_merged_equals_factored_and_bias_is_after_the_product():
    for layer in _layers():
        with torch.no_grad():
            layer.bias.normal_()
        x = torch.randn(3, 5, layer.in_features)
        expected = x @ layer.merge().T + layer.bias
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer(torch.zeros(1, layer.in_features))[0], layer.bias)


def _explicit_block_shuffle(layer: BlockShuffleLinear) -> torch.Tensor:
    """P_out blockdiag(W2) P_mid blockdiag(W1) built from permutation matrices."""
    b, n, m = layer.blocks, layer.in_features, layer.out_features
    mid = min(n, m)
    q, s = mid // b, m // b
    p_mid = torch.zeros(mid, mid)  # row l*q + j picks z[j*B + l]
    for l in range(b):
        for j in range(q):
            p_mid[l * q + j, j * b + l] = 1.0
    p_out = torch.zeros(m, m)  # output i*B + l comes from stage-2 row l*s + i
    for l in range(b):
        for i in range(s):
            p_out[i * b + l, l * s + i] = 1.0
    return p_out @ layer.blkdiag2.to_dense() @ p_mid @ layer.blkdiag1.to_dense()


@pytest.mark.parametrize("n,m,b", [(16, 64, 4), (64, 16, 4), (32, 32, 2), (24, 48, 3)])
def test_block_shuffle_equals_explicit_permutations(n, m, b):
    torch.manual_seed(1)
    layer = BlockShuffleLinear(n, m, b, init="normal", init_std=1.0)
    with torch.no_grad():
        explicit = _explicit_block_shuffle(layer)
        torch.testing.assert_close(layer.merge(), explicit, atol=1e-5, rtol=1e-5)


def test_block_shuffle_is_dense_but_official_guide_init_is_block_diagonal():
    torch.manual_seed(2)
    layer = BlockShuffleLinear(16, 16, 4, init="normal", init_std=1.0)
    with torch.no_grad():
        assert (layer.merge().abs() > 0).all()  # every output sees every input
        official = layer.official_guide_init()
    assert (official != 0).float().mean().item() == pytest.approx(1 / 4)
    guide = layer.enable_guide(init="official")
    assert torch.equal(guide.data, official)


# ---- initialisations ---------------------------------------------------------------------------

def test_svd_init_is_the_best_rank_r_approximation():
    gen = torch.Generator().manual_seed(3)
    m, n, r, std = 48, 20, 6, 0.02
    u, v = svd_low_rank_init(m, n, r, std, generator=gen)
    w0 = torch.randn(m, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * std
    sigma = torch.linalg.svdvals(w0)
    residual = torch.linalg.matrix_norm(w0 - (u @ v).double())
    assert residual.item() == pytest.approx(sigma[r:].square().sum().sqrt().item(), rel=1e-5)
    torch.testing.assert_close(u.norm(dim=0).double(), sigma[:r].sqrt(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(v.norm(dim=1).double(), sigma[:r].sqrt(), rtol=1e-5, atol=1e-7)
    # any other rank-r matrix (here the truncation of a perturbed W0) is further away (Eckart-Young)
    other = w0 + 0.01 * torch.randn(m, n, generator=gen, dtype=torch.float64)
    p, s, qt = torch.linalg.svd(other, full_matrices=False)
    assert torch.linalg.matrix_norm(w0 - (p[:, :r] * s[:r]) @ qt[:r]).item() > residual.item()


def test_lowrank_layer_uses_the_svd_init():
    layer = LowRankLinear(20, 48, 6, generator=torch.Generator().manual_seed(3))
    w0 = torch.randn(48, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.02
    p, s, qt = torch.linalg.svd(w0, full_matrices=False)
    torch.testing.assert_close(layer.merge().double(), (p[:, :6] * s[:6]) @ qt[:6], atol=1e-6, rtol=1e-4)


def test_init_from_dense_is_the_truncation_of_that_weight_and_checks_its_shape():
    layer = LowRankLinear(20, 48, 6)
    w0 = torch.randn(48, 20, generator=torch.Generator().manual_seed(5)) * 0.02
    layer.init_from_dense(w0)
    p, s, qt = torch.linalg.svd(w0.double(), full_matrices=False)
    torch.testing.assert_close(layer.merge().double(), (p[:, :6] * s[:6]) @ qt[:6], atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="weight"):
        layer.init_from_dense(w0.T)


def test_copy_dense_init_pairs_a_structured_gpt_with_the_dense_one():
    from tenfold.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=11, dim=16, num_layers=3, num_heads=2, max_seq_len=8, bias=True)
    torch.manual_seed(0)
    dense = GPT(cfg)
    torch.manual_seed(1)
    model = GPT(cfg, ffn=structured_ffn("lowrank", rank_fraction=0.25))
    copy_dense_init(model, dense)
    shared = dict(dense.named_parameters())
    structured = 0
    for name, param in model.named_parameters():
        if name in shared:
            torch.testing.assert_close(param, shared[name], atol=0, rtol=0)
        else:
            structured += 1
    assert structured == 8  # u and v of up and down in layers 1 and 2
    for i in (1, 2):  # every LowRank layer is the rank-4 truncation of the dense layer's initial weight
        for which in ("up", "down"):
            w = getattr(dense.blocks[i].ffn, which).weight.double()
            p, s, qt = torch.linalg.svd(w, full_matrices=False)
            merged = getattr(model.blocks[i].ffn, which).merge().double()
            torch.testing.assert_close(merged, (p[:, :4] * s[:4]) @ qt[:4], atol=1e-6, rtol=1e-4)


def test_ortho_init_gives_unit_singular_values():
    torch.manual_seed(4)
    for layer in (BlockDenseLinear(32, 64, 16, 4), BlockShuffleLinear(32, 64, 4), BlockShuffleLinear(64, 32, 2)):
        mats = [w for name, p in layer.named_parameters() if name != "bias"
                for w in (p.unbind(0) if p.dim() == 3 else [p])]
        for w in mats:
            torch.testing.assert_close(torch.linalg.svdvals(w), torch.ones(min(w.shape)), atol=1e-5, rtol=0)


# ---- bad arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("build,name", [
    (lambda: LowRankLinear(16, 64, 17), "rank"),
    (lambda: LowRankLinear(16, 64, 0), "rank"),
    (lambda: BlockDenseLinear(16, 64, 8, 3), "blocks"),
    (lambda: BlockDenseLinear(16, 64, 6, 4), "blocks"),
    (lambda: BlockDenseLinear(16, 64, 32, 4), "rank"),
    (lambda: BlockShuffleLinear(18, 64, 4), "blocks"),
    (lambda: BlockShuffleLinear(16, 66, 4), "blocks"),
    (lambda: LowRankLinear(16, 64, 4, init="xavier"), "init"),
    (lambda: structured_ffn("sparse"), "kind"),
    (lambda: structured_ffn("lowrank", rank_fraction=1.5), "rank_fraction"),
])
def test_bad_arguments_raise_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()


# ---- self-guided training ---------------------------------------------------------------------

def test_alpha_schedule_values():
    assert guide_alpha(0, 10) == 1.0
    assert guide_alpha(5, 10) == pytest.approx(0.5)
    assert guide_alpha(10, 10) == 0.0 and guide_alpha(25, 10) == 0.0
    assert guide_alpha(3, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert guide_alpha(5, 10, "linear") == pytest.approx(0.5)
    assert guide_alpha(3, 12, "linear") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="schedule"):
        guide_alpha(1, 10, "step")


def test_guided_output_is_the_guide_at_alpha_one_and_structured_at_zero():
    for layer in _layers():
        layer.enable_guide()
        with torch.no_grad():
            layer.guide.add_(0.1 * torch.randn_like(layer.guide))  # guide and S now differ
            layer.bias.normal_()
        x = torch.randn(4, layer.in_features)
        layer.alpha = 1.0
        out = layer(x)
        torch.testing.assert_close(out, x @ layer.guide.T + layer.bias)
        out.square().sum().backward()
        for name, p in layer.named_parameters():
            if name not in ("guide", "bias"):
                assert torch.count_nonzero(p.grad) == 0, name  # factors get exactly zero gradient
        layer.alpha = 0.0
        with torch.no_grad():
            torch.testing.assert_close(layer(x), layer.structured(x) + layer.bias)
        layer.alpha = 0.3
        with torch.no_grad():
            mixed = 0.3 * x @ layer.guide.T + 0.7 * layer.structured(x) + layer.bias
            torch.testing.assert_close(layer(x), mixed, atol=1e-5, rtol=1e-5)


def test_exact_guide_leaves_the_initial_output_unchanged():
    for layer in _layers():
        x = torch.randn(4, layer.in_features)
        with torch.no_grad():
            before = layer(x)
            layer.enable_guide(init="exact")
            torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)


def test_guide_is_counted_only_when_asked():
    layer = LowRankLinear(16, 64, 4)
    layer.enable_guide()
    assert layer.num_params(include_guide=True) == layer.num_params() + 16 * 64
    layer.disable_guide()
    assert layer.guide is None and "guide" not in dict(layer.named_parameters())


def _tiny_model():
    torch.manual_seed(5)
    factory = structured_ffn("lowrank", rank=4)
    return nn.Sequential(*(factory(16, 64, i) for i in range(3)))


def test_controller_schedule_and_close_removes_guides_from_model_and_optimizer():
    model = _tiny_model()
    assert isinstance(model[0].up, nn.Linear)  # layer 0 stays dense
    sgt = SelfGuidedTraining(model, total_steps=8, ratio=0.5)
    assert sgt.guided_steps == 4 and len(sgt.guides()) == 4
    n_guided = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    alphas = []
    for _ in range(8):
        model(torch.randn(5, 16)).square().mean().backward()
        alphas.append(sgt.after_backward())
        opt.step()
        opt.zero_grad()
        sgt.maybe_close(opt)
    assert alphas[:4] == pytest.approx([guide_alpha(c, 4) for c in range(1, 5)]) and alphas[4:] == [0.0] * 4
    assert sgt.closed and not sgt.guides()
    assert sum(p.numel() for p in model.parameters()) == n_guided - 4 * 16 * 64
    live = {id(p) for p in model.parameters()}
    assert all(id(p) in live for g in opt.param_groups for p in g["params"])
    assert all(id(p) in live for p in opt.state)
    assert all(layer.alpha == 0.0 for layer in sgt.layers)


def test_reduce_flop_uses_the_guide_with_probability_alpha_and_is_seeded():
    def calls(seed):
        layer = LowRankLinear(8, 8, 2)
        layer.enable_guide(reduce_flop=True, generator=torch.Generator().manual_seed(seed))
        layer.alpha = 0.3
        x = torch.randn(1, 8)
        with torch.no_grad():
            for _ in range(4_000):
                layer(x)
        return layer.guide_calls

    n, p = 4_000, 0.3
    first = calls(7)
    assert abs(first - n * p) < 4 * math.sqrt(n * p * (1 - p))
    assert calls(7) == first


# ---- pre-merge and the FFN factory --------------------------------------------------------------

def test_premerged_equals_factored_and_refreshes_after_an_update():
    layer = LowRankLinear(32, 64, 8)
    pre = PreMergedLinear(layer, max_merged_tokens=4).eval()
    x = torch.randn(2, 32)
    torch.testing.assert_close(pre(x), layer(x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        layer.u.mul_(2.0)
    torch.testing.assert_close(pre(x), layer(x), atol=1e-5, rtol=1e-5)


def test_ffn_factory_keeps_layer_zero_dense_and_sizes_rank_from_fraction():
    factory = structured_ffn("lowrank", rank_fraction=0.25)
    first, second = factory(64, 256, 0), factory(64, 256, 1)
    assert isinstance(first.up, nn.Linear) and isinstance(first.down, nn.Linear)
    assert isinstance(second.up, LowRankLinear) and second.up.rank == 16 and second.down.rank == 16
    dense = StructuredMLP(64, 256, "dense")
    share = sum(p.numel() for p in second.parameters() if p.dim() == 2) / sum(
        p.numel() for p in dense.parameters() if p.dim() == 2)
    assert share == pytest.approx(0.3125)
    everywhere = structured_ffn("blockshuffle", blocks=2, first_layer_dense=False)(64, 256, 0)
    assert isinstance(everywhere.up, BlockShuffleLinear)


# ---- SwiGLU FFNs ----------------------------------------------------------------------------------


def test_swiglu_is_silu_of_the_first_half_times_the_second():
    y = torch.randn(3, 5, 8)
    out = swiglu(y)
    assert out.shape == (3, 5, 4)
    torch.testing.assert_close(out, torch.sigmoid(y[..., :4]) * y[..., :4] * y[..., 4:])


@pytest.mark.parametrize("kind, kw, fc1, fc2", [
    ("dense", {}, 16 * 128, 64 * 16),
    ("lowrank", {"rank": 4}, 4 * (16 + 128), 4 * (64 + 16)),
    ("blockdense", {"rank": 8, "blocks": 2}, 8 * (128 + 16 // 2), 8 * (16 + 64 // 2)),
    ("blockshuffle", {"blocks": 4}, 16 * (16 + 128) // 4, 16 * (64 + 16) // 4),
])
def test_swiglu_ffn_parameter_counts(kind, kw, fc1, fc2):
    """SwiGLU: fc1 maps d -> 2f (one structured layer, as in the official code), fc2 maps f -> d."""
    d, f = 16, 64
    ffn = StructuredMLP(d, f, kind, act="swiglu", **kw)
    gelu = StructuredMLP(d, f, kind, act="gelu", **kw)
    weights = sum(p.numel() for p in ffn.parameters() if p.dim() >= 2)
    biases = sum(p.numel() for p in ffn.parameters() if p.dim() == 1)
    assert weights == fc1 + fc2 and biases == 2 * f + d
    assert ffn.up.out_features == 2 * f and ffn.down.in_features == f
    assert sum(p.numel() for p in gelu.parameters()) < sum(p.numel() for p in ffn.parameters())
    x = torch.randn(2, 3, d)
    torch.testing.assert_close(ffn(x), ffn.down(swiglu(ffn.up(x))))


def test_ffn_factory_passes_the_activation_and_rejects_unknown_ones():
    factory = structured_ffn("lowrank", rank_fraction=0.25, act="swiglu")
    assert factory.act == "swiglu"
    assert factory(16, 64, 0).act == "swiglu" and factory(16, 64, 0).up.out_features == 128
    assert factory(16, 64, 1).up.out_features == 128 and factory(16, 64, 1).up.rank == 4
    with pytest.raises(ValueError, match="act"):
        structured_ffn("lowrank", rank=4, act="relu")
    with pytest.raises(ValueError, match="act"):
        StructuredMLP(16, 64, "dense", act="tanh")


# ---- fixed-FLOP self-guided training --------------------------------------------------------------


def test_sgt_steps_in_both_modes():
    assert sgt_steps(100, 0.5) == (50, 100)
    assert sgt_steps(100, 0.3, "fixedflop") == (30, 130)
    assert sgt_steps(3, 0.1) == (1, 3)  # at least one guided step
    with pytest.raises(ValueError, match="mode"):
        sgt_steps(100, 0.5, "fixedflops")
    with pytest.raises(ValueError, match="ratio"):
        sgt_steps(100, 0.0)
    model = nn.Sequential(LowRankLinear(8, 8, 2))
    sgt = SelfGuidedTraining(model, total_steps=40, ratio=0.25, mode="fixedflop")
    assert (sgt.guided_steps, sgt.train_steps, sgt.mode) == (10, 50, "fixedflop")


def test_fixedflop_ratio_matches_the_dense_budget():
    dense, structured, guide = 1000.0, 600.0, 500.0
    for reduce_flop, share in ((True, 0.5), (False, 1.0)):
        g = fixedflop_ratio(dense, structured, guide, reduce_flop)
        assert (1 + g) * structured + share * g * guide == pytest.approx(dense)
    with pytest.raises(ValueError, match="dense_macs"):
        fixedflop_ratio(500.0, 600.0, 100.0)
