import numpy as np
import pytest
import torch

from fewstep.metrics import fd, frechet_distance, precision_recall
from fewstep.metrics.features import load_features


def test_fd_matches_closed_form_for_gaussians():
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    c1, c2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # diagonal covariances: tr(C1 + C2 - 2 sqrt(C1 C2)) = sum (sqrt a - sqrt b)^2
    expect = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expect, rel=1e-9)


def test_fd_of_samples():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5000, 4, generator=g), torch.randn(5000, 4, generator=g)
    assert fd(a, b) < 0.02
    assert fd(a, b + 1) == pytest.approx(4.0, abs=0.1)


def test_precision_recall_detect_missing_modes():
    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(500, 2, generator=g) * 0.1 + torch.tensor(c) for c in ([-3.0, 0.0], [3.0, 0.0])])
    half = torch.randn(1000, 2, generator=g) * 0.1 + torch.tensor([-3.0, 0.0])  # one mode only
    p, r = precision_recall(real, half)
    assert p > 0.9 and r < 0.6
    off = torch.randn(1000, 2, generator=g) * 0.1 + torch.tensor([0.0, 5.0])  # nothing real-looking
    assert precision_recall(real, off)[0] < 0.05


def test_shipped_mnist_features_classify_held_out_digits():
    from fewstep.data import load_dataset

    net = load_features("mnist")
    te = load_dataset("mnist", "test")
    with torch.no_grad():
        acc = (net(te.x).argmax(1) == te.labels).float().mean().item()
    assert acc > 0.97
    assert net.features(te.x[:4]).shape == (4, 128)
