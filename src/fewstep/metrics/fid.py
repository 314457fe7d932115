"""Fréchet distance between Gaussian fits of two feature sets (Heusel et al. 2017, Eq. 6)."""
from __future__ import annotations

import numpy as np
import torch


def gaussian_stats(feats: torch.Tensor):
    f = feats.double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)).

    tr (C1 C2)^(1/2) = sum of sqrt(eigenvalues of C1^(1/2) C2 C1^(1/2)), a symmetric PSD matrix,
    which avoids the complex round-off of a general matrix square root."""
    w, V = np.linalg.eigh(cov1)
    s1 = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    m = s1 @ cov2 @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fd(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))
