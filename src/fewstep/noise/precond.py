"""Denoiser: an architecture wrapped with its noise process, preconditioning and prediction kind.

``D(x, t, cond) -> x0`` is the one interface every sampler and method speaks. ``D.predict(kind, ...)``
returns eps / v / flow at the same point through the process's conversions.

Parameterisations (``param``):
* ``edm``  - EDM preconditioning (Karras et al. 2022, Table 1 / Eq. 7):
             ``x0 = c_skip x + c_out F(c_in x, c_noise)`` with, for x = alpha x0 + sigma eps and
             data std sd, ``c_in = 1/sqrt(a^2 sd^2 + s^2)``, ``c_skip = a sd^2/(a^2 sd^2 + s^2)``,
             ``c_out = s sd / sqrt(a^2 sd^2 + s^2)`` (the EDM formulas for a = 1, written for any path).
* ``eps`` / ``v`` / ``x0`` / ``flow`` - the raw network output is that prediction kind (VP teachers
             are eps or v; SD3/Flux are flow); the input is not rescaled.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import NoiseProcess, _bcast, to_x0_eps, from_x0_eps

PARAMS = ("edm", "eps", "v", "x0", "flow")


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, process: NoiseProcess, param: str = "edm", sigma_data: float = 0.5):
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"denoiser parameterisation must be one of {PARAMS}, got {param!r}")
        self.net, self.process, self.param, self.sigma_data = net, process, param, sigma_data

    def _coeffs(self, t, x):
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        a = self.process.alpha(t).to(device=x.device, dtype=torch.float32)
        s = self.process.sigma(t).to(device=x.device, dtype=torch.float32)
        return t, a, s

    def raw(self, x, t, cond=None):
        """(x0, eps) predicted at (x, t)."""
        t, a, s = self._coeffs(t, x)
        c_noise = self.process.c_noise(t).to(device=x.device, dtype=torch.float32)
        if self.param == "edm":
            sd = self.sigma_data
            norm = torch.sqrt(a * a * sd * sd + s * s)
            c_in, c_skip, c_out = 1 / norm, a * sd * sd / norm ** 2, s * sd / norm
            F = self.net(_bcast(c_in, x) * x, c_noise, cond)
            x0 = _bcast(c_skip, x) * x + _bcast(c_out, x) * F.to(x.dtype)
            return x0, (x - _bcast(a, x) * x0) / _bcast(s, x)
        out = self.net(x, c_noise, cond).to(x.dtype)
        return to_x0_eps(self.param, out, x, a, s)

    def forward(self, x, t, cond=None):
        return self.raw(x, t, cond)[0]

    def bottleneck(self, x, t, cond=None):
        """The architecture's mid-block features at (x, t) (DMD2's GAN head reads these)."""
        t, a, s = self._coeffs(t, x)
        c_noise = self.process.c_noise(t).to(device=x.device, dtype=torch.float32)
        c_in = 1 / torch.sqrt(a * a * self.sigma_data ** 2 + s * s) if self.param == "edm" else torch.ones_like(a)
        return self.net(_bcast(c_in, x) * x, c_noise, cond, return_bottleneck=True)[1]

    def predict(self, kind: str, x, t, cond=None):
        x0, eps = self.raw(x, t, cond)
        _, a, s = self._coeffs(t, x)
        return from_x0_eps(kind, x0, eps, a, s)
