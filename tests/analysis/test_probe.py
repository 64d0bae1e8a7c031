import pytest
import torch

from tenfold.analysis.probe import LinearProbe, linear_probe_r2, r2_score


def test_probe_recovers_a_linear_map_in_and_out_of_distribution():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 20, generator=g)
    z_id, z_ood = torch.rand(400, 6, generator=g), torch.rand(100, 6, generator=g) + 1.0
    r2_id, r2_ood = linear_probe_r2(z_id @ mixing + 3, z_id, z_ood @ mixing + 3, z_ood, ridge=1e-6)
    assert r2_id > 0.999 and r2_ood > 0.999


def test_probe_on_unrelated_features_scores_near_zero_or_below():
    g = torch.Generator().manual_seed(1)
    feats, z = torch.randn(600, 10, generator=g), torch.randn(600, 3, generator=g)
    r2_id, r2_ood = linear_probe_r2(feats[:400], z[:400], feats[400:], z[400:])
    assert r2_id < 0.05 and r2_ood < 0.05


def test_ridge_zero_matches_least_squares_and_ridge_shrinks():
    g = torch.Generator().manual_seed(2)
    feats, targets = torch.randn(50, 4, generator=g), torch.randn(50, 2, generator=g)
    probe = LinearProbe(0.0).fit(feats, targets)
    design = torch.cat([feats, torch.ones(50, 1)], 1).double()
    solution = torch.linalg.lstsq(design, targets.double()).solution
    assert torch.allclose(probe.predict(feats), design @ solution, atol=1e-8)
    shrunk = LinearProbe(1e4).fit(feats, targets)
    assert shrunk.weight.norm() < 0.1 * probe.weight.norm()


def test_r2_score_values_and_errors():
    t = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    assert r2_score(t, t) == pytest.approx(1.0)
    assert r2_score(t.mean(0).expand_as(t), t) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        r2_score(t, t[:2])
    with pytest.raises(ValueError, match="ridge"):
        LinearProbe(-1.0)
    with pytest.raises(RuntimeError):
        LinearProbe().predict(t)
    with pytest.raises(ValueError, match="train_frac"):
        linear_probe_r2(t, t, t, t, train_frac=1.0)
