"""Rectified-flow reflow (Liu et al. 2022); ``CouplingMethod`` is shared with InstaFlow (instaflow.py).

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

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...noise.base import bcast
from ...noise.precond import Denoiser
from ...samplers.generate import SamplingSpec
from ...samplers.ode import level_coeffs
from ..base import OptimConfig, StudentMethod, adam, frozen_copy, trainable_copy


@dataclass
class ReflowConfig:
    nfe: int = 1  # Euler steps the model is evaluated with (flow grid)
    pairs: int = 4000  # teacher couplings (z, x1) generated once and cached
    pair_sampler: str = "dpmpp2m"  # teacher ODE solver for the couplings
    pair_steps: int = 16
    pair_grid: str = "karras"
    pair_cfg: float = 1.0  # CFG scale of the teacher when making couplings
    optim: OptimConfig = field(default_factory=lambda: adam(1e-4, grad_clip=1.0))
    eval_nfes: tuple[int, ...] = (1, 2, 4)  # Euler step counts the model is benchmarked at

    def __post_init__(self):
        if self.nfe < 1 or self.pairs < 1 or self.pair_steps < 1:
            raise ValueError("nfe, pairs and pair_steps must be >= 1")
        if self.pair_cfg < 0 or not self.eval_nfes or min(self.eval_nfes) < 1:
            raise ValueError("pair_cfg must be >= 0 and eval_nfes positive step counts")


class CouplingMethod(StudentMethod):
    """A student initialised from the teacher and trained on cached teacher couplings."""

    Config = ReflowConfig

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.teacher = frozen_copy(teacher)
        self.student = trainable_copy(teacher)
        self.opt = self.cfg.optim.build(self.student.net.parameters())
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
    return bcast(a, x1) * (x1 + bcast(sh.float(), x1) * z), t


class Reflow(CouplingMethod):
    """Reflow: the student learns straight lines between the teacher's noise-sample couplings."""

    name = "reflow"
    presets = {"mnist": DistillConfig(ReflowConfig(optim=adam(1e-4, grad_clip=1.0), pairs=4000),
                                      TrainSettings(max_iters=1000))}

    def step(self, batch, it, ctx):
        n = batch["x"].shape[0]
        z, x1, cond = self.coupling_batch(n, ctx.rng)
        tau = self.tau_max * torch.rand(n, generator=ctx.rng).clamp_min(1e-4)
        x, t = flow_point(self.process, x1, z, tau)
        with ctx.autocast():
            x0_hat, eps_hat = self.student.raw(x, t, cond)
            v_hat = eps_hat.float() - x0_hat.float()  # the flow velocity d x_tau / d tau = eps - x0
            loss = ((v_hat - (z - x1)) ** 2).flatten(1).mean(1)
        self.update(ctx, loss)
        return {"loss": loss.mean()}
