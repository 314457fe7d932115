"""Deterministic probability-flow ODE samplers, written over (alpha, sigma) so they serve every
noise process. ``sigmas`` is a descending sigma_hat grid (grids.py); a final 0 returns the clean
sample. No ``no_grad`` here: methods unroll these with gradients; callers add no_grad for inference.

``denoiser.raw(x, t, cond) -> (x0, eps)`` is all a sampler needs (Denoiser, Guided).
"""
from __future__ import annotations

import math

import torch

from ..noise.base import bcast


def coeffs(process, sh: float):
    """(t, alpha, sigma) at normalised level sh; sh = 0 is the clean end (alpha 1, sigma 0)."""
    if sh == 0:
        return None, 1.0, 0.0
    t = process.t_from_sigma_hat(torch.tensor(sh, dtype=torch.float64))
    return t, float(process.alpha(t)), float(process.sigma(t))


def initial_noise(process, sigmas, shape, generator: torch.Generator | None = None, device=None):
    """x at the first grid level: sigma(t_0) z (the alpha(t_0) x0 part is negligible by design)."""
    _, _, s0 = coeffs(process, float(sigmas[0]))
    return s0 * torch.randn(shape, generator=generator).to(device or "cpu")


def _eval(denoiser, x, t, cond):
    tt = torch.full((x.shape[0],), float(t), device=x.device)
    return denoiser.raw(x, tt, cond)


def ddim_step(x0, eps, a_next, s_next):
    """DDIM (Song et al. 2021, Eq. 12, eta = 0): x_next = a' x0 + s' eps. Equals Euler in sigma_hat."""
    return a_next * x0 + s_next * eps


def level_coeffs(process, sh: torch.Tensor):
    """Per-sample (t, alpha, sigma) at a (B,) tensor of finite levels sh; sh = 0 gives alpha 1, sigma 0
    (t there is a placeholder: no network is evaluated at the clean end)."""
    sh = torch.as_tensor(sh, dtype=torch.float64)
    pos = sh > 0
    t = process.t_from_sigma_hat(torch.where(pos, sh, torch.ones_like(sh)))
    a = torch.where(pos, process.alpha(t).to(torch.float64), torch.ones_like(sh))
    s = torch.where(pos, process.sigma(t).to(torch.float64), torch.zeros_like(sh))
    return t.float(), a.float(), s.float()


def flow_native(process, x_tau, tau):
    """A rectified-flow point x_tau = (1 - tau) x0 + tau eps (tau: (B,) in (0, 1)) as the process's own
    (x, t): the level sh = tau / (1 - tau) and x = alpha x_tau / (1 - tau) hold the same x0 and eps, so a
    denoiser there predicts the flow's ends and its velocity eps - x0 (Liu et al. 2022, Eq. 1)."""
    tau = torch.as_tensor(tau, dtype=torch.float64)
    t, a, _ = level_coeffs(process, tau / (1 - tau))
    scale = (a.double() / (1 - tau)).float().to(x_tau.device)
    return bcast(scale, x_tau) * x_tau, t.to(x_tau.device)


def flow_velocity(den, x_tau, tau, cond=None):
    """(v, x0): a denoiser's rectified-flow velocity eps - x0 at the flow point x_tau (time tau), and its x0."""
    x, t = flow_native(den.process, x_tau, tau)
    x0, eps = den.raw(x, t, cond)
    return eps.float() - x0.float(), x0.float()


def noised(process, x0, eps, sh):
    """x at per-sample levels sh (> 0): alpha x0 + sigma eps, with the native times (and alpha, sigma)."""
    t, a, s = level_coeffs(process, sh)
    return bcast(a, x0) * x0 + bcast(s, x0) * eps, t, a, s


def ddim_to(denoiser, x, sh0, sh1, cond=None):
    """One DDIM/Euler step per sample from level sh0 (> 0) to sh1 (>= 0), both (B,) tensors.
    Returns (x_next, x0_hat, eps_hat). The training-time form of ``euler``'s step."""
    t0, _, _ = level_coeffs(denoiser.process, sh0)
    _, a1, s1 = level_coeffs(denoiser.process, sh1)
    x0, eps = denoiser.raw(x, t0.to(x.device), cond)
    return ddim_step(x0, eps, bcast(a1.to(x.device), x), bcast(s1.to(x.device), x)), x0, eps


