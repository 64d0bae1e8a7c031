import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small CPU work runs at one thread (oversubscription on 2 cores is 10-40x slower)."""
    torch.set_num_threads(1)
