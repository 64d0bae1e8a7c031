import math

import pytest
import torch

from tenfold.tasks.hyperteacher import (DISCRETE_WEIGHTS, Hyperteacher, ICLTaskSampler, Split, check_identifiability,
                                        co_occurrence_components, combos_to_khot, connected_support,
                                        enumerate_combinations, is_compositional,
                                        is_connected, make_split, r2_per_task, teacher_free_parameters,
                                        weight_latents)


def test_enumeration_counts_and_sizes():
    combos = enumerate_combinations(6, 2)
    assert len(combos) == 21 == 6 + math.comb(6, 2)
    assert len(enumerate_combinations(6, 3)) == 6 + 15 + 20
    khot = combos_to_khot(combos, 6)
    assert set(khot.sum(1).tolist()) == {1.0, 2.0}


@pytest.mark.parametrize("weighting", ["khot", "discrete", "continuous"])
def test_latent_weightings(weighting):
    khot = combos_to_khot(enumerate_combinations(6, 2), 6).repeat(50, 1)
    z = weight_latents(khot, weighting, torch.Generator().manual_seed(0))
    assert torch.all(z[khot == 0] == 0)
    active = z[khot == 1]
    if weighting == "khot":
        assert torch.all(active == 1)
    elif weighting == "discrete":
        allowed = torch.tensor(DISCRETE_WEIGHTS)
        assert torch.all((active[:, None] - allowed).abs().min(1).values < 1e-6)
        assert len(active.unique()) == 6
    else:
        assert active.min() >= 0.5 and active.max() <= 1.0 and len(active.unique()) > 100


def test_teacher_is_linear_in_the_latent_and_one_hot_gives_the_module():
    teacher = Hyperteacher(d_in=5, d_out=3, hidden=(7,), n_modules=4, k_max=2, seed=1)
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.rand(3, 4, generator=g), torch.rand(3, 4, generator=g)
    w1, b1 = teacher.layer_params(z1, 0)
    w2, b2 = teacher.layer_params(z2, 0)
    w12, b12 = teacher.layer_params(0.3 * z1 - 2.0 * z2, 0)
    assert torch.allclose(w12, 0.3 * w1 - 2.0 * w2, atol=1e-5) and torch.allclose(b12, 0.3 * b1 - 2.0 * b2, atol=1e-5)
    z = torch.zeros(1, 4)
    z[0, 2] = 0.7
    weight, bias = teacher.layer_params(z, 0)
    scale = 0.7 / math.sqrt(2)
    assert torch.allclose(weight[0], scale * teacher.bank(0)[2]) and torch.allclose(bias[0], scale * teacher.bias(0)[2])
    x = teacher.sample_inputs(1, 9, g)
    assert x.min() >= -1 and x.max() <= 1
    manual = torch.relu(x[0] @ weight[0] + bias[0]) @ teacher.readout
    assert torch.allclose(teacher(z, x)[0], manual, atol=1e-6)


def test_variance_scaling_and_biases():
    teacher = Hyperteacher(d_in=64, d_out=8, hidden=(64,), n_modules=8, scale=3.0, seed=0)
    bank = teacher.bank(0)
    assert abs(bank.var().item() - 3.0 / 64) < 0.1 * 3.0 / 64  # scale multiplies the variance
    std = math.sqrt(3.0 / 64) / 0.87962566103423978
    assert bank.abs().max() <= 2 * std + 1e-6  # truncated at two standard deviations
    assert teacher.bias(0).min() >= 0 and teacher.bias(0).max() <= 0.5
    no_bias = Hyperteacher(d_in=4, d_out=2, hidden=(3,), n_modules=3, module_bias=False)
    assert torch.all(no_bias.bias(0) == 0)


def test_teacher_is_seeded():
    a, b, c = (Hyperteacher(seed=s) for s in (3, 3, 4))
    assert torch.equal(a.bank(0), b.bank(0)) and torch.equal(a.readout, b.readout)
    assert not torch.equal(a.bank(0), c.bank(0))


@pytest.mark.parametrize("seed", range(5))
def test_random_split_properties(seed):
    split = make_split(6, 2, support="random", n_ood=5, seed=seed)
    all_combos = enumerate_combinations(6, 2)
    assert not set(split.id) & set(split.ood)
    assert sorted(split.id + split.ood) == sorted(all_combos)
    assert len(split.ood) == 5 and all(len(c) == 2 for c in split.ood)
    assert all((m,) in split.id for m in range(6))
    assert is_compositional(split.id, 6) and is_connected(split.id, 6)
    assert make_split(6, 2, support="random", n_ood=5, seed=seed) == split


def test_random_split_frac_ood_default_and_official_holdout():
    split = make_split(6, 2, support="random", n_ood=None, frac_ood=0.25, holdout_min_k=1, seed=0)
    assert len(split.ood) == int(21 * 0.25)


