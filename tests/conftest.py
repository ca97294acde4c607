import pytest
import torch

# The tests' problems are small: one intra-op thread is fastest, and more threads than free
# cores slow small ops down many times over.
torch.set_num_threads(1)


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"
