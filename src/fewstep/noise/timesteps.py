"""Training-time samplers of the native time t (see base.py for the convention)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NoiseProcess

TIME_SAMPLERS = ("uniform", "lognormal", "logit_normal")


@dataclass
class TimeSampler:
    kind: str = "lognormal"  # uniform | lognormal (EDM) | logit_normal (SD3)
    mean: float = -1.2  # lognormal: mean of ln sigma_hat (EDM P_mean); logit_normal: mean of the logit
    std: float = 1.2  # lognormal: EDM P_std; logit_normal: std of the logit
    shift: float = 1.0  # logit_normal/uniform: SD3 shift t' = s t / (1 + (s - 1) t) on the unit interval

    def __post_init__(self):
        if self.kind not in TIME_SAMPLERS:
            raise ValueError(f"time sampler kind must be one of {TIME_SAMPLERS}, got {self.kind!r}")
        if self.std <= 0 or self.shift <= 0:
            raise ValueError("time sampler std and shift must be positive")

    def sample(self, process: NoiseProcess, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.kind == "lognormal":  # EDM Sec. 5: ln sigma ~ N(P_mean, P_std^2)
            sh = torch.exp(self.mean + self.std * torch.randn(n, generator=generator, dtype=torch.float64))
            t = process.t_from_sigma_hat(sh)
        else:
            if self.kind == "uniform":
                u = torch.rand(n, generator=generator, dtype=torch.float64)
            else:  # Esser et al. 2024 (SD3), Eq. 19
                u = torch.sigmoid(self.mean + self.std * torch.randn(n, generator=generator, dtype=torch.float64))
            u = self.shift * u / (1 + (self.shift - 1) * u)
            t = process.t_min + u * (process.t_max - process.t_min)
        return t.clamp(process.t_min, process.t_max).float()
