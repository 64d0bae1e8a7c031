import contextlib
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# the hidden ``toy`` and ``tuned-toy`` experiments (tests/toy_experiment.py, tests/tuned_toy_experiment.py)
# join the registry for the tests and for the worker processes and subprocesses they start
os.environ["TENFOLD_EXPERIMENTS"] = ",".join(
    filter(None, [os.environ.get("TENFOLD_EXPERIMENTS", ""), "tests.toy_experiment", "tests.tuned_toy_experiment"]))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small CPU work runs at one thread (oversubscription on 2 cores is 10-40x slower)."""
    torch.set_num_threads(1)


class _DispatchedOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def device_reads():
    """``with device_reads() as reads:`` counts the Tensor -> Python conversions (``.item()``, ``int(t)``,
    ``bool(t)``: each dispatches ``aten._local_scalar_dense``, a host synchronisation on a GPU) made
    inside the block; ``reads()`` returns the count."""
    @contextlib.contextmanager
    def watch():
        with _DispatchedOps() as ops:
            yield lambda: ops.seen.count("_local_scalar_dense")
    return watch
