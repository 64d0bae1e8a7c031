"""DDP worker for tests/optim/test_nap.py (importable by name in spawned processes)."""

import torch
import torch.nn.functional as F

from tenfold.models.normalized import NormMLP
from tenfold.optim.nap import NaP


def data(steps: int, batch: int):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (batch,), generator=g))
            for _ in range(steps)]


def model():
    torch.manual_seed(0)
    return NormMLP(in_features=8, hidden_features=[16, 16], out_features=4).double()


def train(steps: int = 6, batch: int = 16, lr: float = 0.5) -> dict:
    """Train with NaP after every SGD step; under torch.distributed each rank takes its slice of the
    global batch and DDP averages the gradients. Returns the final parameters and projector norms."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    net = model()
    wrapped = torch.nn.parallel.DistributedDataParallel(net) if distributed else net
    opt = torch.optim.SGD(wrapped.parameters(), lr=lr)
    proj = NaP(wrapped)
    proj.attach(opt)
    for x, y in data(steps, batch):
        shard = slice(rank * batch // size, (rank + 1) * batch // size)
        opt.zero_grad()
        F.cross_entropy(wrapped(x[shard]), y[shard]).backward()
        opt.step()
    return {"params": {n: p.detach().clone() for n, p in net.named_parameters()}, "norms": proj.norms(),
            "targets": proj.targets}
