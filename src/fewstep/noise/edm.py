"""EDM noise process (Karras et al. 2022): x = x0 + sigma * eps, native time t = sigma."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NoiseProcess


@dataclass
class EDM(NoiseProcess):
    sigma_min: float = 0.002  # EDM Table 1
    sigma_max: float = 80.0
    sigma_data: float = 0.5  # data std assumed by the preconditioning (EDM Sec. 5)

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def sigma(self, t):
        return torch.as_tensor(t)

    @property
    def t_min(self):
        return self.sigma_min

    @property
    def t_max(self):
        return self.sigma_max

    def t_from_sigma_hat(self, sigma_hat):
        return torch.as_tensor(sigma_hat)

    def c_noise(self, t):
        return torch.log(torch.as_tensor(t)) / 4  # EDM Table 1, c_noise = ln(sigma)/4

    def config(self):
        return {"family": "edm", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "sigma_data": self.sigma_data}