def test_connected_and_disconnected_supports():
    conn = make_split(6, 2, support="connected")
    expected = [(m,) for m in range(6)] + sorted({tuple(sorted((i, (i + s) % 6))) for i in range(6) for s in (1, 2)})
    assert sorted(conn.id) == sorted(expected) == sorted(connected_support(6))
    assert is_compositional(conn.id, 6) and is_connected(conn.id, 6)
    disc = make_split(6, 2, support="disconnected")
    assert sorted(disc.id) == sorted([(m,) for m in range(6)] + [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)])
    assert is_compositional(disc.id, 6) and not is_connected(disc.id, 6)
    # official: both supports are tested on the combinations in neither support
    assert conn.ood == disc.ood == [(0, 3), (1, 4), (2, 5)]
    assert not set(disc.id) & set(disc.ood)


def test_non_compositional_support():
    split = make_split(6, 2, support="non_compositional")
    assert not is_compositional(split.id, 6)
    assert all(5 in c for c in split.ood) and all(5 not in c for c in split.id)
    assert len(split.id) + len(split.ood) == 21


def test_support_checks_on_hand_built_cases():
    path = [(0, 1), (1, 2), (2, 3)]
    assert is_connected(path, 4) and is_compositional(path, 4)
    cliques = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]
    assert is_compositional(cliques, 6) and not is_connected(cliques, 6)
    missing = [(0,), (1,), (0, 1)]
    assert not is_compositional(missing, 3) and not is_connected(missing, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="support"):
        make_split(6, 2, support="nope")
    with pytest.raises(ValueError, match="k_max"):
        make_split(6, 3, support="connected")
    with pytest.raises(ValueError, match="n_ood"):
        make_split(6, 2, n_ood=16)
    with pytest.raises(ValueError, match="weighting"):
        Hyperteacher(weighting="soft")
    with pytest.raises(ValueError, match="k_max"):
        Hyperteacher(n_modules=3, k_max=4)
    with pytest.raises(ValueError, match="z shaped"):
        Hyperteacher()(torch.zeros(2, 5), torch.zeros(2, 3, 8))


def _sampler(split=None, **kwargs):
    teacher = Hyperteacher(seed=0)
    split = split or make_split(6, 2, n_ood=5, seed=0)
    return ICLTaskSampler(teacher, split, n_context=12, n_query=8, stats_tasks=512, **kwargs)


def test_held_out_combinations_never_appear_in_training_batches():
    sampler = _sampler()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        batch = sampler.sample(64, "id", g)
        seen |= {tuple(torch.nonzero(row).flatten().tolist()) for row in batch.z}
    assert seen == set(sampler.split.id)
    ood = sampler.sample(256, "ood", g)
    assert {tuple(torch.nonzero(row).flatten().tolist()) for row in ood.z} == set(sampler.split.ood)


def test_batch_shapes_and_standardisation():
    sampler = _sampler()
    g = torch.Generator().manual_seed(1)
    batch = sampler.sample(5, "ood", g, n_query=11)
    assert batch.x_ctx.shape == (5, 12, 8) and batch.y_ctx.shape == (5, 12, 4)
    assert batch.x_q.shape == (5, 11, 8) and batch.y_q.shape == (5, 11, 4) and batch.z.shape == (5, 6)
    raw = sampler.teacher(batch.z, torch.cat([batch.x_ctx, batch.x_q], 1))
    standardised = (raw - sampler.y_mean) / sampler.y_std
    assert torch.allclose(torch.cat([batch.y_ctx, batch.y_q], 1), standardised, atol=1e-5)
    big = sampler.sample(2000, "id", g)
    assert big.y_q.mean().abs() < 0.1 and (big.y_q.std() - 1).abs() < 0.1


def test_standardisation_depends_only_on_id_split():
    base = make_split(6, 2, n_ood=5, seed=0)
    other = Split(base.id, base.ood[:2], "random")
    a, b = _sampler(base), _sampler(other)
    assert torch.equal(a.y_mean, b.y_mean) and torch.equal(a.y_std, b.y_std)


def test_r2_per_task():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 10, 2, generator=g)
    assert torch.allclose(r2_per_task(y, y), torch.ones(3))
    assert torch.allclose(r2_per_task(y.mean(1, keepdim=True).expand_as(y), y), torch.zeros(3), atol=1e-6)
    assert torch.allclose(r2_per_task(y, y, per_unit=True), torch.ones(3))
    # two tasks with different variances: the per-task mean, not the pooled value
    small, large = 0.1 * torch.randn(1, 10, 2, generator=g), 10 * torch.randn(1, 10, 2, generator=g)
    target = torch.cat([small, large])
    pred = target + 0.1
    per_task = r2_per_task(pred, target)
    ss = ((target - target.mean(1, keepdim=True)) ** 2).sum((1, 2))
    assert torch.allclose(per_task, 1 - (0.01 * 20) / ss)
    pooled = 1 - (0.01 * 40) / ss.sum()
    assert abs(per_task.mean().item() - pooled.item()) > 0.1
    with pytest.raises(ValueError):
        r2_per_task(y, y[:, :3])


