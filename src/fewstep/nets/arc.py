"""ArcFlow's policy network: an architecture whose output is widened to a mixture of K velocity
components (Yang et al. 2026, "ArcFlow"; the policy of Hansheng Chen's pi-Flow code, ``ArcFlowPolicy``).

For each output pixel the network predicts K raw outputs F_1..F_K (each one the wrapped architecture's
usual output, so the denoiser's preconditioning turns each into a velocity), K mixture logits and K - 1
log-momenta (component 1 has none), shared across channels. Called as a plain network it returns the
mixture's mean raw output sum_k w_k F_k, which is the policy's velocity at the step's start (velocity is
affine in F and the weights sum to 1), so a ``Denoiser`` around it works with every sampler;
``return_policy=True`` returns the parts for the closed-form sampler (samplers/arc.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn


def policy_width(channels: int, components: int) -> int:
    """Output channels of a K-component policy over ``channels``: K means, K logits, K - 1 log-momenta."""
    return components * channels + components + (components - 1)


class ArcNet(nn.Module):
    def __init__(self, base: nn.Module, channels: int, components: int):
        super().__init__()
        if components < 1:
            raise ValueError(f"an ArcFlow policy needs >= 1 component, got {components}")
        self.base, self.channels, self.components = base, channels, components

    def split(self, out: torch.Tensor):
        """(F (B, K, C, ...), logits (B, K, 1, ...), log-momenta (B, K - 1, 1, ...)) from the wide output."""
        K, C = self.components, self.channels
        F = out[:, : K * C].unflatten(1, (K, C))
        logits = out[:, K * C: K * C + K].unsqueeze(2)
        log_momenta = out[:, K * C + K:].unsqueeze(2)
        return F, logits, log_momenta

    def forward(self, x, c_noise, cond=None, return_policy: bool = False):
        F, logits, log_momenta = self.split(self.base(x, c_noise, cond))
        if return_policy:
            return F, logits, log_momenta
        return (torch.softmax(logits.float(), dim=1) * F.float()).sum(1).to(F.dtype)

    @staticmethod
    def make_policy(means, logits, log_momenta, tau_src) -> "ArcPolicy":
        """The policy from its parts (``Denoiser.policy`` turns each component's output into a velocity)."""
        return ArcPolicy(means, logits, log_momenta, tau_src)

    def config(self) -> dict:
        return {"arch": "arc", "base": self.base.config(), "channels": self.channels, "components": self.components}

    @classmethod
    def from_config(cls, cfg: dict, build) -> "ArcNet":
        return cls(build(dict(cfg["base"])), int(cfg["channels"]), int(cfg["components"]))

    @classmethod
    def from_network(cls, net: nn.Module, components: int, momenta: tuple[float, float] = (-1.0, 1.0),
                     jitter: float = 1e-3, generator: torch.Generator | None = None) -> "ArcNet":
        """A policy network initialised from a trained network: every weight copied, the output layer's
        rows repeated for each component (jittered by ``jitter`` times their scale so the components can
        part), logits zero (equal weights) and log-momenta spread over ``momenta`` by their bias. At the
        step's start its velocity is the network's own."""
        cfg = net.config()
        key = "out_channels" if cfg.get("arch") == "unet" else "out_dim" if cfg.get("arch") == "mlp" else None
        if key is None:
            raise ValueError(f"an ArcFlow policy can widen fewstep's unet or mlp, not {cfg.get('arch')!r}")
        C = cfg.get("in_channels", 0) if key == "out_channels" else cfg.get("dim", 0)
        base = type(net)(replace(net.cfg, **{key: policy_width(C, components)}))  # the same class, wider output
        own, new = net.state_dict(), base.state_dict()
        for k, w in new.items():
            if own[k].shape == w.shape:
                w.copy_(own[k])
                continue
            rows = own[k]  # the output layer: (C, ...) rows -> K means, K logits, K - 1 log-momenta
            scale = float(rows.float().abs().mean()) + 1e-8
            noise = torch.randn((components - 1, *rows.shape), generator=generator) * jitter * scale
            means = torch.cat([rows.unsqueeze(0), rows.unsqueeze(0) + noise.to(rows)]).flatten(0, 1)
            rest = torch.zeros((2 * components - 1, *rows.shape[1:]), dtype=rows.dtype)
            if rows.ndim == 1 and components > 1:  # biases: log-momenta spread so the components differ in time
                rest[components:] = torch.linspace(*momenta, components - 1)
            w.copy_(torch.cat([means, rest]))
        return cls(base, C, components)


def phi(y: torch.Tensor) -> torch.Tensor:
    """(e^y - 1) / y, continued by 1 + y / 2 near 0."""
    small = y.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(y), y)
    return torch.where(small, 1 + y / 2, torch.expm1(safe) / safe)


@dataclass
class ArcPolicy:
    means: torch.Tensor  # (B, K, C, ...) velocities u_k in flow time
    logits: torch.Tensor  # (B, K, 1, ...) mixture logits
    log_momenta: torch.Tensor  # (B, K - 1, 1, ...) momenta g_2..g_K (g_1 = 0)
    tau_src: torch.Tensor  # (B,) flow time the policy was predicted at

    def _parts(self, tau):
        w = torch.softmax(self.logits.float(), dim=1)
        g = torch.cat([torch.zeros_like(self.logits[:, :1]), self.log_momenta.to(self.logits.dtype)], 1).float()
        past = _per_sample(self.tau_src - tau, self.means)  # (B, 1, 1, ...)
        return w, g, past

    def velocity(self, tau: torch.Tensor) -> torch.Tensor:
        """v(tau) for per-sample flow times tau <= tau_src."""
        w, g, past = self._parts(tau)
        return (w * self.means.float() * torch.exp(g * past)).sum(1)

    def displacement(self, tau_a: torch.Tensor, tau_b: torch.Tensor) -> torch.Tensor:
        """x(tau_a) - x(tau_b), the velocity's integral from tau_b up to tau_a, in closed form."""
        w, g, past = self._parts(tau_a)
        step = _per_sample(tau_a - tau_b, self.means)
        return (w * self.means.float() * torch.exp(g * past) * step * phi(g * step)).sum(1)

    def mean_velocity(self, tau_a, tau_b, min_step: float = 1e-4) -> torch.Tensor:
        """The average velocity over [tau_b, tau_a]; the velocity at tau_a where the interval is shorter
        than ``min_step`` (where the division would lose precision)."""
        short = ((tau_a - tau_b) < min_step).view(-1, *([1] * (self.means.ndim - 2)))
        avg = self.displacement(tau_a, tau_b) / _per_sample((tau_a - tau_b).clamp_min(min_step), self.means[:, 0])
        return torch.where(short, self.velocity(tau_a), avg)


def _per_sample(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped to broadcast against x (B, ...)."""
    return c.to(x.dtype).reshape(c.shape[0], *([1] * (x.ndim - 1)))
