"""Worker for the TAM DDP test (importable by spawned processes): train a small MLP with TAM for a
few steps on a fixed global batch split across ranks, and return the final parameters and ŝ."""

import torch
from torch import nn

from tenfold.optim import TAM
from tenfold.utils.distributed import world

GLOBAL_BATCH = 16
STEPS = 8


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def train_all(granularities: tuple[str, ...]) -> dict:
    """``{granularity: train(granularity)}`` (one process spawn serves every granularity)."""
    return {g: train(g) for g in granularities}


def train(granularity: str) -> dict:
    """Run TAM on this rank's share of each global batch; wrap in DDP when there are several ranks."""
    rank, size = world().rank, world().size
    model = _model()
    net = model
    if size > 1:
        net = nn.parallel.DistributedDataParallel(model)
    optimizer = TAM(model.parameters(), lr=0.05, granularity=granularity, weight_decay=1e-3)
    data = torch.Generator().manual_seed(1)
    share = GLOBAL_BATCH // size
    for _ in range(STEPS):
        x = torch.randn(GLOBAL_BATCH, 6, generator=data, dtype=torch.float64)
        y = torch.randint(0, 3, (GLOBAL_BATCH,), generator=data)
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()  # DDP averages gradients over ranks
        optimizer.step()
    return {"params": [p.detach().clone() for p in model.parameters()],
            "s_hat": ([float(optimizer.param_groups[0]["s_hat"])] if granularity == "global"
                      else [float(optimizer.state[p]["s_hat"]) for p in model.parameters()]),
            "damping": optimizer.last_damping}
