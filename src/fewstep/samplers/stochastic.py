"""Stochastic samplers. Every random draw uses the ``generator`` passed in."""
from __future__ import annotations

import math

import torch

from .ode import _eval, grid_steps


def ancestral(denoiser, x, sigmas, cond=None, eta: float = 1.0, generator: torch.Generator | None = None,
              callback=None):
    """DDIM with noise (Song et al. 2021, Eq. 16); eta = 1 is DDPM's ancestral sampler.
    Written for any process: the injected noise has std c = eta s' sqrt(1 - (sh'/sh)^2)."""
    for i, sh0, sh1, (t0, _, _), (_, a1, s1) in grid_steps(denoiser.process, sigmas):
        x0, eps = _eval(denoiser, x, t0, cond)
        ratio = 0.0 if not math.isfinite(sh0) else sh1 / sh0
        c = eta * s1 * math.sqrt(max(0.0, 1 - ratio ** 2))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = a1 * x0 + math.sqrt(max(s1 ** 2 - c ** 2, 0.0)) * eps + c * z
        if callback is not None:
            callback(i, x, x0)
    return x
