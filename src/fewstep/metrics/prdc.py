"""k-NN precision and recall (Kynkäänniemi et al. 2019, Sec. 3): a sample is 'in' a manifold when it
falls inside the k-NN ball of some sample of the other set."""
from __future__ import annotations

import torch


def _radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(feats, feats)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def _coverage(query: torch.Tensor, ref: torch.Tensor, ref_radii: torch.Tensor) -> float:
    d = torch.cdist(query, ref)
    return (d <= ref_radii[None]).any(dim=1).float().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall); on sets too small for k neighbours (a tiny held-out split) k shrinks to fit,
    and a set of one gives nan (no neighbourhood to measure)."""
    k = min(k, real.shape[0] - 1, fake.shape[0] - 1)
    if k < 1:
        return float("nan"), float("nan")
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, _radii(real, k))
    recall = _coverage(real, fake, _radii(fake, k))
    return precision, recall
