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


TCD_GAMMA = 0.3  # TCD's default stochasticity


def tcd(denoiser, x, sigmas, cond=None, generator: torch.Generator | None = None, callback=None, gamma: float = TCD_GAMMA):
    """TCD's strategic stochastic sampling (Zheng et al. 2024, Alg. 4), the sampler Hyper-SD's models use:
    from level s_i, predict (x0, eps), take the DDIM step to an intermediate level s' whose rectified-flow
    time is (1 - gamma) that of s_{i+1}, then add fresh noise from s' up to s_{i+1}. gamma = 0 is DDIM
    (``euler``), gamma = 1 the consistency multistep sampler (``multistep``). TCD places s' in SD's
    discrete timesteps; rectified-flow time tau = s / (1 + s) does the same for any process."""
    for i, _, sh1, (t0, _, _), (_, a1, _) in grid_steps(denoiser.process, sigmas):
        x0, eps = _eval(denoiser, x, t0, cond)
        tau = (1 - gamma) * sh1 / (1 + sh1)
        sh_mid = tau / (1 - tau)
        y = x0 + sh_mid * eps  # the DDIM step to s', in y = x / alpha
        if sh1 > sh_mid:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            y = y + (sh1 * sh1 - sh_mid * sh_mid) ** 0.5 * z
        x = a1 * y
        if callback is not None:
            callback(i, x, x0)
    return x
