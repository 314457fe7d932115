import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(int(os.environ.get("FEWSTEP_TEST_THREADS", "2")))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
