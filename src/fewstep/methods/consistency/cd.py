"""Consistency distillation, EDM style (Song et al. 2023), as openai/consistency_models
cm/karras_diffusion.py does it; ``ConsistencyBase`` is shared with LCM (lcm.py).

CD (Alg. 2): N Karras levels s_1 < ... < s_N (rho 7); n ~ U{1..N-1}; x_{n+1} = x + s_{n+1} eps; one Heun
step of the (optionally guided) teacher ODE to s_n; loss d(f_theta(x_{n+1}, s_{n+1}), sg f_theta^-(x_n, s_n))
with the target network theta^- an EMA (mu = 0.95) of theta and f's boundary parameterisation
f(x, s_min) = x (precond.py ``cm``).

Both CD and LCM sample with the consistency multistep sampler (samplers/few_step.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.ema import ema_update_  # the target network: theta^- <- mu theta^- + (1 - mu) theta (CM Alg. 2)
from ...noise.guidance import guided
from ...noise.precond import Denoiser
from ...samplers import make_grid
from ...samplers.generate import SamplingSpec
from ...samplers.grids import STUDENT_GRIDS, student_levels
from ...samplers.ode import heun_to, level_coeffs, noised
from ..base import LoRAConfig, OptimConfig, StudentMethod, adam, cond_of, frozen_copy, trainable_copy
from ..losses import CONSISTENCY_LOSSES, consistency_distance


@dataclass
class CDConfig:
    nfe: int = 1  # sampling steps of the student (multistep consistency sampling)
    student_sigmas: list | None = None  # explicit sigma_hat levels of those steps (overrides student_sigma_min)
    student_sigma_min: float = 0.5  # multi-step, student_grid "karras": last level, Karras-spaced from the top
    student_grid: str = "karras"  # multi-step levels: "karras" (to student_sigma_min) | "flow" | "trailing"
    #                               (VP: 999/499 for 2 steps, LCMScheduler's timesteps; samplers/grids.py)
    num_scales: int = 40  # N, the Karras discretisation of the teacher ODE (CM ImageNet-64: 40)
    rho: float = 7.0
    target_ema: float = 0.95  # mu of the target network (CM CD)
    loss: str = "l2"  # "l2" | "huber" (per element, LCM) | "huber_rms" (per sample, iCT); LPIPS in the paper
    huber_c: float = 0.03  # pseudo-Huber c (huber_rms with c = 0.00054 is iCT's loss, c' = 0.00054 sqrt(d), / sqrt(d))
    teacher_cfg: float = 1.0  # CFG scale of the teacher solver (1 = none)
    optim: OptimConfig = field(default_factory=lambda: adam(8e-6))  # CM ImageNet-64 CD: Adam 8e-6, no clipping
    eval_nfes: tuple[int, ...] = (1, 2, 4)  # step counts the model is benchmarked at (one model serves them all)
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # LoRA student (LCM-LoRA: rank 64)

    def __post_init__(self):
        if self.nfe < 1 or self.num_scales < 2:
            raise ValueError("nfe must be >= 1 and num_scales >= 2")
        if not 0 <= self.target_ema < 1:
            raise ValueError(f"target_ema must be in [0, 1), got {self.target_ema}")
        if self.student_grid not in STUDENT_GRIDS:
            raise ValueError(f"student_grid must be one of {STUDENT_GRIDS}, got {self.student_grid!r}")
        if self.loss not in CONSISTENCY_LOSSES:
            raise ValueError(f"loss must be one of {CONSISTENCY_LOSSES}, got {self.loss!r}")
        if self.teacher_cfg < 0 or self.huber_c <= 0 or not self.eval_nfes or min(self.eval_nfes) < 1:
            raise ValueError("teacher_cfg must be >= 0, huber_c > 0 and eval_nfes positive")


class ConsistencyBase(StudentMethod):
    """Online student, target network, levels and sampling; subclasses define the solver step."""

    Config = CDConfig
    boundary = "cm"

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.teacher = frozen_copy(teacher)
        self.student = trainable_copy(teacher, self.cfg.lora, self.boundary, self.w_dim())
        self.target = frozen_copy(self.student)
        self.levels = make_grid("karras", self.process, self.solver_levels(), rho=self.cfg.rho,
                                final_zero=False).flip(0)  # ascending s_1 < ... < s_N
        self.student_sigmas = student_levels(self.process, self.cfg.nfe, self.cfg.student_sigma_min,
                                             self.cfg.student_sigmas, self.cfg.student_grid)
        self.opt = self.cfg.optim.build(self.student.net.parameters())

    def w_dim(self) -> int:
        """Width of the student's guidance-scale embedding (0 = none)."""
        return 0

    def solver_levels(self) -> int:
        return self.cfg.num_scales

    def networks(self):
        return {"student": self.student.net, "target": self.target.net}

    def default_sampling(self):
        return SamplingSpec("multistep", self.cfg.nfe, self.cfg.student_grid, self.eval_cfg(),
                            [float(s) for s in self.student_sigmas])

    def sampling_options(self):
        opts = [self.default_sampling()]
        for k in self.cfg.eval_nfes:
            if k != self.cfg.nfe:
                sig = student_levels(self.process, k, self.cfg.student_sigma_min, grid=self.cfg.student_grid)
                opts.append(SamplingSpec("multistep", k, self.cfg.student_grid, self.eval_cfg(), [float(s) for s in sig]))
        return opts

    def eval_cfg(self) -> float:
        return 1.0

    def config(self):
        return {**super().config(), "student_sigmas_resolved": [float(s) for s in self.student_sigmas]}

    def solver_step(self, x_next, sh_next, sh_n, cond, rng):
        """(x_n from the teacher, condition the student sees)."""
        raise NotImplementedError

    def step(self, batch, it, ctx):
        x = batch["x"]
        n = x.shape[0]
        skip = getattr(self.cfg, "skip", 1)
        k = torch.randint(0, len(self.levels) - skip, (n,), generator=ctx.rng)
        sh_n, sh_next = self.levels[k], self.levels[k + skip]
        x_next, t_next, _, _ = noised(self.process, x, ctx.randn(x.shape), sh_next)
        with ctx.autocast():
            with torch.no_grad():
                x_n, cond = self.solver_step(x_next, sh_next, sh_n, cond_of(batch), ctx.rng)
                t_n, _, _ = level_coeffs(self.process, sh_n)
                target = self.target(x_n.float(), t_n, cond)
            pred = self.student(x_next, t_next, cond)
            loss = consistency_distance(pred, target, self.cfg.loss, self.cfg.huber_c)
        if self.update(ctx, loss):
            ema_update_(self.target.net, self.student.net, self.cfg.target_ema)
        return {"loss": loss.mean()}


class ConsistencyDistillation(ConsistencyBase):
    """CD: one Heun step of the teacher ODE between adjacent Karras levels, EMA target network."""

    name = "cd"
    presets = {"mnist": DistillConfig(CDConfig(optim=adam(1e-4)), TrainSettings(max_iters=600))}

    def solver_step(self, x_next, sh_next, sh_n, cond, rng):
        return heun_to(guided(self.teacher, self.cfg.teacher_cfg), x_next, sh_next, sh_n, cond), cond
