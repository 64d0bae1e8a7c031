"""Linear probes: how linearly decodable is a quantity (e.g. the task latent z_bar of a hyperteacher
task) from a model's hidden features (e.g. the residual stream of an in-context transformer)?

Ridge regression on standardised features, fitted on one set and scored by R^2 on others:

    W, b = argmin ||F W + b - Z||^2 + ridge ||W||^2      (F standardised with the training statistics)
    R^2  = mean_d [1 - sum_i (Z_hat_id - Z_id)^2 / sum_i (Z_id - mean_i Z_id)^2]

Used by the compositional experiment (Kobayashi, Schug, Akram et al., arXiv 2407.12275) to ask whether
a plain transformer that fails out of distribution still represents the task latent.
"""

from __future__ import annotations

import torch


class LinearProbe:
    """Ridge-regression probe from features (n, f) to targets (n, t); ``ridge`` >= 0."""

    def __init__(self, ridge: float = 1e-2):
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.ridge = ridge
        self.mean = self.std = self.weight = self.bias = None

    def fit(self, features: torch.Tensor, targets: torch.Tensor) -> LinearProbe:
        features, targets = _as_matrix(features, "features"), _as_matrix(targets, "targets")
        if features.shape[0] != targets.shape[0]:
            raise ValueError(f"features and targets need the same rows, got {features.shape[0]}, {targets.shape[0]}")
        self.mean, self.std = features.mean(0), features.std(0).clamp_min(1e-8)
        f = (features - self.mean) / self.std
        t_mean = targets.mean(0)
        gram = f.T @ f + self.ridge * torch.eye(f.shape[1], dtype=f.dtype)
        self.weight = torch.linalg.solve(gram, f.T @ (targets - t_mean))  # (f, t)
        self.bias = t_mean
        return self

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("call fit() before predict()")
        features = _as_matrix(features, "features")
        return ((features - self.mean) / self.std) @ self.weight + self.bias

    def score(self, features: torch.Tensor, targets: torch.Tensor) -> float:
        return r2_score(self.predict(features), _as_matrix(targets, "targets"))


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """R^2 per target dimension (around that set's own mean), averaged over dimensions with non-zero
    variance."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    sse = ((pred - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    keep = sst > 1e-12
    if not bool(keep.any()):
        raise ValueError("targets have no variance in any dimension")
    return float((1 - sse[keep] / sst[keep]).mean())


def linear_probe_r2(features_id: torch.Tensor, z_id: torch.Tensor, features_ood: torch.Tensor,
                    z_ood: torch.Tensor, ridge: float = 1e-2, train_frac: float = 0.5) -> tuple[float, float]:
    """Fit a probe on the first ``train_frac`` of the in-distribution rows; return (R^2 on the
    remaining ID rows, R^2 on the OOD rows)."""
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    n_train = int(features_id.shape[0] * train_frac)
    if n_train < 1 or n_train >= features_id.shape[0]:
        raise ValueError(f"need ID rows on both sides of the split, got {features_id.shape[0]} rows")
    probe = LinearProbe(ridge).fit(features_id[:n_train], z_id[:n_train])
    return probe.score(features_id[n_train:], z_id[n_train:]), probe.score(features_ood, z_ood)


def _as_matrix(values: torch.Tensor, name: str) -> torch.Tensor:
    if values.dim() != 2:
        raise ValueError(f"{name} must be shaped (rows, dims), got {tuple(values.shape)}")
    return values.double()
