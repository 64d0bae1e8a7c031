"""Thread setup. Small models on 2 cores run 10-40x slower when threads oversubscribe, so every
worker process runs torch at one intra-op and one inter-op thread."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def single_thread() -> None:
    """Pin this process to one torch thread (and one OpenMP/MKL thread for libraries started later)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # can be set once per process, before any inter-op work
        pass


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body at one torch intra-op thread (e.g. a latency measured inside ``evaluate``, which
    runs in the caller's process), then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
