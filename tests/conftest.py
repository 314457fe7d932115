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


@pytest.fixture(scope="session")
def moons_teacher_cond(tmp_path_factory):
    """Class-conditional two-moons teacher: one step gives each moon's mean (FD ~30), so conditional
    methods (CFG on the real score) have something to learn."""
    from helpers import train_toy_teacher

    return train_toy_teacher(tmp_path_factory.mktemp("moons"), num_classes=2, data="toy2d:moons")
