"""A module fixture: torch on one thread while a test module runs, restored after.

The new model tests build and train small nets; on a shared CPU, OpenMP's two-thread barriers cost
those small ops far more than they gain (measured: a 2-epoch MLP run took 22.6 s on 2 threads and
2.2-6.1 s on 1 while other jobs loaded the 2 cores). Results do not depend on it."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
