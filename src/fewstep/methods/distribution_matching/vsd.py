"""Variational score distillation for a one-step generator: SwiftBrush (Nguyen & Tran 2024), as
VinAIResearch/SwiftBrush ``train_swiftbrush.py`` does it (docs/methods.md section 6). Image-free.

Networks: the student G (a copy of the teacher, evaluated once at the top level), and ONE teacher
module carrying LoRA adapters: with the adapters off it is the frozen teacher (the real score), with
them on it is the fake score that tracks G's samples. No second copy of the teacher's weights exists;
the adapters are off except inside the fake score's calls, so anything else that holds the teacher
still gets the teacher (tested).

Per iteration, 1:1 (SwiftBrush Alg. 1):
* student step: t from the family's DM levels (SwiftBrush U[20, 981) of 1000 VP steps is
  ``level_grid="uniform"``), x_t = sg(x_hat) + sigma_t n, both scores under the same CFG scale, and
      g = s_t^2 (eps_teacher - eps_lora),  L = 0.5 ||x_hat - sg(x_hat - g)||^2      (no normaliser)
  where s_t is the VP noise level at x_t's SNR. In x0 terms this is
      g = alpha_t s_t (x0_lora - x0_teacher) = sigma_hat / (1 + sigma_hat^2) (mu_fake - mu_real),
  which needs no eps and holds for any parameterisation (EDM, VP, flow): we compute it that way.
* LoRA step: the teacher's denoising loss on sg(x_hat) at levels over the whole grid, the condition
  dropped to the null one with p = 0.1 so the fake score's CFG has an unconditional branch.
  (SwiftBrush weights an eps-MSE by abar_t; the family's denoising loss is the teacher's own
  weighting, docs/decisions.md.)
``guidance_range`` = (lo, hi) draws the CFG scale from U[lo, hi] once per iteration for both scores;
lo == hi is SwiftBrush's fixed scale, lo < hi is SNOOPI's PG-SB (snoopi.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.cond import drop_cond
from ...noise.base import bcast
from ...noise.guidance import guided
from ...noise.precond import Denoiser
from ..base import LoRAConfig, OptimConfig
from ..losses import denoising_loss
from .base import DistributionMatchingBase, DMDConfig, dm_loss
from .dmd import cpu_optim


def _swiftbrush_lora() -> LoRAConfig:
    # SwiftBrush: rank 8, alpha 32 on the attention's to_q/to_v. None = every default target of the
    # architecture (nets/lora.py), which small fewstep nets need: they have one attention block.
    return LoRAConfig(rank=8, alpha=32.0)


def _lora_optim() -> OptimConfig:
    # SwiftBrush / SNOOPI: the LoRA fake score trains at LR 1e-3
    return OptimConfig(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0)


@dataclass
class VSDConfig(DMDConfig):
    guidance_range: tuple[float, float] = (7.5, 7.5)  # CFG scale for teacher and fake alike, U[lo, hi] per
    #                                                   iteration (SwiftBrush: fixed 7.5, docs/methods.md; SNOOPI: a range)
    fake_lora: LoRAConfig = field(default_factory=_swiftbrush_lora)  # adapters that make the teacher the fake score
    fake_cond_dropout: float = 0.1  # p of training the LoRA on the null condition (SwiftBrush)
    regression_weight: float = 0.0  # VSD has no regression loss
    critic_optim: OptimConfig = field(default_factory=_lora_optim)

    def __post_init__(self):
        super().__post_init__()
        self.guidance_range = tuple(float(g) for g in self.guidance_range)
        lo, hi = self.guidance_range
        if not 0 <= lo <= hi:
            raise ValueError(f"guidance_range must be (lo, hi) with 0 <= lo <= hi, got {self.guidance_range}")
        if self.fake_lora.rank < 1:
            raise ValueError("vsd's fake score is LoRA adapters on the teacher: fake_lora.rank must be >= 1")
        if not 0 <= self.fake_cond_dropout < 1:
            raise ValueError(f"fake_cond_dropout must be in [0, 1), got {self.fake_cond_dropout}")
        if self.real_cfg != 1.0:
            raise ValueError("vsd guides both scores with guidance_range; real_cfg is not used (leave it at 1)")


def vsd_gradient(mu_fake, mu_real, sigma_hat):
    """SwiftBrush's g = s_t^2 (eps_teacher - eps_lora), written with x0 predictions at the same x_t:
    sigma_hat / (1 + sigma_hat^2) (mu_fake - mu_real) (s_t, alpha_t the VP levels at that SNR)."""
    w = sigma_hat / (1 + sigma_hat * sigma_hat)
    return bcast(w.to(mu_fake.dtype), mu_fake) * (mu_fake - mu_real)


class VSD(DistributionMatchingBase):
    """SwiftBrush VSD: one-step student, LoRA-on-teacher fake score, student and LoRA updated 1:1."""

    name = "vsd"
    Config = VSDConfig
    uses_images = False  # image-free: distill never loads a training set for it
    # The adapters learn 10x faster than the student (SwiftBrush: LoRA 1e-3, student 1e-6): at equal LRs
    # the fake score lags the student and VSD stalls (toy2d FD ~57 after 400 it against ~3.4; docs/notes.md).
    # MNIST: no guidance, 600 it. Three training seeds read 9.73 / 10.00 / 9.45 (mean 9.73, 1.11x the teacher's best row)
    # with the fake score's adapters on the UNet's block convolutions (vsd_blocklora_seed{0,1,2}_mnist.json); with adapters
    # on the time embedding alone, as LoRA's default targets were, 12.81 / 13.73 / 11.95, and CFG 1.25 for 1,200 it read
    # 14.76 with ~0.01 more class accuracy (score_family_vsd1_mnist.json, vsd_1_seed{1,2}_mnist.json; docs/notes.md)
    presets = {
        "mnist": DistillConfig(VSDConfig(guidance_range=(1.0, 1.0), optim=cpu_optim(1e-4),
                                         critic_optim=cpu_optim(1e-3), fake_lora=LoRAConfig(rank=32, alpha=32.0)),
                               TrainSettings(max_iters=600)),
        "digits": DistillConfig(VSDConfig(guidance_range=(1.25, 1.25), optim=cpu_optim(1e-4),
                                          critic_optim=cpu_optim(1e-3), fake_lora=LoRAConfig(rank=32, alpha=32.0)),
                                TrainSettings(max_iters=600)),
        "toy2d": DistillConfig(VSDConfig(guidance_range=(1.0, 1.0), optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-3),
                                         fake_lora=LoRAConfig(rank=16, alpha=16.0)),
                               TrainSettings(max_iters=400, batch_size=256, bf16=False, eval_n=2000)),
    }

    def build_fake(self, teacher: Denoiser) -> Denoiser:
        """LoRA adapters on the teacher's own module (family base: ``adapter_fake_score``)."""
        return self.adapter_fake_score(teacher, self.cfg.fake_lora)

    def guidance_scale(self, rng) -> float:
        lo, hi = self.cfg.guidance_range
        return lo if lo == hi else float(lo + (hi - lo) * torch.rand((), generator=rng))

    def vsd_student_loss(self, x_hat, cond, rng, scale: float):
        """(per-sample L_VSD, its gradient g) at one DM level per sample, both scores at CFG ``scale``."""
        t = self.dm_levels(x_hat.shape[0], rng)
        with torch.no_grad():
            x_t = self.process.add_noise(x_hat.detach(), self.noise(x_hat.shape, rng), t)
            mu_real = guided(self.teacher, scale)(x_t, t, cond).float()
            mu_fake = guided(self.fake, scale)(x_t, t, cond).float()
            sigma_hat = (self.process.sigma(t) / self.process.alpha(t)).float().to(x_hat.device)
            grad = torch.nan_to_num(vsd_gradient(mu_fake, mu_real, sigma_hat))
        return dm_loss(x_hat.float(), grad), grad

    def fake_score_loss(self, x_fake, cond, rng):
        t = self.sample_levels(x_fake.shape[0], rng)
        cond = drop_cond(cond, self.cfg.fake_cond_dropout, rng)
        return denoising_loss(self.fake, x_fake.detach(), t, self.noise(x_fake.shape, rng), cond)

    def dm_step(self, batch, cond, n, it, ctx):
        scale = self.guidance_scale(ctx.shared_rng or ctx.rng)  # one scale per iteration, the same on every rank
        with ctx.autocast():
            x_hat = self.student_sample(cond, ctx.rng, n, shared_rng=ctx.shared_rng)
            l_vsd, grad = self.vsd_student_loss(x_hat, cond, ctx.rng, scale)
        self.update(ctx, l_vsd)
        with ctx.autocast():
            l_fake = self.fake_score_loss(x_hat.detach(), cond, ctx.rng)
        self.update_critic(ctx, l_fake)
        return {"loss_vsd": l_vsd.mean(), "loss_fake": l_fake.mean(), "vsd_grad_abs": grad.abs().mean(),
                "guidance": scale}