def heun_to(denoiser, x, sh0, sh1, cond=None):
    """One Heun step per sample (EDM Alg. 2 in y = x / alpha) from sh0 to sh1 > 0: 2 NFE.
    The training-time form of ``heun``'s interior step (consistency distillation's teacher solver)."""
    proc = denoiser.process
    t0, a0, _ = level_coeffs(proc, sh0)
    t1, a1, _ = level_coeffs(proc, sh1)
    dev = x.device
    a0, a1 = bcast(a0.to(dev), x), bcast(a1.to(dev), x)
    dsh = bcast((torch.as_tensor(sh1) - torch.as_tensor(sh0)).float().to(dev), x)
    _, eps = denoiser.raw(x, t0.to(dev), cond)
    y1 = x / a0 + dsh * eps
    _, eps1 = denoiser.raw(a1 * y1, t1.to(dev), cond)
    return a1 * (x / a0 + dsh * 0.5 * (eps + eps1))


def grid_steps(process, sigmas):
    """Each step of a sigma_hat grid: (i, sh0, sh1, (t0, a0, s0), (t1, a1, s1)), the levels as floats
    with their native times and coefficients. Every sampler walks its grid through this."""
    for i in range(len(sigmas) - 1):
        sh0, sh1 = float(sigmas[i]), float(sigmas[i + 1])
        yield i, sh0, sh1, coeffs(process, sh0), coeffs(process, sh1)


def euler(denoiser, x, sigmas, cond=None, callback=None):
    """Euler on the PF-ODE in sigma_hat (EDM Alg. 1 without churn) == DDIM: 1 NFE per step."""
    for i, _, _, (t, _, _), (_, a1, s1) in grid_steps(denoiser.process, sigmas):
        x0, eps = _eval(denoiser, x, t, cond)
        x = ddim_step(x0, eps, a1, s1)
        if callback is not None:
            callback(i, x, x0)
    return x


def heun(denoiser, x, sigmas, cond=None, callback=None):
    """Heun's 2nd-order method, EDM Alg. 2 (no churn), in the normalised variable y = x/alpha:
    dy/dsh = eps(y). The last step to sh = 0 is Euler. NFE = 2 n - 1 for an n-step grid ending at 0.
    A step starting where alpha = 0 (flow at t = 1) cannot be taken in y and falls back to DDIM."""
    for i, sh0, sh1, (t0, a0, _), (t1, a1, s1) in grid_steps(denoiser.process, sigmas):
        x0, eps = _eval(denoiser, x, t0, cond)
        if sh1 == 0 or a0 == 0 or not math.isfinite(sh0):
            x = ddim_step(x0, eps, a1, s1)
        else:
            y1 = x / a0 + (sh1 - sh0) * eps  # Euler predictor (EDM Alg. 2, line 5-6)
            x1 = a1 * y1
            _, eps1 = _eval(denoiser, x1, t1, cond)
            x = a1 * (x / a0 + (sh1 - sh0) * 0.5 * (eps + eps1))  # trapezoidal corrector (line 8)
        if callback is not None:
            callback(i, x, x0)
    return x


def dpmpp_2m(denoiser, x, sigmas, cond=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda = -log sigma_hat; first and final steps
    are first order (as in k-diffusion and diffusers' lower_order_final). 1 NFE per step."""
    x0_prev, h_prev = None, None
    for i, sh0, sh1, (t0, a0, s0), (_, a1, s1) in grid_steps(denoiser.process, sigmas):
        x0, eps = _eval(denoiser, x, t0, cond)
        if sh1 == 0 or a0 == 0 or not math.isfinite(sh0):
            x = ddim_step(x0, eps, a1, s1)
            h = None
        else:
            h = math.log(sh0) - math.log(sh1)  # lambda_{i+1} - lambda_i
            D = x0
            if x0_prev is not None and h_prev is not None:
                r = h_prev / h
                D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # Alg. 2, line 6
            x = (s1 / s0) * x - a1 * math.expm1(-h) * D  # data-prediction exponential integrator
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, x, x0)
    return x
