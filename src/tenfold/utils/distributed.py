"""Multi-process helpers for ``torch.distributed`` (gloo on CPU, nccl on GPU).

Training loops call :func:`world` to learn their rank and world size (1 process when not launched
by ``torchrun``); tests and small experiments call :func:`run_processes` to run a function in N
local processes with a process group set up exactly as ``torchrun`` would (env:// rendezvous).
"""

from __future__ import annotations

import io
import os
import queue
import socket
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """Rank and size of the current process group (``World(0, 1)`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World(0, 1)


def init_from_env(backend: str | None = None) -> World:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_*).

    Without those variables this is a no-op returning ``World(0, 1)``.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return World(0, 1)
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
    return world()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, size: int, port: int, fn: Callable, args: tuple, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        buffer = io.BytesIO()  # plain bytes: tensors put on a queue directly would be shared by file
        torch.save(fn(*args), buffer)  # descriptors, which vanish when this worker exits
        results.put((rank, buffer.getvalue()))
    finally:
        dist.destroy_process_group()


def run_processes(fn: Callable, size: int = 2, args: tuple = ()) -> list:
    """Run ``fn(*args)`` in ``size`` spawned processes joined in a gloo process group on localhost;
    return each rank's return value (which must be picklable). ``fn`` must be importable by name.

    Results are read from a queue while the workers run (a worker blocks on a full pipe until its
    result is read, so reading only after joining could deadlock on large results).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    results = mp.get_context("spawn").Queue()
    workers = mp.start_processes(_worker, args=(size, free_port(), fn, args, results), nprocs=size,
                                 start_method="spawn", join=False)
    by_rank: dict[int, object] = {}
    finished = False
    while len(by_rank) < size:
        try:
            rank, payload = results.get(timeout=0.05 if not finished else 5.0)
            by_rank[rank] = torch.load(io.BytesIO(payload), weights_only=False)
        except queue.Empty:
            if finished:
                raise RuntimeError(f"only ranks {sorted(by_rank)} of {size} returned a result") from None
            finished = workers.join(timeout=0)  # raises if a worker failed
    while not workers.join():
        pass
    return [by_rank[rank] for rank in range(size)]
