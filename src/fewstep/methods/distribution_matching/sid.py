"""Score identity Distillation (SiD; Zhou et al. 2024), as mingyuanzhou/SiD ``training/sid_loss.py`` and
``sid_training_loop.py`` do it (docs/methods.md section 5). Image-free: no real data enters any loss.

Networks: the frozen teacher f_phi, a fake score f_psi (a teacher copy) and the generator G (a teacher
copy evaluated once at sigma_init = 2.5 on x = sigma_init z). Strict 1:1 updates, fake score first:
* fake step: x_g = sg(G(z)); the teacher's denoising loss on x_g at sigma ~ exp(N(-1.2, 1.2^2)) (EDM's
  training distribution, weight (sigma^2 + sd^2) / (sigma sd)^2);
* generator step: sigma from the lower ``gen_level_max`` = 80% of a Karras grid (0.002 .. ~24.4 in EDM
  units), x_t = x_g + sigma n, and per element (SiD Eq. 8 as the official loss writes it)
      L = (f_phi - f_psi) . [(f_phi - x_g) - alpha (f_phi - f_psi)] / sg(mean|x_g - f_phi|),
  alpha = 1.2, with gradients through x_g and through both denoisers' inputs x_t (their weights fixed).
Ours: the loss is averaged over elements and samples (the official code sums and scales by 100/batch; Adam
makes the two the same up to its epsilon). SiD-LSG's guidance scales (Zhou et al. 2024, "Long and Short
Guidance"): ``fake_train_cfg`` (kappa1) trains the fake score through its guided output, ``fake_cfg``
(kappa2 = kappa3) and ``real_cfg`` (kappa4) guide f_psi and f_phi in the generator loss; all 1 = SiD.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...noise.guidance import guided
from ...noise.timesteps import TimeSampler
from ..base import LoRAConfig, OptimConfig, frozen
from ..losses import denoising_loss
from .base import DistributionMatchingBase, DMDConfig
from .dmd import cpu_optim


def _sid_optim() -> OptimConfig:
    # SiD: Adam (0, 0.999), LR 1e-5 for the generator and the fake score, no weight decay
    return OptimConfig(lr=1e-5, betas=(0.0, 0.999), algorithm="adam")


@dataclass
class SiDConfig(DMDConfig):
    sigma_init: float = 2.5  # the generator's one input level (EDM units; for a VP teacher a sigma/alpha level)
    alpha: float = 1.2  # SiD's alpha (1 for SiD-LSG on Stable Diffusion)
    gen_level_max: float = 0.8  # generator-loss levels: the lower 80% of the Karras grid (sigma <= ~24.4 at EDM)
    fake_times: TimeSampler = field(default_factory=TimeSampler)  # fake-score levels: EDM's ln sigma ~ N(-1.2, 1.2^2)
    fake_train_cfg: float = 1.0  # SiD-LSG kappa1: the fake score is trained through its CFG-guided output
    fake_cfg: float = 1.0  # SiD-LSG kappa2 = kappa3: CFG on the fake score in the generator loss
    #                        (kappa4 is real_cfg, on the teacher there); SiD-LSG on SD: 4.5 / 4.5 / 4.5 or 1.5
    fake_lora: LoRAConfig = field(default_factory=LoRAConfig)  # rank > 0: the fake score is LoRA adapters on the
    #                        teacher's own module (as SwiftBrush's, vsd.py) instead of SiD's full copy; not in the paper
    regression_weight: float = 0.0  # SiD has no regression loss
    optim: OptimConfig = field(default_factory=_sid_optim)
    critic_optim: OptimConfig = field(default_factory=_sid_optim)

    def __post_init__(self):
        if self.nfe != 1:
            raise ValueError(f"sid trains a one-step generator; got nfe={self.nfe}")
        if self.student_sigmas is None:
            self.student_sigmas = [self.sigma_init]
        super().__post_init__()
        if self.sigma_init <= 0 or not 0 < self.gen_level_max <= 1:
            raise ValueError("sigma_init > 0 and gen_level_max in (0, 1] are needed")
        if self.fake_train_cfg < 0 or self.fake_cfg < 0:
            raise ValueError("fake_train_cfg and fake_cfg must be >= 0 (1 = no guidance)")


def sid_normaliser(x_g, f_real) -> torch.Tensor:
    """SiD's w = sg(mean|x_g - f_phi|) per sample (clipped at 1e-5), shaped to broadcast over x_g."""
    dims = list(range(1, x_g.ndim))
    return (x_g - f_real).abs().mean(dim=dims, keepdim=True).detach().clamp(min=1e-5)


