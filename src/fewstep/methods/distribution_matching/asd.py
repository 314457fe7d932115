"""Adversarial self-distillation on top of DMD2 (docs/methods.md section 10): one student for several
step counts, whose n-step outputs are pulled towards its own (n + 1)-step outputs by a discriminator.

Per student update a step count n is drawn from ``step_counts`` (the same on every process); the DMD2
part (DM gradient + GAN on real data, backward simulation) trains the n-step level list. The
self-distillation part samples, from one noise, the student's full n-step output x_n (gradient
through its last call) and its (n + 1)-step output x_{n+1} (no gradient), and a second head on the
fake score's bottleneck is trained to tell x_{n+1} ("real") from x_n ("fake") at noised levels, as
DMD2's GAN does with data: critic softplus(D(x_n)) + softplus(-D(x_{n+1})), student softplus(-D(x_n)).
More steps are the better-resolved distribution; the term makes fewer steps follow them, so quality
should not fall as steps rise. Choices the paper summary leaves open (ours): the second head mirrors
DMD2's, its weights are DMD2's GAN weights, x_{n+1} uses the (n + 1)-step level list of the same rule.

``self_target="trained"`` (ours, not the paper's) pairs n with the next larger *trained* count instead
(1 -> 2 -> 4 for counts (1, 2, 4)) and gives the largest count no self term: with "next", the 4-step
student is pulled towards a 5-step output on levels it is never trained at, and on MNIST that 4-step
sample came out sharper and less diverse than DMD2's (docs/notes.md), as SC-DMD's regulariser towards
an untrained 8-step composition did on toy2d (sc_dmd.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...config import DistillConfig, TrainSettings
from ...samplers import multistep
from ...samplers.generate import SamplingSpec
from ...samplers.grids import student_levels
from ...samplers.ode import coeffs, initial_noise
from ..base import LoRAConfig
from .dmd import cpu_optim
from .dmd2 import DiscriminatorHead, dm_presets
from .step_counts import StepCountsConfig, StepCountsDMD2


@dataclass
class ASDConfig(StepCountsConfig):
    asd_gen_weight: float = 3e-3  # student's self-adversarial term (DMD2's GAN generator weight)
    asd_disc_weight: float = 1e-2  # the self-discriminator's loss weight (DMD2's GAN critic weight)
    self_target: Literal["next", "trained"] = "next"  # n's "more steps" sample: n + 1 steps (the paper), or
    #                                                    the next larger step count trained (none for the largest)

    def __post_init__(self):
        super().__post_init__()
        if self.asd_gen_weight < 0 or self.asd_disc_weight < 0:
            raise ValueError("asd_gen_weight and asd_disc_weight must be >= 0")
        if self.self_target not in ("next", "trained"):
            raise ValueError(f"self_target must be 'next' or 'trained', got {self.self_target!r}")


class ASD(StepCountsDMD2):
    """DMD2 + a discriminator aligning the student's n-step outputs with its (n+1)-step outputs."""

    name = "asd"
    Config = ASDConfig
    presets = dm_presets(ASDConfig)

    def __init__(self, teacher, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.self_head = DiscriminatorHead(self.head.feat_shape)
        self.opt_critic.add_param_group({"params": list(self.self_head.parameters())})
        counts = set(self.cfg.step_counts) | {m for m in map(self.more_steps, self.cfg.step_counts) if m}
        self.levels_for = {k: student_levels(self.process, k, self.cfg.student_sigma_min, grid=self.cfg.student_grid)
                           for k in counts}

    def networks(self):
        return {**super().networks(), "self_disc": self.self_head}

    def sampling_options(self):
        return [self.default_sampling()] + [SamplingSpec("multistep", k, "karras", 1.0, [float(s) for s in self.levels_for[k]])
                                            for k in self.cfg.step_counts if k != self.cfg.nfe]

    def active_sigmas(self):
        return self.levels_for[self.steps]

    def more_steps(self, n: int) -> int | None:
        """The step count whose sample is n's "more steps" target: n + 1, or (``self_target="trained"``)
        the next larger trained count, None above the largest."""
        if self.cfg.self_target == "next":
            return n + 1
        return min((k for k in self.cfg.step_counts if k > n), default=None)

    def n_and_n_plus_1(self, cond, rng, n_samples: int, grad: bool):
        """(x_n, x_{n+1}): the student's n-step and "more steps" (``more_steps(n)``) outputs from one noise
        (every level list starts at the process's top level); x_n keeps the gradient of its last call when
        ``grad``."""
        n, sig = self.steps, self.levels_for[self.steps]
        z = initial_noise(self.process, sig, (n_samples, *self.shape), generator=rng, device=self.device)
        with torch.no_grad():
            x_next = multistep(self.student, z, self.levels_for[self.more_steps(n)], cond=cond, generator=rng)
            x = multistep(self.student, z, sig[:n], cond=cond, generator=rng) if n > 1 else z
        t, _, _ = coeffs(self.process, float(sig[n - 1]))
        with torch.enable_grad() if grad else torch.no_grad():
            x_n = self.student(x, torch.full((n_samples,), float(t)), cond)
        return x_n, x_next

    def critic_networks(self):
        return super().critic_networks() + [self.self_head]

    def student_loss(self, cond, n, ctx, logs):
        loss, x_hat = super().student_loss(cond, n, ctx, logs)
        if self.cfg.asd_gen_weight > 0 and self.more_steps(self.steps):
            x_n, _ = self.n_and_n_plus_1(cond, ctx.rng, n, grad=True)
            l_self = F.softplus(-self.gan_logits(x_n, cond, ctx.rng, self.self_head))
            loss = loss + self.cfg.asd_gen_weight * l_self
            logs["loss_gen_self"] = l_self.mean()
        return loss, x_hat

    def critic_loss(self, x_fake, x_real, cond, ctx, logs):
        loss = super().critic_loss(x_fake, x_real, cond, ctx, logs)
        if self.cfg.asd_disc_weight > 0 and self.more_steps(self.steps):
            x_n, x_next = self.n_and_n_plus_1(cond, ctx.rng, x_fake.shape[0], grad=False)
            d_n, d_next = (self.gan_logits(x.float(), cond, ctx.rng, self.self_head) for x in (x_n, x_next))
            l_d = F.softplus(d_n) + F.softplus(-d_next)
            loss = loss + self.cfg.asd_disc_weight * l_d
            logs.update(loss_self_disc=l_d.mean(), d_self_more_steps=torch.sigmoid(d_next).mean())
        return loss


# MNIST: one rank-8 LoRA on the frozen teacher (adapters' LR 1e-3), real-score CFG 1.15, the GAN on the cleaner 40% of
# levels, 600 it. Three training seeds: 1 / 2 / 4 steps at means 11.19 / 10.48 / 16.34 (asd_lora_r8_seed*_mnist.json)
# against 12.37 / 18.41 / 28.45 for a full copy on seed 0 (asd_cfg115_gan40_mnist.json; docs/notes.md, "SC-DMD and ASD
# as one LoRA on the frozen teacher"). Its default sampling is 2 steps, its best count.
ASD.presets["mnist"] = DistillConfig(
    ASDConfig(optim=cpu_optim(1e-3), critic_optim=cpu_optim(3e-4), real_cfg=1.15, gan_index_max=0.4,
              lora=LoRAConfig(rank=8), nfe=2),
    TrainSettings(max_iters=600))
