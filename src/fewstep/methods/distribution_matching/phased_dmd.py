"""Phased DMD (SenseNova 2025): K SNR phases, one expert per phase, score matching within subintervals.

Our reading of the paper (docs/methods.md section 9; no public code). A K-step student has levels
sigma_0 > sigma_1 > ... > sigma_{K-1} (and sigma_K = 0). Phase k trains expert G_k, which maps
x at sigma_k to the phase's output x_s = alpha_s x0_hat + sigma_s eps at s = sigma_{k+1}:
* phases run one after another, each for an equal share of the run (progressive distribution
  matching: the model is refined towards higher SNR phase by phase);
* backward simulation stops at the phase's input: x at sigma_k comes from experts 0..k-1 (frozen,
  already trained) sampling from noise;
* the DM gradient and the GAN look at x0_hat only at re-noising levels t >= s: there the distribution
  of x0_hat noised to t is exactly that of the phase output x_s noised on to t, so the expert is matched
  on p(x_s) and free below s;
* the fake score is re-initialised from the teacher at every phase start (and its optimizer state
  cleared) and trained with the subinterval objective: from x_s and x_t = a x_s + sigma_ts eps' (a =
  alpha_t / alpha_s, sigma_ts^2 = sigma_t^2 - a^2 sigma_s^2) the regression target
      x0* = (x_t + sigma_t^2 (a x_s - x_t) / sigma_ts^2) / alpha_t,
  whose conditional mean given x_t is Tweedie's x0 estimate of p_t, the marginal at t of the phase's
  output distribution (score identity: grad log p_t(x_t) = E[grad log p(x_t | x_s) | x_t]). Its
  variance grows as t -> s, so the loss weight is EDM's lambda(t) times sigma_ts^2 / sigma_t^2. The last
  phase (s = 0) is DMD2's fake-score loss exactly.
The student is one of ``nets/experts.py``'s phased networks, routed by level and sampled in K steps:
K full copies of the teacher (PhaseExperts), or with ``lora.rank > 0`` one frozen copy of the teacher
carrying K LoRA adapters, adapter k trained in phase k (PhaseLoRA; the paper's LoRA experts at image-model
scale, where K full UNets plus their EMA would not fit). Left open by the paper (ours): equal phase
lengths, experts initialised from the teacher (adapters at zero), the loss weight above, the GAN kept over
phases with its levels restricted like the DM loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.experts import PhaseExperts, PhaseLoRA
from ...nets.sharing import copy_sharing
from ...noise.base import bcast
from ...noise.precond import Denoiser
from ...samplers.ode import coeffs
from ..base import initial_weights, trainable_copy
from .dmd import cpu_optim
from .dmd2 import DMD2, DMD2Config, dm_presets


@dataclass
class PhasedDMDConfig(DMD2Config):
    stage_critics_ok = False  # its fake score is renewed per phase instead
    nfe: int = 4  # K: phases = experts = student steps
    subinterval_fake: bool = True  # the fake score's subinterval objective (False: plain denoising of x0_hat)

    def __post_init__(self):
        super().__post_init__()
        if self.nfe < 2:
            raise ValueError("phased_dmd needs nfe >= 2 (one phase is DMD2)")
        if self.stage_draw != "batch":
            raise ValueError(f"phased_dmd trains the current phase's stage on every batch; stage_draw must be 'batch', "
                             f"got {self.stage_draw!r}")


def subinterval_target(x_t, x_s, alpha_t, sigma_t, a_ts, sigma_ts):
    """x0* whose conditional mean given x_t is E_p_t[x0 | x_t] when x_t = a_ts x_s + sigma_ts eps'."""
    return (x_t + sigma_t ** 2 * (a_ts * x_s - x_t) / sigma_ts ** 2) / alpha_t