def sid_generator_loss(x_g, f_real, f_fake, alpha: float) -> torch.Tensor:
    """Per-sample SiD generator loss (mean over elements): (f_r - f_f).[(f_r - x_g) - alpha (f_r - f_f)] / w."""
    w = sid_normaliser(x_g, f_real)
    diff = f_real - f_fake
    return (diff * ((f_real - x_g) - alpha * diff) / w).flatten(1).mean(1)


class SiD(DistributionMatchingBase):
    """SiD: one-step generator from the teacher at sigma_init, fake score and generator updated 1:1."""

    name = "sid"
    Config = SiDConfig
    uses_images = False  # image-free: distill never loads a training set for it
    presets = {
        "mnist": DistillConfig(SiDConfig(optim=cpu_optim(1e-4), critic_optim=cpu_optim(1e-4)), TrainSettings(max_iters=1200)),
        "digits": DistillConfig(SiDConfig(optim=cpu_optim(1e-4), critic_optim=cpu_optim(1e-4)), TrainSettings(max_iters=600)),
        "toy2d": DistillConfig(SiDConfig(optim=cpu_optim(1e-3), critic_optim=cpu_optim(1e-3)),
                               TrainSettings(max_iters=600, batch_size=256, bf16=False, eval_n=2000)),
    }

    def build_fake(self, teacher):
        """SiD's fake score: a full trainable copy of the teacher, or (``fake_lora.rank > 0``) adapters on it."""
        if not self.cfg.fake_lora.rank:
            return super().build_fake(teacher)
        return self.adapter_fake_score(teacher, self.cfg.fake_lora)

    def fake_levels_and_noise(self, x, rng):
        """(t, n) of a fake-score step: EDM's log-normal levels and fresh noise."""
        return self.cfg.fake_times.sample(self.process, x.shape[0], rng), self.noise(x.shape, rng)

    def fake_score_loss(self, x_fake, cond, rng, t=None, n=None):
        """The fake score's denoising loss on sg(x_fake) at levels t with noise n (drawn when not given)."""
        if t is None:
            t, n = self.fake_levels_and_noise(x_fake, rng)
        fake = guided(self.fake, self.cfg.fake_train_cfg)  # SiD-LSG kappa1 (1: the plain denoising loss)
        return denoising_loss(fake, x_fake.detach(), t, n, cond)

    def critic_loss(self, x_g, batch, cond, rng, logs) -> torch.Tensor:
        """Per-sample loss of the fake-score step (SiDA adds its discriminator here)."""
        l_fake = self.fake_score_loss(x_g, cond, rng)
        logs["loss_fake"] = l_fake.mean()
        return l_fake

    def critic_networks(self) -> list:
        """What the generator step reads without training (frozen during it)."""
        return [self.fake]

    def generator_terms(self, x_g, cond, rng):
        """(t, x_t, f_phi(x_t), f_psi(x_t)) at x_t = x_g + sigma n, sigma from the lower ``gen_level_max``."""
        c = self.cfg
        t = self.sample_levels(x_g.shape[0], rng, 0.0, c.gen_level_max)
        x_t = self.process.add_noise(x_g, self.noise(x_g.shape, rng), t)
        f_real = guided(self.teacher, c.real_cfg)(x_t, t, cond).float()
        f_fake = guided(self.fake, c.fake_cfg)(x_t, t, cond).float()
        return t, x_t, f_real, f_fake

    def generator_loss(self, x_g, cond, rng, logs=None) -> torch.Tensor:
        """SiD's loss at x_t = x_g + sigma n; gradients reach x_g directly and through both denoisers' inputs."""
        _, _, f_real, f_fake = self.generator_terms(x_g, cond, rng)
        loss = sid_generator_loss(x_g.float(), f_real, f_fake, self.cfg.alpha)
        if logs is not None:
            logs["loss_sid"] = loss.mean()
        return loss

    def dm_step(self, batch, cond, n, it, ctx):
        logs = {}
        with torch.no_grad(), ctx.autocast():
            x_g = self.student_sample(cond, ctx.rng, n).float()
        with ctx.autocast():
            l_critic = self.critic_loss(x_g, batch, cond, ctx.rng, logs)
        self.update_critic(ctx, l_critic)
        with frozen(*self.critic_networks()):  # the generator step moves G only
            with ctx.autocast():
                l_gen = self.generator_loss(self.student_sample(cond, ctx.rng, n), cond, ctx.rng, logs)
            self.update(ctx, l_gen)
        return logs
