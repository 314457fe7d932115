"""SiDA: adversarial Score identity Distillation (Zhou et al. 2024, "Adversarial Score Identity
Distillation: Rapidly Surpassing the Teacher in One Step"), as mingyuanzhou/SiD's ``sida`` loss and
training loop do it. The one member of the score family that reads real images.

SiD (sid.py) plus a discriminator that shares the fake score's encoder: a head on the fake network's
bottleneck classifies noised real images against noised generated ones.
* fake-score step: x_g = sg(G(z)); sigma ~ exp(N(-1.2, 1.2^2)); the same noise n and level for x_g and
  a real batch x; per sample
      L = (denoising loss on x_g, mean over elements)
          + gan_disc_weight * lambda(sigma) * (BCE(D(x + sigma n), 1) + BCE(D(x_g + sigma n), 0)) / (2 numel)
  with EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2: the official loss weights its D term by
  lambda and sums the denoising loss over elements but not the D term, hence the 1/numel here;
* generator step: at SiD's x_t = x_g + sigma n,
      L = L_SiD + gan_gen_weight * BCE(D(x_t), 1) / sg(mean|x_g - f_phi|)
  gan_gen_weight = 1e-4: the official scalings lsg_gan / lsg = 0.01 / 100 (both terms summed over
  elements there), logits clamped to [-10, 10] as there. The fake network and the head are frozen
  during the generator step.
The official run can start SiDA from a trained SiD generator and holds the GAN term back for its first
200k images; here both start together from the teacher (docs/decisions.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...config import DistillConfig, TrainSettings
from ..losses import edm_weight
from .dmd import cpu_optim
from .dmd2 import FakeScoreDiscriminator
from .sid import SiD, SiDConfig, sid_generator_loss, sid_normaliser


@dataclass
class SiDAConfig(SiDConfig):
    gan_gen_weight: float = 1e-4  # generator GAN term relative to SiD's (official lsg_gan / lsg = 0.01 / 100)
    gan_disc_weight: float = 1.0  # discriminator term in the fake network's loss (official lsd / ls), per element

    def __post_init__(self):
        super().__post_init__()
        if self.gan_gen_weight < 0 or self.gan_disc_weight < 0:
            raise ValueError("gan_gen_weight and gan_disc_weight must be >= 0")


class SiDA(FakeScoreDiscriminator, SiD):
    """SiD + a discriminator on the fake score's encoder against real data."""

    name = "sida"
    Config = SiDAConfig
    uses_images = True  # the discriminator's real side
    presets = {
        "mnist": DistillConfig(SiDAConfig(optim=cpu_optim(1e-4), critic_optim=cpu_optim(1e-4)), TrainSettings(max_iters=1200)),
        "digits": DistillConfig(SiDAConfig(optim=cpu_optim(1e-4), critic_optim=cpu_optim(1e-4)), TrainSettings(max_iters=600)),
        # 2-D points: the per-element D weight would be ~1,500x its CIFAR-10 share (1/numel); 1e-3 restores it
        "toy2d": DistillConfig(SiDAConfig(optim=cpu_optim(1e-3), critic_optim=cpu_optim(1e-3), gan_disc_weight=1e-3),
                               TrainSettings(max_iters=600, batch_size=256, bf16=False, eval_n=2000)),
    }

    def logits(self, x_t, t, cond):
        return self.head(self.fake.bottleneck(x_t, t, cond).float())

    def critic_loss(self, x_g, batch, cond, rng, logs) -> torch.Tensor:
        """The fake score's denoising loss on sg(x_g) + the weighted discriminator loss, real and generated
        samples noised with the same noise at the same level (official SiDA)."""
        x_g = x_g.detach()
        t, n = self.fake_levels_and_noise(x_g, rng)
        l_fake = self.fake_score_loss(x_g, cond, rng, t, n)
        loss = l_fake
        if self.cfg.gan_disc_weight > 0:
            x_real = batch["x"].to(x_g.dtype)
            d_fake = self.logits(self.process.add_noise(x_g, n, t), t, cond)
            d_real = self.logits(self.process.add_noise(x_real, n, t), t, cond)
            sigma_hat = (self.process.sigma(t) / self.process.alpha(t)).float().to(x_g.device)
            numel = x_g[0].numel()
            l_d = edm_weight(sigma_hat, self.teacher.sigma_data) * (F.softplus(-d_real) + F.softplus(d_fake)) / (2 * numel)
            loss = loss + self.cfg.gan_disc_weight * l_d
            logs.update(loss_disc=l_d.mean(), d_real=torch.sigmoid(d_real).mean(), d_fake=torch.sigmoid(d_fake).mean())
        logs["loss_fake"] = l_fake.mean()
        return loss

    def generator_loss(self, x_g, cond, rng, logs=None) -> torch.Tensor:
        t, x_t, f_real, f_fake = self.generator_terms(x_g, cond, rng)
        x_g = x_g.float()
        l_sid = sid_generator_loss(x_g, f_real, f_fake, self.cfg.alpha)
        w = sid_normaliser(x_g, f_real).flatten()  # SiD's normaliser, per sample
        l_gan = F.softplus(-self.logits(x_t, t, cond).clamp(-10, 10)) / w
        if logs is not None:
            logs.update(loss_sid=l_sid.mean(), loss_gen_gan=l_gan.mean())
        return l_sid + self.cfg.gan_gen_weight * l_gan

