"""Normalize-and-Project (Lyle et al. 2024): invariances the projection relies on, the projection
itself, refusals, checkpointing and DDP."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.models.normalized import NormCNN, NormMLP
from tenfold.nn.normalized import NaPGroups, NormTransformerBlock
from tenfold.optim import NaP
from tenfold.optim.nap import joint_norm, project_to_norm
from tenfold.utils.checkpoint import load_checkpoint, save_checkpoint


def mlp(norm="layer", eps=1e-5, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return NormMLP(in_features=12, hidden_features=[24, 24], out_features=5, norm=norm, norm_eps=eps, **kw).to(dtype)


@torch.no_grad()
def scaled_output(model, tensors, x, factor=3.0):
    saved = [t.clone() for t in tensors]
    for t in tensors:
        t.mul_(factor)
    out = model(x)
    for t, s in zip(tensors, saved):
        t.copy_(s)
    return out


def models_and_inputs():
    torch.manual_seed(1)
    return [
        (mlp("layer"), torch.randn(32, 12, dtype=torch.float64)),
        (mlp("rms"), torch.randn(32, 12, dtype=torch.float64)),
        (NormCNN(in_channels=2, channels=[6, 8], num_classes=3, norm="layer").double(), torch.randn(4, 2, 8, 8, dtype=torch.float64)),
        (NormCNN(in_channels=2, channels=[6, 8], num_classes=3, norm="rms").double(), torch.randn(4, 2, 8, 8, dtype=torch.float64)),
        (NormTransformerBlock(dim=16, num_heads=4, hidden=32, norm_eps=1e-8).double(), torch.randn(2, 5, 16, dtype=torch.float64)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_every_projected_weight_is_scale_invariant(index):
    model, x = models_and_inputs()[index]
    proj = NaP(model)
    reference = model(x)
    for name, kind in proj.kinds.items():
        if kind == "weight":
            out = scaled_output(model, proj.tensors(name), x)
            assert torch.allclose(out, reference, atol=1e-5), name


def test_head_is_not_scale_invariant():
    model, x = mlp(), torch.randn(32, 12, dtype=torch.float64)
    out = scaled_output(model, [model.head.weight], x)
    assert (out - model(x)).abs().max() > 1e-2


def test_joint_affine_invariance_inner_but_not_last():
    model, x = mlp(), torch.randn(32, 12, dtype=torch.float64)
    with torch.no_grad():  # move the affines off their init so the check is not trivial
        for m in model:
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(0.3 * torch.randn_like(m.weight))
                m.bias.add_(0.3 * torch.randn_like(m.bias))
    inner, last = model[1], model[4]
    reference = model(x)
    assert torch.allclose(scaled_output(model, [inner.weight, inner.bias], x), reference, atol=1e-5)
    assert (scaled_output(model, [last.weight, last.bias], x) - reference).abs().max() > 1e-2


def test_gradient_is_orthogonal_to_invariant_weights():
    model, x = mlp(eps=0.0), torch.randn(32, 12, dtype=torch.float64)
    y = torch.randint(0, 5, (32,))
    F.cross_entropy(model(x), y).backward()
    for layer in (model[0], model[3]):
        w, g = layer.weight.detach(), layer.weight.grad
        assert abs(float((w * g).sum())) / float(w.norm() * g.norm()) < 1e-10


def test_sgd_norm_growth_identity():
    model, x = mlp(eps=0.0), torch.randn(32, 12, dtype=torch.float64)
    y, lr = torch.randint(0, 5, (32,)), 0.7
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        before = {i: (model[i].weight.detach().norm() ** 2, model[i].weight.grad.norm() ** 2) for i in (0, 3)}
        opt.step()
        for i, (w2, g2) in before.items():
            expected = w2 + lr**2 * g2
            assert abs(float(model[i].weight.detach().norm() ** 2 - expected)) / float(expected) < 1e-10


def test_project_to_norm_pure_function():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([[0.0, 4.0]])
    pa, pb = project_to_norm([a, b], 10.0)
    assert torch.allclose(pa, torch.tensor([6.0, 0.0])) and torch.allclose(pb, torch.tensor([[0.0, 8.0]]))
    assert float(joint_norm([pa, pb])) == pytest.approx(10.0)
    (zero,) = project_to_norm([torch.zeros(3, 3)], 2.0)
    assert torch.equal(zero, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="target"):
        project_to_norm([a], -1.0)


def perturb(model, scale=0.5, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + scale * torch.rand(p.shape, generator=g, dtype=p.dtype))
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_projection_hits_targets_and_is_idempotent():
    torch.manual_seed(0)
    model = NormMLP(in_features=12, hidden_features=[24, 24], out_features=5)  # fp32
    proj = NaP(model)
    assert proj.targets["1"] == pytest.approx(math.sqrt(24))  # (γ, β) = (1, 0) at init: joint norm √d
    perturb(model)
    proj.project()
    for name, target in proj.targets.items():
        assert proj.norms()[name] == pytest.approx(target, rel=1e-6)
    once = [p.clone() for p in model.parameters()]
    proj.project()
    assert all(torch.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(once, model.parameters()))


def test_affine_target_is_sqrt_d_for_layernorm_without_offset_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.LayerNorm(6, bias=False), nn.ReLU(), nn.Linear(6, 2))
    proj = NaP(model)
    assert proj.targets["1"] == pytest.approx(math.sqrt(6))


def test_projection_without_affines_or_head_leaves_outputs_unchanged():
    model, x = mlp(), torch.randn(32, 12, dtype=torch.float64)
    proj = NaP(model, affine="none")
    perturb(model)
    before = model(x)
    proj.project()
    assert torch.allclose(model(x), before, atol=1e-5)
    assert set(proj.kinds.values()) == {"weight"}


def test_head_only_with_project_head():
    model = mlp()
    assert "6" not in NaP(model).targets
    proj = NaP(model, project_head=True)
    assert proj.kinds["6"] == "head" and len(proj.tensors("6")) == 1  # head weight only, its bias stays free


def test_zero_tensor_stays_zero():
    model = mlp(dtype=torch.float32)
    proj = NaP(model)
    with torch.no_grad():
        model[0].weight.zero_()
    proj.project()
    assert torch.equal(model[0].weight, torch.zeros_like(model[0].weight))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_post_step_hook_and_every():
    model, x, y = mlp(dtype=torch.float32), torch.randn(8, 12), torch.randint(0, 5, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    proj = NaP(model, every=2)
    handle = proj.attach(opt)
    norms = []
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        norms.append(proj.norms()["0"])
    target = proj.targets["0"]
    assert norms[0] != pytest.approx(target, rel=1e-4) and norms[1] == pytest.approx(target, rel=1e-6)
    assert norms[3] == pytest.approx(target, rel=1e-6) and proj.calls == 4
    handle.remove()
    opt.step()
    assert proj.calls == 4


def test_target_float_sets_hidden_weights_only():
    proj = NaP(mlp(), target=2.5)
    kinds, targets = proj.kinds, proj.targets
    assert all(targets[n] == 2.5 for n in targets if kinds[n] == "weight")
    assert all(targets[n] != 2.5 for n in targets if kinds[n] == "affine")


def test_state_dict_round_trip_and_targets_never_recomputed(tmp_path):
    model = mlp(dtype=torch.float32)
    proj = NaP(model)
    saved_targets = dict(proj.targets)
    perturb(model, scale=2.0)  # "training": norms are far from the initial ones now
    proj.project(); proj.project()
    save_checkpoint(tmp_path / "ckpt.pt", {"model": model.state_dict(), "nap": proj.state_dict()})
    perturb(model, scale=2.0, seed=9)

    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    reloaded = mlp(dtype=torch.float32, seed=5)
    reloaded.load_state_dict(ckpt["model"])
    perturb(reloaded, scale=3.0, seed=11)  # a projector built now would record these norms...
    fresh = NaP(reloaded)
    assert fresh.targets["0"] != pytest.approx(saved_targets["0"], rel=1e-3)
    fresh.load_state_dict(ckpt["nap"])  # ...but loading restores the saved ones
    assert fresh.targets == saved_targets and fresh.calls == 2
    fresh.project()
    assert fresh.norms()["0"] == pytest.approx(saved_targets["0"], rel=1e-6)
    assert fresh.state_dict() == {**ckpt["nap"], "calls": 3}


def test_load_state_dict_rejects_other_layouts():
    proj = NaP(mlp())
    with pytest.raises(ValueError, match="does not match"):
        proj.load_state_dict(NaP(mlp(), affine="none").state_dict())


def test_refuses_projection_without_normalization():
    base = mlp("none")
    with pytest.raises(ValueError, match="projection without normalization is not NaP"):
        NaP(base)
    with pytest.raises(ValueError, match="not followed by a normalization"):
        NaP(base, groups=NaPGroups(weights=[base[0]]))
    model = mlp()
    with pytest.raises(ValueError, match="not followed by a normalization"):
        NaP(model, groups=NaPGroups(weights=[model[0], model[6]]))  # the head feeds no norm


def test_refuses_affine_before_non_homogeneous_activation():
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 8, bias=False),
                          nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="not positively homogeneous"):
        NaP(model, groups=NaPGroups(weights=[model[0]], affines=[model[1]]))
    assert NaP(model).kinds == {"0": "weight", "3": "weight"}  # discovery leaves those affines out


class Unstructured(nn.Module):
    """Not an nn.Sequential: structure cannot show what follows the layers, a probe input can."""

    def __init__(self):
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(4, 8, bias=False), nn.LayerNorm(8), nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.norm(self.a(x))))


def test_numeric_invariance_check():
    model, x = Unstructured(), torch.randn(16, 4)
    NaP(model, groups=NaPGroups(weights=[model.a]), example_input=x)
    with pytest.raises(ValueError, match="not scale-invariant"):
        NaP(model, groups=NaPGroups(weights=[model.a, model.b]), example_input=x)
    with pytest.raises(ValueError, match="no nap_groups"):
        NaP(model)


@pytest.mark.parametrize("kwargs, match", [
    ({"affine": "decay"}, "affine"), ({"target": -1.0}, "target"), ({"target": "final"}, "target"),
    ({"every": 0}, "every"), ({"every": 1.5}, "every"), ({"invariance_tol": 0.0}, "invariance_tol"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NaP(mlp(), **kwargs)


def test_registered_twice_is_refused():
    model = mlp()
    with pytest.raises(ValueError, match="twice"):
        NaP(model, groups=NaPGroups(weights=[model[0], model[0]]))


def test_two_process_ddp_matches_one_process():
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import _nap_ddp
        from tenfold.utils.distributed import run_processes

        single = _nap_ddp.train()
        ranks = run_processes(_nap_ddp.train, size=2)
    finally:
        sys.path.remove(str(Path(__file__).parent))
    for result in ranks:
        assert result["targets"] == single["targets"]
        for name, value in single["params"].items():
            assert torch.allclose(result["params"][name], value, rtol=1e-9, atol=1e-10), name
        for name, target in single["targets"].items():
            assert result["norms"][name] == pytest.approx(target, rel=1e-9)
    moved = single["params"]["0.weight"] - _nap_ddp.model().state_dict()["0.weight"]
    assert moved.abs().max() > 1e-3  # the runs trained


def test_fused_projection_equals_the_pure_rule():
    import copy

    model = mlp(dtype=torch.float32)
    proj = NaP(model, project_head=True)
    perturb(model)
    twin = copy.deepcopy(model)
    twin_modules = dict(twin.named_modules())
    proj.project()
    assert proj._fused  # the foreach path ran
    for name, target in proj.targets.items():
        module = twin_modules[name]
        tensors = [module.weight] if proj.kinds[name] == "head" else [t for t in (module.weight, module.bias) if t is not None]
        for got, want in zip(proj.tensors(name), project_to_norm(tensors, target)):
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-7), name


def test_bf16_weights_use_fp32_norms():
    model = mlp(dtype=torch.bfloat16)
    proj = NaP(model)
    perturb(model)
    proj.project()
    assert proj._fused is False  # per-group fallback, norms in fp32
    for name, target in proj.targets.items():
        assert proj.norms()[name] == pytest.approx(target, rel=1e-2)


def test_projection_follows_a_dtype_change():
    model = mlp(dtype=torch.float32)
    proj = NaP(model)
    proj.project()
    model.double()
    perturb(model)
    proj.project()
    assert proj.norms()["0"] == pytest.approx(proj.targets["0"], rel=1e-9)


def scale_registered(proj, factor=1.7):
    """Scale every registered group by ``factor``: drift that projection should undo."""
    with torch.no_grad():
        for name in proj.targets:
            for t in proj.tensors(name):
                t.mul_(factor)


def test_joint_refuses_a_model_without_affines_as_the_card_says():
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.LayerNorm(8, elementwise_affine=False), nn.ReLU(),
                          nn.Linear(8, 2))
    with pytest.raises(ValueError, match="affine='joint'.*no normalization"):
        NaP(model, affine="joint")
    gelu = nn.Sequential(nn.Linear(4, 8, bias=False), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="affine='joint'"):
        NaP(gelu, affine="joint")
    assert set(NaP(model).kinds.values()) == {"weight"}  # the default ("auto") projects what there is
    assert set(NaP(mlp(), affine="joint").kinds.values()) == {"weight", "affine"}


def test_joint_projection_of_the_last_norm_changes_the_output_and_inner_does_not():
    x = torch.randn(32, 12, dtype=torch.float64)
    for affine, unchanged in (("inner", True), ("joint", False)):
        model = mlp()
        proj = NaP(model, affine=affine)
        scale_registered(proj)
        before = model(x)
        proj.project()
        assert torch.allclose(model(x), before, atol=1e-6) is unchanged, affine


def test_inner_projects_every_norm_but_the_last():
    model = mlp()  # Linear, LN, ReLU, Linear, LN, ReLU, Linear (head)
    assert NaP(model, affine="joint").kinds == {"0": "weight", "3": "weight", "1": "affine", "4": "affine"}
    assert NaP(model, affine="inner").kinds == {"0": "weight", "3": "weight", "1": "affine"}
    with pytest.raises(ValueError, match="affine must be one of"):
        NaP(model, affine="outer")
