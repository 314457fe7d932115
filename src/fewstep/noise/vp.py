"""Variance-preserving processes: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.

``VPDiscrete`` is DDPM's T-step chain (Ho et al. 2020) as Stable Diffusion uses it: native time is
the timestep index in [0, T-1]; fractional times interpolate log sigma_hat linearly between indices.
``VPContinuous`` is the VP-SDE of Song et al. 2021 (Eq. 33) with t in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import NoiseProcess, log_sigma_hat_interp

SCHEDULES = ("linear", "scaled_linear", "cosine")


def alphas_cumprod(schedule: str, T: int, beta_start: float, beta_end: float) -> torch.Tensor:
    if schedule == "linear":  # DDPM
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    elif schedule == "scaled_linear":  # Stable Diffusion: linear in sqrt(beta)
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2
    elif schedule == "cosine":  # Nichol & Dhariwal 2021, Eq. 17, betas clipped at 0.999
        s = 0.008
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)],
                             dtype=torch.float64)
    else:
        raise ValueError(f"unknown VP schedule {schedule!r}; expected one of {SCHEDULES}")
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass
class VPDiscrete(NoiseProcess):
    schedule: str = "scaled_linear"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    _log_sh: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        abar = alphas_cumprod(self.schedule, self.num_train_timesteps, self.beta_start, self.beta_end)
        self._log_sh = 0.5 * (torch.log1p(-abar) - torch.log(abar))  # log(sigma/alpha)

    def _sh(self, t):
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_train_timesteps - 1)
        lo = t.floor().long().clamp(max=self.num_train_timesteps - 2)
        frac = t - lo
        table = self._log_sh.to(t.device)
        return torch.exp(table[lo] * (1 - frac) + table[lo + 1] * frac)

    def alpha(self, t):
        out = 1.0 / torch.sqrt(1.0 + self._sh(t) ** 2)
        return out.to(t.dtype) if torch.is_tensor(t) and t.is_floating_point() else out

    def sigma(self, t):
        sh = self._sh(t)
        out = sh / torch.sqrt(1.0 + sh ** 2)
        return out.to(t.dtype) if torch.is_tensor(t) and t.is_floating_point() else out

    @property
    def t_min(self):
        return 0.0

    @property
    def t_max(self):
        return float(self.num_train_timesteps - 1)

    def t_from_sigma_hat(self, sigma_hat):
        return log_sigma_hat_interp(self._log_sh, torch.log(torch.as_tensor(sigma_hat, dtype=torch.float64)))

    def config(self):
        return {"family": "vp", "schedule": self.schedule, "num_train_timesteps": self.num_train_timesteps,
                "beta_start": self.beta_start, "beta_end": self.beta_end}


@dataclass
class VPContinuous(NoiseProcess):
    beta_min: float = 0.1  # Song et al. 2021, VP-SDE defaults
    beta_max: float = 20.0
    eps_t: float = 1e-3  # smallest time used (the SDE is singular at t = 0)

    def _log_alpha(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        out = torch.exp(self._log_alpha(t))
        return out.to(t.dtype) if torch.is_tensor(t) and t.is_floating_point() else out

    def sigma(self, t):
        out = torch.sqrt(-torch.expm1(2 * self._log_alpha(t)))
        return out.to(t.dtype) if torch.is_tensor(t) and t.is_floating_point() else out

    @property
    def t_min(self):
        return self.eps_t

    @property
    def t_max(self):
        return 1.0

    def t_from_sigma_hat(self, sigma_hat):
        # log alpha = -0.5 log(1 + sh^2) = -(bmax-bmin)/4 t^2 - bmin/2 t ; solve the quadratic for t >= 0
        la = -0.5 * torch.log1p(torch.as_tensor(sigma_hat, dtype=torch.float64) ** 2)
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return (-b + torch.sqrt(b * b - 4 * a * la)) / (2 * a)

    def c_noise(self, t):
        return 1000.0 * torch.as_tensor(t)

    def config(self):
        return {"family": "vp_continuous", "beta_min": self.beta_min, "beta_max": self.beta_max,
                "eps_t": self.eps_t}
