import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))  # helpers, toy models
torch.set_num_threads(int(os.environ.get("FEWSTEP_TEST_THREADS", "2")))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory):
    """Unconditional toy2d teacher (about 8 s to train), shared by the method tests."""
    from helpers import train_toy_teacher

    return train_toy_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def toy_teacher_cond(tmp_path_factory):
    """Class-conditional toy2d teacher with label dropout, so it supports CFG."""
    from helpers import train_toy_teacher

    return train_toy_teacher(tmp_path_factory.mktemp("teacher_cond"), num_classes=8)
