"""Rectified-flow reflow and one-step distillation (Liu et al. 2022; InstaFlow, Liu et al. 2023).

Stage 1 (``prepare``): couplings (noise z, label c, image x1) from the teacher's ODE started at z,
cached on disk (data/pairs.py).
Stage 2, ``reflow``: on the straight line between a coupling's ends, in rectified-flow time
tau ~ U[0, tau_max] (tau = 1 noise; InstaFlow runs time the other way),
    x_tau = (1 - tau) x1 + tau z,    L = || v_theta(x_tau, tau) - (z - x1) ||^2,
initialised from the teacher: the 2-rectified flow, whose paths are straighter, so few-step Euler
improves. The teacher may be any Gaussian-path model: the flow point x_tau is the teacher's own
process at sigma_hat = tau / (1 - tau) after rescaling by alpha / (1 - tau), and the velocity follows
from the denoiser's (x0, eps) as eps - x0, so nothing is hand-converted inside the loss. With x0-based
preconditioning that loss is || x0_hat - x1 ||^2 / tau^2 (the velocity error is the x0 error over tau).
Stage 3, ``instaflow``: from the reflowed model, a one-step student x1_hat = G(z at the top level)
regressed with L2 onto the reflowed model's own ODE output (LPIPS in the paper).

Euler in tau is DDIM on the ``flow`` grid (samplers/grids.py), which is how both are sampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...noise.base import _bcast
from ...noise.precond import Denoiser
from ...samplers.ode import level_coeffs
from ..base import SamplingSpec
from ..registry import register
from ...data.pairs import one_step_regression
from .common import StudentMethod, frozen_copy, student_from


@dataclass
class ReflowConfig:
    nfe: int = 1  # Euler steps the model is evaluated with (flow grid)
    pairs: int = 4000  # teacher couplings (z, x1) generated once and cached
    pair_sampler: str = "dpmpp2m"  # teacher ODE solver for the couplings
    pair_steps: int = 16
    pair_grid: str = "karras"
    pair_cfg: float = 1.0  # CFG scale of the teacher when making couplings
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_nfes: tuple = (1, 2, 4)  # Euler step counts the model is benchmarked at

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.nfe < 1 or self.pairs < 1 or self.pair_steps < 1:
            raise ValueError("nfe, pairs and pair_steps must be >= 1")
        if self.lr <= 0 or self.pair_cfg < 0:
            raise ValueError("lr must be > 0 and pair_cfg >= 0")


class CouplingMethod(StudentMethod):
    """A student initialised from the teacher and trained on cached teacher couplings."""

    Config = ReflowConfig

    def __init__(self, teacher: Denoiser, cfg=None, shape=None, num_classes: int = 0):
        self.cfg = cfg or self.Config()
        self.teacher = frozen_copy(teacher)
        self.process = teacher.process
        self.student = student_from(teacher)
        self.shape, self.num_classes = tuple(shape), num_classes
        self.opt = torch.optim.Adam(self.student.net.parameters(), lr=self.cfg.lr, betas=self.cfg.betas,
                                    weight_decay=self.cfg.weight_decay)
        self.sh_top = min(float(self.process.sigma_hat(torch.tensor(self.process.t_max))), 1e4)
        self.tau_max = self.sh_top / (1 + self.sh_top)
        self.pairs = None

    def default_sampling(self):
        return SamplingSpec("euler", self.cfg.nfe, "flow")

    def sampling_options(self):
        return [self.default_sampling()] + [SamplingSpec("euler", k, "flow") for k in self.cfg.eval_nfes
                                            if k != self.cfg.nfe]

    def pair_spec(self) -> SamplingSpec:
        c = self.cfg
        return SamplingSpec(c.pair_sampler, c.pair_steps, c.pair_grid, c.pair_cfg)

    def prepare(self, cache_dir) -> None:
        from ...data.pairs import teacher_pairs

        self.pairs = teacher_pairs(self.teacher, self.cfg.pairs, self.pair_spec(), self.shape, self.num_classes,
                                   seed=24680, cache_dir=cache_dir)

    def coupling_batch(self, n, rng):
        if self.pairs is None:
            raise RuntimeError(f"{self.name}: call prepare() first (it makes the teacher couplings)")
        from ...data.pairs import pair_batch

        return pair_batch(self.pairs, n, rng, next(self.student.net.parameters()).device, bool(self.num_classes))


def flow_point(process, x1, z, tau):
    """The teacher process's x at rectified-flow time tau (a (B,) tensor in (0, 1)):
    x = alpha (x1 + sh z) with sh = tau / (1 - tau), i.e. (1 - tau) x1 + tau z rescaled by alpha/(1 - tau)."""
    sh = (tau / (1 - tau)).double()
    t, a, _ = level_coeffs(process, sh)
    return _bcast(a, x1) * (x1 + _bcast(sh.float(), x1) * z), t


@register("reflow")
class Reflow(CouplingMethod):
    def step(self, batch, it, ctx):
        n = batch["x"].shape[0]
        z, x1, cond = self.coupling_batch(n, ctx.rng)
        tau = self.tau_max * torch.rand(n, generator=ctx.rng).clamp_min(1e-4)
        x, t = flow_point(self.process, x1, z, tau)
        with ctx.autocast():
            x0_hat, eps_hat = self.student.raw(x, t, cond)
            v_hat = eps_hat.float() - x0_hat.float()  # the flow velocity d x_tau / d tau = eps - x0
            loss = ((v_hat - (z - x1)) ** 2).flatten(1).mean(1)
        ctx.update(loss, "student", clip=self.cfg.grad_clip)
        return {"loss": loss.mean()}


@dataclass
class InstaFlowConfig(ReflowConfig):
    pair_sampler: str = "euler"  # the reflowed model's own ODE (its straight paths need few steps)
    pair_steps: int = 16
    pair_grid: str = "flow"
    eval_nfes: tuple = (1,)

    def __post_init__(self):
        super().__post_init__()
        if self.nfe != 1:
            raise ValueError("instaflow distils a one-step model; use nfe 1")


@register("instaflow")
class InstaFlow(CouplingMethod):
    Config = InstaFlowConfig

    def step(self, batch, it, ctx):
        n = batch["x"].shape[0]
        z, x1, cond = self.coupling_batch(n, ctx.rng)
        with ctx.autocast():
            loss = one_step_regression(self.student, self.sh_top, z, x1, cond)
        ctx.update(loss, "student", clip=self.cfg.grad_clip)
        return {"loss": loss.mean()}
