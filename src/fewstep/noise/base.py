"""Gaussian noise processes and conversions between prediction kinds.

Time convention (one for the whole package)
-------------------------------------------
Every process is a Gaussian path ``x_t = alpha(t) * x0 + sigma(t) * eps`` in the process's own
*native* time ``t``, where **larger t is noisier and t = 0 is clean data**:

* EDM:            t = sigma in [sigma_min, sigma_max];          alpha = 1
* VP (discrete):  t = DDPM timestep index in [0, T-1] (float);   alpha^2 + sigma^2 = 1
* VP (continuous):t in [0, 1]
* Rectified flow: t in [0, 1], t = 1 is pure noise;             alpha = 1 - t, sigma = t

Samplers never look at t directly: they use ``alpha``/``sigma`` and the *normalised noise level*
``sigma_hat(t) = sigma(t) / alpha(t)`` (the EDM sigma of ``x_t / alpha(t)``), so one sampler serves
every process. ``t_from_sigma_hat`` maps back. ``c_noise(t)`` is what the network sees as its time input.

Prediction kinds (``x = alpha x0 + sigma eps``):
* ``x0``   - the clean sample
* ``eps``  - the noise
* ``v``    - ``alpha eps - sigma x0`` (Salimans & Ho 2022, Sec. 4)
* ``flow`` - the rectified-flow velocity ``eps - x0`` (Liu et al. 2022; = dx/dt for the flow path)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PREDICTION_KINDS = ("x0", "eps", "v", "flow")


def bcast(c: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample coefficient (shape [B] or scalar) against x (shape [B, ...])."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape[0], *([1] * (x.ndim - 1)))


def to_x0_eps(kind: str, pred: torch.Tensor, x: torch.Tensor, alpha, sigma):
    """Convert a prediction of ``kind`` at ``x`` (noise coefficients alpha, sigma) to (x0, eps)."""
    a, s = bcast(alpha, x), bcast(sigma, x)
    if kind == "x0":
        return pred, (x - a * pred) / s
    if kind == "eps":
        return (x - s * pred) / a, pred
    if kind == "v":  # x = a x0 + s eps, v = a eps - s x0  =>  solve the 2x2 system
        n = a * a + s * s
        return (a * x - s * pred) / n, (s * x + a * pred) / n
    if kind == "flow":  # u = eps - x0  =>  x = (a + s) x0 + s u
        x0 = (x - s * pred) / (a + s)
        return x0, x0 + pred
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def from_x0_eps(kind: str, x0: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """The prediction of ``kind`` that corresponds to (x0, eps)."""
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        return bcast(alpha, x0) * eps - bcast(sigma, x0) * x0
    if kind == "flow":
        return eps - x0
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def convert(pred: torch.Tensor, src: str, dst: str, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Convert a prediction between kinds at the same point (x, t)."""
    if src == dst:
        return pred
    return from_x0_eps(dst, *to_x0_eps(src, pred, x, alpha, sigma), alpha, sigma)


@dataclass
class NoiseProcess:
    """Base class: subclasses define alpha, sigma, the time range and the inverse of sigma_hat."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def t_min(self) -> float:
        raise NotImplementedError

    @property
    def t_max(self) -> float:
        raise NotImplementedError

    def t_from_sigma_hat(self, sigma_hat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        """The time input the network sees (override per family)."""
        return t

    # -- shared helpers --------------------------------------------------------------------
    def sigma_hat(self, t: torch.Tensor) -> torch.Tensor:
        """Normalised noise level sigma/alpha (infinite where alpha = 0)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.sigma(t) / self.alpha(t)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return bcast(self.alpha(t), x0) * x0 + bcast(self.sigma(t), x0) * eps

    def prior(self, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """A sample of x at t_max: alpha(t_max) * 0 + sigma(t_max) * eps is the Gaussian limit."""
        eps = torch.randn(shape, generator=generator, device=device)
        return eps * float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def to_x0_eps(self, kind, pred, x, t):
        return to_x0_eps(kind, pred, x, self.alpha(t).to(x.dtype), self.sigma(t).to(x.dtype))

    def convert(self, pred, src, dst, x, t):
        return convert(pred, src, dst, x, self.alpha(t).to(x.dtype), self.sigma(t).to(x.dtype))

    def config(self) -> dict:
        raise NotImplementedError


def log_sigma_hat_interp(log_sh_table: torch.Tensor, log_sh: torch.Tensor) -> torch.Tensor:
    """Invert a monotone increasing table of log sigma_hat over integer times by linear interpolation."""
    table = log_sh_table.to(torch.float64)
    log_sh = log_sh.to(torch.float64).clamp(table[0], table[-1])
    idx = torch.searchsorted(table, log_sh).clamp(1, len(table) - 1)
    lo, hi = table[idx - 1], table[idx]
    frac = (log_sh - lo) / (hi - lo).clamp_min(1e-12)
    return (idx - 1).to(torch.float64) + frac


LOG_2PI = math.log(2 * math.pi)
