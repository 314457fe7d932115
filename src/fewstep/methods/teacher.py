"""Teacher training: denoising score matching (Ho et al. 2020; Karras et al. 2022 for EDM).

Loss per parameterisation, each the one its paper trains with:
* ``edm``: lambda(sigma) ||D(x_t) - x0||^2 with lambda = 1/c_out^2 (EDM Eq. 8 and Table 1), i.e. a
  unit-weighted MSE on the raw network output;
* ``eps`` / ``v`` / ``x0`` / ``flow``: plain MSE in that prediction space.
Labels are dropped to the null label with probability ``label_dropout`` so one network serves CFG.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..nets.cond import drop_cond
from ..noise import TimeSampler
from ..noise.base import _bcast, from_x0_eps
from ..noise.precond import Denoiser
from .base import Method, SamplingSpec, cond_of
from .registry import register


@dataclass
class TeacherMethodConfig:
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    time_sampler: TimeSampler = field(default_factory=TimeSampler)
    label_dropout: float = 0.1  # p of training a sample unconditionally (CFG; Ho & Salimans 2022)

    def __post_init__(self):
        if isinstance(self.time_sampler, dict):
            self.time_sampler = TimeSampler(**self.time_sampler)
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def denoising_loss(den: Denoiser, x0, t, eps, cond) -> torch.Tensor:
    """Per-sample denoising loss at times t with noise eps."""
    proc = den.process
    xt = proc.add_noise(x0, eps, t)
    x0_hat, eps_hat = den.raw(xt, t, cond)
    a, s = proc.alpha(t).float(), proc.sigma(t).float()
    if den.param == "edm":
        sd = den.sigma_data
        weight = _bcast((a * a * sd * sd + s * s) / (s * sd) ** 2, x0)
        err = weight * (x0_hat.float() - x0) ** 2
    else:
        pred = from_x0_eps(den.param, x0_hat.float(), eps_hat.float(), a, s)
        err = (pred - from_x0_eps(den.param, x0, eps, a, s)) ** 2
    return err.flatten(1).mean(1)


@register("teacher")
class DenoisingTeacher(Method):
    def __init__(self, denoiser: Denoiser, cfg: TeacherMethodConfig | None = None):
        self.den, self.cfg = denoiser, cfg or TeacherMethodConfig()
        self.opt = torch.optim.AdamW(self.den.net.parameters(), lr=self.cfg.lr, betas=tuple(self.cfg.betas),
                                     weight_decay=self.cfg.weight_decay)

    def networks(self):
        return {"net": self.den.net}

    def optimizers(self):
        return {"net": self.opt}

    def ema_network(self):
        return "net"

    def generator(self, net=None):
        return self.den if net is None else self.den.like(net)

    def step(self, batch, it, ctx):
        x0 = batch["x"]
        cond = drop_cond(cond_of(batch), self.cfg.label_dropout, ctx.rng)
        t = self.cfg.time_sampler.sample(self.den.process, x0.shape[0], ctx.rng)
        eps = ctx.randn(x0.shape)
        with ctx.autocast():
            loss = denoising_loss(self.den, x0, t, eps, cond)
        ctx.update(loss, "net")
        return {"loss": loss.mean()}

    def default_sampling(self):
        return SamplingSpec("heun", 18, "karras")

    def config(self):
        return {"method": self.name, **asdict(self.cfg)}
