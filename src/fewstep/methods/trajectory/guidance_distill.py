"""Guidance distillation, stage 1 (Meng et al. 2023, Sec. 4.1; google-research ddpm_w_distillation).

A w-conditioned student (guidance-scale embedding added to the time embedding, output layer zero-
initialised so it starts as the teacher) learns the teacher's classifier-free-guided prediction in one
evaluation: w ~ U[w_range] per sample, x0* = x0_u + w (x0_c - x0_u) from the frozen teacher (our
standard scale; Meng's w is this minus one), loss truncated-SNR weighted as in progressive distillation.
It then samples with the teacher's own samplers at half the cost of CFG. Stage 2 is progressive
distillation of this student (progressive.py with ``guidance=(lo, hi)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...noise.guidance import cfg_raw, with_scale
from ...noise.precond import Denoiser
from ...samplers import make_grid
from ...samplers.generate import SamplingSpec
from ...samplers.ode import noised
from ..base import OptimConfig, StudentMethod, adam, cond_of, frozen_copy, trainable_copy, uniform_scale
from ..losses import snr_truncated_mse


@dataclass
class GuidanceDistillConfig:
    nfe: int = 8  # steps the student is evaluated with (its sampler below)
    sampler: str = "dpmpp2m"
    grid: str = "karras"
    w_range: tuple[float, float] = (1.0, 5.0)  # standard scales (Meng: w ~ U[0, 4])
    w_dim: int = 64
    eval_cfg: float = 2.0  # the scale the student is evaluated at
    num_levels: int = 1000  # training levels: uniform over this Karras grid's indices
    optim: OptimConfig = field(default_factory=lambda: adam(1e-4, grad_clip=1.0))  # Meng et al.: LR 1e-4
    eval_nfes: tuple[int, ...] = (4, 8, 16)  # step counts the model is benchmarked at

    def __post_init__(self):
        self.w_range = tuple(float(v) for v in self.w_range)
        if len(self.w_range) != 2 or not 0 <= self.w_range[0] <= self.w_range[1]:
            raise ValueError(f"w_range must be (lo, hi) with 0 <= lo <= hi, got {self.w_range}")
        if self.nfe < 1 or self.w_dim < 2 or self.num_levels < 2 or self.eval_cfg < 0:
            raise ValueError("nfe must be >= 1, w_dim >= 2, num_levels >= 2 and eval_cfg >= 0")
        if not self.eval_nfes or min(self.eval_nfes) < 1:
            raise ValueError(f"eval_nfes must be positive step counts, got {self.eval_nfes}")


class GuidanceDistill(StudentMethod):
    """Guidance distillation (stage 1): a w-conditioned student learns the teacher's CFG output in one call."""

    name = "guidance_distill"
    Config = GuidanceDistillConfig
    presets = {"mnist": DistillConfig(GuidanceDistillConfig(optim=adam(2e-4, grad_clip=1.0), w_range=(1.0, 2.0),
                                                            eval_cfg=1.25), TrainSettings(max_iters=500))}

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        if not num_classes:
            raise ValueError("guidance distillation needs a conditional teacher (classifier-free guidance)")
        self.teacher = frozen_copy(teacher)
        self.student = trainable_copy(teacher, w_dim=self.cfg.w_dim)
        self.levels = make_grid("karras", self.process, self.cfg.num_levels, final_zero=False)
        self.opt = self.cfg.optim.build(self.student.net.parameters())

    def default_sampling(self):
        c = self.cfg
        return SamplingSpec(c.sampler, c.nfe, c.grid, c.eval_cfg)

    def sampling_options(self):
        c = self.cfg
        return [self.default_sampling()] + [SamplingSpec(c.sampler, k, c.grid, c.eval_cfg) for k in c.eval_nfes
                                            if k != c.nfe]

    def step(self, batch, it, ctx):
        x, labels = batch["x"], cond_of(batch)
        n = x.shape[0]
        sh = self.levels[torch.randint(0, len(self.levels), (n,), generator=ctx.rng)]
        x_t, t, a, s = noised(self.process, x, ctx.randn(x.shape), sh)
        w = uniform_scale(n, *self.cfg.w_range, ctx.rng)
        with ctx.autocast():
            with torch.no_grad():
                x0_star, _ = cfg_raw(self.teacher, x_t, t, labels, w)
            x0_hat, _ = self.student.raw(x_t, t, with_scale(labels, w, n))
            loss = snr_truncated_mse(x0_hat, x0_star, a, s)
        self.update(ctx, loss)
        return {"loss": loss.mean()}
