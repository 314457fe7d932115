"""Rectified flow (Liu et al. 2022; SD3/Flux convention): x_t = (1 - t) x0 + t eps, t = 1 is noise.

The velocity of the straight path is dx/dt = eps - x0 (the ``flow`` prediction kind).
InstaFlow's code runs time the other way (t = 0 noise); convert at its boundary, not here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NoiseProcess


@dataclass
class RectifiedFlow(NoiseProcess):
    shift: float = 1.0  # SD3 timestep shift applied by grids/timestep samplers (1 = none)

    def alpha(self, t):
        return 1.0 - torch.as_tensor(t)

    def sigma(self, t):
        return torch.as_tensor(t)

    @property
    def t_min(self):
        return 0.0

    @property
    def t_max(self):
        return 1.0

    def t_from_sigma_hat(self, sigma_hat):
        sh = torch.as_tensor(sigma_hat, dtype=torch.float64)
        return torch.where(torch.isinf(sh), torch.ones_like(sh), sh / (1 + sh))

    def c_noise(self, t):
        return 1000.0 * torch.as_tensor(t)

    def config(self):
        return {"family": "flow", "shift": self.shift}