class PhasedDMD(DMD2):
    """DMD2 trained phase by phase, one expert per phase, fake score matched within each subinterval."""

    name = "phased_dmd"
    Config = PhasedDMDConfig
    presets = dm_presets(PhasedDMDConfig)

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.phase = 0

    def build_student(self, teacher: Denoiser) -> Denoiser:
        """Experts routed by level, expert k serving the phase that starts at the student's level k: K teacher
        copies, or (``lora.rank``) K adapters on the teacher's own frozen weights."""
        K = self.cfg.nfe
        start = initial_weights(teacher, self.cfg.init)  # every expert starts from it
        times = self.process.t_from_sigma_hat(self.student_sigmas[:K].to(torch.float64)).float()
        bounds = self.process.c_noise(times).tolist()
        if self.cfg.lora.rank:
            base = copy_sharing(start.net, start.net.parameters())  # frozen: the same tensors, not a copy
            lora = self.cfg.lora
            return start.like(PhaseLoRA(base, bounds, lora.rank, lora.alpha, lora.targets)).train()
        experts = PhaseExperts([trainable_copy(start).net for _ in range(K)], bounds)
        return start.like(experts).train().requires_grad_(True)

    def phase_of(self, it: int) -> int:
        """Phases split the run into K equal shares."""
        return self.share_of_run(it, self.cfg.nfe)

    def phase_output_level(self) -> float:
        """s = sigma_{k+1}: the level the phase's expert hands its output on at (0 for the last)."""
        return float(self.student_sigmas[self.phase + 1])

    def start_phase(self, k: int) -> None:
        """Fresh fake score (the teacher) and fresh critic optimizer state for phase k."""
        self.fake.net.load_state_dict(self.teacher.net.state_dict())
        self.opt_critic.state.clear()

    def student_sample(self, cond, rng, n, stage=None, shared_rng=None):
        return super().student_sample(cond, rng, n, self.phase, shared_rng)

    def _above_phase_output(self):
        s = self.phase_output_level()
        return s if s > 0 else None

    def dm_levels(self, n, rng):
        return self.sample_levels(n, rng, *self.cfg.dm_index_range, above=self._above_phase_output())

    def gan_levels(self, n, rng):
        return self.sample_levels(n, rng, 0.0, self.cfg.gan_index_max, above=self._above_phase_output())

    def fake_score_loss(self, x_fake, cond, rng):
        s = self.phase_output_level()
        if s == 0 or not self.cfg.subinterval_fake:
            return super().fake_score_loss(x_fake, cond, rng)
        n = x_fake.shape[0]
        t = self.sample_levels(n, rng, above=s)
        _, alpha_s, sigma_s = coeffs(self.process, s)
        alpha_t, sigma_t = self.process.alpha(t).float(), self.process.sigma(t).float()
        a_ts = alpha_t / alpha_s
        sigma_ts = torch.sqrt(torch.clamp(sigma_t ** 2 - (a_ts * sigma_s) ** 2, min=1e-12))
        x0 = x_fake.detach().float()
        x_s = alpha_s * x0 + sigma_s * self.noise(x0.shape, rng)
        x_t = bcast(a_ts, x0) * x_s + bcast(sigma_ts, x0) * self.noise(x0.shape, rng)
        target = subinterval_target(x_t, x_s, *(bcast(v, x0) for v in (alpha_t, sigma_t, a_ts, sigma_ts)))
        x0_hat, _ = self.fake.raw(x_t, t, cond)
        sd = self.fake.sigma_data
        weight = (alpha_t ** 2 * sd ** 2 + sigma_t ** 2) / (sigma_t * sd) ** 2 * (sigma_ts / sigma_t) ** 2
        return bcast(weight, x0).mul((x0_hat.float() - target) ** 2).flatten(1).mean(1)

    def phase_start(self, k: int) -> int:
        """The first iteration of phase k: the smallest it with it * K // max_iters == k."""
        M = max(self.max_iters or 1, 1)
        return -(-k * M // self.cfg.nfe)

    def dm_step(self, batch, cond, n, it, ctx):
        self.phase = self.phase_of(it)
        if self.phase > 0 and it == self.phase_start(self.phase):
            self.start_phase(self.phase)
        logs = super().dm_step(batch, cond, n, it, ctx)
        logs["phase"] = float(self.phase)
        return logs


# MNIST, 4 phases: real-score CFG 1.15, the GAN on the cleanest 10% of levels, 600 it (150 per phase). Three training
# seeds: FD 9.59 / 9.92 / 9.82, class accuracy ~0.95, recall ~0.87 (phased_cfg115*_mnist.json); at CFG 1.25 one run read
# 10.74-10.87, and 1,200 it 11.07 (docs/notes.md, "The multi-step DMD students at real-score CFG 1.15")
PhasedDMD.presets["mnist"] = DistillConfig(
    PhasedDMDConfig(optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-4), real_cfg=1.15, gan_index_max=0.1),
    TrainSettings(max_iters=600))
