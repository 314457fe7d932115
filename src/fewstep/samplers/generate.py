"""Generation: a sampling spec (sampler, grid, steps, CFG) turned into samples. Training (teacher
pairs), evaluation, benchmarks and the CLI all generate through ``generate``."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..hardware import use_bf16
from ..nets.cond import Cond, index_cond, stack_conds
from ..noise.guidance import guided
from .grids import make_grid
from .ode import coeffs, initial_noise
from .registry import sample


@dataclass
class SamplingSpec:
    sampler: str = "heun"  # a key of fewstep.samplers.SAMPLERS
    steps: int = 18  # grid steps (Heun: NFE = 2 steps - 1)
    grid: str = "karras"
    cfg: float = 1.0  # CFG scale, 1 = none
    sigmas: list | None = None  # an explicit sigma_hat grid overrides grid/steps (few-step students)


def respec(spec: SamplingSpec, sampler: str | None = None, grid: str | None = None, nfe: int | None = None,
           cfg: float | None = None) -> SamplingSpec:
    """A model's own sampling with another sampler, grid, NFE or CFG (ValueError when the sampler cannot
    spend that NFE). An explicit student grid is kept only while sampler and step count still fit it."""
    from .registry import steps_for_nfe

    spec = SamplingSpec(spec.sampler, spec.steps, spec.grid, spec.cfg, spec.sigmas)
    if sampler:
        spec.sampler = sampler
        if sampler != "multistep":  # an explicit student grid only fits the student's own sampler
            spec.sigmas = None
    if grid:
        spec.grid, spec.sigmas = grid, None
    if nfe:
        steps = steps_for_nfe(spec.sampler, nfe)
        if steps is None:
            raise ValueError(f"sampler {spec.sampler!r} cannot run with {nfe} NFE")
        spec.steps, spec.sigmas = steps, (None if spec.sigmas is None or len(spec.sigmas) - 1 != steps else spec.sigmas)
    if cfg is not None:
        spec.cfg = cfg
    return spec


class CountNFE(torch.nn.Module):
    """Wraps a denoiser and counts network evaluations per sample (CFG counts 2)."""

    def __init__(self, den):
        super().__init__()
        self.den, self.process, self.calls = den, den.process, 0

    def raw(self, x, t, cond=None):
        self.calls += getattr(self.den, "nfe_per_call", 1)
        return self.den.raw(x, t, cond)

    def policy(self, x, t, cond=None):
        """ArcFlow's velocity policy (samplers/arc.py): one evaluation; a CFG wrapper has none."""
        from .arc import policy_of

        self.calls += 1
        return policy_of(self.den, x, t, cond)


def sigmas_for(den, spec: SamplingSpec) -> torch.Tensor:
    """The sigma_hat grid a spec samples on: its explicit levels, or its grid with its steps."""
    if spec.sigmas is not None:
        return torch.as_tensor(spec.sigmas, dtype=torch.float64)
    return make_grid(spec.grid, den.process, spec.steps)


def _setup(den, spec: SamplingSpec, bf16: bool):
    """(counted guided model, sigma grid, device, precision context) that every generation runs in."""
    device = next(den.parameters()).device
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16(bf16, device) else contextlib.nullcontext()
    return CountNFE(guided(den, spec.cfg)), sigmas_for(den, spec), device, ctx


def noised_start(process, sigmas, clean: torch.Tensor, generator=None, device=None) -> torch.Tensor:
    """``clean`` images noised to the grid's first level, x = alpha x0 + sigma z (SDEdit, Meng et al. 2022):
    sampling from there re-runs only the grid's remaining steps on them."""
    _, a, s = coeffs(process, float(sigmas[0]))
    return (a * clean + s * torch.randn(clean.shape, generator=generator)).to(device or "cpu")


def generate(den, n: int, spec: SamplingSpec, shape, labels=None, seed: int = 0, batch: int = 500,
             bf16: bool = False, return_nfe: bool = False, start: torch.Tensor | None = None):
    """n samples (in [-1, 1] data units, not clamped) from noise seeded by ``seed``, or, with ``start``
    ((n, *shape) clean images), from those images noised to the grid's first level."""
    g = torch.Generator().manual_seed(seed)
    model, sigmas, device, ctx = _setup(den, spec, bf16)
    if start is not None and tuple(start.shape) != (n, *shape):
        raise ValueError(f"start images have shape {tuple(start.shape)}, expected {(n, *shape)}")
    out = []
    with torch.no_grad(), ctx:
        for i in range(0, n, batch):
            m = min(batch, n - i)
            x = initial_noise(den.process, sigmas, (m, *shape), generator=g, device=device) if start is None \
                else noised_start(den.process, sigmas, start[i:i + m].float(), generator=g, device=device)
            cond = None if labels is None else index_cond(labels, slice(i, i + m)).to(device)  # labels or a Cond
            out.append(sample(model, x, sigmas, spec.sampler, cond=cond, generator=g).float().cpu())
    samples = torch.cat(out)
    nfe = model.calls / max(1, -(-n // batch))
    return (samples, nfe) if return_nfe else samples


def generate_requests(den, spec: SamplingSpec, shape, requests: list[tuple[int, object, int]], bf16: bool = False,
                      start: list[torch.Tensor] | None = None):
    """Several requests' samples in one batch: each request (n, labels, a ``Cond`` or None, seed) gets the noise
    ``generate(den, n, spec, shape, labels, seed)`` would draw, so batching does not change an image
    (up to the float rounding of a different batch size). Stochastic samplers draw their per-step noise
    from the first request's generator: batch only one request at a time for them. ``start``: per request,
    clean images to noise to the grid's first level instead of pure noise (as ``generate``'s)."""
    gens = [torch.Generator().manual_seed(seed) for _, _, seed in requests]
    model, sigmas, device, ctx = _setup(den, spec, bf16)
    if start is None:
        x = torch.cat([initial_noise(den.process, sigmas, (n, *shape), generator=g, device=device)
                       for (n, _, _), g in zip(requests, gens)])
    else:
        x = torch.cat([noised_start(den.process, sigmas, x0.float(), generator=g, device=device)
                       for x0, g in zip(start, gens)])
    labels = [lab for _, lab, _ in requests]
    if all(lab is None for lab in labels):
        cond = None
    elif isinstance(labels[0], Cond):  # text conditions, each with its own unconditional branch
        cond = stack_conds(labels).to(device)
    else:
        cond = torch.cat([torch.as_tensor(lab) for lab in labels]).to(device)
    with torch.no_grad(), ctx:
        out = sample(model, x, sigmas, spec.sampler, cond=cond, generator=gens[0]).float().cpu()
    return list(out.split([n for n, _, _ in requests]))
