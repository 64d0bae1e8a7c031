import os

import pytest
import torch

# the hidden ``toy`` and ``tuned-toy`` experiments (tests/toy_experiment.py, tests/tuned_toy_experiment.py)
# join the registry for the tests and for the worker processes and subprocesses they start
os.environ["TENFOLD_EXPERIMENTS"] = ",".join(
    filter(None, [os.environ.get("TENFOLD_EXPERIMENTS", ""), "tests.toy_experiment", "tests.tuned_toy_experiment"]))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small CPU work runs at one thread (oversubscription on 2 cores is 10-40x slower)."""
    torch.set_num_threads(1)
