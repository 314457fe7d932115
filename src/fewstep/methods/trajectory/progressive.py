"""Progressive distillation (Salimans & Ho 2022, Alg. 2; google-research diffusion_distillation/dpm.py).

One run is one halving stage: a student of N DDIM steps learns to do in one step what its teacher
does in two, on the nested grid (samplers/grids.py ``nested``: the student's levels are every other
level of the teacher's 2N-step grid). The next stage's teacher is this run's output model
(``fewstep distill --teacher RUN_DIR --nfe N/2``), so every stage resumes on its own.

Per iteration, for each sample: i ~ U{0..N-1}; z_t = alpha_t x + sigma_t eps at level t = grid_N[i];
the teacher takes DDIM steps t -> t' = grid_2N[2i+1] -> s = grid_N[i+1]; the x-target that makes one
student DDIM step land exactly on the teacher's z_s (Alg. 2, line 11):
    x~ = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)
and the loss is the truncated-SNR weighted error max(SNR_t, 1) ||x_hat - x~||^2 (Sec. 4). Adam, clip 1,
no EMA, LR annealed linearly to 0 over the stage (cifar_distill.py).

With ``guidance`` set (Meng et al. 2023, stage 2) teacher and student are w-conditioned students
(guidance_distill.py) and get the same per-sample scale w ~ U[guidance].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...noise.base import bcast
from ...noise.guidance import guided, with_scale
from ...noise.precond import Denoiser
from ...samplers import make_grid
from ...samplers.generate import SamplingSpec
from ...samplers.ode import ddim_to, level_coeffs, noised
from ..base import OptimConfig, StudentMethod, adam, cond_of, frozen_copy, trainable_copy, uniform_scale
from ..losses import snr_truncated_mse


@dataclass
class ProgressiveConfig:
    nfe: int = 1  # student steps N of this stage; the teacher takes 2N on the same nested grid
    optim: OptimConfig = field(default_factory=lambda: adam(5e-5, grad_clip=1.0))  # CIFAR-10 (cifar_distill.py)
    anneal: bool = True  # LR linearly to 0 over the stage (Salimans & Ho)
    teacher_cfg: float = 1.0  # CFG scale on a teacher that does not embed guidance (1 = none)
    guidance: tuple[float, float] | None = None  # (lo, hi) scale range for a w-conditioned teacher and student (Meng stage 2)
    eval_cfg: float = 1.0  # scale a w-conditioned student is evaluated at

    def __post_init__(self):
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if self.teacher_cfg < 0 or self.eval_cfg < 0:
            raise ValueError("teacher_cfg and eval_cfg must be >= 0")
        if self.guidance is not None:
            self.guidance = tuple(float(v) for v in self.guidance)
            if len(self.guidance) != 2 or not 0 <= self.guidance[0] <= self.guidance[1]:
                raise ValueError(f"guidance must be (lo, hi) with 0 <= lo <= hi, got {self.guidance}")


def x_target(z_t, z_s, a_t, s_t, a_s, s_s):
    """The x that one DDIM step from (z_t, t) to s maps to z_s (Salimans & Ho, Alg. 2 line 11)."""
    r = s_s / s_t
    return (z_s - bcast(r, z_t) * z_t) / bcast(a_s - r * a_t, z_t)


class Progressive(StudentMethod):
    """Progressive distillation: one halving stage, N student DDIM steps learn the teacher's 2N."""

    name = "progressive"
    Config = ProgressiveConfig
    # MNIST: fine-tuning from the teacher at LR 2e-4 (the paper's LR assumes 10^4-10^5 steps per stage)
    presets = {"mnist": DistillConfig(ProgressiveConfig(optim=adam(2e-4, grad_clip=1.0)),
                                      TrainSettings(max_iters=200, ema_decay=0.0))}

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        c = self.cfg
        if c.guidance is not None and not teacher.embeds_guidance:
            raise ValueError("guidance=(lo, hi) needs a w-conditioned teacher (a guidance_distill model)")
        self.teacher = frozen_copy(teacher)
        self.student = trainable_copy(teacher)
        self.grid_s = make_grid("nested", self.process, c.nfe)  # N + 1 levels ending at 0
        self.grid_t = make_grid("nested", self.process, 2 * c.nfe)
        self.opt = c.optim.build(self.student.net.parameters())

    def default_sampling(self):
        return SamplingSpec("euler", self.cfg.nfe, "nested", self.cfg.eval_cfg if self.cfg.guidance else 1.0)

    def _cond(self, labels, n, rng):
        if self.cfg.guidance is None:
            return labels, guided(self.teacher, self.cfg.teacher_cfg)
        return with_scale(labels, uniform_scale(n, *self.cfg.guidance, rng), n), self.teacher

    def step(self, batch, it, ctx):
        x = batch["x"]
        n, N = x.shape[0], self.cfg.nfe
        cond, teacher = self._cond(cond_of(batch), n, ctx.rng)
        i = torch.randint(0, N, (n,), generator=ctx.rng)
        sh_t, sh_mid, sh_s = self.grid_s[i], self.grid_t[2 * i + 1], self.grid_s[i + 1]
        z_t, t, a_t, s_t = noised(self.process, x, ctx.randn(x.shape), sh_t)
        with ctx.autocast():
            with torch.no_grad():
                z_mid, _, _ = ddim_to(teacher, z_t, sh_t, sh_mid, cond)
                z_s, _, _ = ddim_to(teacher, z_mid.float(), sh_mid, sh_s, cond)
                _, a_s, s_s = level_coeffs(self.process, sh_s)
                target = x_target(z_t, z_s.float(), a_t, s_t, a_s, s_s)
            x0_hat, _ = self.student.raw(z_t, t, cond)
            loss = snr_truncated_mse(x0_hat, target, a_t, s_t)
        scale = 1.0 - it / self.max_iters if (self.cfg.anneal and self.max_iters) else 1.0
        self.update(ctx, loss, lr_scale=scale)
        return {"loss": loss.mean()}