def test_identifiability_check():
    assert teacher_free_parameters(8, (16,), 4) == 208
    check_identifiability(n_modules=6, n_context=12, d_in=8, hidden=(16,), d_out=4)  # 6 <= 48 < 208
    check_identifiability(n_modules=6, n_context=16, d_in=16, hidden=(16,), d_out=16)  # 6 <= 256 < 528
    with pytest.raises(ValueError, match="n_context"):
        check_identifiability(n_modules=6, n_context=60, d_in=8, hidden=(16,), d_out=4)
    with pytest.raises(ValueError, match="n_context"):
        check_identifiability(n_modules=6, n_context=1, d_in=8, hidden=(16,), d_out=4)


@pytest.mark.parametrize("n_modules", [6, 8, 10])
def test_control_supports_share_one_ood_set(n_modules):
    """The control of the ICLR 2024 code: connected vs disconnected supports over the same modules, both
    evaluated on the combinations in neither support."""
    conn = make_split(n_modules, 2, support="connected")
    disc = make_split(n_modules, 2, support="disconnected")
    everything = enumerate_combinations(n_modules, 2)
    # connected: every module appears and the co-occurrence graph is one component
    assert {m for c in conn.id for m in c} == set(range(n_modules))
    assert co_occurrence_components(conn.id, n_modules) == [set(range(n_modules))]
    # disconnected: every module appears, exactly two components, the two halves
    half = n_modules // 2
    assert is_compositional(disc.id, n_modules)
    assert co_occurrence_components(disc.id, n_modules) == [set(range(half)), set(range(half, n_modules))]
    # OOD: the combinations in neither support, the same list for both arms
    neither = [c for c in everything if c not in set(conn.id) | set(disc.id)]
    assert conn.ood == disc.ood == neither
    assert all(len(c) == 2 and (c[0] < half) != (c[1] < half) for c in neither)  # cross-half pairs only
    for split in (conn, disc):
        assert not set(split.id) & set(split.ood)


def test_control_supports_at_eight_modules():
    conn = make_split(8, 2, support="connected")
    disc = make_split(8, 2, support="disconnected")
    assert (len(conn.id), len(disc.id), len(conn.ood)) == (24, 20, 10)
    assert conn.ood == [(0, 4), (0, 5), (1, 4), (1, 5), (1, 6), (2, 5), (2, 6), (2, 7), (3, 6), (3, 7)]


def test_co_occurrence_components_on_hand_built_cases():
    assert co_occurrence_components([(0, 1), (2,)], 4) == [{0, 1}, {2}, {3}]
    assert co_occurrence_components([(0, 3), (1, 2), (2, 3)], 4) == [{0, 1, 2, 3}]


def test_deep_teacher_has_a_fixed_input_layer_and_generated_hidden_layers():
    kwargs = dict(d_in=5, d_out=3, n_modules=4, k_max=2, seed=1)
    shallow = Hyperteacher(hidden=(6,), **kwargs)
    deep = Hyperteacher(hidden=(6, 6, 6), fixed_input=True, **kwargs)
    assert (deep.num_layers, deep.num_generated, shallow.num_generated) == (3, 2, 1)
    assert deep.bank(0).shape == (4, 6, 6) and deep.input_weight.shape == (5, 6)
    assert torch.equal(Hyperteacher(hidden=(6,), **kwargs).bank(0), shallow.bank(0))  # option-free stream
    x = deep.sample_inputs(2, 7)
    z1, z2 = torch.rand(2, 4), torch.rand(2, 4)
    w1, _ = deep.layer_params(z1, 1)
    w2, _ = deep.layer_params(z2, 1)
    w, _ = deep.layer_params(2 * z1 - z2, 1)
    assert torch.allclose(w, 2 * w1 - w2, atol=1e-5)  # generated layers are linear in z
    expected = torch.relu(x @ deep.input_weight + deep.input_bias)  # the input layer ignores z
    for layer in range(2):
        weight, bias = deep.layer_params(z1, layer)
        expected = torch.relu(torch.einsum("bti,bio->bto", expected, weight) + bias[:, None])
    assert torch.allclose(deep(z1, x), expected @ deep.readout, atol=1e-5)
    assert deep.input_bias.min() >= -1 and deep.input_bias.max() <= 1
    with pytest.raises(ValueError, match="fixed_input"):
        Hyperteacher(hidden=(6,), fixed_input=True, **kwargs)


def test_samplers_with_shared_statistics_give_the_same_ood_batches():
    teacher = Hyperteacher(d_in=5, d_out=3, hidden=(6,), n_modules=8, k_max=2, seed=0)
    conn, disc = make_split(8, 2, support="connected"), make_split(8, 2, support="disconnected")
    samplers = [ICLTaskSampler(teacher, split, n_context=4, n_query=3, stats_tasks=256, stats_combos=conn.id)
                for split in (conn, disc)]
    a, b = (s.sample(16, "ood", torch.Generator().manual_seed(5)) for s in samplers)
    assert torch.equal(a.y_q, b.y_q) and torch.equal(a.z, b.z) and torch.equal(a.combo_idx, b.combo_idx)
    own = ICLTaskSampler(teacher, disc, n_context=4, n_query=3, stats_tasks=256)
    assert not torch.equal(own.y_mean, samplers[1].y_mean)  # by default each split uses its own ID tasks
