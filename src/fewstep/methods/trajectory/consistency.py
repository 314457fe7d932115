"""Consistency distillation: EDM-style CD (Song et al. 2023) and latent-consistency-style LCM
(Luo et al. 2023), both as the public code does them (openai/consistency_models cm/karras_diffusion.py;
diffusers examples/consistency_distillation/train_lcm_distill_sd_wds.py).

CD (Alg. 2): N Karras levels s_1 < ... < s_N (rho 7); n ~ U{1..N-1}; x_{n+1} = x + s_{n+1} eps; one Heun
step of the (optionally guided) teacher ODE to s_n; loss d(f_theta(x_{n+1}, s_{n+1}), sg f_theta^-(x_n, s_n))
with the target network theta^- an EMA (mu = 0.95) of theta and f's boundary parameterisation
f(x, s_min) = x (precond.py ``cm``).

LCM (Alg. 1): a w-conditioned student (w-embedding, so one model serves a range of CFG scales) on a
coarser solver grid with a skipping step: from level k+skip to k with one DDIM step of the teacher
guided at the sampled scale w ~ U[w_range]; LCM boundary scalings (precond.py ``lcm``); pseudo-Huber.

Both sample with the consistency multistep sampler (samplers/few_step.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ...nets.lora import trainable
from ...noise.base import _bcast
from ...noise.guidance import cfg_raw, guided, with_scale
from ...noise.precond import Denoiser
from ...samplers import make_grid
from ...samplers.grids import student_levels
from ...samplers.ode import ddim_step, heun_to, level_coeffs
from ...train.ema import ema_update_  # the target network: theta^- <- mu theta^- + (1 - mu) theta (CM Alg. 2)
from ..base import SamplingSpec, cond_of
from ..registry import register
from .common import StudentMethod, consistency_distance, frozen_copy, noised, student_from, uniform_scale


@dataclass
class CDConfig:
    nfe: int = 1  # sampling steps of the student (multistep consistency sampling)
    student_sigmas: list | None = None  # explicit sigma_hat levels of those steps (overrides student_sigma_min)
    student_sigma_min: float = 0.5  # multi-step: last level, Karras-spaced from the top
    num_scales: int = 40  # N, the Karras discretisation of the teacher ODE (CM ImageNet-64: 40)
    rho: float = 7.0
    target_ema: float = 0.95  # mu of the target network (CM CD)
    loss: str = "l2"  # "l2" | "huber" (LPIPS in the paper; no offline LPIPS weights for our data)
    huber_c: float = 0.03  # pseudo-Huber c (iCT: 0.00054 sqrt(d); 0.03 for 28x28)
    teacher_cfg: float = 1.0  # CFG scale of the teacher solver (1 = none)
    lr: float = 8e-6  # CM ImageNet-64 CD
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # CM uses none
    eval_nfes: tuple = (1, 2, 4)  # step counts the model is benchmarked at (one model serves them all)
    lora_rank: int = 0  # > 0: the student is LoRA adapters on a frozen teacher copy (LCM-LoRA: 64)
    lora_alpha: float = 0.0  # LoRA scale numerator (0 = the rank)
    lora_targets: list | None = None  # module names to adapt (None = attention, feed-forward, convs)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.nfe < 1 or self.num_scales < 2:
            raise ValueError("nfe must be >= 1 and num_scales >= 2")
        if not 0 <= self.target_ema < 1:
            raise ValueError(f"target_ema must be in [0, 1), got {self.target_ema}")
        if self.loss not in ("l2", "huber"):
            raise ValueError(f"loss must be 'l2' or 'huber', got {self.loss!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class ConsistencyBase(StudentMethod):
    """Online student, target network, levels and sampling; subclasses define the solver step."""

    Config = CDConfig
    boundary = "cm"

    def __init__(self, teacher: Denoiser, cfg=None, shape=None, num_classes: int = 0):
        self.cfg = cfg or self.Config()
        self.teacher = frozen_copy(teacher)
        self.process = teacher.process
        c = self.cfg
        self.student = student_from(teacher, self.boundary, getattr(c, "w_dim", 0), c.lora_rank, c.lora_alpha,
                                    c.lora_targets)
        self.target = frozen_copy(self.student)
        self.levels = make_grid("karras", self.process, self.solver_levels(), rho=self.cfg.rho,
                                final_zero=False).flip(0)  # ascending s_1 < ... < s_N
        self.student_sigmas = student_levels(self.process, self.cfg.nfe, self.cfg.student_sigma_min,
                                             self.cfg.student_sigmas)
        self.opt = torch.optim.Adam(trainable(self.student.net.parameters()), lr=self.cfg.lr, betas=self.cfg.betas,
                                    weight_decay=self.cfg.weight_decay)

    def solver_levels(self) -> int:
        return self.cfg.num_scales

    def networks(self):
        return {"student": self.student.net, "target": self.target.net}

    def default_sampling(self):
        return SamplingSpec("multistep", self.cfg.nfe, "karras", self.eval_cfg(),
                            [float(s) for s in self.student_sigmas])

    def sampling_options(self):
        opts = [self.default_sampling()]
        for k in self.cfg.eval_nfes:
            if k != self.cfg.nfe:
                sig = student_levels(self.process, k, self.cfg.student_sigma_min)
                opts.append(SamplingSpec("multistep", k, "karras", self.eval_cfg(), [float(s) for s in sig]))
        return opts

    def eval_cfg(self) -> float:
        return 1.0

    def config(self):
        return {"method": self.name, **asdict(self.cfg),
                "student_sigmas_resolved": [float(s) for s in self.student_sigmas]}

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
        if ctx.update(loss, "student", clip=self.cfg.grad_clip):
            ema_update_(self.target.net, self.student.net, self.cfg.target_ema)
        return {"loss": loss.mean()}


@register("cd")
class ConsistencyDistillation(ConsistencyBase):
    def solver_step(self, x_next, sh_next, sh_n, cond, rng):
        return heun_to(guided(self.teacher, self.cfg.teacher_cfg), x_next, sh_next, sh_n, cond), cond


@dataclass
class LCMConfig(CDConfig):
    num_scales: int = 50  # DDIM solver grid (LCM: 50 of SD's 1000 timesteps, skip k = 20 = one interval)
    skip: int = 1  # grid intervals per solver step
    w_range: tuple = (2.0, 4.0)  # standard CFG scales sampled per sample (LCM: w ~ U[5, 15] in w + 1 = scale form)
    w_dim: int = 64  # guidance-scale embedding width (LCM: 256)
    eval_cfg: float = 2.0  # scale the student is evaluated at
    loss: str = "huber"
    huber_c: float = 0.001  # LCM
    lr: float = 1e-6  # LCM full fine-tune on SD (LoRA: 1e-4)
    grad_clip: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        self.w_range = tuple(float(v) for v in self.w_range)
        if len(self.w_range) != 2 or not 0 <= self.w_range[0] <= self.w_range[1]:
            raise ValueError(f"w_range must be (lo, hi) with 0 <= lo <= hi, got {self.w_range}")
        if not 1 <= self.skip < self.num_scales:
            raise ValueError(f"skip must be in [1, num_scales), got {self.skip}")
        if self.lora_rank:
            self.w_dim = 0  # LCM-LoRA: no w-embedding, the guidance range is baked into the adapters


@register("lcm")
class LatentConsistency(ConsistencyBase):
    Config = LCMConfig
    boundary = "lcm"

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
        return ddim_step(x0, eps, _bcast(a_n, x0), _bcast(s_n, x0)), with_scale(labels, w, n)
