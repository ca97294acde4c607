import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run these small-tensor tests on one thread: on two shared cores a busy neighbour makes
    torch's two-thread kernels 10-50x slower, and the tensors here are too small to gain."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
