"""Stochastic samplers. Every random draw uses the ``generator`` passed in."""
from __future__ import annotations

import math

import torch

from .ode import _eval, coeffs


def ancestral(denoiser, x, sigmas, cond=None, eta: float = 1.0, generator: torch.Generator | None = None,
              callback=None):
    """DDIM with noise (Song et al. 2021, Eq. 16); eta = 1 is DDPM's ancestral sampler.
    Written for any process: the injected noise has std c = eta s' sqrt(1 - (sh'/sh)^2)."""
    proc = denoiser.process
    for i in range(len(sigmas) - 1):
        sh0, sh1 = float(sigmas[i]), float(sigmas[i + 1])
        t0, _, _ = coeffs(proc, sh0)
        _, a1, s1 = coeffs(proc, sh1)
        x0, eps = _eval(denoiser, x, t0, cond)
        ratio = 0.0 if not math.isfinite(sh0) else sh1 / sh0
        c = eta * s1 * math.sqrt(max(0.0, 1 - ratio ** 2))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = a1 * x0 + math.sqrt(max(s1 ** 2 - c ** 2, 0.0)) * eps + c * z
        if callback is not None:
            callback(i, x, x0)
    return x
