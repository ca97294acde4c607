import os

import pytest
import torch

# Two cores shared by everything: keep torch from oversubscribing them in tests.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"
