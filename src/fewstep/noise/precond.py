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

Consistency students add a boundary condition f(x, t_min) = x (``boundary``):
* ``cm``  - Song et al. 2023, App. C (openai/consistency_models): in y = x / alpha and sh = sigma/alpha,
            ``c_skip = sd^2 / ((sh - sh_min)^2 + sd^2)``, ``c_out = (sh - sh_min) sd / sqrt(sh^2 + sd^2)``
            on the EDM-preconditioned network output (needs ``param='edm'``).
* ``lcm`` - Luo et al. 2023 (diffusers LCMScheduler): ``f = c_skip y + c_out x0_hat`` around any
            parameterisation, ``c_skip = sd^2 / ((10 tau)^2 + sd^2)``, ``c_out = 10 tau / sqrt((10 tau)^2 + sd^2)``
            with tau the time on a 0..1000 scale (SD's timestep index); as in diffusers, c_out lacks CM's
            sd factor (diffusers #8547).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import NoiseProcess, bcast, from_x0_eps, to_x0_eps

PARAMS = ("edm", "eps", "v", "x0", "flow")
BOUNDARIES = (None, "cm", "lcm")


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, process: NoiseProcess, param: str = "edm", sigma_data: float = 0.5,
                 boundary: str | None = None):
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"denoiser parameterisation must be one of {PARAMS}, got {param!r}")
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if boundary == "cm" and param != "edm":
            raise ValueError("the 'cm' boundary parameterisation needs param='edm'")
        self.net, self.process, self.param, self.sigma_data = net, process, param, sigma_data
        self.boundary = boundary

    @property
    def embeds_guidance(self) -> bool:
        """True for students that take the CFG scale as an input (cond.extra['w'])."""
        net = getattr(self.net, "module", self.net)  # through a DistributedDataParallel wrapper
        return getattr(getattr(net, "cfg", None), "w_dim", 0) > 0

    def like(self, net: nn.Module) -> "Denoiser":
        """The same denoiser around another network (e.g. its EMA)."""
        return Denoiser(net, self.process, self.param, self.sigma_data, self.boundary)

    def _coeffs(self, t, x):
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        a = self.process.alpha(t).to(device=x.device, dtype=torch.float32)
        s = self.process.sigma(t).to(device=x.device, dtype=torch.float32)
        return t, a, s

    def _net_inputs(self, x, t):
        """(t, alpha, sigma, net input, c_noise): EDM scales the input by c_in; other kinds feed x as is."""
        t, a, s = self._coeffs(t, x)
        c_noise = self.process.c_noise(t).to(device=x.device, dtype=torch.float32)
        if self.param == "edm":
            sd = self.sigma_data
            x_in = bcast(1 / torch.sqrt(a * a * sd * sd + s * s), x) * x
        else:
            x_in = x
        return t, a, s, x_in, c_noise

    def raw(self, x, t, cond=None):
        """(x0, eps) predicted at (x, t)."""
        t, a, s, x_in, c_noise = self._net_inputs(x, t)
        return self._x0_eps(self.net(x_in, c_noise, cond).to(x.dtype), x, t, a, s)

    def policy(self, x, t, cond=None):
        """The velocity policy a policy network (ArcFlow's ``ArcNet``, nets/arc.py) predicts at (x, t):
        each component's raw output means (x0_k, eps_k) under this parameterisation, u_k = eps_k - x0_k in
        rectified-flow time, tau = sigma / (alpha + sigma)."""
        if getattr(self.net, "components", None) is None:
            raise ValueError("this model has no velocity policy: the arc sampler needs an ArcFlow policy model")
        t, a, s, x_in, c_noise = self._net_inputs(x, t)
        F, logits, log_momenta = self.net(x_in, c_noise, cond, return_policy=True)
        B, K = F.shape[:2]
        rep = lambda v: v.repeat_interleave(K, 0)  # noqa: E731
        x0, eps = self._x0_eps(F.flatten(0, 1).to(x.dtype), rep(x), rep(t), rep(a), rep(s))
        return self.net.make_policy((eps.float() - x0.float()).unflatten(0, (B, K)), logits, log_momenta,
                                    (s / (a + s)).float())

    def features(self, x, t, cond=None):
        """((x0, eps), {stage: features}) at (x, t), for architectures that return their stages' outputs
        (``return_features``; architecture distillation's feature KD, methods/compress)."""
        t, a, s, x_in, c_noise = self._net_inputs(x, t)
        out, feats = self.net(x_in, c_noise, cond, return_features=True)
        return self._x0_eps(out.to(x.dtype), x, t, a, s), feats

    def _x0_eps(self, out, x, t, a, s):
        """(x0, eps) from the network's output under this parameterisation and boundary condition."""
        if self.boundary == "cm":
            return self._with_eps(self._cm_x0(out, x, t, a, s), x, a, s)
        if self.param == "edm":
            sd = self.sigma_data
            norm = torch.sqrt(a * a * sd * sd + s * s)
            c_skip, c_out = a * sd * sd / norm ** 2, s * sd / norm
            x0 = bcast(c_skip, x) * x + bcast(c_out, x) * out
            x0_eps = (x0, (x - bcast(a, x) * x0) / bcast(s, x))
        else:
            x0_eps = to_x0_eps(self.param, out, x, a, s)
        if self.boundary == "lcm":
            return self._with_eps(self._lcm_x0(x0_eps[0], x, t, a), x, a, s)
        return x0_eps

    @staticmethod
    def _with_eps(x0, x, a, s):
        return x0, (x - bcast(a, x) * x0) / bcast(s, x)

    def _cm_x0(self, out, x, t, a, s):
        sd = self.sigma_data
        sh = s / a
        sh_min = float(self.process.sigma_hat(torch.tensor(self.process.t_min)))
        c_skip = sd * sd / ((sh - sh_min) ** 2 + sd * sd)
        c_out = (sh - sh_min) * sd / torch.sqrt(sh * sh + sd * sd)
        return bcast(c_skip / a, x) * x + bcast(c_out, x) * out

    def _lcm_x0(self, x0_hat, x, t, a):
        p = self.process
        tau = 10.0 * 1000.0 * (t.float() - p.t_min) / (p.t_max - p.t_min)  # timestep_scaling 10
        sd = self.sigma_data
        c_skip = sd * sd / (tau * tau + sd * sd)
        c_out = tau / torch.sqrt(tau * tau + sd * sd)
        return bcast(c_skip / a, x) * x + bcast(c_out, x) * x0_hat

    def forward(self, x, t, cond=None):
        return self.raw(x, t, cond)[0]

    def output_scale(self, t) -> torch.Tensor:
        """d x0 / d(network output) at native times t (x0 is affine in the output under every
        parameterisation and boundary): c_out for EDM, -sigma/alpha for eps. A raw-output error times
        this is the error in the denoised sample."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        zero, one = torch.zeros(len(t), 1), torch.ones(len(t), 1)
        _, a, s = self._coeffs(t, zero)
        return (self._x0_eps(one, zero, t, a, s)[0] - self._x0_eps(zero, zero, t, a, s)[0]).squeeze(1)

    def bottleneck(self, x, t, cond=None):
        """The architecture's mid-block features at (x, t) (DMD2's GAN head reads these)."""
        _, _, _, x_in, c_noise = self._net_inputs(x, t)
        out = self.net(x_in, c_noise, cond, return_bottleneck="only")  # architectures that can stop early do
        return out[1] if isinstance(out, tuple) else out

    def predict(self, kind: str, x, t, cond=None):
        x0, eps = self.raw(x, t, cond)
        _, a, s = self._coeffs(t, x)
        return from_x0_eps(kind, x0, eps, a, s)
