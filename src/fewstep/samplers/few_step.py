"""Sampling for few-step students that predict x0 directly and re-noise between steps."""
from __future__ import annotations

import torch

from .ode import _eval, grid_steps


def multistep(denoiser, x, sigmas, cond=None, generator: torch.Generator | None = None, callback=None):
    """Consistency-model multistep sampling (Song et al. 2023, Alg. 1) == DMD2's backward simulation:
    x0 = G(x, t_i), then x = alpha_{i+1} x0 + sigma_{i+1} z with fresh z. One NFE per step."""
    for i, _, _, (t0, _, _), (_, a1, s1) in grid_steps(denoiser.process, sigmas):
        x0, _ = _eval(denoiser, x, t0, cond)
        x = x0 if s1 == 0 else a1 * x0 + s1 * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        if callback is not None:
            callback(i, x, x0)
    return x
