"""Worker for the process-group test (importable by spawned processes)."""

import torch
import torch.distributed as dist

from tenfold.utils.distributed import world


def rank_sum(base: int) -> float:
    value = torch.tensor([float(base + world().rank)])
    dist.all_reduce(value)
    return value.item()
