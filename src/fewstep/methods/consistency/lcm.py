"""Latent consistency distillation, LCM (Luo et al. 2023), as diffusers
examples/consistency_distillation/train_lcm_distill_sd_wds.py does it.

LCM (Alg. 1): a w-conditioned student (w-embedding, so one model serves a range of CFG scales) on a
coarser solver grid with a skipping step: from level k+skip to k with one DDIM step of the teacher
guided at the sampled scale w ~ U[w_range]; LCM boundary scalings (precond.py ``lcm``); pseudo-Huber.
With a LoRA student (LCM-LoRA) there is no w-embedding: the guidance range is baked into the adapters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...config import DistillConfig, TrainSettings
from ...noise.base import bcast
from ...noise.guidance import cfg_raw, with_scale
from ...samplers.ode import ddim_step, level_coeffs
from ..base import OptimConfig, adam, uniform_scale
from .cd import CDConfig, ConsistencyBase


@dataclass
class LCMConfig(CDConfig):
    num_scales: int = 50  # DDIM solver grid (LCM: 50 of SD's 1000 timesteps, skip k = 20 = one interval)
    skip: int = 1  # grid intervals per solver step
    w_range: tuple[float, float] = (2.0, 4.0)  # standard CFG scales sampled per sample (LCM: w ~ U[5, 15] in w + 1 = scale form)
    w_dim: int = 64  # guidance-scale embedding width (LCM: 256)
    eval_cfg: float = 2.0  # scale the student is evaluated at
    loss: str = "huber"  # pseudo-Huber per element, as the LCM/diffusers code applies it
    huber_c: float = 0.001  # LCM
    optim: OptimConfig = field(default_factory=lambda: adam(1e-6, grad_clip=1.0))  # LCM full fine-tune (LoRA: 1e-4)

    def __post_init__(self):
        super().__post_init__()
        self.w_range = tuple(float(v) for v in self.w_range)
        if len(self.w_range) != 2 or not 0 <= self.w_range[0] <= self.w_range[1]:
            raise ValueError(f"w_range must be (lo, hi) with 0 <= lo <= hi, got {self.w_range}")
        if not 1 <= self.skip < self.num_scales:
            raise ValueError(f"skip must be in [1, num_scales), got {self.skip}")
        if self.lora.rank:
            self.w_dim = 0  # LCM-LoRA: no w-embedding, the guidance range is baked into the adapters


class LatentConsistency(ConsistencyBase):
    """LCM: skipping-step DDIM of the guided teacher, w-conditioned student, LCM boundary, pseudo-Huber."""

    name = "lcm"
    Config = LCMConfig
    boundary = "lcm"
    presets = {"mnist": DistillConfig(LCMConfig(optim=adam(1e-4, grad_clip=1.0), w_range=(1.0, 2.0), eval_cfg=1.25),
                                      TrainSettings(max_iters=600)),
               # the mini SD (pipelines/mini_sd.py) with an LCM-LoRA student: guidance around the teacher's
               # CFG 2 baked into the adapters; LoRA's 1e-4 raised for a CPU-length run; sampled at LCMScheduler's
               # timesteps (999/499 at 2 steps): the Karras levels down to 0.5 read FD 21.2 there against 13.8
               "mnist-captions": DistillConfig(LCMConfig(optim=adam(1e-3, grad_clip=1.0), w_range=(1.5, 2.5), eval_cfg=2.0,
                                                         student_grid="trailing"),
                                               TrainSettings(max_iters=600))}

    def w_dim(self):
        return self.cfg.w_dim

    def eval_cfg(self):
        return self.cfg.eval_cfg if self.cfg.w_dim else 1.0  # baked-in guidance: sample without CFG

    def solver_step(self, x_next, sh_next, sh_n, labels, rng):
        n = x_next.shape[0]
        w = uniform_scale(n, *self.cfg.w_range, rng)
        t_next, _, _ = level_coeffs(self.process, sh_next)
        _, a_n, s_n = level_coeffs(self.process, sh_n)
        if labels is None:
            x0, eps = self.teacher.raw(x_next, t_next, labels)
        else:
            x0, eps = cfg_raw(self.teacher, x_next, t_next, labels, w)  # LCM: x0* = x0_u + w (x0_c - x0_u)
        return ddim_step(x0, eps, bcast(a_n, x0), bcast(s_n, x0)), with_scale(labels, w, n)
