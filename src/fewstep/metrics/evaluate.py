"""Measure generated samples against held-out data (docs/benchmarks.md)."""
from __future__ import annotations

import statistics

import torch

from ..samplers.generate import SamplingSpec, generate
from .fid import fd
from .prdc import precision_recall


@torch.no_grad()
def measure(samples: torch.Tensor, labels, ref: torch.Tensor, features, ref_feats=None) -> dict:
    """FD, precision/recall and (for labelled data) class accuracy of samples against ``ref``."""
    x = samples.clamp(-1, 1)
    f_fake = features.features(x)
    f_real = features.features(ref) if ref_feats is None else ref_feats
    out = {"fd": fd(f_fake, f_real)}
    out["precision"], out["recall"] = precision_recall(f_real, f_fake, k=3)
    if labels is not None and getattr(features, "head", None) is not None:
        out["class_acc"] = (features.head(f_fake).argmax(1) == labels).float().mean().item()
    return out


def mean_std(rows: list[dict]) -> dict:
    """Mean over seeds of each metric, plus ``<metric>_std`` (population std if one seed: 0)."""
    out = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        out[k] = statistics.fmean(vals)
        out[f"{k}_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    return out


def make_evaluator(test_set, features, spec: SamplingSpec, n: int = 500, seed: int = 0, bf16: bool = True):
    """The periodic eval the trainer calls: FD etc. of ``n`` samples on a fixed seed."""
    ref = test_set.x
    ref_feats = features.features(ref)
    labels = test_set.class_balanced_labels(n)

    def evaluator(den, it):
        samples = generate(den, n, spec, test_set.shape, labels, seed=seed, bf16=bf16)
        res = measure(samples, labels, ref, features, ref_feats)
        res.update(collapse_signals(samples, labels))
        return res

    return evaluator


def collapse_signals(samples: torch.Tensor, labels=None) -> dict:
    """Sample statistics that expose mode collapse: overall mean/std and, per class, the mean
    pairwise spread of samples (near 0 when a class collapses to one image)."""
    flat = samples.flatten(1)
    out = {"sample_mean": flat.mean().item(), "sample_std": flat.std().item()}
    if labels is not None:
        spreads = [flat[labels == c].std(0).mean().item() for c in labels.unique() if (labels == c).sum() > 1]
        out["min_class_spread"] = min(spreads) if spreads else 0.0
    return out
