"""Generate samples with a sampling spec and measure them against held-out data (BENCHMARKS.md)."""
from __future__ import annotations

import contextlib
import statistics

import torch

from ..methods.base import SamplingSpec
from ..noise.guidance import guided
from ..samplers import initial_noise, make_grid, sample
from .fid import fd
from .prdc import precision_recall


class CountNFE(torch.nn.Module):
    """Wraps a denoiser and counts network evaluations per sample (CFG counts 2)."""

    def __init__(self, den):
        super().__init__()
        self.den, self.process, self.calls = den, den.process, 0

    def raw(self, x, t, cond=None):
        self.calls += getattr(self.den, "nfe_per_call", 1)
        return self.den.raw(x, t, cond)


def sigmas_for(den, spec: SamplingSpec) -> torch.Tensor:
    if spec.sigmas is not None:
        return torch.as_tensor(spec.sigmas, dtype=torch.float64)
    return make_grid(spec.grid, den.process, spec.steps)


def generate(den, n: int, spec: SamplingSpec, shape, labels=None, seed: int = 0, batch: int = 500,
             bf16: bool = False, return_nfe: bool = False):
    """n samples (in [-1, 1] data units, not clamped) from noise seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    device = next(den.parameters()).device
    model = CountNFE(guided(den, spec.cfg))
    sigmas = sigmas_for(den, spec)
    out = []
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        for i in range(0, n, batch):
            m = min(batch, n - i)
            x = initial_noise(den.process, sigmas, (m, *shape), generator=g, device=device)
            cond = None if labels is None else labels[i:i + m].to(device)
            out.append(sample(model, x, sigmas, spec.sampler, cond=cond, generator=g).float().cpu())
    samples = torch.cat(out)
    nfe = model.calls / max(1, -(-n // batch))
    return (samples, nfe) if return_nfe else samples


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
